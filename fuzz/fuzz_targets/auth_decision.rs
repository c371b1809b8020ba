//! The access decision on what a client presents: the token (stored, or signed and parsed by
//! the JWT library), the stream name and the Origin, Referer and User-Agent headers, against a
//! stored token with every kind of rule. Fields are separated by newlines.
#![no_main]

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use streamgate_auth::jwt::JwtVerifier;
use streamgate_auth::{
    AccessRequest, Action, Auth, AuthConfig, MemoryStore, Protocol, Secret, StreamName,
    TokenKind,
};

fn auth() -> &'static Auth {
    static AUTH: OnceLock<Auth> = OnceLock::new();
    AUTH.get_or_init(|| {
        let key = Secret::from_string("fuzzing-jwt-key-0123456789abcdef0123".into());
        let auth = Auth::open(Arc::new(MemoryStore::default()), AuthConfig::default())
            .expect("auth")
            .with_jwt(JwtVerifier::new(Some(&key), None).expect("verifier"));
        let spec = serde_json::from_value(serde_json::json!({
            "label": "rules",
            "streams": [{"streamName": "live/.*", "isRegex": true}],
            "allowedOrigins": ["*.example.com"],
            "allowedReferers": ["example.org"],
            "allowedUserAgents": ["OBS/30"],
            "allowedIpAddresses": ["10.0.0.0/8"],
        }))
        .expect("spec");
        auth.create(TokenKind::Publish, spec, SystemTime::now())
            .expect("token");
        auth
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\n');
    let token = fields.next().unwrap_or_default();
    let Ok(stream) = StreamName::new(fields.next().unwrap_or("live/cam1")) else {
        return;
    };
    let header = fields.next();
    let ip = IpAddr::from([10, data.len() as u8, 0, 1]);
    for action in [Action::Publish, Action::Play] {
        let req = AccessRequest {
            action,
            stream: &stream,
            token: Some(token),
            peer_ip: ip,
            origin: header,
            referer: header,
            user_agent: header,
            protocol: Protocol::Rtmp,
        };
        let _ = auth().authorize(&req, SystemTime::now());
    }
});
