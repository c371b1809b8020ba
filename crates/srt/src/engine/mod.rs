//! The SRT engine: one UDP socket, our own connection table and handshake, and srt-protocol's
//! connection state machine driven sans IO for each connection.
//!
//! One task owns everything ([`Engine::run`]). It reads datagrams in batches (`recvmmsg`,
//! and GRO where the kernel has it, through `quinn-udp`) and routes each: a handshake to the
//! handshake code ([`handshake`]: stateless SYN cookies for inductions, a bounded table of
//! conclusions waiting for the admission decision), anything else by its destination socket
//! id and its source address to a connection, after [`guard::check`]. It keeps every
//! connection's next timer in one wheel ([`wheel`]), takes what sessions hand it (a viewer's
//! transport stream, a close) from one queue, and after each round sends what the
//! connections produced, consecutive packets to one peer in one GSO send where the kernel
//! has it.
//!
//! Every call into srt-protocol runs behind `catch_unwind`: a panic there (a bug, counted in
//! the process's panic count) ends that connection only. The engine's own state is bounded:
//! pending handshakes in all and per source address, connections in all, each connection's
//! buffers (sized by its role), the queues between the engine and the sessions.

pub mod fuzzing;
pub mod guard;
pub mod handshake;
#[cfg(test)]
mod hostile_tests;
mod wheel;

use std::collections::HashMap;
use std::io::{Cursor, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use srt_protocol::connection::DuplexConnection;
use srt_protocol::options::KeySize;
use srt_protocol::packet::{CoreRejectReason, Packet, RejectReason, ServerRejectReason};
use srt_protocol::settings::KeySettings;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use handshake::{CallerHandshake, Cookies};
pub use handshake::{Role, StreamIdUnreadable};
use wheel::Wheel;

/// Most handshakes waiting for their admission decision, in all and from one address.
pub const MAX_PENDING: usize = 1024;
pub const MAX_PENDING_PER_IP: usize = 64;
/// How long a handshake may wait for its decision, and how long a rejection is kept to
/// answer the caller's repeats.
const DECISION_TIMEOUT: Duration = Duration::from_secs(15);
const REJECTION_KEPT: Duration = Duration::from_secs(5);
/// How long a closing connection may take to flush before it is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Messages of a publisher's data waiting for its session (about 10 MB).
const PUBLISH_QUEUE: usize = 8192;
/// Commands from sessions waiting for the engine.
const COMMAND_QUEUE: usize = 16_384;
/// Datagrams read per batch, and the buffer of each (a GRO batch of segments).
const RECV_BUFFER: usize = 64 * 1024;
/// Rounds of reading before the engine turns to its other work.
const RECV_ROUNDS: usize = 8;
/// Largest datagram taken (larger ones are cut short by the kernel and dropped).
const MAX_DATAGRAM: usize = 1500;
/// Housekeeping: expired handshakes, connections that outlived their close.
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// GSO: the most bytes in one send.
const MAX_GSO_BYTES: usize = 60_000;
/// Bytes of datagrams one round makes before it sends them: connections that have more to
/// send go on in the next round, at once. The outbox keeps the size it grew to, so a round
/// that served every viewer's join burst at once would keep megabytes for good.
const OUTBOX_LIMIT: usize = 512 * 1024;
/// Packets a sending connection holds in srt-protocol at once (sent and not acknowledged, or
/// waiting to go), its window: what a session hands over beyond this waits in the
/// connection's backlog, so that a burst (the GOP a viewer joins with) never piles up inside
/// srt-protocol, whose queues keep the size they grew to. A window carries at most its size
/// per round trip (28 packets in 10 ms, the ACK period: 29 Mbit/s); a connection whose
/// window stays full with data waiting for [`WINDOW_GROW_AFTER`], and whose backlog does not
/// drain within [`MAX_DRAIN`] at the pace it drained meanwhile (a far or fast viewer, not a
/// join burst that the window carries off), gets twice the window, up to [`MAX_WINDOW`]. A
/// window never shrinks, nor do srt-protocol's queues, which grow with it: their packet slots
/// are most of what a viewer costs beyond the minimum.
const MIN_WINDOW: u64 = 28;
const MAX_WINDOW: u64 = 2048;
const WINDOW_GROW_AFTER: Duration = Duration::from_millis(300);
const MAX_DRAIN: Duration = Duration::from_secs(1);
/// Most bytes a connection's backlog holds; the oldest go first (a viewer that takes less
/// than the stream loses frames, as the relay's own queue would drop them).
const MAX_BACKLOG: usize = 16 * 1024 * 1024;
/// Frames a backlog keeps room for once it has drained: the join burst (a GOP, a few hundred
/// frames) grows it, a feed interval of live frames needs a few.
const BACKLOG_KEEP: usize = 16;
/// How long what sessions hand over gathers before it is sent: the frames of that time go
/// out together, cut into full messages across frame boundaries (the transport stream is one
/// byte stream) and sent to each peer in one GSO send. It adds up to this much to the latency
/// of a stream whose viewers wait the SRT latency (120 ms and more) anyway. Every send wakes
/// the viewer's receiver, and on loopback the server pays for the delivery too: 30 ms (about
/// a frame at 30 fps, with the sound of that time) made a third fewer sends than 10 ms for
/// 100 viewers of a 2.5 Mbit/s stream (perf: 3,200 against 4,750 `sendmsg` a second).
const FEED_INTERVAL: Duration = Duration::from_millis(30);
/// A backlog this large goes to srt-protocol as soon as its window has room (an ACK freed
/// some), without waiting for the end of the feed interval: a viewer catching up (its join
/// burst) or a stream faster than a window per interval.
const EARLY_FEED_BYTES: usize = 64 * 1024;
/// Timers are rounded up to this many ms, so that connections' timers fire together.
const TIMER_GRAIN_MS: u64 = 5;

/// Counts of the engine, for metrics and tests.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Connections open.
    pub connections: AtomicUsize,
    /// Handshakes waiting for their decision.
    pub pending: AtomicUsize,
    /// Datagrams read.
    pub datagrams: AtomicU64,
    /// Datagrams dropped: unreadable handshakes, packets the guard refused, packets for no
    /// connection or from the wrong address.
    pub dropped: AtomicU64,
    /// Conclusions with a cookie that is not ours (spoofed or stale).
    pub bad_cookies: AtomicU64,
    /// Handshakes refused because the pending table was full.
    pub overloaded: AtomicU64,
    /// Connections ended by a panic in srt-protocol.
    pub panics: AtomicU64,
    /// Publisher messages dropped because the session did not keep up.
    pub publish_dropped: AtomicU64,
    /// Bytes dropped from viewers' backlogs because they took less than the stream.
    pub backlog_dropped: AtomicU64,
}

/// A caller's conclusion, waiting for the listener's decision.
#[derive(Debug)]
pub struct ConnectRequest {
    key: PendingKey,
    /// The caller's address.
    pub peer: SocketAddr,
    /// Its stream id (`None`: it sent none).
    pub stream_id: Option<Result<String, StreamIdUnreadable>>,
    /// The key size it announced (`None`: one SRT does not have).
    pub key_size: Option<KeySize>,
    /// Whether it sent keying material (it encrypts).
    pub encrypts: bool,
    /// An extension a live listener refuses (file congestion control, filters, groups).
    pub refused_extension: Option<CoreRejectReason>,
    decisions: mpsc::Sender<(PendingKey, Decision)>,
    decided: bool,
}

/// The listener's answer to a request.
#[derive(Debug)]
enum Decision {
    Reject(RejectReason),
    Accept {
        keys: Option<KeySettings>,
        role: Role,
        done: oneshot::Sender<Result<SrtConn, RejectReason>>,
    },
}

impl ConnectRequest {
    /// Refuses the caller with `reason`.
    pub fn reject(mut self, reason: RejectReason) {
        self.decided = true;
        let _ = self
            .decisions
            .try_send((self.key, Decision::Reject(reason)));
    }

    /// Accepts the caller, encrypted with `keys` (the required passphrase and the caller's
    /// key size), as a connection that mostly receives or sends; the connection, or the
    /// rejection the handshake ended with (the caller's keying material does not match).
    pub async fn accept(
        mut self,
        keys: Option<KeySettings>,
        role: Role,
    ) -> Result<SrtConn, RejectReason> {
        self.decided = true;
        let (done, result) = oneshot::channel();
        let decision = Decision::Accept { keys, role, done };
        if self.decisions.send((self.key, decision)).await.is_err() {
            return Err(RejectReason::Core(CoreRejectReason::Close));
        }
        result
            .await
            .unwrap_or(Err(RejectReason::Core(CoreRejectReason::Close)))
    }
}

impl Drop for ConnectRequest {
    fn drop(&mut self) {
        if !self.decided {
            let reason = RejectReason::Server(ServerRejectReason::Down);
            let _ = self
                .decisions
                .try_send((self.key, Decision::Reject(reason)));
        }
    }
}

/// What a session asks of the engine.
#[derive(Debug)]
enum Command {
    /// Send this transport stream (cut into messages of at most [`handshake::PAYLOAD`]).
    Send(u32, Bytes),
    /// Close the connection (flushing what is queued).
    Close(u32),
}

/// A session's end of an accepted connection.
#[derive(Debug)]
pub struct SrtConn {
    id: u32,
    peer: SocketAddr,
    commands: mpsc::Sender<Command>,
    incoming: Option<mpsc::Receiver<Bytes>>,
    closed: CancellationToken,
}

/// The connection has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the SRT connection is closed")]
pub struct Closed;

impl SrtConn {
    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The next message the peer sent (a publisher's transport stream); `None` once the
    /// connection has ended.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let incoming = self.incoming.as_mut()?;
        tokio::select! {
            biased;
            m = incoming.recv() => m,
            () = self.closed.cancelled() => None,
        }
    }

    /// Hands `data` to the connection to send if the engine's queue has room; otherwise gives
    /// it back (`Ok(Some)`), to be sent with [`SrtConn::send`].
    pub fn try_send(&self, data: Bytes) -> Result<Option<Bytes>, Closed> {
        if self.closed.is_cancelled() {
            return Err(Closed);
        }
        match self.commands.try_send(Command::Send(self.id, data)) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(Command::Send(_, data))) => Ok(Some(data)),
            Err(_) => Err(Closed),
        }
    }

    /// Hands `data` to the connection to send, waiting while the engine's queue is full.
    pub async fn send(&self, data: Bytes) -> Result<(), Closed> {
        if self.closed.is_cancelled() {
            return Err(Closed);
        }
        self.commands
            .send(Command::Send(self.id, data))
            .await
            .map_err(|_| Closed)
    }

    /// Fires when the connection ends (the peer closed it, went silent, or broke it).
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }
}

impl Drop for SrtConn {
    fn drop(&mut self) {
        if !self.closed.is_cancelled() {
            let commands = self.commands.clone();
            let id = self.id;
            if commands.try_send(Command::Close(id)).is_err() {
                // The queue is full: close from a task, once it has room.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = commands.send(Command::Close(id)).await;
                    });
                }
            }
        }
    }
}

/// A handshake in the table: the caller's address and socket id.
type PendingKey = (SocketAddr, u32);

#[derive(Debug)]
enum PendingState {
    /// Waiting for the decision.
    Deciding(Box<CallerHandshake>),
    /// Refused: the rejection, for the caller's repeats.
    Rejected(Bytes),
}

#[derive(Debug)]
struct Pending {
    since: Instant,
    state: PendingState,
}

/// One connection.
struct Conn {
    duplex: DuplexConnection,
    peer: SocketAddr,
    remote_id: u32,
    /// The conclusion response, for the caller's repeats.
    response: Bytes,
    incoming: Option<mpsc::Sender<Bytes>>,
    /// What the session handed over and srt-protocol has not taken yet.
    backlog: std::collections::VecDeque<Bytes>,
    backlog_bytes: usize,
    /// Whether this round may send a short last message (the feed interval is over).
    feed_tail: bool,
    /// Its window ([`MIN_WINDOW`]), and since when the window has been full with data
    /// waiting (with the backlog's bytes then).
    window: u64,
    window_full_since: Option<(Instant, usize)>,
    /// Whether it waits for the end of a feed interval.
    feeding: bool,
    closed: CancellationToken,
    /// The wheel tick its timer is entered for.
    scheduled: Option<u64>,
    closing: Option<Instant>,
    dirty: bool,
}

/// The engine's handles for the listener that owns it.
#[derive(Debug)]
pub struct EngineHandle {
    /// Caller conclusions to decide.
    pub requests: mpsc::Receiver<ConnectRequest>,
    /// The engine's counts.
    pub stats: Arc<EngineStats>,
}

/// The engine.
pub struct Engine {
    socket: Arc<UdpSocket>,
    udp: UdpSocketState,
    cookies: Cookies,
    listener_id: u32,
    conns: HashMap<u32, Conn>,
    by_peer: HashMap<PendingKey, u32>,
    pending: HashMap<PendingKey, Pending>,
    pending_per_ip: HashMap<IpAddr, usize>,
    max_connections: usize,
    wheel: Wheel,
    dirty: Vec<u32>,
    /// Connections with something to send, and when the gathering ends.
    feeding: Vec<u32>,
    feed_due: Option<Instant>,
    requests: mpsc::Sender<ConnectRequest>,
    decisions_tx: mpsc::Sender<(PendingKey, Decision)>,
    decisions: mpsc::Receiver<(PendingKey, Decision)>,
    commands_tx: mpsc::Sender<Command>,
    commands: mpsc::Receiver<Command>,
    out: Outbox,
    stats: Arc<EngineStats>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("connections", &self.conns.len())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Runs `f`, or ends with `None` if it panicked.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        // Socket ids need not be secret; a clock-derived one still differs per connection.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        return nanos | 1;
    }
    u32::from_be_bytes(b)
}

fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    if getrandom::fill(&mut k).is_err() {
        // Without the OS generator no cookie can be trusted; refuse to run rather than
        // accept forged ones.
        panic!("the operating system's random number generator failed");
    }
    k
}

impl Engine {
    /// An engine on `socket` (bound, non-blocking) serving at most `max_connections`.
    pub fn new(
        socket: Arc<UdpSocket>,
        max_connections: usize,
    ) -> std::io::Result<(Self, EngineHandle)> {
        let udp = UdpSocketState::new((&*socket).into())?;
        let (requests, requests_rx) = mpsc::channel(MAX_PENDING);
        let (decisions_tx, decisions) = mpsc::channel(MAX_PENDING + 64);
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let stats = Arc::new(EngineStats::default());
        let max_segments = udp.max_gso_segments();
        Ok((
            Self {
                socket,
                udp,
                cookies: Cookies::new(random_key()),
                listener_id: random_u32() | 1,
                conns: HashMap::new(),
                by_peer: HashMap::new(),
                pending: HashMap::new(),
                pending_per_ip: HashMap::new(),
                max_connections,
                wheel: Wheel::new(Instant::now(), TIMER_GRAIN_MS),
                dirty: Vec::new(),
                feeding: Vec::new(),
                feed_due: None,
                requests,
                decisions_tx,
                decisions,
                commands_tx,
                commands,
                out: Outbox::new(max_segments),
                stats: Arc::clone(&stats),
            },
            EngineHandle {
                requests: requests_rx,
                stats,
            },
        ))
    }

    /// Serves until `shutdown` fires, then closes every connection.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut bufs: Vec<Vec<u8>> = (0..quinn_udp::BATCH_SIZE)
            .map(|_| vec![0u8; RECV_BUFFER])
            .collect();
        let mut metas = vec![RecvMeta::default(); quinn_udp::BATCH_SIZE];
        let mut commands = Vec::with_capacity(256);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let socket = Arc::clone(&self.socket);
        loop {
            let timer = match (self.wheel.next(), self.feed_due) {
                // Connections left over from a full round go on at once.
                _ if !self.dirty.is_empty() => Some(Instant::now()),
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = async {
                match timer {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                r = socket.readable() => {
                    if r.is_ok() {
                        self.receive(&mut bufs, &mut metas);
                    }
                }
                n = self.commands.recv_many(&mut commands, 256) => {
                    if n > 0 {
                        let now = Instant::now();
                        for c in commands.drain(..) {
                            self.on_command(now, c);
                        }
                    }
                }
                Some((key, decision)) = self.decisions.recv() => {
                    self.on_decision(Instant::now(), key, decision);
                }
                () = sleep => {}
                _ = housekeeping.tick() => self.housekeeping(Instant::now()),
            }
            let now = Instant::now();
            self.run_timers(now);
            if self.feed_due.is_some_and(|due| due <= now) {
                self.feed_due = None;
                for id in std::mem::take(&mut self.feeding) {
                    if let Some(conn) = self.conns.get_mut(&id) {
                        conn.feed_tail = true;
                        conn.feeding = false;
                    }
                    self.mark(id);
                }
            }
            self.flush(now);
            self.send_out().await;
        }
        self.close_all();
        self.send_out().await;
    }

    fn receive(&mut self, bufs: &mut [Vec<u8>], metas: &mut [RecvMeta]) {
        for _ in 0..RECV_ROUNDS {
            let mut slices: Vec<IoSliceMut<'_>> =
                bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let udp = &self.udp;
            let socket = &*self.socket;
            let got = socket.try_io(Interest::READABLE, || {
                udp.recv(socket.into(), &mut slices, metas)
            });
            drop(slices);
            let n = match got {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "srt receive failed");
                    return;
                }
            };
            let now = Instant::now();
            for (buf, meta) in bufs.iter().zip(metas.iter()).take(n) {
                let data = buf.get(..meta.len).unwrap_or_default();
                let stride = meta.stride.max(1);
                for datagram in data.chunks(stride) {
                    self.stats.datagrams.fetch_add(1, Ordering::Relaxed);
                    if datagram.len() > MAX_DATAGRAM {
                        self.drop_one();
                        continue;
                    }
                    self.on_datagram(now, datagram, meta.addr);
                }
            }
        }
    }

    fn drop_one(&self) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn on_datagram(&mut self, now: Instant, datagram: &[u8], from: SocketAddr) {
        if handshake::is_handshake(datagram) {
            self.on_handshake(now, datagram, from);
            return;
        }
        let Some(dest) = handshake::dest_socket(datagram) else {
            return self.drop_one();
        };
        let Some(conn) = self.conns.get_mut(&dest) else {
            return self.drop_one();
        };
        if conn.peer != from || guard::check(datagram).is_err() {
            return self.drop_one();
        }
        let parsed = guarded(|| Packet::parse(&mut Cursor::new(datagram), from.is_ipv6()));
        let packet = match parsed {
            Some(Ok(p)) => p,
            Some(Err(_)) => return self.drop_one(),
            None => {
                self.stats.panics.fetch_add(1, Ordering::Relaxed);
                return self.drop_one();
            }
        };
        let handled = guarded(|| conn.duplex.handle_packet_input(now, Ok((packet, from))));
        if handled.is_none() {
            self.kill(dest);
            return;
        }
        self.mark(dest);
    }

    fn mark(&mut self, id: u32) {
        if let Some(conn) = self.conns.get_mut(&id) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    fn on_handshake(&mut self, now: Instant, datagram: &[u8], from: SocketAddr) {
        let Ok(hs) = handshake::read(datagram) else {
            return self.drop_one();
        };
        let wall = SystemTime::now();
        if hs.induction {
            let cookie = self.cookies.make(from, wall);
            let answer = handshake::induction_response(&hs, from, self.listener_id, cookie);
            self.out.push(from, &answer);
            return;
        }
        if !self.cookies.check(from, hs.cookie, wall) {
            self.stats.bad_cookies.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let key = (from, hs.socket_id);
        // A repeat of a conclusion already answered.
        if let Some(conn) = self.by_peer.get(&key).and_then(|id| self.conns.get(id)) {
            let response = conn.response.clone();
            self.out.push(from, &response);
            return;
        }
        if let Some(p) = self.pending.get(&key) {
            if let PendingState::Rejected(answer) = &p.state {
                let answer = answer.clone();
                self.out.push(from, &answer);
            }
            return;
        }
        let per_ip = self.pending_per_ip.get(&from.ip()).copied().unwrap_or(0);
        if self.pending.len() >= MAX_PENDING
            || per_ip >= MAX_PENDING_PER_IP
            || self.conns.len() >= self.max_connections
        {
            self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
            let reason = RejectReason::Server(ServerRejectReason::Overload);
            let answer = handshake::reject(&hs, from, self.listener_id, reason);
            self.out.push(from, &answer);
            return;
        }
        let request = ConnectRequest {
            key,
            peer: from,
            stream_id: hs.stream_id.clone(),
            key_size: hs.key_size(),
            encrypts: hs.km.is_some(),
            refused_extension: hs.refused_extension,
            decisions: self.decisions_tx.clone(),
            decided: false,
        };
        match self.requests.try_send(request) {
            Ok(()) => {}
            Err(e) => {
                let mut request = e.into_inner();
                request.decided = true;
                self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
                let reason = RejectReason::Server(ServerRejectReason::Overload);
                let answer = handshake::reject(&hs, from, self.listener_id, reason);
                self.out.push(from, &answer);
                return;
            }
        }
        *self.pending_per_ip.entry(from.ip()).or_default() += 1;
        self.pending.insert(
            key,
            Pending {
                since: now,
                state: PendingState::Deciding(Box::new(hs)),
            },
        );
        self.stats
            .pending
            .store(self.pending.len(), Ordering::Relaxed);
    }

    fn forget_pending(&mut self, key: &PendingKey) {
        if self.pending.remove(key).is_some() {
            if let Some(n) = self.pending_per_ip.get_mut(&key.0.ip()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.pending_per_ip.remove(&key.0.ip());
                }
            }
        }
        self.stats
            .pending
            .store(self.pending.len(), Ordering::Relaxed);
    }

    fn on_decision(&mut self, now: Instant, key: PendingKey, decision: Decision) {
        let hs = match self.pending.get(&key).map(|p| &p.state) {
            Some(PendingState::Deciding(hs)) => hs.clone(),
            _ => {
                // Expired meanwhile (or decided twice).
                if let Decision::Accept { done, .. } = decision {
                    let _ = done.send(Err(RejectReason::Core(CoreRejectReason::Timeout)));
                }
                return;
            }
        };
        let peer = key.0;
        let (keys, role, done) = match decision {
            Decision::Reject(reason) => return self.refuse(now, key, &hs, reason),
            Decision::Accept { keys, role, done } => (keys, role, done),
        };
        let cipher = match handshake::cipher(&hs, keys.as_ref()) {
            Ok(c) => c,
            Err(reason) => {
                self.refuse(now, key, &hs, reason);
                let _ = done.send(Err(reason));
                return;
            }
        };
        let id = self.new_id();
        let accepted = handshake::accept(&hs, peer, id, cipher, role, now);
        let Some(duplex) = guarded(|| DuplexConnection::new(accepted.connection)) else {
            self.stats.panics.fetch_add(1, Ordering::Relaxed);
            let reason = RejectReason::Core(CoreRejectReason::Resource);
            self.refuse(now, key, &hs, reason);
            let _ = done.send(Err(reason));
            return;
        };
        let (incoming_tx, incoming_rx) = match role {
            Role::Receiver => {
                let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
                (Some(tx), Some(rx))
            }
            Role::Sender => (None, None),
        };
        let closed = CancellationToken::new();
        let conn = SrtConn {
            id,
            peer,
            commands: self.commands_tx.clone(),
            incoming: incoming_rx,
            closed: closed.clone(),
        };
        self.forget_pending(&key);
        self.out.push(peer, &accepted.response);
        self.conns.insert(
            id,
            Conn {
                duplex,
                peer,
                remote_id: hs.socket_id,
                response: accepted.response,
                incoming: incoming_tx,
                backlog: std::collections::VecDeque::new(),
                backlog_bytes: 0,
                window: MIN_WINDOW,
                window_full_since: None,
                feed_tail: false,
                feeding: false,
                closed,
                scheduled: None,
                closing: None,
                dirty: false,
            },
        );
        self.by_peer.insert(key, id);
        self.stats
            .connections
            .store(self.conns.len(), Ordering::Relaxed);
        self.mark(id);
        if let Err(Ok(conn)) = done.send(Ok(conn)) {
            // The session that asked is gone: close what it would have had.
            drop(conn);
        }
    }

    fn refuse(
        &mut self,
        now: Instant,
        key: PendingKey,
        hs: &CallerHandshake,
        reason: RejectReason,
    ) {
        let answer = handshake::reject(hs, key.0, self.listener_id, reason);
        self.out.push(key.0, &answer);
        if let Some(p) = self.pending.get_mut(&key) {
            p.since = now;
            p.state = PendingState::Rejected(answer);
        }
    }

    fn new_id(&self) -> u32 {
        loop {
            let id = random_u32() & 0x7FFF_FFFF;
            if id != 0 && id != self.listener_id && !self.conns.contains_key(&id) {
                return id;
            }
        }
    }

    fn on_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::Send(id, data) => {
                let Some(conn) = self.conns.get_mut(&id) else {
                    return;
                };
                if conn.closing.is_some() || data.is_empty() {
                    return;
                }
                if !conn.feeding {
                    conn.feeding = true;
                    self.feeding.push(id);
                }
                conn.backlog_bytes += data.len();
                conn.backlog.push_back(data);
                while conn.backlog_bytes > MAX_BACKLOG {
                    let Some(old) = conn.backlog.pop_front() else {
                        break;
                    };
                    conn.backlog_bytes -= old.len();
                    self.stats
                        .backlog_dropped
                        .fetch_add(old.len() as u64, Ordering::Relaxed);
                }
                self.feed_due.get_or_insert(now + FEED_INTERVAL);
            }
            Command::Close(id) => {
                let Some(conn) = self.conns.get_mut(&id) else {
                    return;
                };
                if conn.closing.is_none() {
                    conn.closing = Some(now);
                    // What is still gathering goes first, as far as the window takes it.
                    conn.feed_tail = true;
                    let ended = guarded(|| {
                        feed(conn, now);
                        conn.duplex.handle_data_input(now, None);
                    });
                    if ended.is_none() {
                        self.kill(id);
                        return;
                    }
                }
                self.mark(id);
            }
        }
    }

    fn run_timers(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.wheel.advance(now, |id, tick| due.push((id, tick)));
        for (id, tick) in due {
            if let Some(conn) = self.conns.get_mut(&id) {
                if conn.scheduled == Some(tick) {
                    conn.scheduled = None;
                    self.mark(id);
                }
            }
        }
    }

    /// Lets every connection touched this round run its timers and hand out what it made:
    /// packets to the outbox, a publisher's messages to its session.
    fn flush(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty).into_iter();
        while let Some(id) = dirty.next() {
            if self.out.buf.len() >= OUTBOX_LIMIT {
                // The outbox is full: this one and the rest (still marked) wait for the next
                // round.
                self.dirty.push(id);
                self.dirty.extend(dirty);
                break;
            }
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            conn.dirty = false;
            let out = &mut self.out;
            let stats = &self.stats;
            let step = guarded(|| {
                feed(conn, now);
                let next = conn.duplex.check_timers(now);
                while out.buf.len() < OUTBOX_LIMIT {
                    let Some((packet, to)) = conn.duplex.next_packet(now) else {
                        break;
                    };
                    out.push_packet(to, &packet);
                }
                let mut receiver_gone = false;
                while let Some((_, data)) = conn.duplex.next_data(now) {
                    if let Some(tx) = &conn.incoming {
                        match tx.try_send(data) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                stats.publish_dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => receiver_gone = true,
                        }
                    }
                }
                (next, conn.duplex.is_open(), receiver_gone)
            });
            let Some((next, open, receiver_gone)) = step else {
                self.kill(id);
                continue;
            };
            if self.out.buf.len() >= OUTBOX_LIMIT {
                // It may have more packets ready: it goes first in the next round.
                conn.dirty = true;
                self.dirty.push(id);
            }
            let overdue = conn
                .closing
                .is_some_and(|t| now.duration_since(t) >= CLOSE_TIMEOUT);
            if !open || overdue {
                self.remove(id);
                continue;
            }
            // What srt-protocol had no room for waits for the next feed interval.
            if !conn.backlog.is_empty() && !conn.feeding && conn.closing.is_none() {
                conn.feeding = true;
                self.feeding.push(id);
                self.feed_due.get_or_insert(now + FEED_INTERVAL);
            }
            if receiver_gone && conn.closing.is_none() {
                conn.closing = Some(now);
                let _ = guarded(|| conn.duplex.handle_data_input(now, None));
            }
            let tick = self.wheel.tick_of(next);
            if conn.scheduled.is_none_or(|s| tick < s) {
                conn.scheduled = Some(self.wheel.insert(id, tick));
            }
        }
    }

    /// Ends a connection whose state machine panicked.
    fn kill(&mut self, id: u32) {
        self.stats.panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            socket = id,
            "srt connection ended: srt-protocol panicked on its input"
        );
        self.remove(id);
    }

    fn remove(&mut self, id: u32) {
        if let Some(conn) = self.conns.remove(&id) {
            conn.closed.cancel();
            self.by_peer.remove(&(conn.peer, conn.remote_id));
        }
        self.stats
            .connections
            .store(self.conns.len(), Ordering::Relaxed);
    }

    fn housekeeping(&mut self, now: Instant) {
        let expired: Vec<PendingKey> = self
            .pending
            .iter()
            .filter(|(_, p)| match p.state {
                PendingState::Deciding(_) => now.duration_since(p.since) >= DECISION_TIMEOUT,
                PendingState::Rejected(_) => now.duration_since(p.since) >= REJECTION_KEPT,
            })
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            self.forget_pending(&key);
        }
        // Connections closing for too long, and those whose session is gone.
        let stale: Vec<u32> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.closing
                    .is_some_and(|t| now.duration_since(t) >= CLOSE_TIMEOUT)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.remove(id);
        }
    }

    fn close_all(&mut self) {
        let now = Instant::now();
        let ids: Vec<u32> = self.conns.keys().copied().collect();
        for id in &ids {
            if let Some(conn) = self.conns.get_mut(id) {
                let _ = guarded(|| {
                    conn.duplex.handle_data_input(now, None);
                    conn.duplex.check_timers(now);
                    while let Some((packet, to)) = conn.duplex.next_packet(now) {
                        self.out.push_packet(to, &packet);
                    }
                });
            }
        }
        for id in ids {
            self.remove(id);
        }
    }

    /// Sends what the outbox holds.
    async fn send_out(&mut self) {
        let mut next = 0;
        while next < self.out.groups.len() {
            let Some(group) = self.out.groups.get(next).cloned() else {
                break;
            };
            let contents = self.out.buf.get(group.range.clone()).unwrap_or_default();
            let transmit = Transmit {
                destination: group.to,
                ecn: None,
                contents,
                segment_size: (group.count > 1).then_some(group.segment),
                src_ip: None,
            };
            let udp = &self.udp;
            let socket = &*self.socket;
            match socket.try_io(Interest::WRITABLE, || {
                udp.try_send(socket.into(), &transmit)
            }) {
                Ok(()) => next += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if socket.writable().await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    // A send the kernel refuses (GSO it cannot do, an unreachable peer): the
                    // datagrams one by one, once; the rest of the batch goes on.
                    if group.count > 1 {
                        for piece in contents.chunks(group.segment.max(1)) {
                            let single = Transmit {
                                destination: group.to,
                                ecn: None,
                                contents: piece,
                                segment_size: None,
                                src_ip: None,
                            };
                            let _ = socket.try_io(Interest::WRITABLE, || {
                                udp.try_send(socket.into(), &single)
                            });
                        }
                    } else {
                        tracing::debug!(peer = %group.to, error = %e, "srt send failed");
                    }
                    next += 1;
                }
            }
        }
        self.out.clear();
    }
}

/// Hands srt-protocol what it has room for of a connection's backlog, as messages of
/// [`handshake::PAYLOAD`] bytes cut from the transport stream across frame boundaries (within
/// one frame a slice, not a copy), once the feed interval is over or the backlog has reached
/// [`EARLY_FEED_BYTES`]; the short last one only once the interval is over.
fn feed(conn: &mut Conn, now: Instant) {
    let tail = std::mem::take(&mut conn.feed_tail);
    if !tail && conn.backlog_bytes < EARLY_FEED_BYTES {
        return;
    }
    if conn.backlog.is_empty() {
        conn.window_full_since = None;
        return;
    }
    conn.duplex.update_statistics(now);
    let mut room = conn
        .window
        .saturating_sub(conn.duplex.statistics().tx_buffered_data);
    let step = usize::try_from(handshake::PAYLOAD).unwrap_or(1316);
    while room > 0 {
        let Some(chunk) = next_message(&mut conn.backlog, &mut conn.backlog_bytes, step, tail)
        else {
            break;
        };
        conn.duplex.handle_data_input(now, Some((now, chunk)));
        room -= 1;
    }
    let waiting = (room == 0 && !conn.backlog.is_empty()).then_some(conn.backlog_bytes);
    conn.window = next_window(conn.window, &mut conn.window_full_since, waiting, now);
    if conn.backlog.is_empty() {
        conn.backlog.shrink_to(BACKLOG_KEEP);
    }
}

/// A connection's window after a feed that left it full with `waiting` bytes in its backlog,
/// or not full (`None`).
fn next_window(
    window: u64,
    full_since: &mut Option<(Instant, usize)>,
    waiting: Option<usize>,
    now: Instant,
) -> u64 {
    let Some(waiting) = waiting else {
        *full_since = None;
        return window;
    };
    let (since, then) = *full_since.get_or_insert((now, waiting));
    let elapsed = now.duration_since(since);
    if elapsed < WINDOW_GROW_AFTER || window >= MAX_WINDOW {
        return window;
    }
    // Measured again from here, grown or not.
    *full_since = Some((now, waiting));
    // Bytes drained over `elapsed`, against what is left to drain in [`MAX_DRAIN`] at that
    // pace (a backlog that grew drained nothing).
    let drained = u128::try_from(then.saturating_sub(waiting)).unwrap_or(u128::MAX);
    let left = u128::try_from(waiting).unwrap_or(u128::MAX);
    let drains_in_time =
        left.saturating_mul(elapsed.as_millis()) <= drained.saturating_mul(MAX_DRAIN.as_millis());
    if drains_in_time {
        window
    } else {
        (window * 2).min(MAX_WINDOW)
    }
}

/// The next message of `step` bytes from the front of `backlog` (fewer only if `tail`).
fn next_message(
    backlog: &mut std::collections::VecDeque<Bytes>,
    backlog_bytes: &mut usize,
    step: usize,
    tail: bool,
) -> Option<Bytes> {
    if *backlog_bytes == 0 || (*backlog_bytes < step && !tail) {
        return None;
    }
    let front = backlog.front_mut()?;
    let chunk = if front.len() > step {
        front.split_to(step)
    } else if front.len() == step || *backlog_bytes <= front.len() {
        let whole = std::mem::take(front);
        backlog.pop_front();
        whole
    } else {
        // Across frames: gather one message.
        let mut out = bytes::BytesMut::with_capacity(step.min(*backlog_bytes));
        while out.len() < step {
            let Some(f) = backlog.front_mut() else {
                break;
            };
            let need = step - out.len();
            if f.len() <= need {
                out.extend_from_slice(f);
                backlog.pop_front();
            } else {
                out.extend_from_slice(&f.split_to(need));
            }
        }
        out.freeze()
    };
    *backlog_bytes -= chunk.len();
    Some(chunk)
}

/// A run of datagrams to one peer, in the outbox's buffer: `count` of `segment` bytes, the
/// last possibly shorter.
#[derive(Debug, Clone)]
struct Group {
    to: SocketAddr,
    range: std::ops::Range<usize>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended it.
    closed: bool,
}

/// Datagrams waiting to be sent, grouped for GSO.
#[derive(Debug)]
struct Outbox {
    buf: Vec<u8>,
    groups: Vec<Group>,
    max_segments: usize,
}

impl Outbox {
    fn new(max_segments: usize) -> Self {
        Self {
            buf: Vec::with_capacity(OUTBOX_LIMIT + 4 * MAX_DATAGRAM),
            groups: Vec::new(),
            max_segments: max_segments.max(1),
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.groups.clear();
    }

    fn push_packet(&mut self, to: SocketAddr, packet: &Packet) {
        let start = self.buf.len();
        packet.serialize(&mut self.buf);
        self.extend(to, start);
    }

    fn push(&mut self, to: SocketAddr, datagram: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(datagram);
        self.extend(to, start);
    }

    /// Adds the datagram at `start..` to the last group if it can go in one send with it.
    fn extend(&mut self, to: SocketAddr, start: usize) {
        let len = self.buf.len() - start;
        if let Some(g) = self.groups.last_mut() {
            let fits = g.to == to
                && !g.closed
                && len <= g.segment
                && g.count < self.max_segments
                && g.range.len() + len <= MAX_GSO_BYTES
                && g.range.end == start;
            if fits {
                g.count += 1;
                g.range.end = start + len;
                g.closed = len < g.segment;
                return;
            }
        }
        self.groups.push(Group {
            to,
            range: start..start + len,
            segment: len,
            count: 1,
            closed: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_full_for_long_grows_and_a_burst_does_not_grow_it() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut since = None;
        // A join burst: full for 200 ms, then drained.
        let mut w = MIN_WINDOW;
        for n in (0..200).step_by(10) {
            w = next_window(w, &mut since, Some(100_000), ms(n));
        }
        w = next_window(w, &mut since, None, ms(210));
        assert_eq!((w, since), (MIN_WINDOW, None));
        // A viewer the window holds back (its backlog does not shrink): it doubles every
        // 300 ms it stays full, up to the most.
        for n in (1000..1310).step_by(10) {
            w = next_window(w, &mut since, Some(100_000), ms(n));
        }
        assert_eq!(w, 2 * MIN_WINDOW);
        for n in (1310..5000).step_by(10) {
            w = next_window(w, &mut since, Some(100_000 + n as usize), ms(n));
        }
        assert_eq!(w, MAX_WINDOW);
        // It keeps what it grew to.
        w = next_window(w, &mut since, None, ms(5000));
        assert_eq!(w, MAX_WINDOW);
    }

    #[test]
    fn a_backlog_the_window_drains_within_a_second_does_not_grow_it() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut since = None;
        let mut w = MIN_WINDOW;
        // A join burst of 600 kB that drains by 300 kB every 300 ms, while the window stays
        // full: 300 kB left after 300 ms would go in 300 ms more.
        for n in (0..=300).step_by(10) {
            w = next_window(w, &mut since, Some(600_000 - 1000 * n as usize), ms(n));
        }
        assert_eq!(w, MIN_WINDOW);
        // Draining by 100 kB in the next 300 ms: the 200 kB left would take 600 ms.
        for n in (310..=600).step_by(10) {
            let waiting = 300_000 - 1000 * (n as usize - 300) / 3;
            w = next_window(w, &mut since, Some(waiting), ms(n));
        }
        assert_eq!(w, MIN_WINDOW);
        // Draining by 30 kB in 300 ms: 170 kB left would take 1.7 s, so the window grows.
        for n in (610..=900).step_by(10) {
            let waiting = 200_000 - 100 * (n as usize - 600);
            w = next_window(w, &mut since, Some(waiting), ms(n));
        }
        assert_eq!(w, 2 * MIN_WINDOW);
    }

    fn a_sender(window: u64) -> Conn {
        let (_, conclusion) = super::hostile_tests::srt_tokio_handshake(None);
        let duplex = super::hostile_tests::open_connection(&conclusion, None, Role::Sender);
        Conn {
            duplex,
            peer: SocketAddr::from(([127, 0, 0, 1], 9)),
            remote_id: 1,
            response: Bytes::new(),
            incoming: None,
            backlog: std::collections::VecDeque::new(),
            backlog_bytes: 0,
            window,
            window_full_since: None,
            feed_tail: false,
            feeding: true,
            closed: CancellationToken::new(),
            scheduled: None,
            closing: None,
            dirty: false,
        }
    }

    fn hand_over(conn: &mut Conn, bytes: usize) {
        conn.backlog.push_back(Bytes::from(vec![0x47; bytes]));
        conn.backlog_bytes += bytes;
    }

    fn buffered(conn: &mut Conn, now: Instant) -> u64 {
        conn.duplex.update_statistics(now);
        conn.duplex.statistics().tx_buffered_data
    }

    #[test]
    fn data_waits_for_the_feed_interval_unless_the_backlog_is_large() {
        let now = Instant::now();
        let step = usize::try_from(handshake::PAYLOAD).unwrap();
        let mut conn = a_sender(MIN_WINDOW);
        hand_over(&mut conn, 3 * step + 100);
        feed(&mut conn, now);
        assert_eq!(
            buffered(&mut conn, now),
            0,
            "fed before the interval was over"
        );
        conn.feed_tail = true;
        feed(&mut conn, now);
        assert_eq!(
            buffered(&mut conn, now),
            4,
            "three full messages and the tail"
        );
        assert_eq!(conn.backlog_bytes, 0);

        // A backlog past EARLY_FEED_BYTES goes at once, as far as the window takes it.
        let mut conn = a_sender(MIN_WINDOW);
        hand_over(&mut conn, EARLY_FEED_BYTES + step);
        feed(&mut conn, now);
        assert_eq!(buffered(&mut conn, now), MIN_WINDOW);
        let left = EARLY_FEED_BYTES + step - usize::try_from(MIN_WINDOW).unwrap() * step;
        assert_eq!(conn.backlog_bytes, left);
    }

    #[test]
    fn a_drained_backlog_gives_back_the_room_a_join_burst_took() {
        let now = Instant::now();
        let mut conn = a_sender(1024);
        // A join burst of 300 small frames, then drained by one feed.
        for _ in 0..300 {
            hand_over(&mut conn, 188);
        }
        assert!(conn.backlog.capacity() >= 300);
        conn.feed_tail = true;
        feed(&mut conn, now);
        assert_eq!(conn.backlog_bytes, 0);
        assert!(
            conn.backlog.capacity() <= BACKLOG_KEEP,
            "{}",
            conn.backlog.capacity()
        );
    }

    #[test]
    fn messages_are_cut_across_frames_and_the_tail_waits() {
        let mut backlog: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
        let mut bytes = 0;
        for (n, len) in [(1u8, 10usize), (2, 7), (3, 3)] {
            backlog.push_back(Bytes::from(vec![n; len]));
            bytes += len;
        }
        let mut take = |tail| next_message(&mut backlog, &mut bytes, 4, tail);
        assert_eq!(take(false).as_deref(), Some(&[1u8; 4][..]));
        assert_eq!(take(false).as_deref(), Some(&[1u8; 4][..]));
        assert_eq!(
            take(false).as_deref(),
            Some(&[1, 1, 2, 2][..]),
            "across two frames"
        );
        assert_eq!(take(false).as_deref(), Some(&[2u8; 4][..]));
        assert_eq!(take(false).as_deref(), Some(&[2, 3, 3, 3][..]));
        assert_eq!(take(true), None, "nothing left");
        backlog.push_back(Bytes::from_static(&[9, 9]));
        bytes = 2;
        let mut take = |tail| next_message(&mut backlog, &mut bytes, 4, tail);
        assert_eq!(take(false), None, "a short last message waits");
        assert_eq!(take(true).as_deref(), Some(&[9, 9][..]));
    }

    #[test]
    fn the_outbox_groups_runs_to_one_peer() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2000".parse().unwrap();
        let mut o = Outbox::new(64);
        for _ in 0..3 {
            o.push(a, &[1; 100]);
        }
        o.push(a, &[2; 40]); // shorter: ends the run
        o.push(a, &[3; 100]);
        o.push(b, &[4; 100]);
        let shape: Vec<(SocketAddr, usize, usize)> = o
            .groups
            .iter()
            .map(|g| (g.to, g.count, g.range.len()))
            .collect();
        assert_eq!(shape, vec![(a, 4, 340), (a, 1, 100), (b, 1, 100)]);
        let mut one = Outbox::new(1);
        one.push(a, &[1; 10]);
        one.push(a, &[1; 10]);
        assert_eq!(one.groups.len(), 2, "no GSO: one datagram a send");
    }
}
