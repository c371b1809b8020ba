//! One RTMP connection: handshake, then a loop that feeds the client's bytes to the session
//! library and the watcher, turns session events into auth decisions and relay calls, and writes
//! relay frames to a viewer from the shared chunk cache.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use streamgate_auth::{AccessRequest, Action, Denial, Grant, Protocol};
use streamgate_media::flv::{self, FlvAudio, FlvVideo};
use streamgate_media::{Codec, Frame};
use streamgate_relay::{Event, Publisher};
use tokio::io::AsyncReadExt as _;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::chunk::OUT_CHUNK_SIZE;
use crate::encode::{config_bytes, frame_bytes};
use crate::fanout::{FanOuts, Membership, Viewer, Work, MAX_EVENTS_PER_WRITE};
use crate::status::{
    metadata_for_viewer, metadata_from_rtmp, on_error_status, on_status, play_denied,
    publish_denied, VP8_NOT_PLAYABLE,
};
use crate::stop::{watch, StopReason, StopSignal, Watcher};
use crate::target::parse_target;
use crate::watch::InboundWatch;
use crate::write::write_vectored_now;
use crate::RtmpContext;

/// How long a client may take to complete the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may stay without publishing or playing.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a publisher may send nothing before it is considered gone.
pub const PUBLISH_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one write to a viewer may stall before the viewer is dropped.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Read buffer of a publisher; other connections send little and get [`SMALL_READ_BUFFER`].
const READ_BUFFER: usize = 64 * 1024;
/// Read buffer of a connection that is not publishing.
const SMALL_READ_BUFFER: usize = 4 * 1024;

/// Why a connection ended (for the log line).
#[derive(Debug)]
enum Close {
    PeerClosed,
    Io(std::io::Error),
    Protocol(String),
    Refused,
    Revoked,
    Shutdown,
    Idle,
    StreamEnded,
    Stalled,
}

/// Bytes to write, in order: shared frame encodings are queued without copying.
#[derive(Default)]
struct Outbox {
    parts: Vec<Bytes>,
}

impl Outbox {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.parts.push(b);
        }
    }
}

enum Role {
    Idle,
    Publishing(Box<Publishing>),
    Playing(Box<Playing>),
}

struct Publishing {
    /// Held while publishing: the stream's publish lease and the live-session registration.
    _grant: Grant,
    /// Fires the connection's stop signal when the grant is revoked.
    _revocation: Watcher,
    publisher: Publisher,
    /// Frames parsed from the current read, handed to the relay together (one wake-up of the
    /// viewers) when the read is done or before a configuration change.
    frames: Vec<Frame>,
}

impl Publishing {
    /// Hands the frames gathered so far to the relay.
    fn push_frames(&mut self) {
        if !self.frames.is_empty() {
            self.publisher.push_all(self.frames.drain(..));
        }
    }
}

struct Playing {
    /// Held while playing: the live-session registration.
    _grant: Grant,
    /// Fires the connection's stop signal when the grant is revoked.
    _revocation: Watcher,
    /// The relay subscriber and the socket, shared with the stream's fan-out shard.
    viewer: Arc<Viewer>,
    /// The viewer's place in the fan-out; dropped first, with the role.
    _membership: Membership,
    stream_id: u32,
}

/// Serves one accepted connection to its end.
pub async fn serve_connection(
    ctx: Arc<RtmpContext>,
    socket: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    fanouts: Arc<FanOuts>,
) {
    let _ = socket.set_nodelay(true);
    let (reader, writer) = socket.into_split();
    // Shutdown and, once granted, revocation fire this one signal; the task checks it at
    // every wake-up (once per frame for a viewer), which the tokens would make costly.
    let stop = StopSignal::default();
    let _shutdown = watch(shutdown, StopReason::Shutdown, &stop);
    let mut conn = Connection {
        ctx,
        peer,
        reader,
        writer: Arc::new(writer),
        watch: InboundWatch::default(),
        role: Role::Idle,
        stream: None,
        stop: stop.clone(),
        fanouts,
    };
    let reason = tokio::select! {
        biased;
        reason = stop.fired() => match reason {
            StopReason::Shutdown => Close::Shutdown,
            StopReason::Revoked => Close::Revoked,
        },
        Err(r) = conn.run() => r,
    };
    match &reason {
        Close::Io(e) => tracing::debug!(peer = %peer, error = %e, "rtmp connection closed"),
        Close::Protocol(e) => {
            tracing::info!(peer = %peer, error = %e, "rtmp connection closed: protocol error")
        }
        other => tracing::debug!(peer = %peer, reason = ?other, "rtmp connection closed"),
    }
    if let Some((what, stream)) = &conn.stream {
        tracing::info!(peer = %peer, stream = %stream, reason = ?reason, "rtmp {what} ended");
    }
}

struct Connection {
    ctx: Arc<RtmpContext>,
    peer: SocketAddr,
    reader: OwnedReadHalf,
    /// Shared with the fan-out shard while playing (see [`crate::fanout`]).
    writer: Arc<OwnedWriteHalf>,
    watch: InboundWatch,
    role: Role,
    /// Publish or play, and the stream, once granted (for the closing log line).
    stream: Option<(&'static str, String)>,
    /// Fired on shutdown and on revocation of the grant; watched by [`serve_connection`].
    stop: StopSignal,
    /// The listener's fan-out groups, joined when playing.
    fanouts: Arc<FanOuts>,
}

impl Connection {
    /// Runs until the connection must close; the error says why.
    async fn run(&mut self) -> Result<Infallible, Close> {
        let leftover = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake())
            .await
            .map_err(|_| Close::Protocol("handshake timed out".into()))??;
        let config = ServerSessionConfig {
            chunk_size: OUT_CHUNK_SIZE,
            ..ServerSessionConfig::new()
        };
        let (mut session, initial) =
            ServerSession::new(config).map_err(|e| Close::Protocol(e.to_string()))?;
        let mut out = Outbox::default();
        self.apply(&mut session, initial, &mut out)?;
        let result = self.input(&mut session, &leftover, &mut out);
        let flushed = self.flush(&mut out).await;
        result?;
        flushed?;
        let mut buf = BytesMut::with_capacity(SMALL_READ_BUFFER);
        loop {
            if matches!(self.role, Role::Playing(_)) {
                self.play_loop(&mut session, &mut out, &mut buf).await?;
                continue;
            }
            let idle = matches!(self.role, Role::Idle);
            let limit = if idle {
                IDLE_TIMEOUT
            } else {
                PUBLISH_READ_TIMEOUT
            };
            let read = match tokio::time::timeout(limit, self.reader.read_buf(&mut buf)).await {
                Ok(r) => r,
                Err(_) if idle => return Err(Close::Idle),
                Err(_) => return Err(Close::Protocol("publisher sent nothing".into())),
            };
            self.on_read(read, &mut session, &mut out, &mut buf).await?;
        }
    }

    /// Serves a viewer until its play ends (then returns to the main loop) or the connection
    /// must close. Frames are written by the stream's fan-out shard; this task wakes only
    /// when the shard hands over (see [`crate::fanout`]) or the client sends something, and
    /// shutdown and revocation are watched outside it (see [`serve_connection`]).
    async fn play_loop(
        &mut self,
        session: &mut ServerSession,
        out: &mut Outbox,
        buf: &mut BytesMut,
    ) -> Result<(), Close> {
        while let Role::Playing(p) = &self.role {
            let viewer = Arc::clone(&p.viewer);
            // Catch up on what the shard left and what is ready, then hand back.
            loop {
                match viewer.take_work(MAX_EVENTS_PER_WRITE) {
                    Work::Done => break,
                    Work::Failed(e) => return Err(Close::Io(e)),
                    Work::Write { unsent, events } => {
                        out.parts.extend(unsent);
                        let mut ended = Ok(());
                        for event in events {
                            ended = self.media(session, event, out);
                            if ended.is_err() {
                                break;
                            }
                        }
                        // A closing play still sends its last status to the player.
                        self.flush(out).await?;
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
            self.on_read(read, session, out, buf).await?;
        }
        Ok(())
    }

    /// Handles what one socket read brought.
    async fn on_read(
        &mut self,
        read: std::io::Result<usize>,
        session: &mut ServerSession,
        out: &mut Outbox,
        buf: &mut BytesMut,
    ) -> Result<(), Close> {
        match read {
            Err(e) => Err(Close::Io(e)),
            Ok(0) => Err(Close::PeerClosed),
            Ok(_) => {
                let result = self.input(session, buf, out);
                buf.clear();
                let want = if matches!(self.role, Role::Publishing(_)) {
                    READ_BUFFER
                } else {
                    SMALL_READ_BUFFER
                };
                if buf.capacity() < want {
                    buf.reserve(want);
                }
                let flushed = self.flush(out).await;
                result?;
                flushed
            }
        }
    }

    async fn handshake(&mut self) -> Result<Vec<u8>, Close> {
        let mut hs = Handshake::new(PeerType::Server);
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self.reader.read(&mut buf).await.map_err(Close::Io)?;
            if n == 0 {
                return Err(Close::PeerClosed);
            }
            let input = buf.get(..n).unwrap_or_default();
            match hs.process_bytes(input) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    let mut out = Outbox::default();
                    out.push(Bytes::from(response_bytes));
                    self.flush(&mut out).await?;
                }
                Ok(HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                }) => {
                    let mut out = Outbox::default();
                    out.push(Bytes::from(response_bytes));
                    self.flush(&mut out).await?;
                    return Ok(remaining_bytes);
                }
                Err(e) => return Err(Close::Protocol(format!("bad handshake: {e:?}"))),
            }
        }
    }

    /// Writes what is queued with vectored writes, giving up on a viewer whose socket stays
    /// full for [`WRITE_STALL_TIMEOUT`]. The timer is armed only when the socket is full.
    async fn flush(&mut self, out: &mut Outbox) -> Result<(), Close> {
        let mut done = 0;
        let mut offset = 0;
        while done < out.parts.len() {
            let parts = out.parts.get(done..).unwrap_or_default();
            match write_vectored_now(&self.writer, parts, offset) {
                Ok(0) => return Err(Close::PeerClosed),
                Ok(mut n) => {
                    while n > 0 {
                        let left = out.parts.get(done).map_or(0, |b| b.len() - offset);
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
                    match tokio::time::timeout(WRITE_STALL_TIMEOUT, self.writer.writable()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(Close::Io(e)),
                        Err(_) => return Err(Close::Stalled),
                    }
                }
                Err(e) => return Err(Close::Io(e)),
            }
        }
        out.parts.clear();
        Ok(())
    }

    fn input(
        &mut self,
        session: &mut ServerSession,
        bytes: &[u8],
        out: &mut Outbox,
    ) -> Result<(), Close> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.watch
            .feed(bytes)
            .map_err(|e| Close::Protocol(e.to_string()))?;
        let results = session
            .handle_input(bytes)
            .map_err(|e| Close::Protocol(e.to_string()))?;
        self.apply(session, results, out)
    }

    fn apply(
        &mut self,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
        out: &mut Outbox,
    ) -> Result<(), Close> {
        let mut queue = std::collections::VecDeque::from(results);
        let mut result = Ok(());
        while let Some(r) = queue.pop_front() {
            match r {
                ServerSessionResult::OutboundResponse(p) => out.push(Bytes::from(p.bytes)),
                ServerSessionResult::RaisedEvent(e) => match self.event(session, e, out) {
                    Ok(more) => queue.extend(more),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                },
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        // The media of this read reaches the viewers in one go.
        if let Role::Publishing(p) = &mut self.role {
            p.push_frames();
        }
        result
    }

    fn event(
        &mut self,
        session: &mut ServerSession,
        e: ServerSessionEvent,
        out: &mut Outbox,
    ) -> Result<Vec<ServerSessionResult>, Close> {
        let proto = |e: rml_rtmp::sessions::ServerSessionError| Close::Protocol(e.to_string());
        match e {
            ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                session.accept_request(request_id).map_err(proto)
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => self.publish(session, request_id, &app_name, &stream_key, out),
            ServerSessionEvent::PlayStreamRequested {
                request_id,
                app_name,
                stream_key,
                stream_id,
                ..
            } => self.play(session, request_id, &app_name, &stream_key, stream_id, out),
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                if let Role::Publishing(p) = &mut self.role {
                    p.push_frames();
                    p.publisher.set_metadata(metadata_from_rtmp(&metadata));
                }
                Ok(Vec::new())
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => {
                if let Role::Publishing(p) = &mut self.role {
                    match flv::parse_video(timestamp.value, data) {
                        Ok(FlvVideo::Config(c)) => {
                            p.push_frames();
                            p.publisher.set_video_config(c);
                        }
                        Ok(FlvVideo::Frame(f)) => p.frames.push(f),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(peer = %self.peer, error = %e, "skipped a malformed video message")
                        }
                    }
                }
                Ok(Vec::new())
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => {
                if let Role::Publishing(p) = &mut self.role {
                    match flv::parse_audio(timestamp.value, data) {
                        Ok(FlvAudio::Config(c)) => {
                            p.push_frames();
                            p.publisher.set_audio_config(c);
                        }
                        Ok(FlvAudio::Frame(f)) => p.frames.push(f),
                        Ok(FlvAudio::Unsupported(_)) => {}
                        Err(e) => {
                            tracing::debug!(peer = %self.peer, error = %e, "skipped a malformed audio message")
                        }
                    }
                }
                Ok(Vec::new())
            }
            ServerSessionEvent::PublishStreamFinished { .. }
            | ServerSessionEvent::PlayStreamFinished { .. } => {
                if let Role::Publishing(p) = &mut self.role {
                    p.push_frames();
                }
                self.role = Role::Idle;
                Ok(Vec::new())
            }
            _ => Ok(Vec::new()),
        }
    }

    fn request<'a>(
        &'a self,
        action: Action,
        stream: &'a streamgate_auth::StreamName,
        token: Option<&'a str>,
    ) -> AccessRequest<'a> {
        AccessRequest {
            action,
            stream,
            token,
            peer_ip: self.peer.ip(),
            origin: None,
            referer: None,
            user_agent: self.watch.connect().flash_ver.as_deref(),
            protocol: Protocol::Rtmp,
        }
    }

    fn publish(
        &mut self,
        session: &mut ServerSession,
        request_id: u32,
        app: &str,
        key: &str,
        out: &mut Outbox,
    ) -> Result<Vec<ServerSessionResult>, Close> {
        let target = match parse_target(app, key, self.watch.connect().tc_url.as_deref()) {
            Ok(t) if matches!(self.role, Role::Idle) => t,
            Ok(_) => {
                return self.refuse(
                    session,
                    request_id,
                    "NetStream.Publish.BadName",
                    "already publishing or playing",
                    out,
                )
            }
            Err(e) => {
                return self.refuse(
                    session,
                    request_id,
                    "NetStream.Publish.BadName",
                    &e.to_string(),
                    out,
                )
            }
        };
        let decision = self.ctx.auth.authorize(
            &self.request(Action::Publish, &target.stream, target.token.as_deref()),
            SystemTime::now(),
        );
        let grant = match decision {
            Ok(g) => g,
            Err(d) => {
                self.log_denial(Action::Publish, &target.stream, d);
                let (code, text) = publish_denied(d);
                return self.refuse(session, request_id, code, &text, out);
            }
        };
        let publisher = match self.ctx.hub.publish(target.stream.as_str()) {
            Ok(p) => p,
            Err(_) => {
                self.log_denial(Action::Publish, &target.stream, Denial::StreamInUse);
                let (code, text) = publish_denied(Denial::StreamInUse);
                return self.refuse(session, request_id, code, &text, out);
            }
        };
        let results = session
            .accept_request(request_id)
            .map_err(|e| Close::Protocol(e.to_string()))?;
        tracing::info!(peer = %self.peer, stream = %target.stream, token = ?grant.token_id(), "rtmp publish started");
        self.stream = Some(("publish", target.stream.to_string()));
        let revocation = watch(grant.cancellation(), StopReason::Revoked, &self.stop);
        self.role = Role::Publishing(Box::new(Publishing {
            _grant: grant,
            _revocation: revocation,
            publisher,
            frames: Vec::new(),
        }));
        Ok(results)
    }

    fn play(
        &mut self,
        session: &mut ServerSession,
        request_id: u32,
        app: &str,
        key: &str,
        stream_id: u32,
        out: &mut Outbox,
    ) -> Result<Vec<ServerSessionResult>, Close> {
        let target = match parse_target(app, key, self.watch.connect().tc_url.as_deref()) {
            Ok(t) if matches!(self.role, Role::Idle) => t,
            Ok(_) => {
                return self.refuse(
                    session,
                    request_id,
                    "NetStream.Play.Failed",
                    "already publishing or playing",
                    out,
                )
            }
            Err(e) => {
                return self.refuse(
                    session,
                    request_id,
                    "NetStream.Play.StreamNotFound",
                    &e.to_string(),
                    out,
                )
            }
        };
        let decision = self.ctx.auth.authorize(
            &self.request(Action::Play, &target.stream, target.token.as_deref()),
            SystemTime::now(),
        );
        let grant = match decision {
            Ok(g) => g,
            Err(d) => {
                self.log_denial(Action::Play, &target.stream, d);
                let (code, text) = play_denied(d);
                return self.refuse(session, request_id, code, &text, out);
            }
        };
        let subscriber = self.ctx.hub.subscribe(target.stream.as_str());
        let viewer = Arc::new(Viewer::new(subscriber, Arc::clone(&self.writer), stream_id));
        let membership =
            self.fanouts
                .join(&self.ctx.hub, target.stream.as_str(), Arc::clone(&viewer));
        let results = session
            .accept_request(request_id)
            .map_err(|e| Close::Protocol(e.to_string()))?;
        tracing::info!(peer = %self.peer, stream = %target.stream, token = ?grant.token_id(), "rtmp play started");
        self.stream = Some(("play", target.stream.to_string()));
        let revocation = watch(grant.cancellation(), StopReason::Revoked, &self.stop);
        self.role = Role::Playing(Box::new(Playing {
            _grant: grant,
            _revocation: revocation,
            viewer,
            _membership: membership,
            stream_id,
        }));
        Ok(results)
    }

    fn log_denial(&self, action: Action, stream: &streamgate_auth::StreamName, d: Denial) {
        tracing::info!(peer = %self.peer, stream = %stream, action = ?action, reason = d.code(), "rtmp request refused");
    }

    /// Answers the request with an error status; the connection then closes.
    fn refuse(
        &mut self,
        session: &mut ServerSession,
        request_id: u32,
        code: &str,
        text: &str,
        out: &mut Outbox,
    ) -> Result<Vec<ServerSessionResult>, Close> {
        if let Ok(results) = session.reject_request(request_id, code, text) {
            for r in results {
                if let ServerSessionResult::OutboundResponse(p) = r {
                    out.push(Bytes::from(p.bytes));
                }
            }
        }
        Err(Close::Refused)
    }

    fn media(
        &mut self,
        session: &mut ServerSession,
        event: Event,
        out: &mut Outbox,
    ) -> Result<(), Close> {
        let Role::Playing(p) = &self.role else {
            return Ok(());
        };
        let stream_id = p.stream_id;
        match event {
            Event::Started(config) => {
                let meta = metadata_for_viewer(&config.config);
                match session.send_metadata(stream_id, &meta) {
                    Ok(packet) => out.push(Bytes::from(packet.bytes)),
                    Err(e) => return Err(Close::Protocol(e.to_string())),
                }
                out.push(config_bytes(&config, stream_id));
            }
            Event::Frame(shared) if shared.frame.codec == Codec::Vp8 => {
                let name = self.stream.as_ref().map_or("", |(_, name)| name.as_str());
                tracing::warn!(peer = %self.peer, stream = %name, "rtmp play refused: {VP8_NOT_PLAYABLE}");
                out.push(on_error_status(
                    stream_id,
                    "NetStream.Play.Failed",
                    VP8_NOT_PLAYABLE,
                ));
                return Err(Close::Refused);
            }
            Event::Frame(shared) => out.push(frame_bytes(&shared, stream_id)),
            Event::Ended => {
                let text = "the stream has ended";
                out.push(on_status(stream_id, "NetStream.Play.UnpublishNotify", text));
                out.push(on_status(stream_id, "NetStream.Play.Stop", text));
                return Err(Close::StreamEnded);
            }
        }
        Ok(())
    }
}
