//! streamgate's authorization core: the token model, the one decision function every listener
//! calls ([`Auth::authorize`]), the token store (embedded SQLite by default, behind
//! [`TokenStore`]) and the live-session registry.
//!
//! The flow: a listener turns its protocol's request into an [`AccessRequest`] and calls
//! [`Auth::authorize`]. The decision reads the in-memory token index and the registry; a
//! [`Grant`] registers the session (and, for a publish, holds the stream name's lease) until it is
//! dropped, and carries a cancellation handle that fires when the token is revoked, disabled,
//! rotated or expires. The REST API changes tokens through [`Auth::create`], [`Auth::update`]
//! and [`Auth::delete`], which write through to the store before the index changes.
//!
//! This crate opens no sockets and knows no wire protocol.

pub mod cluster;
mod decision;
mod end;
mod failures;
mod gate;
pub mod jwt;
mod name;
mod registry;
mod request;
pub mod rules;
mod secret;
mod service;
pub mod store;
mod time;
mod token;

pub use end::{Revocation, SessionEnd};
pub use failures::{AuthFailures, FailurePolicy, MAX_FAILURE_SOURCES};
pub use gate::{accept_loop, source_key, ConnectionGate, GatePass, GateRefusal, GateStats};
pub use name::{StreamName, StreamNameError, MAX_STREAM_NAME_LEN};
pub use registry::{LiveStream, Registry, RemoteStream, SessionCounts, SessionFacts};
pub use request::{AccessRequest, Action, Denial, Grant, Protocol};
pub use secret::{random_urlsafe, secrets_match, Secret, SecretHash};
pub use service::{
    unix_millis, Auth, AuthConfig, AuthError, ListQuery, SortBy, SpecChange, EXPIRY_SWEEP_INTERVAL,
    MAX_ITEMS_ON_PAGE,
};
pub use store::{
    BoundIps, MemoryStore, NodeIdentity, PostgresStore, Spent, SqliteStore, StoreChange,
    StoreError, TokenStore, TokenUpdate, UseLimits,
};
pub use time::iso8601;
pub use token::{
    SpecError, SrtPassphrase, TokenId, TokenKind, TokenRecord, TokenSpec, UnixMillis,
    MAX_LABEL_CHARS, MAX_SRT_PASSPHRASE_LEN, MIN_SRT_PASSPHRASE_LEN,
};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_jwt;
