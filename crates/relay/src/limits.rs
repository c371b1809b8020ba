//! The relay's memory bounds, set once per hub.

use crate::gop::{GOP_CACHE_MAX_BYTES, GOP_CACHE_MAX_FRAMES};
use crate::queue::{SUBSCRIBER_QUEUE_BYTES, SUBSCRIBER_QUEUE_FRAMES};

/// Largest frame a publisher may push by default (8 MiB: a 4K intra frame at a high bit rate
/// fits; nginx-rtmp's default message limit is 1 MiB).
pub const MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;

/// How much every stream may hold. The worst case per live stream is about
/// `buffer_bytes + gop_bytes` of frame payloads, each with at most one encoding per wire format
/// its viewers use (RTMP chunks, MPEG-TS, RTP), which are about as large as the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimits {
    /// Largest frame payload accepted by [`crate::Publisher::push`]; larger frames are dropped
    /// and counted in [`crate::StreamStats::oversized`].
    pub max_frame_bytes: usize,
    /// Frames each stream keeps for its subscribers (see [`SUBSCRIBER_QUEUE_FRAMES`]).
    pub buffer_frames: usize,
    /// Payload bytes each stream keeps for its subscribers (see [`SUBSCRIBER_QUEUE_BYTES`]).
    pub buffer_bytes: usize,
    /// Frames of the GOP cache (see [`GOP_CACHE_MAX_FRAMES`]).
    pub gop_frames: usize,
    /// Payload bytes of the GOP cache (see [`GOP_CACHE_MAX_BYTES`]).
    pub gop_bytes: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: MAX_FRAME_BYTES,
            buffer_frames: SUBSCRIBER_QUEUE_FRAMES,
            buffer_bytes: SUBSCRIBER_QUEUE_BYTES,
            gop_frames: GOP_CACHE_MAX_FRAMES,
            gop_bytes: GOP_CACHE_MAX_BYTES,
        }
    }
}
