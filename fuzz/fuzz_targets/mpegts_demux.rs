//! MPEG-TS as an SRT publisher sends it, in pieces of a size the input chooses: PSI, PES,
//! ADTS and H.264 access units into frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate_media::ts::TsDemuxer;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    let mut demuxer = TsDemuxer::new();
    let mut events = Vec::new();
    for p in rest.chunks(usize::from(piece) * 8 + 1) {
        demuxer.push(p, &mut events);
        events.clear();
    }
});
