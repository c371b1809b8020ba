//! The SRT `streamid` of a caller: Ant Media's form and SRT's access-control syntax,
//! percent-encoded or not.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = streamgate_srt::streamid::parse_stream_id(&text);
});
