//! How the nodes of a cluster vouch for each other: a secret they share (`[cluster] secret`).
//!
//! A node that serves viewers of a stream published on another node (an edge of that origin)
//! pulls the stream from the origin as a viewer of its own. The pull presents, in place of a
//! token, a proof made with the secret ([`ClusterKey::proof`]): an HMAC-SHA256 of what it is
//! for (pulling, or relaying the pulled stream into the edge's own relay), the stream name and
//! an expiry at most [`PROOF_LIFETIME`] away. The origin admits such a viewer whatever the
//! stream's tokens say, bound to the live publish, which it ends with. A proof is good for its
//! one stream and use until it expires; a node makes a new one for every pull.

use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::service::unix_millis;
use crate::{Denial, StreamName};

/// How long a proof is good for.
pub const PROOF_LIFETIME: Duration = Duration::from_secs(60);
/// Shortest secret accepted, in bytes.
pub const MIN_CLUSTER_SECRET_LEN: usize = 16;
/// What every proof starts with.
const PREFIX: &str = "sgc1_";
/// Longest proof read: the prefix, an expiry of up to 20 digits, `_` and 64 hex digits.
const MAX_PROOF_LEN: usize = 5 + 20 + 1 + 64;

/// What a proof lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofUse {
    /// Play a stream on its origin, as an edge pulling it.
    Pull,
    /// Publish, into an edge's own relay, a stream pulled from its origin.
    Relay,
}

impl ProofUse {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Pull => b"pull",
            Self::Relay => b"relay",
        }
    }
}

/// The secret the nodes of a cluster share.
#[derive(Clone)]
pub struct ClusterKey(Vec<u8>);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(***)")
    }
}

/// A cluster secret that is too short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cluster secret must be at least {MIN_CLUSTER_SECRET_LEN} bytes")]
pub struct ShortSecret;

/// Whether `token` is a cluster proof rather than a token (it is never one: tokens are
/// base64url without `_`-separated digits, and signed tokens start `eyJ`).
pub fn looks_like_proof(token: &str) -> bool {
    token.starts_with(PREFIX)
}

impl ClusterKey {
    /// The key of `secret`.
    pub fn new(secret: &str) -> Result<Self, ShortSecret> {
        if secret.len() < MIN_CLUSTER_SECRET_LEN {
            return Err(ShortSecret);
        }
        Ok(Self(secret.as_bytes().to_vec()))
    }

    /// The MAC of a proof, fed with everything it covers.
    fn mac(&self, what: ProofUse, stream: &StreamName, expires: i64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"streamgate cluster\0");
        mac.update(what.label());
        mac.update(b"\0");
        mac.update(stream.as_str().as_bytes());
        mac.update(b"\0");
        mac.update(&expires.to_be_bytes());
        mac
    }

    /// A proof for `what` of `stream`, good for [`PROOF_LIFETIME`] from `now`.
    pub fn proof(&self, what: ProofUse, stream: &StreamName, now: SystemTime) -> String {
        let expires = unix_millis(now + PROOF_LIFETIME).div_euclid(1000);
        let mac = self.mac(what, stream, expires).finalize().into_bytes();
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        format!("{PREFIX}{expires}_{hex}")
    }

    /// Checks a proof for `what` of `stream` at `now`.
    pub fn verify(
        &self,
        proof: &str,
        what: ProofUse,
        stream: &StreamName,
        now: SystemTime,
    ) -> Result<(), Denial> {
        if proof.len() > MAX_PROOF_LEN {
            return Err(Denial::Unknown);
        }
        let rest = proof.strip_prefix(PREFIX).ok_or(Denial::Unknown)?;
        let (expires, hex) = rest.split_once('_').ok_or(Denial::Unknown)?;
        let expires: i64 = expires.parse().map_err(|_| Denial::Unknown)?;
        let presented = parse_hex(hex).ok_or(Denial::Unknown)?;
        let now_secs = unix_millis(now).div_euclid(1000);
        let lifetime = i64::try_from(PROOF_LIFETIME.as_secs()).unwrap_or(i64::MAX);
        // Compared in constant time, before the expiry is looked at: only a genuine proof is
        // told it is old.
        self.mac(what, stream, expires)
            .verify_slice(&presented)
            .map_err(|_| Denial::Unknown)?;
        if expires < now_secs {
            return Err(Denial::Expired);
        }
        if expires > now_secs.saturating_add(lifetime) {
            // Made on a node whose clock runs ahead by more than a proof's life.
            return Err(Denial::NotYetValid);
        }
        Ok(())
    }
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_proof_is_good_for_its_use_its_stream_and_its_life() {
        let key = ClusterKey::new("sixteen bytes at least").unwrap();
        let cam = StreamName::new("live/cam1").unwrap();
        let other = StreamName::new("live/cam2").unwrap();
        let proof = key.proof(ProofUse::Pull, &cam, at(1_000));
        assert!(looks_like_proof(&proof));
        assert_eq!(key.verify(&proof, ProofUse::Pull, &cam, at(1_000)), Ok(()));
        assert_eq!(key.verify(&proof, ProofUse::Pull, &cam, at(1_060)), Ok(()));
        assert_eq!(
            key.verify(&proof, ProofUse::Pull, &cam, at(1_061)),
            Err(Denial::Expired)
        );
        assert_eq!(
            key.verify(&proof, ProofUse::Relay, &cam, at(1_000)),
            Err(Denial::Unknown),
            "another use"
        );
        assert_eq!(
            key.verify(&proof, ProofUse::Pull, &other, at(1_000)),
            Err(Denial::Unknown),
            "another stream"
        );
        let stranger = ClusterKey::new("another cluster's secret").unwrap();
        assert_eq!(
            stranger.verify(&proof, ProofUse::Pull, &cam, at(1_000)),
            Err(Denial::Unknown)
        );
        assert_eq!(
            key.verify(&proof, ProofUse::Pull, &cam, at(900)),
            Err(Denial::NotYetValid),
            "from a clock far ahead"
        );
        // Moving the expiry breaks the MAC.
        let moved = proof.replacen("sgc1_1060", "sgc1_9060", 1);
        assert_eq!(
            key.verify(&moved, ProofUse::Pull, &cam, at(1_000)),
            Err(Denial::Unknown)
        );
        for junk in [
            "",
            "sgc1_",
            "sgc1_1060",
            "sgc1_x_00",
            "sgc1_1060_zz",
            &format!("{proof}0"),
            &"sgc1_1".repeat(100),
        ] {
            assert_eq!(
                key.verify(junk, ProofUse::Pull, &cam, at(1_000)),
                Err(Denial::Unknown),
                "{junk:?}"
            );
        }
        assert_eq!(ClusterKey::new("short").unwrap_err(), ShortSecret);
    }
}
