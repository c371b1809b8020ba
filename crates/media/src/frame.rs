//! The unit of media that moves through the server: one access unit of one track.

use bytes::Bytes;

/// The media clock every [`Frame`] timestamp counts in: 90 000 ticks per second.
///
/// It is the MPEG-TS and RTP video clock, so SRT and WebRTC need no rescaling for video, and
/// a millisecond (the FLV/RTMP unit) is exactly 90 ticks.
pub const CLOCK_HZ: i64 = 90_000;

/// Ticks of [`CLOCK_HZ`] in one millisecond.
const TICKS_PER_MS: i64 = CLOCK_HZ / 1000;

/// Converts milliseconds to [`CLOCK_HZ`] ticks (saturating at the `i64` range).
pub const fn ms_to_ticks(ms: i64) -> i64 {
    ms.saturating_mul(TICKS_PER_MS)
}

/// Converts [`CLOCK_HZ`] ticks to milliseconds, rounding towards negative infinity.
pub const fn ticks_to_ms(ticks: i64) -> i64 {
    ticks.div_euclid(TICKS_PER_MS)
}

/// Which kind of track a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Pictures.
    Video,
    /// Sound.
    Audio,
}

/// The codec of a frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// H.264 / AVC video; payload in AVCC form (see [`Frame`]).
    H264,
    /// AAC audio; payload is one raw access unit (see [`Frame`]).
    Aac,
    /// Opus audio; payload is one Opus packet.
    Opus,
    /// VP8 video; payload is one VP8 frame.
    Vp8,
}

impl Codec {
    /// The track kind this codec carries.
    pub const fn track(self) -> TrackKind {
        match self {
            Self::H264 | Self::Vp8 => TrackKind::Video,
            Self::Aac | Self::Opus => TrackKind::Audio,
        }
    }
}

/// One access unit of one track, timestamped on the [`CLOCK_HZ`] clock.
///
/// Payload conventions, the same whatever protocol the frame came in on:
/// - [`Codec::H264`]: AVCC, i.e. NAL units each preceded by a 4-byte big-endian length. SPS and
///   PPS need not be inside; they travel in [`crate::AvcConfig`].
/// - [`Codec::Aac`]: one raw AAC access unit, without an ADTS header; the decoder configuration
///   travels in [`crate::AacConfig`].
///
/// Every audio frame is marked `keyframe`, since each one can be decoded on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Video or audio.
    pub track: TrackKind,
    /// The payload's codec.
    pub codec: Codec,
    /// Presentation time in [`CLOCK_HZ`] ticks.
    pub pts: i64,
    /// Decoding time in [`CLOCK_HZ`] ticks; equal to `pts` unless the video has B-frames.
    pub dts: i64,
    /// Whether decoding can start at this frame (an IDR picture; every audio frame).
    pub keyframe: bool,
    /// The coded data, shared rather than copied when the frame is cloned.
    pub payload: Bytes,
}

impl Frame {
    /// Composition offset `pts - dts` in ticks.
    pub const fn cts(&self) -> i64 {
        self.pts.saturating_sub(self.dts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_and_ticks_round_trip() {
        assert_eq!(ms_to_ticks(1000), CLOCK_HZ);
        assert_eq!(ticks_to_ms(CLOCK_HZ), 1000);
        for ms in [-40, -1, 0, 1, 33, 40, 4_294_967_295] {
            assert_eq!(ticks_to_ms(ms_to_ticks(ms)), ms);
        }
        assert_eq!(ticks_to_ms(89), 0);
        assert_eq!(ticks_to_ms(-1), -1);
        assert_eq!(ms_to_ticks(i64::MAX), i64::MAX);
    }

    #[test]
    fn codec_tracks() {
        assert_eq!(Codec::H264.track(), TrackKind::Video);
        assert_eq!(Codec::Vp8.track(), TrackKind::Video);
        assert_eq!(Codec::Aac.track(), TrackKind::Audio);
        assert_eq!(Codec::Opus.track(), TrackKind::Audio);
    }
}
