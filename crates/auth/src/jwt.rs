//! Signed tokens (JWT): verified locally, with no store lookup.
//!
//! Accepted algorithms: HS256 with the server's signing key, and RS256, ES256 and EdDSA with the
//! public keys of a configured JWKS. The algorithm in a token's header must belong to the key it
//! is verified with (an HMAC key is never made from a public key, so HS/RS confusion cannot
//! happen); `none` and every other algorithm are refused. Expiry and not-before are checked with
//! [`JWT_CLOCK_SKEW`] of allowance.
//!
//! Claims: `type` (`publish` or `play`), `streamId` or `streams` (names, or `{streamName,
//! isRegex}` objects), `exp` (required), `nbf`, and optionally `ip` and `origin` (a string or a
//! list), `subscribeRequiresAuth`, `jti` (checked against the revoked list). A [`JwtPolicy`]
//! may also require an issuer, an audience, a longest lifetime and a `jti`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::rules::{HostPattern, IpRule, StreamRule, StreamRuleText};
use crate::{Denial, Secret, TokenKind};

/// Allowance for clocks that disagree, on `exp` and `nbf`.
pub const JWT_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest JWT accepted, in bytes.
pub const MAX_JWT_LEN: usize = 8 * 1024;
/// Compiled stream regexes kept from signed tokens.
const REGEX_CACHE_ENTRIES: usize = 1024;

/// A JWT configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The JWKS document is not valid.
    #[error("invalid JWKS: {0}")]
    Jwks(String),
    /// A token could not be signed.
    #[error("cannot sign token: {0}")]
    Sign(String),
}

/// What a verified token allows.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedClaims {
    pub kind: TokenKind,
    pub streams: Vec<Arc<StreamRule>>,
    pub expires_on: i64,
    pub ips: Vec<IpRule>,
    pub origins: Vec<HostPattern>,
    pub subscribe_requires_auth: bool,
    pub jti: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StreamClaim {
    Name(String),
    Rule(StreamRuleText),
}

#[derive(Deserialize)]
struct Claims {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "streamId")]
    stream_id: Option<String>,
    streams: Option<Vec<StreamClaim>>,
    ip: Option<OneOrMany>,
    origin: Option<OneOrMany>,
    #[serde(rename = "subscribeRequiresAuth", default)]
    subscribe_requires_auth: bool,
    jti: Option<String>,
}

/// The claims the server puts in the tokens it signs.
#[derive(Debug, Clone, Serialize)]
pub struct SignClaims {
    /// `publish` or `play`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The one stream allowed.
    #[serde(rename = "streamId")]
    pub stream_id: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issue time, Unix seconds.
    pub iat: i64,
    /// A unique id, for revocation.
    pub jti: String,
}

/// What the server asks of a signed token beyond its signature and time claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtPolicy {
    /// When set, `iss` must be exactly this.
    pub issuer: Option<String>,
    /// When set, `aud` (a string or a list) must hold this.
    pub audience: Option<String>,
    /// When set, a token may be valid for at most this long: `exp - iat`, or `exp - now`
    /// without `iat`.
    pub max_lifetime: Option<std::time::Duration>,
    /// Whether `jti` is required (so that every signed token can be revoked).
    pub require_jti: bool,
}

/// Verifies signed tokens with the configured keys.
pub struct JwtVerifier {
    policy: JwtPolicy,
    hs256: Option<(DecodingKey, EncodingKey)>,
    public: Vec<PublicKey>,
    regexes: Mutex<HashMap<String, Arc<StreamRule>>>,
}

struct PublicKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hs256", &self.hs256.is_some())
            .field("public_keys", &self.public.len())
            .finish()
    }
}

impl JwtVerifier {
    /// A verifier with an HS256 secret and/or the keys of a JWKS document.
    pub fn new(hs256_secret: Option<&Secret>, jwks_json: Option<&str>) -> Result<Self, JwtError> {
        let hs256 = hs256_secret.map(|s| {
            let bytes = s.expose().as_bytes();
            (
                DecodingKey::from_secret(bytes),
                EncodingKey::from_secret(bytes),
            )
        });
        let mut public = Vec::new();
        if let Some(json) = jwks_json {
            let set: JwkSet =
                serde_json::from_str(json).map_err(|e| JwtError::Jwks(e.to_string()))?;
            for jwk in &set.keys {
                let alg = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(p)
                        if p.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
                    {
                        Algorithm::ES256
                    }
                    jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(p)
                        if p.curve == jsonwebtoken::jwk::EllipticCurve::Ed25519 =>
                    {
                        Algorithm::EdDSA
                    }
                    _ => {
                        return Err(JwtError::Jwks(format!(
                            "key {:?}: only RSA, P-256 and Ed25519 public keys are accepted",
                            jwk.common.key_id
                        )))
                    }
                };
                let key = DecodingKey::from_jwk(jwk).map_err(|e| JwtError::Jwks(e.to_string()))?;
                public.push(PublicKey {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key,
                });
            }
        }
        Ok(Self {
            policy: JwtPolicy::default(),
            hs256,
            public,
            regexes: Mutex::new(HashMap::new()),
        })
    }

    /// The verifier with `policy` in force.
    pub fn with_policy(mut self, policy: JwtPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The policy in force.
    pub fn policy(&self) -> &JwtPolicy {
        &self.policy
    }

    /// Whether the server can sign tokens (it has an HS256 key).
    pub fn can_sign(&self) -> bool {
        self.hs256.is_some()
    }

    /// Signs `claims` with the server's HS256 key.
    pub fn sign(&self, claims: &SignClaims) -> Result<String, JwtError> {
        let (_, key) = self
            .hs256
            .as_ref()
            .ok_or_else(|| JwtError::Sign("no HS256 key".into()))?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key)
            .map_err(|e| JwtError::Sign(e.to_string()))
    }

    /// Verifies a token and checks its time claims at `now_secs`; returns what it allows.
    pub(crate) fn verify(&self, token: &str, now_secs: i64) -> Result<VerifiedClaims, Denial> {
        if token.len() > MAX_JWT_LEN {
            return Err(Denial::Unknown);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Denial::Unknown)?;
        let candidates: Vec<&DecodingKey> = match header.alg {
            Algorithm::HS256 => self.hs256.iter().map(|(d, _)| d).collect(),
            Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA => self
                .public
                .iter()
                .filter(|k| k.alg == header.alg)
                .filter(|k| header.kid.is_none() || k.kid == header.kid)
                .map(|k| &k.key)
                .collect(),
            _ => Vec::new(),
        };
        let mut validation = Validation::new(header.alg);
        // Time claims are checked below with the server's clock, not the library's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        let mut last = Denial::Unknown;
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Value>(token, key, &validation) {
                Ok(data) => return self.check(data.claims, now_secs),
                Err(_) => last = Denial::Unknown,
            }
        }
        Err(last)
    }

    fn check(&self, raw: serde_json::Value, now: i64) -> Result<VerifiedClaims, Denial> {
        let skew = i64::try_from(JWT_CLOCK_SKEW.as_secs()).unwrap_or(0);
        // Time claims first, so an expired token says "expired" whatever else it lacks.
        let exp = raw
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .ok_or(Denial::Unknown)?;
        if now >= exp.saturating_add(skew) {
            return Err(Denial::Expired);
        }
        if let Some(nbf) = raw.get("nbf") {
            let nbf = nbf.as_i64().ok_or(Denial::Unknown)?;
            if now.saturating_add(skew) < nbf {
                return Err(Denial::NotYetValid);
            }
        }
        self.check_policy(&raw, exp, now, skew)?;
        let c: Claims = serde_json::from_value(raw).map_err(|_| Denial::Unknown)?;
        let kind = match c.kind.as_deref() {
            Some("publish") => TokenKind::Publish,
            Some("play" | "subscribe") => TokenKind::Subscribe,
            _ => return Err(Denial::Unknown),
        };
        let mut streams = Vec::new();
        if let Some(id) = c.stream_id {
            streams.push(self.rule(StreamRuleText {
                stream_name: id,
                is_regex: false,
            })?);
        }
        for s in c.streams.into_iter().flatten() {
            let text = match s {
                StreamClaim::Name(n) => StreamRuleText {
                    stream_name: n,
                    is_regex: false,
                },
                StreamClaim::Rule(r) => r,
            };
            streams.push(self.rule(text)?);
        }
        if streams.is_empty() {
            // A signed token always names its streams; there are no server-wide JWTs.
            return Err(Denial::Unknown);
        }
        let ips =
            c.ip.map(OneOrMany::into_vec)
                .unwrap_or_default()
                .iter()
                .map(|s| IpRule::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| Denial::Unknown)?;
        let origins = c
            .origin
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .iter()
            .map(|s| HostPattern::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Denial::Unknown)?;
        Ok(VerifiedClaims {
            kind,
            streams,
            expires_on: exp.saturating_add(skew).saturating_mul(1000),
            ips,
            origins,
            subscribe_requires_auth: c.subscribe_requires_auth && kind == TokenKind::Publish,
            jti: c.jti,
        })
    }

    /// The issuer, audience, lifetime and `jti` rules of [`JwtPolicy`].
    fn check_policy(
        &self,
        raw: &serde_json::Value,
        exp: i64,
        now: i64,
        skew: i64,
    ) -> Result<(), Denial> {
        let p = &self.policy;
        let text = |key: &str| raw.get(key).and_then(serde_json::Value::as_str);
        if let Some(iss) = &p.issuer {
            if text("iss") != Some(iss.as_str()) {
                return Err(Denial::ClaimsRefused);
            }
        }
        if let Some(aud) = &p.audience {
            let holds = match raw.get("aud") {
                Some(serde_json::Value::String(a)) => a == aud,
                Some(serde_json::Value::Array(list)) => {
                    list.iter().any(|a| a.as_str() == Some(aud.as_str()))
                }
                _ => false,
            };
            if !holds {
                return Err(Denial::ClaimsRefused);
            }
        }
        if let Some(max) = p.max_lifetime {
            let from = match raw.get("iat") {
                Some(iat) => iat.as_i64().ok_or(Denial::ClaimsRefused)?,
                None => now,
            };
            let max = i64::try_from(max.as_secs()).unwrap_or(i64::MAX);
            if exp.saturating_sub(from) > max.saturating_add(skew) {
                return Err(Denial::ClaimsRefused);
            }
        }
        if p.require_jti && text("jti").is_none_or(str::is_empty) {
            return Err(Denial::ClaimsRefused);
        }
        Ok(())
    }

    fn rule(&self, text: StreamRuleText) -> Result<Arc<StreamRule>, Denial> {
        if !text.is_regex {
            return StreamRule::try_from(text)
                .map(Arc::new)
                .map_err(|_| Denial::Unknown);
        }
        let mut cache = self.regexes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = cache.get(&text.stream_name) {
            return Ok(Arc::clone(r));
        }
        let key = text.stream_name.clone();
        let rule = Arc::new(StreamRule::try_from(text).map_err(|_| Denial::Unknown)?);
        if cache.len() >= REGEX_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key, Arc::clone(&rule));
        Ok(rule)
    }
}

/// Whether a presented token has the shape of a JWT (three base64url parts, a JSON header).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.bytes().filter(|b| *b == b'.').count() == 2
}
