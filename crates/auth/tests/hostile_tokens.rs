//! Random and mutated tokens and headers through the decision: stored tokens with every kind
//! of rule, and signed ones (whose header, claims and signature a third-party parser reads).
//! Every request gets a grant or a denial, never a panic (the stable-toolchain counterpart of
//! the `auth_decision` fuzz target).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use proptest::prelude::*;
use serde_json::json;
use streamgate_auth::jwt::JwtVerifier;
use streamgate_auth::{
    AccessRequest, Action, Auth, AuthConfig, MemoryStore, Protocol, Secret, StreamName, TokenKind,
};

const JWT_KEY: &str = "hostile-token-test-key-0123456789abcdef";

/// An auth with a stored publish token full of rules, and its secret.
fn auth() -> (Auth, String) {
    let verifier = JwtVerifier::new(Some(&Secret::from_string(JWT_KEY.into())), None).unwrap();
    let auth = Auth::open(Arc::new(MemoryStore::default()), AuthConfig::default())
        .unwrap()
        .with_jwt(verifier);
    let spec = serde_json::from_value(json!({
        "label": "rules",
        "streams": [{"streamName": "live/.*", "isRegex": true}],
        "allowedOrigins": ["*.example.com"],
        "allowedReferers": ["example.org"],
        "allowedUserAgents": ["OBS/30"],
        "allowedIpAddresses": ["10.0.0.0/8", "2001:db8::/32"],
        "maxUses": 1000,
    }))
    .unwrap();
    let (_, secret) = auth
        .create(TokenKind::Publish, spec, SystemTime::now())
        .unwrap();
    (auth, secret.expose().to_owned())
}

fn jwt() -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"type": "publish", "streamId": "live/cam1", "exp": exp, "ip": ["10.1.2.3"]}),
        &EncodingKey::from_secret(JWT_KEY.as_bytes()),
    )
    .unwrap()
}

fn decide(auth: &Auth, token: &str, stream: &str, ip: IpAddr, header: &str) {
    let Ok(stream) = StreamName::new(stream) else {
        return;
    };
    for action in [Action::Publish, Action::Play] {
        let req = AccessRequest {
            action,
            stream: &stream,
            token: Some(token),
            peer_ip: ip,
            origin: Some(header),
            referer: Some(header),
            user_agent: Some(header),
            protocol: Protocol::WebRtc,
        };
        // Grants are dropped at once: the lease and the registration are given back.
        let _ = auth.authorize(&req, SystemTime::now() + Duration::from_secs(1));
    }
}

#[test]
fn the_seeds_are_granted() {
    let (auth, secret) = auth();
    let stream = StreamName::new("live/cam1").unwrap();
    let jwt = jwt();
    for token in [secret.as_str(), jwt.as_str()] {
        let req = AccessRequest {
            action: Action::Publish,
            stream: &stream,
            token: Some(token),
            peer_ip: "10.1.2.3".parse().unwrap(),
            origin: Some("https://a.example.com"),
            referer: Some("https://example.org/page"),
            user_agent: Some("OBS/30"),
            protocol: Protocol::WebRtc,
        };
        assert!(auth.authorize(&req, SystemTime::now()).is_ok(), "{token}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_tokens_and_headers_never_panic(
        use_jwt in any::<bool>(),
        at in any::<prop::sample::Index>(),
        splice in "[A-Za-z0-9_.=+/\\-]{0,24}",
        stream in "[a-z0-9/._\\-]{1,40}",
        ip in any::<[u8; 16]>(),
        v4 in any::<bool>(),
        header in "\\PC{0,80}",
    ) {
        let (auth, secret) = auth();
        let mut token = if use_jwt { jwt() } else { secret };
        let i = at.index(token.len() + 1);
        token.insert_str(i, &splice);
        let ip = if v4 {
            IpAddr::from([ip[0], ip[1], ip[2], ip[3]])
        } else {
            IpAddr::from(ip)
        };
        decide(&auth, &token, &stream, ip, &header);
    }

    #[test]
    fn random_tokens_never_panic(token in "\\PC{0,300}", dots in 0usize..4) {
        let (auth, _) = auth();
        // Two dots make it look like a signed token, which takes the other path.
        let token = token + &".".repeat(dots);
        decide(&auth, &token, "live/cam1", IpAddr::from([10, 0, 0, 1]), "x");
    }
}
