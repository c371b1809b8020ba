//! Token storage behind a trait: the embedded SQLite file, or PostgreSQL, which several nodes
//! may share. Decisions never read the store: [`crate::Auth`] keeps an in-memory index in
//! step with it and writes through; only spending a use of a limited token (`maxUses`,
//! `bindIpsOnUsage`) asks the store, which holds the count.

mod leases;
mod memory;
mod postgres;
mod sqlite;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

#[cfg(test)]
pub(crate) use leases::memory::SharedTable;
pub use leases::{
    HeldLease, LeaseStore, OtherLease, Pending, Renewed, LEASE_RENEW, LEASE_TTL, MAX_OTHER_LEASES,
};
pub use memory::MemoryStore;
pub use postgres::{NodeIdentity, PostgresStore};
pub use sqlite::SqliteStore;

use crate::token::{TokenId, TokenKind, TokenRecord, TokenSpec, UnixMillis};
use crate::SecretHash;

/// A token to insert; the store assigns its id.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Publish or subscribe.
    pub kind: TokenKind,
    /// SHA-256 of the secret.
    pub secret_hash: SecretHash,
    /// The policy.
    pub spec: TokenSpec,
    /// Creation time.
    pub added_on: UnixMillis,
}

/// A change to a stored token, as [`TokenStore::update`] applies it: only what the change
/// touches. The use count is never part of it (grants alone change it).
#[derive(Debug, Clone)]
pub struct TokenUpdate {
    /// The token.
    pub id: TokenId,
    /// The new secret's hash, when it was rotated.
    pub secret_hash: Option<SecretHash>,
    /// The new policy.
    pub spec: TokenSpec,
    /// What happens to the IPs bound through `bindIpsOnUsage`.
    pub bound_ips: BoundIps,
}

/// What an update does to a token's bound IPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundIps {
    /// `bindIpsOnUsage` is off: none are kept.
    Clear,
    /// The first N are kept.
    Truncate(u32),
}

impl BoundIps {
    /// Applies the change to a list of bound IPs.
    pub fn apply(self, ips: &mut Vec<IpAddr>) {
        match self {
            Self::Clear => ips.clear(),
            Self::Truncate(n) => ips.truncate(usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }
}

/// What a use of a token is allowed: [`TokenStore::spend`] counts it against these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UseLimits {
    /// `maxUses`: each grant spends one.
    pub max_uses: Option<u32>,
    /// `bindIpsOnUsage`: the first N distinct addresses become the only ones admitted.
    pub bind_ips: Option<u32>,
}

/// What spending a use of a token came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spent {
    /// Granted: the token's use count and bound addresses now.
    Granted {
        /// Uses spent, this one included.
        uses: u32,
        /// Addresses bound, this one included if it binds.
        bound_ips: Vec<IpAddr>,
    },
    /// Every use is spent.
    Exhausted,
    /// The address is not among the bound ones, and no more may be bound.
    IpNotAllowed,
    /// The token is no longer stored.
    Missing,
}

impl UseLimits {
    /// Spends a use by `ip` of a token that has spent `uses` and bound `bound_ips`: the same
    /// rule in every store, applied where the store holds the count.
    pub fn spend(self, uses: u32, bound_ips: &[IpAddr], ip: IpAddr) -> Spent {
        if self.max_uses.is_some_and(|max| uses >= max) {
            return Spent::Exhausted;
        }
        let mut bound = bound_ips.to_vec();
        if let Some(n) = self.bind_ips {
            if !bound.contains(&ip) {
                if bound.len() >= usize::try_from(n).unwrap_or(usize::MAX) {
                    return Spent::IpNotAllowed;
                }
                bound.push(ip);
            }
        }
        Spent::Granted {
            uses: if self.max_uses.is_some() {
                uses.saturating_add(1)
            } else {
                uses
            },
            bound_ips: bound,
        }
    }
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// PostgreSQL reported an error.
    #[error("database error: {0}")]
    Postgres(#[from] ::postgres::Error),
    /// The database cannot be reached now; the operation did not happen (or, for a write
    /// whose connection broke before its answer, may have).
    #[error("token database temporarily unavailable: {0}")]
    Unavailable(String),
    /// The transaction holding this write could not be committed.
    #[error("database commit failed: {0}")]
    Commit(String),
    /// A stored row could not be decoded.
    #[error("corrupt token row {id}: {reason}")]
    Corrupt {
        /// The row's id.
        id: i64,
        /// What is wrong.
        reason: String,
    },
    /// The store's writer is gone (the process is shutting down).
    #[error("token store is closed")]
    Closed,
    /// Opening the store failed.
    #[error("cannot open token store at {path}: {reason}")]
    Open {
        /// Where.
        path: String,
        /// Why.
        reason: String,
    },
}

/// An operation handed to the thread that owns a store's connection, with where its answer
/// goes.
struct Job<O, D> {
    op: O,
    reply: std::sync::mpsc::SyncSender<Result<D, StoreError>>,
}

/// Hands `op` to the thread behind `jobs` and waits for its answer.
fn run_job<O, D>(jobs: &std::sync::mpsc::Sender<Job<O, D>>, op: O) -> Result<D, StoreError> {
    submit(jobs, op)?.recv().map_err(|_| StoreError::Closed)?
}

/// Hands `op` to the thread behind `jobs`; its answer comes on the receiver returned.
fn submit<O, D>(
    jobs: &std::sync::mpsc::Sender<Job<O, D>>,
    op: O,
) -> Result<std::sync::mpsc::Receiver<Result<D, StoreError>>, StoreError> {
    let (reply, wait) = std::sync::mpsc::sync_channel(1);
    jobs.send(Job { op, reply })
        .map_err(|_| StoreError::Closed)?;
    Ok(wait)
}

/// The answer to `op`, handed to the thread behind `jobs`, as `answer` reads it: waited for at
/// most the time given to [`Pending::wait`].
fn pending<O, D: Send + 'static, T>(
    jobs: &std::sync::mpsc::Sender<Job<O, D>>,
    op: O,
    answer: impl FnOnce(D) -> Result<T, StoreError> + Send + 'static,
) -> Pending<T>
where
    T: Send + 'static,
{
    match submit(jobs, op) {
        Ok(wait) => Pending::new(move |limit: Duration| match wait.recv_timeout(limit) {
            Ok(done) => answer(done?),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(StoreError::Unavailable(
                format!("no answer within {limit:?}"),
            )),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(StoreError::Closed),
        }),
        Err(e) => Pending::ready(Err(e)),
    }
}

/// A change another node made to a shared store ([`TokenStore::changes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// A token was created, changed or deleted: read it again.
    Token(TokenId),
    /// A signed-token id was revoked, with its expiry when known.
    Jti(String, Option<UnixMillis>),
    /// Changes may have been missed (the connection that hears them was lost, or they came
    /// faster than they were taken): read everything again.
    Reload,
}

/// Durable token storage. Every method returns once the change is durable.
pub trait TokenStore: Send + Sync + 'static {
    /// Every stored token, for building the in-memory index at start.
    fn load(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// One token as it is stored now, if it is.
    fn fetch(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError>;
    /// The changes other nodes make to the store, for a store that several nodes share
    /// (taken once; `None` afterwards, and for a store only this node writes).
    fn changes(&self) -> Option<std::sync::mpsc::Receiver<StoreChange>> {
        None
    }
    /// Inserts a token and returns its new id.
    fn insert(&self, token: NewToken) -> Result<TokenId, StoreError>;
    /// Applies a change to a token in one transaction; false if it does not exist.
    fn update(&self, change: &TokenUpdate) -> Result<bool, StoreError>;
    /// Deletes a token; false if it did not exist.
    fn delete(&self, id: TokenId) -> Result<bool, StoreError>;
    /// Spends one use of a token by `ip` within `limits` ([`UseLimits::spend`]), as one
    /// atomic change of the stored count: exact however many nodes share the store.
    fn spend(&self, id: TokenId, ip: IpAddr, limits: UseLimits) -> Result<Spent, StoreError>;
    /// Every revoked signed-token id, with its expiry when known.
    fn load_revoked_jtis(&self) -> Result<Vec<(String, Option<UnixMillis>)>, StoreError>;
    /// Records a revoked signed-token id.
    fn revoke_jti(&self, jti: &str, expires_on: Option<UnixMillis>) -> Result<(), StoreError>;
    /// The publish leases of a store several nodes share; `None` for a store only this node
    /// uses, whose registry alone answers who publishes a stream.
    fn leases(&self) -> Option<Arc<dyn LeaseStore>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_use_is_spent_within_the_limits() {
        let (a, b, c) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("2001:db8::1"));
        let once = UseLimits {
            max_uses: Some(1),
            bind_ips: None,
        };
        assert_eq!(
            once.spend(0, &[], a),
            Spent::Granted {
                uses: 1,
                bound_ips: vec![]
            }
        );
        assert_eq!(once.spend(1, &[], a), Spent::Exhausted);
        let bind_two = UseLimits {
            max_uses: None,
            bind_ips: Some(2),
        };
        assert_eq!(
            bind_two.spend(7, &[a], b),
            Spent::Granted {
                uses: 7,
                bound_ips: vec![a, b]
            },
            "uses are not counted without maxUses"
        );
        assert_eq!(bind_two.spend(0, &[a, b], c), Spent::IpNotAllowed);
        assert_eq!(
            bind_two.spend(0, &[a, b], b),
            Spent::Granted {
                uses: 0,
                bound_ips: vec![a, b]
            }
        );
        let both = UseLimits {
            max_uses: Some(3),
            bind_ips: Some(1),
        };
        assert_eq!(both.spend(3, &[a], a), Spent::Exhausted, "uses first");
        assert_eq!(both.spend(1, &[a], b), Spent::IpNotAllowed);
        assert_eq!(
            both.spend(1, &[a], a),
            Spent::Granted {
                uses: 2,
                bound_ips: vec![a]
            }
        );
    }
}
