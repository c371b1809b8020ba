//! What the WebRTC stack parses of a browser's text before any media flows: the SDP offer or
//! answer, and trickled ICE candidates (the first byte chooses which).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if which & 1 == 0 {
        let mut reader = std::io::Cursor::new(text.as_bytes());
        let _ = webrtc::sdp::description::session::SessionDescription::unmarshal(&mut reader);
    } else {
        let _ = webrtc::ice::candidate::candidate_base::unmarshal_candidate(text);
    }
});
