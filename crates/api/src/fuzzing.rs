//! Requests from arbitrary bytes against the real router (token API, Ant Media and
//! Mediastream routes, health, metrics) over an in-memory store: the body of the `rest_api`
//! fuzz target (`fuzz/`) and of this crate's property tests. Not part of the server.
//!
//! Input: one byte chooses the method (low 3 bits) and whether the API secret is sent (bit
//! 3); then the path and query up to the first newline; the rest is the body.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use streamgate_auth::jwt::JwtVerifier;
use streamgate_auth::{Auth, AuthConfig, MemoryStore, Secret};

use crate::{ApiState, Health};

/// The API secret the router of [`router`] takes.
pub const API_SECRET: &str = "fuzzing-api-secret-0123456789";

/// A router over a fresh in-memory store, with signed tokens enabled.
pub fn router() -> Option<Router> {
    let key = Secret::from_string("fuzzing-jwt-key-0123456789abcdef0123".into());
    let verifier = JwtVerifier::new(Some(&key), None).ok()?;
    let auth = Auth::open(Arc::new(MemoryStore::default()), AuthConfig::default())
        .ok()?
        .with_jwt(verifier);
    Some(crate::router(ApiState {
        auth: Arc::new(auth),
        api_secret: Arc::new(Secret::from_string(API_SECRET.into())),
        health: Health::default(),
        // No delay here: the fuzzer calls without a peer address, which nothing delays.
        failures: Arc::new(streamgate_auth::AuthFailures::default()),
        metrics: crate::MetricsAccess::default(),
    }))
}

/// The request `data` describes (see the module documentation), if it is one HTTP can carry.
pub fn request(data: &[u8]) -> Option<Request<Body>> {
    let (&flags, rest) = data.split_first()?;
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
        Method::GET,
    ];
    let method = methods.get(usize::from(flags & 7))?.clone();
    let split = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
    let (target, body) = rest.split_at(split);
    let target = std::str::from_utf8(target).ok()?;
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .header("content-type", "application/json");
    if flags & 8 != 0 {
        builder = builder.header("authorization", format!("Bearer {API_SECRET}"));
    }
    builder
        .body(Body::from(body.get(1..).unwrap_or_default().to_vec()))
        .ok()
}

/// Sends the request `data` describes to `router`; its status, if it was a request.
pub async fn send(router: &Router, data: &[u8]) -> Option<StatusCode> {
    use tower::ServiceExt as _;
    let req = request(data)?;
    let resp = router.clone().oneshot(req).await.ok()?;
    Some(resp.status())
}
