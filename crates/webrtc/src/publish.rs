//! One browser's publish: offer/answer, candidates, incoming tracks into the relay, keyframe
//! requests from viewers, Opus -> AAC for RTMP and SRT viewers while there are any (the
//! relay counts viewers by wire format), and the end of the session (stop, socket gone, peer
//! gone, revoked).

use std::sync::Arc;
use std::time::Instant;

use streamgate_admission::{EndReason, PublishSession};
use streamgate_auth::StreamName;
use streamgate_media::{ms_to_ticks, Codec, Frame};
use streamgate_relay::{Publisher, WireFormat};
use streamgate_transcode::OpusToAac;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::inbound::Reassembler;
use crate::keyframe::KeyframeBoard;
use crate::message::{Definition, Reply, SdpKind};
use crate::name::revocation_reason;
use crate::peer::{Connection, IncomingTrack, PeerEvent, PublishPeer, PEER_EVENT_CAPACITY};
use crate::session::{Control, Outbox, NEGOTIATION_TIMEOUT};
use crate::WebRtcContext;

/// Runs a publish session until it ends. The grant is held for the session's life.
pub(crate) async fn run(
    ctx: Arc<WebRtcContext>,
    mut session: PublishSession,
    name: StreamName,
    stream_id: String,
    out: Outbox,
    mut control: mpsc::Receiver<Control>,
) {
    let publisher = Arc::clone(session.publisher());
    // A place among the peer connections negotiating at once, until this one connects.
    let Some(negotiating) = ctx.counts.negotiate() else {
        tracing::warn!(stream = %name, "WebRTC publish refused: too many negotiations at once");
        out.text(Reply::error(Definition::ServerBusy, Some(&stream_id)))
            .await;
        return;
    };
    let mut negotiating = Some(negotiating);
    let (events_tx, mut events) = mpsc::channel(PEER_EVENT_CAPACITY);
    let peer = match PublishPeer::new(&ctx.ice, events_tx).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(stream = %name, error = %e, "cannot create peer connection");
            out.text(Reply::error(Definition::ServerError, Some(&stream_id)))
                .await;
            return;
        }
    };
    let keyframe_slot = ctx.keyframes.register(name.as_str());
    out.text(Reply::start(&stream_id)).await;
    tracing::info!(stream = %name, session = session.grant().session_id(), "WebRTC publish admitted");

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
                    Ok(answer) => out.text(Reply::configuration(&stream_id, SdpKind::Answer, &answer)).await,
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
                        out.text(Reply::notification(Definition::PublishStarted, &stream_id, None)).await;
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
    let mut aac = (codec == Codec::Opus)
        .then(|| AacOut::new(&publisher, &name))
        .flatten();
    let mut vp8_warning = Vp8Warning::default();
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
            if codec == Codec::Vp8 {
                vp8_warning.check(&publisher, &name);
            }
            let aac_frames = aac.as_mut().map(|a| a.push(&frame, &publisher, &name));
            publisher.push(frame);
            for f in aac_frames.into_iter().flatten() {
                publisher.push(f);
            }
        }
        if out.want_keyframe {
            keyframes.request(&name, Instant::now());
        }
    }
}

/// Whether anyone takes the stream in a format that carries AAC and not Opus (an RTMP or
/// SRT viewer): one atomic load per format, asked at every frame.
fn needs_aac(publisher: &Publisher) -> bool {
    WireFormat::ALL
        .iter()
        .any(|&f| !f.carries(Codec::Opus) && f.carries(Codec::Aac) && publisher.demand(f) > 0)
}

/// Whether anyone takes the stream in a format that cannot carry VP8.
fn needs_other_than_vp8(publisher: &Publisher) -> bool {
    WireFormat::ALL
        .iter()
        .any(|&f| !f.carries(Codec::Vp8) && publisher.demand(f) > 0)
}

/// A browser publisher's Opus -> AAC transcode, run while RTMP or SRT viewers are attached:
/// it starts at the first Opus frame after the first of them joins and stops at the first
/// after the last leaves. The AAC configuration is announced at once, so that such a
/// viewer's player is set up for sound when it joins.
struct AacOut {
    transcode: OpusToAac,
    on: bool,
    errors: u64,
}

impl AacOut {
    fn new(publisher: &Publisher, name: &str) -> Option<Self> {
        match OpusToAac::new() {
            Ok(t) => {
                publisher.set_audio_config(t.config().clone());
                Some(Self {
                    transcode: t,
                    on: false,
                    errors: 0,
                })
            }
            Err(e) => {
                tracing::warn!(stream = %name, error = %e, "RTMP and SRT viewers get no sound");
                None
            }
        }
    }

    /// The AAC frames to publish after this Opus frame (none while nobody needs them).
    fn push(&mut self, frame: &Frame, publisher: &Publisher, name: &str) -> Vec<Frame> {
        let on = needs_aac(publisher);
        if on != self.on {
            self.on = on;
            if on {
                tracing::info!(
                    stream = %name,
                    encoder = streamgate_transcode::aac_enc::DEFAULT_ENCODER,
                    "Opus -> AAC transcode started"
                );
            } else {
                tracing::info!(stream = %name, "Opus -> AAC transcode stopped");
            }
        }
        if !self.on {
            return Vec::new();
        }
        match self.transcode.push(frame) {
            Ok(frames) => frames,
            Err(e) => {
                self.errors += 1;
                if self.errors.is_power_of_two() {
                    tracing::warn!(stream = %name, error = %e, errors = self.errors, "Opus frame skipped");
                }
                Vec::new()
            }
        }
    }
}

/// What RTMP and SRT viewers of a VP8 publisher are told, through the log: those protocols
/// carry H.264 only here.
const VP8_REASON: &str =
    "the browser publishes VP8, which RTMP and SRT cannot carry: those viewers get no picture; publish H.264 (codec=h264)";

/// Logs [`VP8_REASON`] once each time RTMP or SRT viewers appear on a VP8 stream.
#[derive(Debug, Default)]
struct Vp8Warning {
    warned: bool,
}

impl Vp8Warning {
    fn check(&mut self, publisher: &Publisher, name: &str) {
        let others = needs_other_than_vp8(publisher);
        if others && !self.warned {
            tracing::warn!(stream = %name, "{VP8_REASON}");
        }
        self.warned = others;
    }
}
