//! Nodes sharing a PostgreSQL token store: the test starts its own PostgreSQL (Debian's
//! `postgresql`, a cluster in a temporary directory on a free port) and several `streamgate`
//! processes on it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use serde_json::json;
use streamgate_tests::browser::{assert_plays, wait_status, Browser};
use streamgate_tests::ffmpeg::{self, publish_args};
use streamgate_tests::hls;
use streamgate_tests::postgres::Postgres;
use streamgate_tests::rtmp::{closed_within, RtmpClient};
use streamgate_tests::srt::{self, call, CallResult};
use streamgate_tests::{wait_until, Options, Server, TempDir};

/// How long a node's publish lease outlives its last renewal (the server's `LEASE_TTL`).
const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often a node renews its leases (the server's `LEASE_RENEW`).
const LEASE_RENEW: Duration = Duration::from_secs(1);

/// A node on `pg`, failed authentications not delayed (the tests fail many on purpose), with
/// the signing key of signed tokens and the cluster secret that every node shares, and its
/// WebRTC candidates on loopback.
fn node(pg: &Postgres) -> Server {
    Server::start_with(node_options(pg))
}

fn node_options(pg: &Postgres) -> Options {
    Options::default()
        .env("STREAMGATE_STORE_URL", &pg.url())
        .env("STREAMGATE_AUTH_FAILURE_DELAY_MS", "0")
        .env(
            "STREAMGATE_JWT_HS256_SECRET",
            "cluster-signing-key-0123456789abcdef",
        )
        .env("STREAMGATE_CLUSTER_SECRET", "cluster-secret-0123456789")
        .env("STREAMGATE_WEBRTC_ICE_IPS", "127.0.0.1")
}

/// Milliseconds from the request of a change through one node until the server closed `c`,
/// a session on another; panics past a second.
fn ended_within_a_second(c: &mut RtmpClient, change: impl FnOnce()) -> u128 {
    let start = Instant::now();
    change();
    let left = Duration::from_secs(1).saturating_sub(start.elapsed());
    assert!(
        closed_within(&mut c.socket, left),
        "the session was not ended within 1 s"
    );
    start.elapsed().as_millis()
}

/// Publishes `live/<stream>` on `s` with `token`; the client, if granted.
fn publish(s: &Server, stream: &str, token: &str) -> Result<RtmpClient, String> {
    let mut c = RtmpClient::connect(s.rtmp, "live")?;
    c.publish(&format!("{stream}?token={token}"))?;
    Ok(c)
}

/// Requests of `protocol` that `s` refused for `reason`, by its metrics.
fn refusals(s: &Server, protocol: &str, reason: &str) -> u64 {
    s.metric(&format!(
        "streamgate_refusals_total{{protocol=\"{protocol}\",reason=\"{reason}\"}}"
    )) as u64
}

/// The publish leases in the database: `stream` values, sorted and joined by commas.
fn leases(pg: &Postgres) -> String {
    pg.sql("SELECT coalesce(string_agg(stream, ',' ORDER BY stream), '') FROM publish_leases WHERE expires_at > now()")
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
    // What the database client could log of its statements stays out of the log, even at
    // debug: an SRT passphrase is part of the stored policy.
    a.create_token(
        "publish",
        json!({"label": "encrypted", "srtPassphrase": "never-in-the-log-0123"}),
    );
    assert!(!a.log().contains("never-in-the-log-0123"));
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
    // The publish admitted while the database was down has its lease once it is back.
    assert!(
        wait_until(LEASE_RENEW * 3, || leases(&pg) == "live/cam1,live/cam2"),
        "{}",
        leases(&pg)
    );
    // The live publish went on throughout.
    assert!(publisher.running(), "{}", publisher.stderr());
    assert!(wait_until(Duration::from_secs(5), || s
        .frames_in("live/cam1")
        > frames_down + 25));
}

#[test]
fn a_change_through_one_node_ends_the_sessions_it_governs_on_another_within_a_second() {
    let pg = Postgres::start();
    let (a, b) = (node(&pg), node(&pg));
    let mut times = Vec::new();
    for round in 0..10 {
        // Made through A after both started: B admits it as soon as it has heard.
        let (id, token) = a.create_token("publish", json!({"label": format!("round {round}")}));
        let mut live = None;
        let heard = streamgate_tests::wait_until(Duration::from_secs(1), || {
            live = publish(&b, &format!("cam{round}"), &token).ok();
            live.is_some()
        });
        assert!(heard, "B admits a token made through A within 1 s");
        let mut live = live.unwrap_or_else(|| panic!("round {round}"));
        // Deleted, disabled or rotated through A: B ends the publish.
        let path = format!("/api/publish_token/{id}");
        let body = match round % 3 {
            0 => None,
            1 => Some(r#"{"isActive": false}"#),
            _ => Some(r#"{"refreshToken": true}"#),
        };
        times.push(ended_within_a_second(&mut live, || {
            let r = match body {
                None => a.api("DELETE", &path, None),
                Some(body) => a.api("PUT", &path, Some(body)),
            };
            assert_eq!(r.status, 200, "{}", r.body);
        }));
        assert!(publish(&b, &format!("cam{round}"), &token).is_err());
    }
    times.sort_unstable();
    eprintln!("revocation through A to the end of a session on B, ms: {times:?}");

    // A signed token's id revoked through A ends its session on B.
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 600;
    let r = a.api(
        "GET",
        &format!("/live/rest/v2/broadcasts/signed/jwt-token?expireDate={exp}&type=publish"),
        None,
    );
    let jwt = r.json()["tokenId"].as_str().unwrap_or_default().to_owned();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap_or_default())
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let jti = claims["jti"].as_str().unwrap_or_default().to_owned();
    assert!(!jti.is_empty(), "{claims}");
    let mut live = publish(&b, "signed", &jwt).unwrap_or_else(|e| panic!("{e}"));
    ended_within_a_second(&mut live, || {
        let body = json!({"jti": jti, "expiresOn": exp}).to_string();
        let r = a.api("POST", "/api/revoked_jti", Some(&body));
        assert_eq!(r.status, 200, "{}", r.body);
    });
    assert!(publish(&b, "signed", &jwt).is_err());
}

#[test]
fn a_node_that_lost_the_database_reads_again_what_changed_meanwhile() {
    let mut pg = Postgres::start();
    let (a, b) = (node(&pg), node(&pg));
    let (id, token) = a.create_token("publish", json!({"label": "kept"}));
    assert!(streamgate_tests::wait_until(Duration::from_secs(1), || {
        publish(&b, "probe", &token).is_ok()
    }));
    let mut live = publish(&b, "cam1", &token).unwrap_or_else(|e| panic!("{e}"));
    // A change no node hears of (made in the database directly), then the database goes away
    // and comes back: B listens again, reads everything again, and ends the publish.
    assert_eq!(
        pg.sql(&format!(
            "WITH gone AS (DELETE FROM tokens WHERE id = {id} RETURNING id) SELECT id FROM gone"
        )),
        id.to_string()
    );
    assert!(
        !closed_within(&mut live.socket, Duration::from_millis(500)),
        "not heard of"
    );
    pg.pause();
    pg.resume();
    assert!(
        closed_within(&mut live.socket, Duration::from_secs(5)),
        "B ended the session"
    );
    assert!(publish(&b, "cam2", &token).is_err());
    assert!(!b
        .log_lines_with("listening to the token database's changes again")
        .is_empty());
}

#[test]
fn a_stream_is_live_on_one_node_of_the_cluster_at_a_time() {
    let pg = Postgres::start();
    let (a, b) = (node(&pg), node(&pg));
    let mut c = node(&pg);
    let dir = TempDir::new("cluster-lease");
    let (_, token) = a.create_token(
        "publish",
        json!({"label": "protected", "subscribeRequiresAuth": true}),
    );
    let publisher = a.start_publisher(
        &dir,
        "live/cam1",
        &publish_args(&a.rtmp_url("live/cam1", Some(&token)), None),
    );
    assert_eq!(leases(&pg), "live/cam1");
    // A second publish of the name on another node is refused with each protocol's "in use".
    assert!(publish(&c, "cam1", &token).is_err());
    assert_eq!(refusals(&c, "rtmp", "stream_in_use"), 1);
    assert_eq!(
        call(c.srt, &format!("#!::r=live/cam1,m=publish,s={token}"), None),
        CallResult::Rejected(1409)
    );
    // Another stream on that node is free.
    let other = publish(&c, "cam2", &token);
    assert!(other.is_ok(), "{:?}", other.as_ref().err());
    // B, once it has renewed, knows that cam1's viewers need a subscribe token: an anonymous
    // viewer there is refused for the missing token, not for a stream that is not live.
    std::thread::sleep(LEASE_RENEW + Duration::from_millis(300));
    let mut viewer = RtmpClient::connect(b.rtmp, "live").unwrap_or_else(|e| panic!("{e}"));
    assert!(viewer.play("cam1").is_err());
    assert_eq!(refusals(&b, "rtmp", "missing"), 1);
    assert_eq!(refusals(&b, "rtmp", "stream_not_live"), 0);
    // The publish on A ends: its lease is released with it, and C publishes at once.
    drop(publisher);
    let start = Instant::now();
    let mut moved = None;
    assert!(
        wait_until(Duration::from_secs(1), || {
            moved = publish(&c, "cam1", &token).ok();
            moved.is_some()
        }),
        "C publishes within 1 s of the end of A's publish"
    );
    eprintln!(
        "publish on C {} ms after A's ended",
        start.elapsed().as_millis()
    );
    assert_eq!(leases(&pg), "live/cam1,live/cam2");
    // C shut down with its publishes live gives them up at once too.
    c.stop();
    assert_eq!(leases(&pg), "");
    let granted = publish(&b, "cam1", &token);
    assert!(granted.is_ok(), "{:?}", granted.as_ref().err());
    drop((moved, other, granted));
}

#[test]
fn a_killed_nodes_leases_expire_and_its_streams_can_be_published_on_another() {
    let pg = Postgres::start();
    let (mut a, b) = (node(&pg), node(&pg));
    let dir = TempDir::new("cluster-kill");
    let (_, token) = a.create_token("publish", json!({"label": "moves"}));
    let publisher = a.start_publisher(
        &dir,
        "live/cam1",
        &publish_args(&a.rtmp_url("live/cam1", Some(&token)), None),
    );
    // Renewed: the lease outlives its first term.
    std::thread::sleep(LEASE_TTL + LEASE_RENEW);
    assert!(publish(&b, "cam1", &token).is_err());
    a.kill();
    let killed = Instant::now();
    drop(publisher);
    // The lease outlives A by what was left of its term: B is refused at first...
    assert!(
        publish(&b, "cam1", &token).is_err(),
        "refused while the lease lasts"
    );
    // ...and publishes once it expired, within LEASE_TTL of the kill.
    let expired = wait_until(LEASE_TTL + LEASE_RENEW, || {
        publish(&b, "cam1", &token).is_ok()
    });
    let after = killed.elapsed();
    eprintln!("published on B {} ms after A was killed", after.as_millis());
    assert!(
        expired,
        "the lease did not expire within {LEASE_TTL:?} and a renewal"
    );
    assert!(
        after >= LEASE_TTL - LEASE_RENEW - Duration::from_millis(500),
        "the lease lasted {after:?}, less than its term"
    );
    // A real encoder publishes there.
    let _publisher = b.start_publisher(
        &dir,
        "live/cam1",
        &publish_args(&b.rtmp_url("live/cam1", Some(&token)), None),
    );
    assert_eq!(leases(&pg), "live/cam1");
}

/// Live sessions of `protocol` and `action` on `s`, by its metrics.
fn live_sessions(s: &Server, protocol: &str, action: &str) -> u64 {
    s.metric(&format!(
        "streamgate_sessions{{protocol=\"{protocol}\",action=\"{action}\"}}"
    )) as u64
}

/// An anonymous RTMP viewer of `live/<stream>` on `s`.
fn rtmp_viewer(s: &Server, stream: &str) -> Result<RtmpClient, String> {
    let mut c = RtmpClient::connect(s.rtmp, "live")?;
    c.play(stream)?;
    Ok(c)
}

/// Two nodes, A publishing `live/cam1` with ffmpeg and B having had the time to learn of it.
struct OriginAndEdge {
    a: Server,
    b: Server,
    /// The publish token's id.
    id: i64,
    _publisher: ffmpeg::Proc,
    _dir: TempDir,
}

fn origin_and_edge(pg: &Postgres, tag: &str) -> OriginAndEdge {
    let (a, b) = (node(pg), node(pg));
    let dir = TempDir::new(tag);
    let (id, token) = a.create_token("publish", json!({"label": "origin"}));
    let publisher = a.start_publisher(
        &dir,
        "live/cam1",
        &publish_args(&a.rtmp_url("live/cam1", Some(&token)), None),
    );
    // B learns of the publish at its next renewal.
    std::thread::sleep(LEASE_RENEW + Duration::from_millis(300));
    OriginAndEdge {
        a,
        b,
        id,
        _publisher: publisher,
        _dir: dir,
    }
}

#[test]
fn a_stream_published_on_one_node_plays_on_another_over_every_protocol() {
    let pg = Postgres::start();
    // The publisher and its directory live as long as the test.
    let OriginAndEdge {
        a,
        b,
        _publisher,
        _dir,
        ..
    } = origin_and_edge(&pg, "cluster-edge");
    let dir = TempDir::new("cluster-edge-recordings");
    // A viewer B refuses makes it pull nothing.
    assert!(rtmp_viewer(&b, "cam1?token=not-a-token-0123456789").is_err());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        live_sessions(&a, "rtmp", "play"),
        0,
        "pulled for a refused viewer"
    );
    // RTMP, anonymous: picture and sound.
    let rtmp = rtmp_viewer(&b, "cam1")
        .unwrap_or_else(|e| panic!("{e}"))
        .watch();
    // SRT, recorded by ffmpeg.
    let srt_file = dir.path().join("edge-srt.flv");
    let srt_args =
        ffmpeg::record_args(&srt::url(b.srt, "live/cam1,mode=request", ""), 4, &srt_file);
    let srt_recorder = std::thread::spawn(move || ffmpeg::run(&srt_args, Duration::from_secs(30)));
    // WebRTC in a browser, anonymous.
    let mut browser = Browser::launch();
    let tab = browser.open(&format!("http://{}/play.html?id=live/cam1", b.http));
    wait_status(&mut browser, &tab, "playing", 20);
    assert_plays(
        &mut browser,
        &tab,
        "streamgate.state.pc",
        "webrtc on the edge",
    );
    let (out, _) = srt_recorder.join().unwrap_or_else(|_| panic!("recorder"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_picture_and_sound("srt", &srt_file);
    let report = rtmp.finish();
    assert!(report.video > 60 && report.audio > 60, "rtmp: {report:?}");
    // All of them from one pull: A has one viewer, B.
    assert_eq!(live_sessions(&a, "rtmp", "play"), 1);
    assert_eq!(live_sessions(&b, "cluster", "publish"), 1);
    // The pull stops with B's last viewer.
    browser.close(&tab);
    let stopped = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || live_sessions(
            &a, "rtmp", "play"
        ) == 0),
        "the pull went on without viewers"
    );
    eprintln!(
        "pull stopped {} ms after B's last viewer left",
        stopped.elapsed().as_millis()
    );
    assert_eq!(live_sessions(&b, "cluster", "publish"), 0);
    // HLS, as a player opens it (the master playlist), pulls again.
    let hls_file = dir.path().join("edge-hls.flv");
    let hls_url = format!("http://{}{}", b.http, hls::master_path("live/cam1", None));
    let (out, _) = ffmpeg::run(
        &ffmpeg::record_args(&hls_url, 4, &hls_file),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_picture_and_sound("hls", &hls_file);
    assert_eq!(live_sessions(&a, "rtmp", "play"), 1);
}

/// Asserts that a recording has H.264 and AAC, a few seconds of each.
fn assert_picture_and_sound(what: &str, file: &std::path::Path) {
    let p = ffmpeg::probe(file);
    assert_eq!(p.video_codec.as_deref(), Some("h264"), "{what}: {p:?}");
    assert_eq!(p.audio_codec.as_deref(), Some("aac"), "{what}: {p:?}");
    assert!(
        p.video_packets > 60 && p.audio_packets > 60,
        "{what}: {p:?}"
    );
}

#[test]
fn deleting_the_publish_token_through_a_third_node_ends_the_publish_and_the_edge_viewers() {
    let pg = Postgres::start();
    let (a, b, c) = (node(&pg), node(&pg), node(&pg));
    let dir = TempDir::new("cluster-delete");
    let (id, token) = c.create_token("publish", json!({"label": "through C"}));
    let (_, viewer_token) = c.create_token("subscribe", json!({"label": "viewer"}));
    // A hears of the token from C.
    assert!(wait_until(Duration::from_secs(1), || publish(
        &a, "probe", &token
    )
    .is_ok()));
    let mut publisher = a.start_publisher(
        &dir,
        "live/cam1",
        &publish_args(&a.rtmp_url("live/cam1", Some(&token)), None),
    );
    std::thread::sleep(LEASE_RENEW + Duration::from_millis(300));
    // On B: an anonymous viewer and one with a subscribe token, both playing.
    let mut anonymous = rtmp_viewer(&b, "cam1").unwrap_or_else(|e| panic!("{e}"));
    let mut with_token =
        rtmp_viewer(&b, &format!("cam1?token={viewer_token}")).unwrap_or_else(|e| panic!("{e}"));
    for v in [&mut anonymous, &mut with_token] {
        let (video, audio) = v.count_media(Duration::from_secs(2)).unwrap_or_default();
        assert!(video > 10 && audio > 10, "{video} {audio}");
    }
    let start = Instant::now();
    let r = c.api("DELETE", &format!("/api/publish_token/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    for (what, v) in [
        ("anonymous", &mut anonymous),
        ("with a token", &mut with_token),
    ] {
        let left = Duration::from_secs(1).saturating_sub(start.elapsed());
        assert!(
            closed_within(&mut v.socket, left),
            "B's viewer {what} still plays"
        );
    }
    let left = Duration::from_secs(1).saturating_sub(start.elapsed());
    assert!(
        publisher.wait_exit(left).is_some(),
        "A's publish still runs"
    );
    eprintln!(
        "publish on A and viewers on B ended {} ms after the deletion through C",
        start.elapsed().as_millis()
    );
    assert!(publish(&a, "cam1", &token).is_err());
}

#[test]
fn the_edge_hop_adds_little_latency() {
    let pg = Postgres::start();
    let OriginAndEdge {
        a,
        b,
        _publisher,
        _dir,
        ..
    } = origin_and_edge(&pg, "cluster-latency");
    let mut on_b = rtmp_viewer(&b, "cam1").unwrap_or_else(|e| panic!("{e}"));
    let mut on_a = rtmp_viewer(&a, "cam1").unwrap_or_else(|e| panic!("{e}"));
    // The same frames, read on the origin and on the edge at once.
    let read = Duration::from_secs(5);
    let ((at_a, error_a), (at_b, error_b)) = std::thread::scope(|scope| {
        let on_b = scope.spawn(|| on_b.video_arrivals(read));
        let at_a = on_a.video_arrivals(read);
        (at_a, on_b.join().unwrap_or_default())
    });
    let at_a: std::collections::HashMap<u32, Instant> = at_a.into_iter().collect();
    let mut extra: Vec<f64> = at_b
        .iter()
        .filter_map(|(ts, t)| {
            at_a.get(ts).map(|a| match t.checked_duration_since(*a) {
                Some(later) => later.as_secs_f64() * 1000.0,
                None => -(a.duration_since(*t).as_secs_f64() * 1000.0),
            })
        })
        .collect();
    // About 150 in five seconds; fewer on a loaded machine.
    assert!(
        extra.len() > 30,
        "{} frames seen on both ({} on A, {} on B; errors {error_a:?}, {error_b:?})",
        extra.len(),
        at_a.len(),
        at_b.len()
    );
    extra.sort_by(f64::total_cmp);
    let at = |q: f64| extra[((extra.len() - 1) as f64 * q) as usize];
    eprintln!(
        "edge hop: {} frames, extra latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        extra.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    // Far below a GOP: the edge forwards frames as they come, it does not wait for a GOP.
    assert!(at(0.5) < 250.0, "p50 {:.1} ms", at(0.5));
}

#[test]
fn a_viewer_waiting_on_one_node_gets_the_stream_once_another_node_publishes_it() {
    let pg = Postgres::start();
    let (a, b) = (node(&pg), node(&pg));
    let dir = TempDir::new("cluster-waiting");
    let (_, token) = a.create_token("publish", json!({"label": "origin"}));
    let (_, viewer_token) = a.create_token("subscribe", json!({"label": "viewer"}));
    // A viewer with a subscribe token waits on B before anything is published.
    let waiting = wait_until(Duration::from_secs(1), || {
        rtmp_viewer(&b, &format!("probe?token={viewer_token}")).is_ok()
    });
    assert!(waiting, "B knows the subscribe token");
    let viewer = rtmp_viewer(&b, &format!("cam1?token={viewer_token}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .watch();
    let _publisher = a.start_publisher(
        &dir,
        "live/cam1",
        &publish_args(&a.rtmp_url("live/cam1", Some(&token)), None),
    );
    // B pulls once a renewal told it where the stream is.
    assert!(
        wait_until(LEASE_RENEW * 3, || live_sessions(&b, "cluster", "publish")
            == 1),
        "B did not pull"
    );
    std::thread::sleep(Duration::from_secs(2));
    let report = viewer.finish();
    assert!(report.video > 30 && report.audio > 30, "{report:?}");
}

#[test]
fn a_stream_that_newly_needs_subscribe_tokens_ends_its_anonymous_viewers_on_every_node() {
    let pg = Postgres::start();
    let OriginAndEdge {
        a,
        b,
        id,
        _publisher,
        _dir,
    } = origin_and_edge(&pg, "cluster-protect");
    let (_, viewer_token) = a.create_token("subscribe", json!({"label": "viewer"}));
    let mut anonymous = rtmp_viewer(&b, "cam1").unwrap_or_else(|e| panic!("{e}"));
    let (video, _) = anonymous
        .count_media(Duration::from_secs(1))
        .unwrap_or_default();
    assert!(video > 5, "{video}");
    let start = Instant::now();
    let r = a.api(
        "PUT",
        &format!("/api/publish_token/{id}"),
        Some(r#"{"subscribeRequiresAuth": true}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        closed_within(&mut anonymous.socket, Duration::from_secs(1)),
        "B's anonymous viewer still plays"
    );
    eprintln!(
        "anonymous viewer on B ended {} ms after the change",
        start.elapsed().as_millis()
    );
    // From then on, anonymous viewers are refused on B, for the token, and a viewer with one
    // plays there.
    for _ in 0..5 {
        assert!(rtmp_viewer(&b, "cam1").is_err(), "anonymous admitted again");
        std::thread::sleep(Duration::from_millis(400));
    }
    assert!(refusals(&b, "rtmp", "missing") >= 5);
    let mut with_token =
        rtmp_viewer(&b, &format!("cam1?token={viewer_token}")).unwrap_or_else(|e| panic!("{e}"));
    let (video, audio) = with_token
        .count_media(Duration::from_secs(3))
        .unwrap_or_default();
    assert!(video > 10 && audio > 10, "{video} {audio}");
}
