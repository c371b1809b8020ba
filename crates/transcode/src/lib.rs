//! Transcodes between the codecs encoders send (AAC in RTMP and MPEG-TS, H.264 of any profile)
//! and the codecs browsers play (Opus at 48 kHz, H.264 without B-frames), and runs them as the
//! relay's derived tracks ([`Transcoders`]: one task and one codec thread per derivation of a
//! stream, for every viewer that takes it). The codecs themselves do no IO and keep no clock;
//! no socket is opened here.
//!
//! Main loop (driven by the caller, once per stream, not per viewer): build an [`AacToOpus`]
//! from the stream's [`streamgate_media::AacConfig`], hand it every AAC [`Frame`] in order
//! with [`AacToOpus::push`], and send on the Opus frames it returns. Timestamps carry over
//! from the input: each Opus frame's `pts` is the input time of its first sample, so audio
//! stays on the same clock as the video it came with.
//!
//! The other way, [`OpusToAac`] turns a browser publisher's Opus into AAC-LC for RTMP and
//! SRT viewers, with the same timestamp rule.
//!
//! Libraries: AAC-LC is decoded by `symphonia-codec-aac` (pure Rust), Opus is encoded by
//! libopus through the `opus` crate, which also decodes it; AAC is encoded by libxaac
//! (Apache-2.0, the `xaac-rs` crate, built from its bundled sources), or by the Fraunhofer FDK
//! library with the `fdk-aac` feature (see [`aac_enc`]); the sample rate is converted by
//! [`Resampler`].

pub mod aac_enc;
mod aac_opus;
mod avc;
mod derive;
mod error;
mod opus_aac;
mod resample;

pub use aac_enc::AAC_FRAME_SAMPLES;
pub use aac_opus::{AacToOpus, OPUS_BITRATE, OPUS_FRAME_SAMPLES, OPUS_RATE, RESYNC_GAP};
pub use avc::{AvcReencoder, AvcSettings, MAX_PICTURE_PIXELS};
pub use derive::{BFramesPolicy, TranscodeSettings, Transcoders};
pub use error::TranscodeError;
pub use opus_aac::{OpusToAac, AAC_BITRATE};
pub use resample::Resampler;

use streamgate_media::Frame;

/// Number of output channels: Opus for browsers is always encoded as stereo.
pub const OPUS_CHANNELS: usize = 2;

/// A frame's duration helper: `samples` at `rate` Hz in [`streamgate_media::CLOCK_HZ`] ticks.
pub fn samples_to_ticks(samples: u64, rate: u32) -> i64 {
    if rate == 0 {
        return 0;
    }
    let ticks = i128::from(samples) * i128::from(streamgate_media::CLOCK_HZ) / i128::from(rate);
    i64::try_from(ticks).unwrap_or(i64::MAX)
}

/// Whether a frame is one the [`AacToOpus`] transcode takes.
pub fn is_aac(frame: &Frame) -> bool {
    frame.codec == streamgate_media::Codec::Aac
}
