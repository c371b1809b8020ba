//! One browser's publish: offer/answer, candidates, incoming tracks into the relay, keyframe
//! requests from viewers, and the end of the session (stop, socket gone, peer gone,
//! revoked). The answer says which tracks the browser sends: the relay waits for them before
//! the publish's first frames reach viewers, and runs the derived tracks its viewers need
//! (the Opus as AAC for RTMP and SRT viewers).

use std::sync::Arc;
use std::time::Instant;

use streamgate_admission::{EndReason, PublishSession};
use streamgate_auth::StreamName;
use streamgate_media::{ms_to_ticks, Codec};
use streamgate_relay::Publisher;
use streamgate_transcode::OpusToAac;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinSet;

use crate::inbound::Reassembler;
use crate::keyframe::KeyframeBoard;
use crate::message::{Definition, Reply, SdpKind};
use crate::name::revocation_reason;
use crate::negotiate::answered_codecs;
use crate::peer::{
    Connection, IncomingTrack, PeerError, PeerEvent, PublishPeer, PEER_EVENT_CAPACITY,
};
use crate::session::{Control, Outbox, NEGOTIATION_TIMEOUT};
use crate::WebRtcContext;

/// A publish's peer connection, set up within the cap on negotiations (whose place it
/// holds until it connects).
pub(crate) struct Prepared {
    peer: PublishPeer,
    events: mpsc::Receiver<PeerEvent>,
    negotiating: OwnedSemaphorePermit,
}

/// Why a peer connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrepareError {
    /// As many peer connections negotiate as the server allows.
    #[error("too many negotiations at once")]
    Busy,
    /// The WebRTC stack failed.
    #[error(transparent)]
    Peer(#[from] PeerError),
}

impl Prepared {
    /// Sets up the peer connection of a publish.
    pub(crate) async fn new(ctx: &WebRtcContext) -> Result<Self, PrepareError> {
        let negotiating = ctx.counts.negotiate().ok_or(PrepareError::Busy)?;
        let (events_tx, events) = mpsc::channel(PEER_EVENT_CAPACITY);
        let peer = PublishPeer::new(&ctx.ice, events_tx).await?;
        Ok(Self {
            peer,
            events,
            negotiating,
        })
    }

    /// Answers a WHIP client's offer, with the server's candidates in the answer, and tells
    /// the relay which tracks will come.
    pub(crate) async fn answer_whip(
        &self,
        offer: String,
        publisher: &Publisher,
        name: &StreamName,
    ) -> Result<String, PeerError> {
        let answer = self.peer.answer_gathered(offer).await?;
        announce_tracks(publisher, &answer, name);
        Ok(answer)
    }
}

/// Runs a publish session until it ends. The grant is held for the session's life. A session
/// signaled over the WebSocket sets up its peer here and takes the browser's offer as it
/// comes; one signaled over HTTP (WHIP) comes `prepared`, its offer answered.
pub(crate) async fn run(
    ctx: Arc<WebRtcContext>,
    mut session: PublishSession,
    name: StreamName,
    stream_id: String,
    out: Outbox,
    mut control: mpsc::Receiver<Control>,
    prepared: Option<Prepared>,
) {
    let publisher = Arc::clone(session.publisher());
    let prepared = match prepared {
        Some(p) => p,
        None => match Prepared::new(&ctx).await {
            Ok(p) => {
                out.text(Reply::start(&stream_id)).await;
                p
            }
            Err(PrepareError::Busy) => {
                tracing::warn!(stream = %name, "WebRTC publish refused: too many negotiations at once");
                out.text(Reply::error(Definition::ServerBusy, Some(&stream_id)))
                    .await;
                return;
            }
            Err(PrepareError::Peer(e)) => {
                tracing::warn!(stream = %name, error = %e, "cannot create peer connection");
                out.text(Reply::error(Definition::ServerError, Some(&stream_id)))
                    .await;
                return;
            }
        },
    };
    let Prepared {
        peer,
        mut events,
        negotiating,
    } = prepared;
    let mut negotiating = Some(negotiating);
    let keyframe_slot = ctx.keyframes.register(name.as_str());
    tracing::info!(stream = %name, session = session.grant().session_id(), protocol = session.protocol().as_str(), "WebRTC publish admitted");

    let started = Instant::now();
    let deadline = tokio::time::sleep(NEGOTIATION_TIMEOUT);
    tokio::pin!(deadline);
    let mut connected = false;
    let mut readers = JoinSet::new();
    let end: Option<(Definition, Option<&str>)> = loop {
        tokio::select! {
            r = session.revoked() => {
                break Some((Definition::PublishFinished, Some(revocation_reason(r))));
            }
            c = control.recv() => match c {
                None => break None,
                Some(Control::Stop) => break Some((Definition::PublishFinished, None)),
                Some(Control::Sdp(SdpKind::Offer, sdp)) => match peer.answer(sdp).await {
                    Ok(answer) => {
                        announce_tracks(&publisher, &answer, &name);
                        out.text(Reply::configuration(&stream_id, SdpKind::Answer, &answer)).await;
                    }
                    Err(e) => {
                        tracing::info!(stream = %name, error = %e, "publish offer refused");
                        out.text(Reply::error(Definition::NotSetRemoteDescription, Some(&stream_id))).await;
                        break None;
                    }
                },
                Some(Control::Sdp(SdpKind::Answer, _)) => {
                    out.text(Reply::error(Definition::NoSession, Some(&stream_id))).await;
                }
                Some(Control::Candidate { candidate, label, mid }) => {
                    if let Err(e) = peer.add_candidate(candidate, label, mid).await {
                        tracing::debug!(stream = %name, error = %e, "candidate ignored");
                    }
                }
                Some(Control::IceRestart { ufrag, pwd, candidates, reply }) => {
                    let answer = peer.restart_ice(&ufrag, &pwd, &candidates).await;
                    let _ = reply.send(answer.map_err(|e| e.to_string()));
                }
            },
            ev = events.recv() => match ev {
                None => break None,
                Some(PeerEvent::Candidate { candidate, label, mid }) => {
                    out.text(Reply::candidate(&stream_id, &candidate, label, &mid)).await;
                }
                Some(PeerEvent::State(Connection::Connected)) => {
                    if !connected {
                        connected = true;
                        drop(negotiating.take());
                        out.text(Reply::started(Definition::PublishStarted, &stream_id, session.grant().expires_on())).await;
                    }
                }
                Some(PeerEvent::State(Connection::Gone)) => {
                    break Some((Definition::PublishFinished, Some("connection lost")));
                }
                Some(PeerEvent::Track(track)) => {
                    readers.spawn(read_track(
                        track,
                        Arc::clone(&publisher),
                        started,
                        ctx.keyframes.clone(),
                        name.as_str().to_owned(),
                    ));
                }
                Some(PeerEvent::KeyframeRequest) => {}
            },
            () = keyframe_slot.slot().requested() => {
                tracing::debug!(stream = %name, "keyframe requested from the publisher");
                peer.request_keyframe().await;
            }
            () = &mut deadline, if !connected => {
                out.text(Reply::error(Definition::Timeout, Some(&stream_id))).await;
                break None;
            }
        }
    };
    if let Some((definition, reason)) = end {
        out.text(Reply::notification(definition, &stream_id, reason))
            .await;
    }
    peer.close().await;
    readers.shutdown().await;
    drop(keyframe_slot);
    // The readers are gone: this was the last clone but the session's own.
    drop(publisher);
    let reason = session.set_end_reason(ended_by(end));
    tracing::info!(stream = %name, session = session.grant().session_id(), reason = reason.code(), "WebRTC publish ended: {reason}");
}

/// What the admission path records for a publish that ended with `end`.
fn ended_by(end: Option<(Definition, Option<&str>)>) -> EndReason {
    match end {
        Some((_, Some("connection lost"))) => EndReason::ConnectionError,
        _ => EndReason::ClientClosed,
    }
}

/// Tells the relay which tracks the browser will send, from the server's answer; a browser's
/// Opus reaches RTMP and SRT viewers as AAC, whose configuration is announced with it.
fn announce_tracks(publisher: &Publisher, answer: &str, name: &StreamName) {
    for codec in answered_codecs(answer) {
        publisher.expect(codec);
        if codec == Codec::Opus {
            match OpusToAac::output_config() {
                Ok(aac) => publisher.set_audio_config(aac),
                Err(e) => {
                    tracing::warn!(stream = %name, error = %e, "RTMP and SRT viewers get no sound")
                }
            }
        }
    }
}

/// Reads one incoming track into the relay until it ends. Spawned: in the WebRTC stack's
/// 0.17 API, the track handler must return quickly.
async fn read_track(
    track: IncomingTrack,
    publisher: Arc<Publisher>,
    started: Instant,
    keyframes: KeyframeBoard,
    name: String,
) {
    let Some(codec) = track.codec() else {
        return;
    };
    let offset = ms_to_ticks(i64::try_from(started.elapsed().as_millis()).unwrap_or(0));
    let mut reassembler = Reassembler::new(codec, offset);
    let mut buf = Vec::new();
    while let Some(pkt) = track.read(&mut buf).await {
        let out = reassembler.push(pkt);
        if let Some(config) = out.config {
            if codec == Codec::H264 {
                publisher.set_video_config(config);
            }
        }
        if let Some(frame) = out.frame {
            publisher.push(frame);
        }
        if out.want_keyframe {
            keyframes.request(&name, Instant::now());
        }
    }
}
