//! The WebSocket signaling messages of a browser (Ant Media's message set, JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = streamgate_webrtc::message::parse(text);
    }
});
