//! Datagrams into the SRT engine's path: the caller-handshake reader, the guard, and the
//! listener's side of an open connection (a viewer's and a publisher's, plain or encrypted).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    streamgate_srt::engine::fuzzing::datagrams(data);
});
