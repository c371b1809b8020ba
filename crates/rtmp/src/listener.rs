//! The RTMP accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::connection::serve_connection;
use crate::fanout::FanOuts;
use crate::RtmpContext;

/// Most RTMP connections served at once; further ones are closed at accept.
pub const MAX_CONNECTIONS: usize = 20_000;
/// Pause after an accept error (such as running out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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

    /// Accepts connections until `shutdown` fires; each is served on its own task.
    pub async fn run(self, ctx: Arc<RtmpContext>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let fanouts = Arc::new(FanOuts::default());
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => a,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            };
            let (socket, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "rtmp accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::warn!(peer = %peer, "rtmp connection refused: {MAX_CONNECTIONS} connections already");
                continue;
            };
            let ctx = Arc::clone(&ctx);
            let stop = shutdown.clone();
            let fanouts = Arc::clone(&fanouts);
            tasks.spawn(async move {
                serve_connection(ctx, socket, peer, stop, fanouts).await;
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}
