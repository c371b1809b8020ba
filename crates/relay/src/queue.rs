//! The per-stream ring that serves as every subscriber's bounded queue.
//!
//! The publisher appends each frame once to one ring; each subscriber keeps only a cursor
//! (the sequence number of the next frame it will read). A subscriber's queue is therefore
//! the window between its cursor and the ring's head, and it is full when that window
//! exceeds the ring's frames or bytes ([`crate::RelayLimits`]; by default
//! [`SUBSCRIBER_QUEUE_FRAMES`] and [`SUBSCRIBER_QUEUE_BYTES`]): the oldest frame is then
//! overwritten for it, the publisher does no per-subscriber work at all, and the lagging
//! reader notices at its next read (see [`crate::Subscriber`]).

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
}
