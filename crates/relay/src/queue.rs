//! The per-stream ring that serves as every subscriber's bounded queue.
//!
//! The publisher appends each frame once to one ring; each subscriber keeps only a cursor
//! (the sequence number of the next frame it will read). A subscriber's queue is therefore
//! the window between its cursor and the ring's head, and it is full when that window
//! exceeds the ring's frames or bytes ([`crate::RelayLimits`]; by default
//! [`SUBSCRIBER_QUEUE_FRAMES`] and [`SUBSCRIBER_QUEUE_BYTES`]): the oldest frame is then
//! overwritten for it, the publisher does no per-subscriber work at all, and the lagging
//! reader notices at its next read (see [`crate::Subscriber`]).
//!
//! The ring does not keep what nobody needs any more: each reader's cursor is also noted in
//! the session's [`Readers`], and every [`TRIM_EVERY`] frames the publisher lets go of the
//! frames every reader has passed, but never of the GOP cache's (a reader that joins late
//! resumes there). A stream whose viewers keep up so holds its GOP, not its last
//! [`SUBSCRIBER_QUEUE_FRAMES`] frames, each with the encodings of its viewers' wire formats.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::{SharedConfig, SharedFrame};

/// How many frames each subscriber may have waiting (its queue, a window of the stream's
/// shared ring). When a subscriber is more than this many frames behind, the oldest frames
/// are dropped for it; at its next read it skips to a video keyframe (the newest one still
/// queued, else the next to come; audio resumes at the same point), and every frame it
/// skipped is counted in [`crate::Subscriber::dropped`] and in the stream's
/// [`crate::StreamStats::dropped`]. The publisher is never slowed.
///
/// 512 frames are about 7 s of 30 fps video with 44.1 kHz AAC, and about 5 s at 60 fps.
/// This is the default of [`crate::RelayLimits::buffer_frames`].
pub const SUBSCRIBER_QUEUE_FRAMES: usize = 512;

/// How many payload bytes the same window may hold: the oldest frames are dropped (with the
/// same consequences) when the frames queued would exceed it. 32 MiB are about 13 s at
/// 20 Mbit/s. This is the default of [`crate::RelayLimits::buffer_bytes`].
pub const SUBSCRIBER_QUEUE_BYTES: usize = 32 * 1024 * 1024;

/// One entry of the ring: a frame and the configuration that was in force when it was
/// pushed, so that a reader can announce a new configuration exactly before the first frame
/// that needs it.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// The frame.
    pub(crate) frame: Arc<SharedFrame>,
    /// The configuration in force at push time.
    pub(crate) config: Arc<SharedConfig>,
}

/// A FIFO of slots addressed by ever-increasing sequence numbers, bounded in slots and in
/// payload bytes.
#[derive(Debug)]
pub(crate) struct Ring {
    slots: VecDeque<Slot>,
    /// Sequence number of `slots.front()`.
    base: u64,
    capacity: usize,
    /// Payload bytes held, and the most it may hold (the newest slot is always kept).
    bytes: usize,
    max_bytes: usize,
}

impl Ring {
    /// An empty ring holding at most `capacity` (at least 1) slots and `max_bytes` of payload,
    /// its slot array allocated once.
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            slots: VecDeque::with_capacity(capacity),
            base: 0,
            capacity,
            bytes: 0,
            max_bytes,
        }
    }

    /// Payload bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Sequence number of the oldest slot still held.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// Sequence number the next pushed slot will get.
    pub(crate) fn head(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    /// Appends a slot, dropping the oldest ones while the ring is full in slots or bytes.
    /// Never allocates.
    pub(crate) fn push(&mut self, slot: Slot) {
        let len = slot.frame.frame.payload.len();
        while !self.slots.is_empty()
            && (self.slots.len() >= self.capacity || self.bytes + len > self.max_bytes)
        {
            if let Some(old) = self.slots.pop_front() {
                self.bytes -= old.frame.frame.payload.len();
            }
            self.base += 1;
        }
        self.bytes += len;
        self.slots.push_back(slot);
    }

    /// Lets go of the slots before sequence number `seq` (at most up to the head).
    pub(crate) fn trim_to(&mut self, seq: u64) {
        while self.base < seq {
            let Some(old) = self.slots.pop_front() else {
                break;
            };
            self.bytes -= old.frame.frame.payload.len();
            self.base += 1;
        }
    }

    /// Sequence number of the newest slot that satisfies `pred`, if any.
    pub(crate) fn newest(&self, pred: impl Fn(&Slot) -> bool) -> Option<u64> {
        let index = self.slots.iter().rposition(pred)?;
        Some(self.base + index as u64)
    }

    /// The slot with sequence number `seq`, if still held.
    pub(crate) fn get(&self, seq: u64) -> Option<&Slot> {
        let index = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get(index)
    }
}

/// Frames pushed between two trims of the ring (see [`Readers`]).
pub(crate) const TRIM_EVERY: u32 = 16;

/// The cursors of a session's readers, so that the ring can let go of what they have all
/// read. A reader takes a place when it starts reading the session and gives it back when it
/// stops; its cursor is noted under the session lock it reads with.
#[derive(Debug, Default)]
pub(crate) struct Readers {
    cursors: Vec<u64>,
    free: Vec<usize>,
}

/// A place of [`Readers`] that holds no reader.
const VACANT: u64 = u64::MAX;

impl Readers {
    /// Takes a place for a reader at `cursor`.
    pub(crate) fn add(&mut self, cursor: u64) -> usize {
        match self.free.pop() {
            Some(place) => {
                if let Some(c) = self.cursors.get_mut(place) {
                    *c = cursor;
                }
                place
            }
            None => {
                self.cursors.push(cursor);
                self.cursors.len() - 1
            }
        }
    }

    /// Notes where the reader at `place` stands.
    pub(crate) fn set(&mut self, place: usize, cursor: u64) {
        if let Some(c) = self.cursors.get_mut(place) {
            *c = cursor;
        }
    }

    /// Gives a place back.
    pub(crate) fn remove(&mut self, place: usize) {
        if let Some(c) = self.cursors.get_mut(place) {
            if *c != VACANT {
                *c = VACANT;
                self.free.push(place);
            }
        }
        // Once every place is free, the table starts over (it keeps no room for a crowd that
        // has gone).
        if self.free.len() == self.cursors.len() {
            self.cursors = Vec::new();
            self.free = Vec::new();
        }
    }

    /// The lowest cursor of all readers, if there is any reader.
    pub(crate) fn lowest(&self) -> Option<u64> {
        self.cursors.iter().copied().filter(|&c| c != VACANT).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use streamgate_media::{Codec, Frame, StreamConfig, TrackKind};

    fn slot(pts: i64) -> Slot {
        sized(pts, 0)
    }

    fn sized(pts: i64, len: usize) -> Slot {
        Slot {
            frame: Arc::new(SharedFrame::new(Frame {
                track: TrackKind::Audio,
                codec: Codec::Aac,
                pts,
                dts: pts,
                keyframe: true,
                payload: Bytes::from(vec![0; len]),
            })),
            config: Arc::new(SharedConfig::new(StreamConfig::default())),
        }
    }

    #[test]
    fn overwrites_oldest_when_full() {
        let mut ring = Ring::new(3, usize::MAX);
        for pts in 0..5 {
            ring.push(slot(pts));
        }
        assert_eq!(ring.base(), 2);
        assert_eq!(ring.head(), 5);
        assert!(ring.get(1).is_none());
        assert_eq!(ring.get(2).map(|s| s.frame.frame.pts), Some(2));
        assert_eq!(ring.get(4).map(|s| s.frame.frame.pts), Some(4));
        assert!(ring.get(5).is_none());
        assert_eq!(ring.newest(|s| s.frame.frame.pts < 4), Some(3));
        assert_eq!(ring.newest(|_| false), None);
    }

    #[test]
    fn drops_oldest_when_over_its_bytes() {
        let mut ring = Ring::new(100, 1000);
        for pts in 0..4 {
            ring.push(sized(pts, 300));
        }
        assert_eq!((ring.base(), ring.head(), ring.bytes()), (1, 4, 900));
        // One frame larger than the whole budget is kept alone.
        ring.push(sized(9, 5000));
        assert_eq!((ring.base(), ring.head(), ring.bytes()), (4, 5, 5000));
        ring.push(sized(10, 10));
        assert_eq!((ring.base(), ring.bytes()), (5, 10));
    }

    #[test]
    fn trims_up_to_a_sequence_number_and_no_further_than_the_head() {
        let mut ring = Ring::new(100, usize::MAX);
        for pts in 0..5 {
            ring.push(sized(pts, 10));
        }
        ring.trim_to(3);
        assert_eq!((ring.base(), ring.head(), ring.bytes()), (3, 5, 20));
        assert!(ring.get(2).is_none());
        ring.trim_to(1);
        assert_eq!(ring.base(), 3, "never backwards");
        ring.trim_to(99);
        assert_eq!((ring.base(), ring.head(), ring.bytes()), (5, 5, 0));
        ring.push(sized(5, 10));
        assert_eq!(ring.get(5).map(|s| s.frame.frame.pts), Some(5));
    }

    #[test]
    fn readers_give_the_lowest_cursor_and_reuse_places() {
        let mut readers = Readers::default();
        assert_eq!(readers.lowest(), None);
        let a = readers.add(7);
        let b = readers.add(3);
        assert_eq!(readers.lowest(), Some(3));
        readers.set(b, 9);
        assert_eq!(readers.lowest(), Some(7));
        readers.remove(a);
        assert_eq!(readers.lowest(), Some(9));
        let c = readers.add(4);
        assert_eq!(c, a, "a freed place is taken again");
        assert_eq!(readers.lowest(), Some(4));
        readers.remove(b);
        readers.remove(b);
        readers.remove(c);
        assert_eq!(readers.lowest(), None);
        assert_eq!(readers.add(1), 0, "an empty table starts over");
    }
}
