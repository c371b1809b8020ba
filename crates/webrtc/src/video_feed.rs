//! H.264 without B-frames for WebRTC viewers of streams that have them (x264's and OBS's
//! defaults: High profile, two or three B-frames), which browsers' WebRTC receivers do not
//! reorder.
//!
//! One re-encode runs per stream, whatever the number of viewers, and at most
//! [`WebRtcLimits::max_video_transcodes`] at once on the server. The first viewer that needs
//! it starts a task that subscribes to the stream in the relay and hands its video frames,
//! through a bounded channel, to a thread of its own: the codec work never runs on the
//! runtime's workers. The thread re-encodes ([`AvcReencoder`]) and broadcasts the frames, in
//! [`SharedFrame`]s, so their RTP payloads are produced once for every viewer. When the
//! thread falls behind, the task first leaves out the frames no other frame refers to (most
//! B-frames), which costs the picture nothing but their own time, and when that is not
//! enough drops the source's frames until its next keyframe instead of queueing without
//! bound. A viewer's keyframe request (at its start, or a PLI) makes the
//! next output picture a keyframe. When the last viewer drops its [`VideoFeed`] the task
//! and the thread stop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use streamgate_media::nal::{nal_type, split_avcc, AVCC_LENGTH_SIZE};
use streamgate_media::{AvcConfig, Codec, TrackKind};
use streamgate_relay::{Event, Hub, SharedFrame, Subscriber};
use streamgate_transcode::{AvcReencoder, AvcSettings};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::WebRtcLimits;

/// Re-encoded frames buffered per viewer: about 4 s at 30 frames/s. A viewer that falls
/// further behind loses the oldest frames and waits for the next keyframe.
pub const VIDEO_FEED_CAPACITY: usize = 128;

/// Source frames waiting for the codec thread; when it has this many, the source's frames
/// are dropped until its next keyframe.
const JOB_CAPACITY: usize = 32;

/// Jobs waiting above which frames that no other frame refers to are left out.
const DISPOSABLE_ABOVE: usize = JOB_CAPACITY / 4;

/// Output keyframe interval: 2 s at the source's frame rate, as encoders for the web use.
const KEYFRAME_SECONDS: f64 = 2.0;

/// What happens to a WebRTC viewer of a stream whose H.264 has B-frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BFramesPolicy {
    /// The stream's video is re-encoded without B-frames, once per stream.
    #[default]
    Transcode,
    /// The viewer is refused with `bframes_not_supported`.
    Refuse,
}

/// Why a viewer could not join a re-encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// As many re-encodes run as the server allows.
    #[error("the server runs as many H.264 re-encodes as it may ({0})")]
    Busy(usize),
    /// The codec thread could not be started.
    #[error("the H.264 re-encode could not start")]
    NoThread,
}

/// The running re-encodes, by stream name.
#[derive(Debug)]
pub struct VideoFeeds {
    feeds: Mutex<HashMap<String, Weak<Feed>>>,
    max: usize,
    bitrate_bps: u32,
}

/// One stream's re-encode; dropping the last reference stops it.
#[derive(Debug)]
struct Feed {
    tx: broadcast::Sender<Arc<SharedFrame>>,
    stop: CancellationToken,
    keyframe: Arc<AtomicBool>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One viewer's share of a stream's re-encode.
#[derive(Debug)]
pub struct VideoFeed {
    feed: Arc<Feed>,
    rx: broadcast::Receiver<Arc<SharedFrame>>,
    /// Whether frames were lost to lag since the last keyframe: the viewer waits for one.
    behind: bool,
}

impl VideoFeed {
    /// The next re-encoded frame; after frames were lost to lag, the next keyframe (one is
    /// requested).
    pub async fn recv(&mut self) -> Option<Arc<SharedFrame>> {
        loop {
            match self.rx.recv().await {
                Ok(f) => {
                    if let Some(f) = self.take(f) {
                        return Some(f);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => self.lagged(n),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next re-encoded frame if one is waiting.
    pub fn try_recv(&mut self) -> Option<Arc<SharedFrame>> {
        loop {
            match self.rx.try_recv() {
                Ok(f) => {
                    if let Some(f) = self.take(f) {
                        return Some(f);
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.lagged(n),
                Err(_) => return None,
            }
        }
    }

    /// Makes the next output picture a keyframe.
    pub fn request_keyframe(&self) {
        self.feed.keyframe.store(true, Ordering::Relaxed);
    }

    fn take(&mut self, f: Arc<SharedFrame>) -> Option<Arc<SharedFrame>> {
        if self.behind {
            if !f.frame.keyframe {
                return None;
            }
            self.behind = false;
        }
        Some(f)
    }

    fn lagged(&mut self, lost: u64) {
        tracing::debug!(lost, "WebRTC viewer fell behind the H.264 re-encode");
        self.behind = true;
        self.request_keyframe();
    }
}

impl VideoFeeds {
    /// The re-encodes under `limits` (their number and bit rate).
    pub fn new(limits: &WebRtcLimits) -> Self {
        Self {
            feeds: Mutex::new(HashMap::new()),
            max: limits.max_video_transcodes,
            bitrate_bps: limits.video_transcode_kbps.saturating_mul(1000),
        }
    }

    /// Joins the re-encode of `name`, starting it if no viewer runs it yet and fewer than
    /// the maximum run. The viewer's first picture is a keyframe.
    pub fn join(&self, hub: &Hub, name: &str) -> Result<VideoFeed, FeedError> {
        let mut feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        feeds.retain(|_, f| f.strong_count() > 0);
        if let Some(feed) = feeds.get(name).and_then(Weak::upgrade) {
            let rx = feed.tx.subscribe();
            let viewer = VideoFeed {
                feed,
                rx,
                behind: false,
            };
            viewer.request_keyframe();
            return Ok(viewer);
        }
        if feeds.len() >= self.max {
            return Err(FeedError::Busy(self.max));
        }
        let (tx, rx) = broadcast::channel(VIDEO_FEED_CAPACITY);
        let (jobs, job_rx) = mpsc::channel(JOB_CAPACITY);
        let keyframe = Arc::new(AtomicBool::new(true));
        let sub = hub.subscribe(name);
        let bitrate_bps = self.bitrate_bps;
        let thread = {
            let (tx, keyframe, name) = (tx.clone(), Arc::clone(&keyframe), name.to_owned());
            std::thread::Builder::new()
                .name("h264-reencode".into())
                .spawn(move || encode(job_rx, tx, keyframe, bitrate_bps, &name))
        };
        if let Err(e) = thread {
            tracing::warn!(stream = %name, error = %e, "cannot start the H.264 re-encode thread");
            return Err(FeedError::NoThread);
        }
        let feed = Arc::new(Feed {
            tx,
            stop: CancellationToken::new(),
            keyframe,
        });
        feeds.insert(name.to_owned(), Arc::downgrade(&feed));
        drop(feeds);
        tokio::spawn(forward(sub, jobs, feed.stop.clone()));
        Ok(VideoFeed {
            feed,
            rx,
            behind: false,
        })
    }

    /// Number of re-encodes running now.
    pub fn running(&self) -> usize {
        let feeds = self.feeds.lock().unwrap_or_else(PoisonError::into_inner);
        feeds.values().filter(|f| f.strong_count() > 0).count()
    }
}

/// Work for the codec thread.
#[derive(Debug)]
enum Job {
    /// The source's configuration (a new sequence header), and its frame rate if the
    /// encoder announced one.
    Config(AvcConfig, Option<f64>),
    /// A source frame; `after_gap` when frames before it were dropped.
    Frame {
        frame: Arc<SharedFrame>,
        after_gap: bool,
    },
    /// The publish ended: the pictures held back go out.
    Ended,
}

/// The task of one stream: the relay's H.264 to the codec thread, until `stop`. While the
/// thread is behind, frames no other refers to are left out; frames it has no room for are
/// dropped up to the next keyframe.
async fn forward(mut sub: Subscriber, jobs: mpsc::Sender<Job>, stop: CancellationToken) {
    let name = sub.name().to_owned();
    tracing::info!(stream = %name, "H.264 re-encode started");
    let mut config: Option<AvcConfig> = None;
    let mut frame_rate = None;
    // A configuration the thread has not taken yet.
    let mut config_due = false;
    let mut gap = false;
    let mut dropped: u64 = 0;
    let mut left_out: u64 = 0;
    loop {
        let ev = tokio::select! {
            () = stop.cancelled() => break,
            ev = sub.recv() => ev,
        };
        let job = match ev {
            Event::Started(c) => {
                let video = c.config.video.clone();
                frame_rate = c.config.metadata.as_ref().and_then(|m| m.frame_rate);
                if video.is_some() && video != config {
                    config = video;
                    config_due = true;
                }
                continue;
            }
            Event::Ended => Job::Ended,
            Event::Frame(f)
                if f.frame.track == TrackKind::Video && f.frame.codec == Codec::H264 =>
            {
                if gap && !f.frame.keyframe {
                    dropped += 1;
                    continue;
                }
                if JOB_CAPACITY - jobs.capacity() > DISPOSABLE_ABOVE && is_disposable(&f.frame) {
                    left_out += 1;
                    if left_out.is_power_of_two() {
                        tracing::debug!(stream = %name, left_out, "H.264 re-encode behind: frames no other refers to left out");
                    }
                    continue;
                }
                if config_due {
                    let Some(c) = config.clone() else { continue };
                    match jobs.try_send(Job::Config(c, frame_rate)) {
                        Ok(()) => config_due = false,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            gap = true;
                            dropped += 1;
                            continue;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
                Job::Frame {
                    frame: f,
                    after_gap: std::mem::take(&mut gap),
                }
            }
            Event::Frame(_) => continue,
        };
        match jobs.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                gap = true;
                dropped += 1;
                if dropped.is_power_of_two() {
                    tracing::info!(stream = %name, dropped, "H.264 re-encode behind the stream: frames dropped up to the next keyframe");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
    tracing::info!(stream = %name, dropped, left_out, "H.264 re-encode stopped");
}

/// Whether no other frame refers to this one (`nal_ref_idc` 0 in its slices): leaving it out
/// of the decoder loses only its own picture.
fn is_disposable(frame: &streamgate_media::Frame) -> bool {
    if frame.keyframe {
        return false;
    }
    let Ok(units) = split_avcc(&frame.payload, AVCC_LENGTH_SIZE) else {
        return false;
    };
    let mut slices = units
        .iter()
        .filter(|u| matches!(nal_type(u), Some(1..=5)))
        .peekable();
    slices.peek().is_some() && slices.all(|u| u.first().is_some_and(|h| h & 0x60 == 0))
}

/// The codec thread of one stream: runs until the task drops its end of `jobs`.
fn encode(
    mut jobs: mpsc::Receiver<Job>,
    out: broadcast::Sender<Arc<SharedFrame>>,
    keyframe: Arc<AtomicBool>,
    bitrate_bps: u32,
    name: &str,
) {
    let mut codec: Option<AvcReencoder> = None;
    let mut errors: u64 = 0;
    let send = |frames: Vec<streamgate_media::Frame>| {
        for f in frames {
            // No viewer at this instant is not an error: viewers come and go.
            let _ = out.send(Arc::new(SharedFrame::new(f)));
        }
    };
    while let Some(job) = jobs.blocking_recv() {
        let pushed = match job {
            Job::Config(config, frame_rate) => {
                let set = match codec.as_mut() {
                    Some(c) => c.set_source(&config),
                    None => AvcReencoder::new(Some(&config), settings_for(frame_rate, bitrate_bps))
                        .map(|c| {
                            codec = Some(c);
                        }),
                };
                if let Err(e) = set {
                    tracing::warn!(stream = %name, error = %e, "the stream's video cannot be re-encoded for WebRTC viewers");
                }
                continue;
            }
            Job::Ended => codec.as_mut().map(AvcReencoder::finish),
            Job::Frame { frame, after_gap } => codec.as_mut().map(|c| {
                if after_gap {
                    // What the decoder holds belongs before the gap.
                    if let Ok(held) = c.finish() {
                        send(held);
                    }
                }
                if keyframe.swap(false, Ordering::Relaxed) {
                    c.request_keyframe();
                }
                c.push(&frame.frame)
            }),
        };
        match pushed {
            Some(Ok(frames)) => send(frames),
            Some(Err(e)) => {
                errors += 1;
                if errors.is_power_of_two() {
                    tracing::warn!(stream = %name, error = %e, errors, "H.264 frame not re-encoded");
                }
            }
            None => {}
        }
    }
}

/// The re-encode settings for a stream whose metadata says `frame_rate` frames/s (30 when it
/// says nothing).
fn settings_for(frame_rate: Option<f64>, bitrate_bps: u32) -> AvcSettings {
    let rate = frame_rate
        .filter(|r| r.is_finite() && *r >= 1.0)
        .unwrap_or(30.0)
        .min(120.0);
    AvcSettings {
        bitrate_bps,
        frame_rate: rate as f32,
        keyframe_interval: (rate * KEYFRAME_SECONDS).round() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;
    use streamgate_media::flv::file_video;
    use streamgate_media::Frame;

    /// libx264, High profile, two B-frames, 320x240 at 30 frames/s, two seconds.
    const HIGH_BFRAMES: &[u8] = include_bytes!("../../transcode/testdata/high-bframes.flv");

    fn fixture() -> (AvcConfig, Vec<Frame>) {
        let (config, frames) = file_video(HIGH_BFRAMES).unwrap();
        (config.unwrap(), frames)
    }

    #[test]
    fn only_frames_no_other_refers_to_are_disposable() {
        let (_, frames) = fixture();
        let disposable: Vec<&Frame> = frames.iter().filter(|f| is_disposable(f)).collect();
        // x264 with two B-frames and the default B-pyramid: non-reference B-frames exist,
        // and each is a B-frame (shown before a frame decoded earlier).
        assert!(!disposable.is_empty());
        assert!(disposable.len() < frames.len() / 2, "{}", disposable.len());
        assert!(frames
            .iter()
            .filter(|f| f.keyframe)
            .all(|f| !is_disposable(f)));
        let mut frame = frames[1].clone();
        frame.payload = Bytes::from_static(&[0, 0, 0, 2, 0x01, 0x88]);
        assert!(is_disposable(&frame), "a non-reference slice");
        frame.payload = Bytes::from_static(&[0, 0, 0, 2, 0x41, 0x88]);
        assert!(!is_disposable(&frame), "a reference slice");
        frame.payload = Bytes::from_static(&[0, 0, 0, 9, 0x01]);
        assert!(!is_disposable(&frame), "damage is not disposable");
        frame.payload = Bytes::from_static(&[0, 0, 0, 1, 0x06]);
        assert!(!is_disposable(&frame), "no slice");
    }

    #[test]
    fn settings_follow_the_announced_frame_rate() {
        let s = settings_for(Some(60.0), 1_000_000);
        assert_eq!(
            (s.frame_rate, s.keyframe_interval, s.bitrate_bps),
            (60.0, 120, 1_000_000)
        );
        for bad in [None, Some(f64::NAN), Some(0.0), Some(-5.0)] {
            assert_eq!(settings_for(bad, 1).keyframe_interval, 60, "{bad:?}");
        }
        assert_eq!(settings_for(Some(1e9), 1).frame_rate, 120.0);
    }

    #[tokio::test]
    async fn one_reencode_per_stream_for_every_viewer_within_the_cap() {
        let (config, frames) = fixture();
        let hub = Hub::new();
        let publisher = hub.publish("live/b").unwrap();
        publisher.set_video_config(config);
        let feeds = VideoFeeds::new(&WebRtcLimits {
            max_video_transcodes: 1,
            ..WebRtcLimits::default()
        });
        let mut first = feeds.join(&hub, "live/b").unwrap();
        let mut second = feeds.join(&hub, "live/b").unwrap();
        assert_eq!(feeds.running(), 1);
        assert_eq!(
            feeds.join(&hub, "live/other").unwrap_err(),
            FeedError::Busy(1)
        );
        // The source at about its own pace (the thread keeps up at this size).
        tokio::time::sleep(Duration::from_millis(50)).await;
        for f in &frames {
            publisher.push(f.clone());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut got = Vec::new();
        while got.len() < frames.len() - 5 {
            let f = tokio::time::timeout(Duration::from_secs(10), first.recv())
                .await
                .expect("re-encoded frames")
                .expect("the feed runs");
            got.push(f);
        }
        assert!(got[0].frame.keyframe, "a viewer starts at a keyframe");
        assert!(got
            .iter()
            .all(|f| f.frame.cts() == 0 && f.frame.codec == Codec::H264));
        assert!(
            got.windows(2).all(|w| w[0].frame.pts < w[1].frame.pts),
            "display order"
        );
        // The second viewer got the same frames: one encode, shared.
        let shared = second.try_recv().expect("frames for the second viewer");
        assert!(Arc::ptr_eq(&shared, &got[0]));

        // The last viewer gone, the re-encode stops and its place is free.
        drop(first);
        drop(second);
        assert_eq!(feeds.running(), 0);
        assert!(feeds.join(&hub, "live/other").is_ok());
    }
}
