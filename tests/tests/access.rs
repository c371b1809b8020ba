//! Access that holds under change, against the real binary: for RTMP, SRT and WebRTC, each
//! as publisher and as viewer, every kind of token change ends the sessions it no longer
//! admits within 1 s and leaves the others alone; anonymous viewers are bound to the publish
//! that admitted them. Timings come from `/metrics` (`streamgate_sessions_ended_total`).
//!
//! Publishers are ffmpeg (RTMP, SRT; stream copy of a clip made once) and WebSocket signaling
//! sessions (WebRTC); viewers are an RTMP client session, ffmpeg (SRT) and WebSocket
//! signaling sessions (WebRTC). A WebRTC session is admitted, and so governed by its token,
//! from its `publish` or `play` message on; its peer connection is not needed to see it end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use streamgate_tests::ffmpeg::Proc;
use streamgate_tests::rtmp::{MediaWatch, RtmpClient};
use streamgate_tests::{srt, wait_until, Server, TempDir};
use tungstenite::{Message, WebSocket};

/// How soon a change must end the sessions it governs.
const WITHIN: Duration = Duration::from_secs(1);

const PROTOCOLS: [&str; 3] = ["rtmp", "srt", "webrtc"];

/// A two-second H.264 + AAC clip in FLV and MPEG-TS, for publishers that copy it in a loop
/// (no encoder per publisher).
fn clips(dir: &TempDir) -> (PathBuf, PathBuf) {
    let flv = dir.path().join("clip.flv");
    let ts = dir.path().join("clip.ts");
    for (out, format) in [(&flv, "flv"), (&ts, "mpegts")] {
        let mut args = streamgate_tests::ffmpeg::publish_args(&out.display().to_string(), Some(2));
        args.retain(|a| a != "-re");
        let n = args.len();
        args[n - 2] = format.into();
        args.insert(0, "-y".into());
        let (o, _) = streamgate_tests::ffmpeg::run(&args, Duration::from_secs(60));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    (flv, ts)
}

fn copy_args(input: &Path, format: &str, url: &str) -> Vec<String> {
    [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-stream_loop",
        "-1",
        "-i",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([input.display().to_string()])
    .chain(["-c", "copy", "-f", format, url].map(String::from))
    .collect()
}

/// An SRT viewer that reads and discards.
fn srt_viewer(s: &Server, dir: &TempDir, name: &str, streamid: &str) -> Proc {
    let args: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "error", "-i"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([srt::url(s.srt, streamid, "")])
        .chain(["-c", "copy", "-f", "null", "-"].map(String::from))
        .collect();
    Proc::ffmpeg(&args, &dir.path().join(format!("{name}.log")))
}

/// A browser's signaling socket, as the Ant Media SDK drives it.
struct Ws(WebSocket<TcpStream>);

impl Ws {
    /// Opens the socket and sends `command` for `stream`; returns once the server answered
    /// with `want` (the session runs) or an error (the text is in the panic message).
    fn open(s: &Server, command: &str, stream: &str, token: Option<&str>, want: &str) -> Self {
        let mut ws = Self::try_open(s, command, stream, token);
        let reply = ws.until(&[want, "\"error\""], Duration::from_secs(10));
        assert!(reply.contains(want), "{command} {stream}: {reply}");
        ws
    }

    fn try_open(s: &Server, command: &str, stream: &str, token: Option<&str>) -> Self {
        let socket = TcpStream::connect(s.http).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (mut ws, _) =
            tungstenite::client(format!("ws://{}/websocket", s.http), socket).unwrap();
        let mut msg = json!({"command": command, "streamId": stream});
        if let Some(t) = token {
            msg["token"] = t.into();
        }
        ws.send(Message::text(msg.to_string())).unwrap();
        Self(ws)
    }

    /// Reads until a text message contains one of `needles`; that message ("" on timeout or
    /// close).
    fn until(&mut self, needles: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.0.read() {
                Ok(Message::Text(t)) if needles.iter().any(|n| t.contains(n)) => {
                    return t.to_string()
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return String::new(),
            }
        }
        String::new()
    }
}

/// Ended sessions by (protocol, action, reason), from `/metrics`.
fn ended(s: &Server) -> HashMap<(String, String, String), u64> {
    let mut out = HashMap::new();
    for line in s.metrics_text().lines() {
        let Some(rest) = line.strip_prefix("streamgate_sessions_ended_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        out.insert(
            (label("protocol"), label("action"), label("reason")),
            value.parse().unwrap_or(0),
        );
    }
    out
}

fn key(protocol: &str, action: &str, reason: &str) -> (String, String, String) {
    (protocol.into(), action.into(), reason.into())
}

/// Waits until every session in `expected` ((protocol, action) pairs) has ended with
/// `reason` since `before`, and returns how long that took from `from`. Fails after
/// [`WITHIN`] (with a second's grace for the metrics read itself, reported).
fn ended_within(
    s: &Server,
    before: &HashMap<(String, String, String), u64>,
    expected: &[(&str, &str)],
    reason: &str,
    from: Instant,
) -> Duration {
    let mut want: HashMap<(String, String, String), u64> = HashMap::new();
    for (p, a) in expected {
        *want.entry(key(p, a, reason)).or_default() += 1;
    }
    let done = wait_until(WITHIN + Duration::from_secs(1), || {
        let now = ended(s);
        want.iter().all(|(k, n)| {
            now.get(k).copied().unwrap_or(0) >= before.get(k).copied().unwrap_or(0) + n
        })
    });
    let took = from.elapsed();
    let now = ended(s);
    assert!(
        done,
        "{reason}: not every session ended; wanted {want:?}, have {now:?}"
    );
    assert!(
        took <= WITHIN,
        "{reason}: the sessions ended after {took:?}"
    );
    took
}

/// Token ids and secrets by protocol.
type Tokens = HashMap<&'static str, (i64, String)>;

/// The sessions of one protocol that a test keeps open (dropped at its end).
#[derive(Default)]
struct Held {
    ffmpeg: Vec<Proc>,
    rtmp: Vec<MediaWatch>,
    ws: Vec<Ws>,
}

fn live_sessions(s: &Server, protocol: &str, action: &str) -> u64 {
    let prefix = format!("streamgate_sessions{{protocol=\"{protocol}\",action=\"{action}\"}} ");
    s.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Starts a publisher of `stream` with `token` on each protocol.
fn publish_everywhere(
    s: &Server,
    dir: &TempDir,
    clips: &(PathBuf, PathBuf),
    stream: &str,
    tokens: &Tokens,
    held: &mut Held,
) {
    let rtmp = format!("{stream}_rtmp");
    let url = s.rtmp_url(&rtmp, Some(&tokens["rtmp"].1));
    held.ffmpeg
        .push(s.start_publisher(dir, &rtmp, &copy_args(&clips.0, "flv", &url)));
    let srt_name = format!("{stream}_srt");
    let url = srt::url(s.srt, &format!("{srt_name},token={}", tokens["srt"].1), "");
    held.ffmpeg
        .push(s.start_publisher(dir, &srt_name, &copy_args(&clips.1, "mpegts", &url)));
    held.ws.push(Ws::open(
        s,
        "publish",
        &format!("{stream}_webrtc"),
        Some(&tokens["webrtc"].1),
        "\"start\"",
    ));
}

/// Starts a viewer of `stream` on each protocol, with the protocol's token if any.
fn view_everywhere(
    s: &Server,
    dir: &TempDir,
    stream: &str,
    tokens: Option<&Tokens>,
    tag: &str,
    held: &mut Held,
) {
    view_on(s, dir, stream, tokens, tag, held, &PROTOCOLS);
}

/// Starts a viewer of `stream` on each of `protocols`, with the protocol's token if any.
fn view_on(
    s: &Server,
    dir: &TempDir,
    stream: &str,
    tokens: Option<&Tokens>,
    tag: &str,
    held: &mut Held,
    protocols: &[&str],
) {
    let token = |p: &str| tokens.map(|t| t[p].1.clone());
    if protocols.contains(&"rtmp") {
        let (app, key) = stream.split_once('/').unwrap();
        let mut c = RtmpClient::connect(s.rtmp, app).unwrap();
        let key = match token("rtmp") {
            Some(t) => format!("{key}?token={t}"),
            None => key.to_owned(),
        };
        c.play(&key).unwrap();
        held.rtmp.push(c.watch());
    }
    if protocols.contains(&"srt") {
        let streamid = match token("srt") {
            Some(t) => format!("{stream},token={t},mode=request"),
            None => format!("{stream},mode=request"),
        };
        let before = live_sessions(s, "srt", "play");
        let mut viewer = srt_viewer(s, dir, &format!("{tag}-srt"), &streamid);
        assert!(
            wait_until(Duration::from_secs(10), || live_sessions(s, "srt", "play")
                > before),
            "the SRT viewer was not admitted: {}",
            viewer.stderr()
        );
        assert!(viewer.running());
        held.ffmpeg.push(viewer);
    }
    if protocols.contains(&"webrtc") {
        held.ws.push(Ws::open(
            s,
            "play",
            stream,
            token("webrtc").as_deref(),
            "takeConfiguration",
        ));
    }
}

fn tokens(s: &Server, kind: &str, streams: &dyn Fn(&str) -> Value, extra: Value) -> Tokens {
    PROTOCOLS
        .iter()
        .map(|p| {
            let mut body = json!({"label": format!("{kind}-{p}"), "streams": streams(p)});
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            (*p, s.create_token(kind, body))
        })
        .collect()
}

#[test]
fn every_token_change_ends_the_sessions_it_no_longer_admits_within_a_second() {
    let s = Server::start();
    let dir = TempDir::new("access-matrix");
    let clips = clips(&dir);
    // The stream viewers watch, from a public publish.
    let (source_id, source) = s.create_token(
        "publish",
        json!({"label": "source", "streams": [{"streamName": "live/src"}]}),
    );
    let _source = s.start_publisher(
        &dir,
        "live/src",
        &copy_args(&clips.0, "flv", &s.rtmp_url("live/src", Some(&source))),
    );
    let src = |_: &str| json!([{"streamName": "live/src"}]);
    // Viewers that no change touches. A WebRTC viewer whose browser never answers the offer
    // is ended after the negotiation timeout (30 s), so each step opens its own.
    let mut spared = Held::default();
    let spare = tokens(&s, "subscribe", &src, json!({}));
    view_on(
        &s,
        &dir,
        "live/src",
        Some(&spare),
        "spare",
        &mut spared,
        &["rtmp", "srt"],
    );

    let changes: [(&str, &str, &str, Option<Value>); 5] = [
        (
            "narrow",
            "PUT",
            "no_longer_allowed",
            Some(json!({"streams": [{"streamName": "live/elsewhere"}]})),
        ),
        (
            "ip",
            "PUT",
            "no_longer_allowed",
            Some(json!({"allowedIpAddresses": ["10.0.0.0/8"]})),
        ),
        ("delete", "DELETE", "token_deleted", None),
        (
            "disable",
            "PUT",
            "token_disabled",
            Some(json!({"isActive": false})),
        ),
        (
            "rotate",
            "PUT",
            "token_rotated",
            Some(json!({"refreshToken": true})),
        ),
    ];
    let mut report = Vec::new();
    for (name, method, reason, body) in changes {
        let stream = format!("live/{name}");
        let own = |p: &str| json!([{"streamName": format!("live/{name}_{p}")}]);
        let publish = tokens(&s, "publish", &own, json!({}));
        let subscribe = tokens(&s, "subscribe", &src, json!({}));
        let mut held = Held::default();
        publish_everywhere(&s, &dir, &clips, &stream, &publish, &mut held);
        view_everywhere(&s, &dir, "live/src", Some(&subscribe), name, &mut held);
        let mut spare_webrtc = Held::default();
        view_on(
            &s,
            &dir,
            "live/src",
            Some(&spare),
            name,
            &mut spare_webrtc,
            &["webrtc"],
        );

        let before = ended(&s);
        let start = Instant::now();
        for (kind, set) in [("publish", &publish), ("subscribe", &subscribe)] {
            for (id, _) in set.values() {
                let r = s.api(
                    method,
                    &format!("/api/{kind}_token/{id}"),
                    body.as_ref().map(Value::to_string).as_deref(),
                );
                assert_eq!(r.status, 200, "{name}: {}", r.body);
            }
        }
        let every: Vec<(&str, &str)> = PROTOCOLS
            .iter()
            .flat_map(|p| [(*p, "publish"), (*p, "play")])
            .collect();
        let took = ended_within(&s, &before, &every, reason, start);
        report.push(format!("{name}: {took:?}"));

        // The clients were told: RTMP and SRT connections closed, the browser's socket got
        // the end of its session with the reason.
        for mut ws in held.ws.drain(..) {
            let end = ws.until(&["_finished"], Duration::from_secs(2));
            assert!(end.contains("\"reason\""), "{name}: {end:?}");
        }
        for p in held.ffmpeg.iter_mut() {
            assert!(
                p.wait_exit(Duration::from_secs(5)).is_some(),
                "{name}: ffmpeg goes on"
            );
        }
        for watch in held.rtmp.drain(..) {
            let r = watch.finish();
            assert!(r.error.is_some(), "{name}: the RTMP viewer was not closed");
        }
        for mut ws in spare_webrtc.ws.drain(..) {
            let end = ws.until(&["_finished"], Duration::from_millis(300));
            assert!(
                end.is_empty(),
                "{name}: the spared WebRTC viewer ended: {end}"
            );
        }
        for p in PROTOCOLS {
            assert_eq!(
                live_sessions(&s, p, "publish"),
                u64::from(p == "rtmp"),
                "{name}: {p} publishers left (the RTMP source stays)"
            );
        }
    }
    eprintln!(
        "token changes ended their sessions after: {}",
        report.join(", ")
    );

    // subscribeRequiresAuth on the source ends its anonymous viewers, and only them.
    view_on(
        &s,
        &dir,
        "live/src",
        Some(&spare),
        "spare",
        &mut spared,
        &["webrtc"],
    );
    let mut anonymous = Held::default();
    view_everywhere(&s, &dir, "live/src", None, "anonymous", &mut anonymous);
    let before = ended(&s);
    let start = Instant::now();
    let r = s.api(
        "PUT",
        &format!("/api/publish_token/{source_id}"),
        Some(r#"{"subscribeRequiresAuth": true}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let anonymous_viewers: Vec<(&str, &str)> = PROTOCOLS.iter().map(|p| (*p, "play")).collect();
    let took = ended_within(
        &s,
        &before,
        &anonymous_viewers,
        "subscribe_token_required",
        start,
    );
    eprintln!("subscribeRequiresAuth ended the anonymous viewers after {took:?}");

    // Nothing else ended: the spared viewers play on, the source still publishes.
    std::thread::sleep(Duration::from_millis(500));
    for p in PROTOCOLS {
        assert_eq!(live_sessions(&s, p, "play"), 1, "{p}: the spared viewer");
    }
    assert!(s.frames_in("live/src") > 0);
    for p in spared.ffmpeg.iter_mut() {
        assert!(p.running(), "the spared SRT viewer stopped: {}", p.stderr());
    }
    for mut ws in spared.ws.drain(..) {
        let end = ws.until(&["_finished"], Duration::from_millis(300));
        assert!(end.is_empty(), "the spared WebRTC viewer ended: {end}");
    }
    for watch in spared.rtmp.drain(..) {
        let r = watch.finish();
        assert!(
            r.error.is_none() && r.video > 25,
            "spared RTMP viewer: {r:?}"
        );
    }
}

#[test]
fn an_anonymous_viewer_ends_with_its_publish_and_a_protected_one_admits_none() {
    let s = Server::start();
    let dir = TempDir::new("access-anonymous");
    let (_, public) = s.create_token("publish", json!({"label": "public"}));
    let (_, protected) = s.create_token(
        "publish",
        json!({"label": "protected", "subscribeRequiresAuth": true}),
    );
    let clips = clips(&dir);
    let mut first = s.start_publisher(
        &dir,
        "live/next",
        &copy_args(&clips.0, "flv", &s.rtmp_url("live/next", Some(&public))),
    );
    let mut anonymous = Held::default();
    view_everywhere(&s, &dir, "live/next", None, "anonymous", &mut anonymous);

    let before = ended(&s);
    let start = Instant::now();
    let _ = first.child.kill();
    let _ = first.wait_exit(Duration::from_secs(5));
    let viewers: Vec<(&str, &str)> = PROTOCOLS.iter().map(|p| (*p, "play")).collect();
    let took = ended_within(&s, &before, &viewers, "publisher_ended", start);
    eprintln!("anonymous viewers ended {took:?} after their publisher");

    // The next publish needs subscribe tokens: nobody anonymous carried over, none let in.
    let _second = s.start_publisher(
        &dir,
        "live/next",
        &copy_args(&clips.0, "flv", &s.rtmp_url("live/next", Some(&protected))),
    );
    for p in PROTOCOLS {
        assert_eq!(
            live_sessions(&s, p, "play"),
            0,
            "{p}: an anonymous viewer stayed"
        );
    }
    let mut c = RtmpClient::connect(s.rtmp, "live").unwrap();
    assert!(
        c.play("next").is_err(),
        "an anonymous RTMP viewer was let in"
    );
    assert_eq!(
        srt::call(s.srt, "live/next,mode=request", None),
        srt::CallResult::Rejected(1401)
    );
    let mut ws = Ws::try_open(&s, "play", "live/next", None);
    let reply = ws.until(&["\"error\"", "takeConfiguration"], Duration::from_secs(10));
    assert!(reply.contains("unauthorized_access"), "{reply}");
    for watch in anonymous.rtmp.drain(..) {
        assert!(
            watch.finish().error.is_some(),
            "the old RTMP viewer is still open"
        );
    }
}

#[test]
fn a_webrtc_publisher_that_stops_reading_ends_with_its_token_and_frees_the_name() {
    let s = Server::start();
    let (id, token) = s.create_token(
        "publish",
        json!({"label": "deaf", "streams": [{"streamName": "live/deaf"}]}),
    );
    let mut deaf = Ws::open(&s, "publish", "live/deaf", Some(&token), "\"start\"");
    deaf.0
        .get_mut()
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // From now on it only writes: thousands of pings whose answers it never reads, until
    // the server's writes to it stall.
    let ping = Message::text(r#"{"command":"ping"}"#);
    for _ in 0..5000 {
        if deaf.0.send(ping.clone()).is_err() {
            break;
        }
    }
    let start = Instant::now();
    let r = s.api("DELETE", &format!("/api/publish_token/{id}"), None);
    assert_eq!(r.status, 200);
    assert!(
        wait_until(WITHIN, || live_sessions(&s, "webrtc", "publish") == 0),
        "the publish outlived its token's deletion by {:?}",
        start.elapsed()
    );
    eprintln!(
        "the deaf publisher ended {:?} after the delete",
        start.elapsed()
    );
    let (_, again) = s.create_token(
        "publish",
        json!({"label": "next", "streams": [{"streamName": "live/deaf"}]}),
    );
    let _next = Ws::open(&s, "publish", "live/deaf", Some(&again), "\"start\"");
    drop(deaf);
}
