//! RTP payloads of a publishing browser's track reassembled into frames: H.264 (single NAL,
//! STAP-A, FU-A), VP8 and Opus, with losses and reordering. Each packet is a 2-byte header
//! (sequence number and flags) and a length-prefixed payload.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use streamgate_media::Codec;
use streamgate_webrtc::inbound::{Reassembler, RtpIn};

fuzz_target!(|data: &[u8]| {
    let Some((&codec, mut rest)) = data.split_first() else {
        return;
    };
    let codec = [Codec::H264, Codec::Vp8, Codec::Opus][usize::from(codec % 3)];
    let mut r = Reassembler::new(codec, 0);
    while let [seq, flags, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(len);
        let _ = r.push(RtpIn {
            seq: u16::from(*seq),
            timestamp: u32::from(flags >> 1),
            marker: flags & 1 == 1,
            payload: Bytes::copy_from_slice(payload),
        });
        rest = next;
    }
});
