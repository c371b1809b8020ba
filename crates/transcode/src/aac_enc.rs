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

/// An AAC-LC encoder for interleaved 16-bit PCM.
pub trait AacFrameEncoder: Send {
    /// The AudioSpecificConfig of the stream it produces.
    fn audio_specific_config(&self) -> &[u8];
    /// Samples per channel the output lags the input by (the first output frame starts this
    /// many samples before input sample 0).
    fn delay(&self) -> u64;
    /// Encodes one frame of interleaved samples (`AAC_FRAME_SAMPLES` per channel); returns
    /// the raw access units now complete (none while the encoder fills its look-ahead).
    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<Vec<u8>>, TranscodeError>;
    /// Ends the input; returns the access units still on their way.
    fn finish(&mut self) -> Result<Vec<Vec<u8>>, TranscodeError>;
}

/// Frames handed to libxaac's thread and not yet returned, beyond which [`XaacEncoder::encode`]
/// waits for the oldest (the thread takes about a tenth of a millisecond per frame).
const MAX_IN_FLIGHT: usize = 8;

/// How long [`XaacEncoder::encode`] waits for its thread when [`MAX_IN_FLIGHT`] frames are
/// out, before it reports the encoder stuck.
const STUCK: Duration = Duration::from_secs(1);

/// The default encoder: libxaac through the `xaac-rs` crate. Its encoder may not move between
/// threads, so it lives on a thread of its own; frames go to it and come back in order,
/// usually by the next call.
pub struct XaacEncoder {
    config: Vec<u8>,
    channels: usize,
    input: Option<mpsc::SyncSender<Vec<i16>>>,
    output: mpsc::Receiver<Result<Vec<u8>, String>>,
    in_flight: usize,
    thread: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for XaacEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XaacEncoder")
            .field("channels", &self.channels)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl XaacEncoder {
    /// An AAC-LC encoder at 48 kHz with this many channels (1 or 2), constant `bitrate` bit/s.
    pub fn new(channels: u16, bitrate: u32) -> Result<Self, TranscodeError> {
        if !(1..=2).contains(&channels) {
            return Err(TranscodeError::Unsupported("only mono and stereo AAC"));
        }
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<Vec<u8>, String>>(1);
        let (input, input_rx) = mpsc::sync_channel::<Vec<i16>>(MAX_IN_FLIGHT);
        let (output_tx, output) = mpsc::sync_channel(MAX_IN_FLIGHT);
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
                });
                let mut encoder = match made {
                    Ok(e) if e.input_samples_per_channel() == AAC_FRAME_SAMPLES => {
                        let _ = ready_tx.send(Ok(e.audio_specific_config().to_vec()));
                        e
                    }
                    Ok(e) => {
                        let n = e.input_samples_per_channel();
                        let _ = ready_tx.send(Err(format!("libxaac frames of {n} samples")));
                        return;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                for pcm in input_rx {
                    let encoded = encoder
                        .encode_i16_interleaved(&pcm)
                        .map(|p| p.data)
                        .map_err(|e| e.to_string());
                    if output_tx.send(encoded).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| TranscodeError::Encode(format!("no thread for libxaac: {e}")))?;
        let config = ready_rx
            .recv()
            .map_err(|_| TranscodeError::Encode("libxaac's thread ended".into()))?
            .map_err(TranscodeError::Encode)?;
        Ok(Self {
            config,
            channels: usize::from(channels),
            input: Some(input),
            output,
            in_flight: 0,
            thread: Some(thread),
        })
    }

    /// Takes one result from the thread, waiting for it when `wait`.
    fn take(&mut self, wait: bool, out: &mut Vec<Vec<u8>>) -> Result<bool, TranscodeError> {
        let got = if wait {
            match self.output.recv_timeout(STUCK) {
                Ok(r) => r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(TranscodeError::Encode("libxaac's thread is stuck".into()))
                }
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
        let data = got.map_err(TranscodeError::Encode)?;
        if !data.is_empty() {
            out.push(data);
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

    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<Vec<u8>>, TranscodeError> {
        if pcm.len() != AAC_FRAME_SAMPLES * self.channels {
            return Err(TranscodeError::Encode(format!(
                "{} samples for one frame",
                pcm.len()
            )));
        }
        let mut out = Vec::new();
        while self.in_flight >= MAX_IN_FLIGHT {
            self.take(true, &mut out)?;
        }
        let input = self
            .input
            .as_ref()
            .ok_or_else(|| TranscodeError::Encode("encoder finished".into()))?;
        input
            .try_send(pcm.to_vec())
            .map_err(|_| TranscodeError::Encode("libxaac's thread ended".into()))?;
        self.in_flight += 1;
        while self.take(false, &mut out)? {}
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<Vec<u8>>, TranscodeError> {
        self.input = None;
        let mut out = Vec::new();
        while self.in_flight > 0 {
            self.take(true, &mut out)?;
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

    fn encode(&mut self, pcm: &[i16]) -> Result<Vec<Vec<u8>>, TranscodeError> {
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
                out.push(buf.get(..info.output_size).unwrap_or(&[]).to_vec());
            }
            if info.input_consumed == 0 {
                break;
            }
            rest = rest.get(info.input_consumed..).unwrap_or(&[]);
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<Vec<u8>>, TranscodeError> {
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
        for au in aus {
            match dec.decode(&Packet::new_from_slice(0, 0, 0, &au)).unwrap() {
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

    #[test]
    fn xaac_delay_is_what_the_decoder_shows() {
        let input = chord(48_000 * 2);
        let mut enc = XaacEncoder::new(2, 128_000).unwrap();
        let decoded = round_trip(&mut enc, &input);
        let best = (0..4_096)
            .max_by(|&a, &b| snr(&input, &decoded, a).total_cmp(&snr(&input, &decoded, b)))
            .unwrap();
        assert_eq!(best as u64, enc.delay());
        // And the chord comes through clean: FDK gives about 21 dB on this, libxaac more.
        let db = snr(&input, &decoded, best);
        assert!(db > 18.0, "{db} dB");
    }

    #[test]
    fn xaac_refuses_what_it_cannot_take() {
        assert!(XaacEncoder::new(3, 128_000).is_err());
        let mut enc = XaacEncoder::new(2, 128_000).unwrap();
        assert!(enc.encode(&[0; 100]).is_err());
        assert_eq!(enc.audio_specific_config(), [0x11, 0x90]);
    }

    #[cfg(feature = "fdk-aac")]
    #[test]
    fn fdk_delay_is_what_the_decoder_shows() {
        let input = chord(48_000 * 2);
        let mut enc = FdkEncoder::new(2, 128_000).unwrap();
        let decoded = round_trip(&mut enc, &input);
        let best = (0..4_096)
            .max_by(|&a, &b| snr(&input, &decoded, a).total_cmp(&snr(&input, &decoded, b)))
            .unwrap();
        assert_eq!(best as u64, enc.delay());
    }
}
