//! The hostile battery: attacks on the real binary, one class per test. In each, an ffmpeg
//! publisher and an RTMP viewer keep streaming throughout, `/healthz` stays 200, the server's
//! memory stays under the bound the test states, nothing panics, and the attacking connection
//! is refused or closed with its reason in the log. Each test prints its line of the report
//! (`cargo test --test hostile -- --nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use streamgate_tests::hostile::{
    amf0, assert_unharmed, chunks, connect_from, connect_message, is_closed, keyframe_body, msg,
    Bystander, Monitor,
};
use streamgate_tests::rtmp::{closed_within, handshake, RtmpClient};
use streamgate_tests::{wait_until, Options, Server, TempDir};

/// Memory bound for the attacks that should cost next to nothing (a debug build with two
/// streams runs at 20 to 40 MiB).
const SMALL_RSS_MIB: u64 = 150;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Opens `n` connections with `open`, keeping those that succeed.
fn open_many<T>(n: usize, mut open: impl FnMut(usize) -> Option<T>) -> Vec<T> {
    (0..n).filter_map(&mut open).collect()
}

/// Whether the server closed `socket` within `timeout`, and when.
fn closed_after(socket: &mut TcpStream, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    closed_within(socket, timeout).then(|| start.elapsed())
}

#[test]
fn amf0_bombs_before_any_token() {
    let s = Server::start();
    let dir = TempDir::new("hostile-amf0");
    let bystander = Bystander::start(&s, &dir);
    let monitor = Monitor::start(&s);

    // Objects nested as deep as a 64 KiB command allows: what overflowed a worker's stack.
    let mut nested = amf0::string("connect");
    nested.extend(amf0::number(1.0));
    while nested.len() + 4 < 64 * 1024 {
        nested.extend_from_slice(&[0x03, 0, 1, b'a']);
    }
    let mut deep = chunks(2, msg::SET_CHUNK_SIZE, 0, &65536u32.to_be_bytes(), 128);
    deep.extend(chunks(3, msg::COMMAND, 0, &nested, 65536));
    // A command announcing 16 MiB, followed by as much of a nested bomb as it takes.
    let mut huge = vec![3, 0, 0, 0, 0xFF, 0xFF, 0xFF, msg::COMMAND, 0, 0, 0, 0];
    huge.extend(std::iter::repeat_n([0x03u8, 0, 1, b'a'], 32).flatten());
    // 60 KiB of nulls: more values than a message may hold.
    let mut nulls = chunks(2, msg::SET_CHUNK_SIZE, 0, &65536u32.to_be_bytes(), 128);
    nulls.extend(chunks(3, msg::COMMAND, 0, &vec![amf0::NULL; 60_000], 65536));

    for (what, bytes) in [("deep", &deep), ("huge", &huge), ("values", &nulls)] {
        let mut sockets = open_many(20, |_| handshake(s.rtmp).ok().map(|(sock, _)| sock));
        assert_eq!(sockets.len(), 20, "{what}: handshakes");
        for sock in &mut sockets {
            let _ = sock.write_all(bytes);
        }
        for sock in &mut sockets {
            let took = closed_after(sock, Duration::from_secs(3));
            assert!(took.is_some(), "{what}: the attacker was left open");
        }
    }
    assert!(wait_until(Duration::from_secs(3), || {
        s.metric("streamgate_rtmp_closed_total{reason=\"bad_amf0\"}") >= 40.0
            && s.metric("streamgate_rtmp_closed_total{reason=\"bad_chunk\"}") >= 20.0
    }));
    let log = s.log();
    assert!(
        log.contains("AMF0 values nest deeper than"),
        "reason logged"
    );
    assert!(log.contains("more than 4096 AMF0 values"), "reason logged");
    assert!(
        log.contains("announces 16777215 bytes, over the limit"),
        "reason logged"
    );

    let report = monitor.finish();
    assert_unharmed(
        &s,
        "amf0 bombs",
        &bystander.finish(),
        &report,
        SMALL_RSS_MIB,
        true,
    );
}

#[test]
fn state_and_time_before_a_grant_are_bounded() {
    let s = Server::start_with(
        Options::default()
            .env("STREAMGATE_RTMP_HANDSHAKE_TIMEOUT", "2")
            .env("STREAMGATE_RTMP_GRANT_TIMEOUT", "3"),
    );
    let dir = TempDir::new("hostile-pregrant");
    let bystander = Bystander::start(&s, &dir);
    let monitor = Monitor::start(&s);

    // createStream over and over, then any command over and over: both capped.
    let create = chunks(
        3,
        msg::COMMAND,
        0,
        &amf0::command("createStream", 2.0, &[]),
        128,
    );
    let checkbw = chunks(
        3,
        msg::COMMAND,
        0,
        &amf0::command("_checkbw", 3.0, &[]),
        128,
    );
    for (what, repeated) in [("createStream", &create), ("commands", &checkbw)] {
        let (mut sock, _) = handshake(s.rtmp).unwrap();
        let mut wire = connect_message("live");
        for _ in 0..2000 {
            wire.extend_from_slice(repeated);
        }
        let _ = sock.write_all(&wire);
        let took = closed_after(&mut sock, Duration::from_secs(2));
        assert!(took.is_some(), "{what}: not closed");
    }
    assert!(s.log().contains("limit reached: too many message streams"));
    assert!(s
        .log()
        .contains("limit reached: too many commands before a publish or play"));

    // A client that trickles a byte every 200 ms is closed at the grant deadline all the same.
    let (mut trickler, _) = handshake(s.rtmp).unwrap();
    let start = Instant::now();
    let wire = connect_message("live");
    let mut closed = None;
    for b in wire.iter().cycle().take(100) {
        if trickler.write_all(std::slice::from_ref(b)).is_err() {
            closed = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if is_closed(&mut trickler) {
            closed = Some(start.elapsed());
            break;
        }
    }
    let closed = closed.expect("the trickler is closed");
    assert!(
        closed < Duration::from_millis(4500),
        "closed after {closed:?}, not at the 3 s deadline"
    );

    // 200 connections that send nothing, and one that stops inside the handshake.
    let mut idle = open_many(200, |_| TcpStream::connect(s.rtmp).ok());
    let mut half = TcpStream::connect(s.rtmp).unwrap();
    half.write_all(&[3u8; 700]).unwrap();
    for sock in idle.iter_mut().chain(std::iter::once(&mut half)) {
        assert!(
            closed_after(sock, Duration::from_secs(5)).is_some(),
            "a silent connection outlived the handshake deadline"
        );
    }
    assert!(wait_until(Duration::from_secs(2), || {
        s.metric("streamgate_rtmp_closed_total{reason=\"handshake_timeout\"}") >= 200.0
    }));
    assert!(s.log().contains("no publish or play granted in time"));

    let report = monitor.finish();
    assert_unharmed(
        &s,
        "before a grant",
        &bystander.finish(),
        &report,
        SMALL_RSS_MIB,
        true,
    );
}

#[test]
fn a_token_holder_cannot_crash_a_publish_or_exceed_the_frame_limit() {
    let s =
        Server::start_with(Options::default().env("STREAMGATE_RELAY_MAX_FRAME_BYTES", "1048576"));
    let dir = TempDir::new("hostile-holder");
    let bystander = Bystander::start(&s, &dir);
    let (_, token) = s.create_token("publish", json!({"label": "holder"}));
    let monitor = Monitor::start(&s);

    let mut c = RtmpClient::connect(s.rtmp, "live").unwrap();
    c.publish(&format!("evil?token={token}")).unwrap();
    let data = |values: &[u8]| chunks(4, msg::DATA, 1, values, 4096);
    // @setDataFrame without arguments (a session library panicked on it), an empty data
    // message, metadata that is no object, an abort of nothing, interleaved chunk streams.
    c.send_raw(&data(&amf0::string("@setDataFrame"))).unwrap();
    c.send_raw(&data(&[])).unwrap();
    let mut not_meta = amf0::string("@setDataFrame");
    not_meta.extend(amf0::string("onMetaData"));
    not_meta.extend(amf0::number(7.0));
    c.send_raw(&data(&not_meta)).unwrap();
    c.send_raw(&chunks(2, 2, 0, &9u32.to_be_bytes(), 4096))
        .unwrap();
    let frame = keyframe_body(10_000);
    let mut interleaved = chunks(6, msg::VIDEO, 1, &frame, 4096);
    let audio = chunks(5, 8, 1, &[0xAF, 1, 1, 2], 4096);
    interleaved.splice(4096 + 12..4096 + 12, audio);
    c.send_raw(&interleaved).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        wait_until(Duration::from_secs(3), || s.frames_in("live/evil") >= 1),
        "the publish goes on after the odd messages"
    );
    // A frame over relay.max_frame_bytes: refused from its header, the publisher closed.
    let too_big = chunks(6, msg::VIDEO, 1, &keyframe_body(1_500_000), 4096);
    let _ = c.send_raw(&too_big);
    assert!(closed_within(&mut c.socket, Duration::from_secs(3)));
    assert!(s.log().contains("over the limit of 1048576"));

    let report = monitor.finish();
    assert_unharmed(
        &s,
        "token holder",
        &bystander.finish(),
        &report,
        SMALL_RSS_MIB,
        true,
    );
}

#[test]
fn relay_memory_stays_within_its_limits() {
    let s = Server::start_with(
        Options::default()
            .env("STREAMGATE_RELAY_MAX_FRAME_BYTES", "2097152")
            .env("STREAMGATE_RELAY_BUFFER_BYTES", "16777216")
            .env("STREAMGATE_RELAY_GOP_BYTES", "8388608"),
    );
    let dir = TempDir::new("hostile-relay");
    let bystander = Bystander::start(&s, &dir);
    let (_, token) = s.create_token("publish", json!({"label": "big"}));
    let monitor = Monitor::start(&s);

    let mut publisher = RtmpClient::connect(s.rtmp, "live").unwrap();
    publisher.publish(&format!("big?token={token}")).unwrap();
    // Viewers that never read keep their place in the ring, each at its own frame.
    let mut stuck = Vec::new();
    for _ in 0..3 {
        let mut v = RtmpClient::connect(s.rtmp, "live").unwrap();
        v.play("big").unwrap();
        stuck.push(v);
    }
    // 300 keyframes of 2 MB each: 600 MB through one stream, as fast as loopback takes it.
    let frame = chunks(6, msg::VIDEO, 1, &keyframe_body(2_000_000), 4096);
    for i in 0..300 {
        publisher.send_raw(&frame).unwrap();
        if i % 100 == 50 {
            let mut v = RtmpClient::connect(s.rtmp, "live").unwrap();
            v.play("big").unwrap();
            stuck.push(v);
        }
    }
    assert!(wait_until(Duration::from_secs(20), || s
        .frames_in("live/big")
        >= 300));
    let buffered = s.metric("streamgate_stream_buffered_bytes{stream=\"live/big\",live=\"true\"}");
    assert!(buffered <= 16_777_216.0, "{buffered} bytes buffered");
    drop(stuck);

    let report = monitor.finish();
    // 16 MiB of ring and 8 MiB of GOP, each frame also encoded once for RTMP: the old
    // 512-frame ring alone would have held 600 MB here.
    assert_unharmed(&s, "relay memory", &bystander.finish(), &report, 250, true);
}

#[test]
fn slow_http_clients_are_cut_off() {
    let s = Server::start_with(
        Options::default()
            .env("STREAMGATE_HTTP_HEADER_TIMEOUT", "2")
            .env("STREAMGATE_HTTP_BODY_TIMEOUT", "2")
            .env("STREAMGATE_HTTP_MAX_CONNECTIONS_PER_IP", "100"),
    );
    let dir = TempDir::new("hostile-http");
    let bystander = Bystander::start(&s, &dir);
    let monitor = Monitor::start(&s);

    // 300 connections from three addresses trickle header lines, one every 500 ms.
    let mut trickling: Vec<TcpStream> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .flat_map(|from| open_many(100, |_| connect_from(ip(from), s.http).ok()))
        .collect();
    assert_eq!(trickling.len(), 300);
    let start = Instant::now();
    for sock in &mut trickling {
        let _ = sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
    }
    let mut open = trickling.len();
    while open > 0 && start.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(500));
        open = 0;
        for sock in &mut trickling {
            if sock.write_all(b"X-Slow: 1\r\n").is_ok() && !is_closed(sock) {
                open += 1;
            }
        }
        // Meanwhile the API answers others.
        let r = s.api("GET", "/api/publish_token/list", None);
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        open, 0,
        "trickling header lines outlived the header timeout"
    );

    // A body that never completes is answered 408.
    let mut body = TcpStream::connect(s.http).unwrap();
    body.write_all(
        b"POST /api/publish_token HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"la",
    )
    .unwrap();
    body.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = vec![0u8; 200];
    let n = body.read(&mut answer).unwrap_or(0);
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );

    // A request head larger than the read buffer is refused, not buffered.
    let mut big = TcpStream::connect(s.http).unwrap();
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    head.resize(head.len() + 100 * 1024, b'a');
    let _ = big.write_all(&head);
    big.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = big.read(&mut answer).unwrap_or(0);
    assert!(
        n == 0 || String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );

    // An idle keep-alive connection is closed at the header timeout too.
    let mut idle = TcpStream::connect(s.http).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let took = closed_after(&mut idle, Duration::from_secs(5)).expect("closed");
    assert!(took < Duration::from_secs(4), "{took:?}");

    // One address over its cap: the rest are refused and counted; another address is served.
    let capped = open_many(150, |_| connect_from(ip("127.0.0.9"), s.http).ok());
    assert!(wait_until(Duration::from_secs(3), || {
        s.metric("streamgate_connections_refused_total{listener=\"http\",reason=\"address_full\"}")
            >= 50.0
    }));
    drop(capped);
    let other = connect_from(ip("127.0.0.10"), s.http).unwrap();
    drop(other);
    assert!(s
        .log()
        .contains("connection refused: too many connections from this address"));

    let report = monitor.finish();
    assert_unharmed(
        &s,
        "slow http",
        &bystander.finish(),
        &report,
        SMALL_RSS_MIB,
        true,
    );
}

#[test]
fn silent_websockets_are_closed_and_answering_ones_kept() {
    let s = Server::start_with(
        Options::default()
            .env("STREAMGATE_WEBRTC_WS_PING_INTERVAL", "1")
            .env("STREAMGATE_WEBRTC_WS_IDLE_TIMEOUT", "3"),
    );
    let dir = TempDir::new("hostile-ws");
    let bystander = Bystander::start(&s, &dir);
    let monitor = Monitor::start(&s);
    let url = format!("ws://{}/websocket", s.http);

    // Many sockets that never read, so never answer a ping.
    let mut silent: Vec<_> = open_many(50, |_| tungstenite::connect(&url).ok().map(|(ws, _)| ws));
    assert_eq!(silent.len(), 50);
    // One that reads (and so answers pings) through the same time.
    let (mut alive, _) = tungstenite::connect(&url).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(t) = alive.get_mut() {
        t.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_secs(6) {
        match alive.read() {
            Ok(tungstenite::Message::Ping(_)) => pings += 1,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("the answering socket was closed: {e}"),
        }
    }
    assert!(pings >= 4, "{pings} pings");
    alive
        .send(tungstenite::Message::text(r#"{"command":"ping"}"#))
        .unwrap();
    // The silent ones were closed after 3 s of silence.
    for ws in &mut silent {
        let mut closed = false;
        for _ in 0..20 {
            match ws.read() {
                Ok(tungstenite::Message::Close(_)) | Err(_) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
            }
        }
        assert!(closed, "a silent WebSocket is still open");
    }
    assert!(s.log().contains("WebSocket closed: nothing received"));

    let report = monitor.finish();
    assert_unharmed(
        &s,
        "silent websockets",
        &bystander.finish(),
        &report,
        SMALL_RSS_MIB,
        true,
    );
}

#[test]
fn running_out_of_descriptors_delays_only_new_connections() {
    let s = Server::start_with(
        Options::default()
            .wrapped(&["prlimit", "--nofile=256:256", "--"])
            .env("STREAMGATE_RTMP_HANDSHAKE_TIMEOUT", "3"),
    );
    assert!(
        s.log_lines_with("open file limit")
            .iter()
            .any(|l| l.contains("soft=256") && l.contains("hard=256")),
        "the limits are logged"
    );
    let dir = TempDir::new("hostile-fds");
    let bystander = Bystander::start(&s, &dir);
    let monitor = Monitor::start(&s);
    // More idle connections than descriptors: the server takes what it can, the rest wait
    // in the listen queue until the handshake deadline frees descriptors.
    let mut idle = open_many(400, |_| TcpStream::connect(s.rtmp).ok());
    let pid = s.pid().unwrap();
    let ticks = streamgate_tests::cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = streamgate_tests::cpu_ticks(pid) - ticks;
    assert!(spent < 80, "the accept loop spun: {spent} ticks in 2 s");
    assert!(s.log().contains("rtmp accept failed; retrying every"));
    // Every idle connection is eventually taken and closed.
    for sock in &mut idle {
        assert!(
            closed_within(sock, Duration::from_secs(20)),
            "an idle connection stayed"
        );
    }
    let report = monitor.finish();
    // /healthz needs a descriptor too: it may fail while they are all taken.
    assert_unharmed(
        &s,
        "descriptor exhaustion",
        &bystander.finish(),
        &report,
        SMALL_RSS_MIB,
        false,
    );
    assert_eq!(
        s.get("/healthz").map(|r| r.status).unwrap_or(0),
        200,
        "served again"
    );
}

#[test]
fn connection_caps_per_address() {
    let s =
        Server::start_with(Options::default().env("STREAMGATE_RTMP_MAX_CONNECTIONS_PER_IP", "10"));
    let dir = TempDir::new("hostile-caps");
    let bystander = Bystander::start(&s, &dir);
    let monitor = Monitor::start(&s);
    let mut held = open_many(30, |_| connect_from(ip("127.0.0.5"), s.rtmp).ok());
    assert!(wait_until(Duration::from_secs(3), || {
        s.metric("streamgate_connections_refused_total{listener=\"rtmp\",reason=\"address_full\"}")
            >= 20.0
    }));
    std::thread::sleep(Duration::from_millis(300));
    let refused = held
        .iter_mut()
        .map(is_closed)
        .filter(|closed| *closed)
        .count();
    assert_eq!(refused, 20);
    // Another address is served.
    let mut other = RtmpClient::connect(s.rtmp, "live").unwrap();
    other.play("bystander").unwrap();
    assert!(s.log().contains("too many connections from this address"));
    let report = monitor.finish();
    assert_unharmed(
        &s,
        "connection caps",
        &bystander.finish(),
        &report,
        SMALL_RSS_MIB,
        true,
    );
}

/// A WebSocket client from `from` that asks to play the bystander's stream; the reply that
/// decides it (an offer or an error).
fn ws_play(s: &Server, from: &str) -> (tungstenite::WebSocket<TcpStream>, String) {
    let stream = connect_from(ip(from), s.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{}/websocket", s.http), stream).unwrap();
    ws.send(tungstenite::Message::text(
        r#"{"command":"play","streamId":"live/bystander"}"#,
    ))
    .unwrap();
    loop {
        let text = ws.read().unwrap().into_text().unwrap().to_string();
        if text.contains("takeConfiguration") || text.contains("\"error\"") {
            return (ws, text);
        }
    }
}

#[test]
fn webrtc_candidates_sessions_and_negotiations_are_capped() {
    let s = Server::start_with(
        Options::default()
            .env("STREAMGATE_WEBRTC_MAX_CANDIDATES", "5")
            .env("STREAMGATE_WEBRTC_MAX_PEERS_PER_IP", "2")
            .env("STREAMGATE_WEBRTC_MAX_PENDING", "3")
            .env("STREAMGATE_WEBRTC_ICE_IPS", "127.0.0.1"),
    );
    let dir = TempDir::new("hostile-webrtc");
    let bystander = Bystander::start(&s, &dir);
    let monitor = Monitor::start(&s);

    let (mut a, offer) = ws_play(&s, "127.0.0.21");
    assert!(offer.contains("takeConfiguration"), "{offer}");
    let (_b, offer) = ws_play(&s, "127.0.0.21");
    assert!(offer.contains("takeConfiguration"), "{offer}");
    let (_c, refused) = ws_play(&s, "127.0.0.21");
    assert!(refused.contains("tooManySessions"), "{refused}");
    let (_d, offer) = ws_play(&s, "127.0.0.22");
    assert!(offer.contains("takeConfiguration"), "{offer}");
    let (_e, busy) = ws_play(&s, "127.0.0.23");
    assert!(busy.contains("serverBusy"), "{busy}");

    // Twenty candidates: five are taken, fifteen answered with an error and ignored.
    for port in 0..20 {
        let c = format!(
            r#"{{"command":"takeCandidate","streamId":"live/bystander","label":0,"id":"0","candidate":"candidate:{port} 1 udp 2122260223 192.0.2.1 {} typ host"}}"#,
            40000 + port
        );
        a.send(tungstenite::Message::text(c)).unwrap();
    }
    let mut too_many = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while too_many < 15 && Instant::now() < deadline {
        if let Ok(m) = a.read() {
            too_many += usize::from(m.to_text().unwrap_or("").contains("tooManyCandidates"));
        }
    }
    assert_eq!(too_many, 15);
    assert!(
        s.metric(
            "streamgate_connections_refused_total{listener=\"webrtc\",reason=\"address_full\"}"
        ) >= 1.0
    );

    let report = monitor.finish();
    assert_unharmed(
        &s,
        "webrtc limits",
        &bystander.finish(),
        &report,
        SMALL_RSS_MIB,
        true,
    );
}
