//! A streaming linear-interpolation resampler for interleaved `f32` audio.
//!
//! Linear interpolation is cheap (a multiply-add per output sample) and, for the 44.1 -> 48 kHz
//! step that most AAC streams need, its aliasing sits far above the band Opus keeps at speech
//! and music bit rates. State carries over between calls, so chunk boundaries add no clicks.

/// Converts one rate to another, chunk by chunk, for a fixed channel count.
#[derive(Debug, Clone)]
pub struct Resampler {
    from: u32,
    to: u32,
    channels: usize,
    /// Position of the next output sample, in input samples relative to `last`'s index
    /// (0.0 means exactly at `last`).
    pos: f64,
    /// The last input sample of the previous chunk, per channel (`None` before the first).
    last: Option<Vec<f32>>,
}

impl Resampler {
    /// A resampler from `from` Hz to `to` Hz for `channels` interleaved channels.
    pub fn new(from: u32, to: u32, channels: usize) -> Self {
        Self {
            from: from.max(1),
            to: to.max(1),
            channels: channels.max(1),
            pos: 0.0,
            last: None,
        }
    }

    /// Resamples one chunk of interleaved input and appends the output to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let ch = self.channels;
        if self.from == self.to {
            out.extend_from_slice(input);
            return;
        }
        let frames = input.len() / ch;
        if frames == 0 {
            return;
        }
        let step = f64::from(self.from) / f64::from(self.to);
        // Sample `i` of the joined signal: -1 is the previous chunk's last sample, 0.. this chunk.
        let sample = |i: isize, c: usize, last: &Option<Vec<f32>>| -> f32 {
            if i < 0 {
                match last {
                    Some(l) => l.get(c).copied().unwrap_or(0.0),
                    None => input.get(c).copied().unwrap_or(0.0),
                }
            } else {
                input.get(i.unsigned_abs() * ch + c).copied().unwrap_or(0.0)
            }
        };
        // `pos` counts from the previous chunk's last sample, i.e. index -1 here.
        let mut pos = if self.last.is_none() {
            0.0
        } else {
            self.pos - 1.0
        };
        let end = (frames - 1) as f64;
        while pos <= end {
            let base = pos.floor();
            let frac = (pos - base) as f32;
            let i = base as isize;
            for c in 0..ch {
                let a = sample(i, c, &self.last);
                let b = sample(i + 1, c, &self.last);
                out.push(a + (b - a) * frac);
            }
            pos += step;
        }
        self.pos = pos - end;
        let tail = input.get((frames - 1) * ch..frames * ch).unwrap_or(&[]);
        self.last = Some(tail.to_vec());
    }

    /// Forgets the carried-over state (after a gap in the input).
    pub fn reset(&mut self) {
        self.pos = 0.0;
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn output_length_follows_the_rate_ratio_across_chunks() {
        let mut r = Resampler::new(44_100, 48_000, 2);
        let mut out = Vec::new();
        for _ in 0..100 {
            r.process(&[0.5; 2048], &mut out);
        }
        // 100 chunks of 1024 stereo frames at 44.1 kHz = 102 400 frames -> about 111 456.
        let frames = out.len() / 2;
        assert!((111_450..=111_460).contains(&frames), "{frames}");
        assert!(out.iter().all(|&s| (s - 0.5).abs() < 1e-6));
    }

    #[test]
    fn a_sine_keeps_its_frequency() {
        let mut r = Resampler::new(44_100, 48_000, 1);
        let input: Vec<f32> = (0..44_100)
            .map(|i| (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 44_100.0).sin())
            .collect();
        let mut out = Vec::new();
        for chunk in input.chunks(1024) {
            r.process(chunk, &mut out);
        }
        let crossings = out.windows(2).filter(|w| w[0] <= 0.0 && w[1] > 0.0).count();
        assert!((438..=442).contains(&crossings), "{crossings}");
        assert!((47_990..=48_010).contains(&out.len()));
    }

    #[test]
    fn equal_rates_copy_and_empty_input_is_harmless() {
        let mut r = Resampler::new(48_000, 48_000, 2);
        let mut out = Vec::new();
        r.process(&[1.0, 2.0, 3.0, 4.0], &mut out);
        assert_eq!(out, vec![1.0, 2.0, 3.0, 4.0]);
        let mut r = Resampler::new(44_100, 48_000, 2);
        r.process(&[], &mut out);
        r.process(&[1.0], &mut out);
        assert_eq!(out.len(), 4);
    }
}
