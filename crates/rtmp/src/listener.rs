//! The RTMP accept loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamgate_auth::ConnectionGate;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::connection::serve_connection;
use crate::RtmpContext;

/// Pause after an accept error (such as running out of file descriptors), so that the loop
/// does not spin while the sessions already running keep going.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Least time between two log lines about failing accepts.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// A bound RTMP listener.
#[derive(Debug)]
pub struct RtmpListener {
    listener: TcpListener,
}

impl RtmpListener {
    /// Binds `addr`.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown` fires; each one `gate` lets in is served on its own
    /// task, the others are closed at once.
    pub async fn run(
        self,
        ctx: Arc<RtmpContext>,
        gate: ConnectionGate,
        shutdown: CancellationToken,
    ) {
        let stop = shutdown.clone();
        accept_loop(&self.listener, &gate, &shutdown, "rtmp", |socket, peer| {
            serve_connection(Arc::clone(&ctx), socket, peer, stop.clone())
        })
        .await;
    }
}

/// Accepts on `listener` until `shutdown` fires. Each connection `gate` lets in is served by
/// `serve` on its own task, holding its pass; the others are closed at once. Accept errors
/// (such as running out of file descriptors) back off and are logged at most every few
/// seconds; a connection task that panics is logged. Returns once every task has ended.
pub(crate) async fn accept_loop<F, Fut>(
    listener: &TcpListener,
    gate: &ConnectionGate,
    shutdown: &CancellationToken,
    what: &'static str,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_error_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done {
                    if e.is_panic() {
                        tracing::error!("an {what} connection task panicked: {e}");
                    }
                }
                continue;
            }
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if last_error_log.is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_LOG_INTERVAL) {
                    tracing::warn!(error = %e, "{what} accept failed; retrying every {ACCEPT_BACKOFF:?}");
                    last_error_log = Some(Instant::now());
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(pass) = gate.try_enter(peer.ip()) else {
            continue;
        };
        let served = serve(socket, peer);
        tasks.spawn(async move {
            served.await;
            drop(pass);
        });
    }
    while tasks.join_next().await.is_some() {}
}
