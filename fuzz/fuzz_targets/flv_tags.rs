//! FLV tag bodies as an RTMP publisher sends them: video (AVC, enhanced RTMP headers) and
//! audio (AAC) into frames and configurations.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use streamgate_media::flv;

fuzz_target!(|data: &[u8]| {
    let ts = data.len() as u32;
    let _ = flv::parse_video(ts, Bytes::copy_from_slice(data));
    let _ = flv::parse_audio(ts, Bytes::copy_from_slice(data));
});
