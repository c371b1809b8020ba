//! streamgate's RTMP listener: publish and play sessions for encoders and players such as
//! ffmpeg and OBS, every one admitted by the auth decision, with media carried through the
//! relay.
//!
//! Main loop, per connection: a thin socket task ([`connection`]) feeds the client's bytes, the
//! relay's events and the time to the connection's sans-IO [`session::Session`], and writes
//! what it produces. The session reads the handshake, then the chunk stream within a byte
//! budget ([`dechunk`]) and commands with a bounded AMF0 decoder ([`amf0`]), so that no
//! third-party parser sees unbounded input. A publish or play request becomes an
//! `AccessRequest`; with a grant, a publisher pushes FLV tags converted to frames into the
//! relay, and a player's frames are written by its stream's fan-out shard from bytes
//! serialised once per frame for every viewer ([`chunk`]). A revoked grant, the end of the
//! stream, a broken limit or shutdown closes the connection. The listener ([`listener`])
//! caps connections in all and per source address before reading a byte. RTMPS ([`tls`]) is
//! the same session behind a TLS handshake.

pub mod amf0;
pub mod chunk;
mod connection;
pub mod control;
pub mod dechunk;
pub mod edge;
mod encode;
mod fanout;
#[doc(hidden)]
pub mod fuzzing;
mod listener;
pub mod pull;
pub mod session;
pub mod status;
mod stop;
pub mod target;
mod tls;
mod write;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use streamgate_admission::Admission;
use streamgate_relay::Hub;

pub use connection::WRITE_STALL_TIMEOUT;
pub use listener::RtmpListener;
pub use session::{Close, SessionLimits};
pub use tls::RtmpsListener;

/// What every RTMP connection needs.
#[derive(Debug)]
pub struct RtmpContext {
    /// The admission path (the auth decision and the relay attachment).
    pub admission: Arc<Admission>,
    /// The relay.
    pub hub: Hub,
    /// Time limits and sizes of every session.
    pub limits: SessionLimits,
    /// Counts of ended connections, for metrics.
    pub stats: RtmpStats,
    /// The fan-out groups of playing viewers, shared by the RTMP and RTMPS listeners.
    pub(crate) fanouts: Arc<fanout::FanOuts>,
}

impl RtmpContext {
    /// A context with fresh counters.
    pub fn new(admission: Arc<Admission>, limits: SessionLimits) -> Self {
        Self {
            hub: admission.hub().clone(),
            admission,
            fanouts: Arc::new(fanout::FanOuts::new(
                limits.write_coalesce,
                limits.large_audience_coalesce,
            )),
            limits,
            stats: RtmpStats::default(),
        }
    }
}

/// Connections ended, by [`Close::kind`].
#[derive(Debug, Default)]
pub struct RtmpStats {
    closed: [AtomicU64; Close::KINDS.len()],
}

impl RtmpStats {
    /// Counts one ended connection.
    pub fn count(&self, close: &Close) {
        let kind = close.kind();
        if let Some(i) = Close::KINDS.iter().position(|k| *k == kind) {
            if let Some(c) = self.closed.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Connections ended so far, per kind.
    pub fn closed(&self) -> Vec<(&'static str, u64)> {
        Close::KINDS
            .iter()
            .zip(&self.closed)
            .map(|(k, c)| (*k, c.load(Ordering::Relaxed)))
            .collect()
    }
}
