//! Random and mutated `streamid`s: the parser answers each with a request or an error, never a
//! panic (the stable-toolchain counterpart of the `srt_streamid` fuzz target).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use proptest::prelude::*;
use streamgate_srt::streamid::parse_stream_id;

/// What callers send: Ant Media's form, SRT's access-control syntax, percent-encoded.
const SEEDS: &[&str] = &[
    "live/cam1,token=sgp_abcdefghijklmnop,mode=publish",
    "#!::r=live/cam1,m=publish,s=sgp_abcdefghijklmnop",
    "%23!%3A%3Ar%3Dlive%2Fcam1%2Cm%3Drequest",
    "live/cam1,mode=request",
    "#!::r=live/cam1,m=request,token=eyJhbGciOiJIUzI1NiJ9.e30.x",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn mutated_ids_never_panic(
        seed in prop::sample::select(SEEDS),
        at in any::<prop::sample::Index>(),
        splice in "[,=%#!:a-z0-9/\\\\x00-\\\\x7f]{0,12}",
    ) {
        let mut s = seed.to_owned();
        let mut i = at.index(s.len() + 1);
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        s.insert_str(i, &splice);
        let _ = parse_stream_id(&s);
    }

    #[test]
    fn random_text_never_panics(s in "\\PC{0,600}") {
        let _ = parse_stream_id(&s);
    }
}

#[test]
fn the_seeds_parse() {
    for seed in SEEDS {
        assert!(parse_stream_id(seed).is_ok(), "{seed}");
    }
}
