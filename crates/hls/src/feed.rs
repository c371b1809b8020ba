//! One feed per stream that HLS or DASH viewers watch: a task reading the stream from the
//! relay as the server's own viewer (H.264 and AAC; a browser publisher's Opus through the
//! derived AAC track), cutting it into segments once for every viewer, and publishing each
//! new part as an immutable [`Snapshot`] that requests read without locks and wait on
//! (blocking playlist reloads, preload hints).
//!
//! A feed starts at the first request for its stream and stops once no request has touched
//! it for [`FeedSettings::idle`]; how many run at once is capped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use streamgate_media::fmp4::{self, Tracks};
use streamgate_media::{sps_display_size, AacConfig, AvcConfig, Codec, TrackKind};
use streamgate_relay::{Event, Hub, Pick, Selection, Subscriber, Unavailable, WireFormat};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::segmenter::{Segment, Segmenter, SegmenterSettings};

/// How a stream's feeds run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedSettings {
    /// How segments are cut and kept.
    pub segmenter: SegmenterSettings,
    /// A feed nobody has asked for in this long stops.
    pub idle: Duration,
    /// Most feeds at once (streams watched over HTTP).
    pub max_feeds: usize,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            segmenter: SegmenterSettings::default(),
            idle: Duration::from_secs(30),
            max_feeds: 1000,
        }
    }
}

/// What a feed's stream is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedState {
    /// Not live yet (or not since the feed started).
    Waiting,
    /// Live.
    Live,
    /// Its publish ended: the playlists end.
    Ended,
    /// Live, but in a form HLS and DASH cannot carry (the reason).
    Refused(&'static str),
}

/// Why HLS and DASH viewers of a VP8 stream get nothing.
pub const VP8_REASON: &str = "the stream's video is VP8, which HLS and DASH (CMAF) cannot carry \
     here; the publisher must send H.264 (publish.html?codec=h264)";

/// The initialization segments of one configuration.
#[derive(Debug, Clone)]
pub struct Inits {
    /// Their version (the segments' [`Segment::init`]).
    pub version: u64,
    /// Both tracks (HLS).
    pub muxed: Bytes,
    /// The video track alone (DASH); empty without video.
    pub video: Bytes,
    /// The sound track alone (DASH); empty without sound.
    pub audio: Bytes,
}

impl Inits {
    fn new(version: u64, video: Option<&AvcConfig>, audio: Option<&AacConfig>) -> Self {
        let only = |video, audio| fmp4::init_segment(Tracks { video, audio });
        Self {
            version,
            muxed: only(video, audio),
            video: video.map_or_else(Bytes::new, |v| only(Some(v), None)),
            audio: audio.map_or_else(Bytes::new, |a| only(None, Some(a))),
        }
    }

    /// The initialization segment of one track, or of both.
    pub fn of(&self, track: Option<TrackKind>) -> &Bytes {
        match track {
            None => &self.muxed,
            Some(TrackKind::Video) => &self.video,
            Some(TrackKind::Audio) => &self.audio,
        }
    }
}

/// The picture's description, for the master playlist and the MPD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoInfo {
    /// RFC 6381 codec (`avc1.64001f`).
    pub codec: String,
    /// Picture size, when the SPS tells it.
    pub size: Option<(u32, u32)>,
}

/// The sound's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioInfo {
    /// RFC 6381 codec (`mp4a.40.2`).
    pub codec: String,
    /// Sample rate (the sound track's timescale).
    pub sample_rate: u32,
    /// AAC channel configuration.
    pub channels: u8,
}

/// A stream's segments at one moment, shared by every request that reads it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// What the stream is doing.
    pub state: FeedState,
    /// The initialization segments of the segments kept and the current one (last).
    pub inits: Vec<Arc<Inits>>,
    /// The picture, if the segments carry one.
    pub video: Option<VideoInfo>,
    /// The sound, if the segments carry one.
    pub audio: Option<AudioInfo>,
    /// The segments kept, oldest first; the last may be growing.
    pub segments: Vec<Segment>,
    /// The playlists' target duration: the longest segment yet, at least the target.
    pub target: Duration,
    /// The part target (LL-HLS).
    pub part_target: Duration,
    /// Peak bit rate of the segments kept, bits per second.
    pub bandwidth: u64,
    /// Discontinuities before the first segment kept.
    pub discontinuity_sequence: u64,
}

impl Snapshot {
    fn waiting(settings: &SegmenterSettings) -> Self {
        Self {
            state: FeedState::Waiting,
            inits: Vec::new(),
            video: None,
            audio: None,
            segments: Vec::new(),
            target: settings.target,
            part_target: settings.part_target,
            bandwidth: 0,
            discontinuity_sequence: 0,
        }
    }

    /// The RFC 6381 codecs of both tracks (`avc1.64001f,mp4a.40.2`).
    pub fn codecs(&self) -> String {
        let list: Vec<&str> = [
            self.video.as_ref().map(|v| v.codec.as_str()),
            self.audio.as_ref().map(|a| a.codec.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        list.join(",")
    }

    /// The initialization segments of `version`, if kept.
    pub fn init(&self, version: u64) -> Option<&Arc<Inits>> {
        self.inits.iter().find(|i| i.version == version)
    }

    /// Whether the stream has been configured (its initialization segment is known).
    pub fn configured(&self) -> bool {
        !self.inits.is_empty()
    }

    /// The segment numbered `msn`, if kept.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.first()?.msn;
        self.segments
            .get(usize::try_from(msn.checked_sub(first)?).ok()?)
    }

    /// The number of the next part to appear: (segment, part). The part after the last
    /// one of a complete segment is the first of the next segment.
    pub fn next_part(&self) -> Option<(u64, usize)> {
        let last = self.segments.last()?;
        Some(if last.complete {
            (last.msn + 1, 0)
        } else {
            (last.msn, last.parts.len())
        })
    }

    /// Whether part `part` of segment `msn` exists (`None`: the whole segment, complete).
    pub fn has(&self, msn: u64, part: Option<usize>) -> bool {
        match (self.segment(msn), part) {
            (Some(s), Some(p)) => p < s.parts.len(),
            (Some(s), None) => s.complete,
            (None, _) => false,
        }
    }

    /// Whether there is something to play: a complete segment, or a part for LL-HLS.
    pub fn playable(&self, parts: bool) -> bool {
        self.segments
            .iter()
            .any(|s| s.complete || (parts && !s.parts.is_empty()))
    }
}

/// A feed's state and the way to its task's snapshots.
#[derive(Debug)]
pub struct Feed {
    /// Random, so that ETags differ between two feeds of the same stream.
    id: u64,
    name: String,
    rx: watch::Receiver<Arc<Snapshot>>,
    /// When a request last touched it, in milliseconds since [`Feeds`]' start.
    used: AtomicU64,
}

impl Feed {
    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its random id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.rx.borrow())
    }

    /// Waits up to `timeout` for a snapshot that satisfies `ready`; the latest one if none
    /// does by then (or the feed stopped).
    pub async fn wait(
        &self,
        timeout: Duration,
        ready: impl FnMut(&Arc<Snapshot>) -> bool,
    ) -> (Arc<Snapshot>, bool) {
        let mut rx = self.rx.clone();
        let found = match tokio::time::timeout(timeout, rx.wait_for(ready)).await {
            Ok(Ok(s)) => Some(Arc::clone(&s)),
            _ => None,
        };
        match found {
            Some(s) => (s, true),
            None => (self.snapshot(), false),
        }
    }
}

/// Asks the publisher of a stream (by name) for a keyframe, if it can be asked (a browser
/// publisher sends keyframes only when asked; an encoder keeps its own interval).
pub type KeyframeRequester = Arc<dyn Fn(&str) + Send + Sync>;

/// How often a feed asks for the keyframe that would end an overlong segment.
const KEYFRAME_ASK_INTERVAL: Duration = Duration::from_secs(1);

/// The feeds running, by stream name.
pub struct Feeds {
    hub: Hub,
    keyframes: KeyframeRequester,
    settings: FeedSettings,
    map: Mutex<HashMap<String, Arc<Feed>>>,
    start: Instant,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Feeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feeds")
            .field("settings", &self.settings)
            .field("feeds", &self.len())
            .finish()
    }
}

impl Feeds {
    /// No feeds yet; they read from `hub`, ask publishers for keyframes with `keyframes`,
    /// and stop at `shutdown`.
    pub fn new(
        hub: Hub,
        settings: FeedSettings,
        keyframes: KeyframeRequester,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            hub,
            keyframes,
            settings,
            map: Mutex::new(HashMap::new()),
            start: Instant::now(),
            shutdown,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &FeedSettings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Feed>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How many feeds run.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The feed of `name`, started if none runs (on the current runtime), and marked used;
    /// `None` when as many run as allowed.
    pub fn get(self: &Arc<Self>, name: &str) -> Option<Arc<Feed>> {
        let now = self.now_ms();
        let mut map = self.lock();
        if let Some(feed) = map.get(name) {
            feed.used.store(now, Ordering::Relaxed);
            return Some(Arc::clone(feed));
        }
        if map.len() >= self.settings.max_feeds {
            return None;
        }
        let (tx, rx) = watch::channel(Arc::new(Snapshot::waiting(&self.settings.segmenter)));
        let mut id = [0; 8];
        // Only ETags depend on it: a failing generator leaves them distinct by stream.
        let _ = getrandom::fill(&mut id);
        let feed = Arc::new(Feed {
            id: u64::from_le_bytes(id),
            name: name.to_owned(),
            rx,
            used: AtomicU64::new(now),
        });
        map.insert(name.to_owned(), Arc::clone(&feed));
        drop(map);
        let subscriber = self.hub.subscribe_as(name, Some(WireFormat::Cmaf));
        tokio::spawn(run(Arc::clone(self), Arc::clone(&feed), subscriber, tx));
        Some(feed)
    }

    /// Whether the feed of `name` runs or could start.
    pub fn has_room(&self, name: &str) -> bool {
        let map = self.lock();
        map.contains_key(name) || map.len() < self.settings.max_feeds
    }

    /// Marks `feed` used now.
    pub fn touch(&self, feed: &Feed) {
        feed.used.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Removes `feed` if nobody has used it for the idle time; whether it was removed.
    fn remove_if_idle(&self, feed: &Arc<Feed>) -> bool {
        let idle_ms = u64::try_from(self.settings.idle.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        let mut map = self.lock();
        if now.saturating_sub(feed.used.load(Ordering::Relaxed)) < idle_ms {
            return false;
        }
        if map.get(&feed.name).is_some_and(|f| Arc::ptr_eq(f, feed)) {
            map.remove(&feed.name);
        }
        true
    }

    fn remove(&self, feed: &Arc<Feed>) {
        let mut map = self.lock();
        if map.get(&feed.name).is_some_and(|f| Arc::ptr_eq(f, feed)) {
            map.remove(&feed.name);
        }
    }
}

/// How often a feed checks whether it is still used.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// A feed's task: the relay's frames in, snapshots out, until idle or shutdown.
async fn run(
    feeds: Arc<Feeds>,
    feed: Arc<Feed>,
    mut subscriber: Subscriber,
    tx: watch::Sender<Arc<Snapshot>>,
) {
    let mut maker = SnapshotMaker::new(feeds.settings.segmenter);
    let mut asked: Option<Instant> = None;
    let mut check = tokio::time::interval(IDLE_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::debug!(stream = feed.name(), "hls feed started");
    loop {
        let event = tokio::select! {
            () = feeds.shutdown.cancelled() => break,
            _ = check.tick() => {
                if feeds.remove_if_idle(&feed) {
                    break;
                }
                continue;
            }
            event = subscriber.recv() => event,
        };
        if let Some(snapshot) = maker.take(event, SystemTime::now()) {
            tx.send_replace(Arc::new(snapshot));
        }
        if maker.wants_keyframe() && asked.is_none_or(|t| t.elapsed() >= KEYFRAME_ASK_INTERVAL) {
            asked = Some(Instant::now());
            (feeds.keyframes)(feed.name());
        }
    }
    feeds.remove(&feed);
    tracing::debug!(stream = feed.name(), "hls feed stopped");
}

/// How long (stream time) a feed waits for the decoder configuration of a track the stream
/// announced (MPEG-TS ingest learns the sound's with its first frame) before it starts
/// without it: starting early would make a first initialization segment without that track,
/// which players cannot switch from.
const CONFIG_WAIT_TICKS: i64 = 2 * streamgate_media::CLOCK_HZ;

/// A configuration still missing the decoder configuration of a track it announces.
#[derive(Debug)]
struct Pending {
    video: Option<AvcConfig>,
    audio: Option<AacConfig>,
    /// Decode time of the first frame seen while waiting.
    first_dts: Option<i64>,
}

/// The segmenter and what a snapshot says besides its segments: sans IO, relay events in,
/// a snapshot out whenever something a request could wait for has changed.
#[derive(Debug)]
pub struct SnapshotMaker {
    segmenter: Segmenter,
    pending: Option<Pending>,
    state: FeedState,
    inits: Vec<Arc<Inits>>,
    video: Option<VideoInfo>,
    audio: Option<AudioInfo>,
}

impl SnapshotMaker {
    /// Nothing yet.
    pub fn new(settings: SegmenterSettings) -> Self {
        Self {
            segmenter: Segmenter::new(settings),
            pending: None,
            state: FeedState::Waiting,
            inits: Vec::new(),
            video: None,
            audio: None,
        }
    }

    /// Takes one relay event that arrived at `now`; a new snapshot if it changed what
    /// requests see (a part or a segment ended, the configuration or the state changed).
    pub fn take(&mut self, event: Event, now: SystemTime) -> Option<Snapshot> {
        match event {
            Event::Started(config, selection) => {
                self.state = match refusal(selection) {
                    Some(reason) => FeedState::Refused(reason),
                    None => FeedState::Live,
                };
                let wants_video = selection.video.codec() == Some(Codec::H264);
                let wants_audio = selection.audio.codec() == Some(Codec::Aac);
                let video = config.config.video.as_ref().filter(|_| wants_video);
                let audio = config.config.audio.as_ref().filter(|_| wants_audio);
                if (wants_video && video.is_none()) || (wants_audio && audio.is_none()) {
                    self.pending = Some(Pending {
                        video: video.cloned(),
                        audio: audio.cloned(),
                        first_dts: None,
                    });
                    return None;
                }
                self.pending = None;
                self.configure(video, audio);
                Some(self.snapshot())
            }
            Event::Frame(frame) => {
                if let Some(pending) = &mut self.pending {
                    let first = *pending.first_dts.get_or_insert(frame.frame.dts);
                    if frame.frame.dts - first < CONFIG_WAIT_TICKS {
                        return None;
                    }
                    let Pending { video, audio, .. } = self.pending.take()?;
                    self.configure(video.as_ref(), audio.as_ref());
                }
                let before = self.progress();
                self.segmenter.push(frame.frame.clone(), now);
                (self.progress() != before).then(|| self.snapshot())
            }
            Event::Ended => {
                self.segmenter.finish();
                self.state = FeedState::Ended;
                Some(self.snapshot())
            }
        }
    }

    fn configure(&mut self, video: Option<&AvcConfig>, audio: Option<&AacConfig>) {
        self.segmenter.configure(video, audio);
        self.describe(video, audio);
    }

    fn describe(&mut self, video: Option<&AvcConfig>, audio: Option<&AacConfig>) {
        self.video = video.map(|v| VideoInfo {
            codec: v.codec_string(),
            size: v
                .sps
                .first()
                .and_then(|sps| sps_display_size(sps).ok())
                .map(|p| (p.width, p.height)),
        });
        self.audio = audio.map(|a| AudioInfo {
            codec: format!("mp4a.40.{}", a.object_type),
            sample_rate: a.sample_rate,
            channels: a.channel_config,
        });
        if let Some((version, _)) = self.segmenter.init() {
            if self.inits.last().is_none_or(|i| i.version != version) {
                self.inits.push(Arc::new(Inits::new(version, video, audio)));
            }
        }
        // Only the versions segments still use, and the current one.
        let oldest = self.segmenter.segments().front().map(|s| s.init);
        let current = self.inits.last().map(|i| i.version);
        self.inits
            .retain(|i| oldest.is_some_and(|o| i.version >= o) || Some(i.version) == current);
    }

    /// Whether the segment being made waits only for a keyframe.
    pub fn wants_keyframe(&self) -> bool {
        self.segmenter.wants_keyframe()
    }

    /// What requests wait for: the last segment's number, its parts, whether complete.
    fn progress(&self) -> Option<(u64, usize, bool)> {
        self.segmenter
            .segments()
            .back()
            .map(|s| (s.msn, s.parts.len(), s.complete))
    }

    fn snapshot(&self) -> Snapshot {
        let segments: Vec<Segment> = self.segmenter.segments().iter().cloned().collect();
        let bandwidth = segments
            .iter()
            .filter(|s| !s.duration().is_zero())
            .map(|s| (s.len() as f64 * 8.0 / s.duration().as_secs_f64()) as u64)
            .max()
            .unwrap_or(0);
        let settings = self.segmenter.settings();
        Snapshot {
            state: self.state,
            inits: self.inits.clone(),
            video: self.video.clone(),
            audio: self.audio.clone(),
            segments,
            target: self.segmenter.longest_segment(),
            part_target: settings.part_target,
            bandwidth,
            discontinuity_sequence: self.segmenter.discontinuity_sequence(),
        }
    }
}

/// Why HLS and DASH viewers get nothing of a stream: a picture CMAF cannot carry here.
fn refusal(selection: Selection) -> Option<&'static str> {
    match selection.video {
        Pick::Unavailable(Unavailable::NotCarried(_)) => Some(VP8_REASON),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    use bytes::Bytes;
    use streamgate_media::{ms_to_ticks, Frame, StreamConfig, Tracks as MediaTracks, VideoTrack};
    use streamgate_relay::{SharedConfig, SharedFrame};

    use crate::playlist::{self, MediaOptions};

    fn avc() -> AvcConfig {
        AvcConfig::from_parameter_sets(
            vec![Bytes::from_static(&[
                0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x80,
            ])],
            vec![Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80])],
        )
        .unwrap()
    }

    fn started(video: bool, audio: Option<AacConfig>, audio_codec: Codec) -> Event {
        let tracks = MediaTracks {
            video: Some(VideoTrack {
                codec: Codec::H264,
                bframes: false,
            }),
            audio: Some(audio_codec),
        };
        let config = StreamConfig {
            video: video.then(avc),
            audio,
            tracks,
            ..StreamConfig::default()
        };
        let selection = WireFormat::Cmaf.select(&tracks);
        Event::Started(Arc::new(SharedConfig::new(config)), selection)
    }

    fn frame(track: TrackKind, ms: i64, keyframe: bool) -> Event {
        let codec = match track {
            TrackKind::Video => Codec::H264,
            TrackKind::Audio => Codec::Aac,
        };
        Event::Frame(Arc::new(SharedFrame::new(Frame {
            track,
            codec,
            pts: ms_to_ticks(ms),
            dts: ms_to_ticks(ms),
            keyframe,
            payload: Bytes::from(vec![7; 64]),
        })))
    }

    fn at(ms: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_800_000_000_000 + ms.unsigned_abs())
    }

    /// Feeds `seconds` of 25 frames/s video (a keyframe a second) and 48 kHz AAC from `from`
    /// ms; returns the last snapshot made.
    fn feed(m: &mut SnapshotMaker, from: i64, seconds: i64) -> Option<Snapshot> {
        let mut last = None;
        let mut k = 0;
        for n in 0..seconds * 25 {
            let ms = from + n * 40;
            while from + k * 1024 * 1000 / 48_000 <= ms {
                let a = from + k * 1024 * 1000 / 48_000;
                last = m.take(frame(TrackKind::Audio, a, true), at(a)).or(last);
                k += 1;
            }
            last = m
                .take(frame(TrackKind::Video, ms, n % 25 == 0), at(ms))
                .or(last);
        }
        last
    }

    fn aac() -> AacConfig {
        AacConfig::new(2, 3, 2).unwrap()
    }

    #[test]
    fn playlists_and_manifest_from_a_live_stream() {
        let mut m = SnapshotMaker::new(SegmenterSettings::default());
        let s = m
            .take(started(true, Some(aac()), Codec::Aac), at(0))
            .unwrap();
        assert_eq!(s.state, FeedState::Live);
        assert!(s.configured() && !s.playable(true));
        let s = feed(&mut m, 0, 9).unwrap();
        assert!(s.playable(false));
        assert_eq!(s.codecs(), "avc1.42c01e,mp4a.40.2");
        let master = playlist::master(&s, "cam1", "SID");
        assert!(
            master.contains("CODECS=\"avc1.42c01e,mp4a.40.2\""),
            "{master}"
        );
        assert!(master.contains("RESOLUTION=640x360"), "{master}");
        assert!(master.ends_with("cam1/media.m3u8?sid=SID\n"), "{master}");

        let ll = playlist::media(
            &s,
            MediaOptions {
                sid: "SID",
                low_latency: true,
            },
        );
        assert!(ll.contains("#EXT-X-TARGETDURATION:2\n"), "{ll}");
        assert!(ll.contains("#EXT-X-MEDIA-SEQUENCE:0\n"), "{ll}");
        assert!(ll.contains("#EXT-X-PART-INF:PART-TARGET=0.334\n"), "{ll}");
        assert!(ll.contains("#EXT-X-MAP:URI=\"init-1.mp4?sid=SID\""), "{ll}");
        let (msn, part) = s.next_part().unwrap();
        assert!(
            ll.contains(&format!(
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-{msn}.{part}.m4s?sid=SID\""
            )),
            "{ll}"
        );
        // Parts only for the last segments; a segment line for each complete one.
        let complete = s.segments.iter().filter(|x| x.complete).count();
        assert_eq!(ll.matches("#EXTINF:2.00000,").count(), complete);
        assert!(
            !ll.contains("part-0.0.m4s"),
            "old parts are not listed: {ll}"
        );
        assert!(
            ll.contains(&format!("part-{msn}.0.m4s")) || part == 0,
            "{ll}"
        );
        assert_eq!(
            ll.matches("#EXT-X-PROGRAM-DATE-TIME:").count(),
            s.segments.len()
        );

        let plain = playlist::media(
            &s,
            MediaOptions {
                sid: "SID",
                low_latency: false,
            },
        );
        assert!(!plain.contains("#EXT-X-PART") && !plain.contains("PRELOAD-HINT"));
        assert_eq!(plain.matches("#EXTINF:").count(), complete);

        let mpd = playlist::mpd(&s, "SID", "cam1.mpd?sid=SID", at(9_000));
        assert!(mpd.contains("type=\"dynamic\""), "{mpd}");
        assert!(
            mpd.contains("<Location>cam1.mpd?sid=SID</Location>"),
            "{mpd}"
        );
        assert!(mpd.contains("initialization=\"init-1-video.mp4?sid=SID\""));
        assert!(mpd.contains("media=\"seg-$Number$-audio.m4s?sid=SID\""));
        assert!(
            mpd.contains("availabilityStartTime=\"2027-01-15T08:00:00.000Z\""),
            "{mpd}"
        );
        // One S per complete segment per track, following on after the first.
        assert_eq!(mpd.matches("<S t=").count(), 2, "{mpd}");
        assert_eq!(mpd.matches("<S ").count(), 2 * complete, "{mpd}");

        // The publish ends: the playlists end, the MPD turns static.
        let s = m.take(Event::Ended, at(9_100)).unwrap();
        assert_eq!(s.state, FeedState::Ended);
        assert!(s.segments.iter().all(|x| x.complete));
        let ended = playlist::media(
            &s,
            MediaOptions {
                sid: "SID",
                low_latency: true,
            },
        );
        assert!(ended.ends_with("#EXT-X-ENDLIST\n") && !ended.contains("PRELOAD-HINT"));
        assert!(playlist::mpd(&s, "SID", "x", at(9_200)).contains("type=\"static\""));

        // The next publish: a discontinuity, and it stays counted once its segment has left
        // the window.
        m.take(started(true, Some(aac()), Codec::Aac), at(20_000));
        let s = feed(&mut m, 0, 3).unwrap();
        let text = playlist::media(
            &s,
            MediaOptions {
                sid: "SID",
                low_latency: false,
            },
        );
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
        let s = feed(&mut m, 3_000, 14).unwrap();
        assert_eq!(s.discontinuity_sequence, 1);
        let text = playlist::media(
            &s,
            MediaOptions {
                sid: "SID",
                low_latency: false,
            },
        );
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    }

    #[test]
    fn a_track_announced_without_its_configuration_is_awaited_for_a_while() {
        // MPEG-TS ingest knows the AAC configuration only with the first sound frame.
        let mut m = SnapshotMaker::new(SegmenterSettings::default());
        assert!(m.take(started(true, None, Codec::Aac), at(0)).is_none());
        assert!(feed(&mut m, 0, 1).is_none(), "nothing is cut meanwhile");
        let s = m
            .take(started(true, Some(aac()), Codec::Aac), at(1_000))
            .unwrap();
        assert!(s.audio.is_some() && s.inits.len() == 1);
        feed(&mut m, 1_000, 3);
        let s = m.take(Event::Ended, at(4_000)).unwrap();
        assert!(s.segments.iter().all(|x| !x.discontinuity));

        // When it never comes, the stream goes on without it after two seconds.
        let mut m = SnapshotMaker::new(SegmenterSettings::default());
        assert!(m.take(started(true, None, Codec::Aac), at(0)).is_none());
        let s = feed(&mut m, 0, 5).unwrap();
        assert!(s.audio.is_none() && s.video.is_some());
        assert!(s.playable(true));
    }

    #[test]
    fn a_browser_publish_reaches_hls_as_aac_and_vp8_is_refused() {
        let tracks = |video| MediaTracks {
            video: Some(VideoTrack {
                codec: video,
                bframes: false,
            }),
            audio: Some(Codec::Opus),
        };
        let select = |video| WireFormat::Cmaf.select(&tracks(video));
        assert_eq!(select(Codec::H264).audio.codec(), Some(Codec::Aac));
        assert_eq!(refusal(select(Codec::Vp8)), Some(VP8_REASON));
        let mut m = SnapshotMaker::new(SegmenterSettings::default());
        let config = StreamConfig {
            tracks: tracks(Codec::Vp8),
            audio: Some(aac()),
            ..StreamConfig::default()
        };
        let s = m
            .take(
                Event::Started(Arc::new(SharedConfig::new(config)), select(Codec::Vp8)),
                at(0),
            )
            .unwrap();
        assert_eq!(s.state, FeedState::Refused(VP8_REASON));
    }
}
