//! TLS against the real binary, with a CA and certificates the test makes: HTTPS for curl and
//! Chromium (pages, WSS, WHIP and WHEP), RTMPS for ffmpeg, a certificate swapped on disk while a
//! session runs, the redirect from HTTP, and forwarded addresses from trusted proxies only.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use streamgate_tests::browser::{assert_plays, wait_status, Browser};
use streamgate_tests::ffmpeg::{self, Proc};
use streamgate_tests::http::request;
use streamgate_tests::tls::{served_certificate, Pki};
use streamgate_tests::{free_tcp_port, wait_until, Options, Server, TempDir, API_SECRET};

/// A server with TLS on; its HTTPS and RTMPS addresses.
fn tls_server(pki: &Pki, extra: &[(&str, &str)]) -> (Server, SocketAddr, SocketAddr) {
    let https = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let rtmps = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let path = |p: &std::path::Path| p.display().to_string();
    let mut options = Options::default()
        .env("STREAMGATE_WEBRTC_ICE_IPS", "127.0.0.1")
        .env("STREAMGATE_TLS_CERT_FILE", &path(&pki.cert_file))
        .env("STREAMGATE_TLS_KEY_FILE", &path(&pki.key_file))
        .env("STREAMGATE_HTTPS_LISTEN", &https.to_string())
        .env("STREAMGATE_RTMPS_LISTEN", &rtmps.to_string());
    for (k, v) in extra {
        options = options.env(k, v);
    }
    (Server::start_with(options), https, rtmps)
}

fn publish_token(s: &Server, stream: &str, extra: serde_json::Value) -> String {
    let mut body = json!({"label": "tls", "streams": [{"streamName": stream}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    s.create_token("publish", body).1
}

/// curl's exit code and output for `url` with `args`.
fn curl(args: &[&str], url: &str) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "-S", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn curl_and_chromium_use_https_wss_whip_and_whep_with_the_servers_certificate() {
    let pki = Pki::new();
    let (s, https, _) = tls_server(&pki, &[]);
    let api = format!(
        "https://127.0.0.1:{}/api/publish_token/list?page=1&itemsOnPage=10",
        https.port()
    );
    let auth = format!("Authorization: Bearer {API_SECRET}");
    let ca = pki.ca_file.display().to_string();
    let (code, body) = curl(&["--cacert", &ca, "-H", &auth], &api);
    assert_eq!(code, 0, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        "success"
    );
    let (code, _) = curl(&["-H", &auth], &api);
    assert_eq!(code, 60, "without the CA, curl refuses the certificate");

    // Chromium trusting the CA: the pages over https, signaling over wss.
    let mut b = Browser::launch_trusting(&pki.ca_file);
    let origin = format!("https://127.0.0.1:{}", https.port());
    let token = publish_token(&s, "live/secure", json!({}));
    let publisher = b.open(&format!(
        "{origin}/publish.html?id=live/secure&token={token}"
    ));
    wait_status(&mut b, &publisher, "publishing", 20);
    assert_eq!(
        b.eval(&publisher, "streamgate.state.ws.url.split(':')[0]"),
        "wss"
    );
    let viewer = b.open(&format!("{origin}/play.html?id=live/secure"));
    wait_status(&mut b, &viewer, "playing", 20);
    assert_plays(&mut b, &viewer, "streamgate.state.pc", "over wss");

    // The same pages through WHIP and WHEP over https.
    let token = publish_token(&s, "live/securewhip", json!({}));
    let whip = b.open(&format!(
        "{origin}/publish.html?id=live/securewhip&token={token}&via=whip"
    ));
    wait_status(&mut b, &whip, "publishing", 20);
    let whep = b.open(&format!("{origin}/play.html?id=live/securewhip&via=whep"));
    wait_status(&mut b, &whep, "playing", 20);
    assert_plays(&mut b, &whep, "streamgate.state.pc", "WHEP over https");
    let m = s.metrics_text();
    assert!(
        m.contains("streamgate_sessions{protocol=\"whip\",action=\"publish\"} 1"),
        "{m}"
    );
    assert!(m.contains("streamgate_sessions{protocol=\"whep\",action=\"play\"} 1"));
}

#[test]
fn ffmpeg_over_rtmps_and_a_certificate_swapped_on_disk_serves_new_connections_only() {
    let mut pki = Pki::new();
    let (s, https, rtmps) = tls_server(&pki, &[]);
    let dir = TempDir::new("rtmps");
    let stream = "live/rtmps";
    let token = publish_token(&s, stream, json!({}));
    let url = format!("rtmps://127.0.0.1:{}/{stream}?token={token}", rtmps.port());
    let _publisher: Proc = s.start_publisher(&dir, stream, &ffmpeg::publish_args(&url, None));
    let flv = dir.path().join("rtmps.flv");
    let (out, _) = ffmpeg::run(
        &ffmpeg::record_args(
            &format!("rtmps://127.0.0.1:{}/{stream}", rtmps.port()),
            3,
            &flv,
        ),
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
    assert!(p.video_packets > 30 && p.audio_packets > 50, "{p:?}");
    assert!(
        s.metrics_text()
            .contains("streamgate_sessions{protocol=\"rtmp\",action=\"publish\"} 1"),
        "RTMPS sessions are RTMP sessions"
    );

    // A new certificate on disk: served to new connections on both listeners, while the
    // publish that started under the old one goes on.
    let old = pki.leaf.clone();
    assert_eq!(served_certificate(https, &pki.ca_file).unwrap(), old);
    assert_eq!(served_certificate(rtmps, &pki.ca_file).unwrap(), old);
    pki.issue();
    let swapped = wait_until(Duration::from_secs(10), || {
        served_certificate(rtmps, &pki.ca_file).ok() == Some(pki.leaf.clone())
    });
    assert!(swapped, "the new certificate is served");
    assert_eq!(served_certificate(https, &pki.ca_file).unwrap(), pki.leaf);
    let before = s.frames_in(stream);
    assert!(
        wait_until(Duration::from_secs(5), || s.frames_in(stream) > before + 25),
        "the RTMPS publish goes on"
    );
    assert!(!s.log_lines_with("TLS certificate reloaded").is_empty());

    // SIGHUP reloads at once; a broken pair is refused and the last good one stays.
    pki.issue();
    let pid = s.pid().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(wait_until(Duration::from_secs(3), || {
        served_certificate(https, &pki.ca_file).ok() == Some(pki.leaf.clone())
    }));
    assert!(wait_until(Duration::from_secs(3), || !s
        .log_lines_with("TLS certificate reloaded (SIGHUP)")
        .is_empty()));
    assert_eq!(
        s.get("/healthz").unwrap().status,
        200,
        "SIGHUP does not stop it"
    );
    std::fs::write(&pki.key_file, "not a key").unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    assert!(wait_until(Duration::from_secs(3), || !s
        .log_lines_with("TLS certificate not reloaded")
        .is_empty()));
    assert_eq!(served_certificate(https, &pki.ca_file).unwrap(), pki.leaf);
}

#[test]
fn plain_http_redirects_to_https_when_asked() {
    let pki = Pki::new();
    let (s, https, _) = tls_server(&pki, &[("STREAMGATE_TLS_REDIRECT_HTTP", "true")]);
    let r = s.get("/play.html?id=live/x").unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://127.0.0.1:{}/play.html?id=live/x", https.port()).as_str())
    );
    assert_eq!(
        s.get("/healthz").unwrap().status,
        200,
        "health checks stay on HTTP"
    );
}

/// A WHIP request from this machine with `X-Forwarded-For: 203.0.113.7` and an offer that is
/// no SDP: 400 once admitted (the offer comes after the token's rules), 403 when refused.
fn forwarded_whip(s: &Server, token: &str, forwarded: Option<&str>) -> u16 {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![
        ("Content-Type", "application/sdp"),
        ("Authorization", bearer.as_str()),
    ];
    if let Some(f) = forwarded {
        headers.push(("X-Forwarded-For", f));
    }
    request(
        s.http,
        "POST",
        "/live/proxied/whip",
        &headers,
        Some(b"v=0\r\n"),
    )
    .unwrap_or_else(|e| panic!("POST: {e}"))
    .status
}

#[test]
fn a_forwarded_address_counts_only_from_a_trusted_proxy() {
    // This machine is the proxy in front of the first server, a stranger to the second.
    let trusting = Server::start_with(
        Options::default().env("STREAMGATE_HTTP_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8"),
    );
    let other =
        Server::start_with(Options::default().env("STREAMGATE_HTTP_TRUSTED_PROXIES", "10.0.0.0/8"));
    for s in [&trusting, &other] {
        let token = publish_token(
            s,
            "live/proxied",
            json!({"allowedIpAddresses": ["203.0.113.7"]}),
        );
        let from_client = forwarded_whip(s, &token, Some("203.0.113.7"));
        let spoofed = forwarded_whip(s, &token, Some("203.0.113.7, 198.51.100.1"));
        let none = forwarded_whip(s, &token, None);
        if std::ptr::eq(s, &trusting) {
            assert_eq!(
                from_client, 400,
                "the client's address, from a trusted proxy"
            );
            assert_eq!(spoofed, 403, "the nearest untrusted hop is the client");
        } else {
            assert_eq!(
                from_client, 403,
                "the header of an untrusted peer is ignored"
            );
            assert_eq!(spoofed, 403);
        }
        assert_eq!(none, 403, "no header: the proxy's own address");
    }
}
