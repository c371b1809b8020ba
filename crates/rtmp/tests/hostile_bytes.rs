//! Random and mutated client bytes through a publisher's and a viewer's session: no input may
//! panic the session (the stable-toolchain counterpart of the `rtmp_session` fuzz target).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use streamgate_rtmp::chunk::{encode_message, msg_type};
use streamgate_rtmp::fuzzing::{context, drive, drive_pull};

const PUBLISH: &[u8] = include_bytes!("fixtures/ffmpeg_publish.bin");
const PLAY: &[u8] = include_bytes!("fixtures/ffmpeg_play.bin");

/// The driver's input for a recorded publisher and viewer.
fn recorded() -> Vec<u8> {
    let mut input = u32::try_from(PUBLISH.len())
        .unwrap_or(0)
        .to_be_bytes()
        .to_vec();
    input.extend_from_slice(PUBLISH);
    input.extend_from_slice(PLAY);
    input
}

/// `input` with a few bytes overwritten, cut or repeated at random places.
fn mutated(input: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = input.len().max(1);
    prop::collection::vec((0..len, any::<u8>(), 0u8..4), 1..12).prop_map(move |edits| {
        let mut out = input.clone();
        for (at, byte, kind) in edits {
            let at = at.min(out.len().saturating_sub(1));
            match kind {
                0 => out.truncate(at.max(4)),
                1 => {
                    let piece: Vec<u8> = out.iter().skip(at).take(64).copied().collect();
                    out.splice(at..at, piece);
                }
                _ => {
                    if let Some(b) = out.get_mut(at) {
                        *b = byte;
                    }
                }
            }
        }
        out
    })
}

#[test]
fn the_recorded_sessions_run_through() {
    let ctx = context().unwrap();
    let report = drive(&ctx, &recorded());
    // 1.5 s at 25 fps and 48 kHz AAC, and the viewer got them (and the stream's end).
    assert!(report.frames_published > 80, "{report:?}");
    assert!(report.viewer_events > 40, "{report:?}");
    assert_eq!(report.closed, (false, true), "{report:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn mutated_sessions_never_panic(input in mutated(recorded())) {
        let ctx = context().unwrap();
        drive(&ctx, &input);
    }

    #[test]
    fn random_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..4096)) {
        let ctx = context().unwrap();
        drive(&ctx, &input);
    }
}

/// What an origin sends an edge once the stream plays: the sequence headers, then a second
/// of keyframes and AAC frames, as FLV tags on message stream 1; after the mode byte that
/// plays the origin's answers and feeds the rest in pieces of 61 bytes.
fn origin_bytes() -> Vec<u8> {
    let mut out = vec![1 | (61 << 1)];
    let avc = [
        0x17, 0, 0, 0, 0, 1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0, 4, 0x67, 0x42, 0xC0, 0x1E, 1, 0, 2,
        0x68, 0xCE,
    ];
    let message = |type_id, ts, body: &[u8]| encode_message(9, ts, type_id, 1, body).unwrap();
    out.extend_from_slice(&message(msg_type::VIDEO, 0, &avc));
    out.extend_from_slice(&message(msg_type::AUDIO, 0, &[0xAF, 0, 0x12, 0x10]));
    for i in 0..25u8 {
        let ts = u32::from(i) * 40;
        out.extend_from_slice(&message(
            msg_type::VIDEO,
            ts,
            &[0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, i],
        ));
        out.extend_from_slice(&message(msg_type::AUDIO, ts, &[0xAF, 1, i, i]));
    }
    out
}

#[test]
fn a_pulled_stream_runs_through() {
    let ctx = context().unwrap();
    let report = drive_pull(&ctx, &origin_bytes());
    assert!(report.played && !report.failed, "{report:?}");
    assert_eq!(report.media, 52, "{report:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn an_origins_random_bytes_never_panic_the_pull(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let ctx = context().unwrap();
        drive_pull(&ctx, &bytes);
    }

    #[test]
    fn an_origins_mutated_stream_never_panics_the_pull(input in mutated(origin_bytes())) {
        let ctx = context().unwrap();
        drive_pull(&ctx, &input);
    }
}
