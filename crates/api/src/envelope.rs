//! Millicast's response envelope: `{"status":"success","data":...}` and
//! `{"status":"fail","data":{"message":...}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;
use streamgate_auth::{AuthError, SpecError, StoreError};

/// A 200 answer wrapping `data`.
pub fn success<T: Serialize>(data: T) -> Response {
    (
        StatusCode::OK,
        Json(json!({ "status": "success", "data": data })),
    )
        .into_response()
}

/// An error answer: a status and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong, safe to show (never contains a secret).
    pub message: String,
}

impl ApiError {
    /// 400 with a message naming the bad field.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 503: the token database cannot be reached now; logged, and the caller may retry.
    pub fn unavailable(what: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %what, "request refused: the token database is unreachable");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "token database temporarily unavailable, try again".into(),
        }
    }

    /// 500, logged; the caller gets a generic message.
    pub fn internal(what: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %what, "request failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal error".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = if self.status.is_server_error() {
            json!({ "status": "error", "message": self.message })
        } else {
            json!({ "status": "fail", "data": { "message": self.message } })
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::NotFound => Self::not_found("token not found"),
            AuthError::Invalid(spec) => Self::bad_request(spec.to_string()),
            AuthError::Store(e @ StoreError::Unavailable(_)) => Self::unavailable(&e),
            other => Self::internal(&other),
        }
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        Self::bad_request(e.to_string())
    }
}

/// The answer for a route that does not exist.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}
