//! Random and mutated input at every parser that publishers' bytes reach: FLV tag bodies, AVC
//! and AAC configuration records, ADTS headers, NAL unit framing and the MPEG-TS demuxer. None
//! may panic (the stable-toolchain counterpart of the
//! `flv_tags`, `codec_config` and `mpegts_demux` fuzz targets).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::Bytes;
use proptest::prelude::*;
use streamgate_media::ts::TsDemuxer;
use streamgate_media::{flv, nal, parse_adts, AacConfig, AvcConfig};

const TAGS: &[&[u8]] = &[
    include_bytes!("fixtures/avc_sequence_header.bin"),
    include_bytes!("fixtures/avc_keyframe.bin"),
    include_bytes!("fixtures/avc_p_frame.bin"),
    include_bytes!("fixtures/avc_b_frame.bin"),
    include_bytes!("fixtures/aac_sequence_header.bin"),
    include_bytes!("fixtures/aac_frame.bin"),
    include_bytes!("fixtures/aac_adts_two_frames.aac"),
];
const TS: &[u8] = include_bytes!("fixtures/h264_aac_two_seconds.ts");

/// A seed with random bytes spliced in at one place and one byte overwritten at another.
fn mutated(seeds: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(seeds),
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), 0..16),
        any::<prop::sample::Index>(),
        any::<u8>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(seed, at, splice, flip, byte, cut)| {
            let mut out = seed.to_vec();
            let at = at.index(out.len() + 1);
            out.splice(at..at, splice);
            let i = flip.index(out.len().max(1));
            if let Some(b) = out.get_mut(i) {
                *b = byte;
            }
            out.truncate(cut.index(out.len() + 1).max(out.len() / 2));
            out
        })
}

fn every_parser(data: &[u8]) {
    let _ = flv::parse_video(0, Bytes::copy_from_slice(data));
    let _ = flv::parse_audio(0, Bytes::copy_from_slice(data));
    let _ = AvcConfig::parse(data);
    let _ = AacConfig::parse(data);
    let _ = parse_adts(data);
    let _ = nal::split_annexb(data);
    let _ = nal::avcc_to_annexb(data);
    let _ = nal::annexb_to_avcc(data);
    for len in 1..=4 {
        let _ = nal::split_avcc(data, len);
        let _ = nal::normalize_avcc(Bytes::copy_from_slice(data), len);
    }
    for skip in [0, 1, 5] {
        let _ = AvcConfig::parse(data.get(skip..).unwrap_or_default());
    }
}

/// Feeds `data` to a demuxer in pieces of `piece` bytes; the events it made.
fn demux(data: &[u8], piece: usize) -> usize {
    let mut d = TsDemuxer::new();
    let mut events = Vec::new();
    for p in data.chunks(piece.max(1)) {
        d.push(p, &mut events);
    }
    events.len()
}

#[test]
fn the_captures_parse() {
    for tag in TAGS {
        every_parser(tag);
    }
    assert!(demux(TS, 1000) > 100);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_tags_never_panic(data in mutated(TAGS)) {
        every_parser(&data);
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..1024)) {
        every_parser(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn mutated_transport_streams_never_panic(
        edits in prop::collection::vec((0..TS.len(), any::<u8>()), 1..64),
        piece in 1usize..4000,
    ) {
        let mut data = TS.to_vec();
        for (at, byte) in edits {
            if let Some(b) = data.get_mut(at) {
                *b = byte;
            }
        }
        demux(&data, piece);
    }
}
