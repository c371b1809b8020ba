//! The live-session registry: which sessions are live, what each asked for and which token
//! admitted it, and the publish lease of every live stream name.
//!
//! A publish session holds its stream's lease from grant to drop, so a name is live once at a
//! time. An anonymous viewer is bound to the publish session that admitted it and ends with
//! it. Every session has a [`SessionEnd`]: deleting, disabling, rotating or the expiry of its
//! token fires it, and so does any change after which its token no longer admits it (the
//! registry re-checks every session a change governs, with what the session asked for).
//!
//! Registration and the end of a token are one step: a token is retired and its sessions
//! re-checked under the registry's lock, and a session is registered under the same lock only
//! if the token it was decided with is not retired. A decision that loses that race is taken
//! again with the token as it now is.
//!
//! With a store that several nodes share ([`LeaseStore`]), a lease is a name's lease in the
//! whole cluster: a publish claims it in the store after it took it here, and is refused as
//! "in use" when another node holds it. While the store cannot answer, a publish goes on with
//! this node's lease alone, and the next renewal claims it; a renewal that finds the lease
//! held by another node ends the publish here. Renewals also read which streams the other
//! nodes publish, where from, and whether their viewers need subscribe tokens: an anonymous
//! viewer of a protected stream is refused for the missing token wherever the stream is
//! published.
//!
//! A stream another node publishes is served here by a relayed publish: this node pulls it
//! from its origin and registers the pull as a publish whose lease stays here (the origin
//! holds the cluster's). Its anonymous viewers are bound to it as to any publish. On the
//! origin, the pulling node is a viewer bound to the publish, whatever its subscribe rule.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use crate::end::{Revocation, SessionEnd};
use crate::service::Entry;
use crate::store::{HeldLease, LeaseStore, StoreError};
use crate::token::UnixMillis;
use crate::{Action, Denial, Protocol, StreamName, TokenId};

/// How long a stream whose pull its origin ended is taken to need subscribe tokens: longer
/// than the origin takes to write its lease and this node to read it again.
pub const ASSUMED_PROTECTED_FOR: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a publish waits for the shared store to answer its claim before it goes on with
/// this node's lease alone.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The registry of live sessions and publish leases.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    /// The leases of the cluster, when the store is shared.
    shared: Option<Arc<dyn LeaseStore>>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    sessions: HashMap<u64, Session>,
    leases: HashMap<StreamName, Lease>,
    /// The streams other nodes publish, as the last renewal read them.
    others: HashMap<StreamName, RemoteStream>,
    /// Streams whose pull from another node that node ended: taken to need subscribe tokens
    /// until then, whatever a renewal read meanwhile (the origin ends its pulls when its
    /// publish newly needs them, and writes that to its lease at once).
    assumed_protected: HashMap<StreamName, Instant>,
}

/// A stream another node publishes, as this node last read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStream {
    /// Where other nodes pull it from (`host:port` of the origin's RTMP listener; empty when
    /// the origin gives none).
    pub origin: String,
    /// Whether its viewers need a subscribe token.
    pub subscribe_requires_auth: bool,
}

/// What a session asked for and from where: kept so that a change to its token can be
/// decided again for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    /// Publish or play.
    pub action: Action,
    /// The stream.
    pub stream: StreamName,
    /// The peer's address (IPv4-mapped addresses as IPv4).
    pub peer_ip: IpAddr,
    /// The request's Origin header.
    pub origin: Option<String>,
    /// The request's Referer header.
    pub referer: Option<String>,
    /// The peer's user agent.
    pub user_agent: Option<String>,
    /// The protocol.
    pub protocol: Protocol,
}

#[derive(Debug)]
struct Session {
    token: Option<TokenId>,
    jti: Option<String>,
    facts: SessionFacts,
    expires_on: Option<UnixMillis>,
    /// For an anonymous viewer: the publish session that admitted it.
    bound_to: Option<u64>,
    end: SessionEnd,
}

#[derive(Debug)]
struct Lease {
    session: u64,
    token: Option<TokenId>,
    subscribe_requires_auth: bool,
    /// Anonymous viewers admitted while this publish runs.
    bound: HashSet<u64>,
    /// A stream pulled from the node that publishes it: its cluster lease is that node's.
    relayed: bool,
}

/// What the registry knows of a live stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveStream {
    /// The session that publishes it.
    pub session: u64,
    /// Whether viewers need a subscribe token.
    pub subscribe_requires_auth: bool,
}

/// What a new session is registered with.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    pub token: Option<TokenId>,
    pub jti: Option<String>,
    pub facts: SessionFacts,
    pub expires_on: Option<UnixMillis>,
    /// For a publish: whether its viewers need a subscribe token.
    pub subscribe_requires_auth: bool,
    /// Admitted without a token: a viewer is bound to the live publish.
    pub anonymous: bool,
    /// Another node pulling the stream: a viewer bound to the live publish, whatever its
    /// subscribe rule; a publish relaying what this node pulled, not claimed in the cluster.
    pub cluster: bool,
}

/// Why a session was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdmitError {
    /// Refused.
    Denied(Denial),
    /// The token was changed or deleted since it was read: decide again.
    Retry,
}

impl From<Denial> for AdmitError {
    fn from(d: Denial) -> Self {
        Self::Denied(d)
    }
}

/// What happened to a token, for [`Registry::token_changed`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum TokenChange<'a> {
    /// It was deleted.
    Deleted,
    /// It was replaced by `new`; `rotated` when its secret changed.
    Updated {
        new: &'a Entry,
        rotated: bool,
        now: SystemTime,
    },
}

/// Counts of live sessions, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// Live publish sessions.
    pub publishers: usize,
    /// Live play sessions.
    pub viewers: usize,
}

impl Registry {
    /// A registry whose leases are also claimed in `shared`, a store other nodes use too.
    pub(crate) fn sharing(shared: Option<Arc<dyn LeaseStore>>) -> Self {
        Self {
            inner: Mutex::default(),
            shared,
        }
    }

    /// Whether publish leases are claimed in a shared store (a publish's decision then waits
    /// for it).
    pub fn shares_leases(&self) -> bool {
        self.shared.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the maps consistent before anything that may panic, so a
        // poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session decided with `entry` (none for anonymous and signed tokens). A
    /// publish takes the stream's lease or fails with `StreamInUse`; an anonymous viewer is
    /// bound to the live publish, or refused if there is none or it needs a subscribe token.
    pub(crate) fn admit(
        self: &Arc<Self>,
        a: Admission,
        entry: Option<&Entry>,
    ) -> Result<SessionGuard, AdmitError> {
        let mut inner = self.lock();
        if entry.is_some_and(|e| e.retired.load(Ordering::Relaxed)) {
            return Err(AdmitError::Retry);
        }
        let anonymous = a.anonymous;
        let mut bound_to = None;
        match a.facts.action {
            Action::Publish => {
                if inner.leases.contains_key(&a.facts.stream) {
                    return Err(Denial::StreamInUse.into());
                }
            }
            Action::Play if a.cluster => match inner.leases.get(&a.facts.stream) {
                None => return Err(Denial::StreamNotLive.into()),
                Some(l) => bound_to = Some(l.session),
            },
            Action::Play if anonymous => match inner.leases.get(&a.facts.stream) {
                None if inner.remote_protected(&a.facts.stream) => {
                    return Err(Denial::Missing.into())
                }
                None => return Err(Denial::StreamNotLive.into()),
                Some(l) if l.subscribe_requires_auth => return Err(Denial::Missing.into()),
                Some(l) => bound_to = Some(l.session),
            },
            Action::Play => {}
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let end = SessionEnd::default();
        if a.facts.action == Action::Publish {
            let lease = Lease {
                session: id,
                token: a.token,
                subscribe_requires_auth: a.subscribe_requires_auth,
                bound: HashSet::new(),
                relayed: a.cluster,
            };
            inner.leases.insert(a.facts.stream.clone(), lease);
        }
        if let Some(publish) = bound_to {
            if let Some(l) = inner.leases.get_mut(&a.facts.stream) {
                l.bound.insert(id);
            }
            tracing::trace!(
                session = id,
                publish,
                "anonymous viewer bound to its publish"
            );
        }
        let session = Session {
            token: a.token,
            jti: a.jti,
            facts: a.facts,
            expires_on: a.expires_on,
            bound_to,
            end: end.clone(),
        };
        inner.sessions.insert(id, session);
        Ok(SessionGuard {
            registry: Arc::clone(self),
            id,
            end,
            bound_to,
        })
    }

    fn release(&self, id: u64) {
        let mut inner = self.lock();
        let Some(session) = inner.sessions.remove(&id) else {
            return;
        };
        let stream = &session.facts.stream;
        if let Some(publish) = session.bound_to {
            if let Some(l) = inner
                .leases
                .get_mut(stream)
                .filter(|l| l.session == publish)
            {
                l.bound.remove(&id);
            }
        }
        if session.facts.action == Action::Publish
            && inner.leases.get(stream).is_some_and(|l| l.session == id)
        {
            if let Some(lease) = inner.leases.remove(stream) {
                end_all(&inner, lease.bound.iter(), Revocation::PublisherEnded);
                if let Some(shared) = self.shared.as_ref().filter(|_| !lease.relayed) {
                    shared.release(stream, id);
                }
            }
        }
    }

    /// Claims the lease the publish session `id` holds here in the shared store, if there is
    /// one: refused as in use when another node holds it; granted when the store does not
    /// answer within [`CLAIM_WAIT`] (the next renewal claims it).
    pub(crate) fn claim_shared(&self, id: u64) -> Result<(), Denial> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let pending = {
            let inner = self.lock();
            let Some(held) = held_lease(&inner, id) else {
                return Err(Denial::Unavailable);
            };
            shared.claim(held)
        };
        match pending.wait(CLAIM_WAIT) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Denial::StreamInUse),
            Err(e) => {
                tracing::warn!(error = %e, "publishing with this node's lease alone: the shared store did not answer the claim");
                Ok(())
            }
        }
    }

    /// Renews this node's leases in the shared store and reads the other nodes' ones; a
    /// publish whose lease another node holds now is told to end. Returns how many were.
    pub(crate) fn renew_shared(&self, wait: std::time::Duration) -> Result<usize, StoreError> {
        let Some(shared) = &self.shared else {
            return Ok(0);
        };
        let (held, pending) = {
            let inner = self.lock();
            let held: Vec<HeldLease> = inner
                .leases
                .values()
                .filter_map(|l| held_lease(&inner, l.session))
                .collect();
            let pending = shared.renew(held.clone());
            (held, pending)
        };
        let renewed = pending.wait(wait)?;
        let kept: HashSet<&StreamName> = renewed.kept.iter().collect();
        let mut inner = self.lock();
        inner.others = renewed
            .others
            .into_iter()
            .map(|o| {
                let remote = RemoteStream {
                    origin: o.origin,
                    subscribe_requires_auth: o.subscribe_requires_auth,
                };
                (o.stream, remote)
            })
            .collect();
        // A relayed stream whose origin now needs subscribe tokens: its anonymous viewers here
        // end, as they do there.
        let mut newly_protected = Vec::new();
        let relayed: Vec<(StreamName, bool)> = inner
            .leases
            .iter()
            .filter(|(_, l)| l.relayed)
            .map(|(stream, _)| (stream.clone(), inner.remote_protected(stream)))
            .collect();
        for (stream, protect) in relayed {
            let Some(lease) = inner.leases.get_mut(&stream) else {
                continue;
            };
            if protect && !lease.subscribe_requires_auth {
                newly_protected.extend(lease.bound.iter().copied());
            }
            lease.subscribe_requires_auth = protect;
        }
        let ended = end_all(&inner, newly_protected.iter(), Revocation::NowProtected);
        let lost: Vec<u64> = held
            .iter()
            .filter(|h| !kept.contains(&h.stream))
            .filter(|h| {
                inner
                    .leases
                    .get(&h.stream)
                    .is_some_and(|l| l.session == h.session)
            })
            .map(|h| h.session)
            .collect();
        for id in &lost {
            tracing::warn!(session = id, "another node holds this publish's lease now");
        }
        Ok(ended + end_all(&inner, lost.iter(), Revocation::LeaseLost))
    }

    /// Gives up every lease of this node in the shared store, waiting at most `wait`.
    pub(crate) fn release_all_shared(&self, wait: std::time::Duration) -> Result<(), StoreError> {
        match &self.shared {
            Some(shared) => shared.release_all().wait(wait),
            None => Ok(()),
        }
    }

    /// When session `id`'s token expires, as things stand (policy changes move it).
    pub(crate) fn expires_on(&self, id: u64) -> Option<UnixMillis> {
        self.lock().sessions.get(&id).and_then(|s| s.expires_on)
    }

    /// The stream of that name another node publishes, as this node last read it, unless it
    /// is live here.
    pub fn remote(&self, stream: &StreamName) -> Option<RemoteStream> {
        let inner = self.lock();
        if inner.leases.contains_key(stream) {
            return None;
        }
        let mut remote = inner.others.get(stream).cloned()?;
        remote.subscribe_requires_auth = inner.remote_protected(stream);
        Some(remote)
    }

    /// Takes `stream`, which another node publishes, to need subscribe tokens for
    /// [`ASSUMED_PROTECTED_FOR`]: its origin ended this node's pull of it, as it does when its
    /// publish newly needs them.
    pub fn assume_protected(&self, stream: &StreamName) {
        let mut inner = self.lock();
        inner
            .assumed_protected
            .retain(|_, until| Instant::now() < *until);
        inner
            .assumed_protected
            .insert(stream.clone(), Instant::now() + ASSUMED_PROTECTED_FOR);
    }

    /// The live stream of that name, if it is being published.
    pub fn live(&self, stream: &StreamName) -> Option<LiveStream> {
        self.lock().leases.get(stream).map(|l| LiveStream {
            session: l.session,
            subscribe_requires_auth: l.subscribe_requires_auth,
        })
    }

    /// Ends every session admitted by `token` for `why`; returns how many were told.
    #[cfg(test)]
    pub(crate) fn cancel_token(&self, token: TokenId, why: Revocation) -> usize {
        let inner = self.lock();
        end_where(&inner, |s| s.token == Some(token), why)
    }

    /// Ends every session admitted by a signed token with this `jti`; returns how many.
    pub fn cancel_jti(&self, jti: &str) -> usize {
        let inner = self.lock();
        end_where(
            &inner,
            |s| s.jti.as_deref() == Some(jti),
            Revocation::JtiRevoked,
        )
    }

    /// Ends every session whose token has expired at `now`; returns how many were told.
    pub fn cancel_expired(&self, now: UnixMillis) -> usize {
        let inner = self.lock();
        end_where(
            &inner,
            |s| s.expires_on.is_some_and(|e| now >= e) && !s.end.is_ended(),
            Revocation::Expired,
        )
    }

    /// Retires `old` (sessions decided with it are decided again) and applies `change` to
    /// the live sessions of its token, in one step under the lock: a deleted or rotated
    /// token ends them all; an updated one ends those it no longer admits, and when it now
    /// makes its stream need subscribe tokens, the anonymous viewers of its publish. Returns
    /// how many sessions were told to end.
    pub(crate) fn token_changed(&self, old: &Entry, change: TokenChange<'_>) -> usize {
        let mut inner = self.lock();
        old.retired.store(true, Ordering::Relaxed);
        let token = old.id;
        match change {
            TokenChange::Deleted => {
                end_where(&inner, |s| s.token == Some(token), Revocation::Deleted)
            }
            TokenChange::Updated { rotated: true, .. } => {
                end_where(&inner, |s| s.token == Some(token), Revocation::Rotated)
            }
            TokenChange::Updated { new, now, .. } => {
                let mut ended = 0;
                for s in inner
                    .sessions
                    .values_mut()
                    .filter(|s| s.token == Some(token))
                {
                    s.expires_on = new.spec.expires_on;
                    if let Err(d) = new.check(&s.facts, now) {
                        let why = match d {
                            Denial::Disabled => Revocation::Disabled,
                            Denial::Expired => Revocation::Expired,
                            d => Revocation::NotAllowed(d),
                        };
                        ended += usize::from(s.end.end(why));
                    }
                }
                let protect = new.spec.subscribe_requires_auth;
                let mut newly_protected = Vec::new();
                let mut changed = Vec::new();
                for l in inner.leases.values_mut().filter(|l| l.token == Some(token)) {
                    if protect && !l.subscribe_requires_auth {
                        newly_protected.extend(l.bound.iter().copied());
                    }
                    if protect != l.subscribe_requires_auth {
                        changed.push(l.session);
                    }
                    l.subscribe_requires_auth = protect;
                }
                // The other nodes read the change from the lease at once, not at the next
                // renewal (their edges' anonymous viewers are ended with the pulls, which are
                // bound to the publish like the anonymous viewers here).
                if let Some(shared) = &self.shared {
                    for held in changed.iter().filter_map(|id| held_lease(&inner, *id)) {
                        drop(shared.claim(held));
                    }
                }
                ended + end_all(&inner, newly_protected.iter(), Revocation::NowProtected)
            }
        }
    }

    /// How many sessions are live.
    pub fn counts(&self) -> SessionCounts {
        let inner = self.lock();
        let publishers = inner.leases.len();
        SessionCounts {
            publishers,
            viewers: inner.sessions.len().saturating_sub(publishers),
        }
    }

    /// Live sessions by protocol and action, for metrics.
    pub fn counts_by_protocol(&self) -> Vec<(Protocol, Action, usize)> {
        let inner = self.lock();
        let mut counts: HashMap<(Protocol, Action), usize> = HashMap::new();
        for s in inner.sessions.values() {
            *counts
                .entry((s.facts.protocol, s.facts.action))
                .or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().map(|((p, a), n)| (p, a, n)).collect();
        v.sort_by_key(|(p, a, _)| (p.as_str(), matches!(a, Action::Play)));
        v
    }
}

impl Inner {
    /// Whether viewers of `stream`, which another node publishes, need a subscribe token.
    fn remote_protected(&self, stream: &StreamName) -> bool {
        self.others
            .get(stream)
            .is_some_and(|r| r.subscribe_requires_auth)
            || self
                .assumed_protected
                .get(stream)
                .is_some_and(|until| Instant::now() < *until)
    }
}

/// The lease publish session `id` holds, as the shared store is told of it.
fn held_lease(inner: &Inner, id: u64) -> Option<HeldLease> {
    let session = inner.sessions.get(&id)?;
    let lease = inner
        .leases
        .get(&session.facts.stream)
        .filter(|l| l.session == id && !l.relayed)?;
    Some(HeldLease {
        stream: session.facts.stream.clone(),
        session: id,
        subscribe_requires_auth: lease.subscribe_requires_auth,
    })
}

/// Ends the sessions with these ids; returns how many were not ended before.
fn end_all<'a>(inner: &Inner, ids: impl Iterator<Item = &'a u64>, why: Revocation) -> usize {
    ids.filter_map(|id| inner.sessions.get(id))
        .map(|s| usize::from(s.end.end(why)))
        .sum()
}

/// Ends the sessions `which` selects; returns how many were not ended before.
fn end_where(inner: &Inner, which: impl Fn(&Session) -> bool, why: Revocation) -> usize {
    inner
        .sessions
        .values()
        .filter(|s| which(s))
        .map(|s| usize::from(s.end.end(why)))
        .sum()
}

/// Keeps a session registered; dropping it ends the session and releases its lease.
#[derive(Debug)]
pub(crate) struct SessionGuard {
    registry: Arc<Registry>,
    id: u64,
    end: SessionEnd,
    bound_to: Option<u64>,
}

impl SessionGuard {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn end(&self) -> &SessionEnd {
        &self.end
    }

    pub(crate) fn bound_to(&self) -> Option<u64> {
        self.bound_to
    }

    pub(crate) fn expires_on(&self) -> Option<UnixMillis> {
        self.registry.expires_on(self.id)
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{SharedTable, LEASE_RENEW, LEASE_TTL};

    fn facts(action: Action, stream: &str) -> SessionFacts {
        SessionFacts {
            action,
            stream: StreamName::new(stream).unwrap(),
            peer_ip: IpAddr::from([127, 0, 0, 1]),
            origin: None,
            referer: None,
            user_agent: None,
            protocol: Protocol::Rtmp,
        }
    }

    fn admission(action: Action, stream: &str, token: Option<i64>) -> Admission {
        Admission {
            token: token.map(TokenId),
            jti: None,
            facts: facts(action, stream),
            expires_on: None,
            subscribe_requires_auth: false,
            anonymous: token.is_none(),
            cluster: false,
        }
    }

    #[test]
    fn lease_is_exclusive_and_released_on_drop() {
        let reg = Arc::new(Registry::default());
        let mut protected = admission(Action::Publish, "live/a", Some(1));
        protected.subscribe_requires_auth = true;
        let first = reg.admit(protected, None).unwrap();
        assert_eq!(
            reg.admit(admission(Action::Publish, "live/a", Some(2)), None)
                .unwrap_err(),
            AdmitError::Denied(Denial::StreamInUse)
        );
        let other = reg
            .admit(admission(Action::Publish, "live/b", Some(2)), None)
            .unwrap();
        let viewer = reg
            .admit(admission(Action::Play, "live/a", Some(5)), None)
            .unwrap();
        let live = reg.live(&StreamName::new("live/a").unwrap()).unwrap();
        assert!(live.subscribe_requires_auth);
        assert_eq!(live.session, first.id());
        assert_eq!(
            reg.counts(),
            SessionCounts {
                publishers: 2,
                viewers: 1
            }
        );
        drop(first);
        assert!(reg.live(&StreamName::new("live/a").unwrap()).is_none());
        assert!(
            !viewer.end().is_ended(),
            "a viewer with a token waits for the next publish"
        );
        let again = reg
            .admit(admission(Action::Publish, "live/a", Some(3)), None)
            .unwrap();
        drop((again, other, viewer));
        assert_eq!(reg.counts(), SessionCounts::default());
    }

    #[test]
    fn anonymous_viewers_are_bound_to_their_publish() {
        let reg = Arc::new(Registry::default());
        assert_eq!(
            reg.admit(admission(Action::Play, "live/a", None), None)
                .unwrap_err(),
            AdmitError::Denied(Denial::StreamNotLive)
        );
        let public = reg
            .admit(admission(Action::Publish, "live/a", Some(1)), None)
            .unwrap();
        let anon = reg
            .admit(admission(Action::Play, "live/a", None), None)
            .unwrap();
        drop(public);
        assert_eq!(anon.end().reason(), Some(Revocation::PublisherEnded));

        // The next publish, protected, neither carries the old viewer nor admits new ones.
        let mut protected = admission(Action::Publish, "live/a", Some(2));
        protected.subscribe_requires_auth = true;
        let protected = reg.admit(protected, None).unwrap();
        assert_eq!(
            reg.admit(admission(Action::Play, "live/a", None), None)
                .unwrap_err(),
            AdmitError::Denied(Denial::Missing)
        );
        drop((anon, protected));
        assert_eq!(reg.counts(), SessionCounts::default());
    }

    #[test]
    fn cancel_by_token_and_by_expiry() {
        let reg = Arc::new(Registry::default());
        let a = reg
            .admit(admission(Action::Publish, "live/a", Some(1)), None)
            .unwrap();
        let b = reg
            .admit(admission(Action::Play, "live/a", Some(1)), None)
            .unwrap();
        let mut expiring = admission(Action::Play, "live/a", Some(2));
        expiring.expires_on = Some(1_000);
        let c = reg.admit(expiring, None).unwrap();
        assert_eq!(reg.cancel_token(TokenId(1), Revocation::Disabled), 2);
        assert_eq!(a.end().reason(), Some(Revocation::Disabled));
        assert!(b.end().is_ended());
        assert!(!c.end().is_ended());
        assert_eq!(reg.cancel_expired(999), 0);
        assert_eq!(
            reg.cancel_expired(1_000),
            1,
            "expiry exactly at now ends the session"
        );
        assert_eq!(c.end().reason(), Some(Revocation::Expired));
    }

    fn node(table: &SharedTable, n: u32) -> Arc<Registry> {
        Arc::new(Registry::sharing(Some(Arc::new(table.node(n)))))
    }

    /// A publish on `reg`, registered here and claimed in the cluster.
    fn publish(reg: &Arc<Registry>, stream: &str, protect: bool) -> Result<SessionGuard, Denial> {
        let mut a = admission(Action::Publish, stream, Some(1));
        a.subscribe_requires_auth = protect;
        let guard = reg.admit(a, None).map_err(|e| match e {
            AdmitError::Denied(d) => d,
            AdmitError::Retry => Denial::Unavailable,
        })?;
        reg.claim_shared(guard.id())?;
        Ok(guard)
    }

    #[test]
    fn a_stream_is_published_on_one_node_of_a_cluster_at_a_time() {
        let table = SharedTable::default();
        let (a, b) = (node(&table, 1), node(&table, 2));
        let cam = StreamName::new("live/cam").unwrap();
        let on_a = publish(&a, "live/cam", false).unwrap();
        assert_eq!(table.holder(&cam), Some(1));
        assert_eq!(
            publish(&b, "live/cam", false).unwrap_err(),
            Denial::StreamInUse
        );
        assert_eq!(
            b.counts(),
            SessionCounts::default(),
            "the refused publish let go"
        );
        // Renewed, the lease outlives its first term.
        for _ in 0..12 {
            table.advance(LEASE_RENEW);
            assert_eq!(a.renew_shared(LEASE_RENEW).unwrap(), 0);
        }
        assert_eq!(
            publish(&b, "live/cam", false).unwrap_err(),
            Denial::StreamInUse
        );
        // Released with the publish: B publishes at once.
        drop(on_a);
        assert_eq!(table.holder(&cam), None);
        let on_b = publish(&b, "live/cam", false).unwrap();
        assert_eq!(table.holder(&cam), Some(2));
        drop(on_b);
    }

    #[test]
    fn a_silent_nodes_lease_expires_and_it_ends_the_publish_it_lost() {
        let table = SharedTable::default();
        let (a, b) = (node(&table, 1), node(&table, 2));
        let on_a = publish(&a, "live/cam", false).unwrap();
        // A renews no more (dead, or cut off from the store): its lease lasts LEASE_TTL.
        table.advance(LEASE_TTL - Duration::from_millis(1));
        assert_eq!(
            publish(&b, "live/cam", false).unwrap_err(),
            Denial::StreamInUse
        );
        table.advance(Duration::from_millis(1));
        let on_b = publish(&b, "live/cam", false).unwrap();
        // A, back, finds its lease taken and ends its publish; B's stays.
        assert_eq!(a.renew_shared(LEASE_RENEW).unwrap(), 1);
        assert_eq!(on_a.end().reason(), Some(Revocation::LeaseLost));
        assert_eq!(b.renew_shared(LEASE_RENEW).unwrap(), 0);
        assert!(!on_b.end().is_ended());
        // Its release does not touch B's lease.
        drop(on_a);
        assert_eq!(table.holder(&StreamName::new("live/cam").unwrap()), Some(2));
        // A lease that expired while nobody took it is claimed again by its renewal.
        let on_a = publish(&a, "live/other", false).unwrap();
        table.advance(LEASE_TTL * 2);
        assert_eq!(a.renew_shared(LEASE_RENEW).unwrap(), 0);
        assert!(!on_a.end().is_ended());
        assert_eq!(
            publish(&b, "live/other", false).unwrap_err(),
            Denial::StreamInUse
        );
        drop((on_a, on_b));
    }

    #[test]
    fn whether_a_stream_needs_subscribe_tokens_is_known_on_every_node() {
        let table = SharedTable::default();
        let (a, b) = (node(&table, 1), node(&table, 2));
        let protected = publish(&a, "live/p", true).unwrap();
        let open = publish(&a, "live/o", false).unwrap();
        b.renew_shared(LEASE_RENEW).unwrap();
        let anonymous = |stream| {
            b.admit(admission(Action::Play, stream, None), None)
                .unwrap_err()
        };
        assert_eq!(anonymous("live/p"), AdmitError::Denied(Denial::Missing));
        assert_eq!(
            anonymous("live/o"),
            AdmitError::Denied(Denial::StreamNotLive)
        );
        assert_eq!(
            anonymous("live/x"),
            AdmitError::Denied(Denial::StreamNotLive)
        );
        // A stream whose pull its origin ended is taken to be protected for a while.
        let o = StreamName::new("live/o").unwrap();
        b.assume_protected(&o);
        assert_eq!(anonymous("live/o"), AdmitError::Denied(Denial::Missing));
        assert!(b.remote(&o).is_some_and(|r| r.subscribe_requires_auth));
        // Once the publish ended and B renewed, the stream is not live anywhere.
        drop((protected, open));
        b.renew_shared(LEASE_RENEW).unwrap();
        assert_eq!(
            anonymous("live/p"),
            AdmitError::Denied(Denial::StreamNotLive)
        );
    }
}
