//! An edge's pull client fed arbitrary bytes from its origin: the chunk stream, AMF0 commands
//! and status, and FLV media into a relayed publish.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(ctx) = streamgate_rtmp::fuzzing::context() {
        streamgate_rtmp::fuzzing::drive_pull(&ctx, data);
    }
});
