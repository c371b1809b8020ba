//! The RTMP accept loop.

use std::net::SocketAddr;
use std::sync::Arc;

use streamgate_auth::{accept_loop, ConnectionGate};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::connection::serve_connection;
use crate::RtmpContext;

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
