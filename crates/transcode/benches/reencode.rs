//! Cost and delay of the H.264 re-encode (High profile with B-frames in, Constrained
//! Baseline out) on one thread, at the sizes encoders send: milliseconds of CPU per frame,
//! the share of one core a 30 frames/s stream takes, and how long a frame waits in the
//! re-encode (the decoder's reordering and the codec work).
//!
//! The input is made by ffmpeg (libx264's `veryfast` preset, High profile, three B-frames,
//! a keyframe every 2 s), so ffmpeg must be installed.
//!
//! Run: `cargo bench -p streamgate-transcode --bench reencode`

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use streamgate_media::flv::file_video;
use streamgate_media::{ticks_to_ms, AvcConfig, Frame};
use streamgate_transcode::{AvcReencoder, AvcSettings};

const SECONDS: u32 = 10;
const RATE: u32 = 30;

fn main() {
    for (size, kbps) in [("1280x720", 2500), ("1920x1080", 4500)] {
        let (config, frames) = source(size);
        let settings = AvcSettings {
            bitrate_bps: kbps * 1000,
            frame_rate: RATE as f32,
            keyframe_interval: 2 * RATE,
        };
        let mut r = AvcReencoder::new(Some(&config), settings).unwrap_or_else(|e| panic!("{e}"));
        let mut pushed_at: HashMap<i64, Instant> = HashMap::new();
        let mut work = Duration::ZERO;
        let mut delays = Vec::new();
        let frame_time = Duration::from_secs(1) / RATE;
        let start = Instant::now();
        for (i, f) in frames.iter().enumerate() {
            // Frames arrive in real time: the delay counts the reordering as a viewer sees it.
            let due = start + frame_time * u32::try_from(i).unwrap_or(u32::MAX);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let t = Instant::now();
            pushed_at.insert(f.pts, t);
            let out = r.push(f).unwrap_or_else(|e| panic!("{e}"));
            let done = Instant::now();
            work += done - t;
            for o in out {
                if let Some(at) = pushed_at.remove(&o.pts) {
                    delays.push(done - at);
                }
            }
        }
        delays.sort();
        let at = |q: f64| {
            delays
                .get(((delays.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or_default()
        };
        let per_frame = work.as_secs_f64() * 1e3 / frames.len() as f64;
        println!(
            "re-encode {size} High+B-frames -> Baseline {kbps} kbit/s: {per_frame:.1} ms CPU per frame, \
             {:.0} % of a core at {RATE} frames/s; delay p50 {:.0} ms, p99 {:.0} ms ({} frames)",
            per_frame * f64::from(RATE) / 10.0,
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            frames.len()
        );
    }
}

/// `SECONDS` of ffmpeg's test picture at `size`, as libx264 encodes it with B-frames.
fn source(size: &str) -> (AvcConfig, Vec<Frame>) {
    let file = std::env::temp_dir().join(format!(
        "streamgate-reencode-{size}-{}.flv",
        std::process::id()
    ));
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc2=size={size}:rate={RATE}"))
        .args([
            "-t",
            &SECONDS.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
        ])
        .args([
            "-profile:v",
            "high",
            "-bf",
            "3",
            "-g",
            &(2 * RATE).to_string(),
        ])
        .args(["-pix_fmt", "yuv420p", "-f", "flv"])
        .arg(&file)
        .status()
        .unwrap_or_else(|e| panic!("ffmpeg: {e}"));
    assert!(status.success(), "ffmpeg failed");
    let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_file(&file);
    let (config, frames) = file_video(&data).unwrap_or_else(|e| panic!("{e}"));
    let config = config.unwrap_or_else(|| panic!("no sequence header"));
    assert!(
        frames.iter().any(|f| ticks_to_ms(f.cts()) != 0),
        "the source has B-frames"
    );
    (config, frames)
}
