//! AAC -> Opus for WebRTC viewers of RTMP and SRT streams.

use bytes::Bytes;
use opus::{Application, Bitrate, Channels, Encoder};
use streamgate_media::{AacConfig, Codec, Frame, TrackKind};
use symphonia_codec_aac::AacDecoder;
use symphonia_core::audio::{AudioBufferRef, Signal};
use symphonia_core::codecs::{CodecParameters, Decoder, DecoderOptions, CODEC_TYPE_AAC};
use symphonia_core::formats::Packet;

use crate::{samples_to_ticks, Resampler, TranscodeError, OPUS_CHANNELS};

/// The Opus sample rate browsers expect, in Hz.
pub const OPUS_RATE: u32 = 48_000;

/// Samples per channel in one Opus frame: 20 ms at 48 kHz, the WebRTC default packet time.
pub const OPUS_FRAME_SAMPLES: usize = 960;

/// Opus bit rate, in bit/s: transparent for stereo music, small beside the video.
pub const OPUS_BITRATE: i32 = 96_000;

/// A jump between an AAC frame's timestamp and the one expected from the previous frame
/// larger than this (in 90 kHz ticks, 100 ms) restarts the output timeline at the new
/// timestamp instead of letting audio drift from video.
pub const RESYNC_GAP: i64 = 9_000;

/// Largest Opus packet written, in bytes (RFC 6716 allows 1275 per frame).
const MAX_OPUS_PACKET: usize = 1500;

/// AAC object type for AAC-LC, the only profile the decoder takes.
const AAC_LC: u8 = 2;

/// One stream's AAC -> Opus transcode.
pub struct AacToOpus {
    decoder: AacDecoder,
    encoder: Encoder,
    resampler: Resampler,
    in_rate: u32,
    in_channels: usize,
    /// Interleaved stereo 48 kHz samples waiting for a whole Opus frame.
    pending: Vec<f32>,
    /// Scratch for one decoded frame, interleaved stereo at the input rate.
    decoded: Vec<f32>,
    /// Timestamp of the first sample in `pending`'s timeline origin.
    origin_pts: Option<i64>,
    /// 48 kHz samples per channel emitted since `origin_pts`.
    emitted: u64,
    /// The timestamp the next AAC frame should carry.
    expected_pts: Option<i64>,
}

impl std::fmt::Debug for AacToOpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacToOpus")
            .field("in_rate", &self.in_rate)
            .field("in_channels", &self.in_channels)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl AacToOpus {
    /// A transcode for a stream with this AAC configuration (AAC-LC, mono or stereo).
    pub fn new(config: &AacConfig) -> Result<Self, TranscodeError> {
        if config.object_type != AAC_LC {
            return Err(TranscodeError::Unsupported("only AAC-LC is decoded"));
        }
        let in_channels = match config.channel_config {
            1 => 1,
            2 => 2,
            _ => return Err(TranscodeError::Unsupported("only mono and stereo AAC")),
        };
        if !(8_000..=96_000).contains(&config.sample_rate) {
            return Err(TranscodeError::Unsupported("AAC sample rate out of range"));
        }
        let mut params = CodecParameters::new();
        params
            .for_codec(CODEC_TYPE_AAC)
            .with_sample_rate(config.sample_rate)
            .with_extra_data(config.raw.to_vec().into_boxed_slice());
        let decoder = AacDecoder::try_new(&params, &DecoderOptions::default())
            .map_err(|e| TranscodeError::Decode(e.to_string()))?;
        let mut encoder = Encoder::new(OPUS_RATE, Channels::Stereo, Application::Audio)
            .map_err(|e| TranscodeError::Encode(e.to_string()))?;
        encoder
            .set_bitrate(Bitrate::Bits(OPUS_BITRATE))
            .map_err(|e| TranscodeError::Encode(e.to_string()))?;
        Ok(Self {
            decoder,
            encoder,
            resampler: Resampler::new(config.sample_rate, OPUS_RATE, OPUS_CHANNELS),
            in_rate: config.sample_rate,
            in_channels,
            pending: Vec::new(),
            decoded: Vec::new(),
            origin_pts: None,
            emitted: 0,
            expected_pts: None,
        })
    }

    /// Transcodes one AAC frame; returns the Opus frames now complete (usually zero to two).
    /// A frame that is not AAC is ignored.
    pub fn push(&mut self, frame: &Frame) -> Result<Vec<Frame>, TranscodeError> {
        if frame.codec != Codec::Aac {
            return Ok(Vec::new());
        }
        let jumped = self
            .expected_pts
            .is_none_or(|e| (frame.pts - e).abs() > RESYNC_GAP);
        if jumped {
            self.resampler.reset();
            self.pending.clear();
            self.origin_pts = Some(frame.pts);
            self.emitted = 0;
        }
        let packet = Packet::new_from_slice(0, 0, 0, &frame.payload);
        let decoded = self.decoder.decode(&packet);
        let frames = match decoded {
            Ok(buf) => {
                interleave_stereo(&buf, self.in_channels, &mut self.decoded);
                buf.frames()
            }
            Err(e) => {
                // Keep the timeline: a lost frame becomes silence of the usual length.
                self.decoded.clear();
                self.decoded.resize(1024 * OPUS_CHANNELS, 0.0);
                self.expected_pts = Some(frame.pts + samples_to_ticks(1024, self.in_rate));
                self.resampler.process(&self.decoded, &mut self.pending);
                return Err(TranscodeError::Decode(e.to_string()));
            }
        };
        self.expected_pts = Some(frame.pts + samples_to_ticks(frames as u64, self.in_rate));
        self.resampler.process(&self.decoded, &mut self.pending);
        self.drain()
    }

    /// Encodes every whole Opus frame in `pending`.
    fn drain(&mut self) -> Result<Vec<Frame>, TranscodeError> {
        let per_frame = OPUS_FRAME_SAMPLES * OPUS_CHANNELS;
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_OPUS_PACKET];
        let mut consumed = 0;
        while let Some(chunk) = self.pending.get(consumed..consumed + per_frame) {
            let len = self
                .encoder
                .encode_float(chunk, &mut buf)
                .map_err(|e| TranscodeError::Encode(e.to_string()))?;
            consumed += per_frame;
            let origin = self.origin_pts.unwrap_or(0);
            let pts = origin + samples_to_ticks(self.emitted, OPUS_RATE);
            self.emitted += OPUS_FRAME_SAMPLES as u64;
            out.push(Frame {
                track: TrackKind::Audio,
                codec: Codec::Opus,
                pts,
                dts: pts,
                keyframe: true,
                payload: Bytes::copy_from_slice(buf.get(..len).unwrap_or(&[])),
            });
        }
        self.pending.drain(..consumed);
        Ok(out)
    }
}

/// Writes a decoded buffer into `out` as interleaved stereo (mono is doubled).
fn interleave_stereo(buf: &AudioBufferRef<'_>, channels: usize, out: &mut Vec<f32>) {
    out.clear();
    let AudioBufferRef::F32(planes) = buf else {
        // symphonia's AAC decoder always produces f32.
        return;
    };
    let left = planes.chan(0);
    let right = if channels > 1 && planes.spec().channels.count() > 1 {
        planes.chan(1)
    } else {
        left
    };
    out.reserve(left.len() * 2);
    for (l, r) in left.iter().zip(right) {
        out.push(*l);
        out.push(*r);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn aac_config(rate_index: u8, channels: u8) -> AacConfig {
        // AudioSpecificConfig: 5 bits object type, 4 bits rate index, 4 bits channels.
        let v: u16 =
            (u16::from(AAC_LC) << 11) | (u16::from(rate_index) << 7) | (u16::from(channels) << 3);
        AacConfig::parse(&v.to_be_bytes()).unwrap()
    }

    #[test]
    fn refuses_what_the_decoder_cannot_take() {
        let mut he = aac_config(4, 2);
        he.object_type = 5;
        assert!(matches!(
            AacToOpus::new(&he),
            Err(TranscodeError::Unsupported(_))
        ));
        assert!(matches!(
            AacToOpus::new(&aac_config(4, 6)),
            Err(TranscodeError::Unsupported(_))
        ));
        assert!(AacToOpus::new(&aac_config(4, 2)).is_ok());
        assert!(AacToOpus::new(&aac_config(3, 1)).is_ok());
    }

    #[test]
    fn garbage_frames_keep_the_timeline_and_never_panic() {
        let mut t = AacToOpus::new(&aac_config(4, 2)).unwrap();
        let mut opus = Vec::new();
        for i in 0..50i64 {
            let f = Frame {
                track: TrackKind::Audio,
                codec: Codec::Aac,
                pts: i * 2090,
                dts: i * 2090,
                keyframe: true,
                payload: Bytes::from(vec![(i as u8).wrapping_mul(37); (i as usize * 7) % 300]),
            };
            if let Ok(out) = t.push(&f) {
                opus.extend(out);
            }
            opus.extend(t.drain().unwrap());
        }
        // 50 frames of 1024 samples at 44.1 kHz = about 1.16 s = about 58 Opus frames.
        assert!((55..=59).contains(&opus.len()), "{}", opus.len());
        for w in opus.windows(2) {
            assert_eq!(w[1].pts - w[0].pts, 1800);
        }
        assert_eq!(opus[0].pts, 0);
    }
}
