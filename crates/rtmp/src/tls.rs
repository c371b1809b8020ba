//! RTMPS: the RTMP session behind a TLS handshake (rustls), for encoders such as OBS that
//! publish to `rtmps://host:1936/live?token=T`.
//!
//! A connection's TLS stream is bridged to the ordinary RTMP connection code through a pair
//! of connected loopback sockets made here, with the client's own address given to the
//! session: the session, its caps and token rules, and the fan-out (whose shards write straight
//! to a socket) are the same as for plain RTMP. A task per connection copies between the TLS
//! stream and its end of the pair; the pair's kernel buffers are kept small
//! ([`BRIDGE_BUFFER`]), so that a viewer whose TLS connection stalls fills them soon and meets
//! the session's own stall deadline, as a plain viewer would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use streamgate_auth::{accept_loop, ConnectionGate};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::connection::serve_connection;
use crate::RtmpContext;

/// The kernel buffers asked for on each side of a bridge pair.
const BRIDGE_BUFFER: usize = 256 * 1024;
/// Longest wait for the other end of a bridge pair to be accepted.
const BRIDGE_TIMEOUT: Duration = Duration::from_secs(1);

/// A bound RTMPS listener.
pub struct RtmpsListener {
    listener: TcpListener,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for RtmpsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpsListener")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl RtmpsListener {
    /// Binds `addr`; connections are taken through `acceptor`'s TLS configuration (whose
    /// certificate may change while it runs).
    pub async fn bind(addr: SocketAddr, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind(addr).await?,
            acceptor,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown` fires, like [`crate::RtmpListener::run`], each
    /// one's TLS handshake within the session's handshake time.
    pub async fn run(
        self,
        ctx: Arc<RtmpContext>,
        gate: ConnectionGate,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let bridge = Arc::new(Bridge::bind().await?);
        let stop = shutdown.clone();
        accept_loop(&self.listener, &gate, &shutdown, "rtmps", |socket, peer| {
            let (ctx, acceptor, bridge) =
                (Arc::clone(&ctx), self.acceptor.clone(), Arc::clone(&bridge));
            let stop = stop.clone();
            async move { serve(ctx, acceptor, &bridge, socket, peer, stop).await }
        })
        .await;
        Ok(())
    }
}

/// One RTMPS connection: the TLS handshake, then the RTMP session over a bridge pair.
async fn serve(
    ctx: Arc<RtmpContext>,
    acceptor: TlsAcceptor,
    bridge: &Bridge,
    socket: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = socket.set_nodelay(true);
    let mut tls =
        match tokio::time::timeout(ctx.limits.handshake_timeout, acceptor.accept(socket)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer, error = %e, "rtmps handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %peer, "rtmps handshake not done in time");
                return;
            }
        };
    let (inner, mut outer) = match bridge.pair().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(peer = %peer, error = %e, "rtmps: no loopback pair for the session");
            return;
        }
    };
    let session = tokio::spawn(serve_connection(ctx, inner, peer, shutdown));
    // Ends when either side closes; the session then sees its socket close, or has closed it.
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut outer).await;
    drop(outer);
    let _ = session.await;
}

/// A loopback listener that makes connected socket pairs.
#[derive(Debug)]
struct Bridge {
    listener: TcpListener,
    /// One pair at a time, so that the connection accepted is the one just made.
    making: Mutex<()>,
}

impl Bridge {
    async fn bind() -> std::io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?,
            making: Mutex::new(()),
        })
    }

    /// A connected pair: (the session's end, the bridge's end).
    async fn pair(&self) -> std::io::Result<(TcpStream, TcpStream)> {
        let _one = self.making.lock().await;
        let addr = self.listener.local_addr()?;
        let outer = TcpStream::connect(addr).await?;
        let ours = outer.local_addr()?;
        let deadline = tokio::time::Instant::now() + BRIDGE_TIMEOUT;
        loop {
            let (inner, from) = tokio::time::timeout_at(deadline, self.listener.accept()).await??;
            // Anything else that connects to this loopback port is not ours.
            if from == ours {
                for socket in [&inner, &outer] {
                    let s = socket2::SockRef::from(socket);
                    let _ = s.set_send_buffer_size(BRIDGE_BUFFER);
                    let _ = s.set_recv_buffer_size(BRIDGE_BUFFER);
                    let _ = socket.set_nodelay(true);
                }
                return Ok((inner, outer));
            }
        }
    }
}
