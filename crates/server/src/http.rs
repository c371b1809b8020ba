//! The HTTP listener: the merged router served over HTTP/1.1 by hyper, with the connection
//! caps of a [`ConnectionGate`] and three clocks, since a client that trickles or stalls must
//! not hold a connection for ever:
//!
//! - the head of each request must arrive within [`HttpLimits::header_timeout`], counted from
//!   the connection's start or the end of the previous response, so that it bounds the
//!   keep-alive idle time too (hyper's own header timer);
//! - its body within [`HttpLimits::body_timeout`] ([`read_body`]);
//! - and a connection that moves no byte either way for [`HttpLimits::idle_timeout`] is
//!   closed ([`Watched`]). Once upgraded to a WebSocket, a connection is the WebSocket's,
//!   which pings and has its own idle timeout.
//!
//! The same loop serves HTTPS: a [`Transport`] with TLS takes each connection through the
//! handshake first (within the head's time). Behind trusted proxies, each request's client
//! address ([`ConnectInfo`], which token rules and the failure delays see) is the one they
//! forward ([`crate::proxy`]); connection caps count the address that connected.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use streamgate_auth::{accept_loop, ConnectionGate};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::proxy::TrustedProxies;

/// Largest request body read at all; routes may take less (the token API takes 64 KiB).
pub const MAX_REQUEST_BODY: usize = 1024 * 1024;
/// Most header lines of one request.
const MAX_HEADERS: usize = 64;
/// Largest read buffer of a connection, and so of a request's head (hyper's default is about
/// 400 KB, which ten thousand connections would multiply).
const MAX_READ_BUFFER: usize = 64 * 1024;

/// The clocks of every HTTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time to send a request's head (also the keep-alive idle time).
    pub header_timeout: Duration,
    /// Time to send a request's body.
    pub body_timeout: Duration,
    /// Time a connection may move no byte either way.
    pub idle_timeout: Duration,
}

/// How a listener takes its connections: plain, or through TLS; and whose forwarding
/// headers it believes.
#[derive(Clone, Default)]
pub struct Transport {
    /// TLS (HTTPS, WSS), if the listener has it.
    pub tls: Option<TlsAcceptor>,
    /// The proxies whose `Forwarded` and `X-Forwarded-For` give the client address.
    pub proxies: Arc<TrustedProxies>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("tls", &self.tls.is_some())
            .field("proxies", &self.proxies)
            .finish()
    }
}

/// Serves `app` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    gate: ConnectionGate,
    transport: Transport,
    shutdown: CancellationToken,
) {
    let body_timeout = limits.body_timeout;
    let app = app.layer(axum::middleware::from_fn(move |req, next| {
        read_body(req, next, body_timeout)
    }));
    let stop = shutdown.clone();
    // Open connections finish their request and close (WebSockets end with the shutdown).
    accept_loop(&listener, &gate, &shutdown, "http", |socket, peer| {
        let app = app.clone();
        let stop = stop.clone();
        let transport = transport.clone();
        async move {
            let _ = socket.set_nodelay(true);
            let proxies = Arc::clone(&transport.proxies);
            match transport.tls {
                None => connection(socket, peer, app, limits, proxies, stop).await,
                Some(tls) => {
                    // The handshake is part of the first request's head time.
                    match tokio::time::timeout(limits.header_timeout, tls.accept(socket)).await {
                        Ok(Ok(stream)) => {
                            connection(stream, peer, app, limits, proxies, stop).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake not done in time"),
                    }
                }
            }
        }
    })
    .await;
}

/// Serves one connection until it closes, idles out, or the server shuts down. Each request
/// sees as its client `peer`, or the client a trusted proxy forwards for.
async fn connection<I>(
    socket: I,
    peer: SocketAddr,
    app: Router,
    limits: HttpLimits,
    proxies: Arc<TrustedProxies>,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: socket,
        activity: Arc::clone(&activity),
    });
    let service = TowerToHyperService::new(app.map_request(move |mut req: Request<_>| {
        let client = proxies.client(peer, req.headers());
        req.extensions_mut().insert(ConnectInfo(client));
        req
    }));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_READ_BUFFER)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let idle_at = activity.last() + limits.idle_timeout;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %peer, error = %e, "http connection ended");
                }
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_at.into()) => {
                if activity.last() + limits.idle_timeout <= Instant::now() {
                    tracing::debug!(peer = %peer, "http connection closed: idle for {:?}", limits.idle_timeout);
                    return;
                }
            }
        }
    }
}

/// Answers a plain HTTP request with a redirect to the same URL on HTTPS at `port`, but
/// `/healthz` and `/metrics` (health checks and scrapers stay on plain HTTP).
pub async fn redirect_to_https(req: Request, next: Next, port: u16) -> Response {
    let path = req.uri().path();
    if path == "/healthz" || path == "/metrics" {
        return next.run(req).await;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(host_without_port);
    let Some(host) = host else {
        return (StatusCode::BAD_REQUEST, "no Host header\n").into_response();
    };
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", axum::http::uri::PathAndQuery::as_str);
    let location = format!("https://{host}:{port}{target}");
    match axum::http::HeaderValue::from_str(&location) {
        Ok(value) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, value)]).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "bad Host header\n").into_response(),
    }
}

/// The host of a `Host` header value, without its port: `example.net`, `[2001:db8::1]`.
fn host_without_port(value: &str) -> Option<&str> {
    let host = if value.starts_with('[') {
        value.split_inclusive(']').next()?
    } else {
        value.split(':').next()?
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
    ok.then_some(host)
}

/// Reads a request's body within `timeout` and [`MAX_REQUEST_BODY`], before the route sees
/// it; answers 408 or 413 otherwise. Requests without a body pass untouched.
async fn read_body(req: Request, next: Next, timeout: Duration) -> Response {
    let empty = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
        || (!req.headers().contains_key(header::CONTENT_LENGTH)
            && !req.headers().contains_key(header::TRANSFER_ENCODING));
    if empty {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_REQUEST_BODY)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response(),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            "request body not received in time\n",
        )
            .into_response(),
    }
}

/// When a connection last moved a byte, as milliseconds since its start.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A socket that notes when it last moved a byte.
#[derive(Debug)]
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_keeps_the_host_and_drops_its_port() {
        assert_eq!(host_without_port("example.net:8080"), Some("example.net"));
        assert_eq!(host_without_port("example.net"), Some("example.net"));
        assert_eq!(
            host_without_port("[2001:db8::1]:8080"),
            Some("[2001:db8::1]")
        );
        assert_eq!(host_without_port("127.0.0.1:8080"), Some("127.0.0.1"));
        for bad in ["", ":8080", "evil.net/path", "a b"] {
            assert_eq!(host_without_port(bad), None, "{bad:?}");
        }
    }
}
