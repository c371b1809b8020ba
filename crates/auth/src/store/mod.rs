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
    /// Replaces a token's secret hash, policy and usage; false if it does not exist.
    fn update(&self, record: &TokenRecord) -> Result<bool, StoreError>;
    /// Deletes a token; false if it did not exist.
    fn delete(&self, id: TokenId) -> Result<bool, StoreError>;
    /// Records a token's use count and bound IPs after a grant.
    fn record_usage(&self, id: TokenId, uses: u32, bound_ips: &[IpAddr]) -> Result<(), StoreError>;
    /// Every revoked signed-token id, with its expiry when known.
    fn load_revoked_jtis(&self) -> Result<Vec<(String, Option<UnixMillis>)>, StoreError>;
    /// Records a revoked signed-token id.
    fn revoke_jti(&self, jti: &str, expires_on: Option<UnixMillis>) -> Result<(), StoreError>;
}
