//! One connection request, decided before it is accepted: `streamid`, the auth decision,
//! encryption (for a caller announcing no key size to a stream without a passphrase, after a
//! look at its handshake: [`crate::key_material`]), the relay. Only then is the handshake
//! completed and the session started.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use srt_protocol::packet::RejectReason;
use srt_tokio::ConnectionRequest;
use streamgate_admission::{AdmitRequest, Admitted, EndReason};
use streamgate_auth::{Action, Grant, Protocol, StreamName};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::feeds::Feeds;
use crate::key_material::{KeyMaterial, Look, Looker};
use crate::keys::{key_decision, KeyDecision};
use crate::reject::{
    denial_reason, encryption_reason, libsrt_code, overload_reason, stream_id_reason,
    unseen_handshake_reason,
};
use crate::session::{play, publish};
use crate::streamid::{parse_stream_id, Mode, StreamIdError};
use crate::SrtContext;

/// How long the SRT library may take to finish a handshake we accepted.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Decides `request`, answers it, and serves the session if it was accepted.
pub async fn handle_request(
    ctx: Arc<SrtContext>,
    request: ConnectionRequest,
    slots: Arc<Semaphore>,
    feeds: Arc<Feeds>,
    looker: Looker,
    shutdown: CancellationToken,
) {
    let peer = request.remote();
    let Ok(permit) = slots.try_acquire_owned() else {
        tracing::warn!(peer = %peer, "srt request refused: too many connections");
        refuse(request, overload_reason(), peer).await;
        return;
    };
    let parsed = match request.stream_id() {
        // srt-protocol drops a streamid it cannot read (over 512 bytes, not UTF-8) to None.
        None => Err(StreamIdError::Missing),
        Some(id) => parse_stream_id(id.as_str()),
    };
    let target = match parsed {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(peer = %peer, error = %e, "srt request refused: bad streamid");
            refuse(request, stream_id_reason(&e), peer).await;
            return;
        }
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
        Err(d) => {
            refuse(request, denial_reason(d), peer).await;
            return;
        }
    };
    // A publish token's own passphrase wins over the server-wide one.
    let required = match action {
        Action::Publish => admitted
            .grant()
            .srt_passphrase()
            .or(ctx.server_passphrase.as_deref()),
        Action::Play => ctx.server_passphrase.as_deref(),
    };
    let keys = match key_decision(request.key_size(), required) {
        KeyDecision::Plain => {
            // The request cannot show keying material sent without a key size: look at the
            // handshake itself (see `key_material`).
            let refusal = match looker.look(peer).await {
                Look::Seen(KeyMaterial::Absent) => None,
                Look::Seen(KeyMaterial::Present) => Some((
                    "the caller set a passphrase but the stream has none",
                    encryption_reason(),
                )),
                Look::Unseen => Some((
                    "the caller did not resend its handshake",
                    unseen_handshake_reason(),
                )),
                Look::Busy => Some(("too many handshakes to look at", overload_reason())),
            };
            if let Some((why, reason)) = refusal {
                tracing::info!(peer = %peer, stream = %target.stream, action = ?action, reason = why, "srt request refused: encryption");
                admitted.set_end_reason(EndReason::ProtocolError);
                refuse(request, reason, peer).await;
                return;
            }
            None
        }
        KeyDecision::Encrypted(k) => Some(k),
        KeyDecision::Refuse(why) => {
            tracing::info!(peer = %peer, stream = %target.stream, action = ?action, reason = %why, "srt request refused: encryption");
            admitted.set_end_reason(EndReason::ProtocolError);
            refuse(request, encryption_reason(), peer).await;
            return;
        }
    };
    let encrypted = keys.is_some();
    match admitted {
        Admitted::Publish(mut session) => {
            let Some(socket) = accept(request, keys, &target.stream, peer).await else {
                session.set_end_reason(EndReason::ProtocolError);
                return;
            };
            log_start("publish", peer, &target.stream, session.grant(), encrypted);
            let close = publish(socket, &session, &shutdown).await;
            let reason = session.set_end_reason(close.end_reason());
            log_end("publish", peer, &target.stream, &close, reason);
        }
        Admitted::Play(mut session) => {
            let feed = feeds.get(target.stream.as_str());
            let Some(socket) = accept(request, keys, &target.stream, peer).await else {
                session.set_end_reason(EndReason::ProtocolError);
                return;
            };
            log_start("play", peer, &target.stream, session.grant(), encrypted);
            let close = play(socket, &mut session, feed, &shutdown).await;
            let reason = session.set_end_reason(close.end_reason());
            log_end("play", peer, &target.stream, &close, reason);
        }
    }
    drop(permit);
}

/// Completes the handshake; `None` if it failed (a wrong passphrase ends here).
async fn accept(
    request: ConnectionRequest,
    keys: Option<srt_protocol::settings::KeySettings>,
    stream: &StreamName,
    peer: SocketAddr,
) -> Option<srt_tokio::SrtSocket> {
    let encrypted = keys.is_some();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, request.accept(keys)).await {
        Ok(Ok(socket)) => Some(socket),
        Ok(Err(e)) => {
            tracing::info!(peer = %peer, stream = %stream, encrypted, error = %e, "srt handshake failed after admission (wrong passphrase?)");
            None
        }
        Err(_) => {
            tracing::info!(peer = %peer, stream = %stream, "srt handshake timed out after admission");
            None
        }
    }
}

async fn refuse(request: ConnectionRequest, reason: RejectReason, peer: SocketAddr) {
    let code = libsrt_code(reason);
    if let Err(e) = request.reject(reason).await {
        tracing::debug!(peer = %peer, code, error = %e, "srt rejection not sent");
    } else {
        tracing::debug!(peer = %peer, code, "srt rejection sent");
    }
}

fn log_start(what: &str, peer: SocketAddr, stream: &StreamName, grant: &Grant, encrypted: bool) {
    tracing::info!(peer = %peer, stream = %stream, token = ?grant.token_id(), encrypted, "srt {what} started");
}

fn log_end(
    what: &str,
    peer: SocketAddr,
    stream: &StreamName,
    close: &crate::session::Close,
    reason: EndReason,
) {
    tracing::info!(peer = %peer, stream = %stream, close = ?close, reason = reason.code(), "srt {what} ended: {reason}");
}
