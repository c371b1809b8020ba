//! Decisions per second for stored opaque tokens, on one thread.
//!
//! Run: `cargo bench -p streamgate-auth --bench authorize`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use streamgate_auth::jwt::JwtVerifier;
use streamgate_auth::rules::{IpRule, StreamRule};
use streamgate_auth::{
    unix_millis, AccessRequest, Action, Auth, AuthConfig, MemoryStore, Protocol, Secret,
    StreamName, TokenKind, TokenSpec,
};

const RUN: Duration = Duration::from_secs(2);
/// Tokens in the index besides the one presented, so lookups hit a realistic table.
const OTHER_TOKENS: usize = 10_000;

fn main() {
    let auth = Auth::open(Arc::new(MemoryStore::default()), AuthConfig::default())
        .unwrap_or_else(|e| panic!("open: {e}"));
    let now = SystemTime::now();
    for i in 0..OTHER_TOKENS {
        let mut spec = TokenSpec::new(format!("t{i}"));
        spec.streams =
            vec![StreamRule::exact(&format!("live/s{i}")).unwrap_or_else(|e| panic!("{e}"))];
        auth.create(TokenKind::Subscribe, spec, now)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut plain = TokenSpec::new("plain");
    plain.streams = vec![StreamRule::exact("live/cam1").unwrap_or_else(|e| panic!("{e}"))];
    let mut ruled = TokenSpec::new("ruled");
    ruled.streams = vec![StreamRule::regex("live/cam[0-9]+").unwrap_or_else(|e| panic!("{e}"))];
    ruled.allowed_ip_addresses =
        vec![IpRule::parse("127.0.0.0/8").unwrap_or_else(|e| panic!("{e}"))];
    ruled.expires_on = Some(i64::MAX);
    let stream = StreamName::new("live/cam1").unwrap_or_else(|e| panic!("{e}"));

    let jwt_auth = signed_token_auth();
    let exp = unix_millis(now) / 1000 + 3600;
    let claims = serde_json::json!({"type": "play", "streamId": "live/cam1", "exp": exp});
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let with_kid = |alg, kid: &str, key: jsonwebtoken::EncodingKey| {
        let mut h = jsonwebtoken::Header::new(alg);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, &claims, &key).unwrap_or_else(|e| panic!("{e}"))
    };
    let rs = with_kid(
        jsonwebtoken::Algorithm::RS256,
        "rsa-1",
        jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("../testdata/rsa.pem"))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let ed = with_kid(
        jsonwebtoken::Algorithm::EdDSA,
        "ed-1",
        jsonwebtoken::EncodingKey::from_ed_pem(include_bytes!("../testdata/ed25519.pem"))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    for (what, token) in [
        ("signed HS256", hs),
        ("signed RS256", rs),
        ("signed EdDSA", ed),
    ] {
        let req = AccessRequest {
            action: Action::Play,
            stream: &stream,
            token: Some(&token),
            peer_ip: "127.0.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
            origin: None,
            referer: None,
            user_agent: None,
            protocol: Protocol::Rtmp,
        };
        run(&format!("play, {what}"), || {
            let grant = jwt_auth.authorize(black_box(&req), now);
            assert!(grant.is_ok());
            drop(black_box(grant));
        });
    }

    for (what, kind, spec, action) in [
        (
            "play, exact stream",
            TokenKind::Subscribe,
            plain.clone(),
            Action::Play,
        ),
        (
            "play, regex + CIDR + expiry",
            TokenKind::Subscribe,
            ruled,
            Action::Play,
        ),
        (
            "publish (lease taken and released)",
            TokenKind::Publish,
            plain,
            Action::Publish,
        ),
    ] {
        let (_, secret) = auth
            .create(kind, spec, now)
            .unwrap_or_else(|e| panic!("{e}"));
        let req = AccessRequest {
            action,
            stream: &stream,
            token: Some(secret.expose()),
            peer_ip: "127.0.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
            origin: None,
            referer: None,
            user_agent: None,
            protocol: Protocol::Rtmp,
        };
        run(what, || {
            let grant = auth.authorize(black_box(&req), now);
            assert!(grant.is_ok());
            drop(black_box(grant));
        });
    }
}

const HS_SECRET: &str = "bench-signing-key-0123456789abcdef0123";

fn signed_token_auth() -> Auth {
    let verifier = JwtVerifier::new(
        Some(&Secret::from_string(HS_SECRET.into())),
        Some(include_str!("../testdata/jwks.json")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Auth::open(Arc::new(MemoryStore::default()), AuthConfig::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .with_jwt(verifier)
}

/// Runs `decide` for [`RUN`] on this thread and prints the rate.
fn run(what: &str, mut decide: impl FnMut()) {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < RUN {
        for _ in 0..100 {
            decide();
        }
        n += 100;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "authorize {what}: {:.0} decisions/s ({:.0} ns each, grant registered and dropped)",
        n as f64 / secs,
        secs * 1e9 / n as f64
    );
}
