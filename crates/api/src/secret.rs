//! The API-secret checks: a bearer header on the REST routes, or (Mediastream's route) a query
//! parameter. Both hash the presented value and compare in constant time.

use axum::extract::{Request, State};
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

/// Millicast-shaped routes: 401 in the `fail` envelope without the secret.
pub async fn require_api_secret(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    if bearer_ok(&state, req.headers()) {
        return next.run(req).await;
    }
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
    let body = json!({ "success": false, "message": "missing or wrong API secret (send 'Authorization: Bearer <secret>')" });
    with_challenge((StatusCode::UNAUTHORIZED, Json(body)).into_response())
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
