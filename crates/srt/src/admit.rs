//! One caller's conclusion, decided while the caller waits: extensions a live listener
//! refuses, the `streamid`, the auth decision, encryption, the relay. Then the handshake is
//! answered and, if accepted (the caller's keying material matching the passphrase), the
//! session runs.

use std::sync::Arc;

use srt_protocol::packet::{CoreRejectReason, RejectReason};
use streamgate_admission::{AdmitRequest, Admitted, EndReason};
use streamgate_auth::{Action, Grant, Protocol, StreamName};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::engine::{ConnectRequest, Role, StreamIdUnreadable};
use crate::feeds::Feeds;
use crate::keys::{key_decision, KeyDecision};
use crate::reject::{
    denial_reason, encryption_reason, libsrt_code, overload_reason, stream_id_reason,
};
use crate::session::{play, publish};
use crate::streamid::{parse_stream_id, Mode, StreamIdError};
use crate::SrtContext;

/// Decides `request`, answers it, and serves the session if it was accepted.
pub async fn handle_request(
    ctx: Arc<SrtContext>,
    request: ConnectRequest,
    slots: Arc<Semaphore>,
    feeds: Arc<Feeds>,
    shutdown: CancellationToken,
) {
    let peer = request.peer;
    let Ok(permit) = slots.try_acquire_owned() else {
        tracing::warn!(peer = %peer, "srt request refused: too many connections");
        return refuse(request, overload_reason());
    };
    if let Some(reason) = request.refused_extension {
        tracing::info!(peer = %peer, reason = ?reason, "srt request refused: not a live-mode caller (file transfer, packet filter or group)");
        return refuse(request, RejectReason::Core(reason));
    }
    let parsed = match &request.stream_id {
        None => Err(StreamIdError::Missing),
        Some(Err(StreamIdUnreadable::TooLong)) => Err(StreamIdError::TooLong),
        Some(Err(StreamIdUnreadable::NotUtf8)) => Err(StreamIdError::BadEncoding),
        Some(Ok(id)) => parse_stream_id(id),
    };
    let target = match parsed {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(peer = %peer, error = %e, "srt request refused: bad streamid");
            return refuse(request, stream_id_reason(&e));
        }
    };
    let Some(key_size) = request.key_size else {
        tracing::info!(peer = %peer, "srt request refused: a key length SRT does not have");
        return refuse(request, encryption_reason());
    };
    let action = match target.mode {
        Mode::Publish => Action::Publish,
        Mode::Request => Action::Play,
    };
    let admit = AdmitRequest::new(
        Protocol::Srt,
        action,
        target.stream.clone(),
        target.token.clone(),
        peer.ip(),
    );
    // The admission logs and counts a refusal, and delays a failed authentication.
    let mut admitted = match ctx.admission.admit(admit).await {
        Ok(a) => a,
        Err(d) => return refuse(request, denial_reason(d)),
    };
    // A publish token's own passphrase wins over the server-wide one.
    let required = match action {
        Action::Publish => admitted
            .grant()
            .srt_passphrase()
            .or(ctx.server_passphrase.as_deref()),
        Action::Play => ctx.server_passphrase.as_deref(),
    };
    let keys = match key_decision(key_size, required) {
        KeyDecision::Plain if request.encrypts => {
            tracing::info!(peer = %peer, stream = %target.stream, action = ?action, "srt request refused: the caller set a passphrase but the stream has none");
            admitted.set_end_reason(EndReason::ProtocolError);
            return refuse(request, encryption_reason());
        }
        KeyDecision::Plain => None,
        KeyDecision::Encrypted(k) => Some(k),
        KeyDecision::Refuse(why) => {
            tracing::info!(peer = %peer, stream = %target.stream, action = ?action, reason = %why, "srt request refused: encryption");
            admitted.set_end_reason(EndReason::ProtocolError);
            return refuse(request, encryption_reason());
        }
    };
    let encrypted = keys.is_some();
    let role = match action {
        Action::Publish => Role::Receiver,
        Action::Play => Role::Sender,
    };
    let conn = match request.accept(keys, role).await {
        Ok(c) => c,
        Err(reason) => {
            let why = match reason {
                RejectReason::Core(CoreRejectReason::BadSecret) => "wrong passphrase",
                RejectReason::Core(CoreRejectReason::Unsecure) => {
                    "the caller's encryption does not match the stream's"
                }
                _ => "the handshake did not complete",
            };
            tracing::info!(peer = %peer, stream = %target.stream, action = ?action, code = libsrt_code(reason), "srt request refused after admission: {why}");
            admitted.set_end_reason(EndReason::ProtocolError);
            return;
        }
    };
    match admitted {
        Admitted::Publish(mut session) => {
            log_start("publish", &conn, &target.stream, session.grant(), encrypted);
            let close = publish(conn, &session, &shutdown).await;
            let reason = session.set_end_reason(close.end_reason());
            log_end("publish", peer, &target.stream, &close, reason);
        }
        Admitted::Play(mut session) => {
            let feed = feeds.get(target.stream.as_str());
            log_start("play", &conn, &target.stream, session.grant(), encrypted);
            let close = play(conn, &mut session, feed, &shutdown).await;
            let reason = session.set_end_reason(close.end_reason());
            log_end("play", peer, &target.stream, &close, reason);
        }
    }
    drop(permit);
}

fn refuse(request: ConnectRequest, reason: RejectReason) {
    tracing::debug!(peer = %request.peer, code = libsrt_code(reason), "srt rejection sent");
    request.reject(reason);
}

fn log_start(
    what: &str,
    conn: &crate::engine::SrtConn,
    stream: &StreamName,
    grant: &Grant,
    encrypted: bool,
) {
    tracing::info!(peer = %conn.peer(), stream = %stream, token = ?grant.token_id(), encrypted, "srt {what} started");
}

fn log_end(
    what: &str,
    peer: std::net::SocketAddr,
    stream: &StreamName,
    close: &crate::session::Close,
    reason: EndReason,
) {
    tracing::info!(peer = %peer, stream = %stream, close = ?close, reason = reason.code(), "srt {what} ended: {reason}");
}
