//! Ant Media's token routes, for backends written against Ant Media:
//! `/{app}/rest/v2/broadcasts/{streamId}/token`, `/jwt-token`, `/tokens` (DELETE) and
//! `/tokens/list/{offset}/{size}`, and the older `/{app}/rest/broadcast/getToken?id=`, which
//! answers as the v2 token route. The stream is `{app}/{streamId}`, which is what RTMP
//! (`rtmp://host/{app}/{streamId}?token=`) and the other protocols name it.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};
use streamgate_auth::jwt::SignClaims;
use streamgate_auth::rules::StreamRule;
use streamgate_auth::{random_urlsafe, unix_millis, StreamName, TokenKind, TokenRecord, TokenSpec};

use crate::ApiState;

/// Largest page of `tokens/list`.
pub const MAX_LIST_SIZE: usize = 50;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/{app}/rest/v2/broadcasts/{stream}/token", get(one_time))
        .route("/{app}/rest/broadcast/getToken", get(legacy_one_time))
        .route("/{app}/rest/v2/broadcasts/{stream}/jwt-token", get(jwt))
        .route(
            "/{app}/rest/v2/broadcasts/{stream}/tokens",
            delete(revoke_all),
        )
        .route(
            "/{app}/rest/v2/broadcasts/{stream}/tokens/list/{offset}/{size}",
            get(list),
        )
}

/// Ant Media's error answer.
fn fail(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "success": false, "message": message.into() })),
    )
        .into_response()
}

fn bad(message: impl Into<String>) -> Response {
    fail(StatusCode::BAD_REQUEST, message)
}

struct Request {
    stream: StreamName,
    kind: TokenKind,
    type_name: &'static str,
    expire_date: i64,
    room_id: Option<String>,
}

/// The request's stream, type, expiry and room; the error is the message for a 400.
fn parse(
    app: &str,
    stream_id: &str,
    q: &HashMap<String, String>,
    now: SystemTime,
) -> Result<Request, String> {
    let stream =
        StreamName::new(&format!("{app}/{stream_id}")).map_err(|e| format!("streamId: {e}"))?;
    let (kind, type_name) = match q.get("type").map(String::as_str) {
        Some("publish") => (TokenKind::Publish, "publish"),
        Some("play") => (TokenKind::Subscribe, "play"),
        _ => return Err("type: must be publish or play".into()),
    };
    let expire_date = q
        .get("expireDate")
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| "expireDate: must be a Unix time in seconds".to_owned())?;
    if expire_date.saturating_mul(1000) <= unix_millis(now) {
        return Err("expireDate: must be in the future".into());
    }
    let room_id = q.get("roomId").filter(|r| !r.is_empty()).cloned();
    Ok(Request {
        stream,
        kind,
        type_name,
        expire_date,
        room_id,
    })
}

fn shape(token: Option<&str>, stream_id: &str, r: &Request) -> Value {
    json!({
        "tokenId": token,
        "streamId": stream_id,
        "expireDate": r.expire_date,
        "type": r.type_name,
        "roomId": r.room_id,
    })
}

/// Parses the request and checks `expireDate` against the server's expiry policy; returns the
/// request and the expiry to store (Unix ms).
fn checked(
    state: &ApiState,
    app: &str,
    stream_id: &str,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    now: SystemTime,
) -> Result<(Request, Option<i64>), String> {
    let Ok(Query(q)) = query else {
        return Err("malformed query string".into());
    };
    let r = parse(app, stream_id, &q, now)?;
    let left_ms = r.expire_date.saturating_mul(1000) - unix_millis(now);
    let secs = u64::try_from(left_ms.div_euclid(1000).max(1)).unwrap_or(1);
    let expires_on = state
        .auth
        .expiry(now, Some(secs), "expireDate")
        .map_err(|e| e.to_string())?;
    Ok((r, expires_on))
}

/// A one-time token for exactly that stream and type.
async fn one_time(
    State(state): State<ApiState>,
    Path((app, stream_id)): Path<(String, String)>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    make_one_time(state, app, stream_id, query).await
}

/// The older route of the same: the stream in `?id=`.
async fn legacy_one_time(
    State(state): State<ApiState>,
    Path(app): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let stream_id = match &query {
        Ok(Query(q)) => q.get("id").cloned().unwrap_or_default(),
        Err(_) => return bad("malformed query string"),
    };
    if stream_id.is_empty() {
        return bad("id: the stream id is missing");
    }
    make_one_time(state, app, stream_id, query).await
}

async fn make_one_time(
    state: ApiState,
    app: String,
    stream_id: String,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let now = SystemTime::now();
    let (r, expires_on) = match checked(&state, &app, &stream_id, query, now) {
        Ok(parsed) => parsed,
        Err(message) => return bad(message),
    };
    let rule = match StreamRule::exact(r.stream.as_str()) {
        Ok(rule) => rule,
        Err(e) => return bad(e.to_string()),
    };
    let mut spec = TokenSpec::new(format!("Ant Media {} token for {}", r.type_name, r.stream));
    spec.streams = vec![rule];
    spec.max_uses = Some(1);
    spec.expires_on = expires_on;
    spec.tag = r.room_id.clone();
    let auth = state.auth.clone();
    let kind = r.kind;
    let created = tokio::task::spawn_blocking(move || auth.create(kind, spec, now)).await;
    match created {
        Ok(Ok((record, secret))) => {
            tracing::info!(id = %record.id, stream = %r.stream, "Ant Media one-time token created");
            (
                StatusCode::OK,
                Json(shape(Some(secret.expose()), &stream_id, &r)),
            )
                .into_response()
        }
        Ok(Err(e)) => bad(e.to_string()),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A signed token for that stream and type, reusable until `expireDate`.
async fn jwt(
    State(state): State<ApiState>,
    Path((app, stream_id)): Path<(String, String)>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let now = SystemTime::now();
    let r = match checked(&state, &app, &stream_id, query, now) {
        Ok((r, _)) => r,
        Err(message) => return bad(message),
    };
    let Some(signer) = state.auth.jwt().filter(|j| j.can_sign()) else {
        return bad("signed tokens are not configured on this server");
    };
    let Ok(jti) = random_urlsafe(16) else {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, "random source failed");
    };
    let claims = SignClaims {
        kind: r.type_name.into(),
        stream_id: r.stream.to_string(),
        exp: r.expire_date,
        iat: unix_millis(now).div_euclid(1000),
        jti,
    };
    match signer.sign(&claims) {
        Ok(token) => (StatusCode::OK, Json(shape(Some(&token), &stream_id, &r))).into_response(),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Deletes every stored token of the stream, ending their sessions.
async fn revoke_all(
    State(state): State<ApiState>,
    Path((app, stream_id)): Path<(String, String)>,
) -> Response {
    let stream = match StreamName::new(&format!("{app}/{stream_id}")) {
        Ok(s) => s,
        Err(e) => return bad(format!("streamId: {e}")),
    };
    let auth = state.auth.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut n = 0;
        for t in auth.tokens_for_stream(None, stream.as_str()) {
            auth.delete(t.kind, t.id)?;
            n += 1;
        }
        Ok::<_, streamgate_auth::AuthError>(n)
    })
    .await;
    match result {
        Ok(Ok(n)) => (
            StatusCode::OK,
            Json(json!({ "success": true, "message": format!("{n} tokens deleted") })),
        )
            .into_response(),
        Ok(Err(e)) => bad(e.to_string()),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A page of the stream's stored tokens (their secrets are not stored, so `tokenId` is null).
async fn list(
    State(state): State<ApiState>,
    Path((app, stream_id, offset, size)): Path<(String, String, String, String)>,
) -> Response {
    let stream = match StreamName::new(&format!("{app}/{stream_id}")) {
        Ok(s) => s,
        Err(e) => return bad(format!("streamId: {e}")),
    };
    let (Ok(offset), Ok(size)) = (offset.parse::<usize>(), size.parse::<usize>()) else {
        return bad("offset and size must be non-negative integers");
    };
    if size == 0 || size > MAX_LIST_SIZE {
        return bad(format!("size: must be 1 to {MAX_LIST_SIZE}"));
    }
    let items: Vec<Value> = state
        .auth
        .tokens_for_stream(None, stream.as_str())
        .into_iter()
        .skip(offset)
        .take(size)
        .map(|t: TokenRecord| {
            json!({
                "id": t.id.0,
                "tokenId": Value::Null,
                "streamId": stream_id,
                "expireDate": t.spec.expires_on.map(|e| e.div_euclid(1000)),
                "type": if t.kind == TokenKind::Publish { "publish" } else { "play" },
                "roomId": t.spec.tag,
                "used": t.uses,
            })
        })
        .collect();
    (StatusCode::OK, Json(Value::Array(items))).into_response()
}
