//! The SRT listener: one UDP socket, an srt-tokio listener on it that is restarted if it
//! dies, and a task per connection request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use socket2::{Domain, Protocol, Socket, Type};
use srt_protocol::options::{ByteCount, Sender};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admit::handle_request;
use crate::feeds::Feeds;
use crate::key_material::Looker;
use crate::SrtContext;

/// Most SRT connections served (and handshakes pending) at once; further requests are
/// refused with 1402 (overload).
pub const MAX_CONNECTIONS: usize = 10_000;
/// The sender buffer of every connection. srt-tokio's default (about 46 KB) silently drops
/// data above a few Mbit/s; 12 MB carries 20 Mbit/s with room for the latency window and
/// retransmissions.
pub const SEND_BUFFER_BYTES: u64 = 12 * 1024 * 1024;
/// The kernel buffers asked for on the UDP socket (the kernel may grant less): every
/// connection's packets arrive on this one socket.
const UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// Pause before starting the listener again after it died.
const RESTART_BACKOFF: Duration = Duration::from_millis(100);

/// A bound SRT listener.
#[derive(Debug)]
pub struct SrtListener {
    socket: std::net::UdpSocket,
}

impl SrtListener {
    /// Binds the UDP socket at `addr`.
    ///
    /// The socket has `SO_REUSEPORT`, so that a look at a caller's handshake
    /// ([`crate::key_material`]) can take that caller's datagrams on the same port for a
    /// moment. The port is first bound once without it: a port already in use still fails
    /// here, and a second server started on this one fails the same way.
    ///
    /// On Linux the socket drops, in the kernel, the datagrams srt-protocol would panic on
    /// ([`crate::filter`]); the filter is attached before the socket is bound, so no datagram
    /// ever reaches srt-tokio unfiltered.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let domain = Domain::for_address(addr);
        let addr = {
            let probe = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
            probe.bind(&addr.into())?;
            probe.local_addr()?.as_socket().unwrap_or(addr)
        };
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_nonblocking(true)?;
        // Best effort: the kernel caps these at its configured maximum.
        let _ = socket.set_recv_buffer_size(UDP_BUFFER_BYTES);
        let _ = socket.set_send_buffer_size(UDP_BUFFER_BYTES);
        socket.set_reuse_port(true)?;
        attach_filter(&socket)?;
        socket.bind(&addr.into())?;
        Ok(Self {
            socket: socket.into(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves connection requests until `shutdown` fires.
    ///
    /// The srt-tokio listener runs in a task of its own. Requests that would make srt-protocol
    /// panic there are refused before they are accepted ([`crate::keys`],
    /// [`crate::key_material`]); should it panic all the same, its request stream ends and a
    /// new listener is started on the same socket, which stays bound, so the port never
    /// closes. Connections the dead listener was serving would lose their packets and end.
    pub async fn run(self, ctx: Arc<SrtContext>, shutdown: CancellationToken) {
        let local = match self.socket.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "srt listener has no local address");
                return;
            }
        };
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let feeds = Arc::new(Feeds::default());
        let looker = Looker::new(local);
        let mut sessions = JoinSet::new();
        let mut starts: u64 = 0;
        while !shutdown.is_cancelled() {
            starts += 1;
            let incoming = match self.start(local).await {
                Ok(i) => i,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the srt listener");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(RESTART_BACKOFF) => continue,
                    }
                }
            };
            if starts > 1 {
                tracing::warn!(addr = %local, restarts = starts - 1, "srt listener restarted");
            }
            let (_listener, mut incoming) = incoming;
            loop {
                let request = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = incoming.incoming().next() => r,
                    Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
                };
                let Some(request) = request else {
                    tracing::error!(addr = %local, "srt listener task ended (srt-protocol panicked); restarting it");
                    tokio::time::sleep(RESTART_BACKOFF).await;
                    break;
                };
                let ctx = Arc::clone(&ctx);
                let slots = Arc::clone(&slots);
                let feeds = Arc::clone(&feeds);
                let looker = looker.clone();
                let stop = shutdown.clone();
                sessions.spawn(async move {
                    handle_request(ctx, request, slots, feeds, looker, stop).await;
                });
            }
        }
        while sessions.join_next().await.is_some() {}
    }

    /// Starts an srt-tokio listener on a duplicate of the socket.
    async fn start(
        &self,
        local: SocketAddr,
    ) -> std::io::Result<(srt_tokio::SrtListener, srt_tokio::SrtIncoming)> {
        let socket = tokio::net::UdpSocket::from_std(self.socket.try_clone()?)?;
        srt_tokio::SrtListener::builder()
            .with(Sender {
                buffer_size: ByteCount(SEND_BUFFER_BYTES),
                ..Sender::default()
            })
            .socket(socket)
            .bind(local)
            .await
    }
}

/// Attaches the socket filter that keeps datagrams srt-protocol panics on away from it.
#[cfg(target_os = "linux")]
fn attach_filter(socket: &Socket) -> std::io::Result<()> {
    socket.attach_filter(&crate::filter::srt_listener_filter())
}

/// No classic BPF here: srt-protocol sees every datagram.
#[cfg(not(target_os = "linux"))]
fn attach_filter(_socket: &Socket) -> std::io::Result<()> {
    tracing::warn!(
        "no SRT socket filter on this system: a malformed datagram can end every SRT session"
    );
    Ok(())
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
        // Despite SO_REUSEPORT, neither a second listener nor any other socket gets the port.
        let second = SrtListener::bind(addr).await.unwrap_err();
        assert_eq!(second.kind(), std::io::ErrorKind::AddrInUse);
        assert!(std::net::UdpSocket::bind(addr).is_err());
    }
}
