//! The operator listener (`--metrics`, `127.0.0.1:9090` by default): what only the node's
//! operator should reach, apart from the public listeners. It serves `/metrics` (Prometheus text)
//! and `/healthz`, and the operator dashboard at `/dashboard` ([`crate::dashboard`]); anything
//! else is 404. It has the public listeners' deadlines and a small connection cap of its own.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::dashboard::{self, Dashboard};
use crate::hub::Hub;

/// Open connections the operator listener accepts at once.
pub const MAX_CONNECTIONS: usize = 64;

/// The operator listener's router; starts the dashboard's sampler (it runs until shutdown).
pub fn app(hub: Arc<Hub>) -> Router {
    let dashboard = Dashboard::start(hub.clone());
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(hub)
        .merge(dashboard::routes(dashboard))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
}

async fn metrics(State(hub): State<Arc<Hub>>) -> String {
    hub.metrics.render()
}
