//! Stock ffmpeg as publisher and viewer, as operators load-test today.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::stats::{Collector, Counters, ViewerResult};

/// An ffmpeg that exits with an error within this time of starting was refused.
const REFUSAL_WINDOW: Duration = Duration::from_secs(5);

/// Publishes a synthetic test pattern with a tone at `kbps`, until `stop`.
pub async fn publish(url: String, kbps: u32, counters: Arc<Counters>, stop: CancellationToken) {
    let video = kbps.saturating_sub(64).max(100);
    let args = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=44100",
        "-pix_fmt",
        "yuv420p",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "50",
    ];
    let mut cmd = Command::new("ffmpeg");
    cmd.args(args)
        .args([
            "-b:v",
            &format!("{video}k"),
            "-maxrate",
            &format!("{video}k"),
            "-bufsize",
            &format!("{video}k"),
        ])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "flv", &url]);
    run(cmd, counters, None, stop).await;
}

/// Plays `url` with stream copy to a null output, measuring the bit rate from its progress.
pub async fn view(
    url: String,
    counters: Arc<Counters>,
    collector: Arc<Collector>,
    stop: CancellationToken,
) {
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-i",
        &url,
        "-c",
        "copy",
        "-progress",
        "pipe:1",
        "-y",
        "-f",
        "flv",
        "/dev/null",
    ]);
    run(cmd, counters, Some(collector), stop).await;
}

async fn run(
    mut cmd: Command,
    counters: Arc<Counters>,
    collector: Option<Arc<Collector>>,
    stop: CancellationToken,
) {
    Counters::inc(&counters.attempted);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(_) => return Counters::inc(&counters.failed),
    };
    let started = Instant::now();
    let mut lines = child.stdout.take().map(|o| BufReader::new(o).lines());
    let mut admitted = false;
    let (mut first, mut last): (Option<(u64, u64)>, (u64, u64)) = (None, (0, 0));
    let mut pending_size = 0u64;
    let status = loop {
        let line = async {
            match lines.as_mut() {
                Some(l) => l.next_line().await.ok().flatten(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = child.start_kill();
                break None;
            }
            status = child.wait() => break status.ok(),
            line = line => match line {
                Some(l) => {
                    if let Some(v) = l.strip_prefix("total_size=") {
                        pending_size = v.trim().parse().unwrap_or(pending_size);
                    } else if let Some(v) = l.strip_prefix("out_time_us=") {
                        let t: u64 = v.trim().parse().unwrap_or(0);
                        if t > 0 && !admitted {
                            admitted = true;
                            Counters::inc(&counters.admitted);
                        }
                        if t > 0 {
                            first.get_or_insert((pending_size, t));
                            last = (pending_size, t);
                        }
                    }
                }
                None => lines = None,
            },
        }
    };
    let _ = child.wait().await;
    if !admitted {
        let refused = status.is_some_and(|s| !s.success()) && started.elapsed() < REFUSAL_WINDOW;
        Counters::inc(if refused {
            &counters.refused
        } else {
            &counters.failed
        });
        return;
    }
    if let (Some(c), Some((size0, t0))) = (collector, first) {
        let seconds = last.1.saturating_sub(t0) as f64 / 1e6;
        c.add(ViewerResult {
            join_us: None,
            latency_us: Vec::new(),
            bytes: last.0.saturating_sub(size0),
            seconds,
        });
    }
}
