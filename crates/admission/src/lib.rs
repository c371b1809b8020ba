//! The one admission path of streamgate. Every listener (RTMP, SRT, WebRTC, and the HTTP
//! protocols to come) turns its protocol's request into an [`AdmitRequest`] and calls
//! [`Admission::admit_publish`] or [`Admission::admit_play`]; only with the session handle it
//! returns does media flow.
//!
//! One admission: the auth decision ([`streamgate_auth::Auth::authorize`], which registers
//! the live session and, for a publish, takes the stream name's lease), then the relay
//! attachment under the registry's session id. The registry's lease is the one answer to
//! "who publishes this name": the relay's publisher is attached only under it and detached
//! before it is released. An anonymous viewer reads only the publish that admitted it.
//!
//! A handle ([`PublishSession`], [`PlaySession`]) holds the grant, the relay attachment and
//! the [`SessionEnd`] the registry fires when a change to the token (or the end of an
//! anonymous viewer's publish) ends the session; each protocol maps the [`EndReason`] it
//! ends with to its own wire message. Dropping the handle ends the session and records why.
//!
//! Decisions that write to the store (one-time, N-use and `bindIpsOnUsage` tokens) and, with
//! a store several nodes share, every publish (which claims its lease there) run on the
//! blocking pool, never on a runtime worker. A failed authentication is answered after a
//! delay that grows with the failures of its source ([`AuthFailures`]), slept asynchronously.

mod end;
mod request;
mod session;
mod stats;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use streamgate_auth::{
    Action, Auth, AuthFailures, Denial, FailurePolicy, RemoteStream, StreamName,
};
use streamgate_relay::{Hub, WireFormat};

pub use end::EndReason;
pub use request::AdmitRequest;
pub use session::{PlaySession, PublishSession};
pub use stats::{AdmissionStats, LATENCY_BUCKETS_MICROS};
pub use streamgate_auth::{Protocol, Revocation, SessionEnd};

/// The admission path: the auth service, the relay, and the count of failures per source.
#[derive(Debug)]
pub struct Admission {
    auth: Arc<Auth>,
    hub: Hub,
    failures: Arc<AuthFailures>,
    stats: Arc<AdmissionStats>,
    /// What pulls the streams other nodes of the cluster publish, when configured.
    edge: OnceLock<Arc<dyn EdgeRelay>>,
}

/// What serves this node's viewers a stream another node of the cluster publishes: it pulls
/// the stream from there once and publishes it into this node's relay, for as long as this
/// node has viewers of it. Asked only for viewers admitted here (or anonymous viewers of a
/// stream that needs no token, who are admitted once the relayed publish is live).
pub trait EdgeRelay: Send + Sync + std::fmt::Debug {
    /// A viewer here asks for `stream`, which another node publishes as `remote` says: pull it,
    /// unless that is already under way. Returns at once.
    fn want(&self, stream: &StreamName, remote: &RemoteStream);
}

/// How long an anonymous viewer of a stream another node publishes waits for this node to
/// start relaying it (an anonymous viewer is admitted only to a live publish).
pub const EDGE_JOIN_WAIT: Duration = Duration::from_secs(3);
/// How often that wait looks again.
const EDGE_JOIN_POLL: Duration = Duration::from_millis(20);

/// An admitted session of either kind.
#[derive(Debug)]
pub enum Admitted {
    /// A publish.
    Publish(PublishSession),
    /// A play.
    Play(PlaySession),
}

impl Admitted {
    /// The grant of either kind.
    pub fn grant(&self) -> &streamgate_auth::Grant {
        match self {
            Self::Publish(p) => p.grant(),
            Self::Play(p) => p.grant(),
        }
    }

    /// Records why the session ends (see [`PublishSession::set_end_reason`]).
    pub fn set_end_reason(&mut self, reason: EndReason) -> EndReason {
        match self {
            Self::Publish(p) => p.set_end_reason(reason),
            Self::Play(p) => p.set_end_reason(reason),
        }
    }
}

impl Admission {
    /// The admission path over `auth` and `hub`, delaying failures under `policy`.
    pub fn new(auth: Arc<Auth>, hub: Hub, policy: FailurePolicy) -> Self {
        Self {
            auth,
            hub,
            failures: Arc::new(AuthFailures::new(policy)),
            stats: Arc::new(AdmissionStats::default()),
            edge: OnceLock::new(),
        }
    }

    /// Serves this node's viewers the streams other nodes publish through `edge`; false if
    /// one was set already.
    pub fn set_edge(&self, edge: Arc<dyn EdgeRelay>) -> bool {
        self.edge.set(edge).is_ok()
    }

    /// The auth service.
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// The relay.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Counts of refusals, admissions, ends and admission latency.
    pub fn stats(&self) -> &AdmissionStats {
        &self.stats
    }

    /// Failed authentications per source (shared with the API, whose failed secrets count
    /// in the same table).
    pub fn failures(&self) -> &Arc<AuthFailures> {
        &self.failures
    }

    /// Admits a publish or a play, as `req.action` says.
    pub async fn admit(&self, req: AdmitRequest) -> Result<Admitted, Denial> {
        let started = Instant::now();
        // A viewer of a stream another node publishes: this node starts relaying it, once the
        // viewer is admitted (a refused one never makes this node pull).
        let edge = match (req.action, self.edge.get()) {
            (Action::Play, Some(edge)) => self
                .auth
                .registry()
                .remote(&req.stream)
                .map(|remote| (edge, remote)),
            _ => None,
        };
        let mut result = self.decide_off_workers(&req).await;
        if let Some((edge, remote)) = &edge {
            match &result {
                // A viewer with a token, who waits for the stream here.
                Ok(_) => edge.want(&req.stream, remote),
                // An anonymous viewer of a public stream, who needs a live publish here: the
                // relay's.
                Err(Denial::StreamNotLive) => {
                    edge.want(&req.stream, remote);
                    let deadline = Instant::now() + EDGE_JOIN_WAIT;
                    while Instant::now() < deadline
                        && self.auth.registry().live(&req.stream).is_none()
                    {
                        tokio::time::sleep(EDGE_JOIN_POLL).await;
                    }
                    result = self.decide_off_workers(&req).await;
                }
                Err(_) => {}
            }
        }
        self.stats.observe_latency(started.elapsed());
        if let Err(d) = result {
            self.refused(&req, d);
            if d.is_auth_failure() {
                let delay = self.failures.record(req.peer_ip, Instant::now());
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
        }
        result
    }

    /// The decision and the relay attachment, on the blocking pool when it waits for the store.
    async fn decide_off_workers(&self, req: &AdmitRequest) -> Result<Admitted, Denial> {
        let waits = self.auth.decision_waits(req.action, req.token());
        if waits {
            // One-time and N-use tokens record their use durably before the grant, and a
            // publish claims its lease in a store other nodes share: those wait for the disk
            // or the database, so they happen on the blocking pool.
            let (auth, hub, stats) = (
                Arc::clone(&self.auth),
                self.hub.clone(),
                Arc::clone(&self.stats),
            );
            let request = req.clone();
            tokio::task::spawn_blocking(move || decide(&auth, &hub, &stats, &request))
                .await
                .unwrap_or(Err(Denial::Unavailable))
        } else {
            decide(&self.auth, &self.hub, &self.stats, req)
        }
    }

    /// Admits a publish; a play request is refused as the wrong kind.
    pub async fn admit_publish(&self, req: AdmitRequest) -> Result<PublishSession, Denial> {
        match self.admit(req.with_action(Action::Publish)).await? {
            Admitted::Publish(p) => Ok(p),
            Admitted::Play(_) => Err(Denial::WrongKind),
        }
    }

    /// Admits a play.
    pub async fn admit_play(&self, req: AdmitRequest) -> Result<PlaySession, Denial> {
        match self.admit(req.with_action(Action::Play)).await? {
            Admitted::Play(p) => Ok(p),
            Admitted::Publish(_) => Err(Denial::WrongKind),
        }
    }

    /// Admits at once, on the calling thread and without the failure delay (failures are
    /// still counted): for code that is not on an async runtime, such as in-memory session
    /// tests and fuzzing.
    pub fn admit_now(&self, req: &AdmitRequest) -> Result<Admitted, Denial> {
        let started = Instant::now();
        let result = decide(&self.auth, &self.hub, &self.stats, req);
        self.stats.observe_latency(started.elapsed());
        if let Err(d) = result {
            self.refused(req, d);
            if d.is_auth_failure() {
                self.failures.record(req.peer_ip, Instant::now());
            }
        }
        result
    }

    fn refused(&self, req: &AdmitRequest, d: Denial) {
        self.stats.refused(req.protocol, d);
        tracing::info!(
            peer = %req.peer_ip,
            stream = %req.stream,
            action = ?req.action,
            protocol = req.protocol.as_str(),
            reason = d.code(),
            "{} request refused: {d}",
            req.protocol.as_str(),
        );
    }
}

/// The decision and the relay attachment, in one step.
fn decide(
    auth: &Auth,
    hub: &Hub,
    stats: &Arc<AdmissionStats>,
    req: &AdmitRequest,
) -> Result<Admitted, Denial> {
    let grant = auth.authorize(&req.access(), SystemTime::now())?;
    let name = req.stream.as_str();
    let admitted = match req.action {
        Action::Publish => {
            let publisher = hub.publish_tagged(name, grant.session_id()).map_err(|e| {
                // The lease was free, so the relay should be too: a publisher that outlived
                // its grant. Refused like a second publish.
                tracing::warn!(stream = %req.stream, error = %e, "relay still has a publisher for a free lease");
                Denial::StreamInUse
            })?;
            Admitted::Publish(PublishSession::new(
                publisher,
                grant,
                req,
                Arc::clone(stats),
            ))
        }
        Action::Play => {
            let subscriber = match grant.bound_to() {
                // The publish that admitted it may have ended meanwhile.
                Some(publish) => hub
                    .subscribe_bound_as(name, publish, wire_format(req.protocol))
                    .map_err(|_| Denial::StreamNotLive)?,
                None => hub.subscribe_as(name, wire_format(req.protocol)),
            };
            Admitted::Play(PlaySession::new(subscriber, grant, req, Arc::clone(stats)))
        }
    };
    stats.admitted(req.protocol, req.action);
    Ok(admitted)
}

/// The format a viewer of `protocol` takes a stream in, from which the relay chooses its
/// tracks (and the derived tracks it runs for it: a browser publisher's Opus as AAC for RTMP
/// and SRT viewers, say).
pub const fn wire_format(protocol: Protocol) -> Option<WireFormat> {
    match protocol {
        Protocol::Rtmp => Some(WireFormat::Rtmp),
        Protocol::Srt => Some(WireFormat::MpegTs),
        Protocol::WebRtc | Protocol::Whip | Protocol::Whep => Some(WireFormat::Rtp),
        Protocol::Hls | Protocol::Dash => Some(WireFormat::Cmaf),
        // Only publishes: a stream relayed from another node.
        Protocol::Cluster => None,
    }
}

/// "publish" or "play".
pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::Publish => "publish",
        Action::Play => "play",
    }
}

#[cfg(test)]
mod tests;
