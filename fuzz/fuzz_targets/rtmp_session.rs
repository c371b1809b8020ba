//! A publisher's and a viewer's RTMP session fed arbitrary client bytes: the handshake, the
//! chunk stream, AMF0 commands and data (through the bounded reader and decoder, and the
//! session library's handshake), FLV media into the relay and out to the viewer.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(ctx) = streamgate_rtmp::fuzzing::context() {
        streamgate_rtmp::fuzzing::drive(&ctx, data);
    }
});
