//! The bounds of WebRTC sessions and their WebSockets, and the shared counts behind them.

use std::sync::Arc;
use std::time::Duration;

use streamgate_auth::ConnectionGate;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits of the WebRTC listener; the defaults are the configuration's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebRtcLimits {
    /// Most ICE candidates a browser may trickle to one session; further ones are answered
    /// with `tooManyCandidates` and ignored, so that the server checks connectivity with at
    /// most this many remote addresses per session. Browsers send fewer than ten.
    pub max_candidates: usize,
    /// Most publish and play sessions from one address (IPv6: one /64) at once, over all of
    /// its WebSockets; further ones are refused with `tooManySessions`.
    pub max_peers_per_ip: usize,
    /// Most peer connections negotiating (created, not yet connected) at once, server-wide;
    /// further sessions are refused with `serverBusy`.
    pub max_pending: usize,
    /// Time between the server's WebSocket pings.
    pub ws_ping_interval: Duration,
    /// A WebSocket that sends nothing (pongs included) for this long is closed, and so is one
    /// that takes none of what the server writes for this long.
    pub ws_idle_timeout: Duration,
}

impl Default for WebRtcLimits {
    fn default() -> Self {
        Self {
            max_candidates: 32,
            max_peers_per_ip: 32,
            max_pending: 256,
            ws_ping_interval: Duration::from_secs(15),
            ws_idle_timeout: Duration::from_secs(45),
        }
    }
}

/// The counts the limits are checked against, shared by every socket.
#[derive(Debug, Clone)]
pub(crate) struct Counts {
    /// Sessions per source address.
    pub(crate) peers: ConnectionGate,
    /// Peer connections negotiating.
    pending: Arc<Semaphore>,
}

impl Counts {
    pub(crate) fn new(limits: &WebRtcLimits) -> Self {
        Self {
            peers: ConnectionGate::new("webrtc", 0, limits.max_peers_per_ip),
            pending: Arc::new(Semaphore::new(limits.max_pending)),
        }
    }

    /// A place among the negotiating peer connections, held until the peer connects.
    pub(crate) fn negotiate(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.pending).try_acquire_owned().ok()
    }
}
