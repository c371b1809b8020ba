//! The API-secret checks: a bearer header on the REST routes, or (Mediastream's route) a query
//! parameter. Both hash the presented value and compare in constant time.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use streamgate_auth::secrets_match;

use crate::{ApiError, ApiState};

/// Whether the request carries `Authorization: Bearer <API secret>`.
pub fn bearer_ok(state: &ApiState, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .is_some_and(|p| secrets_match(p, &state.api_secret))
}

fn with_challenge(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

/// Counts a failed secret from the request's peer and waits the delay that gives (without
/// holding a worker).
pub async fn delay_failure(state: &ApiState, req: Request) -> Request {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = peer {
        tracing::info!(peer = %ip, path = req.uri().path(), "API request refused: missing or wrong secret");
        delay_failure_from(state, ip).await;
    }
    req
}

/// Counts a failed secret from `ip` and waits the delay that gives.
pub async fn delay_failure_from(state: &ApiState, ip: IpAddr) {
    let delay = state.failures.record(ip, Instant::now());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// Millicast-shaped routes: 401 in the `fail` envelope without the secret.
pub async fn require_api_secret(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    if bearer_ok(&state, req.headers()) {
        return next.run(req).await;
    }
    let _req = delay_failure(&state, req).await;
    with_challenge(
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong API secret (send 'Authorization: Bearer <secret>')".into(),
        }
        .into_response(),
    )
}

/// Ant Media-shaped routes: 401 with `{"success":false,"message":...}` without the secret.
pub async fn require_api_secret_antmedia(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    if bearer_ok(&state, req.headers()) {
        return next.run(req).await;
    }
    let _req = delay_failure(&state, req).await;
    let body = json!({ "success": false, "message": "missing or wrong API secret (send 'Authorization: Bearer <secret>')" });
    with_challenge((StatusCode::UNAUTHORIZED, Json(body)).into_response())
}

/// `/metrics`: public when configured so; otherwise the API secret or the metrics token as
/// a bearer, 401 without.
pub async fn require_metrics_access(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let allowed = state.metrics.public
        || presented.is_some_and(|p| {
            secrets_match(p, &state.api_secret)
                || state
                    .metrics
                    .token
                    .as_ref()
                    .is_some_and(|t| secrets_match(p, t))
        });
    if allowed {
        return next.run(req).await;
    }
    let _req = delay_failure(&state, req).await;
    with_challenge(
        (
            StatusCode::UNAUTHORIZED,
            "metrics need 'Authorization: Bearer <API secret or metrics token>'\n",
        )
            .into_response(),
    )
}

fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bearer_parsing() {
        assert_eq!(super::bearer("Bearer abc"), Some("abc"));
        assert_eq!(super::bearer("bearer   abc "), Some("abc"));
        assert_eq!(super::bearer("Basic abc"), None);
        assert_eq!(super::bearer("Bearer"), None);
    }
}
