//! Errors of the transcodes.

/// Why a transcode could not be built or a frame not be converted.
#[derive(Debug, thiserror::Error)]
pub enum TranscodeError {
    /// The input's configuration is one the decoder does not take (e.g. HE-AAC, more than two
    /// channels); the stream plays without sound.
    #[error("unsupported audio: {0}")]
    Unsupported(&'static str),
    /// The decoder refused a frame (corrupt data); the frame is skipped.
    #[error("cannot decode audio frame: {0}")]
    Decode(String),
    /// The encoder failed; the frame is skipped.
    #[error("cannot encode audio frame: {0}")]
    Encode(String),
    /// The video codec refused a frame or its configuration (corrupt data, a picture too
    /// large); the frame is skipped and decoding waits for the next keyframe.
    #[error("{0}")]
    Codec(String),
}
