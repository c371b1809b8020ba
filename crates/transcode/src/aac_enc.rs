//! AAC-LC encoders, one frame (1024 samples per channel) at a time: [`XaacEncoder`] (libxaac,
//! Apache-2.0, built from its bundled sources) is the default; [`FdkEncoder`] (the Fraunhofer
//! FDK library, whose licence is not OSI-approved) only with the `fdk-aac` feature.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::TranscodeError;

/// Samples per channel in one AAC-LC frame.
pub const AAC_FRAME_SAMPLES: usize = 1024;

/// Samples per channel between an input sample and the same sample in libxaac's decoded
/// output, at 48 kHz AAC-LC (measured by `xaac_delay_is_what_the_decoder_shows`).
const XAAC_DELAY: u64 = 1_600;

/// One encoded AAC-LC access unit and its place on the encoder's timeline: unit `index` starts
/// at input sample `index * AAC_FRAME_SAMPLES - delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Position on the output timeline, counted in frames from 0.
    pub index: u64,
    /// The raw access unit (no ADTS header).
    pub data: Vec<u8>,
}

/// An AAC-LC encoder for interleaved 16-bit PCM.
pub trait AacFrameEncoder: Send {
    /// The AudioSpecificConfig of the stream it produces.
    fn audio_specific_config(&self) -> &[u8];
    /// Samples per channel the output lags the input by (the first output frame starts this
    /// many samples before input sample 0).
    fn delay(&self) -> u64;
    /// Encodes one frame of interleaved samples (`AAC_FRAME_SAMPLES` per channel); returns
    /// the access units now complete, in order. It waits for the codec only when it is far
    /// behind (a caller faster than real time); a frame it cannot take is lost (an error) and
    /// the timeline goes on without it.
    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<Encoded>, TranscodeError>;
    /// Ends the input; waits for and returns the access units still on their way.
    fn finish(&mut self) -> Result<Vec<Encoded>, TranscodeError>;
}

/// Frames handed to libxaac's thread and not yet returned (1.4 s of audio), beyond which
/// [`XaacEncoder::encode`] waits up to [`BEHIND_WAIT`] for the thread, then drops frames. The
/// thread takes about a tenth of a millisecond per frame: in real time only a thread that is
/// not being run gets there; a caller faster than real time (a test, a benchmark) is held back.
const MAX_IN_FLIGHT: usize = 64;

/// How long [`XaacEncoder::encode`] waits for its thread when [`MAX_IN_FLIGHT`] frames are out
/// ([`FINISH_WAIT`] while the thread has not answered yet: it is setting up the encoder); once
/// a wait has failed it does not wait again until the thread answers.
const BEHIND_WAIT: Duration = Duration::from_millis(50);

/// How long [`AacFrameEncoder::finish`] waits for each frame still out.
const FINISH_WAIT: Duration = Duration::from_secs(2);

/// AudioSpecificConfig of AAC-LC at 48 kHz (ISO/IEC 14496-3 1.6.2.1): object type 2 (5 bits),
/// sampling frequency index 3 (4 bits), the channel configuration (4 bits), three zero bits.
fn lc_48k_config(channels: u8) -> Vec<u8> {
    vec![(2 << 3) | (3 >> 1), ((3 & 1) << 7) | (channels << 3)]
}

/// What libxaac's thread sends back for one frame.
type Done = (u64, Result<Vec<u8>, String>);

/// The default encoder: libxaac through the `xaac-rs` crate. Its encoder may not move between
/// threads and takes tens of milliseconds to set up, so it lives on a thread of its own:
/// [`XaacEncoder::new`] returns at once, and frames go to the thread and come back in order,
/// usually by the next call.
pub struct XaacEncoder {
    config: Vec<u8>,
    channels: usize,
    input: Option<mpsc::SyncSender<(u64, Vec<i16>)>>,
    output: mpsc::Receiver<Done>,
    /// Frames handed in so far (the next frame's index).
    next: u64,
    in_flight: usize,
    /// A wait of [`BEHIND_WAIT`] failed and the thread has not answered since.
    stalled: bool,
    /// The thread has answered at least once (its encoder is set up).
    answered: bool,
    thread: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for XaacEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XaacEncoder")
            .field("channels", &self.channels)
            .field("next", &self.next)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl XaacEncoder {
    /// An AAC-LC encoder at 48 kHz with this many channels (1 or 2), constant `bitrate` bit/s.
    /// The encoder itself is made on its thread; if that fails, the first calls to
    /// [`AacFrameEncoder::encode`] say so.
    pub fn new(channels: u16, bitrate: u32) -> Result<Self, TranscodeError> {
        let config = match channels {
            1 => lc_48k_config(1),
            2 => lc_48k_config(2),
            _ => return Err(TranscodeError::Unsupported("only mono and stereo AAC")),
        };
        let expected = config.clone();
        let (input, input_rx) = mpsc::sync_channel::<(u64, Vec<i16>)>(MAX_IN_FLIGHT);
        let (output_tx, output) = mpsc::sync_channel::<Done>(MAX_IN_FLIGHT);
        let thread = thread::Builder::new()
            .name("aac-encode".into())
            .spawn(move || {
                let made = xaac_rs::Encoder::new(xaac_rs::EncoderConfig {
                    profile: xaac_rs::Profile::AacLc,
                    sample_rate: 48_000,
                    channels,
                    bitrate,
                    output_format: xaac_rs::OutputFormat::Raw,
                    ..Default::default()
                })
                .map_err(|e| e.to_string())
                .and_then(|e| {
                    if e.input_samples_per_channel() != AAC_FRAME_SAMPLES {
                        Err(format!(
                            "libxaac frames of {} samples",
                            e.input_samples_per_channel()
                        ))
                    } else if e.audio_specific_config() != expected.as_slice() {
                        Err(format!(
                            "libxaac's AudioSpecificConfig is {:02x?}, not {expected:02x?}",
                            e.audio_specific_config()
                        ))
                    } else {
                        Ok(e)
                    }
                });
                let mut encoder = made.map_err(|e| format!("libxaac could not be set up: {e}"));
                for (index, pcm) in input_rx {
                    let encoded = match encoder.as_mut() {
                        Ok(enc) => enc
                            .encode_i16_interleaved(&pcm)
                            .map(|p| p.data)
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.clone()),
                    };
                    if output_tx.send((index, encoded)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| TranscodeError::Encode(format!("no thread for libxaac: {e}")))?;
        Ok(Self {
            config,
            channels: usize::from(channels),
            input: Some(input),
            output,
            next: 0,
            in_flight: 0,
            stalled: false,
            answered: false,
            thread: Some(thread),
        })
    }

    /// Takes one result that is ready, or waits up to `wait` for one; false when none came.
    fn take(
        &mut self,
        wait: Option<Duration>,
        out: &mut Vec<Encoded>,
    ) -> Result<bool, TranscodeError> {
        let (index, got) = if let Some(wait) = wait {
            match self.output.recv_timeout(wait) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(false),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(TranscodeError::Encode("libxaac's thread ended".into()))
                }
            }
        } else {
            match self.output.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Empty) => return Ok(false),
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(TranscodeError::Encode("libxaac's thread ended".into()))
                }
            }
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        self.stalled = false;
        self.answered = true;
        let data = got.map_err(TranscodeError::Encode)?;
        if !data.is_empty() {
            out.push(Encoded { index, data });
        }
        Ok(true)
    }
}

impl AacFrameEncoder for XaacEncoder {
    fn audio_specific_config(&self) -> &[u8] {
        &self.config
    }

    fn delay(&self) -> u64 {
        XAAC_DELAY
    }

    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<Encoded>, TranscodeError> {
        if pcm.len() != AAC_FRAME_SAMPLES * self.channels {
            return Err(TranscodeError::Encode(format!(
                "{} samples for one frame",
                pcm.len()
            )));
        }
        let mut out = Vec::new();
        while self.take(None, &mut out)? {}
        let wait = if self.answered {
            BEHIND_WAIT
        } else {
            FINISH_WAIT
        };
        if self.in_flight >= MAX_IN_FLIGHT && !self.stalled && !self.take(Some(wait), &mut out)? {
            self.stalled = true;
        }
        let index = self.next;
        self.next += 1;
        if self.in_flight >= MAX_IN_FLIGHT {
            return Err(TranscodeError::Encode(format!(
                "libxaac's thread is {MAX_IN_FLIGHT} frames behind: frame {index} dropped"
            )));
        }
        let input = self
            .input
            .as_ref()
            .ok_or_else(|| TranscodeError::Encode("encoder finished".into()))?;
        input
            .try_send((index, pcm.to_vec()))
            .map_err(|_| TranscodeError::Encode("libxaac's thread ended".into()))?;
        self.in_flight += 1;
        while self.take(None, &mut out)? {}
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<Encoded>, TranscodeError> {
        self.input = None;
        let mut out = Vec::new();
        while self.in_flight > 0 {
            if !self.take(Some(FINISH_WAIT), &mut out)? {
                return Err(TranscodeError::Encode("libxaac's thread is stuck".into()));
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Ok(out)
    }
}

/// The Fraunhofer FDK encoder (feature `fdk-aac`).
#[cfg(feature = "fdk-aac")]
pub struct FdkEncoder {
    encoder: fdk_aac::enc::Encoder,
    config: Vec<u8>,
    delay: u64,
    channels: usize,
    /// Access units produced so far.
    produced: u64,
}

#[cfg(feature = "fdk-aac")]
impl std::fmt::Debug for FdkEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FdkEncoder")
            .field("delay", &self.delay)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "fdk-aac")]
impl FdkEncoder {
    /// An AAC-LC encoder at 48 kHz with this many channels (1 or 2), constant `bitrate` bit/s.
    pub fn new(channels: u16, bitrate: u32) -> Result<Self, TranscodeError> {
        use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams};
        let mode = match channels {
            1 => ChannelMode::Mono,
            2 => ChannelMode::Stereo,
            _ => return Err(TranscodeError::Unsupported("only mono and stereo AAC")),
        };
        let encoder = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(bitrate),
            sample_rate: 48_000,
            transport: fdk_aac::enc::Transport::Raw,
            channels: mode,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(|e| TranscodeError::Encode(e.to_string()))?;
        let info = encoder
            .info()
            .map_err(|e| TranscodeError::Encode(e.to_string()))?;
        let len = usize::try_from(info.confSize).unwrap_or(0);
        let config = info.confBuf.get(..len).unwrap_or(&[]).to_vec();
        Ok(Self {
            encoder,
            config,
            delay: u64::from(info.nDelay),
            channels: usize::from(channels),
            produced: 0,
        })
    }
}

#[cfg(feature = "fdk-aac")]
impl AacFrameEncoder for FdkEncoder {
    fn audio_specific_config(&self) -> &[u8] {
        &self.config
    }

    fn delay(&self) -> u64 {
        self.delay
    }

    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<Encoded>, TranscodeError> {
        // Room for one frame: 6144 bits per channel at most (ISO/IEC 14496-3).
        let mut buf = vec![0u8; 768 * self.channels];
        let mut out = Vec::new();
        let mut rest = pcm;
        while !rest.is_empty() {
            let info = self
                .encoder
                .encode(rest, &mut buf)
                .map_err(|e| TranscodeError::Encode(e.to_string()))?;
            if info.output_size > 0 {
                out.push(Encoded {
                    index: self.produced,
                    data: buf.get(..info.output_size).unwrap_or(&[]).to_vec(),
                });
                self.produced += 1;
            }
            if info.input_consumed == 0 {
                break;
            }
            rest = rest.get(info.input_consumed..).unwrap_or(&[]);
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<Encoded>, TranscodeError> {
        Ok(Vec::new())
    }
}

/// The encoder this build uses: FDK when built with `fdk-aac`, libxaac otherwise.
pub fn default_encoder(
    channels: u16,
    bitrate: u32,
) -> Result<Box<dyn AacFrameEncoder>, TranscodeError> {
    #[cfg(feature = "fdk-aac")]
    {
        Ok(Box::new(FdkEncoder::new(channels, bitrate)?))
    }
    #[cfg(not(feature = "fdk-aac"))]
    {
        Ok(Box::new(XaacEncoder::new(channels, bitrate)?))
    }
}

/// The name of [`default_encoder`]'s library, for logs.
pub const DEFAULT_ENCODER: &str = if cfg!(feature = "fdk-aac") {
    "fdk-aac"
} else {
    "libxaac"
};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use symphonia_codec_aac::AacDecoder;
    use symphonia_core::audio::{AudioBufferRef, Signal};
    use symphonia_core::codecs::{CodecParameters, Decoder, DecoderOptions, CODEC_TYPE_AAC};
    use symphonia_core::formats::Packet;

    /// A chord of harmonics that changes every half second, one channel.
    fn chord(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f32 / 48_000.0;
                let note = [220.0f32, 277.2, 329.6, 440.0][(t / 0.5) as usize % 4];
                (1..8)
                    .map(|h| {
                        0.2 / h as f32 * (2.0 * std::f32::consts::PI * note * h as f32 * t).sin()
                    })
                    .sum()
            })
            .collect()
    }

    /// Encodes `left` (and silence on the right) and decodes it again with symphonia.
    fn round_trip(enc: &mut dyn AacFrameEncoder, left: &[f32]) -> Vec<f32> {
        let mut params = CodecParameters::new();
        params
            .for_codec(CODEC_TYPE_AAC)
            .with_sample_rate(48_000)
            .with_extra_data(enc.audio_specific_config().to_vec().into_boxed_slice());
        let mut dec = AacDecoder::try_new(&params, &DecoderOptions::default()).unwrap();
        let mut out = Vec::new();
        let mut aus = Vec::new();
        for chunk in left.chunks_exact(AAC_FRAME_SAMPLES) {
            let pcm: Vec<i16> = chunk
                .iter()
                .flat_map(|&s| [(s * 32_767.0) as i16, 0])
                .collect();
            aus.extend(enc.encode(&pcm).unwrap());
        }
        aus.extend(enc.finish().unwrap());
        for (i, au) in aus.iter().enumerate() {
            assert_eq!(au.index, i as u64);
            match dec
                .decode(&Packet::new_from_slice(0, 0, 0, &au.data))
                .unwrap()
            {
                AudioBufferRef::F32(buf) => out.extend_from_slice(buf.chan(0)),
                _ => panic!("symphonia decodes AAC to f32"),
            }
        }
        out
    }

    /// Signal-to-noise ratio in dB of `decoded`, shifted by `delay`, against half a second of
    /// `input` (from 0.5 s on).
    fn snr(input: &[f32], decoded: &[f32], delay: usize) -> f64 {
        let (mut signal, mut noise) = (0f64, 0f64);
        for (i, &x) in input.iter().enumerate().skip(24_000).take(24_000) {
            let Some(&y) = decoded.get(i + delay) else {
                break;
            };
            signal += f64::from(x).powi(2);
            noise += f64::from(y - x).powi(2);
        }
        10.0 * (signal / noise.max(f64::MIN_POSITIVE)).log10()
    }

    /// The shift that best aligns the decoded chord with the input, and the SNR there.
    fn measured_delay(enc: &mut dyn AacFrameEncoder) -> (u64, f64) {
        let input = chord(48_000 * 2);
        let decoded = round_trip(enc, &input);
        let best = (0..4_096)
            .max_by(|&a, &b| snr(&input, &decoded, a).total_cmp(&snr(&input, &decoded, b)))
            .unwrap();
        (best as u64, snr(&input, &decoded, best))
    }

    #[test]
    fn xaac_delay_is_what_the_decoder_shows() {
        let mut enc = XaacEncoder::new(2, 128_000).unwrap();
        let (delay, db) = measured_delay(&mut enc);
        assert_eq!(delay, enc.delay());
        // And the chord comes through clean: FDK gives about 21 dB on this, libxaac more.
        assert!(db > 18.0, "{db} dB");
    }

    #[test]
    fn xaac_refuses_what_it_cannot_take() {
        assert!(XaacEncoder::new(3, 128_000).is_err());
        let mut enc = XaacEncoder::new(2, 128_000).unwrap();
        assert!(enc.encode(&[0; 100]).is_err());
        assert_eq!(enc.audio_specific_config(), [0x11, 0x90]);
        assert_eq!(
            XaacEncoder::new(1, 64_000).unwrap().audio_specific_config(),
            [0x11, 0x88]
        );
    }

    /// libxaac's own AudioSpecificConfig is what the encoder announces before it is set up
    /// (its thread checks this too and refuses to encode otherwise).
    #[test]
    fn xaac_announces_its_config_and_keeps_each_frame_on_its_index() {
        let mut enc = XaacEncoder::new(2, 128_000).unwrap();
        let mut aus = Vec::new();
        for _ in 0..20 {
            aus.extend(enc.encode(&[0; AAC_FRAME_SAMPLES * 2]).unwrap());
        }
        aus.extend(enc.finish().unwrap());
        let indexes: Vec<u64> = aus.iter().map(|a| a.index).collect();
        assert_eq!(indexes, (0..20).collect::<Vec<u64>>());
        assert!(enc.encode(&[0; AAC_FRAME_SAMPLES * 2]).is_err());
    }

    #[cfg(feature = "fdk-aac")]
    #[test]
    fn fdk_delay_is_what_the_decoder_shows() {
        let mut enc = FdkEncoder::new(2, 128_000).unwrap();
        assert_eq!(measured_delay(&mut enc).0, enc.delay());
    }
}
