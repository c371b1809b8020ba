//! Pulling a stream from the node of the cluster that publishes it (its origin), as an RTMP
//! viewer, into this node's relay.
//!
//! [`PullClient`] is the viewer's side of RTMP without IO: the handshake (`rml_rtmp`'s, which
//! reads fixed sizes), `connect`, `createStream` and `play` with the cluster's proof as the
//! token, then the origin's audio, video and data messages, read with the same bounded chunk
//! reader and AMF0 decoder as every client's bytes. [`run`] drives it on a socket and hands the
//! media to a [`Publishing`], as a publishing connection does, until the origin's stream ends,
//! the relayed publish is ended here, nobody here watches any more, or the node shuts down.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rml_amf0::Amf0Value;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use streamgate_admission::{EndReason, PublishSession};
use streamgate_auth::StreamName;
use streamgate_relay::Hub;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::amf0::{self, Amf0Error};
use crate::chunk::{msg_type as out_type, DATA_CSID, OUT_CHUNK_SIZE};
use crate::control;
use crate::dechunk::{be_u32, msg_type, ChunkError, Dechunker, Message, MessageLimits};
use crate::session::Publishing;
use crate::status::{amf0_message, text, COMMAND_CSID};

/// How long connecting to the origin may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the origin may take from the connection to the start of the stream.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pull goes on once nobody here watches the stream.
pub const UNWATCHED_LINGER: Duration = Duration::from_secs(2);
/// How long the origin may send nothing while the stream plays.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most messages taken before the stream starts.
const MAX_MESSAGES_BEFORE_START: u32 = 256;
/// How often a pull looks at its audience and its deadlines.
const TICK: Duration = Duration::from_millis(250);

/// Why a pull ended.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The origin could not be reached.
    #[error("cannot reach the origin: {0}")]
    Connect(std::io::Error),
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The handshake failed.
    #[error("bad handshake: {0}")]
    Handshake(String),
    /// The chunk stream broke a rule.
    #[error("{0}")]
    Chunk(#[from] ChunkError),
    /// A command did not decode.
    #[error("{0}")]
    Amf0(#[from] Amf0Error),
    /// The origin refused the pull.
    #[error("the origin refused: {0}")]
    Refused(String),
    /// The origin broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The origin did not start the stream, or went silent, in time.
    #[error("the origin did not answer in time")]
    Timeout,
}

/// Where a pull stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Handshake,
    /// `connect` sent.
    Connecting,
    /// `createStream` sent.
    Creating,
    /// `play` sent on this message stream.
    Starting(u32),
    /// The stream plays on this message stream.
    Playing(u32),
    /// The origin's stream ended.
    Ended,
}

/// The viewer's side of RTMP, without IO (see the module documentation).
pub struct PullClient {
    handshake: Handshake,
    chunks: Dechunker,
    stage: Stage,
    app: String,
    tc_url: String,
    key: String,
    out: Vec<Bytes>,
    /// Bytes received after the handshake, and when they were last acknowledged.
    received: u64,
    acked: u64,
    window: u32,
    messages: u32,
}

impl std::fmt::Debug for PullClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullClient")
            .field("stage", &self.stage)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

const CONNECT_TXN: f64 = 1.0;
const CREATE_STREAM_TXN: f64 = 2.0;

impl PullClient {
    /// A client that plays `stream` with `token` from the origin at `origin` (for its
    /// `tcUrl`), taking media messages of at most `max_media_bytes`. The first bytes to send
    /// are ready in [`PullClient::take_output`].
    pub fn new(
        origin: &str,
        stream: &StreamName,
        token: &str,
        max_media_bytes: usize,
    ) -> Result<Self, PullError> {
        let (app, key) = stream
            .as_str()
            .split_once('/')
            .unwrap_or(("", stream.as_str()));
        let mut handshake = Handshake::new(PeerType::Client);
        let hello = handshake
            .generate_outbound_p0_and_p1()
            .map_err(|e| PullError::Handshake(format!("{e:?}")))?;
        Ok(Self {
            handshake,
            chunks: Dechunker::new(MessageLimits { max_media_bytes }),
            stage: Stage::Handshake,
            app: app.to_owned(),
            tc_url: format!("rtmp://{origin}/{app}"),
            key: format!("{key}?token={token}"),
            out: vec![Bytes::from(hello)],
            received: 0,
            acked: 0,
            window: 0,
            messages: 0,
        })
    }

    /// Bytes to send to the origin.
    pub fn take_output(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.out)
    }

    /// Whether the stream plays.
    pub fn is_playing(&self) -> bool {
        matches!(self.stage, Stage::Playing(_))
    }

    /// Whether the origin's stream ended.
    pub fn has_ended(&self) -> bool {
        self.stage == Stage::Ended
    }

    /// Reads the origin's bytes; the audio, video and data messages of the stream, once it
    /// plays, in order.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<Message>, PullError> {
        let mut bytes = bytes;
        let rest;
        if self.stage == Stage::Handshake {
            match self.handshake.process_bytes(bytes) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    self.out.push(Bytes::from(response_bytes));
                    return Ok(Vec::new());
                }
                Ok(HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                }) => {
                    self.out.push(Bytes::from(response_bytes));
                    self.out.push(control::set_chunk_size(OUT_CHUNK_SIZE));
                    self.out.push(self.connect_command());
                    self.stage = Stage::Connecting;
                    rest = remaining_bytes;
                    bytes = &rest;
                }
                Err(e) => return Err(PullError::Handshake(format!("{e:?}"))),
            }
        }
        self.received += bytes.len() as u64;
        self.chunks.push(bytes);
        let mut media = Vec::new();
        while let Some(m) = self.chunks.next_message()? {
            if let Some(m) = self.message(m)? {
                media.push(m);
            }
            if self.stage == Stage::Ended {
                break;
            }
        }
        if self.window > 0 && self.received - self.acked >= u64::from(self.window) {
            self.acked = self.received;
            self.out.push(control::acknowledgement(self.received));
        }
        Ok(media)
    }

    fn message(&mut self, m: Message) -> Result<Option<Message>, PullError> {
        if let Stage::Playing(stream_id) = self.stage {
            match m.type_id {
                msg_type::AUDIO | msg_type::VIDEO | msg_type::AGGREGATE | msg_type::DATA_AMF0
                    if m.stream_id == stream_id =>
                {
                    return Ok(Some(m));
                }
                _ => {}
            }
        } else {
            self.messages += 1;
            if self.messages > MAX_MESSAGES_BEFORE_START {
                return Err(PullError::Protocol(
                    "too many messages before the stream started",
                ));
            }
        }
        match m.type_id {
            msg_type::WINDOW_ACK_SIZE => {
                self.window = be_u32(&m.payload).ok_or(PullError::Protocol("bad window size"))?;
            }
            msg_type::COMMAND_AMF0 => self.command(&amf0::decode_all(&m.payload)?)?,
            _ => {}
        }
        Ok(None)
    }

    fn command(&mut self, values: &[Amf0Value]) -> Result<(), PullError> {
        let name = match values.first() {
            Some(Amf0Value::Utf8String(s)) => s.as_str(),
            _ => return Ok(()),
        };
        let txn = match values.get(1) {
            Some(Amf0Value::Number(n)) => *n,
            _ => 0.0,
        };
        match (name, self.stage) {
            ("_result", Stage::Connecting) if txn == CONNECT_TXN => {
                self.out.push(amf0_message(
                    COMMAND_CSID,
                    out_type::COMMAND_AMF0,
                    0,
                    &[
                        text("createStream"),
                        Amf0Value::Number(CREATE_STREAM_TXN),
                        Amf0Value::Null,
                    ],
                ));
                self.stage = Stage::Creating;
            }
            ("_result", Stage::Creating) if txn == CREATE_STREAM_TXN => {
                let stream_id = match values.get(3) {
                    Some(Amf0Value::Number(n)) if *n >= 0.0 && *n <= f64::from(u32::MAX) => {
                        *n as u32
                    }
                    _ => {
                        return Err(PullError::Protocol(
                            "createStream answered without a stream",
                        ))
                    }
                };
                self.out.push(amf0_message(
                    DATA_CSID,
                    out_type::COMMAND_AMF0,
                    stream_id,
                    &[
                        text("play"),
                        Amf0Value::Number(0.0),
                        Amf0Value::Null,
                        text(&self.key),
                    ],
                ));
                self.stage = Stage::Starting(stream_id);
            }
            ("_error", _) => return Err(PullError::Refused(describe(values.get(3)))),
            ("onStatus", _) => {
                let info = values.get(3);
                let field = |key: &str| match info {
                    Some(Amf0Value::Object(o)) => match o.get(key) {
                        Some(Amf0Value::Utf8String(s)) => s.as_str(),
                        _ => "",
                    },
                    _ => "",
                };
                if field("level") == "error" {
                    return Err(PullError::Refused(describe(info)));
                }
                match (field("code"), self.stage) {
                    ("NetStream.Play.Start", Stage::Starting(id)) => {
                        self.stage = Stage::Playing(id);
                    }
                    (
                        "NetStream.Play.UnpublishNotify" | "NetStream.Play.Stop",
                        Stage::Playing(_),
                    ) => {
                        self.stage = Stage::Ended;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn connect_command(&self) -> Bytes {
        let object = Amf0Value::Object(
            [
                ("app", text(&self.app)),
                ("type", text("nonprivate")),
                ("flashVer", text("streamgate-edge")),
                ("tcUrl", text(&self.tc_url)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        );
        amf0_message(
            COMMAND_CSID,
            out_type::COMMAND_AMF0,
            0,
            &[text("connect"), Amf0Value::Number(CONNECT_TXN), object],
        )
    }
}

/// The description of a status or error object, cut short.
fn describe(info: Option<&Amf0Value>) -> String {
    let text = match info {
        Some(Amf0Value::Object(o)) => match (o.get("description"), o.get("code")) {
            (Some(Amf0Value::Utf8String(d)), _) => d.as_str(),
            (None, Some(Amf0Value::Utf8String(c))) => c.as_str(),
            _ => "no reason given",
        },
        _ => "no reason given",
    };
    text.chars().take(200).collect()
}

/// How a pull that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullEnd {
    /// The origin's stream ended.
    Ended,
    /// Nobody here watched the stream for [`UNWATCHED_LINGER`].
    Unwatched,
    /// The relayed publish was ended here.
    Revoked,
    /// The node shuts down.
    Shutdown,
}

/// Pulls `stream` from `origin` with `proof` into `session`, this node's relayed publish,
/// until it ends (see the module documentation).
pub async fn run(
    origin: SocketAddr,
    stream: &StreamName,
    proof: &str,
    session: PublishSession,
    hub: &Hub,
    max_media_bytes: usize,
    stop: &CancellationToken,
) -> Result<PullEnd, PullError> {
    let mut publishing = Publishing::new(session, 0);
    let result = pull(
        origin,
        stream,
        proof,
        &mut publishing,
        hub,
        max_media_bytes,
        stop,
    )
    .await;
    publishing.push_frames();
    publishing.session.set_end_reason(match &result {
        Ok(PullEnd::Ended | PullEnd::Unwatched) => EndReason::StreamEnded,
        Ok(PullEnd::Revoked) => EndReason::ClientClosed,
        Ok(PullEnd::Shutdown) => EndReason::Shutdown,
        Err(PullError::Connect(_) | PullError::Io(_) | PullError::Timeout) => {
            EndReason::ConnectionError
        }
        Err(_) => EndReason::ProtocolError,
    });
    result
}

async fn pull(
    origin: SocketAddr,
    stream: &StreamName,
    proof: &str,
    publishing: &mut Publishing,
    hub: &Hub,
    max_media_bytes: usize,
    stop: &CancellationToken,
) -> Result<PullEnd, PullError> {
    let mut socket = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(origin))
        .await
        .map_err(|_| PullError::Timeout)?
        .map_err(PullError::Connect)?;
    socket.set_nodelay(true)?;
    let mut client = PullClient::new(&origin.to_string(), stream, proof, max_media_bytes)?;
    let revoked = publishing.session.end_signal().token();
    let started = Instant::now();
    let mut heard = Instant::now();
    let mut unwatched_since: Option<Instant> = None;
    let mut tick = tokio::time::interval(TICK);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        for bytes in client.take_output() {
            // A few small messages (the commands, acknowledgements): an origin that reads
            // none of them for this long is as good as gone.
            tokio::time::timeout(IDLE_TIMEOUT, socket.write_all(&bytes))
                .await
                .map_err(|_| PullError::Timeout)??;
        }
        buf.clear();
        tokio::select! {
            _ = stop.cancelled() => return Ok(PullEnd::Shutdown),
            _ = revoked.cancelled() => return Ok(PullEnd::Revoked),
            read = socket.read_buf(&mut buf) => {
                if read? == 0 {
                    return if client.is_playing() {
                        Ok(PullEnd::Ended)
                    } else {
                        Err(PullError::Protocol("the origin closed the connection"))
                    };
                }
                heard = Instant::now();
                for m in client.receive(&buf)? {
                    publishing.take_pulled(m, &origin);
                }
                publishing.push_frames();
                if client.has_ended() {
                    return Ok(PullEnd::Ended);
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                if !client.is_playing() && now.duration_since(started) > START_TIMEOUT
                    || now.duration_since(heard) > IDLE_TIMEOUT
                {
                    return Err(PullError::Timeout);
                }
                let watched = hub
                    .stream_stats(stream.as_str())
                    .is_some_and(|s| s.subscribers > 0);
                if watched {
                    unwatched_since = None;
                } else if now.duration_since(*unwatched_since.get_or_insert(now)) >= UNWATCHED_LINGER {
                    return Ok(PullEnd::Unwatched);
                }
            }
        }
    }
}
