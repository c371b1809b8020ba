//! Behaviour of the hub through its public API, without sockets.

mod common;

use common::{audio, frame, recv, video};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use streamgate_media::{
    ms_to_ticks, AacConfig, AvcConfig, Codec, Frame, Metadata, StreamConfig, TrackKind,
};
use streamgate_relay::{
    Event, Hub, Publisher, RelayError, RelayLimits, Subscriber, WireFormat, GOP_CACHE_MAX_FRAMES,
    SUBSCRIBER_QUEUE_FRAMES,
};

fn avc() -> AvcConfig {
    match AvcConfig::from_parameter_sets(
        vec![Bytes::from_static(&[0x67, 66, 0xc0, 30])],
        vec![Bytes::from_static(&[0x68, 0xce])],
    ) {
        Ok(config) => config,
        Err(e) => panic!("test config: {e}"),
    }
}

fn aac() -> AacConfig {
    match AacConfig::new(2, 4, 2) {
        Ok(config) => config,
        Err(e) => panic!("test config: {e}"),
    }
}

/// A publisher of H.264 and AAC that says so, as every listener does: its first frames are
/// held until both tracks have shown up.
fn av_publisher(hub: &Hub, name: &str) -> Publisher {
    let Ok(publisher) = hub.publish(name) else {
        panic!("{name} is free");
    };
    publisher.expect(Codec::H264);
    publisher.expect(Codec::Aac);
    publisher.set_video_config(avc());
    publisher.set_audio_config(aac());
    publisher
}

fn started(event: Option<Event>) -> StreamConfig {
    match event {
        Some(Event::Started(config, _)) => config.config.clone(),
        other => panic!("expected Started, got {other:?}"),
    }
}

/// Asserts that `recv` has nothing to give right now.
async fn assert_pending(sub: &mut Subscriber) {
    assert!(
        tokio::time::timeout(Duration::from_millis(50), sub.recv())
            .await
            .is_err(),
        "unexpected event"
    );
}

#[tokio::test]
async fn late_subscriber_starts_at_latest_keyframe_with_configs() {
    let hub = Hub::new();
    let publisher = hub.publish("live/cam1").unwrap();
    publisher.set_video_config(avc());
    publisher.set_audio_config(aac());
    publisher.push(video(0, true));
    publisher.push(video(1, false));
    publisher.push(audio(1));
    publisher.push(video(2, false));
    publisher.push(video(3, true));
    publisher.push(audio(3));
    publisher.push(video(4, false));

    let mut sub = hub.subscribe("live/cam1");
    let config = started(sub.try_recv());
    assert_eq!(config.video, Some(avc()));
    assert_eq!(config.audio, Some(aac()));
    let first = frame(sub.try_recv());
    assert!(first.frame.keyframe);
    assert_eq!(first.frame.pts, ms_to_ticks(120));
    assert_eq!(frame(sub.try_recv()).frame.track, TrackKind::Audio);
    assert_eq!(frame(sub.try_recv()).frame.pts, ms_to_ticks(160));
    assert!(sub.try_recv().is_none());

    publisher.push(video(5, false));
    assert_eq!(
        frame(Some(recv(&mut sub).await)).frame.pts,
        ms_to_ticks(200)
    );
    assert_eq!(sub.dropped(), 0);
}

#[tokio::test]
async fn config_change_is_announced_before_the_next_frame() {
    let hub = Hub::new();
    let publisher = hub.publish("live/cam1").unwrap();
    publisher.set_video_config(avc());
    let mut sub = hub.subscribe("live/cam1");
    publisher.push(video(0, true));
    started(sub.try_recv());
    frame(sub.try_recv());

    let metadata = Metadata {
        width: Some(320),
        ..Metadata::default()
    };
    publisher.set_metadata(metadata.clone());
    // Setting the same value again is no change.
    publisher.set_metadata(metadata.clone());
    assert!(sub.try_recv().is_none(), "announced with the next frame");
    publisher.push(video(1, false));
    let config = started(sub.try_recv());
    assert_eq!(config.metadata, Some(metadata));
    assert_eq!(config.video, Some(avc()));
    assert_eq!(frame(sub.try_recv()).frame.pts, ms_to_ticks(40));
    assert!(sub.try_recv().is_none());

    // A viewer joining now gets the GOP with the configuration each frame was pushed
    // under: the old one for the keyframe, the new one announced before frame 1.
    publisher.push(video(2, false));
    let mut late = hub.subscribe("live/cam1");
    assert_eq!(started(late.try_recv()).metadata, None);
    assert!(frame(late.try_recv()).frame.keyframe);
    match late.try_recv() {
        Some(Event::Started(config, _)) => assert!(Arc::ptr_eq(&config, &publisher.config())),
        other => panic!("expected Started, got {other:?}"),
    }
    assert_eq!(frame(late.try_recv()).frame.pts, ms_to_ticks(40));
    assert_eq!(frame(late.try_recv()).frame.pts, ms_to_ticks(80));
    assert!(late.try_recv().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_subscriber_does_not_block_publisher_or_other_subscribers() {
    const FRAMES: usize = 10_000;
    const GOP: usize = 50;
    const BATCH: usize = 100;

    let hub = Hub::new();
    let publisher = hub.publish("live/load").unwrap();
    publisher.set_video_config(avc());
    let mut stuck = hub.subscribe("live/load");
    let mut reading = hub.subscribe("live/load");

    let progress = Arc::new(AtomicUsize::new(0));
    let reader = {
        let progress = Arc::clone(&progress);
        tokio::spawn(async move {
            let mut seen = Vec::with_capacity(FRAMES);
            while seen.len() < FRAMES {
                match recv(&mut reading).await {
                    Event::Frame(f) => {
                        seen.push(f.frame.pts);
                        progress.store(seen.len(), Ordering::Release);
                    }
                    Event::Started(..) => {}
                    Event::Ended => panic!("ended early"),
                }
            }
            (seen, reading)
        })
    };

    for i in 0..FRAMES {
        let n = i64::try_from(i).unwrap();
        publisher.push(video(n, i % GOP == 0));
        if i == 0 {
            // The stuck viewer reads the start, then never again until the end.
            started(stuck.try_recv());
            frame(stuck.try_recv());
        }
        if (i + 1) % BATCH == 0 {
            // Pace the test so that the reading viewer keeps up; the publisher itself
            // never waits on anyone.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while progress.load(Ordering::Acquire) < i + 1 {
                assert!(tokio::time::Instant::now() < deadline, "reader stalled");
                tokio::task::yield_now().await;
            }
        }
    }

    let (seen, reading) = reader.await.unwrap();
    let expected: Vec<i64> = (0..FRAMES)
        .map(|i| ms_to_ticks(i64::try_from(i).unwrap() * 40))
        .collect();
    assert_eq!(seen, expected, "the reading viewer got everything in order");
    assert_eq!(reading.dropped(), 0);

    // The stuck viewer now resumes on a keyframe, having lost the frames in between.
    let mut resumed = Vec::new();
    while let Some(event) = stuck.try_recv() {
        resumed.push(frame(Some(event)).frame.clone());
    }
    let first = resumed.first().unwrap();
    assert!(first.keyframe);
    assert!(resumed.len() <= SUBSCRIBER_QUEUE_FRAMES);
    assert_eq!(resumed.last().unwrap().pts, *expected.last().unwrap());
    assert!(stuck.dropped() > 0);
    assert_eq!(stuck.dropped() + resumed.len() as u64, (FRAMES - 1) as u64);
    for pair in resumed.windows(2) {
        assert_eq!(pair[1].pts - pair[0].pts, ms_to_ticks(40), "contiguous");
    }

    let stats = hub.stream_stats("live/load").unwrap();
    assert_eq!(stats.frames_in, FRAMES as u64);
    assert_eq!(stats.bytes_in, 10 * FRAMES as u64);
    assert_eq!(stats.subscribers, 2);
    assert!(stats.live);
    assert_eq!(stats.dropped, stuck.dropped());
}

#[tokio::test]
async fn lagging_subscriber_resumes_audio_with_the_video_keyframe() {
    let hub = Hub::new();
    let publisher = av_publisher(&hub, "live/av");
    let mut sub = hub.subscribe("live/av");
    publisher.push(video(0, true));
    publisher.push(audio(0));
    started(sub.try_recv());
    frame(sub.try_recv());
    frame(sub.try_recv());

    // Overflow the queue with audio and inter frames, then a keyframe.
    for n in 1..=i64::try_from(SUBSCRIBER_QUEUE_FRAMES).unwrap() {
        publisher.push(audio(n));
        publisher.push(video(n, false));
    }
    publisher.push(audio(9_999));
    publisher.push(video(10_000, true));
    publisher.push(audio(10_000));

    let resumed = frame(sub.try_recv());
    assert_eq!(resumed.frame.track, TrackKind::Video);
    assert!(resumed.frame.keyframe);
    assert_eq!(frame(sub.try_recv()).frame.track, TrackKind::Audio);
    assert!(sub.try_recv().is_none());
    assert_eq!(sub.dropped(), 2 * SUBSCRIBER_QUEUE_FRAMES as u64 + 1);
}

#[tokio::test]
async fn lagging_subscriber_without_queued_keyframe_waits_for_the_next() {
    let hub = Hub::new();
    let publisher = hub.publish("live/cam1").unwrap();
    publisher.set_video_config(avc());
    let mut sub = hub.subscribe("live/cam1");
    publisher.push(video(0, true));
    started(sub.try_recv());
    frame(sub.try_recv());

    let behind = SUBSCRIBER_QUEUE_FRAMES + 88;
    for n in 1..=i64::try_from(behind).unwrap() {
        publisher.push(video(n, false));
    }
    assert!(sub.try_recv().is_none(), "no keyframe queued");
    assert_eq!(sub.dropped(), behind as u64);
    publisher.push(video(2_000, false));
    assert!(sub.try_recv().is_none());
    assert_eq!(sub.dropped(), behind as u64 + 1, "skipped until a keyframe");
    publisher.push(video(2_001, true));
    assert!(frame(sub.try_recv()).frame.keyframe);
    publisher.push(video(2_002, false));
    assert_eq!(frame(sub.try_recv()).frame.pts, ms_to_ticks(2_002 * 40));
    assert_eq!(sub.dropped(), behind as u64 + 1);
    assert_eq!(
        hub.stream_stats("live/cam1").unwrap().dropped,
        sub.dropped()
    );
}

#[tokio::test]
async fn waiting_subscriber_starts_with_the_first_frame_and_lags_if_it_does_not_read() {
    let hub = Hub::new();
    let mut prompt = hub.subscribe("live/cam1");
    let mut idle = hub.subscribe("live/cam1");
    let publisher = av_publisher(&hub, "live/cam1");
    // Audio before the first keyframe is not a start point in a video stream.
    publisher.push(audio(0));
    publisher.push(video(0, true));
    publisher.push(video(1, false));
    started(prompt.try_recv());
    assert!(frame(prompt.try_recv()).frame.keyframe);
    assert_eq!(frame(prompt.try_recv()).frame.pts, ms_to_ticks(40));
    assert_eq!(prompt.dropped(), 0);

    for n in 2..=i64::try_from(SUBSCRIBER_QUEUE_FRAMES).unwrap() + 10 {
        publisher.push(video(n, n % 100 == 0));
    }
    // The idle one was subscribed all along: what it did not read is counted as dropped,
    // and it resumes at the newest queued keyframe.
    started(idle.try_recv());
    let resumed = frame(idle.try_recv());
    assert!(resumed.frame.keyframe);
    assert_eq!(resumed.frame.pts, ms_to_ticks(500 * 40));
    assert_eq!(idle.dropped(), 501);
}

#[tokio::test]
async fn waiting_subscriber_sees_start_end_and_next_publish() {
    let hub = Hub::new();
    let mut sub = hub.subscribe("live/cam1");
    assert!(sub.try_recv().is_none());
    assert_pending(&mut sub).await;

    let waiter = tokio::spawn(async move {
        let first = recv(&mut sub).await;
        (sub, first)
    });
    tokio::task::yield_now().await;
    let publisher = hub.publish("live/cam1").unwrap();
    publisher.set_video_config(avc());
    publisher.push(video(0, true));
    let (mut sub, first) = waiter.await.unwrap();
    assert!(matches!(first, Event::Started(..)));
    assert!(frame(Some(recv(&mut sub).await)).frame.keyframe);

    publisher.push(video(1, false));
    drop(publisher);
    // Frames pushed before the end come first.
    assert_eq!(frame(Some(recv(&mut sub).await)).frame.pts, ms_to_ticks(40));
    assert!(matches!(recv(&mut sub).await, Event::Ended));
    assert_pending(&mut sub).await;
    assert_eq!(hub.stream_names(), vec!["live/cam1".to_owned()]);
    assert!(!hub.stream_stats("live/cam1").unwrap().live);

    // Still subscribed: the next publish of the name is delivered.
    let publisher = hub.publish("live/cam1").unwrap();
    publisher.set_video_config(avc());
    publisher.push(video(100, true));
    assert!(matches!(recv(&mut sub).await, Event::Started(..)));
    assert_eq!(
        frame(Some(recv(&mut sub).await)).frame.pts,
        ms_to_ticks(4_000)
    );
}

#[tokio::test]
async fn publish_without_frames_ends_silently() {
    let hub = Hub::new();
    let mut sub = hub.subscribe("live/cam1");
    let publisher = hub.publish("live/cam1").unwrap();
    publisher.set_audio_config(aac());
    drop(publisher);
    assert!(sub.try_recv().is_none(), "no Ended without a Started");
}

#[tokio::test]
async fn second_publish_refused_while_first_attached() {
    let hub = Hub::new();
    let first = hub.publish("live/cam1").unwrap();
    assert_eq!(first.name(), "live/cam1");
    assert_eq!(
        hub.publish("live/cam1").unwrap_err(),
        RelayError::AlreadyPublishing {
            name: "live/cam1".to_owned()
        }
    );
    let other = hub.publish("live/cam2").unwrap();
    drop(first);
    let again = hub.publish("live/cam1").unwrap();
    drop(again);
    drop(other);
    assert!(hub.stream_names().is_empty());
}

#[tokio::test]
async fn encode_runs_once_for_many_subscribers() {
    const SUBSCRIBERS: usize = 100;
    const FRAMES: usize = 20;

    let hub = Hub::new();
    let publisher = hub.publish("live/cam1").unwrap();
    publisher.set_video_config(avc());
    let mut subs: Vec<Subscriber> = (0..SUBSCRIBERS)
        .map(|_| hub.subscribe("live/cam1"))
        .collect();
    for i in 0..FRAMES {
        publisher.push(video(i64::try_from(i).unwrap(), i == 0));
    }

    let frame_encodes = AtomicUsize::new(0);
    let config_encodes = AtomicUsize::new(0);
    let mut outputs = Vec::new();
    for sub in &mut subs {
        while let Some(event) = sub.try_recv() {
            match event {
                Event::Started(config, _) => {
                    config.encoded(WireFormat::Rtmp, |_| {
                        config_encodes.fetch_add(1, Ordering::Relaxed);
                        Bytes::from_static(b"sequence header")
                    });
                }
                Event::Frame(shared) => {
                    let bytes = shared.encoded(WireFormat::Rtmp, |f| {
                        frame_encodes.fetch_add(1, Ordering::Relaxed);
                        f.payload.clone()
                    });
                    outputs.push(bytes);
                }
                Event::Ended => panic!("not ended"),
            }
        }
    }
    assert_eq!(outputs.len(), SUBSCRIBERS * FRAMES);
    assert_eq!(frame_encodes.load(Ordering::Relaxed), FRAMES);
    assert_eq!(config_encodes.load(Ordering::Relaxed), 1);
    // Every viewer shares the one buffer.
    assert!(outputs
        .chunks(FRAMES)
        .all(|per_sub| per_sub[0].as_ptr() == outputs[0].as_ptr()));
}

#[tokio::test]
async fn entries_are_removed_when_unused() {
    let hub = Hub::new();
    let sub = hub.subscribe("a");
    let publisher = hub.publish("b").unwrap();
    let publisher_a = hub.publish("a").unwrap();
    assert_eq!(hub.stream_names(), vec!["a".to_owned(), "b".to_owned()]);
    drop(publisher_a);
    assert_eq!(hub.stream_names().len(), 2, "a still has a subscriber");
    drop(sub);
    assert_eq!(hub.stream_names(), vec!["b".to_owned()]);
    let clone = hub.clone();
    drop(publisher);
    assert!(clone.stream_names().is_empty());
    assert!(hub.stats().is_empty());
}

#[tokio::test]
async fn audio_only_stream_starts_immediately() {
    let hub = Hub::new();
    let publisher = hub.publish("live/radio").unwrap();
    publisher.set_audio_config(aac());
    publisher.push(audio(0));
    publisher.push(audio(1));
    let mut sub = hub.subscribe("live/radio");
    assert!(sub.try_recv().is_none());
    publisher.push(audio(2));
    assert!(started(sub.try_recv()).video.is_none());
    assert_eq!(frame(sub.try_recv()).frame.pts, ms_to_ticks(80));
}

#[tokio::test]
async fn oversized_gop_makes_new_subscribers_wait_for_the_next_keyframe() {
    let hub = Hub::new();
    let publisher = av_publisher(&hub, "live/long-gop");
    publisher.push(audio(0));
    publisher.push(video(0, true));
    for n in 1..=i64::try_from(GOP_CACHE_MAX_FRAMES).unwrap() {
        publisher.push(video(n, false));
    }
    let mut sub = hub.subscribe("live/long-gop");
    assert!(sub.try_recv().is_none());
    publisher.push(video(5_000, false));
    publisher.push(audio(5_000));
    assert!(sub.try_recv().is_none(), "waits for a keyframe");
    publisher.push(video(5_001, true));
    started(sub.try_recv());
    assert!(frame(sub.try_recv()).frame.keyframe);
    assert_eq!(sub.dropped(), 0, "frames before joining are not drops");
}

#[test]
fn handles_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let hub = Hub::new();
    let publisher = hub.publish("x").unwrap();
    let mut sub = hub.subscribe("x");
    assert_send(&hub);
    assert_send(&publisher);
    assert_send(&sub);
    assert_send(&sub.recv());
}

#[tokio::test]
async fn push_all_delivers_in_order_and_counts_every_frame() {
    let hub = Hub::new();
    let publisher = av_publisher(&hub, "live/batch");
    let mut sub = hub.subscribe("live/batch");
    publisher.push_all([video(0, true), audio(0), video(1, false)]);
    publisher.push_all(std::iter::empty());
    started(Some(recv(&mut sub).await));
    assert_eq!(frame(sub.try_recv()).frame.track, TrackKind::Video);
    assert_eq!(frame(sub.try_recv()).frame.track, TrackKind::Audio);
    assert_eq!(frame(sub.try_recv()).frame.pts, ms_to_ticks(40));
    assert!(sub.try_recv().is_none());
    let stats = hub.stream_stats("live/batch").unwrap();
    assert_eq!(stats.frames_in, 3);
    assert_eq!(stats.bytes_in, 24);
}

#[tokio::test]
async fn dropped_recv_loses_nothing_and_a_later_recv_wakes() {
    let hub = Hub::new();
    let publisher = hub.publish("live/cancel").unwrap();
    let mut sub = hub.subscribe("live/cancel");
    assert_pending(&mut sub).await;
    publisher.set_audio_config(aac());
    publisher.push(audio(0));
    assert!(matches!(recv(&mut sub).await, Event::Started(..)));
    assert_eq!(frame(Some(recv(&mut sub).await)).frame.pts, 0);
    assert_pending(&mut sub).await;
    let pusher = {
        let publisher = publisher;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            publisher.push(audio(1));
            publisher
        })
    };
    assert_eq!(frame(Some(recv(&mut sub).await)).frame.pts, ms_to_ticks(40));
    drop(pusher.await.unwrap());
    assert!(matches!(recv(&mut sub).await, Event::Ended));
}

/// Subscribers on two threads read in lockstep with the publisher: each frame is pushed only
/// once every subscriber has read the one before, so a wake-up lost between "nothing new" and
/// "parked" leaves a subscriber asleep with a frame waiting, and the round times out. Also
/// checks order and that nothing is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_wake_up_is_lost_between_threads() {
    const SUBSCRIBERS: usize = 8;
    const ROUNDS: i64 = 10_000;
    let hub = Hub::new();
    let publisher = hub.publish("live/race").unwrap();
    publisher.set_audio_config(aac());
    let read = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut sub = hub.subscribe("live/race");
        let read = Arc::clone(&read);
        readers.push(tokio::spawn(async move {
            let mut next = 0;
            loop {
                match recv(&mut sub).await {
                    Event::Started(..) => {}
                    Event::Frame(f) => {
                        assert_eq!(f.frame.pts, ms_to_ticks(next * 40), "in order");
                        next += 1;
                        read.fetch_add(1, Ordering::SeqCst);
                    }
                    Event::Ended => return (next, sub.dropped()),
                }
            }
        }));
    }
    // The publisher spins on its own thread, so that its push lands within nanoseconds of
    // the last read, while that subscriber is on its way to parking.
    let pushing = tokio::task::spawn_blocking(move || {
        for n in 0..ROUNDS {
            if n % 2 == 0 {
                publisher.push(audio(n));
            } else {
                publisher.push_all([audio(n)]);
            }
            let want = SUBSCRIBERS * usize::try_from(n + 1).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while read.load(Ordering::SeqCst) < want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "a subscriber slept through frame {n}"
                );
                std::hint::spin_loop();
            }
        }
    });
    pushing.await.unwrap();
    for reader in readers {
        let (received, dropped) = reader.await.unwrap();
        assert_eq!(dropped, 0);
        assert_eq!(received, ROUNDS);
    }
}

#[tokio::test]
async fn a_watch_wakes_on_every_change_and_keeps_the_name() {
    let hub = Hub::new();
    let mut watch = hub.watch("live/w");
    assert_eq!(watch.name(), "live/w");
    // The first look reports at once; then nothing until something changes.
    tokio::time::timeout(Duration::from_secs(5), watch.changed())
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), watch.changed())
            .await
            .is_err(),
        "no change yet"
    );
    assert_eq!(hub.stream_names(), vec!["live/w".to_owned()]);

    // A waiting watch is woken by the publish's first frames, reported once for a batch.
    let waiting = tokio::spawn(async move {
        watch.changed().await;
        watch
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let publisher = hub.publish("live/w").unwrap();
    publisher.push_all([video(0, true), audio(0), video(1, false)]);
    let mut watch = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(20), watch.changed()).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), watch.changed())
            .await
            .is_err(),
        "changes already seen are not reported again"
    );

    // The end of the publish is a change too; the name lives while the watch does.
    drop(publisher);
    tokio::time::timeout(Duration::from_secs(5), watch.changed())
        .await
        .unwrap();
    assert_eq!(hub.stream_names(), vec!["live/w".to_owned()]);
    drop(watch);
    assert!(hub.stream_names().is_empty());
}

#[test]
fn a_stream_holds_no_more_than_its_limits() {
    let limits = RelayLimits {
        max_frame_bytes: 1000,
        buffer_frames: 100,
        buffer_bytes: 5000,
        gop_frames: 100,
        gop_bytes: 3000,
    };
    let hub = Hub::with_limits(limits);
    let publisher = hub.publish("live/big").unwrap();
    let mut lagging = hub.subscribe("live/big");
    let sized = |n: i64, len: usize| Frame {
        payload: Bytes::from(vec![0u8; len]),
        ..video(n, n % 10 == 0)
    };
    // Frames over the limit are refused and counted, the others kept within the bytes.
    publisher.push_all((0..50).map(|n| sized(n, if n % 7 == 3 { 1001 } else { 900 })));
    let stats = hub.stream_stats("live/big").unwrap();
    assert_eq!(stats.oversized, 7);
    assert_eq!(stats.frames_in, 43);
    assert!(stats.buffered_bytes <= 5000, "{stats:?}");
    // The lagging subscriber lost what was dropped and resumes at a keyframe.
    let mut got = Vec::new();
    while let Some(event) = lagging.try_recv() {
        if let Event::Frame(f) = event {
            got.push(f.frame.payload.len());
        }
    }
    assert!(got.len() <= 6, "{got:?}");
    assert!(lagging.dropped() > 0);
    // A new subscriber's GOP is cut at 3000 bytes: this one starts at the next keyframe.
    let mut late = hub.subscribe("live/big");
    assert!(late.try_recv().is_none());
}

#[tokio::test]
async fn a_bound_subscriber_reads_its_publish_only() {
    let hub = Hub::new();
    assert!(matches!(
        hub.subscribe_bound("live/a", 1),
        Err(RelayError::NotLive { .. })
    ));
    let first = hub.publish_tagged("live/a", 1).unwrap();
    assert!(
        matches!(
            hub.subscribe_bound("live/a", 2),
            Err(RelayError::NotLive { .. })
        ),
        "another publish's tag"
    );
    let mut bound = hub.subscribe_bound("live/a", 1).unwrap();
    let mut follower = hub.subscribe("live/a");
    first.push(video(0, true));
    assert!(matches!(recv(&mut bound).await, Event::Started(..)));
    assert!(matches!(recv(&mut bound).await, Event::Frame(_)));
    drop(first);
    assert!(matches!(recv(&mut bound).await, Event::Ended));

    let second = hub.publish_tagged("live/a", 2).unwrap();
    second.push(video(1, true));
    assert_pending(&mut bound).await;
    // A subscriber that is not bound goes on to the next publish.
    let mut saw_second = false;
    for _ in 0..5 {
        if let Event::Frame(f) = recv(&mut follower).await {
            saw_second |= f.frame.pts == ms_to_ticks(40);
        }
    }
    assert!(saw_second);
    drop(bound);
    assert_eq!(hub.stream_stats("live/a").unwrap().subscribers, 1);
}

#[tokio::test]
async fn held_frames_keep_the_configuration_they_were_pushed_with() {
    let hub = Hub::new();
    let publisher = hub.publish("live/late-aac").unwrap();
    publisher.expect(Codec::H264);
    publisher.expect(Codec::Aac);
    publisher.set_video_config(avc());
    let mut sub = hub.subscribe("live/late-aac");
    // Held until the sound comes, whose configuration arrives with it (as MPEG-TS's does).
    publisher.push(video(0, true));
    assert!(sub.try_recv().is_none(), "held");
    publisher.set_audio_config(aac());
    publisher.push(audio(0));
    let first = started(sub.try_recv());
    assert_eq!(first.audio, None, "the keyframe's own configuration");
    assert!(first.tracks.audio.is_some(), "with the settled tracks");
    assert!(frame(sub.try_recv()).frame.keyframe);
    let second = started(sub.try_recv());
    assert_eq!(second.audio, Some(aac()));
    assert_eq!(second.tracks, first.tracks);
    assert_eq!(frame(sub.try_recv()).frame.track, TrackKind::Audio);
    assert!(sub.try_recv().is_none());
}

#[test]
fn a_stream_read_by_everyone_holds_its_gop_and_what_a_slow_reader_has_not_read() {
    let hub = Hub::new();
    let publisher = hub.publish("live/kept").unwrap();
    publisher.set_video_config(avc());
    let buffered = || hub.stream_stats("live/kept").unwrap().buffered_bytes;
    let mut reader = Some(hub.subscribe("live/kept"));
    let mut slow = Some(hub.subscribe("live/kept"));
    let drain = |sub: &mut Option<Subscriber>| {
        let mut n = 0;
        while let Some(event) = sub.as_mut().and_then(Subscriber::try_recv) {
            n += u64::from(matches!(event, Event::Frame(_)));
        }
        n
    };
    // Frames of 1000 bytes, a keyframe every 50, each read at once by `reader`, and by
    // `slow` when it keeps up.
    let feed = |frames: std::ops::Range<i64>,
                reader: &mut Option<Subscriber>,
                slow: &mut Option<Subscriber>,
                slow_reads: bool| {
        for n in frames {
            publisher.push(Frame {
                payload: Bytes::from(vec![0u8; 1000]),
                ..video(n, n % 50 == 0)
            });
            drain(reader);
            if slow_reads {
                drain(slow);
            }
        }
    };
    // The slow one has read nothing: everything stays for it.
    feed(0..300, &mut reader, &mut slow, false);
    assert_eq!(buffered(), 300 * 1000);
    assert_eq!(drain(&mut slow), 300);
    // Both keep up: the GOP (from frame 400) stays, and what came since the last trim.
    feed(300..420, &mut reader, &mut slow, true);
    assert_eq!(buffered(), 20 * 1000, "frames 400..420");
    // A reader that stops reading keeps what it has not read, and loses nothing.
    feed(420..600, &mut reader, &mut slow, false);
    assert_eq!(buffered(), 180 * 1000, "frames 420..600");
    assert_eq!(drain(&mut slow), 180);
    assert_eq!(slow.as_ref().map(Subscriber::dropped), Some(0));
    // Gone, it holds nothing back.
    slow = None;
    feed(600..616, &mut reader, &mut slow, false);
    assert_eq!(buffered(), 16 * 1000, "frames 600..616");
    // Without any reader, the GOP stays.
    reader = None;
    feed(616..632, &mut reader, &mut slow, false);
    assert_eq!(buffered(), 32 * 1000, "frames 600..632");
}

#[tokio::test]
async fn a_subscriber_that_comes_to_read_after_the_first_frames_went_starts_at_the_gop() {
    let hub = Hub::new();
    let mut late = hub.subscribe("live/late");
    let publisher = hub.publish("live/late").unwrap();
    publisher.set_video_config(avc());
    // A live reader keeps up; the subscriber that waited does not read until frame 200.
    let mut reader = hub.subscribe("live/late");
    publisher.push_all((0..200).map(|n| video(n, n % 50 == 0)));
    while reader.try_recv().is_some() {}
    publisher.push_all((200..216).map(|n| video(n, n % 50 == 0)));
    started(late.try_recv());
    let first = frame(late.try_recv());
    assert!(first.frame.keyframe);
    assert_eq!(first.frame.pts, ms_to_ticks(200 * 40));
    // The 200 frames before its GOP are counted as dropped, as a lagging reader's would be.
    assert_eq!(late.dropped(), 200);
    let mut n = 1;
    while let Some(Event::Frame(_)) = late.try_recv() {
        n += 1;
    }
    assert_eq!(n, 16);
}
