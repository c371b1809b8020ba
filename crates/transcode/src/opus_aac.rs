//! Opus -> AAC for RTMP and SRT viewers of browser publishers.

use bytes::Bytes;
use opus::{Channels, Decoder};
use streamgate_media::{AacConfig, Codec, Frame, TrackKind};

use crate::aac_enc::{default_encoder, AacFrameEncoder, Encoded, AAC_FRAME_SAMPLES};
use crate::{samples_to_ticks, TranscodeError, OPUS_CHANNELS, OPUS_RATE, RESYNC_GAP};

/// AAC bit rate, in bit/s (constant): ample for stereo AAC-LC at 48 kHz.
pub const AAC_BITRATE: u32 = 128_000;

/// Most samples per channel one Opus packet decodes to: 120 ms at 48 kHz.
const MAX_OPUS_SAMPLES: usize = 5_760;

/// A gap up to this (in 90 kHz ticks, 100 ms) between Opus packets is filled with the
/// decoder's loss concealment; a longer one restarts the timeline ([`RESYNC_GAP`]).
const OPUS_FRAME_TICKS: i64 = 1_800;

/// One stream's Opus -> AAC transcode (48 kHz stereo in and out).
pub struct OpusToAac {
    decoder: Decoder,
    encoder: Box<dyn AacFrameEncoder>,
    config: AacConfig,
    /// Encoder delay in samples per channel.
    delay: u64,
    /// Decoded interleaved samples waiting for a whole AAC frame.
    pending: Vec<i16>,
    /// Time (90 kHz ticks) of input sample 0 of the encoder's timeline.
    origin: Option<i64>,
    /// Samples per channel handed to the encoder so far.
    fed: u64,
    /// The timestamp the next Opus packet should carry.
    expected_pts: Option<i64>,
    scratch: Vec<i16>,
}

impl std::fmt::Debug for OpusToAac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusToAac")
            .field("config", &self.config)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl OpusToAac {
    /// A transcode producing AAC-LC, 48 kHz stereo.
    pub fn new() -> Result<Self, TranscodeError> {
        let decoder = Decoder::new(OPUS_RATE, Channels::Stereo)
            .map_err(|e| TranscodeError::Decode(e.to_string()))?;
        let encoder = default_encoder(OPUS_CHANNELS as u16, AAC_BITRATE)?;
        let config = AacConfig::parse(encoder.audio_specific_config())
            .map_err(|_| TranscodeError::Encode("encoder gave no AudioSpecificConfig".into()))?;
        Ok(Self {
            decoder,
            delay: encoder.delay(),
            encoder,
            config,
            pending: Vec::new(),
            origin: None,
            fed: 0,
            expected_pts: None,
            scratch: vec![0; MAX_OPUS_SAMPLES * OPUS_CHANNELS],
        })
    }

    /// The AudioSpecificConfig of the AAC this produces (for the RTMP sequence header and
    /// the ADTS headers of MPEG-TS).
    pub fn config(&self) -> &AacConfig {
        &self.config
    }

    /// The configuration every `OpusToAac` produces (AAC-LC, 48 kHz, stereo), known without
    /// making one: a browser publisher announces it for its derived AAC track.
    pub fn output_config() -> Result<AacConfig, TranscodeError> {
        /// AAC-LC's object type, and the sampling frequency index of 48 kHz.
        const LC: u8 = 2;
        const RATE_48K: u8 = 3;
        AacConfig::new(LC, RATE_48K, OPUS_CHANNELS as u8)
            .map_err(|e| TranscodeError::Encode(e.to_string()))
    }

    /// Transcodes one Opus packet; returns the AAC frames now complete. A frame that is not
    /// Opus is ignored.
    pub fn push(&mut self, frame: &Frame) -> Result<Vec<Frame>, TranscodeError> {
        if frame.codec != Codec::Opus {
            return Ok(Vec::new());
        }
        let queued = (self.pending.len() / OPUS_CHANNELS) as u64;
        match self.expected_pts.map(|e| frame.pts - e) {
            None => self.origin = Some(frame.pts - samples_to_ticks(self.fed + queued, OPUS_RATE)),
            Some(gap) if gap.abs() > RESYNC_GAP => {
                self.origin = Some(frame.pts - samples_to_ticks(self.fed + queued, OPUS_RATE));
            }
            Some(gap) if gap >= OPUS_FRAME_TICKS => {
                // Lost packets: conceal them, 20 ms at a time.
                for _ in 0..gap / OPUS_FRAME_TICKS {
                    let n = self
                        .decoder
                        .decode(&[], &mut self.scratch, false)
                        .unwrap_or(0);
                    self.pending
                        .extend_from_slice(self.scratch.get(..n * OPUS_CHANNELS).unwrap_or(&[]));
                }
            }
            Some(_) => {}
        }
        let n = self
            .decoder
            .decode(&frame.payload, &mut self.scratch, false)
            .map_err(|e| TranscodeError::Decode(e.to_string()))?;
        self.expected_pts = Some(frame.pts + samples_to_ticks(n as u64, OPUS_RATE));
        self.pending
            .extend_from_slice(self.scratch.get(..n * OPUS_CHANNELS).unwrap_or(&[]));
        self.drain()
    }

    /// Encodes every whole AAC frame in `pending`.
    fn drain(&mut self) -> Result<Vec<Frame>, TranscodeError> {
        let per_frame = AAC_FRAME_SAMPLES * OPUS_CHANNELS;
        let mut encoded = Vec::new();
        let mut consumed = 0;
        let mut failed = None;
        while let Some(chunk) = self.pending.get(consumed..consumed + per_frame) {
            consumed += per_frame;
            self.fed += AAC_FRAME_SAMPLES as u64;
            match self.encoder.encode(chunk) {
                Ok(aus) => encoded.extend(aus),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.pending.drain(..consumed);
        let out = self.stamp(encoded);
        match failed {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    /// Ends the input (for tests and benchmarks): the frames still inside the encoder.
    pub fn finish(&mut self) -> Result<Vec<Frame>, TranscodeError> {
        let aus = self.encoder.finish()?;
        Ok(self.stamp(aus))
    }

    /// Gives encoded access units their frames and timestamps.
    fn stamp(&self, aus: Vec<Encoded>) -> Vec<Frame> {
        aus.into_iter()
            .map(|au| {
                // Output frame i holds input from sample i * 1024 - delay on.
                let start =
                    i128::from(au.index) * AAC_FRAME_SAMPLES as i128 - i128::from(self.delay);
                let ticks = start * i128::from(streamgate_media::CLOCK_HZ) / i128::from(OPUS_RATE);
                let pts = self.origin.unwrap_or(0) + i64::try_from(ticks).unwrap_or(0);
                Frame {
                    track: TrackKind::Audio,
                    codec: Codec::Aac,
                    pts,
                    dts: pts,
                    keyframe: true,
                    payload: Bytes::from(au.data),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::AacToOpus;

    /// A 440 Hz tone through Opus -> AAC -> Opus: the timeline holds and the sound survives.
    #[test]
    fn a_tone_survives_the_round_trip_on_one_timeline() {
        let mut enc =
            opus::Encoder::new(OPUS_RATE, Channels::Stereo, opus::Application::Audio).unwrap();
        let mut to_aac = OpusToAac::new().unwrap();
        assert_eq!(to_aac.config().sample_rate, 48_000);
        assert_eq!(to_aac.config().channel_config, 2);
        let mut back = AacToOpus::new(to_aac.config()).unwrap();
        let mut aac = Vec::new();
        let mut packet = [0u8; 1500];
        for i in 0..100i64 {
            let pcm: Vec<f32> = (0..960)
                .flat_map(|n| {
                    let t = (i * 960 + n) as f32 / 48_000.0;
                    let s = 0.5 * (2.0 * std::f32::consts::PI * 440.0 * t).sin();
                    [s, s]
                })
                .collect();
            let len = enc.encode_float(&pcm, &mut packet).unwrap();
            let f = Frame {
                track: TrackKind::Audio,
                codec: Codec::Opus,
                pts: 90_000 + i * 1800,
                dts: 90_000 + i * 1800,
                keyframe: true,
                payload: Bytes::copy_from_slice(&packet[..len]),
            };
            aac.extend(to_aac.push(&f).unwrap());
        }
        aac.extend(to_aac.finish().unwrap());
        // 2 s of input, less the encoder's delay, in 1024-sample frames.
        assert!((88..=94).contains(&aac.len()), "{}", aac.len());
        for w in aac.windows(2) {
            assert!((w[1].pts - w[0].pts - 1920).abs() <= 1);
        }
        assert!((aac[0].pts - 90_000).abs() < 9_000, "{}", aac[0].pts);
        // Decoding the AAC again gives a tone with energy, not silence.
        let mut opus_again = Vec::new();
        for f in &aac {
            opus_again.extend(back.push(f).unwrap());
        }
        let mut dec = Decoder::new(OPUS_RATE, Channels::Stereo).unwrap();
        let mut pcm = vec![0i16; MAX_OPUS_SAMPLES * 2];
        let mut energy = 0f64;
        for f in opus_again.iter().skip(10) {
            let n = dec.decode(&f.payload, &mut pcm, false).unwrap();
            energy += pcm[..n * 2]
                .iter()
                .map(|&s| f64::from(s).powi(2))
                .sum::<f64>();
        }
        assert!(energy > 1e9, "{energy}");
    }

    /// Crafted Opus payloads (a browser publisher's bytes) never panic: each is refused or
    /// decoded, and the AAC that comes out stays on one timeline.
    #[test]
    fn the_announced_configuration_is_the_one_produced() {
        let made = OpusToAac::new().unwrap();
        assert_eq!(*made.config(), OpusToAac::output_config().unwrap());
    }

    #[test]
    fn crafted_opus_packets_never_panic_and_keep_the_timeline() {
        let mut to_aac = OpusToAac::new().unwrap();
        let mut seed = 7u32;
        let mut aac = Vec::new();
        for i in 0..300i64 {
            let len = (seed % 400) as usize;
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 24) as u8
                })
                .collect();
            let f = Frame {
                track: TrackKind::Audio,
                codec: Codec::Opus,
                pts: i * 1800,
                dts: i * 1800,
                keyframe: true,
                payload: Bytes::from(payload),
            };
            if let Ok(frames) = to_aac.push(&f) {
                aac.extend(frames);
            }
        }
        aac.extend(to_aac.finish().unwrap());
        // libopus takes most random payloads (and conceals the rest): sound comes out.
        assert!(aac.len() > 100, "{} AAC frames", aac.len());
        for w in aac.windows(2) {
            assert_eq!(w[1].pts - w[0].pts, 1920, "{} then {}", w[0].pts, w[1].pts);
        }
    }
}
