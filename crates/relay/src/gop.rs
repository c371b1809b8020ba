//! The GOP cache: the frames since the latest video keyframe, so that a new subscriber can
//! start decoding at once.

use streamgate_media::TrackKind;

use crate::queue::Slot;

/// Most frames (video and audio together) the GOP cache holds by default; about 9 s of 60 fps
/// video with AAC. When a GOP grows past it, the cache is emptied until the next keyframe, and
/// subscribers joining meanwhile start at that keyframe.
pub const GOP_CACHE_MAX_FRAMES: usize = 1024;

/// Most payload bytes the GOP cache holds by default (16 MiB, about 6.5 s at 20 Mbit/s). When a GOP
/// grows past it, the cache is emptied until the next keyframe, and subscribers joining
/// meanwhile start at that keyframe.
pub const GOP_CACHE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Frames from the latest video keyframe on, audio included.
///
/// Bound policy: when the current GOP would exceed its frames or bytes (by default
/// [`GOP_CACHE_MAX_FRAMES`] and [`GOP_CACHE_MAX_BYTES`]), the cache is emptied and stays empty until the next keyframe.
/// Keeping a tail without its keyframe would be undecodable, and keeping only the head
/// would leave a gap before live frames, so a subscriber arriving meanwhile waits for the
/// next live keyframe instead. Audio-only streams are not cached: any audio frame is a start
/// point, so a new subscriber starts with the next frame.
#[derive(Debug)]
pub(crate) struct GopCache {
    slots: Vec<Slot>,
    bytes: usize,
    /// Whether `slots` starts at a keyframe and has stayed within bounds since.
    active: bool,
    max_frames: usize,
    max_bytes: usize,
}

impl Default for GopCache {
    fn default() -> Self {
        Self::new(GOP_CACHE_MAX_FRAMES, GOP_CACHE_MAX_BYTES)
    }
}

impl GopCache {
    /// An empty cache of at most `max_frames` and `max_bytes` of payload.
    pub(crate) fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            slots: Vec::new(),
            bytes: 0,
            active: false,
            max_frames,
            max_bytes,
        }
    }

    /// Records a pushed frame. Only a keyframe of the stream's own video starts a GOP; a
    /// derived track's frames are kept with the GOP they come in (a viewer of a derived video
    /// starts at its own next keyframe, which its joining asks for).
    pub(crate) fn push(&mut self, slot: &Slot) {
        let frame = &slot.frame.frame;
        if frame.track == TrackKind::Video && frame.keyframe && slot.frame.derived.is_none() {
            self.clear();
            self.active = true;
        }
        if !self.active {
            return;
        }
        let bytes = self.bytes.saturating_add(frame.payload.len());
        if self.slots.len() >= self.max_frames || bytes > self.max_bytes {
            self.clear();
            return;
        }
        self.bytes = bytes;
        self.slots.push(slot.clone());
    }

    /// Frames held: the ring's newest ones, when the GOP fits in the ring.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// A copy of the cached frames for a new subscriber (Arc clones).
    pub(crate) fn snapshot(&self) -> Vec<Slot> {
        self.slots.clone()
    }

    /// Empties the cache (keeping its allocation) until the next keyframe.
    fn clear(&mut self) {
        self.slots.clear();
        self.bytes = 0;
        self.active = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SharedConfig, SharedFrame};
    use bytes::Bytes;
    use std::sync::Arc;
    use streamgate_media::{Codec, Frame, StreamConfig};

    fn slot(track: TrackKind, keyframe: bool, len: usize) -> Slot {
        Slot {
            frame: Arc::new(SharedFrame::new(Frame {
                track,
                codec: if track == TrackKind::Video {
                    Codec::H264
                } else {
                    Codec::Aac
                },
                pts: 0,
                dts: 0,
                keyframe,
                payload: Bytes::from(vec![0; len]),
            })),
            config: Arc::new(SharedConfig::new(StreamConfig::default())),
        }
    }

    #[test]
    fn keeps_frames_since_latest_keyframe() {
        let mut gop = GopCache::default();
        gop.push(&slot(TrackKind::Audio, true, 1));
        assert!(gop.snapshot().is_empty(), "audio before any keyframe");
        gop.push(&slot(TrackKind::Video, true, 1));
        gop.push(&slot(TrackKind::Audio, true, 1));
        gop.push(&slot(TrackKind::Video, false, 1));
        assert_eq!(gop.snapshot().len(), 3);
        gop.push(&slot(TrackKind::Video, true, 1));
        assert_eq!(gop.snapshot().len(), 1);
    }

    #[test]
    fn oversized_gop_is_dropped_until_next_keyframe() {
        let mut gop = GopCache::default();
        gop.push(&slot(TrackKind::Video, true, 10));
        for _ in 1..GOP_CACHE_MAX_FRAMES {
            gop.push(&slot(TrackKind::Video, false, 10));
        }
        assert_eq!(gop.snapshot().len(), GOP_CACHE_MAX_FRAMES);
        gop.push(&slot(TrackKind::Video, false, 10));
        assert!(gop.snapshot().is_empty());
        gop.push(&slot(TrackKind::Video, false, 10));
        assert!(gop.snapshot().is_empty());
        gop.push(&slot(TrackKind::Video, true, 10));
        assert_eq!(gop.snapshot().len(), 1);

        gop.push(&slot(TrackKind::Video, false, GOP_CACHE_MAX_BYTES));
        assert!(gop.snapshot().is_empty(), "byte bound");
    }
}
