//! Quality and cost of the AAC-LC encoders (48 kHz stereo, 128 kbit/s): libxaac, the default,
//! and the Fraunhofer FDK library when built with `--features fdk-aac`. For each of two
//! synthetic signals (a chord of harmonics that changes every half second; tones under noise
//! with sharp clicks), one minute of audio is encoded, decoded again by symphonia, and
//! compared with the input: the signal-to-noise ratio (not a perceptual measure, but on such
//! signals it follows the coarseness of the quantisation), the bytes written, and the CPU
//! time of the whole process per minute of audio.
//!
//! Run: `cargo bench -p streamgate-transcode --bench aac --features fdk-aac`

use std::time::Duration;

use streamgate_transcode::aac_enc::{AacFrameEncoder, XaacEncoder, AAC_FRAME_SAMPLES};
use symphonia_codec_aac::AacDecoder;
use symphonia_core::audio::{AudioBufferRef, Signal};
use symphonia_core::codecs::{CodecParameters, Decoder, DecoderOptions, CODEC_TYPE_AAC};
use symphonia_core::formats::Packet;

const RATE: usize = 48_000;
const SECONDS: usize = 60;
const BITRATE: u32 = 128_000;

fn main() {
    let signals: [(&str, Vec<i16>); 2] = [("chord", chord()), ("clicks", clicks())];
    for (name, pcm) in &signals {
        #[cfg_attr(not(feature = "fdk-aac"), allow(unused_mut))]
        let mut encoders: Vec<(&str, Box<dyn AacFrameEncoder>)> = vec![(
            "libxaac",
            Box::new(XaacEncoder::new(2, BITRATE).unwrap_or_else(|e| panic!("{e}"))),
        )];
        #[cfg(feature = "fdk-aac")]
        encoders.push((
            "fdk-aac",
            Box::new(
                streamgate_transcode::aac_enc::FdkEncoder::new(2, BITRATE)
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
        ));
        for (encoder, mut enc) in encoders {
            let before = cpu();
            let mut aus = Vec::new();
            for frame in pcm.chunks_exact(AAC_FRAME_SAMPLES * 2) {
                aus.extend(enc.encode(frame).unwrap_or_else(|e| panic!("{e}")));
            }
            aus.extend(enc.finish().unwrap_or_else(|e| panic!("{e}")));
            let aus: Vec<Vec<u8>> = aus.into_iter().map(|a| a.data).collect();
            let spent = cpu().saturating_sub(before);
            let bytes: usize = aus.iter().map(Vec::len).sum();
            let decoded = decode(enc.audio_specific_config(), &aus);
            let delay = usize::try_from(enc.delay()).unwrap_or(0);
            let (left, right) = (snr(pcm, &decoded, delay, 0), snr(pcm, &decoded, delay, 1));
            println!(
                "{name:>6} {encoder:>8}: SNR left {left:5.1} dB, right {right:5.1} dB; {:.0} kbit/s; CPU {:.0} ms per minute ({:.2} % of a core)",
                bytes as f64 * 8.0 / SECONDS as f64 / 1000.0,
                spent.as_secs_f64() * 1000.0 * 60.0 / SECONDS as f64,
                spent.as_secs_f64() * 100.0 / SECONDS as f64,
            );
        }
    }
}

/// A chord of harmonics, a new root every half second, with vibrato; the right channel a
/// fifth above.
fn chord() -> Vec<i16> {
    let mut out = Vec::with_capacity(RATE * SECONDS * 2);
    for i in 0..RATE * SECONDS {
        let t = i as f32 / RATE as f32;
        let roots = [220.0f32, 277.2, 329.6, 440.0];
        let root = roots.get((t / 0.5) as usize % 4).copied().unwrap_or(220.0);
        let vibrato = 1.0 + 0.003 * (std::f32::consts::TAU * 5.0 * t).sin();
        let (mut l, mut r) = (0.0f32, 0.0f32);
        for h in 1..12 {
            let f = root * h as f32 * vibrato;
            l += 0.18 / h as f32 * (std::f32::consts::TAU * f * t).sin();
            r += 0.15 / h as f32 * (std::f32::consts::TAU * f * 1.5 * t + h as f32).sin();
        }
        out.extend([sample(l), sample(r)]);
    }
    out
}

/// Two tones each side under faint noise, with a burst of noise (a click) every 0.37 s.
fn clicks() -> Vec<i16> {
    let mut seed = 12_345u32;
    let mut noise = move || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 8) as f32 / 8_388_608.0 - 1.0
    };
    let mut out = Vec::with_capacity(RATE * SECONDS * 2);
    for i in 0..RATE * SECONDS {
        let t = i as f32 / RATE as f32;
        let swell = 0.5 + 0.5 * (t * 0.7).sin();
        let mut l = 0.25 * swell * (std::f32::consts::TAU * 440.0 * t).sin()
            + 0.1 * (std::f32::consts::TAU * 1234.0 * t).sin()
            + 0.01 * noise();
        let mut r = 0.2 * (std::f32::consts::TAU * 660.0 * t).sin()
            + 0.1 * (std::f32::consts::TAU * 3000.0 * t).sin()
            + 0.01 * noise();
        let since = (t % 0.37) / 0.005;
        if since < 3.0 {
            let click = 0.8 * (-since).exp() * noise();
            l += click;
            r += 0.7 * click;
        }
        out.extend([sample(l), sample(r)]);
    }
    out
}

fn sample(x: f32) -> i16 {
    (x.clamp(-1.0, 1.0) * 32_767.0) as i16
}

/// Decodes raw access units to interleaved stereo f32.
fn decode(config: &[u8], aus: &[Vec<u8>]) -> Vec<f32> {
    let mut params = CodecParameters::new();
    params
        .for_codec(CODEC_TYPE_AAC)
        .with_sample_rate(RATE as u32)
        .with_extra_data(config.to_vec().into_boxed_slice());
    let mut dec =
        AacDecoder::try_new(&params, &DecoderOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for au in aus {
        match dec.decode(&Packet::new_from_slice(0, 0, 0, au)) {
            Ok(AudioBufferRef::F32(buf)) => {
                for (l, r) in buf.chan(0).iter().zip(buf.chan(1)) {
                    out.extend([*l, *r]);
                }
            }
            Ok(_) => panic!("symphonia decodes AAC to f32"),
            Err(e) => panic!("undecodable frame: {e}"),
        }
    }
    out
}

/// Signal-to-noise ratio of one channel, in dB, from the first second on.
fn snr(input: &[i16], decoded: &[f32], delay: usize, channel: usize) -> f64 {
    let (mut signal, mut noise) = (0f64, 0f64);
    for i in RATE..input.len() / 2 {
        let (Some(&x), Some(&y)) = (
            input.get(i * 2 + channel),
            decoded.get((i + delay) * 2 + channel),
        ) else {
            break;
        };
        let x = f64::from(x) / 32_767.0;
        signal += x * x;
        noise += (f64::from(y) - x).powi(2);
    }
    10.0 * (signal / noise.max(f64::MIN_POSITIVE)).log10()
}

/// CPU time of the whole process (the libxaac encoder runs on a thread of its own).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // The kernel's USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}
