//! streamgate's HTTP API: the Millicast-shaped REST token API under `/api`, guarded by the API
//! secret, plus `/healthz` and `/metrics`. It exposes a [`Router`] that the server merges with
//! the other HTTP routers on one listener. Business rules live in the auth crate; this crate
//! parses, checks the secret, calls [`streamgate_auth::Auth`] and shapes the answers.

mod body;
mod envelope;
mod health;
mod secret;
mod time;
mod tokens;

use std::sync::Arc;

use axum::middleware;
use axum::Router;
use streamgate_auth::{Auth, Secret};

pub use body::MAX_BODY_BYTES;
pub use envelope::ApiError;
pub use health::{Health, MetricsSource};
pub use time::iso8601;

/// What the HTTP handlers share.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The auth service.
    pub auth: Arc<Auth>,
    /// The secret every `/api` request must present as a bearer token.
    pub api_secret: Arc<Secret>,
    /// Readiness and metrics.
    pub health: Health,
}

/// The router for `/api/...`, `/healthz` and `/metrics`.
pub fn router(state: ApiState) -> Router {
    let api = tokens::routes()
        .fallback(envelope::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            secret::require_api_secret,
        ));
    Router::new()
        .nest("/api", api)
        .merge(health::routes())
        .with_state(state)
}
