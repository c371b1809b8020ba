//! Decision-table, race, restart and cancellation tests for the auth service.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::rules::{HostPattern, IpRule, StreamRule};
use crate::*;

const T0: u64 = 1_800_000_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn mem_auth(config: AuthConfig) -> Auth {
    Auth::open(Arc::new(MemoryStore::default()), config).unwrap()
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

struct Req {
    action: Action,
    stream: StreamName,
    token: Option<String>,
    ip: IpAddr,
    origin: Option<&'static str>,
    referer: Option<&'static str>,
    ua: Option<&'static str>,
}

impl Req {
    fn new(action: Action, stream: &str, token: Option<&Secret>) -> Self {
        Self {
            action,
            stream: name(stream),
            token: token.map(|s| s.expose().to_owned()),
            ip: "127.0.0.1".parse().unwrap(),
            origin: None,
            referer: None,
            ua: None,
        }
    }
    fn ip(mut self, ip: &str) -> Self {
        self.ip = ip.parse().unwrap();
        self
    }
    fn run(&self, auth: &Auth, now: SystemTime) -> Result<Grant, Denial> {
        auth.authorize(
            &AccessRequest {
                action: self.action,
                stream: &self.stream,
                token: self.token.as_deref(),
                peer_ip: self.ip,
                origin: self.origin,
                referer: self.referer,
                user_agent: self.ua,
                protocol: Protocol::Rtmp,
            },
            now,
        )
    }
}

fn spec(edit: impl FnOnce(&mut TokenSpec)) -> TokenSpec {
    let mut s = TokenSpec::new("t");
    edit(&mut s);
    s
}

#[test]
fn decision_table() {
    type Case = (
        &'static str,
        TokenKind,
        TokenSpec,
        fn(Req) -> Req,
        Action,
        &'static str,
        Result<(), Denial>,
    );
    let exp = Some(i64::try_from(T0 * 1000).unwrap() + 10_000);
    let cases: Vec<Case> = vec![
        (
            "server-wide publish",
            TokenKind::Publish,
            spec(|_| {}),
            |r| r,
            Action::Publish,
            "live/x",
            Ok(()),
        ),
        (
            "exact stream ok",
            TokenKind::Publish,
            spec(|s| s.streams = vec![StreamRule::exact("live/a").unwrap()]),
            |r| r,
            Action::Publish,
            "live/a",
            Ok(()),
        ),
        (
            "exact stream other",
            TokenKind::Publish,
            spec(|s| s.streams = vec![StreamRule::exact("live/a").unwrap()]),
            |r| r,
            Action::Publish,
            "live/ab",
            Err(Denial::StreamNotAllowed),
        ),
        (
            "regex ok",
            TokenKind::Publish,
            spec(|s| s.streams = vec![StreamRule::regex("live/cam[0-9]").unwrap()]),
            |r| r,
            Action::Publish,
            "live/cam7",
            Ok(()),
        ),
        (
            "regex anchored end",
            TokenKind::Publish,
            spec(|s| s.streams = vec![StreamRule::regex("live/cam[0-9]").unwrap()]),
            |r| r,
            Action::Publish,
            "live/cam77",
            Err(Denial::StreamNotAllowed),
        ),
        (
            "regex anchored start",
            TokenKind::Publish,
            spec(|s| s.streams = vec![StreamRule::regex("cam[0-9]").unwrap()]),
            |r| r,
            Action::Publish,
            "live/cam7",
            Err(Denial::StreamNotAllowed),
        ),
        (
            "subscribe token to publish",
            TokenKind::Subscribe,
            spec(|_| {}),
            |r| r,
            Action::Publish,
            "live/x",
            Err(Denial::WrongKind),
        ),
        (
            "publish token to play",
            TokenKind::Publish,
            spec(|_| {}),
            |r| r,
            Action::Play,
            "live/x",
            Err(Denial::WrongKind),
        ),
        (
            "subscribe token plays a stream not live",
            TokenKind::Subscribe,
            spec(|_| {}),
            |r| r,
            Action::Play,
            "live/x",
            Ok(()),
        ),
        (
            "disabled",
            TokenKind::Publish,
            spec(|s| s.is_active = false),
            |r| r,
            Action::Publish,
            "live/x",
            Err(Denial::Disabled),
        ),
        (
            "expires later",
            TokenKind::Publish,
            spec(|s| s.expires_on = exp),
            |r| r,
            Action::Publish,
            "live/x",
            Ok(()),
        ),
        (
            "expired exactly now",
            TokenKind::Publish,
            spec(|s| s.expires_on = Some(i64::try_from(T0 * 1000).unwrap())),
            |r| r,
            Action::Publish,
            "live/x",
            Err(Denial::Expired),
        ),
        (
            "expired a ms ago",
            TokenKind::Publish,
            spec(|s| s.expires_on = Some(i64::try_from(T0 * 1000).unwrap() - 1)),
            |r| r,
            Action::Publish,
            "live/x",
            Err(Denial::Expired),
        ),
        (
            "cidr in",
            TokenKind::Publish,
            spec(|s| s.allowed_ip_addresses = vec![IpRule::parse("10.0.0.0/24").unwrap()]),
            |r| r.ip("10.0.0.255"),
            Action::Publish,
            "live/x",
            Ok(()),
        ),
        (
            "cidr out",
            TokenKind::Publish,
            spec(|s| s.allowed_ip_addresses = vec![IpRule::parse("10.0.0.0/24").unwrap()]),
            |r| r.ip("10.0.1.0"),
            Action::Publish,
            "live/x",
            Err(Denial::IpNotAllowed),
        ),
        (
            "cidr v4-mapped peer",
            TokenKind::Publish,
            spec(|s| s.allowed_ip_addresses = vec![IpRule::parse("10.0.0.0/24").unwrap()]),
            |r| r.ip("::ffff:10.0.0.3"),
            Action::Publish,
            "live/x",
            Ok(()),
        ),
        (
            "ipv6 in",
            TokenKind::Publish,
            spec(|s| s.allowed_ip_addresses = vec![IpRule::parse("2001:db8::/32").unwrap()]),
            |r| r.ip("2001:db8:1::5"),
            Action::Publish,
            "live/x",
            Ok(()),
        ),
        (
            "ipv6 out",
            TokenKind::Publish,
            spec(|s| s.allowed_ip_addresses = vec![IpRule::parse("2001:db8::/32").unwrap()]),
            |r| r.ip("2001:db9::5"),
            Action::Publish,
            "live/x",
            Err(Denial::IpNotAllowed),
        ),
        (
            "loopback excluded",
            TokenKind::Publish,
            spec(|s| s.allowed_ip_addresses = vec![IpRule::parse("192.0.2.1").unwrap()]),
            |r| r,
            Action::Publish,
            "live/x",
            Err(Denial::IpNotAllowed),
        ),
        (
            "origin wildcard sub",
            TokenKind::Subscribe,
            spec(|s| s.allowed_origins = vec![HostPattern::parse("*.example.com").unwrap()]),
            |mut r| {
                r.origin = Some("https://www.example.com");
                r
            },
            Action::Play,
            "live/x",
            Ok(()),
        ),
        (
            "origin wildcard apex",
            TokenKind::Subscribe,
            spec(|s| s.allowed_origins = vec![HostPattern::parse("*.example.com").unwrap()]),
            |mut r| {
                r.origin = Some("https://example.com");
                r
            },
            Action::Play,
            "live/x",
            Err(Denial::OriginNotAllowed),
        ),
        (
            "origin suffix trick",
            TokenKind::Subscribe,
            spec(|s| s.allowed_origins = vec![HostPattern::parse("*.example.com").unwrap()]),
            |mut r| {
                r.origin = Some("https://evilexample.com");
                r
            },
            Action::Play,
            "live/x",
            Err(Denial::OriginNotAllowed),
        ),
        (
            "origin prefix trick",
            TokenKind::Subscribe,
            spec(|s| s.allowed_origins = vec![HostPattern::parse("example.com").unwrap()]),
            |mut r| {
                r.origin = Some("https://example.com.evil.net");
                r
            },
            Action::Play,
            "live/x",
            Err(Denial::OriginNotAllowed),
        ),
        (
            "origin exact",
            TokenKind::Subscribe,
            spec(|s| s.allowed_origins = vec![HostPattern::parse("example.com").unwrap()]),
            |mut r| {
                r.origin = Some("https://EXAMPLE.com:443");
                r
            },
            Action::Play,
            "live/x",
            Ok(()),
        ),
        (
            "origin missing",
            TokenKind::Subscribe,
            spec(|s| s.allowed_origins = vec![HostPattern::parse("example.com").unwrap()]),
            |r| r,
            Action::Play,
            "live/x",
            Err(Denial::OriginNotAllowed),
        ),
        (
            "referer ok",
            TokenKind::Subscribe,
            spec(|s| s.allowed_referers = vec![HostPattern::parse("*.example.com").unwrap()]),
            |mut r| {
                r.referer = Some("https://a.example.com/page?x=1");
                r
            },
            Action::Play,
            "live/x",
            Ok(()),
        ),
        (
            "referer other",
            TokenKind::Subscribe,
            spec(|s| s.allowed_referers = vec![HostPattern::parse("*.example.com").unwrap()]),
            |mut r| {
                r.referer = Some("https://a.example.org/");
                r
            },
            Action::Play,
            "live/x",
            Err(Denial::RefererNotAllowed),
        ),
        (
            "ua exact",
            TokenKind::Publish,
            spec(|s| s.allowed_user_agents = vec!["OBS/30".into()]),
            |mut r| {
                r.ua = Some("OBS/30");
                r
            },
            Action::Publish,
            "live/x",
            Ok(()),
        ),
        (
            "ua other",
            TokenKind::Publish,
            spec(|s| s.allowed_user_agents = vec!["OBS/30".into()]),
            |mut r| {
                r.ua = Some("OBS/300");
                r
            },
            Action::Publish,
            "live/x",
            Err(Denial::UserAgentNotAllowed),
        ),
        (
            "ua missing",
            TokenKind::Publish,
            spec(|s| s.allowed_user_agents = vec!["OBS/30".into()]),
            |r| r,
            Action::Publish,
            "live/x",
            Err(Denial::UserAgentNotAllowed),
        ),
    ];
    for (what, kind, spec, edit, action, stream, want) in cases {
        let auth = mem_auth(AuthConfig::default());
        let (_, secret) = auth.create(kind, spec, at(T0 - 100)).unwrap();
        let got = edit(Req::new(action, stream, Some(&secret)))
            .run(&auth, at(T0))
            .map(|_| ());
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn unknown_missing_and_anonymous_play() {
    let auth = mem_auth(AuthConfig::default());
    let (_, publish) = auth
        .create(TokenKind::Publish, spec(|_| {}), at(T0))
        .unwrap();
    let garbage = Secret::from_string("sgp_not-a-real-token".into());
    assert_eq!(
        Req::new(Action::Publish, "live/a", None)
            .run(&auth, at(T0))
            .unwrap_err(),
        Denial::Missing
    );
    assert_eq!(
        Req::new(Action::Publish, "live/a", Some(&garbage))
            .run(&auth, at(T0))
            .unwrap_err(),
        Denial::Unknown
    );
    assert_eq!(
        Req::new(Action::Play, "live/a", None)
            .run(&auth, at(T0))
            .unwrap_err(),
        Denial::StreamNotLive
    );
    let live = Req::new(Action::Publish, "live/a", Some(&publish))
        .run(&auth, at(T0))
        .unwrap();
    let viewer = Req::new(Action::Play, "live/a", None)
        .run(&auth, at(T0))
        .unwrap();
    assert_eq!(viewer.token_id(), None);
    assert_eq!(
        auth.registry().counts(),
        SessionCounts {
            publishers: 1,
            viewers: 1
        }
    );
    drop(live);
    assert_eq!(
        Req::new(Action::Play, "live/a", None)
            .run(&auth, at(T0))
            .unwrap_err(),
        Denial::StreamNotLive
    );
    drop(viewer);
    assert_eq!(auth.registry().counts(), SessionCounts::default());

    let strict = mem_auth(AuthConfig {
        require_play_token: true,
        ..AuthConfig::default()
    });
    let (_, p) = strict
        .create(TokenKind::Publish, spec(|_| {}), at(T0))
        .unwrap();
    let _live = Req::new(Action::Publish, "live/a", Some(&p))
        .run(&strict, at(T0))
        .unwrap();
    assert_eq!(
        Req::new(Action::Play, "live/a", None)
            .run(&strict, at(T0))
            .unwrap_err(),
        Denial::Missing
    );

    let open = mem_auth(AuthConfig {
        open_publish: true,
        ..AuthConfig::default()
    });
    let g = Req::new(Action::Publish, "live/a", None)
        .run(&open, at(T0))
        .unwrap();
    assert_eq!(
        Req::new(Action::Publish, "live/a", None)
            .run(&open, at(T0))
            .unwrap_err(),
        Denial::StreamInUse
    );
    drop(g);
}

#[test]
fn subscribe_requires_auth_and_live_once() {
    let auth = mem_auth(AuthConfig::default());
    let (_, publish) = auth
        .create(
            TokenKind::Publish,
            spec(|s| s.subscribe_requires_auth = true),
            at(T0),
        )
        .unwrap();
    let (_, other_stream) = auth
        .create(
            TokenKind::Subscribe,
            spec(|s| s.streams = vec![StreamRule::exact("live/b").unwrap()]),
            at(T0),
        )
        .unwrap();
    let (_, regex) = auth
        .create(
            TokenKind::Subscribe,
            spec(|s| s.streams = vec![StreamRule::regex("live/.+").unwrap()]),
            at(T0),
        )
        .unwrap();
    let first = Req::new(Action::Publish, "live/a", Some(&publish))
        .run(&auth, at(T0))
        .unwrap();
    assert!(first.subscribe_requires_auth());
    assert_eq!(
        Req::new(Action::Publish, "live/a", Some(&publish))
            .run(&auth, at(T0))
            .unwrap_err(),
        Denial::StreamInUse,
        "a name is live once"
    );
    assert_eq!(
        Req::new(Action::Play, "live/a", None)
            .run(&auth, at(T0))
            .unwrap_err(),
        Denial::Missing
    );
    assert_eq!(
        Req::new(Action::Play, "live/a", Some(&other_stream))
            .run(&auth, at(T0))
            .unwrap_err(),
        Denial::StreamNotAllowed
    );
    assert!(Req::new(Action::Play, "live/a", Some(&regex))
        .run(&auth, at(T0))
        .is_ok());
    drop(first);
    assert!(Req::new(Action::Publish, "live/a", Some(&publish))
        .run(&auth, at(T0))
        .is_ok());
}

#[test]
fn refused_attempts_spend_nothing() {
    let auth = mem_auth(AuthConfig::default());
    let (rec, once) = auth
        .create(TokenKind::Publish, spec(|s| s.max_uses = Some(1)), at(T0))
        .unwrap();
    let (_, other) = auth
        .create(TokenKind::Publish, spec(|_| {}), at(T0))
        .unwrap();
    let live = Req::new(Action::Publish, "live/a", Some(&other))
        .run(&auth, at(T0))
        .unwrap();
    assert_eq!(
        Req::new(Action::Publish, "live/a", Some(&once))
            .run(&auth, at(T0))
            .unwrap_err(),
        Denial::StreamInUse
    );
    assert_eq!(auth.get(TokenKind::Publish, rec.id).unwrap().uses, 0);
    drop(live);
    let granted = Req::new(Action::Publish, "live/a", Some(&once))
        .run(&auth, at(T0))
        .unwrap();
    drop(granted);
    assert_eq!(
        Req::new(Action::Publish, "live/a", Some(&once))
            .run(&auth, at(T0))
            .unwrap_err(),
        Denial::UsesExhausted
    );
    assert!(
        auth.registry().live(&name("live/a")).is_none(),
        "a refused use leaves no lease behind"
    );
}

#[test]
fn bind_ips_on_usage() {
    let auth = mem_auth(AuthConfig::default());
    let (_, s) = auth
        .create(
            TokenKind::Subscribe,
            spec(|s| s.bind_ips_on_usage = Some(2)),
            at(T0),
        )
        .unwrap();
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.1", "::ffff:10.0.0.2"] {
        assert!(
            Req::new(Action::Play, "live/a", Some(&s))
                .ip(ip)
                .run(&auth, at(T0))
                .is_ok(),
            "{ip}"
        );
    }
    assert_eq!(
        Req::new(Action::Play, "live/a", Some(&s))
            .ip("10.0.0.3")
            .run(&auth, at(T0))
            .unwrap_err(),
        Denial::IpNotAllowed
    );
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("sg-auth-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn db(&self) -> PathBuf {
        self.0.join("tokens.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sqlite_auth(dir: &TempDir) -> Arc<Auth> {
    Arc::new(
        Auth::open(
            Arc::new(SqliteStore::open(&dir.db()).unwrap()),
            AuthConfig::default(),
        )
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_time_token_grants_exactly_once_under_a_race_and_after_restart() {
    let dir = TempDir::new("race");
    let auth = sqlite_auth(&dir);
    let (rec, secret) = auth
        .create(
            TokenKind::Subscribe,
            spec(|s| s.max_uses = Some(1)),
            SystemTime::now(),
        )
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..100u8 {
        let auth = Arc::clone(&auth);
        let secret = secret.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let r = Req::new(Action::Play, "live/a", Some(&secret)).ip(&format!("10.0.0.{i}"));
            r.run(&auth, SystemTime::now()).map(drop)
        }));
    }
    let mut granted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => granted += 1,
            Err(d) => assert_eq!(d, Denial::UsesExhausted),
        }
    }
    assert_eq!(granted, 1);
    drop(auth);

    let again = sqlite_auth(&dir);
    assert_eq!(again.get(TokenKind::Subscribe, rec.id).unwrap().uses, 1);
    assert_eq!(
        Req::new(Action::Play, "live/a", Some(&secret))
            .run(&again, SystemTime::now())
            .unwrap_err(),
        Denial::UsesExhausted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bind_ips_binds_exactly_n_under_a_race_and_after_restart() {
    let dir = TempDir::new("bind");
    let auth = sqlite_auth(&dir);
    let (rec, secret) = auth
        .create(
            TokenKind::Subscribe,
            spec(|s| s.bind_ips_on_usage = Some(3)),
            SystemTime::now(),
        )
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..100u8 {
        let auth = Arc::clone(&auth);
        let secret = secret.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            let ip = format!("10.0.{}.{}", i % 20, i);
            Req::new(Action::Play, "live/a", Some(&secret))
                .ip(&ip)
                .run(&auth, SystemTime::now())
                .map(drop)
        }));
    }
    let mut granted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => granted += 1,
            Err(d) => assert_eq!(d, Denial::IpNotAllowed),
        }
    }
    assert_eq!(granted, 3);
    let bound = auth.get(TokenKind::Subscribe, rec.id).unwrap().bound_ips;
    assert_eq!(bound.len(), 3);
    drop(auth);

    let again = sqlite_auth(&dir);
    let after = again.get(TokenKind::Subscribe, rec.id).unwrap().bound_ips;
    assert_eq!(after, bound);
    let ok_ip = after[0].to_string();
    assert!(Req::new(Action::Play, "live/a", Some(&secret))
        .ip(&ok_ip)
        .run(&again, SystemTime::now())
        .is_ok());
    assert_eq!(
        Req::new(Action::Play, "live/a", Some(&secret))
            .ip("192.0.2.1")
            .run(&again, SystemTime::now())
            .unwrap_err(),
        Denial::IpNotAllowed
    );
}

#[test]
fn tokens_and_edits_survive_restart_hashed() {
    let dir = TempDir::new("restart");
    let auth = sqlite_auth(&dir);
    let (rec, secret) = auth
        .create(
            TokenKind::Publish,
            spec(|s| s.tag = Some("cams".into())),
            at(T0),
        )
        .unwrap();
    let (gone, _) = auth
        .create(TokenKind::Publish, spec(|_| {}), at(T0))
        .unwrap();
    auth.update(
        TokenKind::Publish,
        rec.id,
        Box::new(|s| {
            s.label = "renamed".into();
            Ok(())
        }),
        false,
    )
    .unwrap();
    auth.delete(TokenKind::Publish, gone.id).unwrap();
    drop(auth);
    let bytes = std::fs::read(dir.db()).unwrap_or_default();
    let wal = std::fs::read(dir.0.join("tokens.db-wal")).unwrap_or_default();
    for file in [bytes, wal] {
        assert!(!file
            .windows(secret.expose().len())
            .any(|w| w == secret.expose().as_bytes()));
    }

    let again = sqlite_auth(&dir);
    let back = again.get(TokenKind::Publish, rec.id).unwrap();
    assert_eq!(back.spec.label, "renamed");
    assert_eq!(back.spec.tag.as_deref(), Some("cams"));
    assert!(matches!(
        again.get(TokenKind::Publish, gone.id),
        Err(AuthError::NotFound)
    ));
    assert!(
        matches!(
            again.get(TokenKind::Subscribe, rec.id),
            Err(AuthError::NotFound)
        ),
        "ids are per kind"
    );
    assert!(Req::new(Action::Publish, "live/a", Some(&secret))
        .run(&again, at(T0))
        .is_ok());
}

#[test]
fn delete_disable_refresh_and_expiry_cancel_sessions() {
    let auth = mem_auth(AuthConfig::default());
    let mk =
        |edit: fn(&mut TokenSpec)| auth.create(TokenKind::Publish, spec(edit), at(T0)).unwrap();
    let (deleted, s1) = mk(|_| {});
    let (disabled, s2) = mk(|_| {});
    let (rotated, s3) = mk(|_| {});
    let (_, s4) = mk(|s| s.expires_on = Some(i64::try_from(T0 * 1000).unwrap() + 5_000));
    let (renamed, s5) = mk(|_| {});
    let g1 = Req::new(Action::Publish, "live/1", Some(&s1))
        .run(&auth, at(T0))
        .unwrap();
    let g2 = Req::new(Action::Publish, "live/2", Some(&s2))
        .run(&auth, at(T0))
        .unwrap();
    let g3 = Req::new(Action::Publish, "live/3", Some(&s3))
        .run(&auth, at(T0))
        .unwrap();
    let g4 = Req::new(Action::Publish, "live/4", Some(&s4))
        .run(&auth, at(T0))
        .unwrap();
    let g5 = Req::new(Action::Publish, "live/5", Some(&s5))
        .run(&auth, at(T0))
        .unwrap();

    auth.delete(TokenKind::Publish, deleted.id).unwrap();
    auth.update(
        TokenKind::Publish,
        disabled.id,
        Box::new(|s| {
            s.is_active = false;
            Ok(())
        }),
        false,
    )
    .unwrap();
    let (_, new_secret) = auth
        .update(TokenKind::Publish, rotated.id, Box::new(|_| Ok(())), true)
        .unwrap();
    auth.update(
        TokenKind::Publish,
        renamed.id,
        Box::new(|s| {
            s.label = "x".into();
            Ok(())
        }),
        false,
    )
    .unwrap();
    assert!(g1.is_cancelled() && g2.is_cancelled() && g3.is_cancelled());
    assert!(
        !g4.is_cancelled() && !g5.is_cancelled(),
        "other edits leave sessions alone"
    );
    assert_eq!(auth.sweep_expired(at(T0 + 4)), 0);
    assert_eq!(auth.sweep_expired(at(T0 + 5)), 1);
    assert!(g4.is_cancelled());

    let new_secret = new_secret.unwrap();
    drop(g3);
    assert_eq!(
        Req::new(Action::Publish, "live/3", Some(&s3))
            .run(&auth, at(T0))
            .unwrap_err(),
        Denial::Unknown
    );
    assert!(Req::new(Action::Publish, "live/3", Some(&new_secret))
        .run(&auth, at(T0))
        .is_ok());
    assert_eq!(
        Req::new(Action::Publish, "live/2", Some(&s2))
            .run(&auth, at(T0))
            .unwrap_err(),
        Denial::Disabled
    );
}

fn edit(auth: &Auth, kind: TokenKind, id: TokenId, f: fn(&mut TokenSpec)) {
    auth.update(
        kind,
        id,
        Box::new(move |s| {
            f(s);
            Ok(())
        }),
        false,
    )
    .unwrap();
}

#[test]
fn narrowing_a_token_ends_the_sessions_it_no_longer_admits() {
    let auth = mem_auth(AuthConfig::default());
    let (tok, secret) = auth
        .create(TokenKind::Subscribe, spec(|_| {}), SystemTime::now())
        .unwrap();
    let now = SystemTime::now();
    let a = Req::new(Action::Play, "live/a", Some(&secret))
        .run(&auth, now)
        .unwrap();
    let b = Req::new(Action::Play, "live/b", Some(&secret))
        .run(&auth, now)
        .unwrap();
    let mut from_other = Req::new(Action::Play, "live/a", Some(&secret)).ip("10.1.2.3");
    from_other.ua = Some("ffmpeg");
    let c = from_other.run(&auth, now).unwrap();

    edit(&auth, TokenKind::Subscribe, tok.id, |s| {
        s.streams = vec![StreamRule::exact("live/a").unwrap()];
    });
    assert_eq!(
        b.end_reason(),
        Some(Revocation::NotAllowed(Denial::StreamNotAllowed))
    );
    assert!(!a.is_cancelled() && !c.is_cancelled(), "still admitted");

    edit(&auth, TokenKind::Subscribe, tok.id, |s| {
        s.streams = vec![StreamRule::exact("live/a").unwrap()];
        s.allowed_ip_addresses = vec![IpRule::parse("10.0.0.0/8").unwrap()];
    });
    assert_eq!(
        a.end_reason(),
        Some(Revocation::NotAllowed(Denial::IpNotAllowed))
    );
    assert!(!c.is_cancelled());

    edit(&auth, TokenKind::Subscribe, tok.id, |s| {
        s.allowed_user_agents = vec!["OBS".into()];
    });
    assert_eq!(
        c.end_reason(),
        Some(Revocation::NotAllowed(Denial::UserAgentNotAllowed))
    );
}

#[test]
fn subscribe_requires_auth_ends_anonymous_viewers_only() {
    let auth = mem_auth(AuthConfig::default());
    let (publish, p) = auth
        .create(TokenKind::Publish, spec(|_| {}), SystemTime::now())
        .unwrap();
    let (_, viewer_token) = auth
        .create(TokenKind::Subscribe, spec(|_| {}), SystemTime::now())
        .unwrap();
    let now = SystemTime::now();
    let publisher = Req::new(Action::Publish, "live/a", Some(&p))
        .run(&auth, now)
        .unwrap();
    let anonymous = Req::new(Action::Play, "live/a", None)
        .run(&auth, now)
        .unwrap();
    let with_token = Req::new(Action::Play, "live/a", Some(&viewer_token))
        .run(&auth, now)
        .unwrap();
    edit(&auth, TokenKind::Publish, publish.id, |s| {
        s.subscribe_requires_auth = true;
    });
    assert_eq!(anonymous.end_reason(), Some(Revocation::NowProtected));
    assert!(!with_token.is_cancelled() && !publisher.is_cancelled());
    assert_eq!(
        Req::new(Action::Play, "live/a", None)
            .run(&auth, now)
            .unwrap_err(),
        Denial::Missing
    );
    // The publish ends: the subscribe-token viewer stays for the next one.
    drop(publisher);
    assert!(!with_token.is_cancelled());
}

#[test]
fn an_anonymous_viewer_ends_with_its_publish_and_is_not_carried_over() {
    let auth = mem_auth(AuthConfig::default());
    let (_, public) = auth
        .create(TokenKind::Publish, spec(|_| {}), SystemTime::now())
        .unwrap();
    let (_, protected) = auth
        .create(
            TokenKind::Publish,
            spec(|s| s.subscribe_requires_auth = true),
            SystemTime::now(),
        )
        .unwrap();
    let now = SystemTime::now();
    let first = Req::new(Action::Publish, "live/a", Some(&public))
        .run(&auth, now)
        .unwrap();
    let anonymous = Req::new(Action::Play, "live/a", None)
        .run(&auth, now)
        .unwrap();
    drop(first);
    assert_eq!(anonymous.end_reason(), Some(Revocation::PublisherEnded));
    let _second = Req::new(Action::Publish, "live/a", Some(&protected))
        .run(&auth, now)
        .unwrap();
    assert_eq!(
        Req::new(Action::Play, "live/a", None)
            .run(&auth, now)
            .unwrap_err(),
        Denial::Missing
    );
}

#[test]
fn no_session_survives_the_delete_of_its_token_whatever_the_interleaving() {
    for round in 0..50 {
        let auth = Arc::new(mem_auth(AuthConfig::default()));
        let (tok, secret) = auth
            .create(TokenKind::Subscribe, spec(|_| {}), SystemTime::now())
            .unwrap();
        let start = Arc::new(std::sync::Barrier::new(5));
        let mut admitting = Vec::new();
        for i in 0..4 {
            let (auth, secret, start) = (Arc::clone(&auth), secret.clone(), Arc::clone(&start));
            admitting.push(std::thread::spawn(move || {
                start.wait();
                let mut grants = Vec::new();
                for _ in 0..200 {
                    let r = Req::new(Action::Play, &format!("live/{i}"), Some(&secret));
                    match r.run(&auth, SystemTime::now()) {
                        Ok(g) => grants.push(g),
                        Err(d) => assert_eq!(d, Denial::Unknown),
                    }
                }
                grants
            }));
        }
        start.wait();
        std::thread::yield_now();
        auth.delete(TokenKind::Subscribe, tok.id).unwrap();
        for t in admitting {
            for g in t.join().unwrap() {
                assert_eq!(
                    g.end_reason(),
                    Some(Revocation::Deleted),
                    "round {round}: a session outlived the delete of its token"
                );
            }
        }
    }
}

#[test]
fn an_update_during_a_decision_is_decided_with_the_new_rules() {
    for _ in 0..50 {
        let auth = Arc::new(mem_auth(AuthConfig::default()));
        let (tok, secret) = auth
            .create(TokenKind::Subscribe, spec(|_| {}), SystemTime::now())
            .unwrap();
        let worker = {
            let (auth, secret) = (Arc::clone(&auth), secret.clone());
            std::thread::spawn(move || {
                (0..300)
                    .filter_map(|_| {
                        Req::new(Action::Play, "live/b", Some(&secret))
                            .run(&auth, SystemTime::now())
                            .ok()
                    })
                    .collect::<Vec<_>>()
            })
        };
        edit(&auth, TokenKind::Subscribe, tok.id, |s| {
            s.streams = vec![StreamRule::exact("live/a").unwrap()];
        });
        for g in worker.join().unwrap() {
            assert!(
                g.is_cancelled(),
                "a session of live/b was admitted on the old rules and kept"
            );
        }
    }
}

#[test]
fn an_update_keeps_uses_spent_meanwhile_and_writes_only_the_change() {
    let dir = TempDir::new("delta");
    let auth = sqlite_auth(&dir);
    let (tok, secret) = auth
        .create(
            TokenKind::Subscribe,
            spec(|s| {
                s.max_uses = Some(10);
                s.bind_ips_on_usage = Some(3);
            }),
            SystemTime::now(),
        )
        .unwrap();
    let mut grants = Vec::new();
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
        grants.push(
            Req::new(Action::Play, "live/a", Some(&secret))
                .ip(ip)
                .run(&auth, SystemTime::now())
                .unwrap(),
        );
    }
    edit(&auth, TokenKind::Subscribe, tok.id, |s| {
        s.label = "renamed".into();
        s.bind_ips_on_usage = Some(2);
    });
    let after = auth.get(TokenKind::Subscribe, tok.id).unwrap();
    assert_eq!(after.uses, 3, "the update did not write back an old count");
    assert_eq!(after.bound_ips.len(), 2);
    grants.push(
        Req::new(Action::Play, "live/a", Some(&secret))
            .ip("10.0.0.1")
            .run(&auth, SystemTime::now())
            .unwrap(),
    );
    drop(auth);
    let again = sqlite_auth(&dir);
    let stored = again.get(TokenKind::Subscribe, tok.id).unwrap();
    assert_eq!(stored.uses, 4);
    assert_eq!(stored.spec.label, "renamed");
    assert_eq!(
        stored.bound_ips,
        vec![
            "10.0.0.1".parse::<IpAddr>().unwrap(),
            "10.0.0.2".parse().unwrap()
        ]
    );
}
