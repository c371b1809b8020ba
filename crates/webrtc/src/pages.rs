//! The bundled pages: `/publish.html` (camera and microphone) and `/play.html` (WebRTC, with
//! HLS to fall back on), the small script they share, and the HLS player they load (hls.js,
//! vendored under `pages/vendor`). Embedded in the binary; no build step.
//!
//! Ant Media's sample pages are at their addresses too: `/{App}/play.html?id={streamId}` plays
//! and `/{App}?id={streamId}` (or `/{App}/`) publishes the stream `{App}/{streamId}`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Query;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::WebRtcContext;

const PUBLISH_HTML: &str = include_str!("../pages/publish.html");
const PLAY_HTML: &str = include_str!("../pages/play.html");
const SCRIPT: &str = include_str!("../pages/streamgate.js");
const HLS_JS: &str = include_str!("../pages/vendor/hls.js/hls.light.min.js");

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

/// The publish page at an application's address, for a stream given in `?id=`.
async fn app_publish(Query(q): Query<HashMap<String, String>>) -> Response {
    if q.get("id").is_some_and(|id| !id.is_empty()) {
        page(HTML, PUBLISH_HTML)
    } else {
        (StatusCode::NOT_FOUND, "not found: add ?id={streamId}\n").into_response()
    }
}

/// Routes for the pages.
pub(crate) fn router() -> Router<Arc<WebRtcContext>> {
    Router::new()
        .route("/publish.html", get(|| async { page(HTML, PUBLISH_HTML) }))
        .route("/play.html", get(|| async { page(HTML, PLAY_HTML) }))
        .route("/{app}/play.html", get(|| async { page(HTML, PLAY_HTML) }))
        .route("/{app}", get(app_publish))
        .route("/{app}/", get(app_publish))
        .route("/streamgate.js", get(|| async { page(JAVASCRIPT, SCRIPT) }))
        .route("/hls.js", get(|| async { page(JAVASCRIPT, HLS_JS) }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn vendored_hls_js_is_the_published_file() {
        let readme = include_str!("../pages/vendor/hls.js/README.md");
        let digest = Sha256::digest(HLS_JS.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            readme.contains(&format!("sha256  {hex}  hls.light.min.js")),
            "pages/vendor/hls.js/hls.light.min.js is not the file its README names ({hex})"
        );
    }
}
