//! One browser's playback: wait for the stream (if the viewer may), choose codecs from what
//! the stream carries, make the offer, then write the relay's frames as RTP, encoded once per
//! frame for all viewers and numbered per viewer. Live frames go out paced on the media clock
//! ([`crate::pace`]), and each track's RTCP sender reports map the same presentation time to
//! the same wall-clock time, so that the browser plays audio and video in sync from the start.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use streamgate_admission::{EndReason, PlaySession};
use streamgate_auth::StreamName;
use streamgate_media::{ms_to_ticks, Codec, TrackKind, CLOCK_HZ};
use streamgate_relay::{Event, SharedConfig, SharedFrame, Subscriber, WireFormat};
use streamgate_transcode::AvcReencoder;
use tokio::sync::mpsc;

use crate::message::{Definition, Reply, SdpKind};
use crate::name::revocation_reason;
use crate::negotiate::{h264_profile_ids, SectionKind, H264_PAYLOAD_TYPES};
use crate::opus_feed::OpusFeed;
use crate::outbound::{clock_rate, encode_payloads, Payloads, Stamper};
use crate::pace::{Lane, Pacer, Pushed};
use crate::peer::{CodecSpec, Connection, OutgoingTrack, PeerEvent, PlayPeer, PEER_EVENT_CAPACITY};
use crate::session::{Control, Outbox, NEGOTIATION_TIMEOUT};
use crate::video_feed::{BFramesPolicy, VideoFeed};
use crate::WebRtcContext;

/// How long to look at a newly started stream's first frames to learn whether it has audio
/// and which video codec.
pub const CODEC_PROBE_TIME: Duration = Duration::from_millis(1500);

/// Most frames held while probing or negotiating; when a frame would pass it, or
/// [`MAX_PENDING_BYTES`], the ones held are dropped (the viewer then starts at the next
/// keyframe).
pub const MAX_PENDING_FRAMES: usize = 512;

/// Most payload bytes held while probing or negotiating.
pub const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

/// A viewer whose backlog at connection time spans more than this skips to the next
/// keyframe instead of receiving it in a burst (which would add that much delay).
pub const MAX_START_BACKLOG: Duration = Duration::from_millis(1000);

/// Interval of the RTCP sender reports on each of a viewer's tracks (a first one follows a
/// track's first packet).
pub const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// AAC frames seen without any Opus before a viewer's sound is taken from an AAC -> Opus
/// transcode.
const AAC_FRAMES_BEFORE_TRANSCODE: u32 = 3;

/// Why a viewer of a stream with B-frames is refused (`webrtc.bframes = "refuse"`), in the
/// log and the final message.
const BFRAMES_REASON: &str =
    "the stream's H.264 has B-frames, which WebRTC playback cannot carry; publish with -bf 0 (or a baseline profile)";

/// Why a viewer of a stream with B-frames is refused when its pictures are too large (or
/// its parameter sets unreadable) for the re-encode, in the log and the final message.
const TOO_LARGE_REASON: &str =
    "the stream's H.264 has B-frames and pictures too large to re-encode; publish with -bf 0 (or a baseline profile)";

/// Why a viewer of a re-encoded stream ends when its re-encode stops under it (its thread
/// died: a bug, counted as a panic), in the log and the final message.
const REENCODE_LOST_REASON: &str = "the stream's H.264 re-encode stopped";

/// Why a viewer of a stream with B-frames is refused when no re-encode can start, in the log
/// and the final message.
const BUSY_REASON: &str =
    "the stream's H.264 has B-frames and the server runs as many re-encodes as it may; publish with -bf 0 (or a baseline profile)";

/// Why the session ended, for the final message.
type End = Option<(Definition, Option<&'static str>)>;

/// Runs a play session until it ends. The grant is held for the session's life.
pub(crate) async fn run(
    ctx: Arc<WebRtcContext>,
    mut session: PlaySession,
    name: StreamName,
    stream_id: String,
    out: Outbox,
    mut control: mpsc::Receiver<Control>,
) {
    let Some(mut sub) = session.take_subscriber() else {
        return;
    };
    tracing::info!(stream = %name, session = session.grant().session_id(), "WebRTC play admitted");
    let end = play(
        &ctx,
        &session,
        &name,
        &stream_id,
        &out,
        &mut control,
        &mut sub,
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
        Some((_, Some(BFRAMES_REASON | BUSY_REASON | TOO_LARGE_REASON | REENCODE_LOST_REASON))) => {
            EndReason::Unsupported
        }
        _ => EndReason::ClientClosed,
    }
}

#[allow(clippy::too_many_arguments)]
async fn play(
    ctx: &WebRtcContext,
    session: &PlaySession,
    name: &StreamName,
    stream_id: &str,
    out: &Outbox,
    control: &mut mpsc::Receiver<Control>,
    sub: &mut Subscriber,
) -> End {
    let live = ctx.hub.stream_stats(name.as_str()).is_some_and(|s| s.live);
    if !live {
        out.text(Reply::notification(
            Definition::PlayWaiting,
            stream_id,
            None,
        ))
        .await;
    }
    // Wait for the stream's configuration.
    let mut config = loop {
        tokio::select! {
            r = session.revoked() => return Some((Definition::PlayFinished, Some(revocation_reason(r)))),
            c = control.recv() => match c {
                None => return None,
                Some(Control::Stop) => return Some((Definition::PlayFinished, None)),
                Some(_) => out.text(Reply::error(Definition::NoSession, Some(stream_id))).await,
            },
            ev = sub.recv() => if let Event::Started(config) = ev { break config },
        }
    };
    // Probe the first frames for the codecs.
    let mut pending: Vec<Arc<SharedFrame>> = Vec::new();
    let mut video: Option<Codec> = config.config.video.as_ref().map(|_| Codec::H264);
    let mut audio = false;
    let mut aac = 0u32;
    // The stream's video re-encoded without B-frames, once its frames show them.
    let mut reencoded: Option<VideoFeed> = None;
    let probe_end = tokio::time::sleep(CODEC_PROBE_TIME);
    tokio::pin!(probe_end);
    // A browser publisher's stream carries Opus and, for RTMP and SRT viewers, AAC made from
    // it: prefer the Opus, so look at a few AAC frames before settling for them.
    while !(video.is_some() && (audio || aac >= AAC_FRAMES_BEFORE_TRANSCODE)) {
        tokio::select! {
            () = &mut probe_end => break,
            r = session.revoked() => return Some((Definition::PlayFinished, Some(revocation_reason(r)))),
            c = control.recv() => match c {
                None => return None,
                Some(Control::Stop) => return Some((Definition::PlayFinished, None)),
                Some(_) => out.text(Reply::error(Definition::NoSession, Some(stream_id))).await,
            },
            ev = sub.recv() => match ev {
                Event::Started(c) => config = c,
                Event::Ended => return Some((Definition::PlayFinished, Some("stream ended"))),
                Event::Frame(f) => {
                    if has_bframes(&f) && reencoded.is_none() {
                        match reencode(ctx, name, stream_id, out, &config).await {
                            Ok(feed) => {
                                pending.retain(|p| p.frame.track != TrackKind::Video);
                                reencoded = Some(feed);
                            }
                            Err(end) => return end,
                        }
                    }
                    if reencoded.is_some() && f.frame.track == TrackKind::Video {
                        video = video.or(Some(Codec::H264));
                        continue;
                    }
                    match f.frame.codec {
                        Codec::H264 | Codec::Vp8 => video = video.or(Some(f.frame.codec)),
                        Codec::Opus => audio = true,
                        Codec::Aac => aac += 1,
                    }
                    push_pending(&mut pending, f);
                }
            },
        }
    }
    // AAC reaches browsers as Opus, from the stream's one transcode.
    let mut opus: Option<OpusFeed> = (!audio && aac > 0 && config.config.audio.is_some())
        .then(|| ctx.opus.join(&ctx.hub, name.as_str()));
    let mut opus_pending: Vec<Arc<SharedFrame>> = Vec::new();
    let audio = audio || opus.is_some();
    let video_specs: Vec<CodecSpec> = match video {
        Some(Codec::Vp8) => vec![CodecSpec::vp8(96)],
        Some(_) => h264_profile_ids(config.config.video.as_ref())
            .iter()
            .zip(H264_PAYLOAD_TYPES)
            .map(|(id, pt)| CodecSpec::h264(pt, id))
            .collect(),
        None => Vec::new(),
    };
    // A place among the peer connections negotiating at once, until this one connects.
    let Some(negotiating) = ctx.counts.negotiate() else {
        tracing::warn!(stream = %name, "WebRTC play refused: too many negotiations at once");
        out.text(Reply::error(Definition::ServerBusy, Some(stream_id)))
            .await;
        return None;
    };
    let mut negotiating = Some(negotiating);
    let (events_tx, mut events) = mpsc::channel(PEER_EVENT_CAPACITY);
    let peer = match PlayPeer::new(&ctx.ice, video_specs, audio, events_tx).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(stream = %name, error = %e, "cannot create peer connection");
            out.text(Reply::error(Definition::ServerError, Some(stream_id)))
                .await;
            return None;
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
            return None;
        }
    }
    let mut sender = Sender::new(&peer, video);
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
                    match peer.accept_answer(&sdp).await {
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
                    if let Err(e) = peer.add_candidate(candidate, label, mid).await {
                        tracing::debug!(stream = %name, error = %e, "candidate ignored");
                    }
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
                        out.text(Reply::notification(Definition::PlayStarted, stream_id, None)).await;
                        ctx.keyframes.request(name.as_str(), Instant::now());
                        while let Some(ev) = sub.try_recv() {
                            match ev {
                                Event::Frame(f) if reencoded.is_some() && f.frame.track == TrackKind::Video => {}
                                Event::Frame(f) => push_pending(&mut pending, f),
                                Event::Started(c) => config = c,
                                Event::Ended => {}
                            }
                        }
                        if let Some(feed) = opus.as_mut() {
                            while let Some(f) = feed.try_recv() {
                                push_pending(&mut opus_pending, f);
                            }
                        }
                        if let Some(feed) = reencoded.as_mut() {
                            feed.request_keyframe();
                            while let Some(f) = feed.try_recv() {
                                push_pending(&mut pending, f);
                            }
                        }
                        sender.start(
                            std::mem::take(&mut pending),
                            std::mem::take(&mut opus_pending),
                            reencoded.is_some(),
                        );
                        if let Err(stop) = sender.flush(&config).await {
                            match after_stop(ctx, name, stream_id, out, stop, &config).await {
                                Ok(feed) => {
                                    sender.reencode();
                                    reencoded = Some(feed);
                                }
                                Err(end) => break end,
                            }
                        }
                    }
                }
                Some(PeerEvent::State(Connection::Gone)) => break Some((Definition::PlayFinished, Some("connection lost"))),
                Some(PeerEvent::KeyframeRequest) => {
                    ctx.keyframes.request(name.as_str(), Instant::now());
                    if let Some(feed) = &reencoded {
                        feed.request_keyframe();
                    }
                }
                Some(PeerEvent::Track(_)) => {}
            },
            ev = sub.recv(), if connected => match ev {
                Event::Started(c) => config = c,
                Event::Ended => break Some((Definition::PlayFinished, Some("stream ended"))),
                // The sound comes from the transcode, the picture from the re-encode.
                Event::Frame(f) if opus.is_some() && f.frame.track == TrackKind::Audio => {}
                Event::Frame(f) if reencoded.is_some() && f.frame.track == TrackKind::Video => {}
                Event::Frame(f) => sender.push(Instant::now(), f, false),
            },
            f = next_video(&mut reencoded) => match f {
                None => {
                    tracing::warn!(stream = %name, "WebRTC play ended: {REENCODE_LOST_REASON}");
                    out.text(Reply::error(Definition::ServerError, Some(stream_id))).await;
                    break Some((Definition::PlayFinished, Some(REENCODE_LOST_REASON)));
                }
                Some(f) if connected => sender.push(Instant::now(), f, true),
                Some(f) => push_pending(&mut pending, f),
            },
            f = next_opus(&mut opus) => match f {
                None => opus = None,
                Some(f) if connected => sender.push(Instant::now(), f, false),
                Some(f) => push_pending(&mut opus_pending, f),
            },
            () = sleep_until(due), if connected && due.is_some() => {
                if let Err(stop) = sender.release(Instant::now(), &config).await {
                    match after_stop(ctx, name, stream_id, out, stop, &config).await {
                        Ok(feed) => {
                            sender.reencode();
                            reencoded = Some(feed);
                        }
                        Err(end) => break end,
                    }
                }
            },
            _ = reports.tick(), if connected => sender.report_all().await,
            () = &mut deadline, if !connected => {
                out.text(Reply::error(Definition::Timeout, Some(stream_id))).await;
                break None;
            }
        }
    };
    peer.close().await;
    end
}

/// Sleeps until `due`; never wakes without one.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The next frame of the viewer's Opus feed; never ready without one.
async fn next_opus(feed: &mut Option<OpusFeed>) -> Option<Arc<SharedFrame>> {
    match feed {
        Some(f) => f.recv().await,
        None => std::future::pending().await,
    }
}

/// The next frame of the viewer's H.264 re-encode; never ready without one.
async fn next_video(feed: &mut Option<VideoFeed>) -> Option<Arc<SharedFrame>> {
    match feed {
        Some(f) => f.recv().await,
        None => std::future::pending().await,
    }
}

/// What writing to a viewer that stopped comes to: the end of the session, or, for a stream
/// that turned out to have B-frames, its re-encode.
async fn after_stop(
    ctx: &WebRtcContext,
    name: &StreamName,
    stream_id: &str,
    out: &Outbox,
    stop: Stop,
    config: &SharedConfig,
) -> Result<VideoFeed, End> {
    match stop {
        Stop::Gone => Err(Some((Definition::PlayFinished, Some("connection lost")))),
        Stop::BFrames => reencode(ctx, name, stream_id, out, config).await,
    }
}

/// A viewer of a stream with B-frames: joins the stream's re-encode without them, or is
/// refused (when the policy says so, when the stream's pictures are too large, or when no
/// re-encode can start).
async fn reencode(
    ctx: &WebRtcContext,
    name: &StreamName,
    stream_id: &str,
    out: &Outbox,
    config: &SharedConfig,
) -> Result<VideoFeed, End> {
    if ctx.limits.bframes == BFramesPolicy::Refuse {
        return Err(refuse_bframes(name, stream_id, out).await);
    }
    if let Some(Err(e)) = config.config.video.as_ref().map(AvcReencoder::takes) {
        tracing::warn!(stream = %name, error = %e, "WebRTC play refused: {TOO_LARGE_REASON}");
        out.text(Reply::error(
            Definition::BFramesUnsupported,
            Some(stream_id),
        ))
        .await;
        return Err(Some((Definition::PlayFinished, Some(TOO_LARGE_REASON))));
    }
    match ctx.video.join(&ctx.hub, name.as_str()) {
        Ok(feed) => {
            tracing::info!(stream = %name, "WebRTC viewer takes the stream's H.264 re-encoded without B-frames");
            Ok(feed)
        }
        Err(e) => {
            tracing::warn!(stream = %name, error = %e, "WebRTC play refused: {BUSY_REASON}");
            out.text(Reply::error(Definition::HighResourceUsage, Some(stream_id)))
                .await;
            Err(Some((Definition::PlayFinished, Some(BUSY_REASON))))
        }
    }
}

/// Whether a frame shows that its stream has B-frames (presentation order differs from
/// decoding order), which browsers' WebRTC receivers do not reorder.
fn has_bframes(f: &SharedFrame) -> bool {
    f.frame.codec == Codec::H264 && f.frame.cts() != 0
}

/// Refuses a viewer of a stream with B-frames: a log line, an `error`, and the reason in the
/// final notification.
async fn refuse_bframes(name: &StreamName, stream_id: &str, out: &Outbox) -> End {
    tracing::warn!(stream = %name, "WebRTC play refused: {BFRAMES_REASON}");
    out.text(Reply::error(
        Definition::BFramesUnsupported,
        Some(stream_id),
    ))
    .await;
    Some((Definition::PlayFinished, Some(BFRAMES_REASON)))
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
    /// Video is skipped until a keyframe (at start, and after a start backlog too long).
    need_keyframe: bool,
    /// Whether the video comes from the stream's re-encode: the relay's own is dropped.
    reencoding: bool,
    backlog: Vec<Arc<SharedFrame>>,
    /// Live frames, released on the media clock, each with whether it was re-encoded.
    pacer: Pacer<(Arc<SharedFrame>, bool)>,
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

/// Why frames can no longer be written to a viewer.
enum Stop {
    /// The viewer's connection is gone.
    Gone,
    /// The stream turned out to have B-frames.
    BFrames,
}

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
            reencoding: false,
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
    /// With `reencoding`, the video in `pending` is the re-encode's.
    fn start(
        &mut self,
        pending: Vec<Arc<SharedFrame>>,
        opus: Vec<Arc<SharedFrame>>,
        reencoding: bool,
    ) {
        self.reencoding = reencoding;
        if self.video.is_some() {
            let video: Vec<Arc<SharedFrame>> = pending
                .into_iter()
                .filter(|f| f.frame.track == TrackKind::Video)
                .collect();
            self.start_backlog(video, Vec::new());
        } else {
            self.start_backlog(pending, opus);
        }
    }

    /// The backlog of [`Sender::start`]; opus frames are kept from its first frame on.
    fn start_backlog(&mut self, pending: Vec<Arc<SharedFrame>>, opus: Vec<Arc<SharedFrame>>) {
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
        if let Some(from) = self.backlog.first().map(|f| f.frame.pts) {
            self.backlog
                .extend(opus.into_iter().filter(|f| f.frame.pts >= from));
        } else if self.video.is_none() {
            self.backlog = opus;
        }
    }

    /// From now on the video is the re-encode's, starting at its next keyframe.
    fn reencode(&mut self) {
        self.reencoding = true;
        self.need_keyframe = true;
    }

    async fn flush(&mut self, config: &SharedConfig) -> Result<(), Stop> {
        let reencoded = self.reencoding;
        for f in std::mem::take(&mut self.backlog) {
            self.send(&f, reencoded, config).await?;
        }
        Ok(())
    }

    /// Queues a live frame that arrived `now` for its time on the media clock; `reencoded`
    /// when it comes from the stream's re-encode.
    fn push(&mut self, now: Instant, f: Arc<SharedFrame>, reencoded: bool) {
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
        if self.pacer.push(now, pts, lane, (f, reencoded), bytes) == Pushed::Dropped {
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
    async fn release(&mut self, now: Instant, config: &SharedConfig) -> Result<(), Stop> {
        while let Some((f, reencoded)) = self.pacer.pop(now) {
            if self.clock.is_none() {
                self.clock = Some(MediaClock {
                    wall: SystemTime::now(),
                    instant: Instant::now(),
                    pts: f.frame.pts,
                });
            }
            self.send(&f, reencoded, config).await?;
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

    async fn send(
        &mut self,
        shared: &SharedFrame,
        reencoded: bool,
        config: &SharedConfig,
    ) -> Result<(), Stop> {
        let frame = &shared.frame;
        if frame.track == TrackKind::Video && !reencoded {
            if self.reencoding {
                return Ok(());
            }
            if has_bframes(shared) {
                return Err(Stop::BFrames);
            }
        }
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
        let source_sets = config.config.video.as_ref().filter(|_| !reencoded);
        let encoded = shared.encoded(WireFormat::Rtp, |f| encode_payloads(f, source_sets));
        let mut payloads = Payloads::new(encoded).peekable();
        while let Some(payload) = payloads.next() {
            let stamp = stamper.stamp(frame.pts, payloads.peek().is_none());
            if track.write(stamp, payload).await.is_err() {
                return Err(Stop::Gone);
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
