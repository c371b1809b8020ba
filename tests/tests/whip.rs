//! WHIP and WHEP against the real binary: unmodified clients from npm (`whip-whep`) in
//! headless Chromium, the exact request OBS sends from a raw HTTP client, the refusals, the
//! resource's `PATCH` and `DELETE`, and revocation.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use streamgate_tests::browser::{
    assert_plays, wait_status, Browser, StaticServer, Tab, VIDEO_FRAMES,
};
use streamgate_tests::ffmpeg::{self, Proc};
use streamgate_tests::http::{request, HttpResponse};
use streamgate_tests::{wait_until, Options, Server, TempDir};

fn server() -> Server {
    Server::start_with(Options::default().env("STREAMGATE_WEBRTC_ICE_IPS", "127.0.0.1"))
}

/// The example page's folder, with the npm clients installed.
fn example() -> StaticServer {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/whip");
    assert!(
        root.join("node_modules/whip-whep/whip.js").exists(),
        "run `npm ci --prefix examples/whip` first (scripts/test does)"
    );
    StaticServer::serve(&root)
}

/// The example page publishing (`publish`) or playing (`play`) through `endpoint`.
fn page(pages: &StaticServer, mode: &str, endpoint: &str, token: Option<&str>) -> String {
    let mut url = format!(
        "http://{}/index.html?mode={mode}&url={endpoint}",
        pages.addr
    );
    if let Some(t) = token {
        url.push_str(&format!("&token={t}"));
    }
    url
}

/// Sessions of `protocol` and `action` open now, from `/metrics`.
fn sessions(s: &Server, protocol: &str, action: &str) -> u64 {
    let prefix = format!("streamgate_sessions{{protocol=\"{protocol}\",action=\"{action}\"}} ");
    s.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn publish_token(s: &Server, stream: &str, extra: serde_json::Value) -> (i64, String) {
    let mut body = json!({"label": "whip", "streams": [{"streamName": stream}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    s.create_token("publish", body)
}

/// Waits until the page says it publishes or plays, or fails with its errors.
fn wait_connected(b: &mut Browser, tab: &Tab, needle: &str, what: &str) {
    let status = "document.getElementById('status').textContent";
    let ok = b.wait_for(tab, status, Duration::from_secs(20), |v| {
        v.as_str().is_some_and(|t| t.contains(needle))
    });
    if let Err(v) = ok {
        panic!(
            "{what}: status {v}; errors {}",
            b.eval(tab, "window.errors")
        );
    }
}

#[test]
fn the_npm_clients_publish_and_play_with_tokens_and_rtmp_viewers_get_h264_and_aac() {
    let s = server();
    let pages = example();
    let mut b = Browser::launch();
    let dir = TempDir::new("whip-npm");
    let stream = "live/whip1";
    let (_, token) = publish_token(&s, stream, json!({"subscribeRequiresAuth": true}));
    let (_, viewer_token) = s.create_token(
        "subscribe",
        json!({"label": "whep viewer", "streams": [{"streamName": stream}]}),
    );
    let whip = format!("http://{}/{stream}/whip", s.http);
    let whep = format!("http://{}/{stream}/whep", s.http);
    let publisher = b.open(&page(&pages, "publish", &whip, Some(&token)));
    wait_connected(&mut b, &publisher, "publishing", "WHIP publish");
    assert_eq!(sessions(&s, "whip", "publish"), 1);

    // A WHEP viewer with its subscribe token: picture and sound.
    let viewer = b.open(&page(&pages, "play", &whep, Some(&viewer_token)));
    wait_connected(&mut b, &viewer, "playing", "WHEP play");
    assert_plays(
        &mut b,
        &viewer,
        "window.pc",
        "WHEP viewer of a WHIP publish",
    );
    assert_eq!(sessions(&s, "whep", "play"), 1);

    // An ICE restart from the client (PATCH with new credentials): it goes on playing.
    let restarted = b.eval(
        &viewer,
        "window.client.restart().then(() => 'ok', e => String(e))",
    );
    assert_eq!(restarted, "ok", "the restart's PATCH was answered");
    let before = b.eval(&viewer, VIDEO_FRAMES).as_u64().unwrap_or(0);
    let grew = b.wait_for(&viewer, VIDEO_FRAMES, Duration::from_secs(10), |v| {
        v.as_u64().is_some_and(|n| n > before + 30)
    });
    assert!(grew.is_ok(), "frames after an ICE restart: {grew:?}");
    assert!(s.log_lines_with("ICE restart refused").is_empty());

    // An RTMP viewer of the WHIP publish gets H.264 and AAC (the browser's Opus, derived).
    let flv = dir.path().join("rtmp.flv");
    let (out, _) = ffmpeg::run(
        &ffmpeg::record_args(&s.rtmp_url(stream, Some(&viewer_token)), 4, &flv),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = ffmpeg::probe(&flv);
    assert_eq!(p.video_codec.as_deref(), Some("h264"), "{p:?}");
    assert_eq!(p.audio_codec.as_deref(), Some("aac"), "{p:?}");
    assert!(p.audio_packets > 50 && p.video_packets > 30, "{p:?}");

    // The page's stop: DELETE on the resource ends the publish, and so its viewer.
    b.eval(&publisher, "window.stop()");
    assert!(
        wait_until(Duration::from_secs(5), || sessions(&s, "whip", "publish")
            == 0),
        "DELETE ended the WHIP session"
    );
    assert!(
        wait_until(Duration::from_secs(5), || sessions(&s, "whep", "play") == 0),
        "its WHEP viewer ended with it"
    );
}

#[test]
fn a_whep_viewer_of_an_rtmp_publish_gets_picture_and_sound() {
    let s = server();
    let pages = example();
    let mut b = Browser::launch();
    let dir = TempDir::new("whep-rtmp");
    let stream = "live/enc";
    let (_, token) = publish_token(&s, stream, json!({}));
    // x264's defaults: High profile with B-frames, which the viewer gets re-encoded.
    let args = ffmpeg::with_profile(
        ffmpeg::publish_args(&s.rtmp_url(stream, Some(&token)), None),
        "640x360",
        25,
        "high",
        3,
    );
    let _publisher: Proc = s.start_publisher(&dir, stream, &args);
    let whep = format!("http://{}/{stream}/whep", s.http);
    let viewer = b.open(&page(&pages, "play", &whep, None));
    wait_connected(&mut b, &viewer, "playing", "WHEP play of RTMP");
    assert_plays(
        &mut b,
        &viewer,
        "window.pc",
        "WHEP viewer of an RTMP publish",
    );
    assert_eq!(sessions(&s, "whep", "play"), 1);
}

/// An offer Chromium made with every candidate in it (what OBS sends: no trickle), from a tab
/// that publishes the fake camera; the tab keeps the peer connection as `window.pc`.
fn gathered_offer(b: &mut Browser, tab: &Tab) -> String {
    // A loopback http page is a secure context (getUserMedia); the new tab's first document
    // is not.
    let loaded = b.wait_for(
        tab,
        "location.protocol + document.readyState",
        Duration::from_secs(10),
        |v| v == "http:complete",
    );
    assert!(loaded.is_ok(), "{loaded:?}");
    let script = "(async () => { try { \
        const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' }); window.pc = pc; \
        const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true }); \
        for (const track of stream.getTracks()) { \
          const t = pc.addTransceiver(track, { direction: 'sendonly' }); \
          if (track.kind === 'video') { \
            const c = RTCRtpSender.getCapabilities('video').codecs; \
            t.setCodecPreferences(c.filter(x => x.mimeType === 'video/H264').concat(c.filter(x => x.mimeType !== 'video/H264'))); } } \
        await pc.setLocalDescription(await pc.createOffer()); \
        await new Promise(r => { if (pc.iceGatheringState === 'complete') r(); \
          pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); }); \
        return pc.localDescription.sdp; } catch (e) { return 'error: ' + e; } })()";
    let offer = b.eval(tab, script);
    let offer = offer
        .as_str()
        .unwrap_or_else(|| panic!("no offer: {offer}"));
    assert!(!offer.starts_with("error"), "{offer}");
    offer.to_owned()
}

/// A `POST` of `sdp` as OBS makes it: its user agent, `application/sdp`, the bearer token.
fn obs_post(s: &Server, path: &str, token: Option<&str>, sdp: &str) -> HttpResponse {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        (
            "User-Agent",
            "Mozilla/5.0 (OBS-Studio/30.2.3; Linux x86_64)",
        ),
        ("Content-Type", "application/sdp"),
    ];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    request(s.http, "POST", path, &headers, Some(sdp.as_bytes()))
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

#[test]
fn a_raw_client_publishes_as_obs_does_and_every_refusal_has_its_status() {
    let s = server();
    let mut b = Browser::launch();
    let stream = "live/obs";
    let (_, token) = publish_token(&s, stream, json!({}));
    let tab = b.open(&format!("http://{}/healthz", s.http));
    let offer = gathered_offer(&mut b, &tab);
    assert!(offer.contains("a=candidate:"), "no trickle: {offer}");

    // Refusals first: no token, an unknown one, a rule that refuses, the wrong media type.
    let path = format!("/{stream}/whip");
    let r = obs_post(&s, &path, None, &offer);
    assert_eq!(r.status, 401, "{}", r.body);
    let r = obs_post(&s, &path, Some("sgp_not-a-token"), &offer);
    assert_eq!(r.status, 401, "{}", r.body);
    let (_, elsewhere) = publish_token(&s, stream, json!({"allowedIpAddresses": ["192.0.2.1"]}));
    let r = obs_post(&s, &path, Some(&elsewhere), &offer);
    assert_eq!(r.status, 403, "{}", r.body);
    let bearer = format!("Bearer {token}");
    let r = request(
        s.http,
        "POST",
        &path,
        &[("Content-Type", "text/plain"), ("Authorization", &bearer)],
        Some(offer.as_bytes()),
    )
    .unwrap();
    assert_eq!(r.status, 415, "{}", r.body);
    let r = request(
        s.http,
        "OPTIONS",
        &path,
        &[("Origin", "https://app.example")],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 204);
    assert!(r
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST")));
    assert!(r
        .header("access-control-allow-headers")
        .is_some_and(|h| h.contains("Authorization")));

    // The publish, exactly as OBS sends it; Ant Media's path shape names the same stream.
    let r = obs_post(&s, "/live/whip/obs", Some(&token), &offer);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    let location = r.header("location").expect("Location").to_owned();
    assert!(location.starts_with("/live/whip/obs/"), "{location}");
    let etag = r.header("etag").expect("ETag").to_owned();
    assert!(
        r.body.contains("a=candidate:"),
        "the answer carries the server's candidates"
    );
    let answer = serde_json::to_string(&r.body).unwrap();
    b.eval(
        &tab,
        &format!(
            "window.pc.setRemoteDescription({{ type: 'answer', sdp: {answer} }}).then(() => 'ok')"
        ),
    );
    let connected = b.wait_for(
        &tab,
        "window.pc.connectionState",
        Duration::from_secs(15),
        |v| v == "connected",
    );
    assert!(connected.is_ok(), "{connected:?}");
    assert!(
        wait_until(Duration::from_secs(10), || s.frames_in(stream) > 30),
        "the publish reaches the relay"
    );
    assert_eq!(sessions(&s, "whip", "publish"), 1);

    // The name is live: a second publish is refused with 409.
    let second = b.open(&format!("http://{}/healthz", s.http));
    let offer2 = gathered_offer(&mut b, &second);
    let r = obs_post(&s, &path, Some(&token), &offer2);
    assert_eq!(r.status, 409, "{}", r.body);

    // A trickled candidate is taken (204); a stale ETag is not (412); another media type 415.
    let frag = "a=ice-ufrag:x\r\n";
    let candidate = "a=mid:0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\n";
    let patch = |body: &str, if_match: &str, content_type: &str| {
        request(
            s.http,
            "PATCH",
            &location,
            &[("Content-Type", content_type), ("If-Match", if_match)],
            Some(body.as_bytes()),
        )
        .unwrap()
    };
    let ufrag = offer
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:"))
        .unwrap()
        .to_owned();
    let pwd = offer
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("a=ice-pwd:"))
        .unwrap()
        .to_owned();
    let trickle = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n{candidate}");
    assert_eq!(
        patch(&trickle, &etag, "application/trickle-ice-sdpfrag").status,
        204
    );
    assert_eq!(
        patch(&trickle, "\"stale\"", "application/trickle-ice-sdpfrag").status,
        412
    );
    assert_eq!(patch(frag, &etag, "application/sdp").status, 415);

    // DELETE ends the session; the resource is gone after it.
    let r = request(s.http, "DELETE", &location, &[], None).unwrap();
    assert_eq!(r.status, 200);
    assert!(wait_until(Duration::from_secs(5), || sessions(
        &s, "whip", "publish"
    ) == 0));
    assert_eq!(
        patch(&trickle, &etag, "application/trickle-ice-sdpfrag").status,
        404
    );
    assert_eq!(
        request(s.http, "DELETE", &location, &[], None)
            .unwrap()
            .status,
        404
    );

    // WHEP of a stream that is not live: 404.
    let r = obs_post(&s, &format!("/{stream}/whep"), None, &offer2);
    assert_eq!(r.status, 404, "{}", r.body);
    let refused = s.metrics_text();
    assert!(
        refused.contains("streamgate_refusals_total{protocol=\"whip\",reason=\"missing\"}"),
        "refusals counted by protocol"
    );
}

#[test]
fn deleting_the_token_ends_whip_and_whep_sessions_within_a_second() {
    let s = server();
    let pages = example();
    let mut b = Browser::launch();
    let stream = "live/revoke";
    let (id, token) = publish_token(&s, stream, json!({}));
    let whip = format!("http://{}/{stream}/whip", s.http);
    let whep = format!("http://{}/{stream}/whep", s.http);
    let publisher = b.open(&page(&pages, "publish", &whip, Some(&token)));
    wait_connected(&mut b, &publisher, "publishing", "WHIP publish");
    let viewer = b.open(&page(&pages, "play", &whep, None));
    wait_connected(&mut b, &viewer, "playing", "WHEP play");
    let resources = s.metrics_text();
    assert!(resources.contains("streamgate_sessions{protocol=\"whep\",action=\"play\"} 1"));

    let deleted = Instant::now();
    let r = s.api("DELETE", &format!("/api/publish_token/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let ended = wait_until(Duration::from_secs(1), || {
        sessions(&s, "whip", "publish") == 0 && sessions(&s, "whep", "play") == 0
    });
    assert!(ended, "sessions left after {:?}", deleted.elapsed());
    // The sessions' resources are gone with them.
    for tab in [&publisher, &viewer] {
        let status = b.eval(
            tab,
            "fetch(window.client.resourceURL, { method: 'PATCH', \
             headers: { 'Content-Type': 'application/trickle-ice-sdpfrag' }, \
             body: 'a=end-of-candidates\\r\\n' }).then(r => r.status)",
        );
        assert_eq!(status, 404);
    }
    // The browser's connection goes down (WHIP has no message for it: the server closes the
    // peer connection).
    let down = b.wait_for(
        &publisher,
        "window.pc.iceConnectionState",
        Duration::from_secs(20),
        |v| v == "disconnected" || v == "failed" || v == "closed",
    );
    assert!(down.is_ok(), "{down:?}");
    let _ = wait_status;
}
