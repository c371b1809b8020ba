//! Signed-token decisions: every algorithm, every way a token can be wrong.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::jwt::JwtVerifier;
use crate::*;

const NOW: u64 = 1_800_000_000;
const HS_SECRET: &str = "server-signing-key-for-tests-0123456789";
const JWKS: &str = include_str!("../testdata/jwks.json");

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn auth() -> Auth {
    let verifier =
        JwtVerifier::new(Some(&Secret::from_string(HS_SECRET.into())), Some(JWKS)).unwrap();
    Auth::open(Arc::new(MemoryStore::default()), AuthConfig::default())
        .unwrap()
        .with_jwt(verifier)
}

fn claims(edit: impl FnOnce(&mut Value)) -> Value {
    let mut c = json!({"type": "publish", "streamId": "live/cam1", "exp": NOW + 60});
    edit(&mut c);
    c
}

fn hs256(c: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        c,
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap()
}

fn signed(alg: Algorithm, kid: &str, c: &Value) -> String {
    let key = match alg {
        Algorithm::RS256 => {
            EncodingKey::from_rsa_pem(include_bytes!("../testdata/rsa.pem")).unwrap()
        }
        Algorithm::ES256 => {
            EncodingKey::from_ec_pem(include_bytes!("../testdata/p256.pem")).unwrap()
        }
        Algorithm::EdDSA => {
            EncodingKey::from_ed_pem(include_bytes!("../testdata/ed25519.pem")).unwrap()
        }
        _ => unreachable!(),
    };
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, c, &key).unwrap()
}

fn decide(auth: &Auth, token: &str, action: Action, stream: &str) -> Result<Grant, Denial> {
    decide_from(auth, token, action, stream, "127.0.0.1", None)
}

fn decide_from(
    auth: &Auth,
    token: &str,
    action: Action,
    stream: &str,
    ip: &str,
    origin: Option<&str>,
) -> Result<Grant, Denial> {
    let stream = StreamName::new(stream).unwrap();
    auth.authorize(
        &AccessRequest {
            action,
            stream: &stream,
            token: Some(token),
            peer_ip: ip.parse().unwrap(),
            origin,
            referer: None,
            user_agent: None,
            protocol: Protocol::Rtmp,
        },
        now(),
    )
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn every_algorithm_verifies() {
    let a = auth();
    let c = claims(|_| {});
    assert!(decide(&a, &hs256(&c), Action::Publish, "live/cam1").is_ok());
    for (alg, kid) in [
        (Algorithm::RS256, "rsa-1"),
        (Algorithm::ES256, "ec-1"),
        (Algorithm::EdDSA, "ed-1"),
    ] {
        let g = decide(&a, &signed(alg, kid, &c), Action::Publish, "live/cam1");
        assert!(g.is_ok(), "{alg:?}: {g:?}");
        drop(g);
        // The kid must name a key of that algorithm.
        assert_eq!(
            decide(&a, &signed(alg, "nope", &c), Action::Publish, "live/cam1").unwrap_err(),
            Denial::Unknown,
            "{alg:?}"
        );
    }
}

#[test]
fn forged_and_confused_tokens_are_refused() {
    let a = auth();
    let good = hs256(&claims(|_| {}));
    let parts: Vec<&str> = good.split('.').collect();
    // Bad signature: a payload edited after signing.
    let edited = format!(
        "{}.{}.{}",
        parts[0],
        b64(&claims(|c| c["streamId"] = json!("live/other"))),
        parts[2]
    );
    assert_eq!(
        decide(&a, &edited, Action::Publish, "live/other").unwrap_err(),
        Denial::Unknown
    );
    let mut sig = parts[2].to_owned();
    sig.replace_range(0..2, if sig.starts_with("AA") { "BB" } else { "AA" });
    assert_eq!(
        decide(
            &a,
            &format!("{}.{}.{sig}", parts[0], parts[1]),
            Action::Publish,
            "live/cam1"
        )
        .unwrap_err(),
        Denial::Unknown
    );
    // alg: none, with and without a signature part.
    let none = b64(&json!({"alg": "none", "typ": "JWT"}));
    for t in [
        format!("{none}.{}.", parts[1]),
        format!("{none}.{}.{}", parts[1], parts[2]),
    ] {
        assert_eq!(
            decide(&a, &t, Action::Publish, "live/cam1").unwrap_err(),
            Denial::Unknown
        );
    }
    // HS256 signed with the RSA public key as the HMAC secret (the classic confusion).
    let public_pem = include_bytes!("../testdata/rsa_public.pem");
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    let confused =
        jsonwebtoken::encode(&h, &claims(|_| {}), &EncodingKey::from_secret(public_pem)).unwrap();
    assert_eq!(
        decide(&a, &confused, Action::Publish, "live/cam1").unwrap_err(),
        Denial::Unknown
    );
    // Algorithms outside the accepted list.
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims(|_| {}),
        &EncodingKey::from_secret(HS_SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        decide(&a, &hs384, Action::Publish, "live/cam1").unwrap_err(),
        Denial::Unknown
    );
    // No verifier configured: a JWT is just an unknown token.
    let plain = Auth::open(Arc::new(MemoryStore::default()), AuthConfig::default()).unwrap();
    assert_eq!(
        decide(&plain, &good, Action::Publish, "live/cam1").unwrap_err(),
        Denial::Unknown
    );
    // Garbage shaped like a JWT.
    assert_eq!(
        decide(&a, "eyJ.eyJ.x", Action::Publish, "live/cam1").unwrap_err(),
        Denial::Unknown
    );
}

#[test]
fn time_claims_with_a_small_skew() {
    let a = auth();
    let at = |edit: fn(&mut Value)| {
        decide(&a, &hs256(&claims(edit)), Action::Play, "live/cam1").map(drop)
    };
    assert_eq!(
        at(|c| {
            c["type"] = json!("play");
            c["exp"] = json!(NOW - 10)
        }),
        Err(Denial::Expired)
    );
    assert_eq!(
        at(|c| {
            c["type"] = json!("play");
            c["exp"] = json!(NOW - 5)
        }),
        Err(Denial::Expired),
        "skew is 5 s"
    );
    assert_eq!(
        at(|c| {
            c["type"] = json!("play");
            c["exp"] = json!(NOW - 2)
        }),
        Ok(())
    );
    assert_eq!(
        at(|c| {
            c["type"] = json!("play");
            c["nbf"] = json!(NOW + 60)
        }),
        Err(Denial::NotYetValid)
    );
    assert_eq!(
        at(|c| {
            c["type"] = json!("play");
            c["nbf"] = json!(NOW + 3)
        }),
        Ok(())
    );
    assert_eq!(
        at(|c| {
            c["type"] = json!("play");
            c["nbf"] = json!("soon")
        }),
        Err(Denial::Unknown)
    );
}

#[test]
fn claims_are_required_and_enforced() {
    let a = auth();
    let t = |edit: fn(&mut Value)| hs256(&claims(edit));
    // Missing claims.
    for (what, token) in [
        (
            "exp",
            t(|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "type",
            t(|c| {
                c.as_object_mut().unwrap().remove("type");
            }),
        ),
        (
            "streams",
            t(|c| {
                c.as_object_mut().unwrap().remove("streamId");
            }),
        ),
        ("bad type", t(|c| c["type"] = json!("admin"))),
        ("bad ip", t(|c| c["ip"] = json!("10.0.0.0/99"))),
    ] {
        assert_eq!(
            decide(&a, &token, Action::Publish, "live/cam1").unwrap_err(),
            Denial::Unknown,
            "{what}"
        );
    }
    // Wrong type both ways.
    assert_eq!(
        decide(&a, &t(|_| {}), Action::Play, "live/cam1").unwrap_err(),
        Denial::WrongKind
    );
    assert_eq!(
        decide(
            &a,
            &t(|c| c["type"] = json!("play")),
            Action::Publish,
            "live/cam1"
        )
        .unwrap_err(),
        Denial::WrongKind
    );
    // A stream outside the claims; a streams list with a regex.
    assert_eq!(
        decide(&a, &t(|_| {}), Action::Publish, "live/cam2").unwrap_err(),
        Denial::StreamNotAllowed
    );
    let list = t(|c| {
        c.as_object_mut().unwrap().remove("streamId");
        c["streams"] = json!(["live/a", {"streamName": "live/cam[0-9]+", "isRegex": true}]);
    });
    assert!(decide(&a, &list, Action::Publish, "live/cam42").is_ok());
    assert_eq!(
        decide(&a, &list, Action::Publish, "live/cam42x").unwrap_err(),
        Denial::StreamNotAllowed
    );
    // IP and origin claims.
    let ip = t(|c| c["ip"] = json!(["10.0.0.0/8"]));
    assert_eq!(
        decide(&a, &ip, Action::Publish, "live/cam1").unwrap_err(),
        Denial::IpNotAllowed
    );
    assert!(decide_from(&a, &ip, Action::Publish, "live/cam1", "10.1.2.3", None).is_ok());
    let origin = t(|c| {
        c["type"] = json!("play");
        c["origin"] = json!("*.example.com")
    });
    assert_eq!(
        decide_from(
            &a,
            &origin,
            Action::Play,
            "live/cam1",
            "127.0.0.1",
            Some("https://evilexample.com")
        )
        .unwrap_err(),
        Denial::OriginNotAllowed
    );
    assert!(decide_from(
        &a,
        &origin,
        Action::Play,
        "live/cam1",
        "127.0.0.1",
        Some("https://www.example.com")
    )
    .is_ok());
}

#[test]
fn live_once_subscribe_requires_auth_and_revocation() {
    let a = auth();
    let publish = hs256(&claims(|c| {
        c["subscribeRequiresAuth"] = json!(true);
        c["jti"] = json!("pub-1");
    }));
    let first = decide(&a, &publish, Action::Publish, "live/cam1").unwrap();
    assert!(first.subscribe_requires_auth());
    assert_eq!(
        decide(&a, &publish, Action::Publish, "live/cam1").unwrap_err(),
        Denial::StreamInUse
    );
    let stream = StreamName::new("live/cam1").unwrap();
    let anonymous = AccessRequest {
        action: Action::Play,
        stream: &stream,
        token: None,
        peer_ip: "127.0.0.1".parse().unwrap(),
        origin: None,
        referer: None,
        user_agent: None,
        protocol: Protocol::Rtmp,
    };
    assert_eq!(a.authorize(&anonymous, now()).unwrap_err(), Denial::Missing);
    let viewer = hs256(&claims(|c| c["type"] = json!("play")));
    let watching = decide(&a, &viewer, Action::Play, "live/cam1").unwrap();

    assert_eq!(a.revoke_jti("pub-1", None).unwrap(), 1);
    assert!(first.is_cancelled() && !watching.is_cancelled());
    drop(first);
    assert_eq!(
        decide(&a, &publish, Action::Publish, "live/cam1").unwrap_err(),
        Denial::Revoked
    );
    // Signed sessions end at their expiry like stored ones.
    assert_eq!(a.sweep_expired(now() + Duration::from_secs(64)), 0);
    assert_eq!(a.sweep_expired(now() + Duration::from_secs(65)), 1);
    assert!(watching.is_cancelled());
}

#[test]
fn issuer_audience_lifetime_and_jti_are_enforced_when_configured() {
    let verifier = JwtVerifier::new(Some(&Secret::from_string(HS_SECRET.into())), None)
        .unwrap()
        .with_policy(crate::jwt::JwtPolicy {
            issuer: Some("https://backend.example".into()),
            audience: Some("streamgate".into()),
            max_lifetime: Some(Duration::from_secs(3600)),
            require_jti: true,
        });
    let a = Auth::open(Arc::new(MemoryStore::default()), AuthConfig::default())
        .unwrap()
        .with_jwt(verifier);
    let good = |c: &mut Value| {
        c["iss"] = "https://backend.example".into();
        c["aud"] = json!(["other", "streamgate"]);
        c["iat"] = NOW.into();
        c["jti"] = "one".into();
    };
    let run = |edit: &dyn Fn(&mut Value)| {
        let c = claims(|c| {
            good(c);
            edit(c);
        });
        decide(&a, &hs256(&c), Action::Publish, "live/cam1").map(drop)
    };
    assert_eq!(run(&|_| {}), Ok(()));
    assert_eq!(
        run(&|c| c["aud"] = "streamgate".into()),
        Ok(()),
        "aud as a string"
    );
    let refused = Err(Denial::ClaimsRefused);
    assert_eq!(run(&|c| c["iss"] = "https://evil.example".into()), refused);
    assert_eq!(
        run(&|c| {
            c.as_object_mut().unwrap().remove("iss");
        }),
        refused
    );
    assert_eq!(run(&|c| c["aud"] = json!(["other"])), refused);
    assert_eq!(
        run(&|c| {
            c["iat"] = (NOW - 10).into();
            c["exp"] = (NOW - 10 + 7200).into();
        }),
        refused,
        "valid for two hours"
    );
    assert_eq!(
        run(&|c| {
            c.as_object_mut().unwrap().remove("iat");
            c["exp"] = (NOW + 7200).into();
        }),
        refused,
        "without iat the lifetime counts from now"
    );
    assert_eq!(
        run(&|c| {
            c.as_object_mut().unwrap().remove("jti");
        }),
        refused
    );
}
