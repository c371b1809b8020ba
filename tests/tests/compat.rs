//! Token routes of other products (Ant Media, Mediastream, nanoStream-style policy) and signed
//! tokens, used over RTMP against the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};
use streamgate_tests::ffmpeg::{self, probe, publish_args, record_args, Proc};
use streamgate_tests::{http, wait_until, Options, Server, TempDir, API_SECRET};

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn get_bearer(s: &Server, path: &str) -> http::HttpResponse {
    s.api("GET", path, None)
}

/// Starts an endless RTMP publisher of `path` with `token` and waits until it is live.
fn start_publisher(s: &Server, dir: &TempDir, path: &str, token: &str) -> Proc {
    s.start_publisher(
        dir,
        path,
        &publish_args(&s.rtmp_url(path, Some(token)), None),
    )
}

fn publish_refused(s: &Server, path: &str, token: &str) -> bool {
    let url = format!("rtmp://{}/{path}?token={token}", s.rtmp);
    let (out, took) = ffmpeg::run(&publish_args(&url, Some(10)), Duration::from_secs(15));
    !out.status.success() && took < Duration::from_secs(4)
}

fn play_ok(s: &Server, dir: &TempDir, path: &str, token: &str) -> bool {
    let out = dir.path().join("play.flv");
    let url = format!("rtmp://{}/{path}?token={token}", s.rtmp);
    let (o, _) = ffmpeg::run(&record_args(&url, 2, &out), Duration::from_secs(15));
    o.status.success() && probe(&out).video_packets > 10
}

#[test]
fn ant_media_one_time_token_publishes_once_and_revoking_ends_the_session() {
    let s = Server::start();
    let dir = TempDir::new("ams-once");
    let exp = unix_now() + 600;
    let r = get_bearer(
        &s,
        &format!(
            "/LiveApp/rest/v2/broadcasts/cam1/token?expireDate={exp}&type=publish&roomId=room7"
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["streamId"], "cam1");
    assert_eq!(v["type"], "publish");
    assert_eq!(v["expireDate"], exp);
    assert_eq!(v["roomId"], "room7");
    let token = v["tokenId"].as_str().unwrap().to_owned();

    let mut first = start_publisher(&s, &dir, "LiveApp/cam1", &token);
    assert!(
        publish_refused(&s, "LiveApp/cam1", &token),
        "a second use is refused"
    );
    let before = s.frames_in("LiveApp/cam1");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        first.running() && s.frames_in("LiveApp/cam1") > before + 40,
        "the first session keeps streaming after consumption"
    );

    let list = get_bearer(&s, "/LiveApp/rest/v2/broadcasts/cam1/tokens/list/0/10").json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["type"], "publish");
    assert_eq!(list[0]["used"], 1);
    let del = s.api("DELETE", "/LiveApp/rest/v2/broadcasts/cam1/tokens", None);
    assert_eq!(del.status, 200, "{}", del.body);
    assert_eq!(del.json()["success"], true);
    assert!(
        first.wait_exit(Duration::from_secs(2)).is_some(),
        "revoking the stream's tokens ends its live session"
    );
    assert_eq!(
        get_bearer(&s, "/LiveApp/rest/v2/broadcasts/cam1/tokens/list/0/10").json(),
        json!([])
    );
}

#[test]
fn ant_media_errors() {
    let s = Server::start();
    let exp = unix_now() + 600;
    for (path, what) in [
        (
            format!("/LiveApp/rest/v2/broadcasts/cam1/token?expireDate={exp}&type=watch"),
            "type",
        ),
        (
            "/LiveApp/rest/v2/broadcasts/cam1/token?type=play".to_owned(),
            "expireDate",
        ),
        (
            format!(
                "/LiveApp/rest/v2/broadcasts/cam1/token?expireDate={}&type=play",
                unix_now() - 5
            ),
            "expireDate",
        ),
        (
            format!("/LiveApp/rest/v2/broadcasts/ca%20m/token?expireDate={exp}&type=play"),
            "streamId",
        ),
        (
            "/LiveApp/rest/v2/broadcasts/cam1/tokens/list/0/51".to_owned(),
            "size",
        ),
    ] {
        let r = get_bearer(&s, &path);
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert_eq!(r.json()["success"], false);
        assert!(
            r.json()["message"].as_str().unwrap().contains(what),
            "{path}: {}",
            r.body
        );
    }
    let r = http::request(
        s.http,
        "GET",
        &format!("/LiveApp/rest/v2/broadcasts/cam1/token?expireDate={exp}&type=play"),
        &[],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["success"], false);
}

#[test]
fn ant_media_jwt_publishes_repeatedly_until_expire_date() {
    let s = Server::start();
    let dir = TempDir::new("ams-jwt");
    let exp = unix_now() + 6;
    let r = get_bearer(
        &s,
        &format!("/LiveApp/rest/v2/broadcasts/cam2/jwt-token?expireDate={exp}&type=publish"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let jwt = r.json()["tokenId"].as_str().unwrap().to_owned();
    assert_eq!(jwt.split('.').count(), 3);
    for round in 0..2 {
        let mut p = start_publisher(&s, &dir, "LiveApp/cam2", &jwt);
        p.child.kill().unwrap();
        let _ = p.child.wait();
        assert!(
            wait_until(Duration::from_secs(5), || s.frames_in("LiveApp/cam2") == 0),
            "round {round}"
        );
    }
    assert!(
        publish_refused(&s, "LiveApp/cam2", &format!("{jwt}x")),
        "a tampered JWT is refused"
    );
    // expireDate plus the 5 s clock-skew allowance.
    let wait = (exp + 6 - unix_now()).max(0) as u64;
    std::thread::sleep(Duration::from_secs(wait));
    assert!(
        publish_refused(&s, "LiveApp/cam2", &jwt),
        "refused after expireDate"
    );
    assert!(s.metric("streamgate_refusals_total{protocol=\"rtmp\",reason=\"expired\"}") >= 1.0);
}

#[test]
fn revoking_a_jwt_by_jti_ends_its_session() {
    let s = Server::start();
    let dir = TempDir::new("jti");
    let exp = unix_now() + 600;
    let jwt = get_bearer(
        &s,
        &format!("/live/rest/v2/broadcasts/cam3/jwt-token?expireDate={exp}&type=publish"),
    )
    .json()["tokenId"]
        .as_str()
        .unwrap()
        .to_owned();
    let payload = jwt.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["streamId"], "live/cam3");
    let jti = claims["jti"].as_str().unwrap();
    let mut p = start_publisher(&s, &dir, "live/cam3", &jwt);
    let r = s.api(
        "POST",
        "/api/revoked_jti",
        Some(&json!({"jti": jti, "expiresOn": exp}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["sessionsEnded"], 1);
    assert!(p.wait_exit(Duration::from_secs(2)).is_some());
    assert!(publish_refused(&s, "live/cam3", &jwt));
    let list = s.api("GET", "/api/revoked_jti/list", None).json();
    assert_eq!(list["data"][0]["jti"], jti);
}

#[test]
fn mediastream_access_token_is_bound_to_its_ip_and_time_limit() {
    let s = Server::start();
    let dir = TempDir::new("ms");
    let (_, publish) = s.create_token(
        "publish",
        json!({"label": "p", "subscribeRequiresAuth": true}),
    );
    let _p = start_publisher(&s, &dir, "live/ms", &publish);
    let issue = |query: &str| {
        http::request(
            s.http,
            "POST",
            &format!("/api/access/issue?{query}"),
            &[],
            None,
        )
        .unwrap()
    };

    let ok = issue(&format!(
        "id=live%2Fms&type=live&token={API_SECRET}&ip=127.0.0.1&user_agent=&time_limit=5"
    ));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["status"], "OK");
    let token = ok.json()["access_token"].as_str().unwrap().to_owned();
    let other_ip = issue(&format!(
        "id=live%2Fms&type=live&token={API_SECRET}&ip=192.0.2.1&time_limit=60"
    ))
    .json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(play_ok(&s, &dir, "live/ms", &token), "plays from its IP");
    assert!(
        !play_ok(&s, &dir, "live/ms", &other_ip),
        "a token bound to another IP is refused"
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !play_ok(&s, &dir, "live/ms", &token),
        "refused after time_limit"
    );

    let wrong = issue("id=live%2Fms&type=live&token=not-the-secret");
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["status"], "ERROR");
    for bad in [
        format!("id=live%2Fms&type=vod&token={API_SECRET}"),
        format!("type=live&token={API_SECRET}"),
        format!("id=live%2Fms&type=live&token={API_SECRET}&time_limit=soon"),
        format!("id=live%2Fms&type=live&token={API_SECRET}&ip=not-an-ip"),
    ] {
        let r = issue(&bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.json()["status"], "ERROR");
    }
    assert!(
        !s.log().contains(API_SECRET),
        "the secret in the query is never logged"
    );
}

#[test]
fn expiry_policy_and_server_wide_tokens() {
    let s = Server::start_with(
        Options::default()
            .env("STREAMGATE_TOKENS_MAX_EXPIRY", "3600")
            .env("STREAMGATE_TOKENS_DEFAULT_EXPIRY", "600"),
    );
    let dir = TempDir::new("policy");
    let r = s.api(
        "POST",
        "/api/publish_token",
        Some(r#"{"label":"long","expires":7200}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("expires"));
    let r = s.api("POST", "/api/publish_token", Some(r#"{"label":"default"}"#));
    assert_eq!(r.status, 200);
    let d = r.json()["data"].clone();
    assert!(
        d["expiresOn"].is_string(),
        "tokens without expires get the default: {d}"
    );
    let exp = unix_now() + 7200;
    let r = get_bearer(
        &s,
        &format!("/LiveApp/rest/v2/broadcasts/cam1/token?expireDate={exp}&type=play"),
    );
    assert_eq!(
        r.status, 400,
        "Ant Media expireDate obeys max_expiry too: {}",
        r.body
    );
    // A server-wide token (no streams) publishes any name.
    let token = d["token"].as_str().unwrap().to_owned();
    let _a = start_publisher(&s, &dir, "live/anything", &token);
    let _b = start_publisher(&s, &dir, "other/name", &token);
}

#[test]
fn ant_media_one_time_token_over_srt() {
    use streamgate_tests::srt::{self, CallResult};
    let s = Server::start();
    let dir = TempDir::new("ams-srt");
    let exp = unix_now() + 600;
    let r = get_bearer(
        &s,
        &format!("/LiveApp/rest/v2/broadcasts/cam9/token?expireDate={exp}&type=publish"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()["tokenId"].as_str().unwrap().to_owned();
    let streamid = format!("LiveApp/cam9,token={token}");
    let url = srt::url(s.srt, &streamid, "");
    let mut first = Proc::ffmpeg(
        &srt::publish_args(&url, None),
        &dir.path().join("srt-pub.log"),
    );
    assert!(
        wait_until(Duration::from_secs(10), || s.frames_in("LiveApp/cam9") > 0),
        "SRT publish did not go live: {}",
        first.stderr()
    );
    assert!(
        matches!(srt::call(s.srt, &streamid, None), CallResult::Rejected(_)),
        "a second use is refused at the handshake"
    );
    let before = s.frames_in("LiveApp/cam9");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        first.running() && s.frames_in("LiveApp/cam9") > before + 40,
        "the first SRT session keeps streaming"
    );
    // And the same token is spent for RTMP too.
    assert!(publish_refused(&s, "LiveApp/cam9", &token));
}
