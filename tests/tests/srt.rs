//! SRT publish and play through the real binary with stock ffmpeg (libsrt) and an srt-tokio
//! caller, every request decided by the token rules before the handshake completes, and
//! media crossing between SRT and RTMP both ways.

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
    assert!(s.log_lines_with("srt listener").is_empty());
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

/// A libsrt caller with `transtype=file` (its handshake carries a congestion block) and
/// crafted datagrams that srt-protocol 0.4.4 panics on never reach it: the SRT sessions already
/// running go on undisturbed, the listener is never restarted, and callers are still admitted.
#[test]
fn datagrams_that_panic_srt_protocol_end_no_session() {
    let s = Server::start();
    let dir = TempDir::new("srt-filter");
    let (_, token) = s.create_token(
        "publish",
        json!({"label": "cam", "streams": [{"streamName": "live/cam[0-9]", "isRegex": true}]}),
    );
    let session = Bystander::start(&s, &dir, &token);

    // (a) ffmpeg with transtype=file, no token: it gets no answer and gives up.
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
        assert!(s.log_lines_with("srt listener").is_empty());
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
    // A streamid that is not UTF-8 fails srt-protocol's packet parser: dropped unanswered.
    assert_ne!(
        raw_handshake(s.srt, &[0xff, 0xfe, 0x00, 0x41]),
        Some(0xffff_ffff)
    );
    spray_garbage(s.srt, 2000, 7);

    assert_recorded(viewer, &dir, "v.ts", 5);
    assert!(publisher.running(), "publisher: {}", publisher.stderr());
    assert!(s.log_lines_with("srt listener restarted").is_empty());
    assert_eq!(
        call(s.srt, "live/cam1,mode=request", None),
        CallResult::Connected
    );
}
