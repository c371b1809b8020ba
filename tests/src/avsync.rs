//! Audio/video synchronisation measured where a viewer sees and hears it.
//!
//! A marked source flashes its picture white and beeps (1 kHz) at the same instants, once a
//! second, for [`MARK_SECONDS`]. The marks are found either in a playing page (a probe notes
//! when each flash is shown, from `requestVideoFrameCallback`, and when each beep is heard,
//! from an `AudioWorklet` on the element's stream, both on the page's `performance.now()`
//! clock) or in a recording (ffmpeg's `signalstats` for the picture, `astats` for the sound,
//! on the recording's timestamps). Each flash is paired with its beep; the offset (beep minus
//! flash) includes constant delays that do not matter here. Drift is how much the offset
//! moved between the start and the end of the measurement.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Time between two marks, in milliseconds.
pub const PERIOD_MS: f64 = 1000.0;
/// How long each flash and each beep lasts.
pub const MARK_SECONDS: f64 = 0.1;
/// Picture size of the marked sources.
const SIZE: (u32, u32) = (320, 240);
/// Frame rate of the marked sources.
const FPS: u32 = 30;
/// Sample rate of the marked sources.
const SAMPLE_RATE: u32 = 48_000;
/// Brightness (0-255) above which a picture counts as a flash.
const FLASH_LEVEL: f64 = 128.0;
/// Peak level (dBFS) above which sound counts as a beep.
const BEEP_DBFS: f64 = -20.0;
/// Quiet needed before a beep counts as a new one, in milliseconds.
const QUIET_MS: f64 = 300.0;

/// The lavfi video of the marked source.
fn lavfi_video() -> String {
    format!(
        "color=c=black:s={}x{}:r={FPS},\
         drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t,1),{MARK_SECONDS})'",
        SIZE.0, SIZE.1
    )
}

/// The lavfi audio of the marked source.
fn lavfi_audio() -> String {
    format!(
        "aevalsrc=exprs='if(lt(mod(t,1),{MARK_SECONDS}),0.5*sin(2*PI*1000*t),0)':s={SAMPLE_RATE}"
    )
}

fn strings<'a>(args: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    args.into_iter().map(String::from).collect()
}

/// ffmpeg arguments that publish the marked source in real time, endlessly, as H.264 without
/// B-frames (browser-safe) and AAC, to `url` in `format` (`flv` or `mpegts`).
pub fn publish_args(url: &str, format: &str) -> Vec<String> {
    let mut args = strings(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"]);
    args.extend(strings(["-f", "lavfi", "-i"]));
    args.push(lavfi_video());
    args.extend(strings(["-f", "lavfi", "-i"]));
    args.push(lavfi_audio());
    args.extend(strings([
        "-pix_fmt",
        "yuv420p",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "30",
        "-b:v",
        "300k",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-f",
        format,
        url,
    ]));
    args
}

/// Writes one second of the marked source as a Y4M video and a WAV file in `dir` and returns
/// the Chromium switches that make them its fake camera and microphone (both loop, so the
/// marks keep coming once a second).
pub fn fake_capture_switches(dir: &Path) -> Vec<String> {
    let video = dir.join("marks.y4m");
    let audio = dir.join("marks.wav");
    let mut args = strings(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"]);
    args.extend(strings(["-f", "lavfi", "-i"]));
    args.push(lavfi_video());
    // Chromium's file camera spends one frame interval rewinding at the end of the file
    // (seen here: a 30-frame loop at 30 fps repeats every 1033 ms, a 60-frame one every
    // 2033 ms), so one second of picture is one frame short.
    let frames = (FPS - 1).to_string();
    args.extend(strings(["-frames:v", &frames, "-pix_fmt", "yuv420p"]));
    args.push(video.display().to_string());
    args.extend(strings(["-f", "lavfi", "-i"]));
    args.push(lavfi_audio());
    args.extend(strings(["-t", "1", "-c:a", "pcm_s16le"]));
    args.push(audio.display().to_string());
    let out = Command::new("ffmpeg").args(&args).output().expect("ffmpeg");
    assert!(
        out.status.success(),
        "marked capture files: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    vec![
        format!("--use-file-for-fake-video-capture={}", video.display()),
        format!("--use-file-for-fake-audio-capture={}", audio.display()),
    ]
}

/// JavaScript that starts the probe on a page's `<video id="remote">` (evaluate it once the
/// page plays); it resolves to the audio context's state.
pub const PAGE_PROBE: &str = r#"(async () => {
  const video = document.querySelector('#remote');
  const marks = { flashes: [], beeps: [], frames: 0 };
  window.avsync = marks;
  const canvas = document.createElement('canvas');
  canvas.width = 8; canvas.height = 8;
  const g = canvas.getContext('2d', { willReadFrequently: true });
  let lit = false;
  const onFrame = (now, meta) => {
    g.drawImage(video, 0, 0, 8, 8);
    const px = g.getImageData(0, 0, 8, 8).data;
    let sum = 0;
    for (let i = 0; i < px.length; i += 4) sum += (px[i] + px[i + 1] + px[i + 2]) / 3;
    const on = sum / (px.length / 4) > FLASH_LEVEL;
    if (on && !lit) marks.flashes.push(meta.expectedDisplayTime);
    lit = on;
    marks.frames++;
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  const ctx = new AudioContext();
  const code = `registerProcessor('onsets', class extends AudioWorkletProcessor {
    constructor() { super(); this.quiet = 1e9; }
    process(inputs) {
      const ch = inputs[0] && inputs[0][0];
      if (!ch) return true;
      for (let i = 0; i < ch.length; i++) {
        if (Math.abs(ch[i]) > BEEP_AMPLITUDE) {
          if (this.quiet > QUIET_MS * sampleRate / 1000) this.port.postMessage(currentTime + i / sampleRate);
          this.quiet = 0;
        } else {
          this.quiet++;
        }
      }
      return true;
    }
  });`;
  await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([code], { type: 'text/javascript' })));
  const node = new AudioWorkletNode(ctx, 'onsets');
  node.port.onmessage = (e) => {
    const t = ctx.getOutputTimestamp();
    marks.beeps.push(t.performanceTime + (e.data - t.contextTime) * 1000);
  };
  const silent = ctx.createGain();
  silent.gain.value = 0;
  ctx.createMediaStreamSource(video.srcObject).connect(node);
  node.connect(silent);
  silent.connect(ctx.destination);
  // Once a second, for the report: the average time audio and video frames spent in the
  // player's jitter buffers over that second.
  marks.buffers = [];
  const before = {};
  setInterval(async () => {
    const pc = window.streamgate && streamgate.state.pc;
    if (!pc) return;
    const row = { t: performance.now() };
    (await pc.getStats()).forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      const b = before[r.kind] || { delay: 0, count: 0 };
      const n = r.jitterBufferEmittedCount - b.count;
      if (n > 0) row[r.kind] = (r.jitterBufferDelay - b.delay) / n * 1000;
      before[r.kind] = { delay: r.jitterBufferDelay, count: r.jitterBufferEmittedCount };
    });
    marks.buffers.push(row);
  }, 1000);
  await ctx.resume();
  return ctx.state;
})()"#;

/// [`PAGE_PROBE`] with its thresholds filled in.
pub fn page_probe() -> String {
    let amplitude = 10f64.powf(BEEP_DBFS / 20.0);
    PAGE_PROBE
        .replace("FLASH_LEVEL", &FLASH_LEVEL.to_string())
        .replace("BEEP_AMPLITUDE", &format!("{amplitude:.4}"))
        .replace("QUIET_MS", &QUIET_MS.to_string())
}

/// JavaScript that reads what the probe saw so far: `{flashes, beeps, frames}` or null.
pub const PAGE_MARKS: &str = "window.avsync ? { flashes: avsync.flashes, beeps: avsync.beeps, \
     frames: avsync.frames, buffers: avsync.buffers } : null";

/// The player's jitter-buffer delays, audio and video (ms), of each second in
/// [`PAGE_MARKS`]' value (`None` for a track without frames that second).
pub fn page_buffers(v: &serde_json::Value) -> Vec<(Option<f64>, Option<f64>)> {
    v["buffers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (r["audio"].as_f64(), r["video"].as_f64()))
        .collect()
}

/// The offset when a viewer joined: the median of the first `marks` offsets (an odd number
/// keeps it one of them); `None` with fewer.
pub fn join_offset(offsets: &[(f64, f64)], marks: usize) -> Option<f64> {
    let mut first: Vec<f64> = offsets.iter().take(marks).map(|o| o.1).collect();
    if first.len() < marks || marks == 0 {
        return None;
    }
    first.sort_by(f64::total_cmp);
    first.get(first.len() / 2).copied()
}

/// When flashes were shown and beeps heard, in milliseconds on one clock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Marks {
    /// Flash onsets.
    pub flashes: Vec<f64>,
    /// Beep onsets.
    pub beeps: Vec<f64>,
}

impl Marks {
    /// Reads [`PAGE_MARKS`]' value.
    pub fn from_page(v: &serde_json::Value) -> Self {
        let list = |k: &str| -> Vec<f64> {
            v[k].as_array()
                .into_iter()
                .flatten()
                .filter_map(serde_json::Value::as_f64)
                .collect()
        };
        Self {
            flashes: list("flashes"),
            beeps: list("beeps"),
        }
    }

    /// Reads the marks of a recording (FLV or MPEG-TS) with ffprobe's filters.
    pub fn from_recording(file: &Path) -> Self {
        let video = probe_frames(file, "movie", "signalstats", "lavfi.signalstats.YAVG");
        let audio = probe_frames(
            file,
            "amovie",
            "asetnsamples=n=96,astats=metadata=1:reset=1",
            "lavfi.astats.Overall.Peak_level",
        );
        let mut flashes = Vec::new();
        let mut lit = false;
        for (t, level) in video {
            let on = level > FLASH_LEVEL;
            if on && !lit {
                flashes.push(t);
            }
            lit = on;
        }
        let mut beeps = Vec::new();
        let mut last_loud = f64::NEG_INFINITY;
        for (t, dbfs) in audio {
            if dbfs > BEEP_DBFS {
                if t - last_loud > QUIET_MS {
                    beeps.push(t);
                }
                last_loud = t;
            }
        }
        Self { flashes, beeps }
    }
}

/// (time in ms, value of `tag`) for every frame of `file` through a lavfi `source` (`movie`
/// or `amovie`) and `filters`.
fn probe_frames(file: &Path, source: &str, filters: &str, tag: &str) -> Vec<(f64, f64)> {
    // Run beside the file and name it bare: the lavfi graph would need a path escaped.
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = file.file_name().unwrap().to_string_lossy();
    assert!(
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
        "recording name {name} needs escaping"
    );
    let out = Command::new("ffprobe")
        .current_dir(if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        })
        .args(["-v", "error", "-f", "lavfi", "-i"])
        .arg(format!("{source}={name},{filters}"))
        .args([
            "-show_entries",
            &format!("frame=best_effort_timestamp_time:frame_tags={tag}"),
            "-of",
            "csv=p=0",
        ])
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (t, v) = l.split_once(',')?;
            Some((
                t.parse::<f64>().ok()? * 1000.0,
                v.trim().parse::<f64>().ok()?,
            ))
        })
        .collect()
}

/// For every flash, the offset of its beep (beep minus flash, in ms), as (flash time, offset).
///
/// Flash and beep may be apart by any constant, even half a period (a browser's camera and
/// microphone start at different moments), so the pairing first finds the usual offset, as
/// a circular mean over the period, and then takes for each flash the beep nearest to that
/// offset. Flashes without a beep within half a period of it are left out.
pub fn offsets(marks: &Marks) -> Vec<(f64, f64)> {
    let nearest = |f: f64, around: f64| {
        marks
            .beeps
            .iter()
            .map(|b| b - f)
            .filter(|d| (d - around).abs() < PERIOD_MS / 2.0)
            .min_by(|a, b| (a - around).abs().total_cmp(&(b - around).abs()))
    };
    let (mut sin, mut cos) = (0.0, 0.0);
    for &f in &marks.flashes {
        if let Some(d) = nearest(f, 0.0) {
            let angle = d / PERIOD_MS * std::f64::consts::TAU;
            sin += angle.sin();
            cos += angle.cos();
        }
    }
    let usual = f64::atan2(sin, cos) / std::f64::consts::TAU * PERIOD_MS;
    marks
        .flashes
        .iter()
        .filter_map(|&f| Some((f, nearest(f, usual)?)))
        .collect()
}

/// How the A/V offset moved over a measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    /// Median offset (beep minus flash, ms) over the first window.
    pub start_ms: f64,
    /// Median offset over the last window.
    pub end_ms: f64,
    /// `end_ms - start_ms`.
    pub drift_ms: f64,
    /// Seconds between the first and the last paired flash.
    pub span_s: f64,
    /// Flashes paired with a beep.
    pub pairs: usize,
    /// Smallest and largest single offset.
    pub range_ms: (f64, f64),
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "offset {:+.0} ms at the start, {:+.0} ms at the end, drift {:+.0} ms over {:.0} s \
             ({} marks, single offsets {:+.0}..{:+.0} ms)",
            self.start_ms,
            self.end_ms,
            self.drift_ms,
            self.span_s,
            self.pairs,
            self.range_ms.0,
            self.range_ms.1
        )
    }
}

/// The drift of `offsets` between their first and last `window_ms`; `None` with fewer than
/// three marks in either window.
pub fn drift(offsets: &[(f64, f64)], window_ms: f64) -> Option<Drift> {
    let first = offsets.first()?.0;
    let last = offsets.last()?.0;
    let median_of = |keep: &dyn Fn(f64) -> bool| {
        let mut v: Vec<f64> = offsets
            .iter()
            .filter(|(t, _)| keep(*t))
            .map(|(_, d)| *d)
            .collect();
        if v.len() < 3 {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    };
    let start_ms = median_of(&|t| t < first + window_ms)?;
    let end_ms = median_of(&|t| t > last - window_ms)?;
    let min = offsets.iter().map(|o| o.1).fold(f64::INFINITY, f64::min);
    let max = offsets
        .iter()
        .map(|o| o.1)
        .fold(f64::NEG_INFINITY, f64::max);
    Some(Drift {
        start_ms,
        end_ms,
        drift_ms: end_ms - start_ms,
        span_s: (last - first) / 1000.0,
        pairs: offsets.len(),
        range_ms: (min, max),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_marks_around_a_large_constant_offset() {
        // Beeps 480-520 ms after flashes: the nearest beep would flip between neighbours.
        let flashes: Vec<f64> = (0..20).map(|i| f64::from(i) * 1000.0).collect();
        let beeps: Vec<f64> = (0..20)
            .map(|i| f64::from(i) * 1000.0 + 480.0 + f64::from(i % 3) * 20.0)
            .collect();
        let o = offsets(&Marks { flashes, beeps });
        // Half a period away, a beep is as near the flash after it as the one before: either
        // neighbour will do, as long as every flash takes the same one (an end flash may then
        // have none).
        assert!(o.len() >= 19, "{o:?}");
        let after = o.iter().all(|(_, d)| (480.0..=520.0).contains(d));
        let before = o.iter().all(|(_, d)| (-520.0..=-480.0).contains(d));
        assert!(after || before, "{o:?}");
    }

    #[test]
    fn drift_is_the_move_of_the_median() {
        let o: Vec<(f64, f64)> = (0..60)
            .map(|i| (f64::from(i) * 1000.0, 40.0 + f64::from(i)))
            .collect();
        let d = drift(&o, 5000.0).unwrap();
        assert_eq!((d.start_ms, d.end_ms), (42.0, 97.0));
        assert_eq!(d.drift_ms, 55.0);
        assert_eq!(d.pairs, 60);
        assert!(drift(&o[..2], 5000.0).is_none());
    }

    #[test]
    fn the_join_offset_is_the_median_of_the_first_marks() {
        let o = [
            (0.0, 700.0),
            (1000.0, -40.0),
            (2000.0, 30.0),
            (3000.0, 500.0),
        ];
        assert_eq!(join_offset(&o, 3), Some(30.0));
        assert_eq!(join_offset(&o[..2], 3), None);
    }
}
