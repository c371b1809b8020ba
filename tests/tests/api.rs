//! The REST token API against the real binary: CRUD for both kinds, the error answers, secrets
//! shown once and never stored or logged, durability across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use serde_json::{json, Value};
use streamgate_tests::{http, Options, Server, API_SECRET};

fn data(v: &Value) -> &Value {
    &v["data"]
}

#[test]
fn crud_for_both_kinds() {
    let s = Server::start();
    for kind in ["publish", "subscribe"] {
        let base = format!("/api/{kind}_token");
        let body = json!({
            "label": "cam one",
            "streams": [{"streamName": "live/cam1", "isRegex": false}, {"streamName": "live/cam[0-9]+", "isRegex": true}],
            "expires": 3600,
            "allowedOrigins": ["*.example.com", "example.org"],
            "allowedIpAddresses": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"],
            "maxUses": 5,
            "tag": "studio",
            "allowedReferers": ["example.com"],
            "allowedUserAgents": ["OBS/30.0"],
        });
        let created = s.api("POST", &base, Some(&body.to_string()));
        assert_eq!(created.status, 200, "{}", created.body);
        let c = created.json();
        assert_eq!(c["status"], "success");
        let d = data(&c);
        let id = d["id"].as_i64().unwrap();
        let token = d["token"].as_str().unwrap();
        assert!(
            token.starts_with(if kind == "publish" { "sgp_" } else { "sgs_" }),
            "{token}"
        );
        assert_eq!(d["label"], "cam one");
        assert_eq!(d["isActive"], true);
        assert_eq!(d["tag"], "studio");
        assert_eq!(d["maxUses"], 5);
        assert_eq!(
            d["streams"][1],
            json!({"streamName": "live/cam[0-9]+", "isRegex": true})
        );
        assert_eq!(
            d["allowedIpAddresses"],
            json!(["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"])
        );
        assert_eq!(d["allowedOrigins"], json!(["*.example.com", "example.org"]));
        assert!(d["addedOn"].as_str().unwrap().ends_with('Z'));
        assert!(d["expiresOn"].as_str().unwrap() > d["addedOn"].as_str().unwrap());
        if kind == "publish" {
            assert_eq!(d["subscribeRequiresAuth"], false);
        }

        let got = s.api("GET", &format!("{base}/{id}"), None);
        assert_eq!(got.status, 200);
        assert!(
            data(&got.json()).get("token").is_none(),
            "GET never shows the token"
        );
        assert!(!got.body.contains(token));
        assert_eq!(data(&got.json())["label"], "cam one");

        let list = s.api(
            "GET",
            &format!("{base}/list?page=1&itemsOnPage=10&sortBy=Label&isDescending=true"),
            None,
        );
        assert_eq!(list.status, 200, "{}", list.body);
        assert!(!list.body.contains(token), "list never shows the token");
        assert_eq!(data(&list.json()).as_array().unwrap().len(), 1);

        let upd = json!({
            "label": "renamed",
            "updateAllowedOrigins": ["*.example.net"],
            "addTokenStreams": [{"streamName": "live/extra"}],
            "removeTokenStreams": [{"streamName": "live/cam1", "isRegex": false}],
            "isActive": false,
        });
        let u = s.api("PUT", &format!("{base}/{id}"), Some(&upd.to_string()));
        assert_eq!(u.status, 200, "{}", u.body);
        let ud = u.json();
        assert!(
            data(&ud).get("token").is_none(),
            "an update without refreshToken shows no token"
        );
        assert_eq!(data(&ud)["label"], "renamed");
        assert_eq!(data(&ud)["isActive"], false);
        assert_eq!(data(&ud)["allowedOrigins"], json!(["*.example.net"]));
        let names: Vec<&str> = data(&ud)["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["streamName"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["live/cam[0-9]+", "live/extra"]);

        let r = s.api(
            "PUT",
            &format!("{base}/{id}"),
            Some(r#"{"refreshToken":true}"#),
        );
        assert_eq!(r.status, 200);
        let fresh = data(&r.json())["token"].as_str().unwrap().to_owned();
        assert_ne!(
            fresh, token,
            "refreshToken rotates the secret and shows the new one once"
        );

        let del = s.api("DELETE", &format!("{base}/{id}"), None);
        assert_eq!(del.status, 200, "{}", del.body);
        assert_eq!(s.api("GET", &format!("{base}/{id}"), None).status, 404);
        assert_eq!(s.api("DELETE", &format!("{base}/{id}"), None).status, 404);
    }
    // Ids are per kind: a subscribe token is not reachable under publish_token.
    let (sid, _) = s.create_token("subscribe", json!({"label": "v"}));
    assert_eq!(
        s.api("GET", &format!("/api/publish_token/{sid}"), None)
            .status,
        404
    );
}

#[test]
fn list_pages_sorts_and_filters() {
    let s = Server::start();
    for (label, tag) in [("c", "a"), ("a", "b"), ("b", "a")] {
        s.create_token("publish", json!({"label": label, "tag": tag}));
    }
    let labels = |q: &str| -> Vec<String> {
        let r = s.api("GET", &format!("/api/publish_token/list?{q}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        data(&r.json())
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["label"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(labels("sortBy=Label"), ["a", "b", "c"]);
    assert_eq!(labels("sortBy=Label&isDescending=true"), ["c", "b", "a"]);
    assert_eq!(labels("sortBy=AddedOn&itemsOnPage=2&page=2"), ["b"]);
    assert_eq!(labels("tag=a"), ["c", "b"]);
    assert_eq!(labels("page=5"), Vec::<String>::new());
    for bad in [
        "page=0",
        "itemsOnPage=0",
        "itemsOnPage=1000",
        "sortBy=colour",
        "isDescending=maybe",
        "page=x",
    ] {
        let r = s.api("GET", &format!("/api/publish_token/list?{bad}"), None);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.json()["status"], "fail");
    }
    assert_eq!(
        s.api("GET", "/api/subscribe_token/list", None).json()["data"],
        json!([])
    );
}

#[test]
fn errors_are_clear_and_never_500() {
    let s = Server::start();
    // 401: no secret, wrong secret, wrong scheme.
    for auth in [
        None,
        Some("Bearer wrong-secret-wrong-secret"),
        Some(format!("Basic {API_SECRET}").as_str()),
    ] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
        let r = http::request(
            s.http,
            "POST",
            "/api/publish_token",
            &headers,
            Some(br#"{"label":"x"}"#),
        )
        .unwrap();
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.json()["status"], "fail");
        let r = http::request(s.http, "GET", "/api/publish_token/list", &headers, None).unwrap();
        assert_eq!(r.status, 401);
    }
    // 400, naming the field.
    let cases: &[(&str, &str)] = &[
        ("{\"label\": \"x\"", "malformed JSON"),
        ("[1,2", "JSON object"),
        ("not json", "JSON object"),
        (r#"{"label": "x"} trailing"#, "malformed JSON"),
        ("", "JSON object"),
        ("{}", "label"),
        (r#"{"label": 5}"#, "label"),
        (r#"{"label": "x", "maxUses": "many"}"#, "maxUses"),
        (r#"{"label": "x", "maxUses": -1}"#, "maxUses"),
        (r#"{"label": "x", "expires": "soon"}"#, "expires"),
        (r#"{"label": "x", "expires": 0}"#, "expires"),
        (r#"{"label": "x", "streams": "cam"}"#, "streams"),
        (
            r#"{"label": "x", "subscribeRequiresAuth": "yes"}"#,
            "subscribeRequiresAuth",
        ),
        (
            r#"{"label": "x", "allowedIpAddresses": ["10.0.0.0/33"]}"#,
            "allowedIpAddresses[0]",
        ),
        (
            r#"{"label": "x", "allowedIpAddresses": ["10.0.0.1", "not-an-ip"]}"#,
            "allowedIpAddresses[1]",
        ),
        (
            r#"{"label": "x", "allowedOrigins": ["exa mple.com"]}"#,
            "allowedOrigins[0]",
        ),
        (
            r#"{"label": "x", "streams": [{"streamName": "live/(cam", "isRegex": true}]}"#,
            "streams[0]",
        ),
        (
            r#"{"label": "x", "streams": [{"streamName": "live/ cam"}]}"#,
            "streams[0]",
        ),
        (
            r#"{"label": "x", "bindIpsOnUsage": 2, "allowedIpAddresses": ["10.0.0.1"]}"#,
            "bindIpsOnUsage",
        ),
        (r#"{"label": "x", "colour": "red"}"#, "colour"),
    ];
    for (body, field) in cases {
        let r = s.api("POST", "/api/publish_token", Some(body));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let msg = r.json()["data"]["message"].as_str().unwrap().to_owned();
        assert!(
            msg.contains(field),
            "{body}: message {msg:?} should name {field}"
        );
    }
    let long = json!({"label": "x".repeat(129)}).to_string();
    let r = s.api("POST", "/api/publish_token", Some(&long));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("label"));
    let r = s.api(
        "POST",
        "/api/subscribe_token",
        Some(r#"{"label":"x","subscribeRequiresAuth":true}"#),
    );
    assert_eq!(r.status, 400, "subscribeRequiresAuth is for publish tokens");

    // 404: unknown ids and routes.
    for path in [
        "/api/publish_token/999999",
        "/api/subscribe_token/0",
        "/api/publish_token/abc",
        "/api/nothing",
    ] {
        let r = s.api("GET", path, None);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.json()["status"], "fail");
    }
    assert_eq!(
        s.api("PUT", "/api/publish_token/999999", Some(r#"{"label":"y"}"#))
            .status,
        404
    );

    // Update errors.
    let (id, _) = s.create_token(
        "publish",
        json!({"label": "p", "streams": [{"streamName": "live/a"}]}),
    );
    let path = format!("/api/publish_token/{id}");
    for (body, field) in [
        (r#"{"label": ""}"#, "label"),
        (r#"{"isActive": "no"}"#, "isActive"),
        (
            r#"{"removeTokenStreams": [{"streamName": "live/a"}]}"#,
            "removeTokenStreams",
        ),
        (
            r#"{"allowedOrigins": ["a.com"], "updateAllowedOrigins": ["b.com"]}"#,
            "updateAllowedOrigins",
        ),
        (
            r#"{"updateAllowedIpAddresses": ["300.1.1.1"]}"#,
            "updateAllowedIpAddresses[0]",
        ),
    ] {
        let r = s.api("PUT", &path, Some(body));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(field), "{body}: {}", r.body);
    }

    // 413: an oversized body, declared or not.
    let big = format!(r#"{{"label":"x","tag":"{}"}}"#, "a".repeat(200_000));
    let r = s.api("POST", "/api/publish_token", Some(&big));
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["status"], "fail");

    // The server is still serving, and nothing was created by the bad requests.
    let list = s.api("GET", "/api/publish_token/list", None);
    assert_eq!(data(&list.json()).as_array().unwrap().len(), 1);
    assert_eq!(s.metric("streamgate_panics_total"), 0.0);
}

#[test]
fn tokens_survive_restart_and_no_secret_is_stored_or_logged() {
    let mut s = Server::start();
    let (pid, ptoken) = s.create_token(
        "publish",
        json!({"label": "durable", "tag": "t", "maxUses": 3}),
    );
    let (sid, stoken) = s.create_token(
        "subscribe",
        json!({"label": "viewer", "streams": [{"streamName": "live/.*", "isRegex": true}]}),
    );
    let r = s.api(
        "PUT",
        &format!("/api/subscribe_token/{sid}"),
        Some(r#"{"refreshToken": true}"#),
    );
    let rotated = data(&r.json())["token"].as_str().unwrap().to_owned();

    s.restart();
    let p = s.api("GET", &format!("/api/publish_token/{pid}"), None);
    assert_eq!(p.status, 200);
    assert_eq!(data(&p.json())["label"], "durable");
    assert_eq!(data(&p.json())["maxUses"], 3);
    let v = s.api("GET", &format!("/api/subscribe_token/{sid}"), None);
    assert_eq!(data(&v.json())["streams"][0]["isRegex"], true);
    let (_, after) = s.create_token("publish", json!({"label": "after restart"}));

    s.stop();
    let log = s.log();
    assert!(log.contains("token created"), "the log has the API's lines");
    for secret in [
        API_SECRET,
        ptoken.as_str(),
        stoken.as_str(),
        rotated.as_str(),
        after.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret appears in the log");
        for (path, bytes) in s.data_files() {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a secret appears in {}",
                path.display()
            );
        }
    }
}

#[test]
fn srt_passphrase_is_shown_only_when_set() {
    let s = Server::start();
    let created = s.api(
        "POST",
        "/api/publish_token",
        Some(r#"{"label":"srt","srtPassphrase":"correct horse battery"}"#),
    );
    assert_eq!(created.status, 200, "{}", created.body);
    let d = created.json()["data"].clone();
    assert_eq!(d["srtPassphrase"], "correct horse battery");
    let id = d["id"].as_i64().unwrap();
    let got = s.api("GET", &format!("/api/publish_token/{id}"), None);
    assert!(!got.body.contains("correct horse"), "{}", got.body);
    assert_eq!(got.json()["data"]["hasSrtPassphrase"], true);
    let list = s.api("GET", "/api/publish_token/list", None);
    assert!(!list.body.contains("correct horse"));
    let short = s.api(
        "POST",
        "/api/publish_token",
        Some(r#"{"label":"srt","srtPassphrase":"short"}"#),
    );
    assert_eq!(short.status, 400);
    assert!(short.body.contains("srtPassphrase"));
    let sub = s.api(
        "POST",
        "/api/subscribe_token",
        Some(r#"{"label":"srt","srtPassphrase":"correct horse battery"}"#),
    );
    assert_eq!(sub.status, 400);
    let cleared = s.api(
        "PUT",
        &format!("/api/publish_token/{id}"),
        Some(r#"{"srtPassphrase":null}"#),
    );
    assert_eq!(cleared.json()["data"]["hasSrtPassphrase"], false);
}

#[test]
fn millicast_update_shapes_and_empty_stream_lists() {
    let s = Server::start();
    // An empty list is neither "no stream" nor "every stream": refused.
    let r = s.api(
        "POST",
        "/api/publish_token",
        Some(r#"{"label":"x","streams":[]}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("streams"), "{}", r.body);
    let (id, _) = s.create_token(
        "publish",
        json!({"label": "c", "streams": [
            {"streamName": "container1/.+", "isRegex": true},
            {"streamName": "container2/cam"}
        ]}),
    );
    let r = s.api(
        "PUT",
        &format!("/api/publish_token/{id}"),
        Some(r#"{"streams":[]}"#),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // Millicast's OpenAPI example: stream names as strings, on the v2 route.
    let r = s.api(
        "PUT",
        &format!("/api/v2/publish_token/{id}"),
        Some(r#"{"removeTokenStreams":["container1/.+"],"addTokenStreams":[{"streamName":"container3/x"}]}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let names: Vec<String> = r.json()["data"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["streamName"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["container2/cam", "container3/x"]);
    let (sub, _) = s.create_token("subscribe", json!({"label": "v"}));
    let r = s.api(
        "PUT",
        &format!("/api/v2/subscribe_token/{sub}"),
        Some(r#"{"label":"renamed"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["label"], "renamed");
}

#[test]
fn metrics_need_a_credential_and_failed_secrets_are_delayed() {
    let s = Server::start();
    let open = s.get("/metrics").unwrap();
    assert_eq!(open.status, 401, "metrics are not public by default");
    assert!(s.metrics_text().contains("streamgate_refusals_total"));
    // A wrong API secret is answered late, later each time, and counted.
    let wrong = |path: &str| {
        let start = std::time::Instant::now();
        let r = streamgate_tests::http::request(
            s.http,
            "GET",
            path,
            &[("Authorization", "Bearer not-the-secret")],
            None,
        )
        .unwrap();
        assert_eq!(r.status, 401);
        start.elapsed()
    };
    let first = wrong("/api/publish_token/list");
    let second = wrong("/metrics");
    assert!(first >= std::time::Duration::from_millis(250), "{first:?}");
    assert!(
        second >= std::time::Duration::from_millis(500),
        "{second:?}"
    );
    let m = s.metrics_text();
    assert!(
        m.lines().any(|l| l == "streamgate_auth_failures_total 3"),
        "the unauthenticated read, and two wrong secrets:\n{m}"
    );
    assert!(m.contains("streamgate_auth_failures_recent{source=\"127.0.0.1\"} 3"));
    // A scraper token, and a listener of its own.
    let port = streamgate_tests::free_tcp_port();
    let s = Server::start_with(
        Options::default()
            .env("STREAMGATE_METRICS_TOKEN", "scraper-token-0123456789")
            .env("STREAMGATE_METRICS_LISTEN", &format!("127.0.0.1:{port}")),
    );
    let r = streamgate_tests::http::request(
        s.http,
        "GET",
        "/metrics",
        &[("Authorization", "Bearer scraper-token-0123456789")],
        None,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let own = streamgate_tests::http::request(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "GET",
        "/metrics",
        &[],
        None,
    )
    .unwrap();
    assert_eq!(own.status, 200);
    assert!(own.body.contains("streamgate_tokens"));
}
