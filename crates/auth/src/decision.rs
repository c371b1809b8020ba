//! The single decision function: [`Auth::authorize`].
//!
//! Reads only memory: the token index and the registry. The store is asked only for tokens
//! whose grants change durable state (`maxUses`, `bindIpsOnUsage`), whose use is spent in the
//! store before the grant is returned, and, when the store is shared by several nodes, for a
//! publish's lease of its stream name in the whole cluster.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::cluster::{looks_like_proof, ProofUse};
use crate::jwt::{looks_like_jwt, VerifiedClaims};
use crate::registry::{Admission, AdmitError, SessionFacts, SessionGuard};
use crate::rules::{canonical_ip, host_of, HostPattern};
use crate::service::{unix_millis, Entry};
use crate::store::{Spent, UseLimits};
use crate::token::TokenKind;
use crate::{AccessRequest, Action, Auth, Denial, Grant, Protocol, SecretHash};

/// How often a decision is taken again when its token changed while it was being taken.
const MAX_DECISION_ATTEMPTS: usize = 8;

impl Auth {
    /// Decides one publish or play request. A `Grant` must be kept for as long as the session
    /// lives; a `Denial` says why not.
    pub fn authorize(&self, req: &AccessRequest<'_>, now: SystemTime) -> Result<Grant, Denial> {
        for _ in 0..MAX_DECISION_ATTEMPTS {
            match self.decide(req, now) {
                Ok(grant) => return Ok(grant),
                Err(AdmitError::Denied(d)) => return Err(d),
                Err(AdmitError::Retry) => {}
            }
        }
        // The token changed under every attempt: refuse rather than admit on stale rules.
        Err(Denial::Unavailable)
    }

    /// Whether deciding `action` with `token` waits for the store: a `maxUses` or
    /// `bindIpsOnUsage` token, or any publish when leases are shared with other nodes. Callers
    /// on an async runtime decide such requests off its workers.
    pub fn decision_waits(&self, action: Action, token: Option<&str>) -> bool {
        (action == Action::Publish && self.registry.shares_leases()) || self.spends_uses(token)
    }

    /// Whether a grant of `token` spends a use of it in the store (a `maxUses` or
    /// `bindIpsOnUsage` token).
    pub fn spends_uses(&self, token: Option<&str>) -> bool {
        let Some(secret) = token.filter(|t| !looks_like_jwt(t)) else {
            return false;
        };
        self.read_index()
            .by_hash
            .get(&SecretHash::of(secret))
            .is_some_and(|e| e.spec.max_uses.is_some() || e.spec.bind_ips_on_usage.is_some())
    }

    fn decide(&self, req: &AccessRequest<'_>, now: SystemTime) -> Result<Grant, AdmitError> {
        match req.token {
            None => self.authorize_anonymous(req),
            Some(token) if looks_like_jwt(token) => self.authorize_jwt(req, token, now),
            Some(proof) if looks_like_proof(proof) => self.authorize_cluster(req, proof, now),
            Some(secret) => {
                let entry = self
                    .read_index()
                    .by_hash
                    .get(&SecretHash::of(secret))
                    .cloned()
                    .ok_or(Denial::Unknown)?;
                self.authorize_token(req, &entry, now)
            }
        }
    }

    /// Registers a decided session; a publish also claims its stream's lease in a store other
    /// nodes share (on failure, the guard drops and releases what it took).
    fn register(&self, a: Admission, entry: Option<&Entry>) -> Result<SessionGuard, AdmitError> {
        // A relayed publish is another node's: the cluster lease is that node's.
        let claims = a.facts.action == Action::Publish && !a.cluster;
        let guard = self.registry.admit(a, entry)?;
        if claims {
            self.registry.claim_shared(guard.id())?;
        }
        Ok(guard)
    }

    fn authorize_anonymous(&self, req: &AccessRequest<'_>) -> Result<Grant, AdmitError> {
        match req.action {
            Action::Publish if !self.config.open_publish => return Err(Denial::Missing.into()),
            Action::Play if self.config.require_play_token => return Err(Denial::Missing.into()),
            // A viewer is bound to the live publish by the registry, which refuses it when
            // there is none or the publish needs subscribe tokens.
            Action::Publish | Action::Play => {}
        }
        let guard = self.register(
            Admission {
                token: None,
                jti: None,
                facts: SessionFacts::of(req),
                expires_on: None,
                subscribe_requires_auth: false,
                anonymous: true,
                cluster: false,
            },
            None,
        )?;
        Ok(Grant {
            guard,
            token: None,
            subscribe_requires_auth: false,
            srt_passphrase: None,
        })
    }

    fn authorize_token(
        &self,
        req: &AccessRequest<'_>,
        entry: &Arc<Entry>,
        now: SystemTime,
    ) -> Result<Grant, AdmitError> {
        let facts = SessionFacts::of(req);
        entry.check(&facts, now)?;
        let spec = &entry.spec;
        let subscribe_requires_auth =
            spec.subscribe_requires_auth && entry.kind == TokenKind::Publish;
        let ip = facts.peer_ip;
        let guard = self.register(
            Admission {
                token: Some(entry.id),
                jti: None,
                facts,
                expires_on: spec.expires_on,
                subscribe_requires_auth,
                anonymous: false,
                cluster: false,
            },
            Some(entry),
        )?;
        // Counted last, once every other rule has passed, so a refused attempt spends nothing;
        // on failure `guard` drops and releases what it took.
        self.consume(entry, ip)?;
        Ok(Grant {
            guard,
            token: Some(entry.id),
            subscribe_requires_auth,
            srt_passphrase: spec.srt_passphrase.clone(),
        })
    }

    /// A signed token: verified with the configured keys, no store lookup. The live-once rule
    /// and `subscribeRequiresAuth` apply as for stored tokens.
    fn authorize_jwt(
        &self,
        req: &AccessRequest<'_>,
        token: &str,
        now: SystemTime,
    ) -> Result<Grant, AdmitError> {
        let verifier = self.jwt.as_ref().ok_or(Denial::Unknown)?;
        let now_secs = unix_millis(now).div_euclid(1000);
        let claims = verifier.verify(token, now_secs)?;
        let facts = SessionFacts::of(req);
        claims.check(&facts)?;
        if claims.jti.as_ref().is_some_and(|j| self.is_revoked(j)) {
            return Err(Denial::Revoked.into());
        }
        let guard = self.register(
            Admission {
                token: None,
                jti: claims.jti.clone(),
                facts,
                expires_on: Some(claims.expires_on),
                subscribe_requires_auth: claims.subscribe_requires_auth,
                anonymous: false,
                cluster: false,
            },
            None,
        )?;
        // A revocation records the id before it ends the id's sessions: one that came after
        // the check above either ended this session or is seen here.
        if claims.jti.as_ref().is_some_and(|j| self.is_revoked(j)) {
            return Err(Denial::Revoked.into());
        }
        Ok(Grant {
            guard,
            token: None,
            subscribe_requires_auth: claims.subscribe_requires_auth,
            srt_passphrase: None,
        })
    }

    /// Another node of the cluster, with a proof made with the cluster's secret: pulling a
    /// stream live here (a viewer bound to its publish, whatever the stream's subscribe rule),
    /// or, on the pulling node itself, publishing the pulled stream into this node's relay (a
    /// relayed publish, which needs the subscribe tokens the origin's publish needs).
    fn authorize_cluster(
        &self,
        req: &AccessRequest<'_>,
        proof: &str,
        now: SystemTime,
    ) -> Result<Grant, AdmitError> {
        let key = self.cluster.as_ref().ok_or(Denial::Unknown)?;
        let (what, subscribe_requires_auth) = match req.action {
            Action::Play => (ProofUse::Pull, false),
            // Only this node's own relay publishes so; no listener speaks for it.
            Action::Publish if req.protocol == Protocol::Cluster => {
                let remote = self.registry.remote(req.stream);
                (
                    ProofUse::Relay,
                    remote.is_some_and(|r| r.subscribe_requires_auth),
                )
            }
            Action::Publish => return Err(Denial::WrongKind.into()),
        };
        key.verify(proof, what, req.stream, now)?;
        let guard = self.register(
            Admission {
                token: None,
                jti: None,
                facts: SessionFacts::of(req),
                expires_on: None,
                subscribe_requires_auth,
                anonymous: false,
                cluster: true,
            },
            None,
        )?;
        Ok(Grant {
            guard,
            token: None,
            subscribe_requires_auth,
            srt_passphrase: None,
        })
    }

    /// Spends one use and binds the peer IP, for tokens with `maxUses` or `bindIpsOnUsage`,
    /// durably. The store holds the count and spends it in one atomic change, so that it stays
    /// exact when several nodes share the store; the token's usage lock orders this node's own
    /// attempts, and what this node knows answers without the store when it can: a use that
    /// spends nothing (an address already bound, no `maxUses`), a token whose uses this node
    /// has seen spent (a count only grows), and an address that would be one too many (other
    /// nodes' changes of the bound addresses reach this node within milliseconds), so that a
    /// stream of refused attempts costs the store nothing.
    fn consume(&self, entry: &Entry, ip: IpAddr) -> Result<(), Denial> {
        let spec = &entry.spec;
        let limits = UseLimits {
            max_uses: spec.max_uses,
            bind_ips: spec.bind_ips_on_usage,
        };
        if limits.max_uses.is_none() && limits.bind_ips.is_none() {
            return Ok(());
        }
        let mut usage = entry.usage();
        if limits.max_uses.is_none() && usage.bound_ips.contains(&ip) {
            return Ok(());
        }
        if limits.max_uses.is_some_and(|max| usage.uses >= max) {
            return Err(Denial::UsesExhausted);
        }
        if limits.bind_ips.is_some_and(|n| {
            !usage.bound_ips.contains(&ip)
                && usage.bound_ips.len() >= usize::try_from(n).unwrap_or(usize::MAX)
        }) {
            return Err(Denial::IpNotAllowed);
        }
        match self.store.spend(entry.id, ip, limits) {
            Ok(Spent::Granted { uses, bound_ips }) => {
                usage.uses = uses;
                usage.bound_ips = bound_ips;
                Ok(())
            }
            Ok(Spent::Exhausted) => {
                if let Some(max) = limits.max_uses {
                    usage.uses = usage.uses.max(max);
                }
                Err(Denial::UsesExhausted)
            }
            Ok(Spent::IpNotAllowed) => Err(Denial::IpNotAllowed),
            Ok(Spent::Missing) => Err(Denial::Unknown),
            Err(e) => {
                tracing::error!(token = %entry.id, error = %e, "could not record token use");
                Err(Denial::Unavailable)
            }
        }
    }
}

impl Entry {
    /// Whether this token admits what a session asked for, at `now`: the rules of
    /// [`Auth::authorize`] but the use counts, which are spent at admission only.
    pub(crate) fn check(&self, facts: &SessionFacts, now: SystemTime) -> Result<(), Denial> {
        let spec = &self.spec;
        let wanted = match facts.action {
            Action::Publish => TokenKind::Publish,
            Action::Play => TokenKind::Subscribe,
        };
        if self.kind != wanted {
            return Err(Denial::WrongKind);
        }
        if !spec.is_active {
            return Err(Denial::Disabled);
        }
        if spec.expires_on.is_some_and(|e| unix_millis(now) >= e) {
            return Err(Denial::Expired);
        }
        if !spec.admits_stream(facts.stream.as_str()) {
            return Err(Denial::StreamNotAllowed);
        }
        if !spec.allowed_ip_addresses.is_empty()
            && !spec
                .allowed_ip_addresses
                .iter()
                .any(|r| r.contains(facts.peer_ip))
        {
            return Err(Denial::IpNotAllowed);
        }
        if !host_allowed(&spec.allowed_origins, facts.origin.as_deref()) {
            return Err(Denial::OriginNotAllowed);
        }
        if !host_allowed(&spec.allowed_referers, facts.referer.as_deref()) {
            return Err(Denial::RefererNotAllowed);
        }
        if !spec.allowed_user_agents.is_empty()
            && !facts
                .user_agent
                .as_deref()
                .is_some_and(|ua| spec.allowed_user_agents.iter().any(|a| a == ua))
        {
            return Err(Denial::UserAgentNotAllowed);
        }
        Ok(())
    }
}

impl VerifiedClaims {
    /// Whether a verified signed token admits what a session asked for.
    fn check(&self, facts: &SessionFacts) -> Result<(), Denial> {
        let wanted = match facts.action {
            Action::Publish => TokenKind::Publish,
            Action::Play => TokenKind::Subscribe,
        };
        if self.kind != wanted {
            return Err(Denial::WrongKind);
        }
        if !self
            .streams
            .iter()
            .any(|r| r.matches(facts.stream.as_str()))
        {
            return Err(Denial::StreamNotAllowed);
        }
        if !self.ips.is_empty() && !self.ips.iter().any(|r| r.contains(facts.peer_ip)) {
            return Err(Denial::IpNotAllowed);
        }
        if !host_allowed(&self.origins, facts.origin.as_deref()) {
            return Err(Denial::OriginNotAllowed);
        }
        Ok(())
    }
}

impl SessionFacts {
    /// What `req` asks for, kept for the session's life.
    pub(crate) fn of(req: &AccessRequest<'_>) -> Self {
        Self {
            action: req.action,
            stream: req.stream.clone(),
            peer_ip: canonical_ip(req.peer_ip),
            origin: req.origin.map(str::to_owned),
            referer: req.referer.map(str::to_owned),
            user_agent: req.user_agent.map(str::to_owned),
            protocol: req.protocol,
        }
    }
}

/// An empty rule list allows everything; otherwise the header must be present and its host
/// must match a rule. A protocol without the header (RTMP, SRT) is refused by a token that
/// restricts it.
fn host_allowed(rules: &[HostPattern], header: Option<&str>) -> bool {
    if rules.is_empty() {
        return true;
    }
    match header.and_then(host_of) {
        Some(host) => rules.iter().any(|r| r.matches_host(&host)),
        None => false,
    }
}
