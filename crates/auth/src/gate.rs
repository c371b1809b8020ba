//! Connection caps: how many connections a listener holds at once, in all and per source
//! address, before any byte is read. A refusal is counted; a [`GatePass`] gives its place
//! back when dropped.
//!
//! Refusals are logged at most once per [`REFUSAL_LOG_INTERVAL`] per gate, with the number
//! refused since the last line, so that a flood does not flood the log too.
//!
//! IPv6 sources are counted per /64 prefix, the block one host or site usually gets: counting
//! single addresses would let one host open a connection from each of its 2^64.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Least time between two log lines about refused connections of one gate.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Pause after an accept error (such as running out of file descriptors), so that an accept
/// loop does not spin while the connections already open keep going.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Least time between two log lines about failing accepts of one listener.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Accepts on `listener` until `shutdown` fires: the accept loop of every TCP listener (`what`
/// names it in the log). Each connection `gate` lets in is served by `serve` on its own task,
/// holding its pass; the others are closed at once. Accept errors back off and are logged at
/// most every few seconds; a connection task that panics is logged. Returns once every task
/// has ended.
pub async fn accept_loop<F, Fut>(
    listener: &tokio::net::TcpListener,
    gate: &ConnectionGate,
    shutdown: &tokio_util::sync::CancellationToken,
    what: &'static str,
    mut serve: F,
) where
    F: FnMut(tokio::net::TcpStream, std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut last_error_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
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

/// Why a connection was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GateRefusal {
    /// The listener holds its maximum of connections.
    #[error("the listener is full")]
    ListenerFull,
    /// The source address holds its maximum of connections.
    #[error("too many connections from this address")]
    AddressFull,
}

impl GateRefusal {
    /// A short name for metrics.
    pub fn kind(self) -> &'static str {
        match self {
            GateRefusal::ListenerFull => "listener_full",
            GateRefusal::AddressFull => "address_full",
        }
    }
}

/// The caps of one listener; clones share the counts.
#[derive(Debug, Clone)]
pub struct ConnectionGate {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The listener's name, for log lines.
    name: &'static str,
    max_total: usize,
    max_per_source: usize,
    /// Open connections per source, and in all.
    open: Mutex<(HashMap<IpAddr, usize>, usize)>,
    refused_full: AtomicU64,
    refused_source: AtomicU64,
    /// When refusals were last logged, and how many since.
    log: Mutex<(Option<Instant>, u64)>,
}

/// A connection's place in its listener's counts; given back on drop.
#[derive(Debug)]
pub struct GatePass {
    inner: Arc<Inner>,
    source: IpAddr,
}

/// The counts of a gate, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateStats {
    /// Connections held now.
    pub open: usize,
    /// Refused because the listener was full.
    pub refused_listener_full: u64,
    /// Refused because their source held its maximum.
    pub refused_address_full: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The address connections are counted under: the address itself for IPv4, its /64 for IPv6
/// (an IPv4-mapped IPv6 address counts as its IPv4 address).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl ConnectionGate {
    /// A gate of listener `name` letting in at most `max_total` connections, at most
    /// `max_per_source` from one source (0 means no limit for either).
    pub fn new(name: &'static str, max_total: usize, max_per_source: usize) -> Self {
        let unlimited = |n: usize| if n == 0 { usize::MAX } else { n };
        Self {
            inner: Arc::new(Inner {
                name,
                max_total: unlimited(max_total),
                max_per_source: unlimited(max_per_source),
                open: Mutex::new((HashMap::new(), 0)),
                refused_full: AtomicU64::new(0),
                refused_source: AtomicU64::new(0),
                log: Mutex::new((None, 0)),
            }),
        }
    }

    /// Takes a place for a connection from `ip`, or counts and logs the refusal.
    pub fn try_enter(&self, ip: IpAddr) -> Result<GatePass, GateRefusal> {
        let result = self.enter(ip);
        if let Err(refusal) = result {
            self.log_refusal(ip, refusal);
        }
        result
    }

    fn enter(&self, ip: IpAddr) -> Result<GatePass, GateRefusal> {
        let source = source_key(ip);
        let mut open = lock(&self.inner.open);
        let (by_source, total) = &mut *open;
        if *total >= self.inner.max_total {
            self.inner.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(GateRefusal::ListenerFull);
        }
        let count = by_source.get(&source).copied().unwrap_or(0);
        if count >= self.inner.max_per_source {
            self.inner.refused_source.fetch_add(1, Ordering::Relaxed);
            return Err(GateRefusal::AddressFull);
        }
        let count = by_source.entry(source).or_insert(0);
        *count += 1;
        *total += 1;
        Ok(GatePass {
            inner: Arc::clone(&self.inner),
            source,
        })
    }

    fn log_refusal(&self, ip: IpAddr, refusal: GateRefusal) {
        let mut log = lock(&self.inner.log);
        let (last, suppressed) = &mut *log;
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_INTERVAL) {
            *suppressed += 1;
            return;
        }
        tracing::warn!(
            listener = self.inner.name,
            peer = %ip,
            reason = refusal.kind(),
            refused_since_last_line = *suppressed,
            "connection refused: {refusal}"
        );
        *last = Some(now);
        *suppressed = 0;
    }

    /// The counts now.
    pub fn stats(&self) -> GateStats {
        GateStats {
            open: lock(&self.inner.open).1,
            refused_listener_full: self.inner.refused_full.load(Ordering::Relaxed),
            refused_address_full: self.inner.refused_source.load(Ordering::Relaxed),
        }
    }
}

impl Drop for GatePass {
    fn drop(&mut self) {
        let mut open = lock(&self.inner.open);
        let (by_source, total) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(count) = by_source.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_per_source_and_in_all() {
        let gate = ConnectionGate::new("test", 3, 2);
        let a1 = gate.try_enter(ip("10.0.0.1")).unwrap();
        let _a2 = gate.try_enter(ip("10.0.0.1")).unwrap();
        assert_eq!(
            gate.try_enter(ip("10.0.0.1")).unwrap_err(),
            GateRefusal::AddressFull
        );
        let _b = gate.try_enter(ip("10.0.0.2")).unwrap();
        assert_eq!(
            gate.try_enter(ip("10.0.0.3")).unwrap_err(),
            GateRefusal::ListenerFull
        );
        drop(a1);
        let _a3 = gate.try_enter(ip("10.0.0.1")).unwrap();
        let stats = gate.stats();
        assert_eq!(stats.open, 3);
        assert_eq!(stats.refused_address_full, 1);
        assert_eq!(stats.refused_listener_full, 1);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let gate = ConnectionGate::new("test", 0, 1);
        let _a = gate.try_enter(ip("2001:db8:1:2::1")).unwrap();
        assert!(gate.try_enter(ip("2001:db8:1:2:ffff::9")).is_err());
        let _b = gate.try_enter(ip("2001:db8:1:3::1")).unwrap();
        let _c = gate.try_enter(ip("192.0.2.1")).unwrap();
        assert!(gate.try_enter(ip("::ffff:192.0.2.1")).is_err());
    }

    #[test]
    fn places_are_given_back_and_sources_forgotten() {
        let gate = ConnectionGate::new("test", 0, 0);
        let passes: Vec<GatePass> = (0..100u8)
            .map(|i| gate.try_enter(IpAddr::from([10, 0, 0, i])).unwrap())
            .collect();
        assert_eq!(gate.stats().open, 100);
        drop(passes);
        assert_eq!(gate.stats().open, 0);
        assert!(lock(&gate.inner.open).0.is_empty());
    }
}
