//! One RTMP connection's protocol, without IO: bytes from the client, relay events and the
//! time go in ([`Session::receive`], [`Session::relay_event`], [`Session::handle_timeout`]);
//! bytes to write ([`Session::take_output`]) and actions for the socket task
//! ([`Session::poll_action`]) come out. The socket task ([`crate::connection`]) only moves
//! bytes and waits.
//!
//! Every client byte passes the handshake (`rml_rtmp`'s, which reads fixed sizes) and then
//! the bounded chunk reader ([`crate::dechunk`]); commands and data are decoded by the bounded
//! AMF0 decoder ([`crate::amf0`]). Before a publish or play is granted, only what leads to one
//! is accepted (control messages and the connect, createStream, publish and play family), at
//! most [`MAX_PRE_GRANT_COMMANDS`] commands and [`MAX_PRE_GRANT_MESSAGES`] messages, under a
//! deadline counted from the connection's start that no byte extends. A publisher that sends
//! no audio or video for the idle timeout is closed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use streamgate_admission::{AdmitRequest, Admitted, EndReason, PlaySession, PublishSession};
use streamgate_auth::{Action as AuthAction, Denial, Protocol, StreamName};
use streamgate_media::flv::{self, FlvAudio, FlvVideo};
use streamgate_media::{Codec, Frame, Metadata};
use streamgate_relay::{Event, Pick, Publisher, Subscriber, Unavailable};
use tokio_util::sync::CancellationToken;

use crate::amf0::{self, Amf0Error};
use crate::chunk::OUT_CHUNK_SIZE;
use crate::control::{self, user_event};
use crate::dechunk::{be_u32, msg_type, ChunkError, Dechunker, Message, MessageLimits};
use crate::encode::{config_bytes, frame_bytes};
use crate::status::{
    self, metadata_from_amf, metadata_message, on_error_status, on_status, play_denied,
    publish_denied, VP8_NOT_PLAYABLE,
};
use crate::target::parse_target;
use crate::RtmpContext;

/// Most commands a connection may send before a publish or play is granted (ffmpeg and OBS
/// send five).
pub const MAX_PRE_GRANT_COMMANDS: u32 = 32;
/// Most messages of any kind a connection may send before a grant.
pub const MAX_PRE_GRANT_MESSAGES: u32 = 256;
/// Most message streams (`createStream`) a connection may hold at once.
pub const MAX_MESSAGE_STREAMS: usize = 4;
/// Most publishes and plays one connection may start, one after the other.
pub const MAX_REQUESTS: u32 = 16;
/// Longest tcUrl or flashVer kept, in bytes.
pub const MAX_CONNECT_STRING_LEN: usize = 4096;
/// Window acknowledgement size and peer bandwidth the server announces.
const WINDOW: u32 = 2_500_000;

/// The time limits and sizes of a session; the defaults are the configuration's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// From accept to a completed handshake.
    pub handshake_timeout: Duration,
    /// From accept (or the end of the last publish or play) to a granted publish or play.
    pub grant_timeout: Duration,
    /// How long a publisher may send no audio or video.
    pub idle_timeout: Duration,
    /// Largest audio or video message (one frame) taken from a publisher.
    pub max_frame_bytes: usize,
    /// How long the frames due to viewers may gather before they are written, so that
    /// several go out in one write (zero: every change of the stream is written at once).
    pub write_coalesce: Duration,
    /// How long they gather once a stream has more than 1,024 viewers, when longer than
    /// `write_coalesce` (otherwise `write_coalesce` holds for every audience).
    pub large_audience_coalesce: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(5),
            grant_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_frame_bytes: 8 * 1024 * 1024,
            write_coalesce: Duration::ZERO,
            large_audience_coalesce: Duration::from_millis(40),
        }
    }
}

/// Why a connection ends.
#[derive(Debug, thiserror::Error)]
pub enum Close {
    /// The client closed the connection.
    #[error("closed by the client")]
    PeerClosed,
    /// A socket error.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The handshake bytes were wrong.
    #[error("bad handshake: {0}")]
    Handshake(String),
    /// The chunk stream broke a rule.
    #[error("{0}")]
    Chunk(#[from] ChunkError),
    /// A command or data message could not be decoded.
    #[error("{0}")]
    Amf0(#[from] Amf0Error),
    /// Another protocol rule was broken.
    #[error("{0}")]
    Protocol(&'static str),
    /// A per-connection limit was reached.
    #[error("limit reached: {0}")]
    Limit(&'static str),
    /// The handshake did not complete in time.
    #[error("handshake not completed in time")]
    HandshakeTimeout,
    /// No publish or play was granted in time.
    #[error("no publish or play granted in time")]
    GrantTimeout,
    /// A publisher sent no audio or video for the idle timeout.
    #[error("publisher sent no media")]
    PublisherIdle,
    /// A publish or play was refused; the client got the reason.
    #[error("request refused")]
    Refused,
    /// The grant was revoked (token deleted, disabled, expired...).
    #[error("grant revoked")]
    Revoked,
    /// The server is shutting down.
    #[error("server shutdown")]
    Shutdown,
    /// The stream a viewer played has ended.
    #[error("stream ended")]
    StreamEnded,
    /// A viewer's socket stayed full for the stall timeout.
    #[error("viewer stalled")]
    Stalled,
}

impl Close {
    /// A short name for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Close::PeerClosed => "peer_closed",
            Close::Io(_) => "io",
            Close::Handshake(_) => "bad_handshake",
            Close::Chunk(_) => "bad_chunk",
            Close::Amf0(_) => "bad_amf0",
            Close::Protocol(_) => "protocol",
            Close::Limit(_) => "limit",
            Close::HandshakeTimeout => "handshake_timeout",
            Close::GrantTimeout => "grant_timeout",
            Close::PublisherIdle => "publisher_idle",
            Close::Refused => "refused",
            Close::Revoked => "revoked",
            Close::Shutdown => "shutdown",
            Close::StreamEnded => "stream_ended",
            Close::Stalled => "stalled",
        }
    }

    /// Every kind, for metrics.
    pub const KINDS: [&'static str; 15] = [
        "peer_closed",
        "io",
        "bad_handshake",
        "bad_chunk",
        "bad_amf0",
        "protocol",
        "limit",
        "handshake_timeout",
        "grant_timeout",
        "publisher_idle",
        "refused",
        "revoked",
        "shutdown",
        "stream_ended",
        "stalled",
    ];

    /// What the admission path records for a session that ends with this close (the
    /// server's revocation, when there was one, stands over it).
    pub fn end_reason(&self) -> EndReason {
        match self {
            Close::PeerClosed | Close::Revoked | Close::Refused => EndReason::ClientClosed,
            Close::Io(_) => EndReason::ConnectionError,
            Close::Handshake(_)
            | Close::Chunk(_)
            | Close::Amf0(_)
            | Close::Protocol(_)
            | Close::Limit(_)
            | Close::HandshakeTimeout
            | Close::GrantTimeout => EndReason::ProtocolError,
            Close::PublisherIdle => EndReason::Idle,
            Close::Shutdown => EndReason::Shutdown,
            Close::StreamEnded => EndReason::StreamEnded,
            Close::Stalled => EndReason::Stalled,
        }
    }

    /// Whether the client broke a rule or a limit (logged at info, as a reason).
    pub fn is_violation(&self) -> bool {
        matches!(
            self,
            Close::Handshake(_)
                | Close::Chunk(_)
                | Close::Amf0(_)
                | Close::Protocol(_)
                | Close::Limit(_)
                | Close::HandshakeTimeout
                | Close::GrantTimeout
                | Close::PublisherIdle
        )
    }
}

/// What the socket task must do besides writing.
#[derive(Debug)]
pub enum Action {
    /// A publish or play must be decided: run the admission for this request and hand the
    /// result to [`Session::admitted`]. Until then the session takes no further message
    /// (what has arrived stays buffered).
    Admit(AdmitRequest),
    /// A publish or play was granted: the connection must close when `revoked` fires.
    Granted {
        /// Cancelled when the grant is revoked.
        revoked: CancellationToken,
    },
    /// A play started: write the relay's events for `subscriber` (see
    /// [`Session::relay_event`]) on message stream `stream_id`.
    Play {
        /// The viewer's relay subscriber.
        subscriber: Subscriber,
        /// The message stream the player asked on.
        stream_id: u32,
    },
    /// The publish or play ended and the connection stays: drop what the last
    /// `Granted` and `Play` set up.
    Ended,
}

/// What the connection is doing.
enum Role {
    /// Not publishing or playing.
    Idle,
    Publishing(Box<Publishing>),
    Playing(Box<Playing>),
}

/// A publish being read: what a publishing connection, or a pull from another node, turns
/// its audio, video and data messages into.
pub(crate) struct Publishing {
    /// The admitted publish: the relay's publisher, the stream's lease and the registration.
    pub(crate) session: PublishSession,
    stream_id: u32,
    /// Frames parsed from the current input, handed to the relay together (one wake-up of
    /// the viewers) at the end of the input or before a configuration change.
    frames: Vec<Frame>,
}

impl Publishing {
    pub(crate) fn new(session: PublishSession, stream_id: u32) -> Self {
        Self {
            session,
            stream_id,
            frames: Vec::new(),
        }
    }

    /// Hands the frames read so far to the relay.
    pub(crate) fn push_frames(&mut self) {
        if !self.frames.is_empty() {
            self.session.publisher().push_all(self.frames.drain(..));
        }
    }

    /// Reads a data message: the encoder's metadata, if it is that.
    pub(crate) fn take_data(&mut self, body: &[u8]) -> Result<(), Amf0Error> {
        if let Some(meta) = metadata_from_amf(amf0::decode_all(body)?) {
            self.push_frames();
            set_metadata(self.session.publisher(), meta);
        }
        Ok(())
    }

    /// Reads a message a pull from another node passed on ([`crate::pull::PullClient`]):
    /// metadata, or audio, video and aggregates. Data that does not decode is not the
    /// metadata, and is skipped.
    pub(crate) fn take_pulled(&mut self, m: Message, peer: &SocketAddr) {
        if m.type_id == msg_type::DATA_AMF0 {
            let _ = self.take_data(&m.payload);
        } else {
            self.take_media(m, peer);
        }
    }

    /// Reads an audio, video or aggregate message into frames and configurations.
    pub(crate) fn take_media(&mut self, m: Message, peer: &SocketAddr) {
        match m.type_id {
            msg_type::AGGREGATE => {
                for (type_id, timestamp, body) in aggregate_parts(&m.payload, m.timestamp) {
                    match type_id {
                        msg_type::AUDIO | msg_type::VIDEO => {
                            ingest(self, type_id, timestamp, body, peer)
                        }
                        // Metadata that does not decode is skipped, as in an aggregate it
                        // cannot be told from damage.
                        msg_type::DATA_AMF0 => drop(self.take_data(&body)),
                        _ => {}
                    }
                }
            }
            t => ingest(self, t, m.timestamp, m.payload, peer),
        }
    }
}

struct Playing {
    /// The admitted play (its subscriber went to the socket task).
    session: PlaySession,
    stream_id: u32,
}

/// A publish or play handed to the socket task to decide.
#[derive(Debug)]
struct Pending {
    action: AuthAction,
    stream: StreamName,
    stream_id: u32,
}

/// What the connect command said.
#[derive(Debug, Clone, Default)]
struct Connected {
    app: String,
    tc_url: Option<String>,
    flash_ver: Option<String>,
}

/// The deadline in force and what passing it means.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    Handshake(Instant),
    Grant(Instant),
    Idle(Instant),
    None,
}

/// One connection's protocol state (see the module documentation).
pub struct Session {
    peer: SocketAddr,
    limits: SessionLimits,
    /// Until the handshake completes.
    handshake: Option<Handshake>,
    chunks: Dechunker,
    connected: Option<Connected>,
    /// Message stream ids created and not deleted.
    streams: Vec<u32>,
    next_stream_id: u32,
    role: Role,
    /// Commands and messages since the last grant (or the start).
    commands: u32,
    messages: u32,
    /// Publishes and plays granted so far.
    requests: u32,
    deadline: Deadline,
    /// The start of the connection, for the grant deadline.
    grant_by: Instant,
    out: Vec<Bytes>,
    actions: VecDeque<Action>,
    /// Bytes received after the handshake, and when they were last acknowledged.
    received: u64,
    acked: u64,
    /// The client's window acknowledgement size (0: it asked for none).
    client_window: u32,
    /// Publish or play, and the stream, while granted (for log lines).
    granted: Option<(&'static str, StreamName)>,
    /// The request being decided, if one is.
    pending: Option<Pending>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("granted", &self.granted)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session for a connection from `peer` accepted at `now`.
    pub fn new(ctx: &RtmpContext, peer: SocketAddr, now: Instant) -> Self {
        let limits = ctx.limits;
        let grant_by = now + limits.grant_timeout;
        Self {
            peer,
            limits,
            handshake: Some(Handshake::new(PeerType::Server)),
            chunks: Dechunker::new(MessageLimits {
                max_media_bytes: limits.max_frame_bytes,
            }),
            connected: None,
            streams: Vec::new(),
            next_stream_id: 1,
            role: Role::Idle,
            commands: 0,
            messages: 0,
            requests: 0,
            deadline: Deadline::Handshake((now + limits.handshake_timeout).min(grant_by)),
            grant_by,
            out: Vec::new(),
            actions: VecDeque::new(),
            received: 0,
            acked: 0,
            client_window: 0,
            granted: None,
            pending: None,
        }
    }

    /// Publish or play, and the stream, while one is granted.
    pub fn granted(&self) -> Option<(&'static str, &StreamName)> {
        self.granted.as_ref().map(|(what, name)| (*what, name))
    }

    /// Whether the connection is playing.
    pub fn is_playing(&self) -> bool {
        matches!(self.role, Role::Playing(_))
    }

    /// Whether the connection is publishing.
    pub fn is_publishing(&self) -> bool {
        matches!(self.role, Role::Publishing(_))
    }

    /// Moves the bytes to write, in order, to the end of `out`.
    pub fn take_output(&mut self, out: &mut Vec<Bytes>) {
        out.append(&mut self.out);
    }

    /// The next action for the socket task.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Session::handle_timeout`] must next be called, if ever.
    pub fn timeout(&self) -> Option<Instant> {
        match self.deadline {
            Deadline::Handshake(t) | Deadline::Grant(t) | Deadline::Idle(t) => Some(t),
            Deadline::None => None,
        }
    }

    /// Ends the connection if its deadline has passed by `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Close> {
        match self.deadline {
            Deadline::Handshake(t) if now >= t => Err(Close::HandshakeTimeout),
            Deadline::Grant(t) if now >= t => Err(Close::GrantTimeout),
            Deadline::Idle(t) if now >= t => Err(Close::PublisherIdle),
            _ => Ok(()),
        }
    }

    /// Takes bytes from the client. An error means the connection must close once the
    /// output is written (a refusal's status, for instance).
    pub fn receive(&mut self, bytes: &[u8], now: Instant) -> Result<(), Close> {
        let result = self.receive_inner(bytes, now);
        // The media of this input reaches the viewers in one go.
        if let Role::Publishing(p) = &mut self.role {
            p.push_frames();
        }
        result
    }

    fn receive_inner(&mut self, bytes: &[u8], now: Instant) -> Result<(), Close> {
        let mut bytes = bytes;
        let rest;
        if let Some(hs) = self.handshake.as_mut() {
            match hs.process_bytes(bytes) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    self.out.push(Bytes::from(response_bytes));
                    return Ok(());
                }
                Ok(HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                }) => {
                    self.out.push(Bytes::from(response_bytes));
                    self.handshake = None;
                    self.deadline = Deadline::Grant(self.grant_by);
                    rest = remaining_bytes;
                    bytes = &rest;
                }
                Err(e) => return Err(Close::Handshake(format!("{e:?}"))),
            }
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.received += bytes.len() as u64;
        self.chunks.push(bytes);
        self.take_messages(now)?;
        if self.client_window > 0 && self.received - self.acked >= u64::from(self.client_window) {
            self.acked = self.received;
            self.out.push(control::acknowledgement(self.received));
        }
        Ok(())
    }

    /// Handles the buffered messages, until one waits for an admission.
    fn take_messages(&mut self, now: Instant) -> Result<(), Close> {
        while self.pending.is_none() {
            let Some(m) = self.chunks.next_message()? else {
                break;
            };
            self.message(m, now)?;
        }
        Ok(())
    }

    /// Whether a publish or play is being decided (see [`Action::Admit`]); the socket task
    /// reads nothing meanwhile.
    pub fn is_deciding(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes the decision of the request of the last [`Action::Admit`], then the messages
    /// that arrived after it. An error means the connection must close once the output is
    /// written (a refusal's status, for instance).
    pub fn admitted(
        &mut self,
        decision: Result<Admitted, Denial>,
        now: Instant,
    ) -> Result<(), Close> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        match (pending.action, decision) {
            (AuthAction::Publish, Ok(Admitted::Publish(session))) => {
                self.start_publish(session, pending.stream, pending.stream_id, now)
            }
            (AuthAction::Play, Ok(Admitted::Play(session))) => {
                self.start_play(session, pending.stream, pending.stream_id)
            }
            // The admission answers a publish with a publish and a play with a play.
            (_, Ok(_)) => {
                return Err(self.refuse(pending.stream_id, "NetStream.Play.Failed", "refused"));
            }
            (AuthAction::Publish, Err(d)) => {
                let (code, text) = publish_denied(d);
                return Err(self.refuse(pending.stream_id, code, &text));
            }
            (AuthAction::Play, Err(d)) => {
                let (code, text) = play_denied(d);
                return Err(self.refuse(pending.stream_id, code, &text));
            }
        }
        let result = self.take_messages(now);
        if let Role::Publishing(p) = &mut self.role {
            p.push_frames();
        }
        result
    }

    /// Records why the connection closes with the admitted session, if there is one, and
    /// returns the reason that stands (the server's revocation wins over the close).
    pub fn finish(&mut self, close: &Close) -> Option<EndReason> {
        let reason = close.end_reason();
        match &mut self.role {
            Role::Idle => None,
            Role::Publishing(p) => Some(p.session.set_end_reason(reason)),
            Role::Playing(p) => Some(p.session.set_end_reason(reason)),
        }
    }

    /// For a session the server ended: the status that tells the client why, queued for
    /// writing (publishers get `NetStream.Publish.Unauthorized`, viewers
    /// `NetStream.Play.Failed`, both with the reason as description).
    pub fn revoked(&mut self) -> Option<EndReason> {
        let (stream_id, code, reason) = match &self.role {
            Role::Idle => return None,
            Role::Publishing(p) => (
                p.stream_id,
                "NetStream.Publish.Unauthorized",
                p.session.end_reason(),
            ),
            Role::Playing(p) => (p.stream_id, "NetStream.Play.Failed", p.session.end_reason()),
        };
        self.out.push(on_error_status(
            stream_id,
            code,
            &format!("session ended: {reason}"),
        ));
        Some(reason)
    }

    fn is_granted(&self) -> bool {
        !matches!(self.role, Role::Idle)
    }

    fn message(&mut self, m: Message, now: Instant) -> Result<(), Close> {
        if !self.is_granted() {
            self.messages += 1;
            if self.messages > MAX_PRE_GRANT_MESSAGES {
                return Err(Close::Limit("too many messages before a publish or play"));
            }
        }
        match m.type_id {
            msg_type::WINDOW_ACK_SIZE => {
                self.client_window = be_u32(&m.payload).unwrap_or(0);
            }
            msg_type::USER_CONTROL => self.user_control(&m.payload),
            msg_type::COMMAND_AMF0 => self.command(&m.payload, m.stream_id, now)?,
            // An AMF3 command is AMF0 after a format byte.
            msg_type::COMMAND_AMF3 => {
                self.command(m.payload.get(1..).unwrap_or_default(), m.stream_id, now)?
            }
            msg_type::DATA_AMF0 | msg_type::DATA_AMF3 => {
                let body = match m.type_id {
                    msg_type::DATA_AMF3 => m.payload.slice(1.min(m.payload.len())..),
                    _ => m.payload,
                };
                self.data(&body)?
            }
            msg_type::AUDIO | msg_type::VIDEO | msg_type::AGGREGATE => self.media(m, now)?,
            // Set Chunk Size and Abort were applied by the reader; acknowledgements and the
            // client's bandwidth wish need nothing.
            _ => {}
        }
        Ok(())
    }

    fn user_control(&mut self, payload: &[u8]) {
        let event = match payload {
            [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
            _ => return,
        };
        if event == user_event::PING_REQUEST {
            let value = payload.get(2..).and_then(be_u32).unwrap_or(0);
            self.out
                .push(control::user_control(user_event::PING_RESPONSE, value));
        }
    }

    fn command(&mut self, payload: &[u8], stream_id: u32, now: Instant) -> Result<(), Close> {
        if !self.is_granted() {
            self.commands += 1;
            if self.commands > MAX_PRE_GRANT_COMMANDS {
                return Err(Close::Limit("too many commands before a publish or play"));
            }
        }
        let mut values = amf0::decode_all(payload)?.into_iter();
        let Some(Amf0Value::Utf8String(name)) = values.next() else {
            return Err(Close::Protocol("command without a name"));
        };
        let txn = match values.next() {
            Some(Amf0Value::Number(n)) => n,
            _ => 0.0,
        };
        let object = values.next().unwrap_or(Amf0Value::Null);
        let args: Vec<Amf0Value> = values.collect();
        if self.connected.is_none() {
            if name != "connect" {
                return Err(Close::Protocol("a command before connect"));
            }
            return self.connect(txn, object);
        }
        let first_string = || match args.first() {
            Some(Amf0Value::Utf8String(s)) => Some(s.as_str()),
            _ => None,
        };
        match name.as_str() {
            "connect" => Err(Close::Protocol("a second connect")),
            "createStream" => self.create_stream(txn),
            "publish" => {
                let key = first_string().unwrap_or_default().to_owned();
                self.ask(AuthAction::Publish, &key, stream_id)
            }
            "play" => {
                let key = first_string().unwrap_or_default().to_owned();
                self.ask(AuthAction::Play, &key, stream_id)
            }
            "deleteStream" => {
                let id = match args.first() {
                    Some(Amf0Value::Number(n)) if *n >= 0.0 && *n <= f64::from(u32::MAX) => {
                        *n as u32
                    }
                    _ => return Ok(()),
                };
                self.streams.retain(|s| *s != id);
                self.end_role_on(id, now);
                Ok(())
            }
            "closeStream" | "FCUnpublish" => {
                self.end_role_on(stream_id, now);
                Ok(())
            }
            // releaseStream, FCPublish, FCSubscribe, getStreamLength, _checkbw, receiveAudio,
            // receiveVideo, pause and answers to our own calls need no reply here.
            _ => Ok(()),
        }
    }

    fn connect(&mut self, txn: f64, object: Amf0Value) -> Result<(), Close> {
        let Amf0Value::Object(props) = object else {
            return Err(Close::Protocol("connect without a command object"));
        };
        let text = |key: &str| match props.get(key) {
            Some(Amf0Value::Utf8String(s)) if s.len() <= MAX_CONNECT_STRING_LEN => Some(s.clone()),
            _ => None,
        };
        let Some(app) = text("app") else {
            return Err(Close::Protocol("connect without an app"));
        };
        let object_encoding = match props.get("objectEncoding") {
            Some(Amf0Value::Number(n)) if *n == 3.0 => 3.0,
            _ => 0.0,
        };
        self.connected = Some(Connected {
            app,
            tc_url: text("tcUrl"),
            flash_ver: text("flashVer"),
        });
        self.out.push(control::window_ack_size(WINDOW));
        self.out.push(control::set_peer_bandwidth(WINDOW));
        self.out.push(control::set_chunk_size(OUT_CHUNK_SIZE));
        self.out.push(status::connect_result(txn, object_encoding));
        Ok(())
    }

    fn create_stream(&mut self, txn: f64) -> Result<(), Close> {
        if self.streams.len() >= MAX_MESSAGE_STREAMS {
            return Err(Close::Limit("too many message streams"));
        }
        let id = self.next_stream_id;
        self.next_stream_id = self.next_stream_id.wrapping_add(1).max(1);
        self.streams.push(id);
        self.out.push(status::result(
            txn,
            Amf0Value::Null,
            Amf0Value::Number(f64::from(id)),
        ));
        Ok(())
    }

    /// Checks what every publish or play needs; on failure queues the refusal and says why.
    fn check_request(&mut self, stream_id: u32) -> Result<(), &'static str> {
        if self.is_granted() {
            return Err("already publishing or playing");
        }
        if !self.streams.contains(&stream_id) {
            return Err("no such stream: call createStream first");
        }
        if self.requests >= MAX_REQUESTS {
            return Err("too many publishes and plays on one connection");
        }
        Ok(())
    }

    /// Hands a publish or play of `key` to the socket task to decide.
    fn ask(&mut self, action: AuthAction, key: &str, stream_id: u32) -> Result<(), Close> {
        let (refused, not_found) = match action {
            AuthAction::Publish => ("NetStream.Publish.BadName", "NetStream.Publish.BadName"),
            AuthAction::Play => ("NetStream.Play.Failed", "NetStream.Play.StreamNotFound"),
        };
        if let Err(why) = self.check_request(stream_id) {
            return Err(self.refuse(stream_id, refused, why));
        }
        let target = match self.target(key) {
            Ok(t) => t,
            Err(e) => return Err(self.refuse(stream_id, not_found, &e.to_string())),
        };
        let flash_ver = self.connected.as_ref().and_then(|c| c.flash_ver.clone());
        let request = AdmitRequest::new(
            Protocol::Rtmp,
            action,
            target.stream.clone(),
            target.token,
            self.peer.ip(),
        )
        .with_headers(None, None, flash_ver);
        self.pending = Some(Pending {
            action,
            stream: target.stream,
            stream_id,
        });
        self.actions.push_back(Action::Admit(request));
        Ok(())
    }

    fn refuse(&mut self, stream_id: u32, code: &str, text: &str) -> Close {
        self.out.push(on_error_status(stream_id, code, text));
        Close::Refused
    }

    fn target(&self, key: &str) -> Result<crate::target::Target, crate::target::TargetError> {
        let c = self.connected.as_ref();
        parse_target(
            c.map_or("", |c| c.app.as_str()),
            key,
            c.and_then(|c| c.tc_url.as_deref()),
        )
    }

    fn start_publish(
        &mut self,
        session: PublishSession,
        stream: StreamName,
        stream_id: u32,
        now: Instant,
    ) {
        tracing::info!(peer = %self.peer, stream = %stream, token = ?session.grant().token_id(), "rtmp publish started");
        self.out
            .push(control::user_control(user_event::STREAM_BEGIN, stream_id));
        self.out.push(on_status(
            stream_id,
            "NetStream.Publish.Start",
            &format!("{stream} is now published"),
        ));
        self.actions.push_back(Action::Granted {
            revoked: session.end_signal().token(),
        });
        self.granted = Some(("publish", stream));
        self.role = Role::Publishing(Box::new(Publishing::new(session, stream_id)));
        self.requests += 1;
        self.deadline = Deadline::Idle(now + self.limits.idle_timeout);
    }

    fn start_play(&mut self, mut session: PlaySession, stream: StreamName, stream_id: u32) {
        let Some(subscriber) = session.take_subscriber() else {
            return;
        };
        tracing::info!(peer = %self.peer, stream = %stream, token = ?session.grant().token_id(), "rtmp play started");
        self.out.push(on_status(
            stream_id,
            "NetStream.Play.Reset",
            "Playing and resetting",
        ));
        self.out
            .push(control::user_control(user_event::STREAM_BEGIN, stream_id));
        self.out.push(on_status(
            stream_id,
            "NetStream.Play.Start",
            &format!("Started playing {stream}"),
        ));
        self.out.extend(status::play_data_start(stream_id));
        self.actions.push_back(Action::Granted {
            revoked: session.end_signal().token(),
        });
        self.actions.push_back(Action::Play {
            subscriber,
            stream_id,
        });
        self.granted = Some(("play", stream));
        self.role = Role::Playing(Box::new(Playing { session, stream_id }));
        self.requests += 1;
        self.deadline = Deadline::None;
    }

    /// Ends the publish or play on message stream `stream_id`, if there is one.
    fn end_role_on(&mut self, stream_id: u32, now: Instant) {
        let on = match &self.role {
            Role::Idle => false,
            Role::Publishing(p) => p.stream_id == stream_id,
            Role::Playing(p) => p.stream_id == stream_id,
        };
        if on {
            self.end_role(now);
        }
    }

    fn end_role(&mut self, now: Instant) {
        if let Role::Publishing(p) = &mut self.role {
            p.push_frames();
        }
        if let Some((what, stream)) = self.granted.take() {
            tracing::info!(peer = %self.peer, stream = %stream, "rtmp {what} ended by the client");
        }
        self.role = Role::Idle;
        self.actions.push_back(Action::Ended);
        self.commands = 0;
        self.messages = 0;
        self.grant_by = now + self.limits.grant_timeout;
        self.deadline = Deadline::Grant(self.grant_by);
    }

    fn data(&mut self, body: &[u8]) -> Result<(), Close> {
        let Role::Publishing(p) = &mut self.role else {
            if self.is_granted() {
                return Ok(());
            }
            return Err(Close::Protocol("a data message before publish"));
        };
        Ok(p.take_data(body)?)
    }

    fn media(&mut self, m: Message, now: Instant) -> Result<(), Close> {
        let Role::Publishing(p) = &mut self.role else {
            return Err(Close::Protocol(
                "audio or video on a connection that is not publishing",
            ));
        };
        if m.stream_id != p.stream_id {
            return Ok(());
        }
        self.deadline = Deadline::Idle(now + self.limits.idle_timeout);
        p.take_media(m, &self.peer);
        Ok(())
    }

    /// The bytes a viewer gets for a relay event it could not be sent by its fan-out shard
    /// (see [`crate::fanout`]). An error ends the connection once the output is written.
    pub fn relay_event(&mut self, event: Event) -> Result<(), Close> {
        let Role::Playing(p) = &self.role else {
            return Ok(());
        };
        let stream_id = p.stream_id;
        match event {
            Event::Started(_, selection)
                if matches!(
                    selection.video,
                    Pick::Unavailable(Unavailable::NotCarried(_))
                ) =>
            {
                if let Role::Playing(p) = &mut self.role {
                    p.session.set_end_reason(EndReason::Unsupported);
                }
                let name = self.granted.as_ref().map(|(_, n)| n.as_str()).unwrap_or("");
                tracing::warn!(peer = %self.peer, stream = %name, "rtmp play refused: {VP8_NOT_PLAYABLE}");
                self.out.push(on_error_status(
                    stream_id,
                    "NetStream.Play.Failed",
                    VP8_NOT_PLAYABLE,
                ));
                return Err(Close::Refused);
            }
            Event::Started(config, selection) => {
                if let Pick::Unavailable(why) = selection.audio {
                    let name = self.granted.as_ref().map(|(_, n)| n.as_str()).unwrap_or("");
                    tracing::warn!(peer = %self.peer, stream = %name, reason = ?why, "rtmp viewer gets no sound");
                }
                self.out.push(metadata_message(stream_id, &config.config));
                self.out.push(config_bytes(&config, stream_id));
            }
            Event::Frame(shared) => self.out.push(frame_bytes(&shared, stream_id)),
            Event::Ended => {
                let text = "the stream has ended";
                self.out
                    .push(on_status(stream_id, "NetStream.Play.UnpublishNotify", text));
                self.out
                    .push(on_status(stream_id, "NetStream.Play.Stop", text));
                return Err(Close::StreamEnded);
            }
        }
        Ok(())
    }
}

/// Sets the encoder's metadata; the codecs it announces are the tracks the relay waits for
/// before the publish's first frames reach viewers.
fn set_metadata(publisher: &Publisher, meta: Metadata) {
    for codec in [meta.video_codec, meta.audio_codec].into_iter().flatten() {
        publisher.expect(codec);
    }
    publisher.set_metadata(meta);
}

/// Parses an audio or video message into the publisher's configuration or frames.
fn ingest(p: &mut Publishing, type_id: u8, timestamp: u32, body: Bytes, peer: &SocketAddr) {
    if type_id == msg_type::VIDEO {
        match flv::parse_video(timestamp, body) {
            Ok(FlvVideo::Config(c)) => {
                p.push_frames();
                p.session.publisher().expect(Codec::H264);
                p.session.publisher().set_video_config(c);
            }
            Ok(FlvVideo::Frame(f)) => p.frames.push(f),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "skipped a malformed video message")
            }
        }
    } else {
        match flv::parse_audio(timestamp, body) {
            Ok(FlvAudio::Config(c)) => {
                p.push_frames();
                p.session.publisher().expect(Codec::Aac);
                p.session.publisher().set_audio_config(c);
            }
            Ok(FlvAudio::Frame(f)) => p.frames.push(f),
            Ok(FlvAudio::Unsupported(_)) => {}
            Err(e) => {
                tracing::debug!(peer = %peer, error = %e, "skipped a malformed audio message")
            }
        }
    }
}

/// The FLV tags of an aggregate message: (type, timestamp, body). The tags' own timestamps
/// are moved so that the first one has the message's timestamp. Stops at the first tag that
/// does not fit.
fn aggregate_parts(payload: &Bytes, timestamp: u32) -> Vec<(u8, u32, Bytes)> {
    /// Tag header (11 bytes) and the trailing previous-tag-size (4 bytes).
    const HEADER: usize = 11;
    const TRAILER: usize = 4;
    let mut out = Vec::new();
    let mut at = 0;
    let mut offset: Option<u32> = None;
    while let Some(h) = payload.get(at..at + HEADER) {
        let Ok([kind, l1, l2, l3, t1, t2, t3, t0, ..]) = <[u8; HEADER]>::try_from(h) else {
            break;
        };
        let type_id = kind & 0x1F;
        let len = u32::from_be_bytes([0, l1, l2, l3]) as usize;
        let ts = u32::from_be_bytes([t0, t1, t2, t3]);
        let start = at + HEADER;
        let Some(body) = payload
            .get(start..start + len)
            .map(|_| payload.slice(start..start + len))
        else {
            break;
        };
        let shift = *offset.get_or_insert(timestamp.wrapping_sub(ts));
        out.push((type_id, ts.wrapping_add(shift), body));
        at = start + len + TRAILER;
    }
    out
}

#[cfg(test)]
mod tests;
