//! Driving stock ffmpeg/ffprobe as encoder and viewer.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Test pattern with a tone, H.264 (browser-safe yuv420p) + AAC, in real time, as FLV.
/// `seconds` of media, or endless when `None`.
pub fn publish_args(url: &str, seconds: Option<u32>) -> Vec<String> {
    let mut args = live_source("testsrc2=size=320x240:rate=25", 44100);
    if let Some(s) = seconds {
        args.extend(["-t".to_owned(), s.to_string()]);
    }
    args.extend(
        [
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-b:v",
            "400k",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-f",
            "flv",
            url,
        ]
        .into_iter()
        .map(String::from),
    );
    args
}

/// [`publish_args`] (or an SRT variant of them) with another picture and H.264 profile:
/// `size` (`1280x720`), `rate` frames a second, libx264's `veryfast` preset with
/// `-profile:v profile` and `-bf bframes` instead of `ultrafast` (which is always Constrained
/// Baseline without B-frames). x264 picks the profile from the tools it uses: `high` with
/// `-bf 0` still gives High (8x8 transforms), `main` gives Main (CABAC).
pub fn with_profile(
    mut args: Vec<String>,
    size: &str,
    rate: u32,
    profile: &str,
    bframes: u32,
) -> Vec<String> {
    for a in args.iter_mut() {
        if a.starts_with("testsrc2=") {
            *a = format!("testsrc2=size={size}:rate={rate}");
        }
    }
    with_h264_profile(args, profile, bframes)
}

/// Arguments encoding with libx264 (`-c:v`) given another H.264 profile, the picture left as
/// it is: the `veryfast` preset instead of `ultrafast`, `-profile:v profile -bf bframes`.
pub fn with_h264_profile(mut args: Vec<String>, profile: &str, bframes: u32) -> Vec<String> {
    for a in args.iter_mut() {
        if a == "ultrafast" {
            *a = "veryfast".into();
        }
    }
    let at = args
        .iter()
        .position(|a| a == "-c:v")
        .map_or(args.len(), |i| i + 2);
    let extra = ["-profile:v", profile, "-bf", &bframes.to_string()].map(String::from);
    args.splice(at..at, extra);
    args
}

/// OBS's default stream settings as ffmpeg arguments, in real time and endless, as FLV to
/// `url`: 1920x1080 at 30 frames/s, x264 `veryfast` with High profile, two B-frames, a keyframe
/// every 2 s, 6 Mbit/s CBR; AAC at 160 kbit/s, 48 kHz stereo.
pub fn obs_default_args(url: &str) -> Vec<String> {
    let mut args = live_source("testsrc2=size=1920x1080:rate=30", 48000);
    args.extend(
        [
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-profile:v",
            "high",
            "-bf",
            "2",
            "-g",
            "60",
            "-b:v",
            "6000k",
            "-maxrate",
            "6000k",
            "-bufsize",
            "6000k",
            "-c:a",
            "aac",
            "-b:a",
            "160k",
            "-ar",
            "48000",
            "-ac",
            "2",
            "-f",
            "flv",
            url,
        ]
        .map(String::from),
    );
    args
}

/// ffmpeg's first arguments for a live test source: `video` (a lavfi source) and a 440 Hz
/// tone at `sample_rate`, read in real time.
fn live_source(video: &str, sample_rate: u32) -> Vec<String> {
    let tone = format!("sine=frequency=440:sample_rate={sample_rate}");
    [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        video,
        "-f",
        "lavfi",
        "-i",
        &tone,
    ]
    .map(String::from)
    .to_vec()
}

/// A child process killed (and reaped) on drop.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its stderr file.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `ffmpeg args`, stderr to `log`.
    pub fn ffmpeg(args: &[String], log: &Path) -> Self {
        let err = std::fs::File::create(log).unwrap();
        let child = Command::new("ffmpeg")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("ffmpeg");
        Self {
            child,
            log: log.to_owned(),
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What it wrote to stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs ffmpeg to completion (killed after `timeout`); returns its output and how long it ran.
pub fn run(args: &[String], timeout: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = Command::new("ffmpeg")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg");
    let deadline = start + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (out, start.elapsed())
}

/// Records `seconds` of `url` into `out` with stream copy.
pub fn record_args(url: &str, seconds: u32, out: &Path) -> Vec<String> {
    [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-i",
        url,
        "-t",
        &seconds.to_string(),
        "-c",
        "copy",
        "-f",
        "flv",
    ]
    .into_iter()
    .map(String::from)
    .chain([out.display().to_string()])
    .collect()
}

/// Codec names and packet counts of a recording.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Video codec, e.g. `h264`.
    pub video_codec: Option<String>,
    /// Audio codec, e.g. `aac`.
    pub audio_codec: Option<String>,
    /// Video packets.
    pub video_packets: u64,
    /// Audio packets.
    pub audio_packets: u64,
}

/// Probes a media file with ffprobe, counting packets.
pub fn probe(file: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "stream=codec_type,codec_name,nb_read_packets",
            "-of",
            "json",
        ])
        .arg(file)
        .output()
        .expect("ffprobe");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut p = Probe::default();
    for s in v["streams"].as_array().into_iter().flatten() {
        let n = s["nb_read_packets"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let name = s["codec_name"].as_str().map(str::to_owned);
        match s["codec_type"].as_str() {
            Some("video") => {
                p.video_codec = name;
                p.video_packets = n;
            }
            Some("audio") => {
                p.audio_codec = name;
                p.audio_packets = n;
            }
            _ => {}
        }
    }
    p
}
