//! FLV video and audio tag bodies (what RTMP video and audio messages carry) to and from
//! [`crate::Frame`] and the stream configs.
//!
//! FLV timestamps are milliseconds; frames carry [`crate::CLOCK_HZ`] ticks. Parsing takes the
//! message timestamp as the decoding time and adds the AVC composition offset for the
//! presentation time; writing gives back the decoding time through [`timestamp_ms`] and the
//! offset, in milliseconds, inside the body.

mod audio;
mod video;

pub use audio::{aac_sequence_header_body, audio_body, parse_audio, FlvAudio};
pub use video::{avc_sequence_header_body, parse_video, video_body, FlvVideo};

use crate::{ticks_to_ms, Frame};

/// The FLV CodecID of H.264 / AVC.
pub const CODEC_ID_AVC: u8 = 7;

/// The FLV SoundFormat of AAC.
pub const SOUND_FORMAT_AAC: u8 = 10;

/// The FLV message timestamp (milliseconds) for a frame: its decoding time, wrapped to 32
/// bits as RTMP timestamps are.
pub fn timestamp_ms(frame: &Frame) -> u32 {
    let ms = ticks_to_ms(frame.dts).rem_euclid(1 << 32);
    u32::try_from(ms).unwrap_or(0)
}
