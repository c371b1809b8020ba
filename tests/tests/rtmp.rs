//! RTMP publish and play through the real binary with stock ffmpeg, every request decided by the
//! token rules.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::json;
use streamgate_tests::ffmpeg::{self, probe, publish_args, record_args, Proc};
use streamgate_tests::rtmp::{closed_within, handshake, RtmpClient};
use streamgate_tests::{wait_until, Server, TempDir};

/// Asserts that an ffmpeg publish to `target` is refused at once with an error exit.
fn assert_publish_refused(target: &str, what: &str) {
    let (out, took) = ffmpeg::run(&publish_args(target, Some(10)), Duration::from_secs(15));
    assert!(!out.status.success(), "{what}: publish should be refused");
    assert!(
        took < Duration::from_secs(4),
        "{what}: refusal took {took:?}"
    );
}

/// Asserts that an ffmpeg viewer of `target` is refused at once with an error exit.
fn assert_play_refused(target: &str, dir: &TempDir, what: &str) {
    let out_file = dir.path().join("refused.flv");
    let (out, took) = ffmpeg::run(&record_args(target, 3, &out_file), Duration::from_secs(15));
    assert!(!out.status.success(), "{what}: play should be refused");
    assert!(
        took < Duration::from_secs(4),
        "{what}: refusal took {took:?}"
    );
}

/// Starts an endless RTMP publisher with `token` and waits until the stream is live.
fn start_publisher(s: &Server, dir: &TempDir, stream: &str, token: &str) -> Proc {
    s.start_publisher(
        dir,
        stream,
        &publish_args(&s.rtmp_url(stream, Some(token)), None),
    )
}

#[test]
fn publish_is_played_back_with_video_and_audio() {
    let s = Server::start();
    let dir = TempDir::new("rtmp-play");
    let (_, token) = s.create_token(
        "publish",
        json!({"label": "cam", "streams": [{"streamName": "live/cam1"}]}),
    );
    let _publisher = start_publisher(&s, &dir, "live/cam1", &token);
    let out = dir.path().join("out.flv");
    let (o, _) = ffmpeg::run(
        &record_args(&s.rtmp_url("live/cam1", None), 5, &out),
        Duration::from_secs(20),
    );
    assert!(
        o.status.success(),
        "viewer failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let p = probe(&out);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    // 25 fps and 43 AAC frames per second over about five seconds.
    assert!(p.video_packets >= 90, "{p:?}");
    assert!(p.audio_packets >= 150, "{p:?}");
    // Playback decodes without errors.
    let (d, _) = ffmpeg::run(
        &[
            "-v".into(),
            "error".into(),
            "-i".into(),
            out.display().to_string(),
            "-f".into(),
            "null".into(),
            "-".into(),
        ],
        Duration::from_secs(20),
    );
    assert!(
        d.status.success() && d.stderr.is_empty(),
        "decode errors: {}",
        String::from_utf8_lossy(&d.stderr)
    );
}

#[test]
fn refusals() {
    let s = Server::start();
    let dir = TempDir::new("rtmp-refuse");
    let (_, good) = s.create_token(
        "publish",
        json!({"label": "good", "streams": [{"streamName": "live/cam1"}]}),
    );
    let (_, other) = s.create_token(
        "publish",
        json!({"label": "other", "streams": [{"streamName": "live/other"}]}),
    );
    let (_, expiring) = s.create_token("publish", json!({"label": "soon", "expires": 1}));
    let (_, viewer) = s.create_token("subscribe", json!({"label": "viewer"}));
    let (_, far_ip) = s.create_token(
        "publish",
        json!({"label": "ip", "allowedIpAddresses": ["192.0.2.0/24", "2001:db8::/32"]}),
    );
    std::thread::sleep(Duration::from_millis(1100));

    assert_publish_refused(&s.rtmp_url("live/cam2", None), "no token");
    assert_publish_refused(
        &s.rtmp_url("live/cam2", Some("sgp_garbage")),
        "garbage token",
    );
    assert_publish_refused(
        &s.rtmp_url("live/cam2", Some(&other)),
        "token for another stream",
    );
    assert_publish_refused(&s.rtmp_url("live/cam2", Some(&expiring)), "expired token");
    assert_publish_refused(
        &s.rtmp_url("live/cam2", Some(&viewer)),
        "subscribe token used to publish",
    );
    assert_publish_refused(
        &s.rtmp_url("live/cam2", Some(&far_ip)),
        "IP rules exclude 127.0.0.1",
    );

    let mut first = start_publisher(&s, &dir, "live/cam1", &good);
    assert_publish_refused(
        &s.rtmp_url("live/cam1", Some(&good)),
        "second publish of a live name",
    );
    let before = s.frames_in("live/cam1");
    std::thread::sleep(Duration::from_secs(2));
    assert!(first.running(), "the first publisher keeps streaming");
    assert!(
        s.frames_in("live/cam1") > before + 60,
        "and its frames keep arriving"
    );

    for reason in [
        "missing",
        "unknown",
        "stream_not_allowed",
        "expired",
        "wrong_kind",
        "ip_not_allowed",
        "stream_in_use",
    ] {
        let series = format!("streamgate_refusals_total{{protocol=\"rtmp\",reason=\"{reason}\"}}");
        assert!(s.metric(&series) >= 1.0, "no refusal counted for {reason}");
    }
    for secret in [&good, &other, &viewer] {
        assert!(
            !s.log().contains(secret.as_str()),
            "a token appears in the log"
        );
    }
}

#[test]
fn subscribe_requires_auth_and_waiting_viewers() {
    let s = Server::start();
    let dir = TempDir::new("rtmp-sra");
    let (_, publish) = s.create_token(
        "publish",
        json!({"label": "p", "subscribeRequiresAuth": true}),
    );
    let (_, exact) = s.create_token(
        "subscribe",
        json!({"label": "exact", "streams": [{"streamName": "live/cam1"}]}),
    );
    let (_, regex) = s.create_token(
        "subscribe",
        json!({"label": "re", "streams": [{"streamName": "live/cam[0-9]+", "isRegex": true}]}),
    );
    let (_, wrong) = s.create_token(
        "subscribe",
        json!({"label": "other", "streams": [{"streamName": "live/cam2"}]}),
    );

    assert_play_refused(
        &s.rtmp_url("live/cam1", None),
        &dir,
        "no token, stream not live",
    );
    // A viewer with a valid subscribe token waits for the stream and gets it when it starts.
    let early_out = dir.path().join("early.flv");
    let mut early = Proc::ffmpeg(
        &record_args(&s.rtmp_url("live/cam1", Some(&exact)), 3, &early_out),
        &dir.path().join("early.log"),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        early.running(),
        "the waiting viewer is still connected: {}",
        early.stderr()
    );

    let _publisher = start_publisher(&s, &dir, "live/cam1", &publish);
    assert_play_refused(
        &s.rtmp_url("live/cam1", None),
        &dir,
        "no token on a subscribeRequiresAuth stream",
    );
    assert_play_refused(
        &s.rtmp_url("live/cam1", Some(&wrong)),
        &dir,
        "token for another stream",
    );
    for (what, token) in [("exact", &exact), ("regex", &regex)] {
        let out = dir.path().join(format!("{what}.flv"));
        let (o, _) = ffmpeg::run(
            &record_args(&s.rtmp_url("live/cam1", Some(token)), 2, &out),
            Duration::from_secs(20),
        );
        assert!(
            o.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let p = probe(&out);
        assert!(
            p.video_packets > 20 && p.audio_packets > 40,
            "{what}: {p:?}"
        );
    }
    let status = early
        .wait_exit(Duration::from_secs(15))
        .expect("waiting viewer finishes");
    assert!(status.success(), "waiting viewer: {}", early.stderr());
    let p = probe(&early_out);
    assert_eq!(
        (p.video_codec.as_deref(), p.audio_codec.as_deref()),
        (Some("h264"), Some("aac")),
        "{p:?}"
    );
    assert!(p.video_packets > 30, "{p:?}");
}

#[test]
fn one_time_publish_token() {
    let s = Server::start();
    let dir = TempDir::new("rtmp-once");
    let (id, once) = s.create_token("publish", json!({"label": "once", "maxUses": 1}));
    let mut first = start_publisher(&s, &dir, "live/once", &once);
    first.child.kill().unwrap();
    let _ = first.child.wait();
    assert!(
        wait_until(Duration::from_secs(5), || s.frames_in("live/once") == 0),
        "the first publish ended"
    );
    assert_publish_refused(
        &s.rtmp_url("live/once", Some(&once)),
        "reconnect with a one-time token",
    );
    let t = s
        .api("GET", &format!("/api/publish_token/{id}"), None)
        .json();
    assert_eq!(t["data"]["uses"], 1);
}

#[test]
fn deleting_the_token_ends_the_publish_and_its_viewers() {
    let s = Server::start();
    let dir = TempDir::new("rtmp-revoke");
    let (id, token) = s.create_token("publish", json!({"label": "cam"}));
    let mut publisher = start_publisher(&s, &dir, "live/cam1", &token);
    let mut viewer = Proc::ffmpeg(
        &record_args(
            &s.rtmp_url("live/cam1", None),
            60,
            &dir.path().join("v.flv"),
        ),
        &dir.path().join("v.log"),
    );
    assert!(wait_until(Duration::from_secs(5), || s.metric(
        "streamgate_admissions_total{protocol=\"rtmp\",action=\"play\"}"
    ) == 1.0));
    std::thread::sleep(Duration::from_millis(500));

    let start = Instant::now();
    assert_eq!(
        s.api("DELETE", &format!("/api/publish_token/{id}"), None)
            .status,
        200
    );
    assert!(
        publisher.wait_exit(Duration::from_secs(1)).is_some(),
        "publisher still running 1 s after the delete"
    );
    let ended = start.elapsed();
    assert!(
        viewer.wait_exit(Duration::from_secs(3)).is_some(),
        "viewer did not see the stream end"
    );
    assert_eq!(
        s.metric(
            "streamgate_sessions_ended_total{protocol=\"rtmp\",action=\"publish\",reason=\"token_deleted\"}"
        ),
        1.0
    );
    eprintln!("publish ended {ended:?} after the delete");
}

#[test]
fn a_viewer_that_stops_reading_slows_no_one() {
    let s = Server::start();
    let dir = TempDir::new("rtmp-slow");
    let (_, token) = s.create_token("publish", json!({"label": "cam"}));
    let _publisher = start_publisher(&s, &dir, "live/cam1", &token);
    // Several viewers that play and then never read again.
    let mut stuck = Vec::new();
    for _ in 0..3 {
        let mut c = RtmpClient::connect(s.rtmp, "live").unwrap();
        c.play("cam1").unwrap();
        stuck.push(c);
    }
    let before = s.frames_in("live/cam1");
    let out = dir.path().join("ok.flv");
    let (o, _) = ffmpeg::run(
        &record_args(&s.rtmp_url("live/cam1", None), 6, &out),
        Duration::from_secs(25),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = probe(&out);
    assert!(
        p.video_packets >= 120 && p.audio_packets >= 200,
        "the reading viewer got everything: {p:?}"
    );
    let after = s.frames_in("live/cam1");
    // The publisher ran at its own pace: about 68 frames a second.
    assert!(
        after - before >= 5 * 60,
        "publisher slowed: {} frames",
        after - before
    );
    drop(stuck);
}

#[test]
fn bad_input_closes_only_that_connection() {
    let s = Server::start();
    let dir = TempDir::new("rtmp-bad");
    let (_, token) = s.create_token("publish", json!({"label": "cam"}));
    let _publisher = start_publisher(&s, &dir, "live/cam1", &token);
    let mut viewer = RtmpClient::connect(s.rtmp, "live").unwrap();
    viewer.play("cam1").unwrap();

    // Garbage instead of a handshake.
    let mut garbage = std::net::TcpStream::connect(s.rtmp).unwrap();
    let noise: Vec<u8> = (0..4000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = garbage.write_all(&noise);
    assert!(
        closed_within(&mut garbage, Duration::from_secs(5)),
        "garbage connection left open"
    );

    // Garbage after a good handshake.
    let (mut after_hs, _) = handshake(s.rtmp).unwrap();
    let _ = after_hs.write_all(&noise);
    assert!(
        closed_within(&mut after_hs, Duration::from_secs(5)),
        "garbage after the handshake left open"
    );

    // A handshake cut short, by a client that then hangs up, and by one that just stalls.
    let mut cut = std::net::TcpStream::connect(s.rtmp).unwrap();
    cut.write_all(&[3u8; 700]).unwrap();
    cut.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(closed_within(&mut cut, Duration::from_secs(5)));
    let mut stalled = std::net::TcpStream::connect(s.rtmp).unwrap();
    stalled.write_all(&[3u8; 700]).unwrap();

    // An absurd chunk size.
    let (mut absurd, _) = handshake(s.rtmp).unwrap();
    let mut set_chunk = vec![2, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
    set_chunk.extend_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
    absurd.write_all(&set_chunk).unwrap();
    assert!(
        closed_within(&mut absurd, Duration::from_secs(5)),
        "absurd chunk size accepted"
    );
    assert!(s
        .log_lines_with("chunk size")
        .iter()
        .any(|l| l.contains("2147483647")));

    // Everyone else is still served.
    let (v, a) = viewer.count_media(Duration::from_secs(2)).unwrap();
    assert!(
        v > 30 && a > 50,
        "the existing viewer kept receiving: {v} video, {a} audio"
    );
    let out = dir.path().join("after.flv");
    let (o, _) = ffmpeg::run(
        &record_args(&s.rtmp_url("live/cam1", None), 2, &out),
        Duration::from_secs(20),
    );
    assert!(
        o.status.success(),
        "a new viewer is served: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        closed_within(&mut stalled, Duration::from_secs(15)),
        "a stalled handshake times out"
    );
    assert_eq!(s.metric("streamgate_panics_total"), 0.0);
}
