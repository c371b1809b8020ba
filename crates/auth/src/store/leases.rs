//! Publish leases shared by the nodes of a cluster: which node publishes each stream name.
//!
//! A node's registry holds the lease of every stream published on it. With a store that several
//! nodes share, each of those leases is also claimed in the store in this node's name, renewed
//! every [`LEASE_RENEW`], and expires [`LEASE_TTL`] after its last renewal: a node that dies
//! loses its leases within that time, and another node may then publish its streams. The
//! store's clock alone decides expiry, so the nodes' clocks need not agree.
//!
//! The registry hands every lease operation to the store under its own lock, so that the store
//! sees them in the order the registry made them: a renewal that read a lease is queued before
//! the release of that lease, never after it, and cannot bring a released lease back.

use std::fmt::Debug;
use std::time::Duration;

use super::StoreError;
use crate::StreamName;

/// How long a claimed lease lasts after its last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often a node renews its leases (and reads the other nodes' ones).
pub const LEASE_RENEW: Duration = Duration::from_secs(1);
/// Most other nodes' leases one renewal reads: the store is the cluster's own, but memory stays
/// bounded whatever it holds.
pub const MAX_OTHER_LEASES: usize = 100_000;

/// A lease this node holds: the stream, the publish session holding it, and whether that
/// publish needs subscribe tokens (which the other nodes learn from the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    /// The stream name.
    pub stream: StreamName,
    /// The registry's id of the publish session.
    pub session: u64,
    /// Whether its viewers need a subscribe token.
    pub subscribe_requires_auth: bool,
}

/// A live lease of another node, as a renewal read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherLease {
    /// The stream name.
    pub stream: StreamName,
    /// Where the other nodes pull the stream from (the holder's advertised RTMP address;
    /// empty when it gives none).
    pub origin: String,
    /// Whether its viewers need a subscribe token.
    pub subscribe_requires_auth: bool,
}

/// What a renewal came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewed {
    /// The streams whose leases this node still holds; a held stream missing here is held by
    /// another node now.
    pub kept: Vec<StreamName>,
    /// The other nodes' live leases.
    pub others: Vec<OtherLease>,
}

/// An answer the store will give: the operation is queued, [`Pending::wait`] waits for it.
pub struct Pending<T>(Box<dyn FnOnce(Duration) -> Result<T, StoreError> + Send>);

impl<T> Pending<T> {
    /// An answer that will come from `wait`, which waits at most the time it is given.
    pub(crate) fn new(
        wait: impl FnOnce(Duration) -> Result<T, StoreError> + Send + 'static,
    ) -> Self {
        Self(Box::new(wait))
    }

    /// An answer known now.
    pub(crate) fn ready(answer: Result<T, StoreError>) -> Self
    where
        T: Send + 'static,
    {
        Self::new(move |_| answer)
    }

    /// Waits at most `limit` for the answer; [`StoreError::Unavailable`] when it has not come
    /// (the operation still runs).
    pub fn wait(self, limit: Duration) -> Result<T, StoreError> {
        (self.0)(limit)
    }
}

impl<T> Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

/// Publish leases in a store several nodes share. Every method queues the operation and
/// returns at once; the store runs them in the order they were queued.
pub trait LeaseStore: Send + Sync + Debug {
    /// Claims `lease` for this node: granted (`true`) unless another node holds a live lease
    /// of the stream.
    fn claim(&self, lease: HeldLease) -> Pending<bool>;
    /// Renews every lease this node holds (claiming again those that expired meanwhile, unless
    /// another node took them), and reads the other nodes' live leases.
    fn renew(&self, held: Vec<HeldLease>) -> Pending<Renewed>;
    /// Gives up the lease of `stream`, if `session` still holds it.
    fn release(&self, stream: &StreamName, session: u64);
    /// Gives up every lease of this node (at shutdown).
    fn release_all(&self) -> Pending<()>;
}

/// Leases in memory, shared by several registries as if they were nodes, on a clock the test
/// moves: the rules of the shared store without a database.
#[cfg(test)]
pub(crate) mod memory {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Debug, Default)]
    struct Table {
        now: Duration,
        /// stream -> (node, session, protected, expires at)
        rows: HashMap<StreamName, (u32, u64, bool, Duration)>,
    }

    /// The database every node of a test shares.
    #[derive(Debug, Default, Clone)]
    pub(crate) struct SharedTable(Arc<Mutex<Table>>);

    impl SharedTable {
        fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
            self.0.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// Moves the clock on.
        pub(crate) fn advance(&self, by: Duration) {
            self.lock().now += by;
        }

        /// The node holding a live lease of `stream`.
        pub(crate) fn holder(&self, stream: &StreamName) -> Option<u32> {
            let t = self.lock();
            t.rows.get(stream).filter(|r| r.3 > t.now).map(|r| r.0)
        }

        /// Node `node`'s view of the table.
        pub(crate) fn node(&self, node: u32) -> MemoryLeases {
            MemoryLeases {
                table: self.clone(),
                node,
            }
        }
    }

    /// One node's leases in a [`SharedTable`].
    #[derive(Debug)]
    pub(crate) struct MemoryLeases {
        table: SharedTable,
        node: u32,
    }

    impl MemoryLeases {
        fn take(&self, t: &mut Table, lease: &HeldLease) -> bool {
            let now = t.now;
            let free = t
                .rows
                .get(&lease.stream)
                .is_none_or(|r| r.0 == self.node || r.3 <= now);
            if free {
                t.rows.insert(
                    lease.stream.clone(),
                    (
                        self.node,
                        lease.session,
                        lease.subscribe_requires_auth,
                        now + LEASE_TTL,
                    ),
                );
            }
            free
        }
    }

    impl LeaseStore for MemoryLeases {
        fn claim(&self, lease: HeldLease) -> Pending<bool> {
            let mut t = self.table.lock();
            Pending::ready(Ok(self.take(&mut t, &lease)))
        }

        fn renew(&self, held: Vec<HeldLease>) -> Pending<Renewed> {
            let mut t = self.table.lock();
            let kept = held
                .iter()
                .filter(|l| self.take(&mut t, l))
                .map(|l| l.stream.clone())
                .collect();
            let now = t.now;
            let others = t
                .rows
                .iter()
                .filter(|(_, r)| r.0 != self.node && r.3 > now)
                .map(|(stream, r)| OtherLease {
                    stream: stream.clone(),
                    origin: format!("node{}", r.0),
                    subscribe_requires_auth: r.2,
                })
                .collect();
            Pending::ready(Ok(Renewed { kept, others }))
        }

        fn release(&self, stream: &StreamName, session: u64) {
            let mut t = self.table.lock();
            if t.rows
                .get(stream)
                .is_some_and(|r| r.0 == self.node && r.1 == session)
            {
                t.rows.remove(stream);
            }
        }

        fn release_all(&self) -> Pending<()> {
            self.table.lock().rows.retain(|_, r| r.0 != self.node);
            Pending::ready(Ok(()))
        }
    }
}
