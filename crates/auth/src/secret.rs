//! Token secrets: generation, hashing, redaction and constant-time comparison.

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::token::TokenKind;

/// Random bytes in a generated secret (192 bits).
pub const SECRET_RANDOM_BYTES: usize = 24;

/// A secret shown once to its owner. `Debug` and `Display` never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Generates a fresh random secret with the prefix of `kind` (`sgp_` or `sgs_`).
    pub fn generate(kind: TokenKind) -> Result<Self, getrandom::Error> {
        Ok(Self(format!(
            "{}{}",
            kind.secret_prefix(),
            random_urlsafe(SECRET_RANDOM_BYTES)?
        )))
    }

    /// Wraps an existing secret string (for instance an API secret from config).
    pub fn from_string(value: String) -> Self {
        Self(value)
    }

    /// The secret in clear, for the single place that must show or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 hash of the secret, which is what gets stored.
    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The SHA-256 hash of a presented or stored secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    /// Hashes a presented secret.
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Compares two hashes in time that does not depend on where they differ.
    pub fn ct_eq(&self, other: &SecretHash) -> bool {
        let mut diff = 0u8;
        for (a, b) in self.0.iter().zip(other.0.iter()) {
            diff |= a ^ b;
        }
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// Compares a presented secret with the expected one without leaking, through timing, where
/// they differ or how long the expected one is: both are hashed first.
pub fn secrets_match(presented: &str, expected: &Secret) -> bool {
    SecretHash::of(presented).ct_eq(&expected.hash())
}

/// `n` random bytes from the operating system, base64url without padding.
pub fn random_urlsafe(n: usize) -> Result<String, getrandom::Error> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_prefixed_random_and_urlsafe() {
        let a = Secret::generate(TokenKind::Publish).unwrap();
        let b = Secret::generate(TokenKind::Publish).unwrap();
        let s = Secret::generate(TokenKind::Subscribe).unwrap();
        assert!(a.expose().starts_with("sgp_"));
        assert!(s.expose().starts_with("sgs_"));
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 4 + 32);
        assert!(a.expose()[4..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn secrets_never_print() {
        let a = Secret::generate(TokenKind::Publish).unwrap();
        assert!(!format!("{a:?} {a}").contains(a.expose()));
    }

    #[test]
    fn matching() {
        let expected = Secret::from_string("s3cret".into());
        assert!(secrets_match("s3cret", &expected));
        assert!(!secrets_match("s3cre", &expected));
        assert!(!secrets_match("", &expected));
        assert!(!secrets_match("s3cret ", &expected));
    }
}
