//! The token model: what a token allows (`TokenSpec`), and the stored record around it.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::rules::{HostPattern, IpRule, StreamRule};

/// Longest label, in characters.
pub const MAX_LABEL_CHARS: usize = 128;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 128;
/// Most entries in any one rule list of a token (streams, IPs, origins, referers, agents).
pub const MAX_RULES_PER_LIST: usize = 100;
/// Longest user-agent rule, in bytes.
pub const MAX_USER_AGENT_LEN: usize = 512;
/// Largest `bindIpsOnUsage`.
pub const MAX_BIND_IPS: u32 = 1000;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Admits publishers.
    Publish,
    /// Admits viewers.
    Subscribe,
}

impl TokenKind {
    /// The prefix of generated secrets of this kind.
    pub fn secret_prefix(self) -> &'static str {
        match self {
            Self::Publish => "sgp_",
            Self::Subscribe => "sgs_",
        }
    }

    /// The name used in storage and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
        }
    }
}

/// A token's integer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TokenId(pub i64);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Milliseconds since the Unix epoch.
pub type UnixMillis = i64;

/// The policy of a token: everything its owner sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenSpec {
    /// Human label, 1 to [`MAX_LABEL_CHARS`] characters.
    pub label: String,
    /// Free-form tag for grouping and filtering.
    #[serde(default)]
    pub tag: Option<String>,
    /// Streams the token admits; empty means every stream (a server-wide token).
    #[serde(default)]
    pub streams: Vec<StreamRule>,
    /// When the token stops working.
    #[serde(default)]
    pub expires_on: Option<UnixMillis>,
    /// When non-empty, only peers in these blocks are admitted.
    #[serde(default)]
    pub allowed_ip_addresses: Vec<IpRule>,
    /// When non-empty, only requests whose Origin host matches one are admitted.
    #[serde(default)]
    pub allowed_origins: Vec<HostPattern>,
    /// When non-empty, only requests whose Referer host matches one are admitted.
    #[serde(default)]
    pub allowed_referers: Vec<HostPattern>,
    /// When non-empty, only requests with exactly one of these User-Agents are admitted.
    #[serde(default)]
    pub allowed_user_agents: Vec<String>,
    /// The first N distinct peer IPs that use the token become its only allowed IPs.
    #[serde(default)]
    pub bind_ips_on_usage: Option<u32>,
    /// How many sessions the token may admit in all (1 = one-time).
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// Publish tokens: viewers of the stream need a subscribe token.
    #[serde(default)]
    pub subscribe_requires_auth: bool,
    /// A disabled token admits nothing.
    #[serde(default = "yes")]
    pub is_active: bool,
    /// Publish tokens: SRT connections admitted by the token must be encrypted with this
    /// passphrase. Kept in clear because SRT derives its keys from it; shown only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srt_passphrase: Option<SrtPassphrase>,
}

/// Shortest SRT passphrase, in bytes (the SRT protocol's rule).
pub const MIN_SRT_PASSPHRASE_LEN: usize = 10;
/// Longest SRT passphrase, in bytes (the SRT protocol's rule).
pub const MAX_SRT_PASSPHRASE_LEN: usize = 79;

/// An SRT passphrase; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SrtPassphrase(pub String);

impl SrtPassphrase {
    /// The passphrase in clear.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SrtPassphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SrtPassphrase(<redacted>)")
    }
}

fn yes() -> bool {
    true
}

/// A spec that breaks a rule, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The API name of the offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl SpecError {
    /// A new error for `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl TokenSpec {
    /// A spec with defaults and the given label: every stream, no restriction, active.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            tag: None,
            streams: Vec::new(),
            expires_on: None,
            allowed_ip_addresses: Vec::new(),
            allowed_origins: Vec::new(),
            allowed_referers: Vec::new(),
            allowed_user_agents: Vec::new(),
            bind_ips_on_usage: None,
            max_uses: None,
            subscribe_requires_auth: false,
            is_active: true,
            srt_passphrase: None,
        }
    }

    /// Checks the rules a spec of `kind` must keep, and normalises it: a `"*"` stream rule
    /// becomes the empty list (every stream).
    pub fn validate(&mut self, kind: TokenKind) -> Result<(), SpecError> {
        let label_chars = self.label.chars().count();
        if label_chars == 0 || label_chars > MAX_LABEL_CHARS {
            return Err(SpecError::new(
                "label",
                format!("must be 1 to {MAX_LABEL_CHARS} characters"),
            ));
        }
        if self
            .tag
            .as_ref()
            .is_some_and(|t| t.chars().count() > MAX_TAG_CHARS)
        {
            return Err(SpecError::new(
                "tag",
                format!("must be at most {MAX_TAG_CHARS} characters"),
            ));
        }
        if self.streams.iter().any(StreamRule::is_any) {
            self.streams.clear();
        }
        let lists = [
            ("streams", self.streams.len()),
            ("allowedIpAddresses", self.allowed_ip_addresses.len()),
            ("allowedOrigins", self.allowed_origins.len()),
            ("allowedReferers", self.allowed_referers.len()),
            ("allowedUserAgents", self.allowed_user_agents.len()),
        ];
        for (field, len) in lists {
            if len > MAX_RULES_PER_LIST {
                return Err(SpecError::new(
                    field,
                    format!("at most {MAX_RULES_PER_LIST} entries"),
                ));
            }
        }
        if self
            .allowed_user_agents
            .iter()
            .any(|ua| ua.is_empty() || ua.len() > MAX_USER_AGENT_LEN)
        {
            return Err(SpecError::new(
                "allowedUserAgents",
                format!("entries must be 1 to {MAX_USER_AGENT_LEN} bytes"),
            ));
        }
        match self.bind_ips_on_usage {
            Some(0) => self.bind_ips_on_usage = None,
            Some(n) if n > MAX_BIND_IPS => {
                return Err(SpecError::new(
                    "bindIpsOnUsage",
                    format!("must be at most {MAX_BIND_IPS}"),
                ))
            }
            Some(_) if !self.allowed_ip_addresses.is_empty() => {
                return Err(SpecError::new(
                    "bindIpsOnUsage",
                    "cannot be combined with allowedIpAddresses",
                ))
            }
            _ => {}
        }
        if self.max_uses == Some(0) {
            return Err(SpecError::new("maxUses", "must be at least 1"));
        }
        if let Some(p) = &self.srt_passphrase {
            if kind == TokenKind::Subscribe {
                return Err(SpecError::new(
                    "srtPassphrase",
                    "only publish tokens carry it",
                ));
            }
            if !(MIN_SRT_PASSPHRASE_LEN..=MAX_SRT_PASSPHRASE_LEN).contains(&p.0.len()) {
                return Err(SpecError::new(
                    "srtPassphrase",
                    format!("must be {MIN_SRT_PASSPHRASE_LEN} to {MAX_SRT_PASSPHRASE_LEN} bytes"),
                ));
            }
        }
        if self.subscribe_requires_auth && kind == TokenKind::Subscribe {
            return Err(SpecError::new(
                "subscribeRequiresAuth",
                "only publish tokens carry it",
            ));
        }
        Ok(())
    }

    /// Whether the token admits `stream`.
    pub fn admits_stream(&self, stream: &str) -> bool {
        self.streams.is_empty() || self.streams.iter().any(|r| r.matches(stream))
    }
}

/// A stored token: its id, kind, hashed secret, policy and usage.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    /// The token's id.
    pub id: TokenId,
    /// Publish or subscribe.
    pub kind: TokenKind,
    /// SHA-256 of the secret; the secret itself is never stored.
    pub secret_hash: crate::SecretHash,
    /// The policy.
    pub spec: TokenSpec,
    /// Creation time.
    pub added_on: UnixMillis,
    /// Sessions admitted so far.
    pub uses: u32,
    /// IPs bound through `bindIpsOnUsage`.
    pub bound_ips: Vec<IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let ok = |s: TokenSpec, k| {
            let mut s = s;
            s.validate(k).map(|_| s)
        };
        assert!(ok(TokenSpec::new("a"), TokenKind::Publish).is_ok());
        assert_eq!(
            ok(TokenSpec::new(""), TokenKind::Publish)
                .unwrap_err()
                .field,
            "label"
        );
        assert!(ok(TokenSpec::new("é".repeat(128)), TokenKind::Publish).is_ok());
        assert_eq!(
            ok(TokenSpec::new("x".repeat(129)), TokenKind::Publish)
                .unwrap_err()
                .field,
            "label"
        );

        let mut s = TokenSpec::new("a");
        s.bind_ips_on_usage = Some(2);
        s.allowed_ip_addresses = vec![IpRule::parse("10.0.0.0/8").unwrap()];
        assert_eq!(
            ok(s, TokenKind::Publish).unwrap_err().field,
            "bindIpsOnUsage"
        );

        let mut s = TokenSpec::new("a");
        s.subscribe_requires_auth = true;
        assert!(ok(s.clone(), TokenKind::Publish).is_ok());
        assert_eq!(
            ok(s, TokenKind::Subscribe).unwrap_err().field,
            "subscribeRequiresAuth"
        );

        let mut s = TokenSpec::new("a");
        s.srt_passphrase = Some(SrtPassphrase("short".into()));
        assert_eq!(
            ok(s.clone(), TokenKind::Publish).unwrap_err().field,
            "srtPassphrase"
        );
        s.srt_passphrase = Some(SrtPassphrase("long enough pass".into()));
        assert!(ok(s.clone(), TokenKind::Publish).is_ok());
        assert_eq!(
            ok(s, TokenKind::Subscribe).unwrap_err().field,
            "srtPassphrase"
        );

        let mut s = TokenSpec::new("a");
        s.max_uses = Some(0);
        assert_eq!(ok(s, TokenKind::Publish).unwrap_err().field, "maxUses");

        let mut s = TokenSpec::new("a");
        s.streams = vec![
            StreamRule::exact("live/a").unwrap(),
            StreamRule::exact("*").unwrap(),
        ];
        assert!(
            ok(s, TokenKind::Publish).unwrap().streams.is_empty(),
            "'*' means every stream"
        );
    }

    #[test]
    fn spec_round_trips_through_json() {
        let mut s = TokenSpec::new("cam");
        s.streams = vec![StreamRule::regex("live/.*").unwrap()];
        s.allowed_origins = vec![HostPattern::parse("*.example.com").unwrap()];
        s.allowed_ip_addresses = vec![IpRule::parse("10.0.0.0/8").unwrap()];
        let json = serde_json::to_string(&s).unwrap();
        let back: TokenSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(back.admits_stream("live/x"));
    }
}
