//! Requests against the whole HTTP router of the token API (Millicast, Ant Media and
//! Mediastream routes), bodies and queries included; none may panic or answer 500.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(router) = streamgate_api::fuzzing::router() else {
        return;
    };
    let status = runtime().block_on(streamgate_api::fuzzing::send(&router, data));
    assert_ne!(status, Some(axum::http::StatusCode::INTERNAL_SERVER_ERROR));
});
