//! The bearer API-secret check on every `/api` route.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use streamgate_auth::secrets_match;

use crate::{ApiError, ApiState};

/// Lets the request through only with `Authorization: Bearer <API secret>`; 401 otherwise.
/// The comparison hashes both sides and compares in constant time.
pub async fn require_api_secret(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match presented {
        Some(p) if secrets_match(p, &state.api_secret) => next.run(req).await,
        _ => {
            let mut resp = ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: "missing or wrong API secret (send 'Authorization: Bearer <secret>')"
                    .into(),
            }
            .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            resp
        }
    }
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
