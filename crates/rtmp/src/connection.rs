//! The socket task of one RTMP connection: it feeds what the client sends, the relay's events
//! (for a viewer, when its fan-out shard hands them over) and the session's deadlines to the
//! [`Session`], writes what the session produces, and carries out its actions (watching a
//! grant's revocation, joining the fan-out).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt as _;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::fanout::{FanOuts, Membership, Viewer, Work, MAX_EVENTS_PER_WRITE};
use crate::session::{Action, Close, Session};
use crate::stop::{watch, StopReason, StopSignal, Watcher};
use crate::write::write_vectored_now;
use crate::RtmpContext;

/// How long one write to a client may stall before the connection is dropped.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Read buffer of a publisher; other connections send little and get [`SMALL_READ_BUFFER`].
const READ_BUFFER: usize = 64 * 1024;
/// How long the status telling a client that its session was ended may take to write.
const REVOKED_STATUS_TIMEOUT: Duration = Duration::from_millis(500);
/// Read buffer of a connection that is not publishing.
const SMALL_READ_BUFFER: usize = 4 * 1024;

/// A playing viewer's place in the fan-out.
struct Play {
    /// The relay subscriber and the socket, shared with the stream's fan-out shard.
    viewer: Arc<Viewer>,
    /// Dropped with the play.
    _membership: Membership,
}

/// Serves one accepted connection to its end.
pub(crate) async fn serve_connection(
    ctx: Arc<RtmpContext>,
    socket: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = socket.set_nodelay(true);
    let (reader, writer) = socket.into_split();
    // Shutdown and, once granted, revocation fire this one signal; the task checks it at
    // every wake-up (once per frame for a viewer), which the tokens would make costly.
    let stop = StopSignal::default();
    let _shutdown = watch(shutdown, StopReason::Shutdown, &stop);
    let mut conn = Connection {
        session: Session::new(&ctx, peer, Instant::now()),
        ctx: Arc::clone(&ctx),
        reader,
        writer: Arc::new(writer),
        out: Vec::new(),
        revocation: None,
        play: None,
        stop: stop.clone(),
        fanouts: Arc::clone(&ctx.fanouts),
    };
    let reason = tokio::select! {
        biased;
        reason = stop.fired() => match reason {
            StopReason::Shutdown => Close::Shutdown,
            StopReason::Revoked => Close::Revoked,
        },
        Err(r) = conn.run() => r,
    };
    if matches!(reason, Close::Revoked) {
        conn.tell_revoked().await;
    }
    let ended = conn.session.finish(&reason);
    ctx.stats.count(&reason);
    match &reason {
        r if r.is_violation() => {
            tracing::info!(peer = %peer, reason = %r, "rtmp connection closed: {r}")
        }
        r => tracing::debug!(peer = %peer, reason = %r, "rtmp connection closed"),
    }
    if let (Some((what, stream)), Some(ended)) = (conn.session.granted(), ended) {
        tracing::info!(peer = %peer, stream = %stream, close = ?reason, reason = ended.code(), "rtmp {what} ended: {ended}");
    }
}

struct Connection {
    session: Session,
    ctx: Arc<RtmpContext>,
    reader: OwnedReadHalf,
    /// Shared with the fan-out shard while playing (see [`crate::fanout`]).
    writer: Arc<OwnedWriteHalf>,
    /// Bytes to write, in order: shared frame encodings are queued without copying.
    out: Vec<Bytes>,
    /// Fires the stop signal when the grant is revoked.
    revocation: Option<Watcher>,
    play: Option<Play>,
    /// Fired on shutdown and on revocation of the grant; watched by [`serve_connection`].
    stop: StopSignal,
    /// The listener's fan-out groups, joined when playing.
    fanouts: Arc<FanOuts>,
}

impl Connection {
    /// Runs until the connection must close; the error says why.
    async fn run(&mut self) -> Result<Infallible, Close> {
        let mut buf = BytesMut::with_capacity(SMALL_READ_BUFFER);
        loop {
            if self.play.is_some() {
                self.play_loop(&mut buf).await?;
                continue;
            }
            let read = match self.session.timeout() {
                Some(deadline) => {
                    tokio::select! {
                        read = self.reader.read_buf(&mut buf) => read,
                        () = tokio::time::sleep_until(deadline.into()) => {
                            self.session.handle_timeout(Instant::now())?;
                            continue;
                        }
                    }
                }
                None => self.reader.read_buf(&mut buf).await,
            };
            self.on_read(read, &mut buf).await?;
        }
    }

    /// Serves a viewer until its play ends (then returns to the main loop) or the connection
    /// must close. Frames are written by the stream's fan-out shard; this task wakes only
    /// when the shard hands over (see [`crate::fanout`]) or the client sends something, and
    /// shutdown and revocation are watched outside it (see [`serve_connection`]).
    async fn play_loop(&mut self, buf: &mut BytesMut) -> Result<(), Close> {
        while let Some(p) = &self.play {
            let viewer = Arc::clone(&p.viewer);
            // Catch up on what the shard left and what is ready, then hand back.
            loop {
                match viewer.take_work(MAX_EVENTS_PER_WRITE) {
                    Work::Done => break,
                    Work::Failed(e) => return Err(Close::Io(e)),
                    Work::Write { unsent, events } => {
                        self.out.extend(unsent);
                        let mut ended = Ok(());
                        for event in events {
                            ended = self.session.relay_event(event);
                            if ended.is_err() {
                                break;
                            }
                        }
                        // A closing play still sends its last status to the player.
                        self.flush().await?;
                        ended?;
                    }
                }
            }
            let read = tokio::select! {
                biased;
                () = viewer.handed_off() => continue,
                read = self.reader.read_buf(buf) => read,
            };
            // Replies to the client must not interleave with the shard's writes.
            viewer.take_over();
            self.on_read(read, buf).await?;
        }
        Ok(())
    }

    /// Handles what one socket read brought.
    async fn on_read(
        &mut self,
        read: std::io::Result<usize>,
        buf: &mut BytesMut,
    ) -> Result<(), Close> {
        match read {
            Err(e) => Err(Close::Io(e)),
            Ok(0) => Err(Close::PeerClosed),
            Ok(_) => {
                let mut result = self.session.receive(buf, Instant::now());
                buf.clear();
                let want = if self.session.is_publishing() {
                    READ_BUFFER
                } else {
                    SMALL_READ_BUFFER
                };
                if buf.capacity() < want {
                    buf.reserve(want);
                }
                if result.is_ok() {
                    // A refusal's status is written below, before the close.
                    result = self.apply_actions().await;
                }
                let flushed = self.flush().await;
                result?;
                flushed
            }
        }
    }

    /// Carries out what the session asked for, deciding its publish and play requests.
    async fn apply_actions(&mut self) -> Result<(), Close> {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Admit(request) => {
                    // The admission's own delays are bounded (a failure's delay, a durable
                    // write); the grant deadline bounds them all the same.
                    let decision = match self.session.timeout() {
                        Some(deadline) => {
                            match tokio::time::timeout_at(
                                deadline.into(),
                                self.ctx.admission.admit(request),
                            )
                            .await
                            {
                                Ok(d) => d,
                                Err(_) => {
                                    self.session.handle_timeout(Instant::now())?;
                                    return Err(Close::GrantTimeout);
                                }
                            }
                        }
                        None => self.ctx.admission.admit(request).await,
                    };
                    self.session.admitted(decision, Instant::now())?;
                }
                Action::Granted { revoked } => {
                    self.revocation = Some(watch(revoked, StopReason::Revoked, &self.stop));
                }
                Action::Play {
                    subscriber,
                    stream_id,
                } => {
                    let name = subscriber.name().to_owned();
                    let viewer =
                        Arc::new(Viewer::new(subscriber, Arc::clone(&self.writer), stream_id));
                    let membership = self.fanouts.join(&self.ctx.hub, &name, Arc::clone(&viewer));
                    self.play = Some(Play {
                        viewer,
                        _membership: membership,
                    });
                }
                Action::Ended => {
                    self.play = None;
                    self.revocation = None;
                }
            }
        }
        Ok(())
    }

    /// Tells the client why the server ended its session, without waiting long: a viewer's
    /// socket is taken back from its shard, what the shard left half-written is finished,
    /// then the status goes out.
    async fn tell_revoked(&mut self) {
        if self.session.revoked().is_none() {
            return;
        }
        if let Some(p) = &self.play {
            p.viewer.take_over();
            if let Work::Write { unsent, .. } = p.viewer.take_work(MAX_EVENTS_PER_WRITE) {
                let mut queued = std::mem::take(&mut self.out);
                self.out.extend(unsent);
                self.out.append(&mut queued);
            }
        }
        let _ = tokio::time::timeout(REVOKED_STATUS_TIMEOUT, self.flush()).await;
    }

    /// Writes what is queued and what the session produced with vectored writes, giving up on
    /// a client whose socket stays full for [`WRITE_STALL_TIMEOUT`] or past the session's
    /// deadline. The timer is armed only when the socket is full.
    async fn flush(&mut self) -> Result<(), Close> {
        self.session.take_output(&mut self.out);
        // An empty buffer would read as a zero-length write, which means a closed peer.
        self.out.retain(|b| !b.is_empty());
        let mut done = 0;
        let mut offset = 0;
        while done < self.out.len() {
            let parts = self.out.get(done..).unwrap_or_default();
            match write_vectored_now(&self.writer, parts, offset) {
                Ok(0) => return Err(Close::PeerClosed),
                Ok(mut n) => {
                    while n > 0 {
                        let left = self.out.get(done).map_or(0, |b| b.len() - offset);
                        if n >= left {
                            n -= left;
                            done += 1;
                            offset = 0;
                        } else {
                            offset += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let now = Instant::now();
                    let stall = now + WRITE_STALL_TIMEOUT;
                    let until = self.session.timeout().map_or(stall, |t| t.min(stall));
                    match tokio::time::timeout_at(until.into(), self.writer.writable()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(Close::Io(e)),
                        Err(_) => {
                            self.session.handle_timeout(Instant::now())?;
                            return Err(Close::Stalled);
                        }
                    }
                }
                Err(e) => return Err(Close::Io(e)),
            }
        }
        self.out.clear();
        Ok(())
    }
}
