//! FLV audio tag bodies carrying AAC.

use bytes::{BufMut, Bytes, BytesMut};

use super::SOUND_FORMAT_AAC;
use crate::read::ByteReader;
use crate::{ms_to_ticks, AacConfig, Codec, Frame, MediaError, TrackKind};

/// The flags byte encoders write for AAC: SoundFormat 10, 44.1 kHz, 16-bit, stereo. The AAC
/// decoder ignores these bits and reads the real values from the AudioSpecificConfig.
const AAC_FLAGS: u8 = 0xaf;

/// AACPacketType of a sequence header (the AudioSpecificConfig).
const AAC_SEQUENCE_HEADER: u8 = 0;
/// AACPacketType of a raw access unit.
const AAC_RAW: u8 = 1;

/// Bytes before the payload: flags and AACPacketType.
const AAC_HEADER_LEN: usize = 2;

/// What an audio tag body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlvAudio {
    /// An AAC sequence header: the decoder configuration for the frames that follow.
    Config(AacConfig),
    /// One raw AAC access unit; the payload is the body's data, not copied.
    Frame(Frame),
    /// A SoundFormat other than AAC; the value is the SoundFormat.
    Unsupported(u8),
}

/// Parses an audio tag body received with the message timestamp `timestamp_ms`.
pub fn parse_audio(timestamp_ms: u32, body: Bytes) -> Result<FlvAudio, MediaError> {
    let mut r = ByteReader::new(&body, "FLV audio tag");
    let sound_format = r.u8()? >> 4;
    if sound_format != SOUND_FORMAT_AAC {
        return Ok(FlvAudio::Unsupported(sound_format));
    }
    match r.u8()? {
        AAC_SEQUENCE_HEADER => Ok(FlvAudio::Config(AacConfig::parse(r.rest())?)),
        AAC_RAW => {
            if r.remaining() == 0 {
                return Err(MediaError::Invalid {
                    what: "FLV AAC frame",
                    reason: "empty access unit",
                });
            }
            let ts = ms_to_ticks(i64::from(timestamp_ms));
            Ok(FlvAudio::Frame(Frame {
                track: TrackKind::Audio,
                codec: Codec::Aac,
                pts: ts,
                dts: ts,
                keyframe: true,
                payload: body.slice(AAC_HEADER_LEN.min(body.len())..),
            }))
        }
        other => Err(MediaError::Unsupported {
            what: "AACPacketType",
            value: u32::from(other),
        }),
    }
}

/// The audio tag body for an AAC frame; its timestamp is [`super::timestamp_ms`].
///
/// Callers pass only [`Codec::Aac`] frames: the body is always labelled AAC.
pub fn audio_body(frame: &Frame) -> Bytes {
    let mut out = BytesMut::with_capacity(AAC_HEADER_LEN + frame.payload.len());
    out.put_u8(AAC_FLAGS);
    out.put_u8(AAC_RAW);
    out.put_slice(&frame.payload);
    out.freeze()
}

/// The audio tag body of an AAC sequence header, sent with timestamp 0 before any frame.
pub fn aac_sequence_header_body(config: &AacConfig) -> Bytes {
    let mut out = BytesMut::with_capacity(AAC_HEADER_LEN + config.raw.len());
    out.put_u8(AAC_FLAGS);
    out.put_u8(AAC_SEQUENCE_HEADER);
    out.put_slice(&config.raw);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_and_config_round_trip() {
        let frame = Frame {
            track: TrackKind::Audio,
            codec: Codec::Aac,
            pts: ms_to_ticks(23),
            dts: ms_to_ticks(23),
            keyframe: true,
            payload: Bytes::from_static(&[0x21, 0x10, 0x04]),
        };
        let body = audio_body(&frame);
        assert_eq!(&body[..2], &[0xaf, 0x01]);
        assert_eq!(
            parse_audio(super::super::timestamp_ms(&frame), body).unwrap(),
            FlvAudio::Frame(frame)
        );
        let config = AacConfig::new(2, 4, 2).unwrap();
        let body = aac_sequence_header_body(&config);
        assert_eq!(&body[..], &[0xaf, 0x00, 0x12, 0x10]);
        assert_eq!(parse_audio(0, body).unwrap(), FlvAudio::Config(config));
    }

    #[test]
    fn other_formats_are_unsupported() {
        assert_eq!(
            parse_audio(0, Bytes::from_static(&[0x2f, 0xff])).unwrap(),
            FlvAudio::Unsupported(2)
        );
    }

    #[test]
    fn malformed_bodies_fail() {
        for body in [
            &[][..],
            &[0xaf],
            &[0xaf, 1],
            &[0xaf, 0],
            &[0xaf, 0, 0x12],
            &[0xaf, 2, 1, 2],
        ] {
            assert!(
                parse_audio(0, Bytes::copy_from_slice(body)).is_err(),
                "{body:?}"
            );
        }
    }
}
