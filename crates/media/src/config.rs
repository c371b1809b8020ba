//! What a player must know about a stream besides its frames.

use crate::{AacConfig, AvcConfig, Codec};

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
    /// The video codec the encoder announced (`videocodecid`), if it is one streamgate takes.
    pub video_codec: Option<Codec>,
    /// The audio codec the encoder announced (`audiocodecid`), if it is one streamgate takes.
    pub audio_codec: Option<Codec>,
}

/// The tracks a live stream carries, as the relay settled them for the publish (see
/// `streamgate_relay::Publisher::expect`): what every viewer's choice of tracks is made from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tracks {
    /// The picture, if any.
    pub video: Option<VideoTrack>,
    /// The sound's codec, if any.
    pub audio: Option<Codec>,
}

/// A stream's video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoTrack {
    /// The codec.
    pub codec: Codec,
    /// Whether pictures are presented in another order than they are decoded (B-frames): some
    /// frame's presentation time differs from its decoding time.
    pub bframes: bool,
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
    /// The tracks the stream carries, set by the relay (empty until its first frames).
    pub tracks: Tracks,
}

impl StreamConfig {
    /// Whether nothing is known yet.
    pub fn is_empty(&self) -> bool {
        self.video.is_none()
            && self.audio.is_none()
            && self.metadata.is_none()
            && self.tracks == Tracks::default()
    }
}
