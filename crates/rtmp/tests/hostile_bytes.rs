//! Random and mutated client bytes through a publisher's and a viewer's session: no input may
//! panic the session (the stable-toolchain counterpart of the `rtmp_session` fuzz target).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use streamgate_rtmp::fuzzing::{context, drive};

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
