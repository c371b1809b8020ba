//! Fan-out cost without sockets: one publisher, N subscriber tasks on a single-threaded
//! runtime, each reading every frame the way a listener's play task does (wait for one
//! event, then take what else is ready). Meant for instruction counts that repeat exactly:
//!
//! ```text
//! cargo build --release --example fanout -p streamgate-relay
//! valgrind --tool=callgrind target/release/examples/fanout 100 2000
//! ```
//!
//! Arguments: subscribers (default 100), frames (default 2000). Prints the events delivered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use streamgate_media::{ms_to_ticks, Codec, Frame, TrackKind};
use streamgate_relay::{Event, Hub};

/// Most events a subscriber takes after a wake-up, like the RTMP play loop.
const MAX_EVENTS_PER_WAKE: usize = 64;

fn frame(n: u64) -> Frame {
    let video = !n.is_multiple_of(3);
    Frame {
        track: if video {
            TrackKind::Video
        } else {
            TrackKind::Audio
        },
        codec: if video { Codec::H264 } else { Codec::Aac },
        pts: ms_to_ticks(n as i64 * 20),
        dts: ms_to_ticks(n as i64 * 20),
        keyframe: !video || n % 150 == 1,
        payload: Bytes::from_static(&[0u8; 64]),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let subscribers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let frames: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let runtime = match tokio::runtime::Builder::new_current_thread().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fanout: {e}");
            return;
        }
    };
    let delivered = Arc::new(AtomicU64::new(0));
    runtime.block_on(async {
        let hub = Hub::new();
        let mut tasks = Vec::new();
        for _ in 0..subscribers {
            let mut sub = hub.subscribe("live/bench");
            let delivered = Arc::clone(&delivered);
            tasks.push(tokio::spawn(async move {
                loop {
                    let mut n = 0u64;
                    let mut event = Some(sub.recv().await);
                    let mut taken = 0;
                    while let Some(e) = event {
                        if matches!(e, Event::Ended) {
                            delivered.fetch_add(n, Ordering::Relaxed);
                            return;
                        }
                        n += 1;
                        taken += 1;
                        event = if taken < MAX_EVENTS_PER_WAKE {
                            sub.try_recv()
                        } else {
                            None
                        };
                    }
                    delivered.fetch_add(n, Ordering::Relaxed);
                }
            }));
        }
        let publisher = match hub.publish("live/bench") {
            Ok(p) => p,
            Err(e) => {
                eprintln!("fanout: {e}");
                return;
            }
        };
        tokio::task::yield_now().await;
        for n in 0..frames {
            publisher.push(frame(n));
            // Let every subscriber run, as the publisher waits for its next read.
            tokio::task::yield_now().await;
        }
        drop(publisher);
        for t in tasks {
            let _ = t.await;
        }
    });
    println!(
        "{} events to {subscribers} subscribers",
        delivered.load(Ordering::Relaxed)
    );
}
