//! Frames and configs shared by every subscriber, with a per-wire-format cache so that the
//! bytes of each format are produced once and written many times.

use std::sync::OnceLock;

use bytes::Bytes;
use streamgate_media::{Frame, StreamConfig};

use crate::{Derivation, WireFormat};

/// One lazily filled slot per [`WireFormat`].
#[derive(Debug, Default)]
struct EncodeCache {
    rtmp: OnceLock<Bytes>,
    mpegts: OnceLock<Bytes>,
    rtp: OnceLock<Bytes>,
}

impl EncodeCache {
    /// The slot of one format; none for CMAF, which is made once per stream by its
    /// segmenter, not per viewer.
    fn slot(&self, format: WireFormat) -> Option<&OnceLock<Bytes>> {
        match format {
            WireFormat::Rtmp => Some(&self.rtmp),
            WireFormat::MpegTs => Some(&self.mpegts),
            WireFormat::Rtp => Some(&self.rtp),
            WireFormat::Cmaf => None,
        }
    }

    /// The cached bytes of `format`, running `encode` first if nobody has yet (every time
    /// for a format without a slot).
    fn get_or_encode(&self, format: WireFormat, encode: impl FnOnce() -> Bytes) -> Bytes {
        match self.slot(format) {
            Some(slot) => slot.get_or_init(encode).clone(),
            None => encode(),
        }
    }
}

/// A published frame as every subscriber sees it: the frame plus its encoded forms.
#[derive(Debug)]
pub struct SharedFrame {
    /// The frame as the publisher (or a derivation) pushed it.
    pub frame: Frame,
    /// The derived track it belongs to; `None` for the stream's own frames.
    pub derived: Option<Derivation>,
    cache: EncodeCache,
}

impl SharedFrame {
    /// Wraps a frame of the stream's own with an empty encode cache.
    pub fn new(frame: Frame) -> Self {
        Self {
            frame,
            derived: None,
            cache: EncodeCache::default(),
        }
    }

    /// Wraps a frame of a derived track with an empty encode cache.
    pub fn derived(frame: Frame, derivation: Derivation) -> Self {
        Self {
            frame,
            derived: Some(derivation),
            cache: EncodeCache::default(),
        }
    }

    /// The frame's bytes in `format`: `encode` runs at most once per frame and format (a
    /// concurrent caller waits for the first one), and every caller gets the same `Bytes`.
    pub fn encoded(&self, format: WireFormat, encode: impl FnOnce(&Frame) -> Bytes) -> Bytes {
        self.cache.get_or_encode(format, || encode(&self.frame))
    }
}

/// A stream configuration as every subscriber sees it, with the same encode-once cache as
/// [`SharedFrame`] (for sequence headers and metadata messages).
#[derive(Debug)]
pub struct SharedConfig {
    /// The configuration as the publisher set it.
    pub config: StreamConfig,
    cache: EncodeCache,
}

impl SharedConfig {
    /// Wraps a configuration with an empty encode cache.
    pub fn new(config: StreamConfig) -> Self {
        Self {
            config,
            cache: EncodeCache::default(),
        }
    }

    /// The configuration's bytes in `format`, encoded at most once (see
    /// [`SharedFrame::encoded`]).
    pub fn encoded(
        &self,
        format: WireFormat,
        encode: impl FnOnce(&StreamConfig) -> Bytes,
    ) -> Bytes {
        self.cache.get_or_encode(format, || encode(&self.config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamgate_media::{Codec, TrackKind};

    #[test]
    fn formats_are_cached_separately() {
        let shared = SharedFrame::new(Frame {
            track: TrackKind::Audio,
            codec: Codec::Aac,
            pts: 0,
            dts: 0,
            keyframe: true,
            payload: Bytes::from_static(b"au"),
        });
        let mut calls = 0;
        let a = shared.encoded(WireFormat::Rtmp, |f| {
            calls += 1;
            f.payload.clone()
        });
        let b = shared.encoded(WireFormat::Rtmp, |_| {
            calls += 1;
            Bytes::new()
        });
        assert_eq!(a, b);
        assert_eq!(calls, 1);
        let ts = shared.encoded(WireFormat::MpegTs, |_| Bytes::from_static(b"ts"));
        assert_eq!(&ts[..], b"ts");
        assert_eq!(shared.encoded(WireFormat::Rtp, |_| Bytes::new()).len(), 0);

        let config = SharedConfig::new(StreamConfig::default());
        let first = config.encoded(WireFormat::Rtmp, |_| Bytes::from_static(b"hdr"));
        let second = config.encoded(WireFormat::Rtmp, |_| Bytes::new());
        assert_eq!(first, second);
    }
}
