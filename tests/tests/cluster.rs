//! Nodes sharing a PostgreSQL token store: the test starts its own PostgreSQL (Debian's
//! `postgresql`, a cluster in a temporary directory on a free port) and several `streamgate`
//! processes on it.

use std::time::Duration;

use serde_json::json;
use streamgate_tests::ffmpeg::publish_args;
use streamgate_tests::postgres::Postgres;
use streamgate_tests::rtmp::RtmpClient;
use streamgate_tests::{wait_until, Options, Server, TempDir};

/// A node on `pg`, failed authentications not delayed (the tests fail many on purpose).
fn node(pg: &Postgres) -> Server {
    Server::start_with(
        Options::default()
            .env("STREAMGATE_STORE_URL", &pg.url())
            .env("STREAMGATE_AUTH_FAILURE_DELAY_MS", "0"),
    )
}

/// Publishes `live/<stream>` on `s` with `token`; the client, if granted.
fn publish(s: &Server, stream: &str, token: &str) -> Result<RtmpClient, String> {
    let mut c = RtmpClient::connect(s.rtmp, "live")?;
    c.publish(&format!("{stream}?token={token}"))?;
    Ok(c)
}

#[test]
fn tokens_are_stored_in_postgresql_and_every_node_admits_them() {
    let pg = Postgres::start();
    let mut a = node(&pg);
    let (id, token) = a.create_token(
        "publish",
        json!({"label": "shared", "streams": [{"streamName": "live/cam1"}]}),
    );
    // Another node, started after the token was made, loads it from the database.
    let b = node(&pg);
    let granted = publish(&b, "cam1", &token);
    assert!(granted.is_ok(), "{:?}", granted.as_ref().err());
    assert!(publish(&b, "cam2", &token).is_err(), "another stream");
    assert!(publish(&b, "cam3", "not-a-token-0123456789").is_err());
    drop(granted);
    // The token is in PostgreSQL, not in the node's data directory: a node restarted on an
    // empty data directory still has it.
    assert!(
        a.data_files()
            .iter()
            .all(|(path, _)| !path.to_string_lossy().contains("streamgate.db")),
        "no SQLite file"
    );
    a.restart();
    let r = a.api("GET", &format!("/api/publish_token/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["label"], "shared");
    assert!(publish(&a, "cam1", &token).is_ok());
    // Changed through one node (a new secret, another label) and a signed-token id revoked:
    // a node started afterwards reads both.
    let r = a.api(
        "PUT",
        &format!("/api/publish_token/{id}"),
        Some(r#"{"label": "renamed", "refreshToken": true}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let rotated = r.json()["data"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!rotated.is_empty() && rotated != token);
    let r = a.api(
        "POST",
        "/api/revoked_jti",
        Some(r#"{"jti": "shared-jti", "expiresOn": 4102444800}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let c = node(&pg);
    assert!(publish(&c, "cam1", &token).is_err(), "the old secret");
    assert!(publish(&c, "cam1", &rotated).is_ok(), "the new one");
    let r = c.api("GET", &format!("/api/publish_token/{id}"), None);
    assert_eq!(r.json()["data"]["label"], "renamed");
    let r = c.api("GET", "/api/revoked_jti/list", None);
    assert_eq!(r.json()["data"][0]["jti"], "shared-jti", "{}", r.body);
    // Deleted through one node, it is gone from the database: a node started afterwards no
    // longer admits it.
    let r = a.api("DELETE", &format!("/api/publish_token/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let d = node(&pg);
    assert!(publish(&d, "cam1", &rotated).is_err());
}

#[test]
fn a_one_time_token_is_spent_once_across_nodes() {
    let pg = Postgres::start();
    let a = node(&pg);
    let (_, token) = a.create_token("publish", json!({"label": "once", "maxUses": 1}));
    let (b, c) = (node(&pg), node(&pg));
    let nodes = [&a, &b, &c];
    // Twelve attempts at once, four on each node, each for a stream of its own: every node
    // knows the token unspent, and only the database's count can tell them apart.
    let granted: Vec<RtmpClient> = std::thread::scope(|scope| {
        let attempts: Vec<_> = (0..12)
            .map(|n| {
                let s = nodes[n % 3];
                let token = &token;
                scope.spawn(move || publish(s, &format!("race{n}"), token).ok())
            })
            .collect();
        attempts
            .into_iter()
            .filter_map(|a| a.join().ok().flatten())
            .collect()
    });
    assert_eq!(granted.len(), 1, "exactly one of twelve attempts granted");
    // The count is in the database: no node grants a second use later.
    for s in nodes {
        assert!(publish(s, "again", &token).is_err());
    }
}

#[test]
fn while_postgresql_is_down_tokens_admit_from_memory_and_creation_is_refused() {
    let mut pg = Postgres::start();
    let s = node(&pg);
    let dir = TempDir::new("cluster-outage");
    let (_, token) = s.create_token("publish", json!({"label": "before"}));
    let (_, once) = s.create_token("publish", json!({"label": "one use", "maxUses": 1}));
    let mut publisher = s.start_publisher(
        &dir,
        "live/cam1",
        &publish_args(&s.rtmp_url("live/cam1", Some(&token)), None),
    );
    pg.pause();
    // Stored tokens still admit: decisions read memory.
    let granted = publish(&s, "cam2", &token);
    assert!(granted.is_ok(), "{:?}", granted.as_ref().err());
    // What needs the database is refused, clearly: creating a token, spending a use.
    let r = s.api("POST", "/api/publish_token", Some(r#"{"label": "during"}"#));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("temporarily unavailable"), "{}", r.body);
    assert!(publish(&s, "cam3", &once).is_err(), "a use cannot be spent");
    let frames_down = s.frames_in("live/cam1");
    pg.resume();
    // Back: the node connects again at its next operation, and nothing was lost.
    let created = wait_until(Duration::from_secs(10), || {
        s.api("POST", "/api/publish_token", Some(r#"{"label": "after"}"#))
            .status
            == 200
    });
    assert!(created, "creation works again");
    assert!(
        publish(&s, "cam3", &once).is_ok(),
        "the one use is still there"
    );
    assert!(publish(&s, "cam4", &once).is_err(), "and spent once");
    // The live publish went on throughout.
    assert!(publisher.running(), "{}", publisher.stderr());
    assert!(wait_until(Duration::from_secs(5), || s
        .frames_in("live/cam1")
        > frames_down + 25));
}
