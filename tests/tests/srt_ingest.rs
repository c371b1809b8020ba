//! SRT ingest at 20 Mbit/s for a minute through the real binary, straight and through 1 %
//! random loss each way (a lossy UDP relay in the test, `srt::Relay`): the retransmissions
//! recover every packet. A test binary of its own, so that no other test competes with it for
//! the CPU.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use serde_json::json;
use streamgate_tests::ffmpeg::{self, Proc};
use streamgate_tests::srt;
use streamgate_tests::{wait_until, Server, TempDir};

/// A 20 Mbit/s publish for 60 s, straight and through 1 % random loss each way (all but the
/// last 3 s): the retransmissions recover every packet, and the demuxer sees no continuity
/// error.
#[test]
fn twenty_mbit_ingest_for_60_s_with_and_without_loss() {
    let s = Server::start();
    let dir = TempDir::new("srt-20m");
    let (_, token) = s.create_token("publish", json!({"label": "fast"}));
    // Ten seconds at 20 Mbit/s, encoded once and looped as it is.
    let source = dir.path().join("20m.ts");
    let (made, _) = ffmpeg::run(
        &[
            "-y",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "10",
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
            "-b:v",
            "19800k",
            "-minrate",
            "19800k",
            "-maxrate",
            "19800k",
            "-bufsize",
            "20000k",
            "-x264-params",
            "nal-hrd=cbr",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-f",
            "mpegts",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([source.display().to_string()])
        .collect::<Vec<_>>(),
        Duration::from_secs(120),
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // The loss ends 3 s before the publish does: a live-mode caller (libsrt's linger is 0 in
    // live mode) abandons what is not yet acknowledged when it closes, so a packet lost in its
    // last moments is never sent again, by any server.
    let relay = srt::Relay::lossy(s.srt, 0.01, Duration::from_secs(57));
    let publish = |addr: std::net::SocketAddr, stream: &str| -> Proc {
        let url = srt::url(addr, &format!("{stream},token={token}"), "&latency=200000");
        let args: Vec<String> = [
            "-hide_banner",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([source.display().to_string()])
        .chain(
            ["-t", "60", "-c", "copy", "-f", "mpegts"]
                .iter()
                .map(|a| (*a).to_owned()),
        )
        .chain([url])
        .collect();
        Proc::ffmpeg(
            &args,
            &dir.path().join(format!("{}.log", stream.replace('/', "_"))),
        )
    };
    let started = Instant::now();
    let mut straight = publish(s.srt, "live/straight");
    let mut lossy = publish(relay.addr, "live/lossy");
    // Near the end, every frame sent so far has arrived, despite the loss.
    std::thread::sleep(Duration::from_secs(55).saturating_sub(started.elapsed()));
    let arrived: Vec<(&str, u64, f64)> = ["live/straight", "live/lossy"]
        .iter()
        .map(|stream| {
            (
                *stream,
                s.frames_in(stream),
                started.elapsed().as_secs_f64(),
            )
        })
        .collect();
    for (p, what) in [(&mut straight, "straight"), (&mut lossy, "lossy")] {
        let status = p.wait_exit(Duration::from_secs(90));
        assert!(
            status.is_some_and(|st| st.success()),
            "{what} publisher: {}",
            p.stderr()
        );
    }
    drop(relay);
    assert!(
        wait_until(Duration::from_secs(5), || s
            .log_lines_with("srt publish ended")
            .len()
            == 2),
        "both publishes ended"
    );
    let gaps = s.log_lines_with("srt publish input had gaps");
    assert!(gaps.is_empty(), "continuity errors: {gaps:?}");
    for (stream, frames, secs) in arrived {
        // 30 pictures and ~47 sound frames a second, less the latency window.
        let expected = (secs - 1.0) * 77.0;
        eprintln!("{stream}: {frames} frames in {secs:.1} s");
        assert!(
            frames as f64 > 0.95 * expected,
            "{stream}: {frames} frames in {secs:.1} s"
        );
    }
}
