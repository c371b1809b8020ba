//! `/healthz` (200 once every listener is up) and `/metrics` (Prometheus text).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::ApiState;

/// Something that appends Prometheus text-format lines to `/metrics`.
pub trait MetricsSource: Send + Sync + 'static {
    /// Appends this source's metrics.
    fn write_metrics(&self, out: &mut String);
}

/// Readiness of the listeners, and the metrics sources to report.
#[derive(Clone, Default)]
pub struct Health {
    listeners: Arc<Mutex<BTreeMap<&'static str, bool>>>,
    sources: Arc<RwLock<Vec<Arc<dyn MetricsSource>>>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl Health {
    /// Declares a listener that must be up before `/healthz` answers 200.
    pub fn expect(&self, listener: &'static str) {
        self.lock().entry(listener).or_insert(false);
    }

    /// Marks a listener as up.
    pub fn up(&self, listener: &'static str) {
        self.lock().insert(listener, true);
    }

    /// Marks a listener as down (for instance while it restarts).
    pub fn down(&self, listener: &'static str) {
        self.lock().insert(listener, false);
    }

    /// Whether `listener` is up (`None` if it was never declared).
    pub fn is_up(&self, listener: &str) -> Option<bool> {
        self.lock().get(listener).copied()
    }

    /// Adds a metrics source.
    pub fn add_metrics(&self, source: Arc<dyn MetricsSource>) {
        self.sources
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(source);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, bool>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub fn routes(state: &ApiState) -> Router<ApiState> {
    let access =
        axum::middleware::from_fn_with_state(state.clone(), crate::secret::require_metrics_access);
    Router::new()
        .route("/metrics", get(metrics).route_layer(access))
        .route("/healthz", get(healthz))
}

/// `/metrics` alone and without credentials, for a listener of its own
/// (`metrics.listen`): an address only the scraper reaches.
pub fn metrics_router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(state): State<ApiState>) -> Response {
    let listeners = state.health.lock().clone();
    let waiting: Vec<&str> = listeners
        .iter()
        .filter(|(_, up)| !**up)
        .map(|(n, _)| *n)
        .collect();
    let up: Vec<&str> = listeners
        .iter()
        .filter(|(_, up)| **up)
        .map(|(n, _)| *n)
        .collect();
    if waiting.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "status": "ok", "listeners": up })),
        )
            .into_response()
    } else {
        let body = json!({ "status": "starting", "listeners": up, "waiting": waiting });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// Sources listed by `streamgate_auth_failures_recent`.
pub const TOP_FAILURE_SOURCES: usize = 10;

async fn metrics(State(state): State<ApiState>) -> Response {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP streamgate_tokens Tokens in the store.");
    let _ = writeln!(out, "# TYPE streamgate_tokens gauge");
    let _ = writeln!(out, "streamgate_tokens {}", state.auth.token_count());
    let _ = writeln!(
        out,
        "# HELP streamgate_sessions Live sessions admitted by the auth decision, by protocol and action."
    );
    let _ = writeln!(out, "# TYPE streamgate_sessions gauge");
    for (protocol, action, n) in state.auth.registry().counts_by_protocol() {
        let action = match action {
            streamgate_auth::Action::Publish => "publish",
            streamgate_auth::Action::Play => "play",
        };
        let _ = writeln!(
            out,
            "streamgate_sessions{{protocol=\"{}\",action=\"{action}\"}} {n}",
            protocol.as_str()
        );
    }
    let now = std::time::Instant::now();
    let _ = writeln!(out, "# HELP streamgate_auth_failures_total Failed authentications (tokens and the API secret), delayed before their answer.");
    let _ = writeln!(out, "# TYPE streamgate_auth_failures_total counter");
    let _ = writeln!(
        out,
        "streamgate_auth_failures_total {}",
        state.failures.total()
    );
    let _ = writeln!(out, "# HELP streamgate_auth_failure_sources Source addresses (IPv6: /64) with a failed authentication in the last minute.");
    let _ = writeln!(out, "# TYPE streamgate_auth_failure_sources gauge");
    let _ = writeln!(
        out,
        "streamgate_auth_failure_sources {}",
        state.failures.active_sources(now)
    );
    let _ = writeln!(out, "# HELP streamgate_auth_failures_recent Failed authentications in the last minute of the sources with the most.");
    let _ = writeln!(out, "# TYPE streamgate_auth_failures_recent gauge");
    for (source, n) in state.failures.top(TOP_FAILURE_SOURCES, now) {
        let _ = writeln!(
            out,
            "streamgate_auth_failures_recent{{source=\"{source}\"}} {n}"
        );
    }
    let sources = state
        .health
        .sources
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for source in sources {
        source.write_metrics(&mut out);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
