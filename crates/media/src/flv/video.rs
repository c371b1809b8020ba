//! FLV video tag bodies carrying H.264.

use bytes::{BufMut, Bytes, BytesMut};

use super::CODEC_ID_AVC;
use crate::read::ByteReader;
use crate::{ms_to_ticks, ticks_to_ms, AvcConfig, Codec, Frame, MediaError, TrackKind};

/// FrameType of a keyframe.
const FRAME_TYPE_KEY: u8 = 1;
/// FrameType of an inter frame.
const FRAME_TYPE_INTER: u8 = 2;
/// FrameType of a video info / command frame (no picture).
const FRAME_TYPE_COMMAND: u8 = 5;
/// Bit of the first byte that marks an enhanced-RTMP header (FourCC instead of CodecID).
const EX_HEADER_BIT: u8 = 0x80;

/// AVCPacketType of a sequence header (the decoder configuration record).
const AVC_SEQUENCE_HEADER: u8 = 0;
/// AVCPacketType of coded NAL units.
const AVC_NALU: u8 = 1;
/// AVCPacketType of an end of sequence.
const AVC_END_OF_SEQUENCE: u8 = 2;

/// Bytes before the payload: flags, AVCPacketType, 24-bit composition time.
const AVC_HEADER_LEN: usize = 5;
/// Range of the signed 24-bit composition time.
const CTS_MIN: i64 = -(1 << 23);
/// Range of the signed 24-bit composition time.
const CTS_MAX: i64 = (1 << 23) - 1;

/// What a video tag body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlvVideo {
    /// An AVC sequence header: the decoder configuration for the frames that follow.
    Config(AvcConfig),
    /// One H.264 access unit; the payload is the body's AVCC data, not copied, with the
    /// configuration's length size (4 with every common encoder; see
    /// [`crate::nal::normalize_avcc`]).
    Frame(Frame),
    /// An AVC end of sequence marker.
    EndOfSequence,
    /// A video info / command frame (FrameType 5), which carries no picture.
    Command,
    /// A legacy CodecID other than AVC; the value is the CodecID.
    Unsupported(u8),
    /// An enhanced-RTMP header, which this crate does not decode; the value is its FourCC.
    Enhanced([u8; 4]),
}

/// Parses a video tag body received with the message timestamp `timestamp_ms`.
pub fn parse_video(timestamp_ms: u32, body: Bytes) -> Result<FlvVideo, MediaError> {
    let mut r = ByteReader::new(&body, "FLV video tag");
    let flags = r.u8()?;
    if flags & EX_HEADER_BIT != 0 {
        return Ok(FlvVideo::Enhanced(r.array()?));
    }
    let frame_type = flags >> 4;
    let codec_id = flags & 0x0f;
    if frame_type == FRAME_TYPE_COMMAND {
        return Ok(FlvVideo::Command);
    }
    if codec_id != CODEC_ID_AVC {
        return Ok(FlvVideo::Unsupported(codec_id));
    }
    if !(1..=4).contains(&frame_type) {
        return Err(MediaError::Invalid {
            what: "FLV video FrameType",
            reason: "reserved value",
        });
    }
    let packet_type = r.u8()?;
    let cts = sign_extend_24(r.uint(3)?);
    match packet_type {
        AVC_SEQUENCE_HEADER => Ok(FlvVideo::Config(AvcConfig::parse(r.rest())?)),
        AVC_NALU => {
            if r.remaining() == 0 {
                return Err(MediaError::Invalid {
                    what: "FLV AVC frame",
                    reason: "no NAL units",
                });
            }
            let dts = ms_to_ticks(i64::from(timestamp_ms));
            Ok(FlvVideo::Frame(Frame {
                track: TrackKind::Video,
                codec: Codec::H264,
                pts: dts.saturating_add(ms_to_ticks(cts)),
                dts,
                keyframe: frame_type == FRAME_TYPE_KEY,
                payload: body.slice(AVC_HEADER_LEN.min(body.len())..),
            }))
        }
        AVC_END_OF_SEQUENCE => Ok(FlvVideo::EndOfSequence),
        other => Err(MediaError::Unsupported {
            what: "AVCPacketType",
            value: u32::from(other),
        }),
    }
}

/// The video tag body for an H.264 frame; its timestamp is [`super::timestamp_ms`].
///
/// The composition offset is written in whole milliseconds (`pts` and `dts` each rounded
/// down), clamped to the 24-bit range. Callers pass only [`Codec::H264`] frames: the body
/// is always labelled AVC.
pub fn video_body(frame: &Frame) -> Bytes {
    let frame_type = if frame.keyframe {
        FRAME_TYPE_KEY
    } else {
        FRAME_TYPE_INTER
    };
    let cts = ticks_to_ms(frame.pts)
        .saturating_sub(ticks_to_ms(frame.dts))
        .clamp(CTS_MIN, CTS_MAX);
    let mut out = BytesMut::with_capacity(AVC_HEADER_LEN + frame.payload.len());
    out.put_u8((frame_type << 4) | CODEC_ID_AVC);
    out.put_u8(AVC_NALU);
    put_u24(&mut out, cts);
    out.put_slice(&frame.payload);
    out.freeze()
}

/// The video tag body of an AVC sequence header, sent with timestamp 0 before any frame.
pub fn avc_sequence_header_body(config: &AvcConfig) -> Bytes {
    let mut out = BytesMut::with_capacity(AVC_HEADER_LEN + config.record.len());
    out.put_u8((FRAME_TYPE_KEY << 4) | CODEC_ID_AVC);
    out.put_u8(AVC_SEQUENCE_HEADER);
    put_u24(&mut out, 0);
    out.put_slice(&config.record);
    out.freeze()
}

/// Interprets a 24-bit field as a signed (two's complement) number.
fn sign_extend_24(value: u32) -> i64 {
    let value = i64::from(value & 0x00ff_ffff);
    if value & 0x0080_0000 != 0 {
        value - 0x0100_0000
    } else {
        value
    }
}

/// Writes the low 24 bits of `value` (two's complement) big-endian.
fn put_u24(out: &mut BytesMut, value: i64) {
    let [_, a, b, c] = u32::try_from(value & 0x00ff_ffff)
        .unwrap_or(0)
        .to_be_bytes();
    out.put_slice(&[a, b, c]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video_frame(keyframe: bool, dts_ms: i64, cts_ms: i64) -> Frame {
        Frame {
            track: TrackKind::Video,
            codec: Codec::H264,
            pts: ms_to_ticks(dts_ms + cts_ms),
            dts: ms_to_ticks(dts_ms),
            keyframe,
            payload: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
        }
    }

    #[test]
    fn frame_round_trip_with_negative_cts() {
        for (key, cts) in [(true, 80), (false, -40), (false, 0), (false, CTS_MAX)] {
            let frame = video_frame(key, 1_000, cts);
            let body = video_body(&frame);
            let parsed = parse_video(super::super::timestamp_ms(&frame), body).unwrap();
            assert_eq!(parsed, FlvVideo::Frame(frame));
        }
    }

    #[test]
    fn cts_is_clamped() {
        let frame = video_frame(false, 0, CTS_MAX + 10);
        let FlvVideo::Frame(parsed) = parse_video(0, video_body(&frame)).unwrap() else {
            panic!("not a frame");
        };
        assert_eq!(parsed.cts(), ms_to_ticks(CTS_MAX));
    }

    #[test]
    fn other_packets() {
        assert_eq!(
            parse_video(0, Bytes::from_static(&[0x17, 2, 0, 0, 0])).unwrap(),
            FlvVideo::EndOfSequence
        );
        assert_eq!(
            parse_video(0, Bytes::from_static(&[0x57, 0])).unwrap(),
            FlvVideo::Command
        );
        assert_eq!(
            parse_video(0, Bytes::from_static(&[0x12, 0, 0])).unwrap(),
            FlvVideo::Unsupported(2)
        );
        assert_eq!(
            parse_video(0, Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1', 0])).unwrap(),
            FlvVideo::Enhanced(*b"hvc1")
        );
    }

    #[test]
    fn malformed_bodies_fail() {
        for body in [
            &[][..],
            &[0x17],
            &[0x17, 1],
            &[0x17, 1, 0, 0],
            &[0x17, 1, 0, 0, 0],
            &[0x17, 0, 0, 0, 0],
            &[0x17, 0, 0, 0, 0, 1, 66],
            &[0x17, 3, 0, 0, 0, 1],
            &[0x07, 1, 0, 0, 0, 1],
            &[0x67, 1, 0, 0, 0, 1],
            &[0x90, b'h', b'v'],
        ] {
            assert!(
                parse_video(0, Bytes::copy_from_slice(body)).is_err(),
                "{body:?}"
            );
        }
    }
}
