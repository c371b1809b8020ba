//! HLS, LL-HLS and DASH against the real binary: ffmpeg reading both, the playlists as an
//! LL-HLS player reads them (parts, blocking reloads, preload hints, caching headers), the
//! token rules on HTTP (one-time tokens kept by the session, revocation within a second,
//! `subscribeRequiresAuth`), hls.js in Chromium on the bundled and Ant Media-shaped pages, the
//! fallback from WebRTC, and the latency measured from stamped frames.

use std::time::{Duration, Instant};

use serde_json::json;
use streamgate_tests::browser::{wait_status, Browser, Tab, VIDEO_FRAMES};
use streamgate_tests::ffmpeg::{self, Proc};
use streamgate_tests::hls::{
    first_box, get, get_with, master_path, median, mpd_path, resolve, tag_uri, uris, AUDIO_ENERGY,
    LATENCY_PROBE, LATENCY_SAMPLES, PLAY_WAIT,
};
use streamgate_tests::{srt, wait_until, workspace_binary, Options, Server, TempDir};

/// Sessions of `protocol` playing now, from `/metrics`.
fn sessions(s: &Server, protocol: &str) -> u64 {
    let prefix = format!("streamgate_sessions{{protocol=\"{protocol}\",action=\"play\"}} ");
    s.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn publish_token(s: &Server, stream: &str, extra: serde_json::Value) -> String {
    let mut body = json!({"label": "hls", "streams": [{"streamName": stream}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    s.create_token("publish", body).1
}

/// ffmpeg reading `url` for `seconds`, counting decoded frames per stream (`framecrc`).
fn ffmpeg_read(url: &str, seconds: u32, dir: &TempDir, tag: &str) -> Proc {
    let args: Vec<String> = [
        "-hide_banner",
        "-loglevel",
        "error",
        "-i",
        url,
        "-t",
        &seconds.to_string(),
        "-f",
        "framecrc",
        &dir.path().join(format!("{tag}.crc")).display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    Proc::ffmpeg(&args, &dir.path().join(format!("{tag}.log")))
}

/// Frames per stream index in a `framecrc` file.
fn frames(dir: &TempDir, tag: &str) -> (usize, usize) {
    let text = std::fs::read_to_string(dir.path().join(format!("{tag}.crc"))).unwrap_or_default();
    let count = |index: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(',').next().map(str::trim) == Some(index))
            .count()
    };
    (count("0"), count("1"))
}

/// Waits for `p` to finish, and checks it printed no error and read `seconds` of both tracks
/// (25 pictures and ~43 sound frames a second).
fn assert_read(p: &mut Proc, dir: &TempDir, tag: &str, seconds: usize) {
    let status = p.wait_exit(Duration::from_secs(seconds as u64 + 30));
    let err = p.stderr();
    assert!(
        status.is_some_and(|s| s.success()),
        "{tag}: ffmpeg failed: {err}"
    );
    assert!(
        err.trim().is_empty(),
        "{tag}: ffmpeg reported errors: {err}"
    );
    let (video, audio) = frames(dir, tag);
    assert!(
        video >= seconds * 25 * 9 / 10 && audio >= seconds * 43 * 9 / 10,
        "{tag}: {video} pictures and {audio} sound frames in {seconds} s"
    );
}

#[test]
fn ffmpeg_reads_hls_and_dash_and_sessions_follow_their_token() {
    let s = Server::start();
    let dir = TempDir::new("hls-ffmpeg");
    let stream = "live/hls1";
    let token = publish_token(&s, stream, json!({"subscribeRequiresAuth": true}));
    let (viewer_id, viewer) = s.create_token(
        "subscribe",
        json!({"label": "hls viewer", "streams": [{"streamName": stream}]}),
    );
    let _publisher = s.start_publisher(
        &dir,
        stream,
        &ffmpeg::publish_args(&s.rtmp_url(stream, Some(&token)), None),
    );

    // Without a token, or with an unknown one: 403 before anything is served.
    assert_eq!(get(&s, &master_path(stream, None)).status, 403);
    assert_eq!(get(&s, &mpd_path(stream, Some("nope"))).status, 403);
    assert_eq!(get(&s, "/live/streams/hls1/media.m3u8").status, 403);
    // A stream that is not live: 404, and no token use spent on it.
    assert_eq!(
        get(&s, &master_path("live/none", Some(&viewer))).status,
        404
    );

    // The master playlist opens the session; the media playlist carries LL-HLS.
    let master = get(&s, &master_path(stream, Some(&viewer)));
    assert_eq!(master.status, 200, "{}", master.body);
    assert_eq!(
        master.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(master.header("cache-control"), Some("private, no-store"));
    assert!(
        master.body.contains("CODECS=\"avc1.42c0") && master.body.contains("mp4a.40.2"),
        "{}",
        master.body
    );
    assert!(
        master.body.contains("RESOLUTION=320x240"),
        "{}",
        master.body
    );
    let media_path = resolve(&master_path(stream, None), &uris(&master.body)[0]);
    let media = get(&s, &media_path);
    assert_eq!(media.status, 200);
    assert_eq!(media.header("cache-control"), Some("max-age=1"));
    for tag in [
        "#EXT-X-TARGETDURATION:",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES",
        "#EXT-X-PART-INF:PART-TARGET=0.334",
        "#EXT-X-MAP:URI=\"init-1.mp4?sid=",
        "#EXT-X-PROGRAM-DATE-TIME:",
        "#EXT-X-PART:DURATION=",
        "INDEPENDENT=YES",
        "#EXTINF:",
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-",
    ] {
        assert!(media.body.contains(tag), "{tag} in {}", media.body);
    }
    // Revalidation: the same playlist's ETag answers 304.
    let etag = media.header("etag").expect("an ETag").to_owned();
    let again = get_with(&s, &media_path, &[("If-None-Match", &etag)]);
    assert!(
        again.status == 304 || again.status == 200,
        "{}",
        again.status
    );

    // The preload hint's part, asked for before it exists, comes when it does; so does a
    // blocking reload for it.
    let hint = media
        .body
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT"))
        .and_then(tag_uri)
        .expect("a preload hint");
    let (msn, part) = hint
        .trim_start_matches("part-")
        .split(".m4s")
        .next()
        .and_then(|p| p.split_once('.'))
        .map(|(m, p)| (m.parse::<u64>().unwrap(), p.parse::<u64>().unwrap()))
        .expect("part-M.N.m4s");
    let asked = Instant::now();
    let blocked = get(&s, &format!("{media_path}&_HLS_msn={msn}&_HLS_part={part}"));
    assert_eq!(blocked.status, 200);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "the blocking reload took {:?}",
        asked.elapsed()
    );
    assert!(
        blocked.body.contains(&format!("part-{msn}.{part}.m4s")),
        "the reload holds the part asked for: {}",
        blocked.body
    );
    let part_bytes = get(&s, &resolve(&media_path, &hint));
    assert_eq!(part_bytes.status, 200);
    assert_eq!(first_box(&part_bytes.bytes), "moof");
    assert_eq!(
        part_bytes.header("cache-control"),
        Some("public, max-age=86400, immutable")
    );
    let far = get(&s, &format!("{media_path}&_HLS_msn={}", msn + 50));
    assert_eq!(far.status, 400, "a reload too far ahead");

    // Initialization segment and segments.
    let init = get(
        &s,
        &resolve(
            &media_path,
            &tag_uri(
                media
                    .body
                    .lines()
                    .find(|l| l.starts_with("#EXT-X-MAP"))
                    .unwrap(),
            )
            .unwrap(),
        ),
    );
    assert_eq!(init.status, 200);
    assert_eq!(first_box(&init.bytes), "ftyp");
    let segment_uri = uris(&media.body)[0].clone();
    let segment = get(&s, &resolve(&media_path, &segment_uri));
    assert_eq!(segment.status, 200);
    assert_eq!(segment.header("content-type"), Some("video/mp4"));
    assert_eq!(
        segment.header("content-length").map(str::to_owned),
        Some(segment.bytes.len().to_string())
    );
    assert_eq!(first_box(&segment.bytes), "moof");
    let etag = segment.header("etag").unwrap().to_owned();
    let cached = get_with(
        &s,
        &resolve(&media_path, &segment_uri),
        &[("If-None-Match", &etag)],
    );
    assert_eq!(cached.status, 304);

    // A session id is bound to its stream and must be the server's.
    let sid = media_path.split("sid=").nth(1).unwrap().to_owned();
    assert_eq!(
        get(&s, &format!("/live/streams/other/media.m3u8?sid={sid}")).status,
        403
    );
    let mut forged = sid.clone();
    forged.replace_range(0..1, if sid.starts_with('0') { "1" } else { "0" });
    assert_eq!(get(&s, &media_path.replace(&sid, &forged)).status, 403);

    // ffmpeg reads the HLS (with Mediastream's `access_token`) and the DASH for 10 s, while
    // crafted requests arrive: they are refused, and the readers see nothing of them.
    let hls_url = format!(
        "http://{}/live/streams/hls1.m3u8?access_token={viewer}",
        s.http
    );
    let dash_url = format!("http://{}{}", s.http, mpd_path(stream, Some(&viewer)));
    let mut hls_reader = ffmpeg_read(&hls_url, 10, &dir, "hls");
    let mut dash_reader = ffmpeg_read(&dash_url, 10, &dir, "dash");
    let hostile = [
        format!("{media_path}&_HLS_msn=18446744073709551615"),
        format!("{media_path}&_HLS_part=3"),
        format!("{media_path}&_HLS_msn=x"),
        "/live/streams/hls1/seg-99999999999999999999.m4s?sid=00".to_owned(),
        format!("/live/streams/hls1/part-1.99999999.m4s?sid={sid}"),
        format!("/live/streams/hls1/init-0-video.mp4?sid={sid}"),
        format!("/live/streams/hls1/seg-0-x.m4s?sid={sid}"),
        "/live/streams/%00.m3u8".to_owned(),
        format!("/live/streams/{}.m3u8", "a".repeat(4000)),
        "/live/streams/hls1.m3u8?token=&token=".to_owned(),
    ];
    for path in hostile.iter().cycle().take(60) {
        let r = get(&s, path);
        assert!(
            (400..500).contains(&r.status),
            "{path}: {} {}",
            r.status,
            r.body
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || sessions(&s, "hls") >= 2
            && sessions(&s, "dash") >= 1),
        "HLS and DASH sessions count as viewers: {}",
        s.metrics_text()
            .lines()
            .filter(|l| l.starts_with("streamgate_sessions"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_read(&mut hls_reader, &dir, "hls", 10);
    assert_read(&mut dash_reader, &dir, "dash", 10);

    // CORS follows the token's allowedOrigins: a page on an allowed origin reads the answers
    // (and when its token expires); one on another origin is refused, and its script cannot
    // read a session's answers.
    let (_, page_token) = s.create_token(
        "subscribe",
        json!({"label": "page", "streams": [{"streamName": stream}],
               "allowedOrigins": ["player.example"], "expires": 600}),
    );
    let good = "https://player.example";
    let evil = "https://evil.example";
    let refused = get_with(
        &s,
        &master_path(stream, Some(&page_token)),
        &[("Origin", evil)],
    );
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("access-control-allow-origin"), None);
    let page = get_with(
        &s,
        &master_path(stream, Some(&page_token)),
        &[("Origin", good)],
    );
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("access-control-allow-origin"), Some(good));
    assert!(page
        .header("token-expires")
        .is_some_and(|t| t.ends_with('Z')));
    assert!(page
        .header("access-control-expose-headers")
        .is_some_and(|h| h.contains("Token-Expires")));
    let page_media = resolve(&master_path(stream, None), &uris(&page.body)[0]);
    let from_page = get_with(&s, &page_media, &[("Origin", good)]);
    assert_eq!(from_page.header("access-control-allow-origin"), Some(good));
    let from_elsewhere = get_with(&s, &page_media, &[("Origin", evil)]);
    assert_eq!(from_elsewhere.header("access-control-allow-origin"), None);

    // Deleting the token ends its sessions: the next request gets 403, within a second.
    let live = get(&s, &media_path);
    assert_eq!(live.status, 200);
    let deleted = s.api("DELETE", &format!("/api/subscribe_token/{viewer_id}"), None);
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let at = Instant::now();
    assert!(
        wait_until(Duration::from_secs(1), || get(&s, &media_path).status
            == 403),
        "the deleted token's session still plays"
    );
    eprintln!(
        "revoked session refused {:?} after the DELETE",
        at.elapsed()
    );
    assert_eq!(get(&s, &master_path(stream, Some(&viewer))).status, 403);
    assert!(
        wait_until(Duration::from_secs(2), || sessions(&s, "hls") == 1),
        "the revoked sessions were freed (the page's, of another token, plays on)"
    );
    assert_eq!(get_with(&s, &page_media, &[("Origin", good)]).status, 200);
}

#[test]
fn a_one_time_token_plays_for_20_s_while_a_second_session_gets_403() {
    let s =
        Server::start_with(Options::default().env("STREAMGATE_AUTH_REQUIRE_PLAY_TOKEN", "true"));
    let dir = TempDir::new("hls-once");
    // Ant Media's older token route, as its backends call it: a one-time publish token that
    // publishes over RTMP, and a one-time play token.
    let expire = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let legacy = |kind: &str| {
        let r = s.api(
            "GET",
            &format!("/LiveApp/rest/broadcast/getToken?id=once&expireDate={expire}&type={kind}"),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["streamId"], "once");
        assert_eq!(v["type"], kind);
        v["tokenId"].as_str().unwrap().to_owned()
    };
    let publish = legacy("publish");
    let play = legacy("play");
    let stream = "LiveApp/once";
    let _publisher = s.start_publisher(
        &dir,
        stream,
        &ffmpeg::publish_args(&s.rtmp_url(stream, Some(&publish)), None),
    );
    // Without a token: 403.
    assert_eq!(get(&s, &master_path(stream, None)).status, 403);
    // The one-time token opens one session, which plays for 20 s.
    let url = format!("http://{}{}", s.http, master_path(stream, Some(&play)));
    let mut reader = ffmpeg_read(&url, 20, &dir, "once");
    assert!(
        wait_until(Duration::from_secs(10), || sessions(&s, "hls") == 1),
        "the reader's session"
    );
    // A second playback with the same token, meanwhile: 403, once and again.
    for _ in 0..3 {
        assert_eq!(get(&s, &master_path(stream, Some(&play))).status, 403);
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_read(&mut reader, &dir, "once", 20);
}

/// Opens `url` and waits until hls.js plays it with picture and sound.
fn assert_hls_plays(b: &mut Browser, url: &str, what: &str) -> Tab {
    let tab = b.open(url);
    let playing = b.wait_for(&tab, "window.streamgate.state.via", PLAY_WAIT, |v| {
        v.as_str() == Some("hls")
    });
    if let Err(v) = playing {
        panic!(
            "{what}: not playing over HLS ({v}); status {}, errors {}",
            b.eval(&tab, "document.getElementById('status').textContent"),
            b.eval(&tab, "JSON.stringify(window.streamgate.state.errors)")
        );
    }
    let frames = b.wait_for(&tab, VIDEO_FRAMES, Duration::from_secs(20), |v| {
        v.as_u64().is_some_and(|n| n > 30)
    });
    assert!(frames.is_ok(), "{what}: video frames {frames:?}");
    let sound = b.wait_for(&tab, AUDIO_ENERGY, Duration::from_secs(15), |v| {
        // Chromium's fake microphone beeps briefly once a second, so its sum of block energies
        // grows slowly; ffmpeg's sine grows it ~0.008 a block. Silence stays at zero.
        v[0].as_u64().is_some_and(|n| n > 20) && v[1].as_f64().is_some_and(|e| e > 0.002)
    });
    assert!(sound.is_ok(), "{what}: sound [blocks, energy] {sound:?}");
    tab
}

#[test]
fn hls_js_plays_rtmp_srt_and_browser_publishes_on_the_seed_pages() {
    let s = Server::start_with(Options::default().env("STREAMGATE_WEBRTC_ICE_IPS", "127.0.0.1"));
    let dir = TempDir::new("hls-browser");
    let mut b = Browser::launch();

    // RTMP, from ffmpeg; played on the bundled page with a subscribe token that expires, whose
    // end the page shows.
    let rtmp_stream = "live/hlsrtmp";
    let token = publish_token(&s, rtmp_stream, json!({"subscribeRequiresAuth": true}));
    let (_, viewer) = s.create_token(
        "subscribe",
        json!({"label": "page", "streams": [{"streamName": rtmp_stream}], "expires": 3600}),
    );
    let _rtmp = s.start_publisher(
        &dir,
        rtmp_stream,
        &ffmpeg::publish_args(&s.rtmp_url(rtmp_stream, Some(&token)), None),
    );
    let tab = assert_hls_plays(
        &mut b,
        &format!(
            "http://{}/play.html?id={rtmp_stream}&playOrder=hls&token={viewer}",
            s.http
        ),
        "RTMP publish",
    );
    let expiry = b.eval(&tab, "document.getElementById('expiry').textContent");
    assert!(
        expiry
            .as_str()
            .is_some_and(|t| t.starts_with("Token valid until")),
        "{expiry}"
    );
    b.close(&tab);

    // SRT, from ffmpeg; Ant Media's play page under the application.
    let srt_stream = "LiveApp/hlssrt";
    let token = publish_token(&s, srt_stream, json!({}));
    let _srt = s.start_publisher(
        &dir,
        srt_stream,
        &srt::publish_args(
            &srt::url(s.srt, &format!("{srt_stream},token={token}"), ""),
            None,
        ),
    );
    let tab = assert_hls_plays(
        &mut b,
        &format!(
            "http://{}/LiveApp/play.html?id=hlssrt&playOrder=hls",
            s.http
        ),
        "SRT publish",
    );
    b.close(&tab);

    // A browser publisher on Ant Media's publish page (`/{App}?id=`): its Opus reaches HLS as
    // AAC.
    let web_stream = "LiveApp/hlsweb";
    let token = publish_token(&s, web_stream, json!({}));
    let publisher = b.open(&format!(
        "http://{}/LiveApp?id=hlsweb&token={token}&codec=h264",
        s.http
    ));
    wait_status(&mut b, &publisher, "publishing", 20);
    let tab = assert_hls_plays(
        &mut b,
        &format!(
            "http://{}/LiveApp/play.html?id=hlsweb&playOrder=hls",
            s.http
        ),
        "browser publish",
    );
    b.close(&tab);
    b.close(&publisher);
}

#[test]
fn the_play_page_falls_back_from_webrtc_to_hls() {
    // Browser viewers of B-frames are refused here, so WebRTC fails and HLS (which carries
    // B-frames) plays.
    let s = Server::start_with(
        Options::default()
            .env("STREAMGATE_WEBRTC_ICE_IPS", "127.0.0.1")
            .env("STREAMGATE_WEBRTC_BFRAMES", "refuse"),
    );
    let dir = TempDir::new("hls-fallback");
    let stream = "live/hlsbf";
    let token = publish_token(&s, stream, json!({}));
    let _publisher = s.start_publisher(
        &dir,
        stream,
        &ffmpeg::with_h264_profile(
            ffmpeg::publish_args(&s.rtmp_url(stream, Some(&token)), None),
            "high",
            2,
        ),
    );
    let mut b = Browser::launch();
    let tab = assert_hls_plays(
        &mut b,
        &format!(
            "http://{}/play.html?id={stream}&playOrder=webrtc,hls",
            s.http
        ),
        "fallback",
    );
    let errors = b.eval(&tab, "JSON.stringify(window.streamgate.state.errors)");
    assert!(
        errors
            .as_str()
            .is_some_and(|e| e.contains("bframes_not_supported")),
        "WebRTC was tried first: {errors}"
    );
}

/// The median glass-to-glass latency hls.js shows on `tab`, from `streamgate-load`'s stamps.
fn latency_ms(b: &mut Browser, tab: &Tab, what: &str) -> f64 {
    let installed = b.wait_for(tab, LATENCY_PROBE, PLAY_WAIT, |v| v.as_bool() == Some(true));
    assert!(installed.is_ok(), "{what}: hls.js never started");
    // Let playback settle at its target, then sample for 10 s.
    std::thread::sleep(Duration::from_secs(8));
    b.eval(tab, "window.__lat.samples = []; true");
    std::thread::sleep(Duration::from_secs(10));
    let samples = b.eval(tab, LATENCY_SAMPLES);
    let mut ms: Vec<f64> = samples
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default();
    assert!(ms.len() > 20, "{what}: latency samples {samples}");
    let m = median(&mut ms);
    eprintln!(
        "{what}: latency median {m:.0} ms, min {:.0}, max {:.0} ({} samples)",
        ms.first().copied().unwrap_or(0.0),
        ms.last().copied().unwrap_or(0.0),
        ms.len()
    );
    m
}

#[test]
fn latency_from_stamped_frames_ll_hls_under_2_s_and_hls_under_6_s() {
    // One-second segments: standard HLS players start three target durations from the live
    // edge, so the segment length sets their latency.
    let s = Server::start_with(Options::default().env("STREAMGATE_HLS_SEGMENT_MS", "1000"));
    let stream = "live/hlslat";
    let token = publish_token(&s, stream, json!({}));
    let mut load = std::process::Command::new(workspace_binary("streamgate-load"))
        .args([
            "--api",
            &format!("http://{}", s.http),
            "--publish-token",
            &token,
            "--rtmp",
            &s.rtmp.to_string(),
            "--stream",
            stream,
            "--viewers",
            "0",
            "--ramp-up",
            "0",
            "--hold",
            "90",
            "--bitrate",
            "800",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("streamgate-load");
    assert!(
        wait_until(Duration::from_secs(15), || s.frames_in(stream) > 0),
        "the stamped stream did not go live"
    );
    let mut b = Browser::launch();
    let ll = b.open(&format!(
        "http://{}/play.html?id={stream}&playOrder=hls",
        s.http
    ));
    let ll_ms = latency_ms(&mut b, &ll, "LL-HLS");
    let low_latency_mode = b.eval(&ll, "window.streamgate.state.hls.config.lowLatencyMode");
    assert_eq!(low_latency_mode, true);
    b.close(&ll);
    let standard = b.open(&format!(
        "http://{}/play.html?id={stream}&playOrder=hls&lowLatency=false",
        s.http
    ));
    let standard_ms = latency_ms(&mut b, &standard, "HLS");
    b.close(&standard);
    let _ = load.kill();
    let _ = load.wait();
    assert!(ll_ms < 2000.0, "LL-HLS latency {ll_ms:.0} ms");
    assert!(standard_ms < 6000.0, "HLS latency {standard_ms:.0} ms");
    assert!(
        ll_ms < standard_ms,
        "LL-HLS {ll_ms:.0} ms, HLS {standard_ms:.0} ms"
    );
}
