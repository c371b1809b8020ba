//! Token storage behind a trait, so that another backend (a shared database for several nodes)
//! is a new implementation, not a rewrite. Decisions never read the store: [`crate::Auth`]
//! keeps an in-memory index in step with it and writes through.

mod memory;
mod sqlite;

use std::net::IpAddr;

pub use memory::MemoryStore;
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

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
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

/// Durable token storage. Every method returns once the change is durable.
pub trait TokenStore: Send + Sync + 'static {
    /// Every stored token, for building the in-memory index at start.
    fn load(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Inserts a token and returns its new id.
    fn insert(&self, token: NewToken) -> Result<TokenId, StoreError>;
    /// Applies a change to a token in one transaction; false if it does not exist.
    fn update(&self, change: &TokenUpdate) -> Result<bool, StoreError>;
    /// Deletes a token; false if it did not exist.
    fn delete(&self, id: TokenId) -> Result<bool, StoreError>;
    /// Records a token's use count and bound IPs after a grant.
    fn record_usage(&self, id: TokenId, uses: u32, bound_ips: &[IpAddr]) -> Result<(), StoreError>;
    /// Every revoked signed-token id, with its expiry when known.
    fn load_revoked_jtis(&self) -> Result<Vec<(String, Option<UnixMillis>)>, StoreError>;
    /// Records a revoked signed-token id.
    fn revoke_jti(&self, jti: &str, expires_on: Option<UnixMillis>) -> Result<(), StoreError>;
}
