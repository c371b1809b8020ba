//! Revoking signed tokens by id: `POST /api/revoked_jti` `{"jti": "...", "expiresOn": <Unix s>}`
//! ends the sessions that token admitted and refuses it from then on; `GET
//! /api/revoked_jti/list` shows the list.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use crate::body::json_body;
use crate::envelope::success;
use crate::{iso8601, ApiError, ApiState};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/revoked_jti", post(revoke))
        .route("/revoked_jti/list", get(list))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RevokeBody {
    jti: String,
    /// The token's own expiry (Unix seconds), after which the entry is no longer needed.
    expires_on: Option<i64>,
}

async fn revoke(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let b: RevokeBody = json_body(&headers, body).await?;
    let auth = state.auth.clone();
    let expires = b.expires_on.map(|s| s.saturating_mul(1000));
    let jti = b.jti.clone();
    let ended = tokio::task::spawn_blocking(move || auth.revoke_jti(&jti, expires))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    tracing::info!(sessions = ended, "signed token revoked");
    Ok(success(json!({ "jti": b.jti, "sessionsEnded": ended })))
}

async fn list(State(state): State<ApiState>) -> Response {
    let items: Vec<_> = state
        .auth
        .revoked_jtis()
        .into_iter()
        .map(|(jti, e)| json!({ "jti": jti, "expiresOn": e.map(iso8601) }))
        .collect();
    success(items)
}
