//! The relay's derived tracks ([`streamgate_relay::Deriver`]), run with this crate's codecs:
//! AAC -> Opus for browser viewers of RTMP and SRT publishers, Opus -> AAC for RTMP and SRT
//! viewers of browser publishers, and H.264 without B-frames for browser viewers of streams
//! that have them (x264's and OBS's defaults), which browsers' WebRTC receivers do not
//! reorder.
//!
//! Each derivation that runs has a task that reads the stream's own frames from the relay and
//! hands those of its codec, through a bounded channel, to a thread of its own: codec work
//! never runs on the runtime's workers. The thread pushes what it makes into the relay, for
//! every viewer that takes it. When the thread falls behind, the task first leaves out the
//! frames no other frame refers to (most B-frames), which costs the picture nothing but their
//! own time, and when that is not enough drops the source's frames until its next keyframe
//! (every audio frame is one) instead of queueing without bound. The relay asks for a
//! keyframe when a viewer joins the re-encode or loses its place. When the relay drops the
//! derivation's handle (its last viewer has gone), the task and then the thread stop. A
//! thread that panics (a bug, counted by the server's panic hook) tells the relay, whose
//! viewers of it are told in turn.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use streamgate_media::nal::{nal_type, split_avcc, AVCC_LENGTH_SIZE};
use streamgate_media::{AacConfig, Frame, StreamConfig};
use streamgate_relay::{
    Derivation, DeriveHandle, DeriveJob, DerivedOutput, Deriver, Event, Refusal, SharedFrame,
    Subscriber,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{AacToOpus, AvcReencoder, AvcSettings, OpusToAac};

/// Source frames waiting for the H.264 re-encode's thread (about a second at 30 frames/s);
/// when it has this many, the source's frames are dropped until its next keyframe.
const VIDEO_JOBS: usize = 32;

/// Jobs waiting for the re-encode above which frames that no other frame refers to are left
/// out.
const DISPOSABLE_ABOVE: usize = VIDEO_JOBS / 4;

/// Source frames waiting for a sound transcode's thread: 10 s of 20 ms Opus packets, 20 s of
/// AAC frames, a few hundred kilobytes at most. A derivation starts with the stream's GOP,
/// whose sound comes at once; the codec takes a tenth of a millisecond a frame and catches up.
/// Beyond it, frames are dropped (each one alone: every sound frame is a keyframe).
const AUDIO_JOBS: usize = 512;

/// How many source frames may wait for the codec thread of `derivation`.
const fn job_capacity(derivation: Derivation) -> usize {
    match derivation {
        Derivation::H264WithoutBFrames => VIDEO_JOBS,
        Derivation::AacToOpus | Derivation::OpusToAac => AUDIO_JOBS,
    }
}

/// Output keyframe interval of the H.264 re-encode: 2 s at the source's frame rate, as
/// encoders for the web use.
const KEYFRAME_SECONDS: f64 = 2.0;

/// What happens to a browser viewer of a stream whose H.264 has B-frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BFramesPolicy {
    /// The stream's video is re-encoded without B-frames, once per stream.
    #[default]
    Transcode,
    /// The viewer is refused (`bframes_not_supported`).
    Refuse,
}

/// How the derivations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TranscodeSettings {
    /// Whether H.264 is re-encoded without B-frames for browsers, or refused.
    pub bframes: BFramesPolicy,
    /// Most H.264 re-encodes running at once, server-wide (each takes about a core at
    /// 1080p30); one more is refused as busy.
    pub max_video: usize,
    /// Bit rate of the re-encoded H.264, in bit/s.
    pub video_bitrate_bps: u32,
}

impl Default for TranscodeSettings {
    fn default() -> Self {
        Self {
            bframes: BFramesPolicy::Transcode,
            max_video: 2,
            video_bitrate_bps: 2_500_000,
        }
    }
}

/// The server's derivations: install one in the hub with
/// [`streamgate_relay::Hub::set_deriver`].
#[derive(Debug)]
pub struct Transcoders {
    settings: TranscodeSettings,
    /// Derivations running, by [`Derivation::ALL`] position.
    running: Arc<[AtomicUsize; Derivation::ALL.len()]>,
}

impl Transcoders {
    /// Transcoders with these settings.
    pub fn new(settings: TranscodeSettings) -> Self {
        Self {
            settings,
            running: Arc::default(),
        }
    }

    /// Derivations of this kind running now (one per stream at most).
    pub fn running(&self, derivation: Derivation) -> usize {
        self.running
            .get(index(derivation))
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

/// The position of `derivation` in [`Derivation::ALL`].
fn index(derivation: Derivation) -> usize {
    Derivation::ALL
        .iter()
        .position(|d| *d == derivation)
        .unwrap_or(0)
}

/// One place among the running derivations of a kind, given back when dropped.
#[derive(Debug)]
struct Place {
    running: Arc<[AtomicUsize; Derivation::ALL.len()]>,
    index: usize,
}

impl Place {
    /// A place, unless `max` of the kind run already.
    fn take(
        running: &Arc<[AtomicUsize; Derivation::ALL.len()]>,
        derivation: Derivation,
        max: usize,
    ) -> Option<Self> {
        let index = index(derivation);
        let count = running.get(index)?;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Self {
            running: Arc::clone(running),
            index,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(count) = self.running.get(self.index) {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What keeps a derivation running: its task stops when this is dropped.
#[derive(Debug)]
struct Running {
    _stop: tokio_util::sync::DropGuard,
    _place: Place,
}

impl Deriver for Transcoders {
    fn start(&self, derivation: Derivation, job: DeriveJob) -> Result<DeriveHandle, Refusal> {
        let name = job.output.stream().to_owned();
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Refusal::Failed)?;
        let max = match derivation {
            Derivation::H264WithoutBFrames => {
                if self.settings.bframes == BFramesPolicy::Refuse {
                    return Err(Refusal::Disabled);
                }
                if let Some(Err(e)) = job.config.config.video.as_ref().map(AvcReencoder::takes) {
                    tracing::warn!(stream = %name, error = %e, "the stream's H.264 cannot be re-encoded");
                    return Err(Refusal::Unsupported);
                }
                self.settings.max_video
            }
            Derivation::AacToOpus | Derivation::OpusToAac => usize::MAX,
        };
        let place = Place::take(&self.running, derivation, max).ok_or(Refusal::Busy)?;
        let codec = Codec::new(derivation, self.settings.video_bitrate_bps);
        let stop = launch(codec, job, &runtime)?;
        Ok(Box::new(Running {
            _stop: stop,
            _place: place,
        }))
    }
}

/// Starts a derivation's codec thread and task; dropping the guard stops them.
fn launch<C: FrameCodec + 'static>(
    codec: C,
    job: DeriveJob,
    runtime: &tokio::runtime::Handle,
) -> Result<tokio_util::sync::DropGuard, Refusal> {
    let derivation = job.output.derivation();
    let (jobs, job_rx) = mpsc::channel(job_capacity(derivation));
    let output = job.output;
    let name = output.stream().to_owned();
    let thread = std::thread::Builder::new()
        .name(format!("derive-{}", derivation.name()))
        .spawn(move || run_codec(codec, job_rx, &output));
    if let Err(e) = thread {
        tracing::warn!(stream = %name, error = %e, "cannot start a transcode thread");
        return Err(Refusal::Failed);
    }
    let stop = CancellationToken::new();
    runtime.spawn(forward(job.input, jobs, stop.clone(), derivation));
    Ok(stop.drop_guard())
}

/// What the log calls a derivation.
fn title(derivation: Derivation) -> &'static str {
    match derivation {
        Derivation::AacToOpus => "AAC -> Opus transcode",
        Derivation::OpusToAac => "Opus -> AAC transcode",
        Derivation::H264WithoutBFrames => "H.264 re-encode",
    }
}

/// Work for a codec thread.
#[derive(Debug)]
enum Job {
    /// The stream's configuration (a new one).
    Config(Arc<streamgate_relay::SharedConfig>),
    /// A source frame; `after_gap` when frames before it were dropped.
    Frame {
        frame: Arc<SharedFrame>,
        after_gap: bool,
    },
    /// The publish ended: what the codec holds goes out.
    Ended,
}

/// The task of one derivation: the relay's frames of its codec to the codec thread, until
/// `stop` or the end of the publish. While the thread is behind, frames no other refers to
/// are left out; frames it has no room for are dropped up to the next keyframe.
async fn forward(
    mut input: Subscriber,
    jobs: mpsc::Sender<Job>,
    stop: CancellationToken,
    derivation: Derivation,
) {
    let name = input.name().to_owned();
    let what = title(derivation);
    tracing::info!(stream = %name, "{what} started");
    // A configuration the thread has not taken yet.
    let mut config_due = None;
    let mut gap = false;
    let mut dropped: u64 = 0;
    let mut left_out: u64 = 0;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => break,
            event = input.recv() => event,
        };
        let job = match event {
            Event::Started(config, _) => {
                config_due = Some(config);
                continue;
            }
            Event::Ended => {
                // What the codec holds belongs to the stream's end; no room, no matter.
                let _ = jobs.try_send(Job::Ended);
                break;
            }
            Event::Frame(f) if f.frame.codec == derivation.input() => {
                if gap && !f.frame.keyframe {
                    dropped += 1;
                    continue;
                }
                if jobs.max_capacity() - jobs.capacity() > DISPOSABLE_ABOVE
                    && is_disposable(&f.frame)
                {
                    left_out += 1;
                    if left_out.is_power_of_two() {
                        tracing::debug!(stream = %name, left_out, "{what} behind: frames no other refers to left out");
                    }
                    continue;
                }
                if let Some(config) = config_due.take() {
                    match jobs.try_send(Job::Config(Arc::clone(&config))) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            config_due = Some(config);
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
                    tracing::info!(stream = %name, dropped, "{what} behind the stream: frames dropped up to the next keyframe");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
    tracing::info!(stream = %name, dropped, left_out, "{what} stopped");
}

/// Whether no other frame refers to this one (an H.264 frame whose slices all have
/// `nal_ref_idc` 0): leaving it out of the decoder loses only its own picture. Keyframes and
/// sound are never disposable.
fn is_disposable(frame: &Frame) -> bool {
    if frame.keyframe || frame.codec != streamgate_media::Codec::H264 {
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

/// The codec of one derivation, made on its thread at the first configuration that needs
/// it (libxaac and OpenH264 take tens of milliseconds to set up).
enum Codec {
    AacToOpus {
        config: Option<AacConfig>,
        codec: Option<Box<AacToOpus>>,
    },
    OpusToAac(Option<Box<OpusToAac>>),
    Video {
        codec: Option<Box<AvcReencoder>>,
        bitrate_bps: u32,
    },
}

/// What a codec thread drives: frames of one codec in, frames of another out.
trait FrameCodec: Send {
    /// Takes a new stream configuration.
    fn configure(&mut self, stream: &StreamConfig, name: &str);
    /// Transcodes one frame; `after_gap` when frames before it were dropped, `keyframe` when
    /// a viewer asked for one.
    fn push(
        &mut self,
        frame: &Frame,
        after_gap: bool,
        keyframe: bool,
    ) -> Result<Vec<Frame>, crate::TranscodeError>;
    /// What the codec still holds, at the end of the publish.
    fn finish(&mut self) -> Vec<Frame>;
}

impl Codec {
    fn new(derivation: Derivation, bitrate_bps: u32) -> Self {
        match derivation {
            Derivation::AacToOpus => Self::AacToOpus {
                config: None,
                codec: None,
            },
            Derivation::OpusToAac => Self::OpusToAac(None),
            Derivation::H264WithoutBFrames => Self::Video {
                codec: None,
                bitrate_bps,
            },
        }
    }
}

impl FrameCodec for Codec {
    fn configure(&mut self, stream: &StreamConfig, name: &str) {
        match self {
            Self::AacToOpus { config, codec } => {
                if stream.audio.is_none() || *config == stream.audio {
                    return;
                }
                config.clone_from(&stream.audio);
                *codec = stream.audio.as_ref().and_then(|aac| {
                    AacToOpus::new(aac)
                        .map(Box::new)
                        .map_err(|e| tracing::warn!(stream = %name, error = %e, "browser viewers get no sound"))
                        .ok()
                });
            }
            Self::OpusToAac(codec) => {
                if codec.is_none() {
                    *codec = OpusToAac::new()
                        .map(Box::new)
                        .map_err(|e| tracing::warn!(stream = %name, error = %e, "RTMP and SRT viewers get no sound"))
                        .ok();
                    if codec.is_some() {
                        tracing::info!(stream = %name, encoder = crate::aac_enc::DEFAULT_ENCODER, "AAC encoder set up");
                    }
                }
            }
            Self::Video { codec, bitrate_bps } => {
                let Some(video) = &stream.video else { return };
                let frame_rate = stream.metadata.as_ref().and_then(|m| m.frame_rate);
                let set = match codec.as_mut() {
                    Some(c) => c.set_source(video),
                    None => AvcReencoder::new(Some(video), settings_for(frame_rate, *bitrate_bps))
                        .map(|c| *codec = Some(Box::new(c))),
                };
                if let Err(e) = set {
                    tracing::warn!(stream = %name, error = %e, "the stream's video cannot be re-encoded for browser viewers");
                }
            }
        }
    }

    fn push(
        &mut self,
        frame: &Frame,
        after_gap: bool,
        keyframe: bool,
    ) -> Result<Vec<Frame>, crate::TranscodeError> {
        match self {
            Self::AacToOpus { codec, .. } => {
                codec.as_mut().map_or(Ok(Vec::new()), |c| c.push(frame))
            }
            Self::OpusToAac(codec) => codec.as_mut().map_or(Ok(Vec::new()), |c| c.push(frame)),
            Self::Video { codec, .. } => {
                let Some(c) = codec.as_mut() else {
                    return Ok(Vec::new());
                };
                let mut out = Vec::new();
                if after_gap {
                    // What the decoder holds belongs before the gap.
                    out = c.finish().unwrap_or_default();
                }
                if keyframe {
                    c.request_keyframe();
                }
                out.extend(c.push(frame)?);
                Ok(out)
            }
        }
    }

    /// The re-encode's pictures held for reordering; sound codecs keep nothing worth a
    /// viewer's wait.
    fn finish(&mut self) -> Vec<Frame> {
        match self {
            Self::Video { codec: Some(c), .. } => c.finish().unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

/// A codec thread: runs until the task drops its end of `jobs`. A panic in the codec (a bug)
/// fails the derivation, whose viewers are told.
fn run_codec<C: FrameCodec>(mut codec: C, mut jobs: mpsc::Receiver<Job>, output: &DerivedOutput) {
    let name = output.stream().to_owned();
    let what = title(output.derivation());
    let run = catch_unwind(AssertUnwindSafe(|| {
        let mut errors: u64 = 0;
        while let Some(job) = jobs.blocking_recv() {
            let pushed = match job {
                Job::Config(config) => {
                    codec.configure(&config.config, &name);
                    continue;
                }
                Job::Ended => Ok(codec.finish()),
                Job::Frame { frame, after_gap } => {
                    codec.push(&frame.frame, after_gap, output.keyframe_requested())
                }
            };
            match pushed {
                Ok(frames) if frames.is_empty() => {}
                Ok(frames) => output.push_all(frames),
                Err(e) => {
                    errors += 1;
                    if errors.is_power_of_two() {
                        tracing::warn!(stream = %name, error = %e, errors, "{what}: frame skipped");
                    }
                }
            }
        }
    }));
    if run.is_err() {
        tracing::error!(stream = %name, "{what} failed; its viewers are told");
        output.fail();
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
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;
    use streamgate_media::flv::file_video;
    use streamgate_media::{AvcConfig, TrackKind};
    use streamgate_relay::{Hub, Pick, Unavailable, WireFormat};

    /// libx264, High profile, two B-frames, 320x240 at 30 frames/s, two seconds.
    const HIGH_BFRAMES: &[u8] = include_bytes!("../testdata/high-bframes.flv");

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
        frame.codec = streamgate_media::Codec::Aac;
        frame.track = TrackKind::Audio;
        frame.payload = Bytes::from_static(&[0, 0, 0, 2, 0x01, 0x88]);
        assert!(!is_disposable(&frame), "sound never is");
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

    async fn started(sub: &mut Subscriber) -> streamgate_relay::Selection {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), sub.recv()).await {
                Ok(Event::Started(_, selection)) => return selection,
                Ok(_) => {}
                Err(_) => panic!("no Started"),
            }
        }
    }

    #[tokio::test]
    async fn one_reencode_per_stream_for_every_viewer_within_the_cap() {
        let (config, frames) = fixture();
        let hub = Hub::new();
        let transcoders = Arc::new(Transcoders::new(TranscodeSettings {
            max_video: 1,
            ..TranscodeSettings::default()
        }));
        hub.set_deriver(Arc::clone(&transcoders) as Arc<dyn Deriver>);
        let publisher = hub.publish("live/b").unwrap();
        publisher.expect(streamgate_media::Codec::H264);
        publisher.set_video_config(config.clone());
        publisher.push(frames[0].clone());

        let mut first = hub.subscribe_as("live/b", Some(WireFormat::Rtp));
        let mut second = hub.subscribe_as("live/b", Some(WireFormat::Rtp));
        let reencoded = Pick::Derived(Derivation::H264WithoutBFrames);
        assert_eq!(started(&mut first).await.video, reencoded);
        assert_eq!(started(&mut second).await.video, reencoded);
        assert_eq!(transcoders.running(Derivation::H264WithoutBFrames), 1);

        // A second stream with B-frames would need a second re-encode: refused as busy.
        let other = hub.publish("live/other").unwrap();
        other.expect(streamgate_media::Codec::H264);
        other.set_video_config(config);
        other.push(frames[0].clone());
        let mut refused = hub.subscribe_as("live/other", Some(WireFormat::Rtp));
        assert_eq!(
            started(&mut refused).await.video,
            Pick::Unavailable(Unavailable::Refused(
                Derivation::H264WithoutBFrames,
                Refusal::Busy
            ))
        );

        // The source at about its own pace (the thread keeps up at this size).
        for f in &frames[1..] {
            publisher.push(f.clone());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut got = Vec::new();
        while got.len() < frames.len() - 5 {
            match tokio::time::timeout(Duration::from_secs(10), first.recv())
                .await
                .expect("re-encoded frames")
            {
                Event::Frame(f) => got.push(f),
                other => panic!("{other:?}"),
            }
        }
        assert!(got[0].frame.keyframe, "a viewer starts at a keyframe");
        assert!(got.iter().all(|f| f.frame.cts() == 0
            && f.frame.codec == streamgate_media::Codec::H264
            && f.derived == Some(Derivation::H264WithoutBFrames)));
        assert!(
            got.windows(2).all(|w| w[0].frame.pts < w[1].frame.pts),
            "display order"
        );
        // The second viewer got the same frames: one encode, shared.
        let shared = loop {
            if let Some(Event::Frame(f)) = second.try_recv() {
                break f;
            }
        };
        assert!(Arc::ptr_eq(&shared, &got[0]));

        // The last viewer gone, the re-encode stops and its place is free.
        drop(first);
        drop(second);
        assert_eq!(transcoders.running(Derivation::H264WithoutBFrames), 0);
        drop(refused);
        let mut again = hub.subscribe_as("live/other", Some(WireFormat::Rtp));
        assert_eq!(started(&mut again).await.video, reencoded);
    }

    /// A codec that panics at its first frame: a bug in a codec.
    struct Panics;

    impl FrameCodec for Panics {
        fn configure(&mut self, _: &StreamConfig, _: &str) {}
        fn push(
            &mut self,
            _: &Frame,
            _: bool,
            _: bool,
        ) -> Result<Vec<Frame>, crate::TranscodeError> {
            panic!("a codec bug");
        }
        fn finish(&mut self) -> Vec<Frame> {
            Vec::new()
        }
    }

    /// Runs every derivation with [`Panics`].
    #[derive(Debug)]
    struct PanickingDeriver;

    impl Deriver for PanickingDeriver {
        fn start(&self, _: Derivation, job: DeriveJob) -> Result<DeriveHandle, Refusal> {
            let runtime = tokio::runtime::Handle::current();
            Ok(Box::new(launch(Panics, job, &runtime)?))
        }
    }

    #[tokio::test]
    async fn a_codec_that_panics_fails_its_derivation_and_its_viewers_are_told() {
        let hub = Hub::new();
        hub.set_deriver(Arc::new(PanickingDeriver));
        let publisher = hub.publish("live/p").unwrap();
        publisher.expect(streamgate_media::Codec::Aac);
        publisher.set_audio_config(AacConfig::new(2, 4, 2).unwrap());
        let aac = |n: i64| Frame {
            track: TrackKind::Audio,
            codec: streamgate_media::Codec::Aac,
            pts: n * 1920,
            dts: n * 1920,
            keyframe: true,
            payload: Bytes::from_static(&[0x21, 0x10]),
        };
        publisher.push(aac(0));
        // Sound alone has no GOP: the viewer starts with the next frame.
        let mut browser = hub.subscribe_as("live/p", Some(WireFormat::Rtp));
        publisher.push(aac(1));
        assert_eq!(
            started(&mut browser).await.audio,
            Pick::Derived(Derivation::AacToOpus)
        );
        for n in 2..5 {
            publisher.push(aac(n));
        }
        assert_eq!(
            started(&mut browser).await.audio,
            Pick::Unavailable(Unavailable::Refused(Derivation::AacToOpus, Refusal::Failed))
        );
    }

    /// What a browser viewer of a B-frame stream with `config` is told, under `settings`;
    /// no re-encode may be left running.
    async fn video_for_a_browser(settings: TranscodeSettings, config: AvcConfig) -> Pick {
        let (_, frames) = fixture();
        let hub = Hub::new();
        let transcoders = Arc::new(Transcoders::new(settings));
        hub.set_deriver(Arc::clone(&transcoders) as Arc<dyn Deriver>);
        let publisher = hub.publish("live/b").unwrap();
        publisher.expect(streamgate_media::Codec::H264);
        publisher.set_video_config(config);
        publisher.push(frames[0].clone());
        let mut viewer = hub.subscribe_as("live/b", Some(WireFormat::Rtp));
        let video = started(&mut viewer).await.video;
        assert_eq!(transcoders.running(Derivation::H264WithoutBFrames), 0);
        video
    }

    #[tokio::test]
    async fn the_policy_the_cap_and_the_picture_size_refuse_a_reencode() {
        let refused =
            |why| Pick::Unavailable(Unavailable::Refused(Derivation::H264WithoutBFrames, why));
        let (config, _) = fixture();
        let refuse = TranscodeSettings {
            bframes: BFramesPolicy::Refuse,
            ..TranscodeSettings::default()
        };
        assert_eq!(
            video_for_a_browser(refuse, config.clone()).await,
            refused(Refusal::Disabled)
        );
        let none = TranscodeSettings {
            max_video: 0,
            ..TranscodeSettings::default()
        };
        assert_eq!(
            video_for_a_browser(none, config).await,
            refused(Refusal::Busy)
        );
        // A baseline SPS of 257 x 144 macroblocks (4112 x 2304 pixels).
        let huge = AvcConfig::from_parameter_sets(
            vec![Bytes::from_static(&[
                0x67, 0x42, 0xc0, 0x1f, 0xf4, 0x00, 0x80, 0x80, 0x90, 0xc8,
            ])],
            vec![Bytes::from_static(&[0x68, 0xce, 0x38, 0x80])],
        )
        .unwrap();
        assert_eq!(
            video_for_a_browser(TranscodeSettings::default(), huge).await,
            refused(Refusal::Unsupported)
        );
    }
}
