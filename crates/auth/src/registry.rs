//! The live-session registry: which sessions are live, which token admitted each, and the
//! publish lease of every live stream name.
//!
//! A publish session holds its stream's lease from grant to drop, so a name is live once at a
//! time. Every session has a cancellation token: revoking, disabling, rotating or the expiry of
//! its token fires it. The registry only signals; listeners end their sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use crate::token::UnixMillis;
use crate::{Action, Denial, StreamName, TokenId};

/// The registry of live sessions and publish leases.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    sessions: HashMap<u64, Session>,
    leases: HashMap<StreamName, Lease>,
}

#[derive(Debug)]
struct Session {
    token: Option<TokenId>,
    jti: Option<String>,
    action: Action,
    stream: StreamName,
    expires_on: Option<UnixMillis>,
    cancel: CancellationToken,
}

#[derive(Debug)]
struct Lease {
    session: u64,
    token: Option<TokenId>,
    subscribe_requires_auth: bool,
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
    pub action: Action,
    pub stream: StreamName,
    pub expires_on: Option<UnixMillis>,
    pub subscribe_requires_auth: bool,
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
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the maps half-updated (every update is a
        // single insert or remove), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session; for a publish, takes the stream's lease or fails with `StreamInUse`.
    pub(crate) fn admit(self: &Arc<Self>, a: Admission) -> Result<SessionGuard, Denial> {
        let mut inner = self.lock();
        if a.action == Action::Publish && inner.leases.contains_key(&a.stream) {
            return Err(Denial::StreamInUse);
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let cancel = CancellationToken::new();
        if a.action == Action::Publish {
            let lease = Lease {
                session: id,
                token: a.token,
                subscribe_requires_auth: a.subscribe_requires_auth,
            };
            inner.leases.insert(a.stream.clone(), lease);
        }
        let session = Session {
            token: a.token,
            jti: a.jti,
            action: a.action,
            stream: a.stream,
            expires_on: a.expires_on,
            cancel: cancel.clone(),
        };
        inner.sessions.insert(id, session);
        Ok(SessionGuard {
            registry: Arc::clone(self),
            id,
            cancel,
        })
    }

    fn release(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(session) = inner.sessions.remove(&id) {
            if session.action == Action::Publish
                && inner
                    .leases
                    .get(&session.stream)
                    .is_some_and(|l| l.session == id)
            {
                inner.leases.remove(&session.stream);
            }
        }
    }

    /// The live stream of that name, if it is being published.
    pub fn live(&self, stream: &StreamName) -> Option<LiveStream> {
        self.lock().leases.get(stream).map(|l| LiveStream {
            session: l.session,
            subscribe_requires_auth: l.subscribe_requires_auth,
        })
    }

    /// Ends every session admitted by `token`; returns how many were told.
    pub fn cancel_token(&self, token: TokenId) -> usize {
        let inner = self.lock();
        let mut n = 0;
        for s in inner.sessions.values().filter(|s| s.token == Some(token)) {
            s.cancel.cancel();
            n += 1;
        }
        n
    }

    /// Ends every session admitted by a signed token with this `jti`; returns how many.
    pub fn cancel_jti(&self, jti: &str) -> usize {
        let inner = self.lock();
        let mut n = 0;
        for s in inner
            .sessions
            .values()
            .filter(|s| s.jti.as_deref() == Some(jti))
        {
            s.cancel.cancel();
            n += 1;
        }
        n
    }

    /// Ends every session whose token has expired at `now`; returns how many were told.
    pub fn cancel_expired(&self, now: UnixMillis) -> usize {
        let inner = self.lock();
        let mut n = 0;
        for s in inner.sessions.values() {
            if s.expires_on.is_some_and(|e| now >= e) && !s.cancel.is_cancelled() {
                s.cancel.cancel();
                n += 1;
            }
        }
        n
    }

    /// Applies a token's changed expiry and `subscribeRequiresAuth` to its live sessions.
    pub(crate) fn update_token(
        &self,
        token: TokenId,
        expires_on: Option<UnixMillis>,
        subscribe_requires_auth: bool,
    ) {
        let mut inner = self.lock();
        for s in inner
            .sessions
            .values_mut()
            .filter(|s| s.token == Some(token))
        {
            s.expires_on = expires_on;
        }
        for l in inner.leases.values_mut().filter(|l| l.token == Some(token)) {
            l.subscribe_requires_auth = subscribe_requires_auth;
        }
    }

    /// How many sessions are live.
    pub fn counts(&self) -> SessionCounts {
        let inner = self.lock();
        let publishers = inner.leases.len();
        SessionCounts {
            publishers,
            viewers: inner.sessions.len() - publishers,
        }
    }
}

/// Keeps a session registered; dropping it ends the session and releases its lease.
#[derive(Debug)]
pub(crate) struct SessionGuard {
    registry: Arc<Registry>,
    id: u64,
    cancel: CancellationToken,
}

impl SessionGuard {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(action: Action, stream: &str, token: Option<i64>) -> Admission {
        Admission {
            token: token.map(TokenId),
            jti: None,
            action,
            stream: StreamName::new(stream).unwrap(),
            expires_on: None,
            subscribe_requires_auth: true,
        }
    }

    #[test]
    fn lease_is_exclusive_and_released_on_drop() {
        let reg = Arc::new(Registry::default());
        let first = reg
            .admit(admission(Action::Publish, "live/a", Some(1)))
            .unwrap();
        assert_eq!(
            reg.admit(admission(Action::Publish, "live/a", Some(2)))
                .unwrap_err(),
            Denial::StreamInUse
        );
        let other = reg
            .admit(admission(Action::Publish, "live/b", Some(2)))
            .unwrap();
        let viewer = reg.admit(admission(Action::Play, "live/a", None)).unwrap();
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
        let again = reg
            .admit(admission(Action::Publish, "live/a", Some(3)))
            .unwrap();
        drop((again, other, viewer));
        assert_eq!(reg.counts(), SessionCounts::default());
    }

    #[test]
    fn cancel_by_token_and_by_expiry() {
        let reg = Arc::new(Registry::default());
        let a = reg
            .admit(admission(Action::Publish, "live/a", Some(1)))
            .unwrap();
        let b = reg
            .admit(admission(Action::Play, "live/a", Some(1)))
            .unwrap();
        let c = reg
            .admit(admission(Action::Play, "live/a", Some(2)))
            .unwrap();
        assert_eq!(reg.cancel_token(TokenId(1)), 2);
        assert!(a.cancellation().is_cancelled() && b.cancellation().is_cancelled());
        assert!(!c.cancellation().is_cancelled());

        reg.update_token(TokenId(2), Some(1_000), false);
        assert_eq!(reg.cancel_expired(999), 0);
        assert_eq!(
            reg.cancel_expired(1_000),
            1,
            "expiry exactly at now ends the session"
        );
        assert!(c.cancellation().is_cancelled());
    }
}
