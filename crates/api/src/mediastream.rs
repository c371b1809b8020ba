//! Mediastream's access-token route: `POST /api/access/issue?id=&type=live&token=<API secret>
//! [&ip=][&user_agent=][&time_limit=<seconds>]` gives a play token for that stream, bound to
//! that IP and user agent when given. The API secret travels in the query, as Mediastream's
//! clients send it.

use std::collections::HashMap;
use std::time::SystemTime;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use streamgate_auth::rules::{IpRule, StreamRule};
use streamgate_auth::{secrets_match, StreamName, TokenKind, TokenSpec};

use crate::ApiState;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/access/issue", post(issue))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "status": "ERROR", "message": message.into() })),
    )
        .into_response()
}

async fn issue(
    State(state): State<ApiState>,
    extensions: axum::http::Extensions,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "malformed query string");
    };
    if !q
        .get("token")
        .is_some_and(|t| secrets_match(t, &state.api_secret))
    {
        if let Some(ConnectInfo(peer)) = extensions.get::<ConnectInfo<SocketAddr>>() {
            crate::secret::delay_failure_from(&state, peer.ip()).await;
        }
        return error(StatusCode::UNAUTHORIZED, "invalid or missing API token");
    }
    let Some(id) = q.get("id") else {
        return error(StatusCode::BAD_REQUEST, "id: required");
    };
    let stream = match StreamName::new(id) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("id: {e}")),
    };
    if q.get("type").map(String::as_str) != Some("live") {
        return error(StatusCode::BAD_REQUEST, "type: only live is supported");
    }
    let time_limit = match q.get("time_limit").map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "time_limit: must be a number of seconds",
            )
        }
    };
    let now = SystemTime::now();
    let mut spec = TokenSpec::new(format!("Mediastream access to {stream}"));
    spec.expires_on = match state.auth.expiry(now, time_limit, "time_limit") {
        Ok(e) => e,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    spec.streams = match StreamRule::exact(stream.as_str()) {
        Ok(r) => vec![r],
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if let Some(ip) = q.get("ip").filter(|v| !v.is_empty()) {
        match IpRule::parse(ip) {
            Ok(r) => spec.allowed_ip_addresses = vec![r],
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("ip: {e}")),
        }
    }
    if let Some(ua) = q.get("user_agent").filter(|v| !v.is_empty()) {
        spec.allowed_user_agents = vec![ua.clone()];
    }
    let auth = state.auth.clone();
    match tokio::task::spawn_blocking(move || auth.create(TokenKind::Subscribe, spec, now)).await {
        Ok(Ok((record, secret))) => {
            tracing::info!(id = %record.id, stream = %stream, "Mediastream access token issued");
            let body = json!({ "status": "OK", "message": "access token issued", "access_token": secret.expose() });
            (StatusCode::OK, Json(body)).into_response()
        }
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
