//! Frames and reads shared by the relay's tests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use streamgate_media::{ms_to_ticks, Codec, Frame, TrackKind};
use streamgate_relay::{Event, SharedFrame, Subscriber};

/// Video frame `n` of a 25 frames/s stream, shown in decoding order.
pub fn video(n: i64, keyframe: bool) -> Frame {
    Frame {
        track: TrackKind::Video,
        codec: Codec::H264,
        pts: ms_to_ticks(n * 40),
        dts: ms_to_ticks(n * 40),
        keyframe,
        payload: Bytes::from(vec![0u8; 10]),
    }
}

/// AAC frame `n`, one every 40 ms.
pub fn audio(n: i64) -> Frame {
    Frame {
        track: TrackKind::Audio,
        codec: Codec::Aac,
        pts: ms_to_ticks(n * 40),
        dts: ms_to_ticks(n * 40),
        keyframe: true,
        payload: Bytes::from(vec![0u8; 4]),
    }
}

/// The frame of `event`, which must be one.
pub fn frame(event: Option<Event>) -> Arc<SharedFrame> {
    match event {
        Some(Event::Frame(frame)) => frame,
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// `recv` with a deadline, so that a hang fails the test instead of stalling it.
pub async fn recv(sub: &mut Subscriber) -> Event {
    match tokio::time::timeout(Duration::from_secs(5), sub.recv()).await {
        Ok(event) => event,
        Err(_) => panic!("no event within 5 s"),
    }
}
