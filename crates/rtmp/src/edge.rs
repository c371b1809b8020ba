//! Serving this node's viewers the streams other nodes of the cluster publish: one pull per
//! stream ([`crate::pull`]) from the node holding its lease, published into this node's relay
//! as a relayed publish, which every protocol's viewers here read as if it were published
//! here.
//!
//! A pull starts when a viewer here asks for a stream another node publishes (through the
//! admission path, [`EdgeRelay::want`]), or when the periodic look at the relay finds viewers
//! waiting for a stream this node has learned another node publishes (token viewers wait for
//! a publish; the lease of a publish that started after they came is learned at the next
//! renewal). It stops with the origin's stream, or [`crate::pull::UNWATCHED_LINGER`] after
//! the last viewer here left.
//!
//! A pull that failed is not tried again for that stream for [`RETRY_AFTER`], twice that
//! after a second failure in a row, and so on up to [`MAX_RETRY_AFTER`] (a stream the pull
//! cannot carry, say, while viewers wait for it); a stream that moved to another origin is
//! pulled from there at once. A pull its origin ended with an error (a revocation: the origin
//! ends its pulls when its publish newly needs subscribe tokens) leaves the stream taken to
//! need them here for a while, so that anonymous viewers here are refused before this node
//! has read the origin's lease again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use streamgate_admission::{AdmitRequest, EdgeRelay};
use streamgate_auth::cluster::ProofUse;
use streamgate_auth::{Action, Protocol, RemoteStream, StreamName};
use tokio_util::sync::CancellationToken;

use crate::pull::{self, PullEnd, PullError};
use crate::RtmpContext;

/// How long a stream whose pull failed waits before it is pulled again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest wait after failures in a row.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// How often the relay is looked at for viewers waiting for another node's stream.
const SCAN_EVERY: Duration = Duration::from_millis(250);

/// Where one stream's pull stands.
#[derive(Debug, Clone)]
enum State {
    /// Pulling, after this many failures in a row.
    Running(u32),
    /// Failed this many times in a row from this origin, the last at this time.
    Failed(u32, Instant, String),
}

/// The pulls of this node (see the module documentation).
#[derive(Debug)]
pub struct EdgePulls {
    ctx: Arc<RtmpContext>,
    this: Weak<EdgePulls>,
    pulls: Mutex<HashMap<StreamName, State>>,
    stop: CancellationToken,
}

impl EdgePulls {
    /// The pulls of the node of `ctx`, which end when `stop` fires.
    pub fn new(ctx: Arc<RtmpContext>, stop: CancellationToken) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            ctx,
            this: this.clone(),
            pulls: Mutex::default(),
            stop,
        })
    }

    fn pulls(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, State>> {
        self.pulls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many streams are being pulled.
    pub fn running(&self) -> usize {
        self.pulls()
            .values()
            .filter(|s| matches!(s, State::Running(_)))
            .count()
    }

    /// Looks at the relay every [`SCAN_EVERY`] for viewers waiting for a stream another node
    /// publishes, until the node shuts down.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SCAN_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // Failures of streams nobody asked for since (a stream whose viewers wait is
            // tried again within MAX_RETRY_AFTER, so its failures stay counted).
            self.pulls().retain(|_, state| match state {
                State::Running(_) => true,
                State::Failed(_, at, _) => at.elapsed() < MAX_RETRY_AFTER * 2,
            });
            let registry = self.ctx.admission.auth().registry();
            for stats in self.ctx.hub.stats() {
                if stats.live || stats.subscribers == 0 {
                    continue;
                }
                let Ok(stream) = StreamName::new(&stats.name) else {
                    continue;
                };
                if let Some(remote) = registry.remote(&stream) {
                    self.start(stream, remote);
                }
            }
        }
    }

    /// Starts pulling `stream` from `remote`, unless that is under way or failed a moment
    /// ago.
    fn start(&self, stream: StreamName, remote: RemoteStream) {
        let Some(this) = self.this.upgrade() else {
            return;
        };
        {
            let mut pulls = self.pulls();
            // Failures from another origin (the stream moved) do not count.
            let failures = match pulls.get(&stream) {
                Some(State::Running(_)) => return,
                Some(State::Failed(n, at, origin)) if *origin == remote.origin => {
                    if at.elapsed() < retry_after(*n) {
                        return;
                    }
                    *n
                }
                _ => 0,
            };
            pulls.insert(stream.clone(), State::Running(failures));
        }
        tokio::spawn(async move {
            let result = this.pull(&stream, &remote).await;
            let mut pulls = this.pulls();
            match result {
                Ok(end) => {
                    tracing::info!(stream = %stream, origin = %remote.origin, end = ?end, "edge pull ended");
                    pulls.remove(&stream);
                }
                Err(e) => {
                    tracing::warn!(stream = %stream, origin = %remote.origin, error = %e, "edge pull failed");
                    if matches!(e, EdgeError::Pull(PullError::Refused(_))) {
                        // The origin ended or refused the pull, as it does when its publish
                        // newly needs subscribe tokens: anonymous viewers here are refused
                        // until this node has read the lease again.
                        this.ctx
                            .admission
                            .auth()
                            .registry()
                            .assume_protected(&stream);
                    }
                    let failures = match pulls.get(&stream) {
                        Some(State::Running(n)) => n.saturating_add(1),
                        _ => 1,
                    };
                    pulls.insert(
                        stream,
                        State::Failed(failures, Instant::now(), remote.origin.clone()),
                    );
                }
            }
        });
    }

    async fn pull(&self, stream: &StreamName, remote: &RemoteStream) -> Result<PullEnd, EdgeError> {
        let auth = self.ctx.admission.auth();
        let key = auth.cluster_key().ok_or(EdgeError::NoSecret)?;
        if remote.origin.is_empty() {
            return Err(EdgeError::NoOrigin);
        }
        let origin = tokio::net::lookup_host(remote.origin.as_str())
            .await
            .map_err(|e| EdgeError::Pull(PullError::Connect(e)))?
            .next()
            .ok_or(EdgeError::NoOrigin)?;
        // This node's relayed publish, under which the pulled stream reaches its viewers.
        let relay = AdmitRequest::new(
            Protocol::Cluster,
            Action::Publish,
            stream.clone(),
            Some(key.proof(ProofUse::Relay, stream, SystemTime::now())),
            origin.ip(),
        );
        let session = self
            .ctx
            .admission
            .admit_publish(relay)
            .await
            .map_err(|d| EdgeError::Admission(d.to_string()))?;
        tracing::info!(stream = %stream, origin = %origin, "edge pull started");
        let proof = key.proof(ProofUse::Pull, stream, SystemTime::now());
        Ok(pull::run(
            origin,
            stream,
            &proof,
            session,
            &self.ctx.hub,
            self.ctx.limits.max_frame_bytes,
            &self.stop,
        )
        .await?)
    }
}

/// How long a stream waits to be pulled again after `failures` failures in a row.
fn retry_after(failures: u32) -> Duration {
    RETRY_AFTER
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_RETRY_AFTER)
}

impl EdgeRelay for EdgePulls {
    fn want(&self, stream: &StreamName, remote: &RemoteStream) {
        self.start(stream.clone(), remote.clone());
    }
}

/// Why a pull could not run.
#[derive(Debug, thiserror::Error)]
enum EdgeError {
    #[error("no cluster secret is configured")]
    NoSecret,
    #[error("the origin gives no address to pull from")]
    NoOrigin,
    #[error("the relayed publish was refused here: {0}")]
    Admission(String),
    #[error(transparent)]
    Pull(#[from] PullError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_pulls_are_tried_again_less_and_less_often() {
        let waits: Vec<u64> = [1, 2, 3, 5, 6, 40, u32::MAX]
            .into_iter()
            .map(|n| retry_after(n).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 16, 30, 30, 30]);
    }
}
