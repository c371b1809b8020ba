//! The WebSocket endpoint: one loop per browser socket that parses messages, admits publish
//! and play requests through the auth decision, and routes the rest to its sessions.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use streamgate_admission::{AdmitRequest, Admitted};
use streamgate_auth::{Action, Protocol};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::message::{self, Command, Definition, MessageError, Reply, MAX_MESSAGE_BYTES};
use crate::name::{denial_definition, resolve};
use crate::session::{Control, Outbox, Outgoing, CONTROL_CAPACITY, OUTBOX_CAPACITY};
use crate::{play, publish, WebRtcContext};

/// Most publish and play sessions one socket may hold at once.
pub const MAX_SESSIONS_PER_SOCKET: usize = 8;

/// Largest WebSocket message the transport reads at all; anything between
/// [`MAX_MESSAGE_BYTES`] and this is answered with `messageTooLarge` and a close, anything
/// larger closes the socket at once.
const TRANSPORT_MESSAGE_LIMIT: usize = 1024 * 1024;

/// How long `stop` (or the end of a socket) waits for a session to release its grant.
const STOP_WAIT: Duration = Duration::from_secs(3);

/// WebSocket close code for a message that is too big (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code for a socket closed for its silence (RFC 6455: policy violation).
const CLOSE_IDLE: u16 = 1008;

/// Who is on the other end of a socket.
#[derive(Debug, Clone)]
struct Client {
    ip: IpAddr,
    origin: Option<String>,
    referer: Option<String>,
    user_agent: Option<String>,
    /// The `<App>` of `/<App>/websocket`.
    app: Option<String>,
}

/// `GET /websocket`.
pub(crate) async fn root(
    State(ctx): State<Arc<WebRtcContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(ctx, peer, &headers, None, ws)
}

/// `GET /<App>/websocket`.
pub(crate) async fn app(
    State(ctx): State<Arc<WebRtcContext>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(app): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(ctx, peer, &headers, Some(app), ws)
}

fn upgrade(
    ctx: Arc<WebRtcContext>,
    peer: SocketAddr,
    headers: &HeaderMap,
    app: Option<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let client = Client {
        ip: peer.ip(),
        origin: header("origin"),
        referer: header("referer"),
        user_agent: header("user-agent"),
        app,
    };
    ws.max_message_size(TRANSPORT_MESSAGE_LIMIT)
        .max_frame_size(TRANSPORT_MESSAGE_LIMIT)
        .on_upgrade(move |socket| run(ctx, client, socket))
}

/// A live session of this socket.
struct SessionHandle {
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
    action: Action,
    /// ICE candidates forwarded so far.
    candidates: usize,
}

async fn run(ctx: Arc<WebRtcContext>, client: Client, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Outgoing>(OUTBOX_CAPACITY);
    let out = Outbox::new(tx);
    // A browser that takes nothing we write for the idle timeout is gone as well: the
    // writer gives up, and the socket closes.
    let write_timeout = ctx.limits.ws_idle_timeout;
    let mut writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            let (message, last) = match msg {
                Outgoing::Text(t) => (Message::Text(Utf8Bytes::from(t)), false),
                Outgoing::Close(code, reason) => (
                    Message::Close(Some(CloseFrame {
                        code,
                        reason: Utf8Bytes::from_static(reason),
                    })),
                    true,
                ),
                Outgoing::Ping => (Message::Ping(Default::default()), false),
            };
            match tokio::time::timeout(write_timeout, sink.send(message)).await {
                Ok(Ok(())) if !last => {}
                Ok(Ok(())) => break,
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::info!(
                        "WebSocket closed: nothing written was taken for {write_timeout:?}"
                    );
                    break;
                }
            }
        }
    });
    let mut writer_done = false;
    let mut sessions: HashMap<String, SessionHandle> = HashMap::new();
    let mut ping = tokio::time::interval(ctx.limits.ws_ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    loop {
        let idle_at = heard + ctx.limits.ws_idle_timeout;
        let msg = tokio::select! {
            m = stream.next() => m,
            () = ctx.shutdown.cancelled() => break,
            _ = ping.tick() => {
                out.send(Outgoing::Ping);
                continue;
            }
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                break;
            }
            () = out.overflowed() => {
                tracing::info!(peer = %client.ip, "WebSocket closed: the client does not read what the server writes");
                writer.abort();
                break;
            }
            () = tokio::time::sleep_until(idle_at) => {
                tracing::info!(peer = %client.ip, "WebSocket closed: nothing received for {:?}", ctx.limits.ws_idle_timeout);
                out.send(Outgoing::Close(CLOSE_IDLE, "idle timeout"));
                break;
            }
        };
        heard = tokio::time::Instant::now();
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                out.text(Reply::error(Definition::InvalidMessage, None))
                    .await;
                continue;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
        };
        sessions.retain(|_, s| !s.task.is_finished());
        match message::parse(text.as_str()) {
            Ok(cmd) => handle(&ctx, &client, &out, &mut sessions, cmd).await,
            Err(MessageError::TooLarge) => {
                out.text(Reply::error(Definition::MessageTooLarge, None))
                    .await;
                out.send(Outgoing::Close(CLOSE_TOO_BIG, "message too large"));
                break;
            }
            Err(e) => {
                tracing::debug!(error = %e, "bad WebSocket message");
                out.text(Reply::error(e.definition(), None)).await;
            }
        }
    }
    // The socket is gone: end every session and wait until their grants are released.
    for (_, s) in sessions.drain() {
        drop(s.control);
        if tokio::time::timeout(STOP_WAIT, s.task).await.is_err() {
            tracing::warn!("a WebRTC session did not end in time");
        }
    }
    drop(out);
    if !writer_done {
        let _ = writer.await;
    }
    let _ = MAX_MESSAGE_BYTES;
}

async fn handle(
    ctx: &Arc<WebRtcContext>,
    client: &Client,
    out: &Outbox,
    sessions: &mut HashMap<String, SessionHandle>,
    cmd: Command,
) {
    match cmd {
        Command::Publish { stream_id, token } => {
            admit(
                ctx,
                client,
                out,
                sessions,
                Action::Publish,
                stream_id,
                token,
            )
            .await
        }
        Command::Play { stream_id, token } => {
            admit(ctx, client, out, sessions, Action::Play, stream_id, token).await
        }
        Command::TakeConfiguration {
            stream_id,
            kind,
            sdp,
        } => forward(out, sessions, &stream_id, Control::Sdp(kind, sdp)).await,
        Command::TakeCandidate {
            stream_id,
            candidate,
            label,
            mid,
        } => {
            if let Some(s) = sessions.get_mut(&stream_id) {
                s.candidates += 1;
                if s.candidates > ctx.limits.max_candidates {
                    tracing::debug!(peer = %client.ip, "ICE candidate over the limit ignored");
                    out.text(Reply::error(
                        Definition::TooManyCandidates,
                        Some(&stream_id),
                    ))
                    .await;
                    return;
                }
            }
            let c = Control::Candidate {
                candidate,
                label,
                mid,
            };
            forward(out, sessions, &stream_id, c).await
        }
        Command::Stop { stream_id } => {
            if let Some(s) = sessions.remove(&stream_id) {
                let _ = s.control.send(Control::Stop).await;
                let _ = tokio::time::timeout(STOP_WAIT, s.task).await;
            }
        }
        Command::Ping => out.text(Reply::pong()).await,
        Command::GetIceServerConfig => out.text(Reply::ice_server_config(&ctx.ice_servers)).await,
        Command::GetStreamInfo { stream_id } => {
            let reply = match resolve(client.app.as_deref(), &stream_id) {
                Err(d) => Reply::error(d, Some(&stream_id)),
                Ok(name) => match ctx.hub.stream_stats(name.as_str()) {
                    Some(stats) if stats.live => {
                        Reply::stream_information(&stream_id, None, stats.bytes_in)
                    }
                    _ => Reply::error(Definition::NoStreamExist, Some(&stream_id)),
                },
            };
            out.text(reply).await;
        }
    }
}

async fn forward(
    out: &Outbox,
    sessions: &HashMap<String, SessionHandle>,
    stream_id: &str,
    control: Control,
) {
    match sessions.get(stream_id) {
        Some(s) if s.control.send(control).await.is_ok() => {}
        _ => {
            out.text(Reply::error(Definition::NoSession, Some(stream_id)))
                .await
        }
    }
}

async fn admit(
    ctx: &Arc<WebRtcContext>,
    client: &Client,
    out: &Outbox,
    sessions: &mut HashMap<String, SessionHandle>,
    action: Action,
    stream_id: String,
    token: Option<String>,
) {
    if let Some(existing) = sessions.get(&stream_id) {
        let d = match existing.action {
            Action::Publish => Definition::StreamIdInUse,
            Action::Play => Definition::AlreadyPlaying,
        };
        out.text(Reply::error(d, Some(&stream_id))).await;
        return;
    }
    if sessions.len() >= MAX_SESSIONS_PER_SOCKET {
        out.text(Reply::error(Definition::TooManySessions, Some(&stream_id)))
            .await;
        return;
    }
    let name = match resolve(client.app.as_deref(), &stream_id) {
        Ok(n) => n,
        Err(d) => {
            out.text(Reply::error(d, Some(&stream_id))).await;
            return;
        }
    };
    let request = AdmitRequest::new(Protocol::WebRtc, action, name.clone(), token, client.ip)
        .with_headers(
            client.origin.clone(),
            client.referer.clone(),
            client.user_agent.clone(),
        );
    let Ok(pass) = ctx.counts.peers.try_enter(client.ip) else {
        out.text(Reply::error(Definition::TooManySessions, Some(&stream_id)))
            .await;
        return;
    };
    // The admission logs and counts a refusal, and delays a failed authentication.
    let admitted = match ctx.admission.admit(request).await {
        Ok(a) => a,
        Err(denial) => {
            out.text(Reply::error(denial_definition(denial), Some(&stream_id)))
                .await;
            return;
        }
    };
    let (control, rx) = mpsc::channel(CONTROL_CAPACITY);
    let (ctx, sid, out) = (Arc::clone(ctx), stream_id.clone(), out.clone());
    // The session holds its place among the address's sessions for its whole life.
    let task = match admitted {
        Admitted::Publish(session) => tokio::spawn(async move {
            publish::run(ctx, session, name, sid, out, rx, None).await;
            drop(pass);
        }),
        Admitted::Play(session) => tokio::spawn(async move {
            play::run(ctx, session, name, sid, out, rx, None).await;
            drop(pass);
        }),
    };
    sessions.insert(
        stream_id,
        SessionHandle {
            control,
            task,
            action,
            candidates: 0,
        },
    );
}
