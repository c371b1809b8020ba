//! [`Auth`]: the in-memory token index kept in step with the store, the operations the REST API
//! needs (create, get, list, update, delete), and the expiry sweeper.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::cluster::ClusterKey;
use crate::jwt::JwtVerifier;
use crate::registry::{Registry, TokenChange};
use crate::store::{
    BoundIps, NewToken, StoreChange, StoreError, TokenStore, TokenUpdate, LEASE_RENEW, LEASE_TTL,
};
use crate::token::{SpecError, TokenId, TokenKind, TokenRecord, TokenSpec, UnixMillis};
use crate::{Secret, SecretHash};

/// How often live sessions are checked for expired tokens (the bound on how late an expired
/// token's sessions are told to end).
pub const EXPIRY_SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// Most tokens returned by one list page.
pub const MAX_ITEMS_ON_PAGE: usize = 100;
/// Longest expiry accepted when the server sets no `max_expiry` (100 years).
pub const MAX_EXPIRY_SECS: u64 = 100 * 365 * 86_400;
/// Longest signed-token id accepted for revocation, in bytes.
pub const MAX_JTI_LEN: usize = 256;
/// How long the following of another node's changes waits before it reads everything again,
/// after a read failed.
const FOLLOW_RETRY: Duration = Duration::from_secs(1);

/// Server-wide policy switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Development mode: publishing needs no token. Off by default.
    pub open_publish: bool,
    /// Every viewer needs a subscribe token, whatever the publish token says.
    pub require_play_token: bool,
    /// Expiry given to tokens created without one.
    pub default_expiry: Option<Duration>,
    /// Longest expiry a token may be created with; tokens without one get this.
    pub max_expiry: Option<Duration>,
}

/// What the token operations can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token of that kind has that id.
    #[error("token not found")]
    NotFound,
    /// The spec breaks a rule.
    #[error(transparent)]
    Invalid(#[from] SpecError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The system random source failed.
    #[error("random source failed: {0}")]
    Random(#[from] getrandom::Error),
}

/// Usage state of a token, shared by every version of its index entry.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    pub uses: u32,
    pub bound_ips: Vec<IpAddr>,
}

/// One token in the in-memory index.
#[derive(Debug)]
pub(crate) struct Entry {
    pub id: TokenId,
    pub kind: TokenKind,
    pub secret_hash: SecretHash,
    pub spec: TokenSpec,
    pub added_on: UnixMillis,
    pub usage: Arc<Mutex<Usage>>,
    /// Set (under the registry's lock) once a newer version replaced this one or the token
    /// was deleted: a decision taken with it is taken again.
    pub retired: AtomicBool,
}

impl Entry {
    fn from_record(r: TokenRecord) -> Self {
        let usage = Usage {
            uses: r.uses,
            bound_ips: r.bound_ips,
        };
        Self {
            id: r.id,
            kind: r.kind,
            secret_hash: r.secret_hash,
            spec: r.spec,
            added_on: r.added_on,
            usage: Arc::new(Mutex::new(usage)),
            retired: AtomicBool::new(false),
        }
    }

    pub(crate) fn usage(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self) -> TokenRecord {
        let usage = self.usage();
        TokenRecord {
            id: self.id,
            kind: self.kind,
            secret_hash: self.secret_hash,
            spec: self.spec.clone(),
            added_on: self.added_on,
            uses: usage.uses,
            bound_ips: usage.bound_ips.clone(),
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    pub by_hash: HashMap<SecretHash, Arc<Entry>>,
    pub by_id: HashMap<TokenId, Arc<Entry>>,
}

impl Index {
    fn insert(&mut self, entry: Arc<Entry>) {
        self.by_hash.insert(entry.secret_hash, Arc::clone(&entry));
        self.by_id.insert(entry.id, entry);
    }

    fn remove(&mut self, id: TokenId) -> Option<Arc<Entry>> {
        let entry = self.by_id.remove(&id)?;
        self.by_hash.remove(&entry.secret_hash);
        Some(entry)
    }
}

/// Sort order for [`Auth::list`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortBy {
    /// By creation time (then id).
    #[default]
    AddedOn,
    /// By label (then id).
    Label,
    /// By id.
    Id,
}

/// Which page of which tokens [`Auth::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// 1-based page number.
    pub page: usize,
    /// Page size, 1 to [`MAX_ITEMS_ON_PAGE`].
    pub items_on_page: usize,
    /// Sort key.
    pub sort_by: SortBy,
    /// Largest first.
    pub descending: bool,
    /// Only tokens with this tag.
    pub tag: Option<String>,
}

/// A change to a token, applied by [`Auth::update`].
pub type SpecChange<'a> = Box<dyn FnOnce(&mut TokenSpec) -> Result<(), SpecError> + Send + 'a>;

/// The auth service: tokens, the decision function, and the live-session registry.
pub struct Auth {
    pub(crate) store: Arc<dyn TokenStore>,
    pub(crate) index: RwLock<Index>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) config: AuthConfig,
    /// Serialises read-modify-write changes (update, delete) so they apply in one order.
    mutate: Mutex<()>,
    /// Verifier of signed tokens, when keys are configured.
    pub(crate) jwt: Option<JwtVerifier>,
    /// Revoked signed-token ids, with their expiry (Unix ms) when known.
    revoked: RwLock<HashMap<String, Option<UnixMillis>>>,
    /// The secret the nodes of the cluster share, when configured.
    pub(crate) cluster: Option<ClusterKey>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch of `t` (0 before the epoch).
pub fn unix_millis(t: SystemTime) -> UnixMillis {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Auth {
    /// Loads every token from `store` into the index.
    pub fn open(store: Arc<dyn TokenStore>, config: AuthConfig) -> Result<Self, AuthError> {
        let mut index = Index::default();
        for record in store.load()? {
            index.insert(Arc::new(Entry::from_record(record)));
        }
        let revoked = store.load_revoked_jtis()?.into_iter().collect();
        let registry = Registry::sharing(store.leases());
        Ok(Self {
            store,
            index: RwLock::new(index),
            registry: Arc::new(registry),
            config,
            mutate: Mutex::new(()),
            jwt: None,
            revoked: RwLock::new(revoked),
            cluster: None,
        })
    }

    /// Accepts signed tokens verified by `verifier`.
    pub fn with_jwt(mut self, verifier: JwtVerifier) -> Self {
        self.jwt = Some(verifier);
        self
    }

    /// Admits the other nodes of a cluster, and this node's pulls from them, by proofs made
    /// with `key`.
    pub fn with_cluster(mut self, key: ClusterKey) -> Self {
        self.cluster = Some(key);
        self
    }

    /// The cluster's shared secret, if configured.
    pub fn cluster_key(&self) -> Option<&ClusterKey> {
        self.cluster.as_ref()
    }

    /// The signed-token verifier, if configured.
    pub fn jwt(&self) -> Option<&JwtVerifier> {
        self.jwt.as_ref()
    }

    /// The expiry of a token created at `now` asking for `requested` seconds, under the server's
    /// `default_expiry` and `max_expiry`. `field` names the request field in errors.
    pub fn expiry(
        &self,
        now: SystemTime,
        requested: Option<u64>,
        field: &'static str,
    ) -> Result<Option<UnixMillis>, SpecError> {
        let max = self
            .config
            .max_expiry
            .map_or(MAX_EXPIRY_SECS, |d| d.as_secs());
        let secs = match requested {
            Some(0) => return Err(SpecError::new(field, "must be in the future")),
            Some(s) if s > max => {
                return Err(SpecError::new(
                    field,
                    format!("must be at most {max} seconds from now"),
                ))
            }
            Some(s) => Some(s),
            None => self
                .config
                .default_expiry
                .map(|d| d.as_secs().min(max))
                .or(self.config.max_expiry.map(|d| d.as_secs())),
        };
        Ok(secs.map(|s| unix_millis(now + Duration::from_secs(s))))
    }

    /// Whether a signed token's id has been revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(jti)
    }

    /// Revokes a signed token's id durably and ends the sessions it admitted.
    pub fn revoke_jti(
        &self,
        jti: &str,
        expires_on: Option<UnixMillis>,
    ) -> Result<usize, AuthError> {
        if jti.is_empty() || jti.len() > MAX_JTI_LEN {
            return Err(SpecError::new("jti", format!("must be 1 to {MAX_JTI_LEN} bytes")).into());
        }
        self.store.revoke_jti(jti, expires_on)?;
        Ok(self.record_revoked(jti, expires_on))
    }

    /// Records a revoked signed-token id, then ends the sessions it admitted (in that order:
    /// a decision in flight checks the id again after registering); returns how many ended.
    fn record_revoked(&self, jti: &str, expires_on: Option<UnixMillis>) -> usize {
        self.revoked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(jti.to_owned(), expires_on);
        self.registry.cancel_jti(jti)
    }

    /// The revoked signed-token ids, sorted.
    pub fn revoked_jtis(&self) -> Vec<(String, Option<UnixMillis>)> {
        let mut v: Vec<_> = self
            .revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, e)| (k.clone(), *e))
            .collect();
        v.sort();
        v
    }

    /// Stored tokens of `kind` (either when `None`) with an exact rule for `stream`, by id.
    pub fn tokens_for_stream(&self, kind: Option<TokenKind>, stream: &str) -> Vec<TokenRecord> {
        let mut v: Vec<TokenRecord> = self
            .read_index()
            .by_id
            .values()
            .filter(|e| kind.is_none_or(|k| e.kind == k))
            .filter(|e| {
                e.spec
                    .streams
                    .iter()
                    .any(|r| !r.is_regex() && r.name() == stream)
            })
            .map(|e| e.record())
            .collect();
        v.sort_by_key(|r| r.id);
        v
    }

    /// The live-session registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The server-wide policy.
    pub fn config(&self) -> AuthConfig {
        self.config
    }

    pub(crate) fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_mutations(&self) -> std::sync::MutexGuard<'_, ()> {
        self.mutate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many tokens exist.
    pub fn token_count(&self) -> usize {
        self.read_index().by_id.len()
    }

    /// Creates a token; the secret is returned here and never again.
    pub fn create(
        &self,
        kind: TokenKind,
        mut spec: TokenSpec,
        now: SystemTime,
    ) -> Result<(TokenRecord, Secret), AuthError> {
        spec.validate(kind)?;
        let secret = Secret::generate(kind)?;
        let added_on = unix_millis(now);
        let new = NewToken {
            kind,
            secret_hash: secret.hash(),
            spec: spec.clone(),
            added_on,
        };
        let id = self.store.insert(new)?;
        let record = TokenRecord {
            id,
            kind,
            secret_hash: secret.hash(),
            spec,
            added_on,
            uses: 0,
            bound_ips: Vec::new(),
        };
        self.write_index()
            .insert(Arc::new(Entry::from_record(record.clone())));
        Ok((record, secret))
    }

    fn entry(&self, kind: TokenKind, id: TokenId) -> Result<Arc<Entry>, AuthError> {
        self.read_index()
            .by_id
            .get(&id)
            .filter(|e| e.kind == kind)
            .cloned()
            .ok_or(AuthError::NotFound)
    }

    /// One token of `kind`.
    pub fn get(&self, kind: TokenKind, id: TokenId) -> Result<TokenRecord, AuthError> {
        Ok(self.entry(kind, id)?.record())
    }

    /// A page of tokens of `kind`.
    pub fn list(&self, kind: TokenKind, q: &ListQuery) -> Vec<TokenRecord> {
        let mut entries: Vec<Arc<Entry>> = self
            .read_index()
            .by_id
            .values()
            .filter(|e| e.kind == kind)
            .filter(|e| q.tag.is_none() || e.spec.tag == q.tag)
            .cloned()
            .collect();
        match q.sort_by {
            SortBy::AddedOn => entries.sort_by_key(|e| (e.added_on, e.id)),
            SortBy::Label => {
                entries.sort_by(|a, b| (&a.spec.label, a.id).cmp(&(&b.spec.label, b.id)))
            }
            SortBy::Id => entries.sort_by_key(|e| e.id),
        }
        if q.descending {
            entries.reverse();
        }
        let per_page = q.items_on_page.clamp(1, MAX_ITEMS_ON_PAGE);
        let skip = q.page.max(1).saturating_sub(1).saturating_mul(per_page);
        entries
            .iter()
            .skip(skip)
            .take(per_page)
            .map(|e| e.record())
            .collect()
    }

    /// Changes a token. `change` edits the spec; `refresh` rotates the secret. The live
    /// sessions of the token are decided again under the new rules, and those it no longer
    /// admits are told to end (all of them when the secret is rotated).
    ///
    /// The store gets only what changed (the policy, the secret's hash, the bound IPs when
    /// `bindIpsOnUsage` shrank or went), never the use count, in one transaction; the token's
    /// usage lock is held meanwhile, so that a concurrent grant's use is neither lost nor
    /// written back stale.
    pub fn update(
        &self,
        kind: TokenKind,
        id: TokenId,
        change: SpecChange<'_>,
        refresh: bool,
    ) -> Result<(TokenRecord, Option<Secret>), AuthError> {
        let _serial = self.lock_mutations();
        let old = self.entry(kind, id)?;
        let mut spec = old.spec.clone();
        change(&mut spec)?;
        spec.validate(kind)?;
        let secret = if refresh {
            Some(Secret::generate(kind)?)
        } else {
            None
        };
        let bound_ips = match spec.bind_ips_on_usage {
            None => BoundIps::Clear,
            Some(n) => BoundIps::Truncate(n),
        };
        let record = {
            let mut usage = old.usage();
            let delta = TokenUpdate {
                id,
                secret_hash: secret.as_ref().map(Secret::hash),
                spec: spec.clone(),
                bound_ips,
            };
            if !self.store.update(&delta)? {
                return Err(AuthError::NotFound);
            }
            bound_ips.apply(&mut usage.bound_ips);
            TokenRecord {
                id,
                kind,
                secret_hash: delta.secret_hash.unwrap_or(old.secret_hash),
                spec,
                added_on: old.added_on,
                uses: usage.uses,
                bound_ips: usage.bound_ips.clone(),
            }
        };
        let ended = self.replace(&old, &record, refresh);
        if ended > 0 {
            tracing::info!(token = %id, sessions = ended, "token change ended live sessions");
        }
        Ok((record, secret))
    }

    /// Swaps `old` for the token as `record` says (its use count shared with `old`) in the
    /// index, then decides the live sessions of `old` again; returns how many ended.
    fn replace(&self, old: &Arc<Entry>, record: &TokenRecord, rotated: bool) -> usize {
        let entry = Arc::new(Entry {
            id: record.id,
            kind: record.kind,
            secret_hash: record.secret_hash,
            spec: record.spec.clone(),
            added_on: record.added_on,
            usage: Arc::clone(&old.usage),
            retired: AtomicBool::new(false),
        });
        {
            let mut index = self.write_index();
            index.remove(record.id);
            index.insert(Arc::clone(&entry));
        }
        self.registry.token_changed(
            old,
            TokenChange::Updated {
                new: &entry,
                rotated,
                now: SystemTime::now(),
            },
        )
    }

    /// Deletes a token and ends its live sessions.
    pub fn delete(&self, kind: TokenKind, id: TokenId) -> Result<(), AuthError> {
        let _serial = self.lock_mutations();
        let old = self.entry(kind, id)?;
        self.store.delete(id)?;
        self.forget(&old);
        Ok(())
    }

    /// Takes a deleted token out of the index and ends its live sessions; returns how many.
    fn forget(&self, old: &Arc<Entry>) -> usize {
        self.write_index().remove(old.id);
        self.registry.token_changed(old, TokenChange::Deleted)
    }

    /// Follows the changes other nodes make to a shared store, on a thread of its own: each
    /// token they change is read again and swapped into the index, and its live sessions are
    /// decided again, as for a change made here; a revoked signed-token id ends its sessions.
    /// What cannot be read (the database is unreachable) is read again, all of it, once it
    /// can be. With a store that shares publish leases, a second thread renews this node's
    /// leases every [`LEASE_RENEW`]. Nothing to do for a store only this node writes.
    pub fn follow_store(self: &Arc<Self>) -> std::io::Result<()> {
        if self.registry.shares_leases() {
            let auth = Arc::downgrade(self);
            std::thread::Builder::new()
                .name("lease-renew".into())
                .spawn(move || loop {
                    std::thread::sleep(LEASE_RENEW);
                    let Some(auth) = auth.upgrade() else {
                        return;
                    };
                    if let Err(e) = auth.registry.renew_shared(LEASE_TTL) {
                        tracing::warn!(error = %e, "could not renew this node's publish leases");
                    }
                })?;
        }
        let Some(changes) = self.store.changes() else {
            return Ok(());
        };
        let auth = Arc::clone(self);
        std::thread::Builder::new()
            .name("token-follow".into())
            .spawn(move || {
                let mut behind = false;
                loop {
                    let change = if behind {
                        // Behind: everything is read again, at the next change or after a
                        // while, whichever comes first.
                        match changes.recv_timeout(FOLLOW_RETRY) {
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                            _ => StoreChange::Reload,
                        }
                    } else {
                        match changes.recv() {
                            Ok(change) => change,
                            Err(_) => return,
                        }
                    };
                    behind = match auth.apply_change(&change) {
                        Ok(()) => false,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not read another node's token change; reading everything again when the database answers");
                            true
                        }
                    };
                }
            })?;
        Ok(())
    }

    /// Applies one change another node made to the store.
    fn apply_change(&self, change: &StoreChange) -> Result<(), AuthError> {
        match change {
            StoreChange::Token(id) => {
                let stored = self.store.fetch(*id)?;
                self.apply_stored(*id, stored);
            }
            StoreChange::Jti(jti, expires_on) => self.apply_revoked(jti, *expires_on),
            StoreChange::Reload => {
                let stored = self.store.load()?;
                let revoked = self.store.load_revoked_jtis()?;
                let kept: std::collections::HashSet<TokenId> =
                    stored.iter().map(|r| r.id).collect();
                let gone: Vec<TokenId> = self
                    .read_index()
                    .by_id
                    .keys()
                    .filter(|id| !kept.contains(id))
                    .copied()
                    .collect();
                for record in stored {
                    self.apply_stored(record.id, Some(record));
                }
                for id in gone {
                    self.apply_stored(id, None);
                }
                for (jti, expires_on) in revoked {
                    if !self.is_revoked(&jti) {
                        self.apply_revoked(&jti, expires_on);
                    }
                }
            }
        }
        Ok(())
    }

    /// Makes the index hold token `id` as stored now (`None`: deleted), deciding its live
    /// sessions again when its policy or secret changed.
    fn apply_stored(&self, id: TokenId, stored: Option<TokenRecord>) {
        let _serial = self.lock_mutations();
        let old = self.read_index().by_id.get(&id).cloned();
        match (old, stored) {
            (None, None) => {}
            (None, Some(record)) => self
                .write_index()
                .insert(Arc::new(Entry::from_record(record))),
            (Some(old), None) => {
                let ended = self.forget(&old);
                tracing::info!(token = %id, sessions = ended, "token deleted through another node");
            }
            (Some(old), Some(record)) => {
                {
                    // The stored count is the truth; this node's is never ahead of it.
                    let mut usage = old.usage();
                    usage.uses = usage.uses.max(record.uses);
                    usage.bound_ips.clone_from(&record.bound_ips);
                }
                if old.kind == record.kind
                    && old.secret_hash == record.secret_hash
                    && old.spec == record.spec
                {
                    return;
                }
                let ended = self.replace(&old, &record, old.secret_hash != record.secret_hash);
                tracing::info!(token = %id, sessions = ended, "token changed through another node");
            }
        }
    }

    /// Records a signed-token id revoked through another node and ends its sessions.
    fn apply_revoked(&self, jti: &str, expires_on: Option<UnixMillis>) {
        let ended = self.record_revoked(jti, expires_on);
        tracing::info!(
            sessions = ended,
            "signed token revoked through another node"
        );
    }

    /// Gives up this node's publish leases in a shared store, so that other nodes may publish
    /// its streams at once: at shutdown, once its sessions ended. Waits at most `wait`.
    pub fn release_leases(&self, wait: Duration) -> Result<(), AuthError> {
        Ok(self.registry.release_all_shared(wait)?)
    }

    /// Tells the sessions of tokens expired at `now` to end.
    pub fn sweep_expired(&self, now: SystemTime) -> usize {
        self.registry.cancel_expired(unix_millis(now))
    }

    /// Sweeps expired sessions every [`EXPIRY_SWEEP_INTERVAL`] until `stop` fires.
    pub async fn run_expiry_sweeper(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(EXPIRY_SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    let n = self.sweep_expired(SystemTime::now());
                    if n > 0 {
                        tracing::info!(sessions = n, "ended sessions of expired tokens");
                    }
                }
            }
        }
    }
}
