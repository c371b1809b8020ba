//! One browser's playback: wait for the stream, learn from the relay what this viewer takes
//! of it (the stream's own H.264 or VP8 and Opus, or the derived tracks the relay runs for
//! browsers: Opus from AAC, H.264 without B-frames), make the offer, then write the relay's
//! frames as RTP, encoded once per frame for all viewers and numbered per viewer. Live frames
//! go out paced on the media clock ([`crate::pace`]), and each track's RTCP sender reports map
//! the same presentation time to the same wall-clock time, so that the browser plays audio
//! and video in sync from the start.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use streamgate_admission::{EndReason, PlaySession};
use streamgate_auth::StreamName;
use streamgate_media::{ms_to_ticks, Codec, TrackKind, CLOCK_HZ};
use streamgate_relay::{
    Event, Pick, Refusal, Selection, SharedConfig, SharedFrame, Subscriber, Unavailable, WireFormat,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::message::{Definition, Reply, SdpKind};
use crate::name::revocation_reason;
use crate::negotiate::{h264_profile_ids, SectionKind, H264_PAYLOAD_TYPES};
use crate::outbound::{clock_rate, encode_payloads, Payloads, Stamper};
use crate::pace::{Lane, Pacer, Pushed};
use crate::peer::{
    CodecSpec, Connection, OutgoingTrack, PeerError, PeerEvent, PlayPeer, PEER_EVENT_CAPACITY,
};
use crate::session::{Control, Outbox, NEGOTIATION_TIMEOUT};
use crate::WebRtcContext;

/// Most frames held while negotiating; when a frame would pass it, or
/// [`MAX_PENDING_BYTES`], the ones held are dropped (the viewer then starts at the next
/// keyframe).
pub const MAX_PENDING_FRAMES: usize = 512;

/// Most payload bytes held while negotiating.
pub const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

/// A viewer whose backlog at connection time spans more than this skips to the next
/// keyframe instead of receiving it in a burst (which would add that much delay).
pub const MAX_START_BACKLOG: Duration = Duration::from_millis(1000);

/// Interval of the RTCP sender reports on each of a viewer's tracks (a first one follows a
/// track's first packet).
pub const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Why a viewer of a stream with B-frames is refused (`webrtc.bframes = "refuse"`), in the
/// log and the final message.
const BFRAMES_REASON: &str =
    "the stream's H.264 has B-frames, which WebRTC playback cannot carry; publish with -bf 0 (or a baseline profile)";

/// Why a viewer of a stream with B-frames is refused when its pictures are too large (or
/// its parameter sets unreadable) for the re-encode, in the log and the final message.
const TOO_LARGE_REASON: &str =
    "the stream's H.264 has B-frames and pictures too large to re-encode; publish with -bf 0 (or a baseline profile)";

/// Why a viewer of a re-encoded stream ends when its re-encode fails (a bug, counted as a
/// panic) or cannot start, in the log and the final message.
const REENCODE_FAILED_REASON: &str = "the stream's H.264 re-encode failed";

/// Why a viewer of a stream with B-frames is refused when no re-encode can start, in the log
/// and the final message.
const BUSY_REASON: &str =
    "the stream's H.264 has B-frames and the server runs as many re-encodes as it may; publish with -bf 0 (or a baseline profile)";

/// Why a viewer is refused a picture no browser codec carries, in the log and the final
/// message.
const NOT_CARRIED_REASON: &str = "the stream's video codec cannot be played in a browser";

/// Why the session ended, for the final message.
type End = Option<(Definition, Option<&'static str>)>;

/// A play whose peer connection has answered a WHEP client's offer.
pub(crate) struct Answered {
    peer: PlayPeer,
    events: mpsc::Receiver<PeerEvent>,
    negotiating: OwnedSemaphorePermit,
    config: Arc<SharedConfig>,
    selection: Selection,
}

/// Why a WHEP offer was not answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnswerError {
    /// As many peer connections negotiate as the server allows.
    #[error("too many negotiations at once")]
    Busy,
    /// The offer cannot be applied, or takes none of the stream's codecs.
    #[error(transparent)]
    Peer(#[from] PeerError),
}

/// Answers a WHEP client's offer for a stream with `config`, of which the viewer takes
/// `selection` (which [`unplayable`] has let through): the answer carries the server's
/// candidates.
pub(crate) async fn answer_whep(
    ctx: &WebRtcContext,
    config: Arc<SharedConfig>,
    selection: Selection,
    offer: String,
) -> Result<(String, Answered), AnswerError> {
    let negotiating = ctx.counts.negotiate().ok_or(AnswerError::Busy)?;
    let (events_tx, events) = mpsc::channel(PEER_EVENT_CAPACITY);
    let (peer, answer) = PlayPeer::answering(
        &ctx.ice,
        video_specs(&config, selection),
        selection.audio.codec().is_some(),
        offer,
        events_tx,
    )
    .await?;
    Ok((
        answer,
        Answered {
            peer,
            events,
            negotiating,
            config,
            selection,
        },
    ))
}

/// The first announcement of a stream a viewer reads: its configuration and what the viewer
/// takes of it; `None` if none comes within `within` or the stream ends first.
pub(crate) async fn first_start(
    sub: &mut Subscriber,
    within: Duration,
) -> Option<(Arc<SharedConfig>, Selection)> {
    let wait = async {
        loop {
            match sub.recv().await {
                Event::Started(config, selection) => return Some((config, selection)),
                Event::Ended => return None,
                Event::Frame(_) => {}
            }
        }
    };
    tokio::time::timeout(within, wait).await.ok().flatten()
}

/// Runs a play session until it ends. The grant is held for the session's life. A session
/// signaled over the WebSocket waits for the stream and offers it here, the browser's answer
/// coming as it does; one signaled over HTTP (WHEP) comes `answered`, with the subscriber it
/// waited for the stream with.
pub(crate) async fn run(
    ctx: Arc<WebRtcContext>,
    mut session: PlaySession,
    name: StreamName,
    stream_id: String,
    out: Outbox,
    mut control: mpsc::Receiver<Control>,
    answered: Option<(Subscriber, Answered)>,
) {
    let (mut sub, answered) = match answered {
        Some((sub, answered)) => (sub, Some(answered)),
        None => match session.take_subscriber() {
            Some(sub) => (sub, None),
            None => return,
        },
    };
    tracing::info!(stream = %name, session = session.grant().session_id(), protocol = session.protocol().as_str(), "WebRTC play admitted");
    let end = play(
        &ctx,
        &session,
        &name,
        &stream_id,
        &out,
        &mut control,
        &mut sub,
        answered,
    )
    .await;
    if let Some((definition, reason)) = end {
        out.text(Reply::notification(definition, &stream_id, reason))
            .await;
    }
    drop(sub);
    let reason = session.set_end_reason(ended_by(end));
    tracing::info!(stream = %name, session = session.grant().session_id(), reason = reason.code(), "WebRTC play ended: {reason}");
}

/// What the admission path records for a play that ended with `end`.
fn ended_by(end: End) -> EndReason {
    match end {
        Some((_, Some("connection lost"))) => EndReason::ConnectionError,
        Some((_, Some("stream ended"))) => EndReason::StreamEnded,
        Some((
            _,
            Some(
                BFRAMES_REASON
                | BUSY_REASON
                | TOO_LARGE_REASON
                | REENCODE_FAILED_REASON
                | NOT_CARRIED_REASON,
            ),
        )) => EndReason::Unsupported,
        _ => EndReason::ClientClosed,
    }
}

/// The rare steps (negotiation, ICE restart, close) are boxed: the `webrtc` crate's futures
/// for them take up to 8 KB, which would otherwise be part of every viewer's task for as long
/// as it plays (a WHEP viewer's task took 11.6 KB; 4 KB with these boxed).
#[allow(clippy::too_many_arguments)]
async fn play(
    ctx: &WebRtcContext,
    session: &PlaySession,
    name: &StreamName,
    stream_id: &str,
    out: &Outbox,
    control: &mut mpsc::Receiver<Control>,
    sub: &mut Subscriber,
    answered: Option<Answered>,
) -> End {
    let answered = match answered {
        Some(a) => a,
        None => match Box::pin(offer(ctx, session, name, stream_id, out, control, sub)).await {
            Ok(a) => a,
            Err(end) => return end,
        },
    };
    let Answered {
        peer,
        mut events,
        negotiating,
        mut config,
        mut selection,
    } = answered;
    let mut negotiating = Some(negotiating);
    let mut sender = Sender::new(&peer, selection.video.codec());
    let deadline = tokio::time::sleep(NEGOTIATION_TIMEOUT);
    tokio::pin!(deadline);
    let mut connected = false;
    let mut reports = tokio::time::interval(SENDER_REPORT_INTERVAL);
    reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let end = loop {
        let due = sender.next_due();
        tokio::select! {
            r = session.revoked() => break Some((Definition::PlayFinished, Some(revocation_reason(r)))),
            c = control.recv() => match c {
                None => break None,
                Some(Control::Stop) => break Some((Definition::PlayFinished, None)),
                Some(Control::Sdp(SdpKind::Answer, sdp)) => {
                    match Box::pin(peer.accept_answer(&sdp)).await {
                        Ok(rejected) => {
                            for kind in rejected {
                                let (definition, what) = match kind {
                                    SectionKind::Video => (Definition::VideoNotAccepted, "video"),
                                    SectionKind::Audio => (Definition::AudioNotAccepted, "audio"),
                                    SectionKind::Other => continue,
                                };
                                tracing::info!(stream = %name, "the viewer's browser takes none of the {what} codecs offered; playing the rest");
                                sender.drop_track(kind);
                                out.text(Reply::error(definition, Some(stream_id))).await;
                            }
                        }
                        Err(e) => {
                            tracing::info!(stream = %name, error = %e, "play answer refused");
                            out.text(Reply::error(Definition::NotSetRemoteDescription, Some(stream_id))).await;
                            break None;
                        }
                    }
                }
                Some(Control::Sdp(SdpKind::Offer, _)) => {
                    out.text(Reply::error(Definition::NoSession, Some(stream_id))).await;
                }
                Some(Control::Candidate { candidate, label, mid }) => {
                    if let Err(e) = Box::pin(peer.add_candidate(candidate, label, mid)).await {
                        tracing::debug!(stream = %name, error = %e, "candidate ignored");
                    }
                }
                Some(Control::IceRestart { ufrag, pwd, candidates, reply }) => {
                    let answer = Box::pin(peer.restart_ice(&ufrag, &pwd, &candidates)).await;
                    let _ = reply.send(answer.map_err(|e| e.to_string()));
                }
            },
            ev = events.recv() => match ev {
                None => break None,
                Some(PeerEvent::Candidate { candidate, label, mid }) => {
                    out.text(Reply::candidate(stream_id, &candidate, label, &mid)).await;
                }
                Some(PeerEvent::State(Connection::Connected)) => {
                    if !connected {
                        connected = true;
                        drop(negotiating.take());
                        out.text(Reply::started(Definition::PlayStarted, stream_id, session.grant().expires_on())).await;
                        ctx.keyframes.request(name.as_str(), Instant::now());
                        sub.request_keyframe();
                        // What came while negotiating: the viewer starts at its latest
                        // keyframe.
                        let mut pending = Vec::new();
                        let mut changed = None;
                        while let Some(ev) = sub.try_recv() {
                            match ev {
                                Event::Frame(f) => push_pending(&mut pending, f),
                                Event::Started(c, s) => {
                                    config = c;
                                    if s != selection {
                                        selection = s;
                                        changed = Some(s);
                                    }
                                }
                                Event::Ended => {}
                            }
                        }
                        if let Some(s) = changed {
                            if let Err(end) = playable(name, stream_id, out, s).await {
                                break end;
                            }
                        }
                        sender.start(pending);
                        if sender.flush(&config).await.is_err() {
                            break Some((Definition::PlayFinished, Some("connection lost")));
                        }
                    }
                }
                Some(PeerEvent::State(Connection::Gone)) => break Some((Definition::PlayFinished, Some("connection lost"))),
                Some(PeerEvent::KeyframeRequest) => {
                    ctx.keyframes.request(name.as_str(), Instant::now());
                    sub.request_keyframe();
                }
                Some(PeerEvent::Track(_)) => {}
            },
            ev = sub.recv(), if connected => match ev {
                Event::Started(c, s) => {
                    config = c;
                    if s != selection {
                        if let Err(end) = playable(name, stream_id, out, s).await {
                            break end;
                        }
                        if s.video != selection.video {
                            // Another picture (the stream turned out to have B-frames, say):
                            // from its next keyframe on.
                            sender.need_keyframe = true;
                        }
                        selection = s;
                    }
                }
                Event::Ended => break Some((Definition::PlayFinished, Some("stream ended"))),
                Event::Frame(f) => sender.push(Instant::now(), f),
            },
            () = sleep_until(due), if connected && due.is_some() => {
                if sender.release(Instant::now(), &config).await.is_err() {
                    break Some((Definition::PlayFinished, Some("connection lost")));
                }
            },
            _ = reports.tick(), if connected => sender.report_all().await,
            () = &mut deadline, if !connected => {
                out.text(Reply::error(Definition::Timeout, Some(stream_id))).await;
                break None;
            }
        }
    };
    Box::pin(peer.close()).await;
    end
}

/// The WebSocket way in: waits for the stream (telling the browser it waits), then makes the
/// peer connection and sends its offer; the browser's answer comes to the session's loop.
async fn offer(
    ctx: &WebRtcContext,
    session: &PlaySession,
    name: &StreamName,
    stream_id: &str,
    out: &Outbox,
    control: &mut mpsc::Receiver<Control>,
    sub: &mut Subscriber,
) -> Result<Answered, End> {
    let live = ctx.hub.stream_stats(name.as_str()).is_some_and(|s| s.live);
    if !live {
        out.text(Reply::notification(
            Definition::PlayWaiting,
            stream_id,
            None,
        ))
        .await;
    }
    // Wait for the stream: its configuration, and what this viewer takes of it (settled by
    // the relay from the publish's first frames).
    let (config, selection) = loop {
        tokio::select! {
            r = session.revoked() => return Err(Some((Definition::PlayFinished, Some(revocation_reason(r))))),
            c = control.recv() => match c {
                None => return Err(None),
                Some(Control::Stop) => return Err(Some((Definition::PlayFinished, None))),
                Some(_) => out.text(Reply::error(Definition::NoSession, Some(stream_id))).await,
            },
            ev = sub.recv() => if let Event::Started(config, selection) = ev { break (config, selection) },
        }
    };
    playable(name, stream_id, out, selection).await?;
    // A place among the peer connections negotiating at once, until this one connects.
    let Some(negotiating) = ctx.counts.negotiate() else {
        tracing::warn!(stream = %name, "WebRTC play refused: too many negotiations at once");
        out.text(Reply::error(Definition::ServerBusy, Some(stream_id)))
            .await;
        return Err(None);
    };
    let (events_tx, events) = mpsc::channel(PEER_EVENT_CAPACITY);
    let audio = selection.audio.codec().is_some();
    let peer =
        match PlayPeer::new(&ctx.ice, video_specs(&config, selection), audio, events_tx).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(stream = %name, error = %e, "cannot create peer connection");
                out.text(Reply::error(Definition::ServerError, Some(stream_id)))
                    .await;
                return Err(None);
            }
        };
    match peer.offer().await {
        Ok(sdp) => {
            out.text(Reply::configuration(stream_id, SdpKind::Offer, &sdp))
                .await
        }
        Err(e) => {
            tracing::warn!(stream = %name, error = %e, "cannot make an offer");
            out.text(Reply::error(Definition::ServerError, Some(stream_id)))
                .await;
            peer.close().await;
            return Err(None);
        }
    }
    Ok(Answered {
        peer,
        events,
        negotiating,
        config,
        selection,
    })
}

/// The video codecs a viewer taking `selection` of a stream with `config` is offered.
fn video_specs(config: &SharedConfig, selection: Selection) -> Vec<CodecSpec> {
    match selection.video {
        Pick::Source(Codec::Vp8) => vec![CodecSpec::vp8(96)],
        // The stream's own H.264 under its profile and those browsers list; a re-encode is
        // Constrained Baseline.
        Pick::Source(_) => offer_h264(h264_profile_ids(config.config.video.as_ref())),
        Pick::Derived(_) => offer_h264(h264_profile_ids(None)),
        Pick::Absent | Pick::Unavailable(_) => Vec::new(),
    }
}

/// H.264 offered under each of `ids`, one payload type each.
fn offer_h264(ids: Vec<String>) -> Vec<CodecSpec> {
    ids.iter()
        .zip(H264_PAYLOAD_TYPES)
        .map(|(id, pt)| CodecSpec::h264(pt, id))
        .collect()
}

/// What ends a play of `selection` before it starts: a picture the viewer cannot get (a
/// re-encode refused or failed, a codec no browser takes), as the `error` definition and the
/// reason. A sound it cannot get is no reason (it plays the picture).
pub(crate) fn unplayable(selection: Selection) -> Option<(Definition, &'static str)> {
    let Pick::Unavailable(why) = selection.video else {
        return None;
    };
    Some(match why {
        Unavailable::Refused(_, Refusal::Disabled) => {
            (Definition::BFramesUnsupported, BFRAMES_REASON)
        }
        Unavailable::Refused(_, Refusal::Unsupported) => {
            (Definition::BFramesUnsupported, TOO_LARGE_REASON)
        }
        Unavailable::Refused(_, Refusal::Busy) => (Definition::HighResourceUsage, BUSY_REASON),
        Unavailable::Refused(_, Refusal::Failed) => {
            (Definition::ServerError, REENCODE_FAILED_REASON)
        }
        Unavailable::NotCarried(_) => (Definition::ServerError, NOT_CARRIED_REASON),
    })
}

/// Whether the viewer can play what it takes of the stream ([`unplayable`]); if not, the
/// browser gets an `error` and the end carries the reason. A sound it cannot get is logged.
async fn playable(
    name: &StreamName,
    stream_id: &str,
    out: &Outbox,
    selection: Selection,
) -> Result<(), End> {
    if let Pick::Unavailable(why) = selection.audio {
        tracing::warn!(stream = %name, reason = ?why, "WebRTC viewer gets no sound");
    }
    let Some((definition, reason)) = unplayable(selection) else {
        return Ok(());
    };
    tracing::warn!(stream = %name, "WebRTC play refused: {reason}");
    out.text(Reply::error(definition, Some(stream_id))).await;
    Err(Some((Definition::PlayFinished, Some(reason))))
}

/// Sleeps until `due`; never wakes without one.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn push_pending(pending: &mut Vec<Arc<SharedFrame>>, frame: Arc<SharedFrame>) {
    let bytes: usize = pending.iter().map(|f| f.frame.payload.len()).sum();
    if pending.len() >= MAX_PENDING_FRAMES || bytes + frame.frame.payload.len() > MAX_PENDING_BYTES
    {
        pending.clear();
    }
    pending.push(frame);
}

/// Writes frames to one viewer.
struct Sender {
    video: Option<(OutgoingTrack, Stamper, Codec)>,
    audio: Option<(OutgoingTrack, Stamper)>,
    /// Video is skipped until a keyframe (at start, after a start backlog too long, and when
    /// the picture the viewer takes changes).
    need_keyframe: bool,
    backlog: Vec<Arc<SharedFrame>>,
    /// Live frames, released on the media clock.
    pacer: Pacer<Arc<SharedFrame>>,
    /// The viewer's media clock, shared by its tracks' sender reports: presentation time
    /// `pts` is wall-clock time `wall` (at `instant`), set by the first paced frame.
    clock: Option<MediaClock>,
    /// Whether each track (video, audio) has had its first sender report.
    reported: (bool, bool),
}

/// One point of a viewer's media clock.
#[derive(Debug, Clone, Copy)]
struct MediaClock {
    wall: SystemTime,
    instant: Instant,
    pts: i64,
}

impl MediaClock {
    /// Wall-clock time now and the presentation time it stands for.
    fn now(&self) -> (SystemTime, i64) {
        let elapsed = self.instant.elapsed();
        let ticks =
            i64::try_from(elapsed.as_micros() * u128::from(CLOCK_HZ.unsigned_abs()) / 1_000_000)
                .unwrap_or(i64::MAX);
        let wall = self
            .wall
            .checked_add(elapsed)
            .unwrap_or_else(SystemTime::now);
        (wall, self.pts.saturating_add(ticks))
    }
}

/// The viewer's connection is gone: frames can no longer be written.
struct Gone;

impl Sender {
    /// Stops writing a track the browser rejected.
    fn drop_track(&mut self, kind: SectionKind) {
        match kind {
            SectionKind::Video => self.video = None,
            SectionKind::Audio => self.audio = None,
            SectionKind::Other => {}
        }
    }

    fn new(peer: &PlayPeer, video: Option<Codec>) -> Self {
        let seed = random_u32();
        Self {
            video: peer.video().cloned().zip(video).map(|(t, c)| {
                (
                    t,
                    Stamper::new((seed & 0xffff) as u16, random_u32(), clock_rate(c)),
                    c,
                )
            }),
            audio: peer.audio().cloned().map(|t| {
                (
                    t,
                    Stamper::new((seed >> 16) as u16, random_u32(), clock_rate(Codec::Opus)),
                )
            }),
            need_keyframe: true,
            backlog: Vec::new(),
            pacer: Pacer::new(Instant::now()),
            clock: None,
            reported: (false, false),
        }
    }

    /// Takes the frames queued before the connection: the video from the latest keyframe on,
    /// unless that spans more than [`MAX_START_BACKLOG`]. A browser renders such a backlog
    /// at once but would buffer a backlog of sound and play it in real time, behind the
    /// picture: with video, sound starts with the live frames.
    fn start(&mut self, pending: Vec<Arc<SharedFrame>>) {
        if self.video.is_some() {
            let video: Vec<Arc<SharedFrame>> = pending
                .into_iter()
                .filter(|f| f.frame.track == TrackKind::Video)
                .collect();
            self.start_backlog(video);
        } else {
            self.start_backlog(pending);
        }
    }

    /// The backlog of [`Sender::start`].
    fn start_backlog(&mut self, pending: Vec<Arc<SharedFrame>>) {
        let last_key = pending
            .iter()
            .rposition(|f| f.frame.track == TrackKind::Video && f.frame.keyframe);
        let newest = pending.last().map(|f| f.frame.dts);
        self.backlog = match (last_key, newest) {
            (Some(k), Some(newest)) => {
                let from = pending.get(k).map_or(newest, |f| f.frame.dts);
                let span = ms_to_ticks(i64::try_from(MAX_START_BACKLOG.as_millis()).unwrap_or(0));
                if newest - from <= span {
                    pending.into_iter().skip(k).collect()
                } else {
                    Vec::new()
                }
            }
            _ if self.video.is_none() => pending,
            _ => Vec::new(),
        };
    }

    async fn flush(&mut self, config: &SharedConfig) -> Result<(), Gone> {
        for f in std::mem::take(&mut self.backlog) {
            self.send(&f, config).await?;
        }
        Ok(())
    }

    /// Queues a live frame that arrived `now` for its time on the media clock.
    fn push(&mut self, now: Instant, f: Arc<SharedFrame>) {
        let lane = match f.frame.track {
            TrackKind::Video if self.video.as_ref().is_some_and(|v| v.2 == f.frame.codec) => {
                Lane::Video
            }
            TrackKind::Audio if self.audio.is_some() && f.frame.codec == Codec::Opus => Lane::Audio,
            // Frames this viewer does not take.
            _ => return,
        };
        let pts = f.frame.pts;
        let bytes = f.frame.payload.len();
        if self.pacer.push(now, pts, lane, f, bytes) == Pushed::Dropped {
            let dropped = self.pacer.dropped();
            if dropped.is_power_of_two() {
                tracing::debug!(dropped, "late audio dropped for a WebRTC viewer");
            }
        }
    }

    /// When the next queued frame is due.
    fn next_due(&self) -> Option<Instant> {
        self.pacer.next_due()
    }

    /// Sends the frames due at `now`.
    async fn release(&mut self, now: Instant, config: &SharedConfig) -> Result<(), Gone> {
        while let Some(f) = self.pacer.pop(now) {
            if self.clock.is_none() {
                self.clock = Some(MediaClock {
                    wall: SystemTime::now(),
                    instant: Instant::now(),
                    pts: f.frame.pts,
                });
            }
            self.send(&f, config).await?;
            let first_video =
                !self.reported.0 && self.video.as_ref().is_some_and(|v| v.0.has_sent());
            let first_audio =
                !self.reported.1 && self.audio.as_ref().is_some_and(|a| a.0.has_sent());
            if first_video || first_audio {
                self.report_all().await;
            }
        }
        Ok(())
    }

    /// Writes a sender report on each track that has sent packets, on the media clock: the
    /// same presentation time is the same wall-clock time on both tracks, however late
    /// either track's packets went out.
    async fn report_all(&mut self) {
        let Some(clock) = self.clock else { return };
        let (wall, pts) = clock.now();
        if let Some((track, stamper, _)) = &self.video {
            if track.has_sent() {
                self.reported.0 = true;
                let _ = track.report(wall, stamper.rtp_time(pts)).await;
            }
        }
        if let Some((track, stamper)) = &self.audio {
            if track.has_sent() {
                self.reported.1 = true;
                let _ = track.report(wall, stamper.rtp_time(pts)).await;
            }
        }
    }

    async fn send(&mut self, shared: &SharedFrame, config: &SharedConfig) -> Result<(), Gone> {
        let frame = &shared.frame;
        let (track, stamper) = match frame.track {
            TrackKind::Video => {
                let Some((track, stamper, codec)) = &mut self.video else {
                    return Ok(());
                };
                if frame.codec != *codec {
                    return Ok(());
                }
                if self.need_keyframe {
                    if !frame.keyframe {
                        return Ok(());
                    }
                    self.need_keyframe = false;
                }
                (track, stamper)
            }
            TrackKind::Audio => {
                let Some((track, stamper)) = &mut self.audio else {
                    return Ok(());
                };
                if frame.codec != Codec::Opus {
                    return Ok(());
                }
                (track, stamper)
            }
        };
        // A re-encoded keyframe carries its own parameter sets, never the source's.
        let source_sets = config
            .config
            .video
            .as_ref()
            .filter(|_| shared.derived.is_none());
        let encoded = shared.encoded(WireFormat::Rtp, |f| encode_payloads(f, source_sets));
        let mut payloads = Payloads::new(encoded).peekable();
        while let Some(payload) = payloads.next() {
            let stamp = stamper.stamp(frame.pts, payloads.peek().is_none());
            if track.write(stamp, payload).await.is_err() {
                return Err(Gone);
            }
        }
        Ok(())
    }
}

/// A random number for RTP sequence and timestamp bases (RFC 3550 asks for unpredictable
/// starting values).
fn random_u32() -> u32 {
    getrandom::u32().unwrap_or(0x5eed_1234)
}
