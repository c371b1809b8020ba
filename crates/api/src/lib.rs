//! streamgate's HTTP API: the Millicast-shaped REST token API under `/api`, guarded by the API
//! secret, plus `/healthz` and `/metrics`. It exposes a [`Router`] that the server merges with
//! the other HTTP routers on one listener. Business rules live in the auth crate; this crate
//! parses, checks the secret, calls [`streamgate_auth::Auth`] and shapes the answers.

mod antmedia;
mod body;
mod envelope;
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod jti;
mod mediastream;
mod secret;
mod tokens;

use std::sync::Arc;

use axum::middleware;
use axum::Router;
use streamgate_auth::{Auth, AuthFailures, Secret};

pub use antmedia::MAX_LIST_SIZE;
pub use body::MAX_BODY_BYTES;
pub use envelope::ApiError;
pub use health::{metrics_router, Health, MetricsSource};
pub use streamgate_auth::iso8601;

/// What the HTTP handlers share.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The auth service.
    pub auth: Arc<Auth>,
    /// The secret every `/api` request must present as a bearer token.
    pub api_secret: Arc<Secret>,
    /// Readiness and metrics.
    pub health: Health,
    /// Failed authentications per source, shared with the listeners: a wrong API secret
    /// is delayed and counted like a wrong token.
    pub failures: Arc<AuthFailures>,
    /// Who may read `/metrics`.
    pub metrics: MetricsAccess,
}

/// Who may read `/metrics` on the main HTTP listener.
#[derive(Clone, Debug, Default)]
pub struct MetricsAccess {
    /// Anyone (the operator chose to publish it).
    pub public: bool,
    /// A bearer token for scrapers, besides the API secret.
    pub token: Option<Arc<Secret>>,
}

/// The router for `/api/...`, the Ant Media routes (`/{app}/rest/v2/...`), `/healthz` and
/// `/metrics`. Every token route needs the API secret: as a bearer header, or for
/// Mediastream's route in its `token` query parameter.
pub fn router(state: ApiState) -> Router {
    let bearer = middleware::from_fn_with_state(state.clone(), secret::require_api_secret);
    let api = tokens::routes()
        .merge(jti::routes())
        .route_layer(bearer)
        .merge(mediastream::routes())
        .fallback(envelope::not_found);
    let antmedia_bearer =
        middleware::from_fn_with_state(state.clone(), secret::require_api_secret_antmedia);
    let antmedia = antmedia::routes().route_layer(antmedia_bearer);
    Router::new()
        .nest("/api", api)
        .merge(antmedia)
        .merge(health::routes(&state))
        .with_state(state)
}
