//! Random and mutated signaling messages and RTP payloads: the message parser and the
//! reassembler answer with errors or nothing, never a panic (the stable-toolchain counterpart
//! of the `ws_message` and `rtp_reassembly` fuzz targets).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::Bytes;
use proptest::prelude::*;
use streamgate_media::Codec;
use streamgate_webrtc::inbound::{Reassembler, RtpIn};
use streamgate_webrtc::message::parse;

/// Messages as Ant Media's JavaScript SDK sends them.
const SEEDS: &[&str] = &[
    r#"{"command":"publish","streamId":"cam1","token":"sgp_x","video":true,"audio":true}"#,
    r#"{"command":"play","streamId":"live/cam1","token":"","room":"","trackList":[]}"#,
    r#"{"command":"takeConfiguration","streamId":"cam1","type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n"}"#,
    r#"{"command":"takeCandidate","streamId":"cam1","label":0,"id":"0","candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0"}"#,
    r#"{"command":"stop","streamId":"cam1"}"#,
    r#"{"command":"ping"}"#,
    r#"{"command":"getStreamInfo","streamId":"cam1"}"#,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn mutated_messages_never_panic(
        seed in prop::sample::select(SEEDS),
        at in any::<prop::sample::Index>(),
        splice in "[{}\\[\\]\":,a-zA-Z0-9\\\\ ]{0,16}",
    ) {
        let mut s = seed.to_owned();
        let i = at.index(s.len() + 1);
        s.insert_str(i, &splice);
        let _ = parse(&s);
    }

    #[test]
    fn random_text_never_panics(s in "\\PC{0,300}") {
        let _ = parse(&s);
    }

    #[test]
    fn random_rtp_never_panics(
        codec in prop::sample::select(vec![Codec::H264, Codec::Vp8, Codec::Opus]),
        packets in prop::collection::vec(
            (any::<u16>(), 0u32..4, any::<bool>(), prop::collection::vec(any::<u8>(), 0..200)),
            1..40,
        ),
    ) {
        let mut r = Reassembler::new(codec, 0);
        for (seq, timestamp, marker, payload) in packets {
            let _ = r.push(RtpIn { seq: seq % 8, timestamp, marker, payload: Bytes::from(payload) });
        }
    }
}

#[test]
fn the_seeds_parse() {
    for seed in SEEDS {
        assert!(parse(seed).is_ok(), "{seed}");
    }
}
