//! SRT publish and play through the real binary with stock ffmpeg and `srt-live-transmit`
//! (libsrt) and an srt-tokio caller, every request decided by the token rules before the
//! handshake completes, media crossing between SRT and RTMP both ways, and the hostile
//! battery: malformed datagrams, file-mode callers, every passphrase and key length, long
//! stream ids, handshake floods from many ports and addresses, callers that vanish, each
//! with a bystander publisher and viewer that must not notice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use serde_json::json;
use streamgate_tests::ffmpeg::{self, probe, Proc};
use streamgate_tests::srt::{self, call, raw_handshake, spray_garbage, CallResult};
use streamgate_tests::{wait_until, Options, Server, TempDir};

fn rtmp_url(s: &Server, stream: &str, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("rtmp://{}/{stream}?token={t}", s.rtmp),
        None => format!("rtmp://{}/{stream}", s.rtmp),
    }
}

/// Starts an endless publisher with `args` and waits until `stream` is live.
fn start(s: &Server, dir: &TempDir, stream: &str, args: &[String]) -> Proc {
    s.start_publisher(dir, stream, args)
}

fn start_srt_publisher(s: &Server, dir: &TempDir, stream: &str, streamid: &str) -> Proc {
    start(
        s,
        dir,
        stream,
        &srt::publish_args(&srt::url(s.srt, streamid, ""), None),
    )
}

/// Records `seconds` from `url` (SRT when it starts with `srt:`, else RTMP) to `name`.
fn record(dir: &TempDir, url: &str, seconds: u32, name: &str) -> Proc {
    let out = dir.path().join(name);
    let args = if url.starts_with("srt:") {
        srt::record_args(url, seconds, &out)
    } else {
        ffmpeg::record_args(url, seconds, &out)
    };
    Proc::ffmpeg(&args, &dir.path().join(format!("{name}.log")))
}

/// Waits for a recorder to finish and checks it got H.264 and AAC, `seconds` worth.
fn assert_recorded(mut p: Proc, dir: &TempDir, name: &str, seconds: u64) {
    let status = p.wait_exit(Duration::from_secs(seconds + 15));
    assert!(
        status.is_some_and(|s| s.success()),
        "{name}: viewer failed: {}",
        p.stderr()
    );
    let file = dir.path().join(name);
    let probed = probe(&file);
    assert_eq!(
        probed.video_codec.as_deref(),
        Some("h264"),
        "{name}: {probed:?}"
    );
    assert_eq!(
        probed.audio_codec.as_deref(),
        Some("aac"),
        "{name}: {probed:?}"
    );
    // 25 fps and 43 AAC frames per second, allowing for the start.
    assert!(probed.video_packets >= 20 * seconds, "{name}: {probed:?}");
    assert!(probed.audio_packets >= 35 * seconds, "{name}: {probed:?}");
    let (d, _) = ffmpeg::run(
        &[
            "-v".into(),
            "error".into(),
            "-i".into(),
            file.display().to_string(),
            "-f".into(),
            "null".into(),
            "-".into(),
        ],
        Duration::from_secs(20),
    );
    assert!(
        d.status.success() && d.stderr.is_empty(),
        "{name}: decode errors: {}",
        String::from_utf8_lossy(&d.stderr)
    );
}

/// Asserts that an ffmpeg SRT publish to `url` is refused at once.
fn assert_publish_refused(url: &str, what: &str) {
    let (out, took) = ffmpeg::run(&srt::publish_args(url, Some(10)), Duration::from_secs(15));
    assert!(!out.status.success(), "{what}: publish should be refused");
    assert!(
        took < Duration::from_secs(4),
        "{what}: refusal took {took:?}"
    );
}

/// Asserts that an ffmpeg SRT viewer of `url` is refused at once.
fn assert_play_refused(url: &str, dir: &TempDir, what: &str) {
    let out = dir.path().join("refused.ts");
    let (o, took) = ffmpeg::run(&srt::record_args(url, 3, &out), Duration::from_secs(15));
    assert!(!o.status.success(), "{what}: play should be refused");
    assert!(
        took < Duration::from_secs(4),
        "{what}: refusal took {took:?}"
    );
}

#[test]
fn both_streamid_forms_publish_to_srt_and_rtmp_viewers() {
    let s = Server::start();
    let dir = TempDir::new("srt-play");
    let (_, token) = s.create_token(
        "publish",
        json!({"label": "cam", "streams": [{"streamName": "live/cam1"}, {"streamName": "live/cam2"}]}),
    );
    // Ant Media's form, and the access-control form percent-encoded in the URL.
    let _a = start_srt_publisher(&s, &dir, "live/cam1", &format!("live/cam1,token={token}"));
    let _b = start_srt_publisher(
        &s,
        &dir,
        "live/cam2",
        &format!("%23!%3A%3Ar%3Dlive%2Fcam2%2Cm%3Dpublish%2Cs%3D{token}"),
    );
    let viewers = [
        (srt::url(s.srt, "live/cam1,mode=request", ""), "cam1-srt.ts"),
        (rtmp_url(&s, "live/cam1", None), "cam1-rtmp.flv"),
        (
            srt::url(s.srt, "#!::r=live/cam2,m=request", ""),
            "cam2-srt.ts",
        ),
        (rtmp_url(&s, "live/cam2", None), "cam2-rtmp.flv"),
    ];
    let recorders: Vec<(Proc, &str)> = viewers
        .iter()
        .map(|(url, name)| (record(&dir, url, 4, name), *name))
        .collect();
    for (p, name) in recorders {
        assert_recorded(p, &dir, name, 4);
    }
    assert_eq!(
        s.metric("streamgate_admissions_total{protocol=\"srt\",action=\"publish\"}"),
        2.0
    );
    assert!(
        !s.log().contains(token.as_str()),
        "the token appears in the log"
    );
}

#[test]
fn rtmp_publish_plays_over_srt() {
    let s = Server::start();
    let dir = TempDir::new("srt-from-rtmp");
    let (_, token) = s.create_token("publish", json!({"label": "cam"}));
    let _p = start(
        &s,
        &dir,
        "live/cam1",
        &ffmpeg::publish_args(&rtmp_url(&s, "live/cam1", Some(&token)), None),
    );
    // Two SRT viewers share the muxed packets; both must decode cleanly.
    let a = record(
        &dir,
        &srt::url(s.srt, "live/cam1,mode=request", ""),
        4,
        "a.ts",
    );
    let b = record(
        &dir,
        &srt::url(s.srt, "#!::m=request,r=live/cam1", ""),
        4,
        "b.ts",
    );
    assert_recorded(a, &dir, "a.ts", 4);
    assert_recorded(b, &dir, "b.ts", 4);
}

#[test]
fn refusals_at_the_handshake() {
    let s = Server::start();
    let dir = TempDir::new("srt-refuse");
    let (_, good) = s.create_token(
        "publish",
        json!({"label": "good", "streams": [{"streamName": "live/cam1"}], "subscribeRequiresAuth": true}),
    );
    let (_, other) = s.create_token(
        "publish",
        json!({"label": "other", "streams": [{"streamName": "live/other"}]}),
    );
    let (_, expiring) = s.create_token("publish", json!({"label": "soon", "expires": 1}));
    std::thread::sleep(Duration::from_millis(1100));
    let publish = |streamid: &str| srt::url(s.srt, streamid, "");

    assert_publish_refused(&publish("live/cam2"), "no token");
    assert_publish_refused(&publish("live/cam2,token=sgp_garbage"), "garbage token");
    assert_publish_refused(
        &publish(&format!("live/cam2,token={other}")),
        "token for another stream",
    );
    assert_publish_refused(
        &publish(&format!("#!::r=live/cam2,m=publish,s={expiring}")),
        "expired token",
    );
    let mut first = start_srt_publisher(&s, &dir, "live/cam1", &format!("live/cam1,token={good}"));
    assert_publish_refused(
        &publish(&format!("live/cam1,token={good}")),
        "second publish of a live name",
    );
    assert_play_refused(
        &publish("live/cam1,mode=request"),
        &dir,
        "no token on a subscribeRequiresAuth stream",
    );
    let before = s.frames_in("live/cam1");
    std::thread::sleep(Duration::from_secs(1));
    assert!(first.running(), "the first publisher keeps streaming");
    assert!(s.frames_in("live/cam1") > before + 25);

    for reason in [
        "missing",
        "unknown",
        "stream_not_allowed",
        "expired",
        "stream_in_use",
    ] {
        let series = format!("streamgate_refusals_total{{protocol=\"srt\",reason=\"{reason}\"}}");
        assert!(s.metric(&series) >= 1.0, "no refusal counted for {reason}");
    }
    for secret in [&good, &other, &expiring] {
        assert!(
            !s.log().contains(secret.as_str()),
            "a token appears in the log"
        );
    }
}

#[test]
fn each_refusal_carries_its_code() {
    let s = Server::start();
    let dir = TempDir::new("srt-codes");
    let (_, good) = s.create_token(
        "publish",
        json!({"label": "good", "streams": [{"streamName": "live/cam1"}]}),
    );
    let (_, viewer) = s.create_token("subscribe", json!({"label": "v"}));
    let _p = start_srt_publisher(&s, &dir, "live/cam1", &format!("live/cam1,token={good}"));
    let cases = [
        ("malformed streamid", "#!::r=live/x,m".to_owned(), 1400),
        ("duplicate key", "#!::r=live/x,r=live/y".to_owned(), 1400),
        ("bad stream name", "live/a b,token=x".to_owned(), 1400),
        ("no token", "live/cam2".to_owned(), 1401),
        (
            "garbage token",
            "live/cam2,token=sgp_garbage".to_owned(),
            1401,
        ),
        (
            "subscribe token to publish",
            format!("live/cam2,token={viewer}"),
            1401,
        ),
        (
            "token for another stream",
            format!("live/cam2,token={good}"),
            1403,
        ),
        (
            "viewer of a stream not live",
            "live/nothing,mode=request".to_owned(),
            1404,
        ),
        (
            "bad mode",
            "#!::r=live/cam1,m=bidirectional".to_owned(),
            1405,
        ),
        (
            "second publish",
            format!("#!::r=live/cam1,m=publish,s={good}"),
            1409,
        ),
    ];
    for (what, streamid, code) in &cases {
        assert_eq!(
            call(s.srt, streamid, None),
            CallResult::Rejected(*code),
            "{what}"
        );
    }
    // What no SRT library sends: a streamid over 512 bytes, by a hand-made handshake.
    assert_eq!(
        raw_handshake(
            s.srt,
            format!("live/cam2,token={}", "x".repeat(600)).as_bytes()
        ),
        Some(1400)
    );
    // The same handshake with a fitting streamid is answered as the rules say.
    assert_eq!(raw_handshake(s.srt, b"live/cam2"), Some(1401));
    // And a viewer is admitted.
    assert_eq!(
        call(s.srt, "live/cam1,mode=request", None),
        CallResult::Connected
    );
}

#[test]
fn passphrases() {
    let s = Server::start();
    let dir = TempDir::new("srt-pass");
    let pass = "correct-horse-battery";
    let (_, enc) = s.create_token(
        "publish",
        json!({"label": "enc", "streams": [{"streamName": "live/enc"}], "srtPassphrase": pass}),
    );
    let (_, plain) = s.create_token(
        "publish",
        json!({"label": "plain", "streams": [{"streamName": "live/plain[0-9]?", "isRegex": true}]}),
    );
    // A plain stream runs throughout; no mismatch below may disturb it.
    let mut bystander =
        start_srt_publisher(&s, &dir, "live/plain", &format!("live/plain,token={plain}"));
    let enc_id = format!("live/enc,token={enc}");
    let enc_url = |extra: &str| srt::url(s.srt, &enc_id, extra);
    assert_publish_refused(&enc_url(""), "no passphrase");
    assert_publish_refused(&enc_url("&passphrase=wrong-passphrase"), "wrong passphrase");
    assert_publish_refused(
        &enc_url("&passphrase=wrong-passphrase&pbkeylen=32"),
        "wrong passphrase, AES-256",
    );
    // The codes, from an srt-tokio caller: unsecure (11) without, bad secret (10) if wrong.
    assert_eq!(call(s.srt, &enc_id, None), CallResult::Rejected(11));
    assert_eq!(
        call(s.srt, &enc_id, Some(("wrong-passphrase", 16))),
        CallResult::Rejected(10)
    );
    // With it: any key length the caller picks.
    for extra in [String::new(), "&pbkeylen=24".into(), "&pbkeylen=32".into()] {
        let (out, _) = ffmpeg::run(
            &srt::publish_args(&enc_url(&format!("&passphrase={pass}{extra}")), Some(2)),
            Duration::from_secs(15),
        );
        assert!(
            out.status.success(),
            "publish with the passphrase{extra}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(wait_until(Duration::from_secs(5), || s
            .frames_in("live/enc")
            == 0));
    }
    // A caller that announces a key size to a stream without a passphrase is refused before
    // srt-protocol sees it...
    assert_eq!(
        call(
            s.srt,
            &format!("live/plain2,token={plain}"),
            Some((pass, 32))
        ),
        CallResult::Rejected(11)
    );
    // And so is one that encrypts without announcing its key size (libsrt's default), once
    // its handshake has been looked at.
    let plain_url = srt::url(s.srt, &format!("live/plain3,token={plain}"), "");
    assert_publish_refused(
        &format!("{plain_url}&passphrase={pass}"),
        "passphrase against a stream that has none",
    );
    assert!(bystander.running(), "bystander: {}", bystander.stderr());
    assert!(s.log_lines_with("srt engine").is_empty());
    let (out, _) = ffmpeg::run(
        &srt::publish_args(&plain_url, Some(2)),
        Duration::from_secs(15),
    );
    assert!(
        out.status.success(),
        "plain publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!s.log().contains(pass), "the passphrase appears in the log");
}

/// A caller that encrypts without announcing its key size (libsrt's default when `pbkeylen` is
/// unset) towards a stream without a passphrase: it is refused, and the SRT sessions already
/// running go on undisturbed.
#[test]
fn a_passphrase_against_a_plain_stream_ends_no_other_session() {
    let s = Server::start();
    let dir = TempDir::new("srt-keymat");
    let pass = "correct-horse-battery";
    let (_, token) = s.create_token(
        "publish",
        json!({"label": "cam", "streams": [{"streamName": "live/cam[0-9]", "isRegex": true}]}),
    );
    let session = Bystander::start(&s, &dir, &token);

    // An admitted publisher (ffmpeg, then srt-tokio for the code) and a viewer, each with a
    // passphrase and no key length, to streams that have none.
    let cam2 = format!("live/cam2,token={token}");
    assert_publish_refused(
        &srt::url(s.srt, &cam2, &format!("&passphrase={pass}")),
        "publish with a passphrase to a stream without one",
    );
    assert_eq!(
        call(s.srt, &cam2, Some((pass, 0))),
        CallResult::Rejected(11)
    );
    assert_play_refused(
        &srt::url(
            s.srt,
            "live/cam1,mode=request",
            &format!("&passphrase={pass}"),
        ),
        &dir,
        "play with a passphrase of a stream without one",
    );

    session.assert_undisturbed(&s, &dir);
    // Plain callers are still admitted.
    assert_eq!(call(s.srt, &cam2, None), CallResult::Connected);
    assert!(!s.log().contains(pass), "the passphrase appears in the log");
}

/// A libsrt caller with `transtype=file` (its handshake carries a congestion block; refused)
/// and crafted datagrams that srt-protocol 0.4.4 panics on (they never reach it): the SRT
/// sessions already running go on undisturbed, nothing panics, and callers are still admitted.
#[test]
fn datagrams_that_panic_srt_protocol_end_no_session() {
    let s = Server::start();
    let dir = TempDir::new("srt-filter");
    let (_, token) = s.create_token(
        "publish",
        json!({"label": "cam", "streams": [{"streamName": "live/cam[0-9]", "isRegex": true}]}),
    );
    let session = Bystander::start(&s, &dir, &token);

    // (a) ffmpeg with transtype=file, no token: refused (13, SRT_REJ_CONGESTION).
    let (out, took) = ffmpeg::run(
        &srt::publish_args(&srt::url(s.srt, "live/x", "&transtype=file"), Some(2)),
        Duration::from_secs(10),
    );
    assert!(!out.status.success(), "a file-mode caller was served");
    eprintln!("the file-mode caller gave up after {took:?}");

    // (b) Crafted datagrams, each sent a few times.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut crafted = Vec::new();
    for kind in [0u16, 6, 7, 8] {
        for words in [0u16, 1] {
            crafted.push(conclusion(&[
                hsreq(),
                ext(kind, words, b"b:a\0"),
                ext(5, 1, b"x\0\0\0"),
            ]));
        }
    }
    crafted.push(conclusion(&[hsreq(), ext(5, 0, b"live")]));
    // Hidden in the slack of an HSREQ block, where srt-protocol reads the next block.
    let mut slack = hsreq();
    slack[3] = 5;
    slack.extend_from_slice(&ext(6, 1, b"live"));
    crafted.push(conclusion(&[slack]));
    // SRT control packets of subtypes 5 to 8 without a body word.
    for subtype in 5u16..=8 {
        let mut p = vec![0xff, 0xff];
        p.extend_from_slice(&subtype.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
        p.push(0);
        crafted.push(p);
    }
    for _ in 0..3 {
        for p in &crafted {
            socket.send_to(p, s.srt).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    session.assert_undisturbed(&s, &dir);
    // Callers are still admitted.
    assert_eq!(
        call(s.srt, &format!("live/cam2,token={token}"), None),
        CallResult::Connected
    );
}

/// An SRT publish of `live/cam1` and an SRT viewer recording it, running while a test sends
/// bad callers or datagrams.
struct Bystander {
    publisher: Proc,
    viewer: Proc,
    frames_before: u64,
}

impl Bystander {
    fn start(s: &Server, dir: &TempDir, token: &str) -> Self {
        let publisher =
            start_srt_publisher(s, dir, "live/cam1", &format!("live/cam1,token={token}"));
        let viewer = record(
            dir,
            &srt::url(s.srt, "live/cam1,mode=request", ""),
            8,
            "v.ts",
        );
        assert!(wait_until(Duration::from_secs(5), || s.metric(
            "streamgate_admissions_total{protocol=\"srt\",action=\"play\"}"
        ) == 1.0));
        std::thread::sleep(Duration::from_millis(500));
        let frames_before = s.frames_in("live/cam1");
        Self {
            publisher,
            viewer,
            frames_before,
        }
    }

    /// The recording is whole, the publish went on without a panic anywhere, whatever else
    /// was admitted meanwhile.
    fn assert_still_served(self, s: &Server, dir: &TempDir) {
        let Self {
            mut publisher,
            viewer,
            frames_before,
        } = self;
        assert_recorded(viewer, dir, "v.ts", 7);
        assert!(publisher.running(), "publisher: {}", publisher.stderr());
        assert!(
            s.frames_in("live/cam1") > frames_before + 100,
            "the publisher's frames stopped arriving"
        );
        assert!(s.log_lines_with("srt engine").is_empty());
        assert_eq!(s.metric("streamgate_panics_total"), 0.0);
    }

    /// The recording is whole, the publish went on, and the listener never restarted.
    fn assert_undisturbed(self, s: &Server, dir: &TempDir) {
        let Self {
            mut publisher,
            viewer,
            frames_before,
        } = self;
        assert_recorded(viewer, dir, "v.ts", 7);
        assert!(publisher.running(), "publisher: {}", publisher.stderr());
        assert!(
            s.frames_in("live/cam1") > frames_before + 100,
            "the publisher's frames stopped arriving"
        );
        // One viewer and one publisher session in all (the recording's and the bystander's,
        // never restarted): the bad callers' were refused at their encryption, after the
        // admission.
        for action in ["play", "publish"] {
            let admitted = s.metric(&format!(
                "streamgate_admissions_total{{protocol=\"srt\",action=\"{action}\"}}"
            ));
            let refused = s.metric(&format!(
                "streamgate_sessions_ended_total{{protocol=\"srt\",action=\"{action}\",reason=\"protocol_error\"}}"
            ));
            let ended = s.metric_sum(&format!(
                "streamgate_sessions_ended_total{{protocol=\"srt\",action=\"{action}\""
            ));
            // The recording's viewer has ended by now, of its own accord.
            let own = if action == "play" { 1.0 } else { 0.0 };
            assert_eq!(
                (admitted - refused, ended - refused),
                (1.0, own),
                "{action}: {admitted} admitted, {refused} refused, {ended} ended"
            );
        }
        assert_eq!(
            s.metric("streamgate_sessions{protocol=\"srt\",action=\"publish\"}"),
            1.0
        );
        assert!(s.log_lines_with("srt engine").is_empty());
        assert_eq!(s.metric("streamgate_panics_total"), 0.0);
    }
}

/// An HSv5 conclusion handshake to the listener carrying extension `blocks`.
fn conclusion(blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0];
    p.extend_from_slice(&[0; 12]);
    p.extend_from_slice(&5u32.to_be_bytes()); // HSv5
    p.extend_from_slice(&[0, 0, 0, 5]); // no key; HSREQ | CONFIG
    p.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0x05, 0xdc, 0, 0, 0x20, 0]);
    p.extend_from_slice(&0xffff_ffffu32.to_be_bytes()); // conclusion
    p.extend_from_slice(&[0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 1, 0, 0, 127]);
    p.extend_from_slice(&[0; 12]);
    for b in blocks {
        p.extend_from_slice(b);
    }
    p
}

/// An extension block of `kind`, `words` long, its body `fill` repeated.
fn ext(kind: u16, words: u16, fill: &[u8; 4]) -> Vec<u8> {
    let mut b = kind.to_be_bytes().to_vec();
    b.extend_from_slice(&words.to_be_bytes());
    b.extend_from_slice(&fill.repeat(usize::from(words)));
    b
}

/// libsrt's HSREQ block: version 1.4.4, its usual flags, 120 ms latency each way.
fn hsreq() -> Vec<u8> {
    let mut b = vec![0, 1, 0, 3];
    b.extend_from_slice(&[0, 1, 4, 4, 0, 0, 0, 0xbf, 0, 120, 0, 120]);
    b
}

#[test]
fn server_wide_passphrase() {
    let pass = "server-wide-passphrase";
    let s = Server::start_with(Options::default().env("STREAMGATE_SRT_PASSPHRASE", pass));
    let (_, token) = s.create_token("publish", json!({"label": "cam"}));
    let (_, viewer) = s.create_token("subscribe", json!({"label": "v"}));
    let id = format!("live/cam1,token={token}");
    assert_eq!(call(s.srt, &id, None), CallResult::Rejected(11));
    assert_eq!(call(s.srt, &id, Some((pass, 0))), CallResult::Connected);
    // Viewers need it too.
    let view = format!("live/cam1,mode=request,token={viewer}");
    assert_eq!(call(s.srt, &view, None), CallResult::Rejected(11));
    assert_eq!(
        call(s.srt, &view, Some(("another-passphrase", 0))),
        CallResult::Rejected(10)
    );
    assert_eq!(call(s.srt, &view, Some((pass, 32))), CallResult::Connected);
}

#[test]
fn deleting_the_token_ends_the_srt_publish() {
    let s = Server::start();
    let dir = TempDir::new("srt-revoke");
    let (id, token) = s.create_token("publish", json!({"label": "cam"}));
    let mut publisher =
        start_srt_publisher(&s, &dir, "live/cam1", &format!("live/cam1,token={token}"));
    let mut viewer = record(
        &dir,
        &srt::url(s.srt, "live/cam1,mode=request", ""),
        60,
        "v.ts",
    );
    assert!(wait_until(Duration::from_secs(5), || s.metric(
        "streamgate_admissions_total{protocol=\"srt\",action=\"play\"}"
    ) == 1.0));
    std::thread::sleep(Duration::from_millis(500));

    let start = Instant::now();
    assert_eq!(
        s.api("DELETE", &format!("/api/publish_token/{id}"), None)
            .status,
        200
    );
    assert!(
        wait_until(Duration::from_secs(1), || {
            s.metric(
            "streamgate_sessions_ended_total{protocol=\"srt\",action=\"publish\",reason=\"token_deleted\"}"
        ) == 1.0
        }),
        "the publish did not end within 1 s of the delete"
    );
    let ended = start.elapsed();
    assert!(
        publisher.wait_exit(Duration::from_secs(5)).is_some(),
        "ffmpeg went on publishing"
    );
    assert!(
        viewer.wait_exit(Duration::from_secs(5)).is_some(),
        "the viewer did not see the stream end"
    );
    eprintln!("publish ended {ended:?} after the delete");
}

#[test]
fn bad_input_harms_no_other_session() {
    let s = Server::start();
    let dir = TempDir::new("srt-bad");
    let (_, token) = s.create_token("publish", json!({"label": "cam"}));
    let mut publisher =
        start_srt_publisher(&s, &dir, "live/cam1", &format!("live/cam1,token={token}"));
    let viewer = record(
        &dir,
        &srt::url(s.srt, "live/cam1,mode=request", ""),
        6,
        "v.ts",
    );
    assert!(wait_until(Duration::from_secs(5), || s.metric(
        "streamgate_admissions_total{protocol=\"srt\",action=\"play\"}"
    ) == 1.0));

    assert_eq!(call(s.srt, "#!::=,,", None), CallResult::Rejected(1400));
    assert_eq!(raw_handshake(s.srt, &[b'x'; 700]), Some(1400));
    // A streamid that is not UTF-8: a bad request.
    assert_eq!(raw_handshake(s.srt, &[0xff, 0xfe, 0x00, 0x41]), Some(1400));
    spray_garbage(s.srt, 2000, 7);
    // A viewer that asks for a retransmission range ending where it starts (srt-protocol would
    // count through every 32-bit number, holding up every SRT session), and other NAKs.
    let (raw, listener_id) =
        srt::connect_raw(s.srt, b"live/cam1,mode=request").expect("a raw viewer connects");
    for words in [
        &[0x8000_0007u32, 7][..],
        &[0x8000_0001, 9, 0x8101_0101, 0x0101_0101][..],
    ] {
        for _ in 0..3 {
            raw.send_to(&srt::control(3, 0, listener_id, words), s.srt)
                .unwrap();
        }
    }

    assert_recorded(viewer, &dir, "v.ts", 5);
    assert!(publisher.running(), "publisher: {}", publisher.stderr());
    assert!(s.log_lines_with("srt engine").is_empty());
    assert_eq!(
        call(s.srt, "live/cam1,mode=request", None),
        CallResult::Connected
    );
}

/// Every passphrase and key length a caller may use, against each configuration: a stream
/// without a passphrase, a publish token's passphrase, a server-wide passphrase. Callers with
/// the passphrase are admitted whatever their key length (16, 24 or 32 bytes, or none named);
/// the others are refused with the code libsrt reports, and a session already running goes on.
#[test]
fn every_passphrase_and_key_length_against_each_configuration() {
    let token_pass = "token-pass-0123456789";
    let server_pass = "server-pass-0123456789";
    let s = Server::start();
    let dir = TempDir::new("srt-keys");
    let (_, plain) = s.create_token(
        "publish",
        json!({"label": "cam", "streams": [{"streamName": "live/cam[0-9]", "isRegex": true}]}),
    );
    let (_, enc) = s.create_token(
        "publish",
        json!({"label": "enc", "streams": [{"streamName": "live/enc[0-9]", "isRegex": true}],
               "srtPassphrase": token_pass}),
    );
    let wide = Server::start_with(Options::default().env("STREAMGATE_SRT_PASSPHRASE", server_pass));
    let (_, wide_token) = wide.create_token("publish", json!({"label": "any"}));
    let session = Bystander::start(&s, &dir, &plain);

    let cases: [(&Server, String, Option<&str>); 3] = [
        (&s, format!("live/cam2,token={plain}"), None),
        (&s, format!("live/enc1,token={enc}"), Some(token_pass)),
        (
            &wide,
            format!("live/any,token={wide_token}"),
            Some(server_pass),
        ),
    ];
    for (server, streamid, pass) in &cases {
        let mut seen = Vec::new();
        for size in [0u16, 16, 24, 32] {
            let right = pass.map(|p| call(server.srt, streamid, Some((p, size))));
            let wrong = call(server.srt, streamid, Some(("not-the-passphrase", size)));
            seen.push((size, right.clone(), wrong.clone()));
            match pass {
                // Any passphrase to a stream without one: unsecure.
                None => assert_eq!(wrong, CallResult::Rejected(11), "{streamid} {size}"),
                Some(_) => {
                    assert_eq!(right, Some(CallResult::Connected), "{streamid} {size}");
                    assert_eq!(wrong, CallResult::Rejected(10), "{streamid} {size}");
                }
            }
        }
        let none = call(server.srt, streamid, None);
        let expected = if pass.is_some() {
            CallResult::Rejected(11)
        } else {
            CallResult::Connected
        };
        assert_eq!(none, expected, "{streamid} without a passphrase");
        eprintln!("{streamid}: {seen:?}, none: {none:?}");
    }
    // libsrt agrees: ffmpeg with the token's passphrase and AES-192 publishes.
    let (out, _) = ffmpeg::run(
        &srt::publish_args(
            &srt::url(
                s.srt,
                &format!("live/enc2,token={enc}"),
                &format!("&passphrase={token_pass}&pbkeylen=24"),
            ),
            Some(2),
        ),
        Duration::from_secs(15),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    session.assert_still_served(&s, &dir);
}

/// Floods of handshakes (inductions from many source ports, completed handshakes from several
/// addresses faster than they are decided), callers that vanish after their induction or right
/// after being accepted, and live-mode refusals: the server's memory stays bounded, its tables
/// empty again, and the session already running goes on.
#[test]
fn handshake_floods_and_vanishing_callers_leave_no_trace() {
    let s = Server::start();
    let dir = TempDir::new("srt-flood");
    let (_, token) = s.create_token(
        "publish",
        json!({"label": "cam", "streams": [{"streamName": "live/cam[0-9]", "isRegex": true}]}),
    );
    let session = Bystander::start(&s, &dir, &token);
    let pid = s.pid().unwrap();
    let rss_before = streamgate_tests::rss_kib(pid);
    let mut rss_peak = rss_before;

    // 60,000 inductions from 300 source ports: answered, and nothing is kept for them.
    let sockets: Vec<std::net::UdpSocket> = (0..300)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let induction = {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&[
            0, 0, 0, 4, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 5, 0xdc, 0, 0, 0x20, 0,
        ]);
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0]);
        p.extend_from_slice(&[127, 0, 0, 1]);
        p.extend_from_slice(&[0; 12]);
        p
    };
    for round in 0..200 {
        for socket in &sockets {
            let _ = socket.send_to(&induction, s.srt);
        }
        if round % 20 == 0 {
            std::thread::sleep(Duration::from_millis(5));
            rss_peak = rss_peak.max(streamgate_tests::rss_kib(pid));
        }
    }
    // Completed handshakes from eight addresses, 100 callers each, with a wrong token (its
    // decision waits for the failure delay): at most 64 per address wait at a time; the rest
    // are told the listener is overloaded (1402).
    let mut overloaded = 0;
    let mut refused = 0;
    let mut threads = Vec::new();
    for host in 2..10u8 {
        let addr = s.srt;
        threads.push(std::thread::spawn(move || {
            let callers: Vec<(std::net::UdpSocket, u32)> = (0..100u32)
                .filter_map(|i| {
                    let socket =
                        std::net::UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, host), 0))
                            .ok()?;
                    socket
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .ok()?;
                    let id = 0x4000_0000 | u32::from(host) << 16 | i;
                    let cookie = srt::cookie(&socket, addr, id)?;
                    Some((socket, cookie))
                })
                .zip(0..)
                .map(|((socket, cookie), i)| {
                    let id = 0x4000_0000 | u32::from(host) << 16 | i;
                    let packet = srt::conclusion(id, cookie, b"live/cam5,token=wrong", &[]);
                    socket.send_to(&packet, addr).unwrap();
                    (socket, id)
                })
                .collect();
            let mut codes = Vec::new();
            for (socket, _) in &callers {
                let mut buf = [0u8; 256];
                if let Ok((n, _)) = socket.recv_from(&mut buf) {
                    if n >= 40 {
                        let kind = u32::from_be_bytes([buf[36], buf[37], buf[38], buf[39]]);
                        codes.push(i64::from(kind) - 1000);
                    }
                }
            }
            codes
        }));
    }
    for t in threads {
        for code in t.join().unwrap() {
            match code {
                1402 => overloaded += 1,
                _ => refused += 1,
            }
        }
        rss_peak = rss_peak.max(streamgate_tests::rss_kib(pid));
    }
    eprintln!(
        "completed handshakes: {overloaded} told overloaded, {refused} answered otherwise so far"
    );
    assert!(overloaded > 0, "the per-address cap never applied");
    assert!(s.metric("streamgate_srt_overloaded_total") > 0.0);
    // Callers that vanish: after their induction (nothing kept), and after being accepted as
    // viewers (their connection ends when they stay silent).
    for i in 0..20u32 {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let id = 0x6000_0000 | i;
        let cookie = srt::cookie(&socket, s.srt, id).unwrap();
        if i % 2 == 0 {
            let packet = srt::conclusion(id, cookie, b"live/cam1,mode=request", &[]);
            socket.send_to(&packet, s.srt).unwrap();
        }
    }
    assert!(
        wait_until(Duration::from_secs(3), || s
            .metric("streamgate_srt_connections")
            >= 12.0),
        "the vanishing viewers were accepted"
    );
    // A file-transfer caller, a packet filter and a group: refused with their codes.
    assert_eq!(
        srt::raw_handshake_with(s.srt, b"live/cam3", &[(6, b"file")]),
        Some(13)
    );
    assert_eq!(
        srt::raw_handshake_with(s.srt, b"live/cam3", &[(7, b"fec,cols:10")]),
        Some(14)
    );
    assert_eq!(
        srt::raw_handshake_with(s.srt, b"live/cam3", &[(8, &[1, 0, 0, 0])]),
        Some(15)
    );
    // Everything waiting is decided, the vanished viewers time out: back to the bystander's
    // connections (its recording may have ended), one per live session, nothing pending.
    let settled = || {
        let connections = s.metric("streamgate_srt_connections");
        let sessions = s.metric_sum("streamgate_sessions{protocol=\"srt\"");
        connections <= 2.0
            && connections == sessions
            && s.metric("streamgate_srt_pending_handshakes") == 0.0
    };
    assert!(
        wait_until(Duration::from_secs(20), settled),
        "connections {} sessions {} pending {}",
        s.metric("streamgate_srt_connections"),
        s.metric_sum("streamgate_sessions{protocol=\"srt\""),
        s.metric("streamgate_srt_pending_handshakes")
    );
    let rss_after = streamgate_tests::rss_kib(pid);
    eprintln!("RSS: {rss_before} KiB before, {rss_peak} KiB at the peak, {rss_after} KiB after");
    assert!(
        rss_peak < rss_before + 64 * 1024,
        "memory grew by {} KiB under the flood",
        rss_peak - rss_before
    );
    assert!(s.metric("streamgate_srt_bad_cookies_total") == 0.0);
    assert_eq!(s.metric("streamgate_srt_connection_panics_total"), 0.0);
    session.assert_still_served(&s, &dir);
}

/// `srt-live-transmit` (libsrt's own tool) publishes what ffmpeg sends it over UDP, and plays
/// the stream back into a file.
#[test]
fn srt_live_transmit_publishes_and_plays() {
    let s = Server::start();
    let dir = TempDir::new("srt-slt");
    let (_, token) = s.create_token("publish", json!({"label": "slt"}));
    let udp = streamgate_tests::free_udp_port();
    let streamid = format!("live/slt,token={token}");
    let publish_log = std::fs::File::create(dir.path().join("slt-publish.log")).unwrap();
    let mut publisher = std::process::Command::new("srt-live-transmit")
        .args([
            &format!("udp://127.0.0.1:{udp}"),
            &format!("srt://{}?streamid={streamid}", s.srt),
            "-q",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(publish_log)
        .spawn()
        .expect("srt-live-transmit (srt-tools)");
    let source = Proc::ffmpeg(
        &ffmpeg::publish_args(&format!("udp://127.0.0.1:{udp}?pkt_size=1316"), None)
            .into_iter()
            .map(|a| if a == "flv" { "mpegts".to_owned() } else { a })
            .collect::<Vec<_>>(),
        &dir.path().join("source.log"),
    );
    assert!(
        wait_until(Duration::from_secs(15), || s.frames_in("live/slt") > 50),
        "srt-live-transmit did not publish: {}",
        source.stderr()
    );
    // It writes what it plays to standard output (`file://con`).
    let out = dir.path().join("slt.ts");
    let mut viewer = std::process::Command::new("srt-live-transmit")
        .args([
            &format!("srt://{}?streamid=live/slt,mode=request", s.srt),
            "file://con",
            "-q",
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let _ = viewer.kill();
    let _ = viewer.wait();
    let _ = publisher.kill();
    let _ = publisher.wait();
    drop(source);
    let p = probe(&out);
    assert_eq!(p.video_codec.as_deref(), Some("h264"), "{p:?}");
    assert_eq!(p.audio_codec.as_deref(), Some("aac"), "{p:?}");
    assert!(p.video_packets > 50 && p.audio_packets > 80, "{p:?}");
}

/// A viewer 300 ms away (a delaying relay in the test) gets the whole of a 2.5 Mbit/s stream,
/// as a viewer next to the server does: the connection's send window grows past the 28
/// packets it starts with, which carry about 1 Mbit/s over such a round trip.
#[test]
fn a_far_viewer_gets_the_whole_stream() {
    let s = Server::start();
    let dir = TempDir::new("srt-far");
    let (_, token) = s.create_token("publish", json!({"label": "far"}));
    // x264 at a constant quantizer: about 2.4 Mbit/s of this picture, whatever its content.
    let mut args = ffmpeg::publish_args(&rtmp_url(&s, "live/far", Some(&token)), None);
    for a in &mut args {
        *a = a.replace("320x240", "640x360");
    }
    let at = args.iter().position(|a| a == "-b:v").unwrap();
    args.splice(at..at + 2, ["-qp".to_owned(), "15".to_owned()]);
    let _publisher = start(&s, &dir, "live/far", &args);
    let relay = srt::Relay::delayed(s.srt, Duration::from_millis(150));
    // Endless recordings; what each has written is compared over the same 8 s.
    let viewer = |addr, extra: &str, name: &str| {
        let out = dir.path().join(name);
        let url = srt::url(addr, "live/far,mode=request", extra);
        let mut args = srt::record_args(&url, 3600, &out);
        let t = args.iter().position(|a| a == "-t").unwrap();
        args.drain(t..t + 2);
        (
            Proc::ffmpeg(&args, &dir.path().join(format!("{name}.log"))),
            out,
        )
    };
    let (_near, near) = viewer(s.srt, "", "near.ts");
    let (_far, far) = viewer(relay.addr, "&latency=1000000", "far.ts");
    let size = |f: &std::path::Path| std::fs::metadata(f).map_or(0, |m| m.len());
    // Once both write (ffmpeg has probed the input and written what it read meanwhile), and
    // a little more.
    assert!(
        wait_until(Duration::from_secs(30), || size(&near) > 0
            && size(&far) > 0),
        "the recordings did not start"
    );
    std::thread::sleep(Duration::from_secs(2));
    let start = (size(&near), size(&far));
    std::thread::sleep(Duration::from_secs(8));
    let (near_bytes, far_bytes) = (size(&near) - start.0, size(&far) - start.1);
    // Bytes over 8 s: kbit/s.
    let kbps = |b: u64| b / 1000;
    println!(
        "near viewer {} kbit/s, far viewer {} kbit/s",
        kbps(near_bytes),
        kbps(far_bytes)
    );
    assert!(
        kbps(near_bytes) > 1500,
        "the stream is not as fast as meant: {} kbit/s",
        kbps(near_bytes)
    );
    assert!(
        far_bytes * 10 >= near_bytes * 9,
        "the far viewer got {} kbit/s, the near one {} kbit/s",
        kbps(far_bytes),
        kbps(near_bytes)
    );
}
