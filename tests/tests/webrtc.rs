//! Browsers publishing and playing over WebRTC through the real binary: the bundled pages and
//! Ant Media's unmodified SDK in headless Chromium (fake camera and microphone), refusals with
//! the SDK's error definitions, and signaling robustness checked against the live-session
//! count.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use streamgate_tests::browser::{
    assert_plays, wait_status, Browser, StaticServer, Tab, WsClient, VIDEO_FRAMES,
};
use streamgate_tests::{ffmpeg, srt, wait_until, Options, Server, TempDir};

/// A server whose ICE candidates are on loopback only (the tests send nothing elsewhere).
fn server() -> Server {
    Server::start_with(Options::default().env("STREAMGATE_WEBRTC_ICE_IPS", "127.0.0.1"))
}

fn publish_token(s: &Server, stream: &str, extra: Value) -> (i64, String) {
    let mut body = json!({"label": "browser", "streams": [{"streamName": stream}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    s.create_token("publish", body)
}

/// (publishers, viewers) as /metrics reports them, over every protocol.
fn sessions(s: &Server) -> (u64, u64) {
    let m = s.metrics_text();
    let read = |action: &str| {
        let label = format!(",action=\"{action}\"}} ");
        m.lines()
            .filter(|l| l.starts_with("streamgate_sessions{protocol="))
            .filter_map(|l| l.split_once(&label).map(|(_, v)| v))
            .filter_map(|v| v.parse::<u64>().ok())
            .sum()
    };
    (read("publish"), read("play"))
}

fn assert_no_sessions(s: &Server, what: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || sessions(s) == (0, 0)),
        "{what}: sessions left {:?}",
        sessions(s)
    );
}

fn page(s: &Server, page: &str, stream: &str, token: Option<&str>, extra: &str) -> String {
    let mut url = format!("http://{}/{page}?id={stream}{extra}", s.http);
    if let Some(t) = token {
        url.push_str(&format!("&token={t}"));
    }
    url
}

/// Waits for Ant Media's SDK page to report `play_started` within `within`, then for its
/// picture and sound ([`assert_plays`]).
fn assert_sdk_plays(b: &mut Browser, tab: &Tab, within: Duration, what: &str) {
    b.wait_for(tab, "window.events || []", within, |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|e| e == "play_started"))
    })
    .unwrap_or_else(|v| panic!("{what}: SDK play did not start: {v}"));
    assert_plays(
        b,
        tab,
        "Object.values(adaptor.remotePeerConnection)[0]",
        what,
    );
}

#[test]
fn pages_publish_and_play_in_h264_and_vp8_and_a_waiting_viewer_is_told() {
    let s = server();
    let mut b = Browser::launch();
    for codec in ["h264", "vp8"] {
        let stream = format!("live/{codec}");
        let (_, token) = publish_token(&s, &stream, json!({}));
        let publisher = b.open(&page(
            &s,
            "publish.html",
            &stream,
            Some(&token),
            &format!("&codec={codec}"),
        ));
        wait_status(&mut b, &publisher, "publishing", 20);
        let viewer = b.open(&page(&s, "play.html", &stream, None, ""));
        wait_status(&mut b, &viewer, "playing", 20);
        assert_plays(&mut b, &viewer, "streamgate.state.pc", codec);
        let negotiated = b.eval(
            &viewer,
            "(async () => { let m = ''; (await streamgate.state.pc.getStats()).forEach(r => { if (r.type === 'codec' && r.mimeType.startsWith('video')) m = r.mimeType; }); return m; })()",
        );
        assert_eq!(
            negotiated.as_str().unwrap().to_lowercase(),
            format!("video/{codec}"),
            "viewer's codec"
        );
        assert_eq!(sessions(&s), (1, 1));
        // The viewer's join asked the browser publisher for a keyframe.
        assert!(!s.log_lines_with("keyframe requested").is_empty());
        b.close(&viewer);
        b.close(&publisher);
        assert_no_sessions(&s, codec);
    }

    // A viewer with a subscribe token may wait for a stream; it is told when it starts and
    // when it ends.
    let (_, sub) = s.create_token(
        "subscribe",
        json!({"label": "viewer", "streams": [{"streamName": "live/later"}]}),
    );
    let viewer = b.open(&page(&s, "play.html", "live/later", Some(&sub), ""));
    wait_status(&mut b, &viewer, "waiting for the stream", 15);
    let (_, token) = publish_token(&s, "live/later", json!({}));
    let publisher = b.open(&page(&s, "publish.html", "live/later", Some(&token), ""));
    wait_status(&mut b, &viewer, "playing", 20);
    assert_plays(&mut b, &viewer, "streamgate.state.pc", "waiting viewer");
    b.close(&publisher);
    wait_status(&mut b, &viewer, "playback ended", 20);
    b.close(&viewer);
    assert_no_sessions(&s, "waiting viewer");
}

#[test]
fn deleting_the_token_ends_the_browser_session() {
    let s = server();
    let mut b = Browser::launch();
    let (id, token) = publish_token(&s, "live/revoked", json!({}));
    let publisher = b.open(&page(&s, "publish.html", "live/revoked", Some(&token), ""));
    wait_status(&mut b, &publisher, "publishing", 20);
    let viewer = b.open(&page(&s, "play.html", "live/revoked", None, ""));
    wait_status(&mut b, &viewer, "playing", 20);
    assert_eq!(
        s.api("DELETE", &format!("/api/publish_token/{id}"), None)
            .status,
        200
    );
    wait_status(&mut b, &publisher, "publishing ended", 5);
    wait_status(&mut b, &viewer, "playback ended", 10);
    assert_eq!(
        b.eval(
            &publisher,
            "streamgate.state.pc.signalingState === 'closed'"
        ),
        Value::Bool(true),
        "the publisher's peer connection is closed"
    );
    assert_no_sessions(&s, "deleted token");

    // The page shows a refusal to the person.
    let refused = b.open(&page(&s, "publish.html", "live/revoked", Some(&token), ""));
    wait_status(&mut b, &refused, "not authorized", 20);
    let anonymous = b.open(&page(&s, "publish.html", "live/revoked", None, ""));
    wait_status(&mut b, &anonymous, "not authorized", 20);
}

#[test]
fn the_ant_media_sdk_publishes_and_plays_unmodified() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/antmedia");
    assert!(
        root.join("node_modules/@antmedia/webrtc_adaptor/dist/browser/webrtc_adaptor.js")
            .exists(),
        "run `npm ci --prefix examples/antmedia` first (scripts/test does)"
    );
    let s = server();
    let pages = StaticServer::serve(&root);
    let mut b = Browser::launch();
    let (_, token) = publish_token(&s, "LiveApp/sdk1", json!({}));
    let (_, sub) = s.create_token(
        "subscribe",
        json!({"label": "sdk viewer", "streams": [{"streamName": "LiveApp/sdk1"}]}),
    );
    let ws = format!("ws://{}/LiveApp/websocket", s.http);
    let url = |mode: &str, token: &str| {
        format!(
            "http://{}/index.html?mode={mode}&ws={ws}&id=sdk1&token={token}",
            pages.addr
        )
    };
    let events = "window.events || []";
    let publisher = b.open(&url("publish", &token));
    b.wait_for(&publisher, events, Duration::from_secs(20), |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|e| e == "publish_started"))
    })
    .unwrap_or_else(|v| {
        panic!(
            "SDK publish did not start: {v}; errors {}",
            b.eval(&publisher, "window.errors")
        )
    });
    let viewer = b.open(&url("play", &sub));
    assert_sdk_plays(&mut b, &viewer, Duration::from_secs(20), "Ant Media SDK");
    // The SDK's refusal path: a wrong token gets the SDK's error callback.
    let bad = b.open(&url("play", "not-a-token"));
    b.wait_for(&bad, "window.errors || []", Duration::from_secs(15), |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|e| e == "unauthorized_access"))
    })
    .unwrap_or_else(|v| panic!("no unauthorized_access: {v}"));
    b.close(&bad);
    b.close(&viewer);
    b.close(&publisher);
    assert_no_sessions(&s, "SDK");
}

/// Encoders' streams played by Ant Media's unmodified SDK, with picture and sound: x264's
/// defaults (High profile, B-frames) at 720p and OBS's defaults at 1080p over RTMP, which the
/// SDK gets re-encoded, and Main profile without B-frames over SRT, which it gets as it is.
#[test]
fn the_ant_media_sdk_plays_encoder_streams_of_any_profile() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/antmedia");
    let s = server();
    let pages = StaticServer::serve(&root);
    let mut b = Browser::launch();
    for (id, what) in [
        ("x264", "x264 defaults, 720p30, RTMP"),
        ("obs", "OBS defaults, 1080p30, RTMP"),
        ("main", "Main profile without B-frames, SRT"),
    ] {
        let dir = TempDir::new(&format!("webrtc-sdk-{id}"));
        let stream = format!("LiveApp/{id}");
        let (_, token) = publish_token(&s, &stream, json!({}));
        let rtmp = format!("rtmp://{}/{stream}?token={token}", s.rtmp);
        let args = match id {
            "x264" => {
                ffmpeg::with_profile(ffmpeg::publish_args(&rtmp, None), "1280x720", 30, "high", 3)
            }
            "obs" => ffmpeg::obs_default_args(&rtmp),
            _ => ffmpeg::with_profile(
                srt::publish_args(
                    &srt::url(s.srt, &format!("{stream},token={token}"), ""),
                    None,
                ),
                "1280x720",
                30,
                "main",
                0,
            ),
        };
        let _publisher = s.start_publisher(&dir, &stream, &args);
        let viewer = b.open(&format!(
            "http://{}/index.html?mode=play&ws=ws://{}/LiveApp/websocket&id={id}&token=",
            pages.addr, s.http
        ));
        assert_sdk_plays(
            &mut b,
            &viewer,
            Duration::from_secs(30),
            &format!("Ant Media SDK, {what}"),
        );
        assert_eq!(b.eval(&viewer, "window.errors || []"), json!([]), "{what}");
        let reencoded = s
            .log_lines_with("H.264 re-encode started")
            .iter()
            .any(|l| l.contains(&stream));
        assert_eq!(reencoded, id != "main", "{what}: re-encoded");
        b.close(&viewer);
    }
}

/// Sends a publish or play and returns the first reply that is not a candidate.
fn ask(s: &Server, path: &str, origin: Option<&str>, msg: Value) -> (WsClient, Value) {
    let mut c = WsClient::connect(s.http, path, origin);
    c.send_json(&msg);
    loop {
        let v = c.recv(Duration::from_secs(10)).expect("a reply");
        if v["command"] != "takeCandidate" {
            return (c, v);
        }
    }
}

#[test]
fn refusals_carry_the_sdk_error_definitions() {
    let s = server();
    let (_, token) = publish_token(&s, "live/cam1", json!({"subscribeRequiresAuth": true}));
    let (_, other) = publish_token(&s, "live/other", json!({}));
    let (_, origin_bound) = publish_token(
        &s,
        "live/origin",
        json!({"allowedOrigins": ["app.example.com"]}),
    );
    let refused = |path: &str, origin: Option<&str>, msg: Value, definition: &str| {
        let (c, v) = ask(&s, path, origin, msg.clone());
        assert_eq!(v["command"], "error", "{msg}: {v}");
        assert_eq!(v["definition"], definition, "{msg}: {v}");
        c.close();
    };
    refused(
        "/websocket",
        None,
        json!({"command": "publish", "streamId": "live/cam1"}),
        "unauthorized_access",
    );
    refused(
        "/websocket",
        None,
        json!({"command": "publish", "streamId": "live/cam1", "token": "wrong"}),
        "unauthorized_access",
    );
    refused(
        "/websocket",
        None,
        json!({"command": "publish", "streamId": "live/cam1", "token": other}),
        "unauthorized_access",
    );
    refused(
        "/websocket",
        Some("http://evil.example.net"),
        json!({"command": "publish", "streamId": "live/origin", "token": origin_bound}),
        "unauthorized_access",
    );
    refused(
        "/websocket",
        None,
        json!({"command": "publish", "streamId": "a b", "token": token}),
        "invalidStreamName",
    );
    refused(
        "/websocket",
        None,
        json!({"command": "publish", "streamId": ""}),
        "noStreamNameSpecified",
    );
    refused(
        "/websocket",
        None,
        json!({"command": "play", "streamId": "live/nothing"}),
        "no_stream_exist",
    );
    // The origin-bound token works from its origin.
    let (c, v) = ask(
        &s,
        "/websocket",
        Some("https://app.example.com"),
        json!({"command": "publish", "streamId": "live/origin", "token": origin_bound}),
    );
    assert_eq!(v["command"], "start", "{v}");
    c.close();

    // With live/cam1 published (the grant is held from `start` on), a second publish is
    // refused, and so is a viewer without a token (subscribeRequiresAuth).
    let (first, v) = ask(
        &s,
        "/live/websocket",
        None,
        json!({"command": "publish", "streamId": "cam1", "token": token}),
    );
    assert_eq!(v["command"], "start", "{v}");
    assert_eq!(v["streamId"], "cam1");
    refused(
        "/websocket",
        None,
        json!({"command": "publish", "streamId": "live/cam1", "token": token}),
        "streamIdInUse",
    );
    refused(
        "/websocket",
        None,
        json!({"command": "play", "streamId": "live/cam1"}),
        "unauthorized_access",
    );
    assert_eq!(sessions(&s), (1, 0));
    first.close();
    assert_no_sessions(&s, "refusals");
}

#[test]
fn bad_messages_get_errors_and_leak_no_session() {
    let s = server();
    let (_, token) = publish_token(&s, "live/robust", json!({}));
    let mut c = WsClient::connect(s.http, "/websocket", None);
    for (msg, definition) in [
        ("{not json", "invalidMessage"),
        ("[1,2]", "invalidMessage"),
        (r#"{"command":"selfDestruct"}"#, "unknownCommand"),
        (
            r#"{"command":"takeConfiguration","streamId":"live/robust","type":"offer","sdp":"v=0"}"#,
            "noSession",
        ),
        (
            r#"{"command":"takeConfiguration","streamId":"x"}"#,
            "invalidMessage",
        ),
    ] {
        c.send(msg);
        let v = c.expect("error", None);
        assert_eq!(v["definition"], definition, "{msg}");
    }
    c.send(r#"{"command":"ping"}"#);
    c.expect("pong", None);
    c.send(r#"{"command":"getIceServerConfig"}"#);
    c.expect("iceServerConfig", None);

    // An invalid SDP offer ends that session with an error, and releases the stream.
    c.send_json(&json!({"command": "publish", "streamId": "live/robust", "token": token}));
    c.expect("start", None);
    c.send_json(&json!({"command": "takeConfiguration", "streamId": "live/robust", "type": "offer", "sdp": "this is not SDP"}));
    let v = c.expect("error", Some("notSetRemoteDescription"));
    assert_eq!(v["streamId"], "live/robust");
    assert_no_sessions(&s, "invalid SDP");

    // A socket closed mid-negotiation, for a publisher and for a viewer.
    c.send_json(&json!({"command": "publish", "streamId": "live/robust", "token": token}));
    c.expect("start", None);
    let mut viewer = WsClient::connect(s.http, "/websocket", None);
    viewer.send_json(&json!({"command": "play", "streamId": "live/robust"}));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sessions(&s), (1, 1));
    viewer.close();
    c.close();
    assert_no_sessions(&s, "closed mid-negotiation");

    // An oversized message gets an error and a close.
    let mut big = WsClient::connect(s.http, "/websocket", None);
    big.send(&format!(
        r#"{{"command":"ping","pad":"{}"}}"#,
        "x".repeat(streamgate_webrtc_limit() + 1)
    ));
    let v = big.expect("error", None);
    assert_eq!(v["definition"], "messageTooLarge");
    assert!(
        big.closed_within(Duration::from_secs(5)),
        "socket closed after an oversized message"
    );
    assert_no_sessions(&s, "end");
}

/// The server's message limit (`streamgate_webrtc::MAX_MESSAGE_BYTES`, 64 KiB).
fn streamgate_webrtc_limit() -> usize {
    64 * 1024
}

/// Benchmark, not a test (run explicitly; it asserts nothing about speed): one browser
/// publishes, `STREAMGATE_BENCH_VIEWERS` (default 10) Chromium tabs play; prints the server's
/// CPU and RSS. Use a release binary: `STREAMGATE_BIN=target/release/streamgate cargo test
/// -p streamgate-tests --test webrtc -- --ignored --nocapture benchmark_webrtc_viewers`.
#[test]
#[ignore]
fn benchmark_webrtc_viewers() {
    let viewers: usize = std::env::var("STREAMGATE_BENCH_VIEWERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // Every tab comes from this host: the per-address session cap must let them all in.
    let s = Server::start_with(
        Options::default()
            .env("STREAMGATE_WEBRTC_ICE_IPS", "127.0.0.1")
            .env(
                "STREAMGATE_WEBRTC_MAX_PEERS_PER_IP",
                &(viewers + 8).to_string(),
            ),
    );
    let pid = s.pid().unwrap();
    let (_, token) = publish_token(&s, "live/bench", json!({}));
    let mut publisher_browser = Browser::launch();
    let publisher = publisher_browser.open(&page(
        &s,
        "publish.html",
        "live/bench",
        Some(&token),
        "&codec=h264",
    ));
    wait_status(&mut publisher_browser, &publisher, "publishing", 30);
    let idle = proc_sample(pid);
    std::thread::sleep(Duration::from_secs(10));
    let publish_only = proc_sample(pid).since(&idle);
    let mut b = Browser::launch();
    let tabs: Vec<Tab> = (0..viewers)
        .map(|_| b.open(&page(&s, "play.html", "live/bench", None, "")))
        .collect();
    let playing = wait_until(Duration::from_secs(120), || {
        sessions(&s).1 == viewers as u64
    });
    assert!(playing, "viewers admitted: {:?}", sessions(&s));
    std::thread::sleep(Duration::from_secs(10));
    let start = proc_sample(pid);
    let frames_before: Vec<u64> = tabs
        .iter()
        .map(|t| b.eval(t, VIDEO_FRAMES).as_u64().unwrap_or(0))
        .collect();
    std::thread::sleep(Duration::from_secs(20));
    let frames_after: Vec<u64> = tabs
        .iter()
        .map(|t| b.eval(t, VIDEO_FRAMES).as_u64().unwrap_or(0))
        .collect();
    let with_viewers = proc_sample(pid).since(&start);
    let receiving = frames_before
        .iter()
        .zip(&frames_after)
        .filter(|(a, b)| b > a)
        .count();
    let fps: Vec<f64> = frames_before
        .iter()
        .zip(&frames_after)
        .map(|(a, b)| (b - a) as f64 / 20.0)
        .collect();
    let mean_fps = fps.iter().sum::<f64>() / fps.len().max(1) as f64;
    println!(
        "viewers {viewers}: publish only {:.1}% CPU, RSS {} MiB; with viewers {:.1}% CPU, RSS {} MiB; \
         per viewer {:.2}% CPU, {:.2} MiB; {receiving}/{viewers} viewers decoding, mean {mean_fps:.1} fps",
        publish_only.cpu_percent,
        publish_only.rss_kib / 1024,
        with_viewers.cpu_percent,
        with_viewers.rss_kib / 1024,
        (with_viewers.cpu_percent - publish_only.cpu_percent) / viewers as f64,
        (with_viewers.rss_kib as f64 - publish_only.rss_kib as f64) / 1024.0 / viewers as f64,
    );
}

struct ProcSample {
    ticks: u64,
    at: std::time::Instant,
    rss_kib: u64,
}

struct Usage {
    cpu_percent: f64,
    rss_kib: u64,
}

impl ProcSample {
    fn since(&self, earlier: &ProcSample) -> Usage {
        let secs = self.at.duration_since(earlier.at).as_secs_f64();
        let hz = 100.0;
        Usage {
            cpu_percent: (self.ticks - earlier.ticks) as f64 / hz / secs * 100.0,
            rss_kib: self.rss_kib,
        }
    }
}

fn proc_sample(pid: u32) -> ProcSample {
    let ticks = streamgate_tests::cpu_ticks(pid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    ProcSample {
        ticks,
        at: std::time::Instant::now(),
        rss_kib,
    }
}
