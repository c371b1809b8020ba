//! The SRT listener: one UDP socket, the engine that owns it ([`crate::engine`]), restarted
//! on the same socket should it ever end, and a task per connection request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admit::handle_request;
use crate::engine::{Engine, EngineStats};
use crate::feeds::Feeds;
use crate::SrtContext;

/// Most SRT connections served at once; further callers are refused with 1402 (overload).
pub const MAX_CONNECTIONS: usize = 10_000;
/// The bytes a viewer's connection keeps for retransmission (its send buffer).
pub const SEND_BUFFER_BYTES: u64 =
    crate::engine::handshake::SEND_PACKETS * crate::engine::handshake::PAYLOAD;
/// The kernel buffers asked for on the UDP socket (the kernel may grant less): every
/// connection's packets go through this one socket.
const UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// Pause before starting the engine again after it ended.
const RESTART_BACKOFF: Duration = Duration::from_millis(100);

/// A bound SRT listener.
#[derive(Debug)]
pub struct SrtListener {
    socket: std::net::UdpSocket,
    stats: StatsSource,
}

/// The running engine's counts (a restarted engine has new ones), for metrics.
#[derive(Debug, Clone, Default)]
pub struct StatsSource(Arc<Mutex<Option<Arc<EngineStats>>>>);

impl StatsSource {
    fn set(&self, stats: Arc<EngineStats>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(stats);
    }

    /// The running engine's counts, once it runs.
    pub fn get(&self) -> Option<Arc<EngineStats>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl SrtListener {
    /// Binds the UDP socket at `addr`.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_nonblocking(true)?;
        // Best effort: the kernel caps these at its configured maximum.
        let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
        let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
        socket.bind(&addr.into())?;
        Ok(Self {
            socket: socket.into(),
            stats: StatsSource::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The engine's counts, following restarts (for metrics).
    pub fn stats(&self) -> StatsSource {
        self.stats.clone()
    }

    /// Serves connection requests until `shutdown` fires. The engine runs in a task of its
    /// own; should it end before shutdown (a bug), the connections it held end and a new one
    /// starts on the same socket, which stays bound.
    pub async fn run(self, ctx: Arc<SrtContext>, shutdown: CancellationToken) {
        let local = self.local_addr().ok();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let feeds = Arc::new(Feeds::default());
        let mut sessions = JoinSet::new();
        let mut starts: u64 = 0;
        while !shutdown.is_cancelled() {
            starts += 1;
            let started = self
                .socket
                .try_clone()
                .and_then(tokio::net::UdpSocket::from_std)
                .and_then(|s| Engine::new(Arc::new(s), MAX_CONNECTIONS));
            let (engine, mut handle) = match started {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the srt engine");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(RESTART_BACKOFF) => continue,
                    }
                }
            };
            self.stats.set(Arc::clone(&handle.stats));
            if starts > 1 {
                tracing::warn!(addr = ?local, restarts = starts - 1, "srt engine restarted");
            }
            let mut engine_task = tokio::spawn(engine.run(shutdown.clone()));
            let mut engine_ended = false;
            loop {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    _ = &mut engine_task => {
                        engine_ended = true;
                        if shutdown.is_cancelled() {
                            break;
                        }
                        tracing::error!(addr = ?local, "srt engine ended; restarting it");
                        tokio::time::sleep(RESTART_BACKOFF).await;
                        break;
                    }
                    Some(request) = handle.requests.recv() => {
                        let (ctx, slots, feeds, stop) =
                            (Arc::clone(&ctx), Arc::clone(&slots), Arc::clone(&feeds), shutdown.clone());
                        sessions.spawn(handle_request(ctx, request, slots, feeds, stop));
                    }
                    Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                }
            }
            // A handle is awaited once: the engine that ended is not waited for again.
            if shutdown.is_cancelled() && !engine_ended {
                let _ = engine_task.await;
            }
        }
        while sessions.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_port_in_use_stays_in_use() {
        let first = SrtListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = first.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let second = SrtListener::bind(addr).await.unwrap_err();
        assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse);
        assert!(std::net::UdpSocket::bind(addr).is_err());
    }
}
