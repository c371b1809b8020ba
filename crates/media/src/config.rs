//! What a player must know about a stream besides its frames.

use crate::{AacConfig, AvcConfig};

/// Descriptive stream properties as an encoder announces them (RTMP `onMetaData`); all
/// optional, none needed for decoding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// Picture width in pixels.
    pub width: Option<u32>,
    /// Picture height in pixels.
    pub height: Option<u32>,
    /// Frames per second.
    pub frame_rate: Option<f64>,
    /// Video bit rate in kbit/s.
    pub video_data_rate: Option<f64>,
    /// Audio bit rate in kbit/s.
    pub audio_data_rate: Option<f64>,
    /// Audio sampling rate in Hz.
    pub audio_sample_rate: Option<u32>,
    /// Number of audio channels.
    pub audio_channels: Option<u8>,
    /// The encoder's name and version.
    pub encoder: Option<String>,
}

/// The decoder configurations and metadata of a live stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamConfig {
    /// H.264 configuration, once known.
    pub video: Option<AvcConfig>,
    /// AAC configuration, once known.
    pub audio: Option<AacConfig>,
    /// Encoder-announced metadata, once known.
    pub metadata: Option<Metadata>,
}

impl StreamConfig {
    /// Whether nothing is known yet.
    pub fn is_empty(&self) -> bool {
        self.video.is_none() && self.audio.is_none() && self.metadata.is_none()
    }
}
