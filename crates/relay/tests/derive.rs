//! Derived tracks through the hub's public API: which viewers take them, when they start and
//! stop, and what viewers are told when one is refused or fails. The deriver here does no
//! codec work: the test reads each derivation's input and pushes its output by hand.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use common::{audio, frame, recv, video};
use streamgate_media::{ms_to_ticks, Codec, Frame, TrackKind, Tracks, VideoTrack};
use streamgate_relay::{
    Derivation, DeriveHandle, DeriveJob, Deriver, Event, Hub, Pick, Publisher, Refusal, Selection,
    Subscriber, Unavailable, WireFormat,
};

/// Records the derivations it is asked to start, refuses those it is told to, and counts
/// those whose handle is still held.
#[derive(Debug, Default)]
struct Recorder {
    jobs: Mutex<Vec<(Derivation, DeriveJob)>>,
    refuse: Mutex<HashMap<Derivation, Refusal>>,
    running: Arc<AtomicUsize>,
    started: AtomicUsize,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Held while a derivation runs.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Deriver for Recorder {
    fn start(&self, derivation: Derivation, job: DeriveJob) -> Result<DeriveHandle, Refusal> {
        if let Some(why) = locked(&self.refuse).get(&derivation) {
            return Err(*why);
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        self.running.fetch_add(1, Ordering::SeqCst);
        locked(&self.jobs).push((derivation, job));
        Ok(Box::new(Running(Arc::clone(&self.running))))
    }
}

impl Recorder {
    fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// The job of the newest derivation started.
    fn take_job(&self) -> (Derivation, DeriveJob) {
        let Some(job) = locked(&self.jobs).pop() else {
            panic!("no derivation was started");
        };
        job
    }
}

fn hub_with_recorder() -> (Hub, Arc<Recorder>) {
    let hub = Hub::new();
    let recorder = Arc::new(Recorder::default());
    assert!(hub.set_deriver(Arc::clone(&recorder) as Arc<dyn Deriver>));
    assert!(
        !hub.set_deriver(Arc::new(Recorder::default())),
        "installed once"
    );
    (hub, recorder)
}

/// An H.264 + AAC publisher that says so (as RTMP's metadata does).
fn encoder(hub: &Hub, name: &str) -> Publisher {
    let Ok(publisher) = hub.publish(name) else {
        panic!("{name} is free");
    };
    publisher.expect(Codec::H264);
    publisher.expect(Codec::Aac);
    publisher
}

fn opus(n: i64) -> Frame {
    Frame {
        codec: Codec::Opus,
        ..audio(n)
    }
}

/// The configuration's tracks and the selection of a `Started`.
fn started(event: Option<Event>) -> (Tracks, Selection) {
    match event {
        Some(Event::Started(config, selection)) => (config.config.tracks, selection),
        other => panic!("expected Started, got {other:?}"),
    }
}

/// Every frame a subscriber has now: (codec, derived, pts), failing on anything else.
fn frames(sub: &mut Subscriber) -> Vec<(Codec, bool, i64)> {
    std::iter::from_fn(|| sub.try_recv())
        .map(|e| {
            let f = frame(Some(e));
            (f.frame.codec, f.derived.is_some(), f.frame.pts)
        })
        .collect()
}

#[tokio::test]
async fn a_derived_track_runs_once_while_viewers_take_it() {
    let (hub, recorder) = hub_with_recorder();
    let publisher = encoder(&hub, "live/d");
    publisher.push(video(0, true));
    assert!(
        hub.subscribe("live/d").try_recv().is_none(),
        "held until the sound"
    );
    publisher.push(audio(0));

    // An RTMP viewer takes the stream as it is: no derivation.
    let mut rtmp = hub.subscribe_as("live/d", Some(WireFormat::Rtmp));
    let (tracks, selection) = started(rtmp.try_recv());
    assert_eq!(
        tracks,
        Tracks {
            video: Some(VideoTrack {
                codec: Codec::H264,
                bframes: false
            }),
            audio: Some(Codec::Aac)
        }
    );
    assert_eq!(selection, WireFormat::Rtmp.select(&tracks));
    assert_eq!(rtmp.selection(), Some(selection));
    assert_eq!(recorder.started(), 0);

    // The first browser viewer starts AAC -> Opus; the derivation reads the stream's own
    // frames from the GOP on and is asked for a keyframe once.
    let mut rtp_a = hub.subscribe_as("live/d", Some(WireFormat::Rtp));
    let (_, selection) = started(rtp_a.try_recv());
    assert_eq!(selection.audio, Pick::Derived(Derivation::AacToOpus));
    assert_eq!(selection.video, Pick::Source(Codec::H264));
    assert_eq!((recorder.started(), recorder.running()), (1, 1));
    let (derivation, mut job) = recorder.take_job();
    assert_eq!(derivation, Derivation::AacToOpus);
    assert_eq!(job.output.derivation(), Derivation::AacToOpus);
    assert_eq!(job.output.stream(), "live/d");
    assert_eq!(job.config.config.tracks, tracks);
    assert!(job.output.keyframe_requested());
    assert!(!job.output.keyframe_requested());
    let (_, input_selection) = started(job.input.try_recv());
    assert_eq!(input_selection, Selection::source(&tracks));
    assert_eq!(
        frames(&mut job.input),
        [(Codec::H264, false, 0), (Codec::Aac, false, 0)]
    );

    job.output.push_all([opus(0)]);
    publisher.push(video(1, false));
    // The browser viewer gets the picture and the derived sound, never the AAC.
    assert_eq!(
        frames(&mut rtp_a),
        [
            (Codec::H264, false, 0),
            (Codec::Opus, true, 0),
            (Codec::H264, false, ms_to_ticks(40))
        ]
    );
    // The RTMP viewer never sees a derived frame.
    assert_eq!(
        frames(&mut rtmp),
        [
            (Codec::H264, false, 0),
            (Codec::Aac, false, 0),
            (Codec::H264, false, ms_to_ticks(40))
        ]
    );

    // A second browser viewer shares the running derivation.
    let mut rtp_b = hub.subscribe_as("live/d", Some(WireFormat::Rtp));
    let _ = started(rtp_b.try_recv());
    assert_eq!((recorder.started(), recorder.running()), (1, 1));
    assert!(job.output.keyframe_requested(), "a new viewer asks for one");
    drop(rtp_a);
    assert_eq!(recorder.running(), 1);
    drop(rtp_b);
    assert_eq!(recorder.running(), 0, "stopped with the last viewer");

    // The next browser viewer starts it afresh; the end of the publish stops it.
    let mut rtp_c = hub.subscribe_as("live/d", Some(WireFormat::Rtp));
    let _ = started(rtp_c.try_recv());
    assert_eq!((recorder.started(), recorder.running()), (2, 1));
    let (_, job_c) = recorder.take_job();
    drop(publisher);
    let _ = frames_until_ended(&mut rtp_c).await;
    assert_eq!(recorder.running(), 0);
    // Frames a derivation pushes after the end go nowhere.
    job_c.output.push_all([opus(5)]);
    assert!(rtp_c.try_recv().is_none());
}

/// Reads until `Ended`.
async fn frames_until_ended(sub: &mut Subscriber) -> usize {
    let mut n = 0;
    loop {
        match recv(sub).await {
            Event::Ended => return n,
            Event::Frame(_) => n += 1,
            Event::Started(..) => {}
        }
    }
}

#[tokio::test]
async fn refused_and_failed_derivations_are_told_to_the_viewer() {
    let (hub, recorder) = hub_with_recorder();
    locked(&recorder.refuse).insert(Derivation::H264WithoutBFrames, Refusal::Busy);
    let publisher = encoder(&hub, "live/b");
    // B-frames: the first picture is shown after the one decoded next.
    publisher.push(Frame {
        pts: ms_to_ticks(80),
        ..video(0, true)
    });
    publisher.push(audio(0));

    let mut browser = hub.subscribe_as("live/b", Some(WireFormat::Rtp));
    let (tracks, selection) = started(browser.try_recv());
    assert!(tracks.video.is_some_and(|v| v.bframes));
    let busy = Pick::Unavailable(Unavailable::Refused(
        Derivation::H264WithoutBFrames,
        Refusal::Busy,
    ));
    assert_eq!(selection.video, busy);
    assert_eq!(selection.audio, Pick::Derived(Derivation::AacToOpus));
    assert_eq!(recorder.started(), 1, "only the sound");
    let (_, job) = recorder.take_job();
    // Without a picture to take, the viewer starts with the derived sound.
    job.output.push_all([opus(0), opus(1)]);
    assert_eq!(
        frames(&mut browser),
        [(Codec::Opus, true, 0), (Codec::Opus, true, ms_to_ticks(40))]
    );

    // The derivation fails: its viewer is told, with the same configuration.
    job.output.fail();
    let (_, selection) = started(browser.try_recv());
    assert_eq!(
        selection.audio,
        Pick::Unavailable(Unavailable::Refused(Derivation::AacToOpus, Refusal::Failed))
    );
    assert_eq!(selection.video, busy);
    job.output.push_all([opus(2)]);
    assert!(browser.try_recv().is_none(), "nothing of a failed track");
    // Told, the viewer has let the failed derivation go; the next viewer starts it afresh.
    assert_eq!(recorder.running(), 0);
    let mut later = hub.subscribe_as("live/b", Some(WireFormat::Rtp));
    let (_, selection) = started(later.try_recv());
    assert_eq!(selection.audio, Pick::Derived(Derivation::AacToOpus));
    assert_eq!((recorder.started(), recorder.running()), (2, 1));
    drop(browser);
}

#[tokio::test]
async fn b_frames_seen_late_move_browser_viewers_to_the_derived_video() {
    let (hub, recorder) = hub_with_recorder();
    let publisher = hub.publish("live/late").unwrap();
    publisher.expect(Codec::H264);
    publisher.push(video(0, true));
    let mut browser = hub.subscribe_as("live/late", Some(WireFormat::Rtp));
    let mut rtmp = hub.subscribe_as("live/late", Some(WireFormat::Rtmp));
    let (_, selection) = started(browser.try_recv());
    assert_eq!(selection.video, Pick::Source(Codec::H264));
    let _ = started(rtmp.try_recv());
    assert_eq!(frames(&mut browser).len(), 1);
    assert_eq!(frames(&mut rtmp).len(), 1);

    // A frame shown out of decoding order: a new configuration, and the browser viewer
    // moves to the re-encode, waiting for its first keyframe.
    publisher.push(Frame {
        pts: ms_to_ticks(120),
        ..video(1, false)
    });
    publisher.push(video(2, false));
    let (tracks, selection) = started(browser.try_recv());
    assert!(tracks.video.is_some_and(|v| v.bframes));
    assert_eq!(
        selection.video,
        Pick::Derived(Derivation::H264WithoutBFrames)
    );
    assert!(
        browser.try_recv().is_none(),
        "the source's frames are not for it"
    );
    let (derivation, job) = recorder.take_job();
    assert_eq!(derivation, Derivation::H264WithoutBFrames);
    assert!(job.output.keyframe_requested());
    job.output
        .push_all([video(1, false), video(2, true), video(3, false)]);
    assert_eq!(
        frames(&mut browser),
        [
            (Codec::H264, true, ms_to_ticks(80)),
            (Codec::H264, true, ms_to_ticks(120))
        ],
        "from the derived keyframe on"
    );
    browser.request_keyframe();
    assert!(job.output.keyframe_requested(), "asked by the viewer");
    // The RTMP viewer goes on with the source, B-frames and all.
    let _ = started(rtmp.try_recv());
    assert_eq!(
        frames(&mut rtmp),
        [
            (Codec::H264, false, ms_to_ticks(120)),
            (Codec::H264, false, ms_to_ticks(80))
        ]
    );

    // A derived keyframe starts no GOP: a new RTMP viewer still starts at the source's
    // keyframe. A new browser viewer reads the GOP under the configurations it was pushed
    // with: the keyframe from before B-frames were seen, then, moved to the re-encode, from
    // the derived keyframe on.
    let mut late_rtmp = hub.subscribe_as("live/late", Some(WireFormat::Rtmp));
    let _ = started(late_rtmp.try_recv());
    let first = frame(late_rtmp.try_recv());
    assert!(first.frame.keyframe && first.derived.is_none() && first.frame.pts == 0);
    let mut late_browser = hub.subscribe_as("live/late", Some(WireFormat::Rtp));
    let (_, selection) = started(late_browser.try_recv());
    assert_eq!(selection.video, Pick::Source(Codec::H264));
    let first = frame(late_browser.try_recv());
    assert!(first.frame.keyframe && first.derived.is_none());
    let (_, selection) = started(late_browser.try_recv());
    assert_eq!(
        selection.video,
        Pick::Derived(Derivation::H264WithoutBFrames)
    );
    assert_eq!((recorder.started(), recorder.running()), (1, 1), "shared");
    assert!(job.output.keyframe_requested());
    drop(browser);
    assert_eq!(recorder.running(), 1, "held by the late viewer");
    let first = frame(late_browser.try_recv());
    assert!(first.frame.keyframe && first.derived.is_some());
    assert_eq!(first.frame.track, TrackKind::Video);
    assert_eq!(first.frame.pts, ms_to_ticks(80));
}
