//! The bundled pages: `/publish.html` (camera and microphone) and `/play.html`, with the small
//! script they share. Embedded in the binary; no build step.

use std::sync::Arc;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::WebRtcContext;

const PUBLISH_HTML: &str = include_str!("../pages/publish.html");
const PLAY_HTML: &str = include_str!("../pages/play.html");
const SCRIPT: &str = include_str!("../pages/streamgate.js");

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
}

/// Routes for the pages.
pub(crate) fn router() -> Router<Arc<WebRtcContext>> {
    Router::new()
        .route(
            "/publish.html",
            get(|| async { page("text/html; charset=utf-8", PUBLISH_HTML) }),
        )
        .route(
            "/play.html",
            get(|| async { page("text/html; charset=utf-8", PLAY_HTML) }),
        )
        .route(
            "/streamgate.js",
            get(|| async { page("text/javascript; charset=utf-8", SCRIPT) }),
        )
}
