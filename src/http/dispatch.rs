//! `/dispatch/app` and `/dispatch/device`: where to open the long connection. No auth; the body,
//! if any, is ignored (firmware sends its identity there, but any node may take any device).
//! In a cluster the answer is the less loaded of two live nodes, from their heartbeats.
//! Not rate-limited: firmware retries dispatch on its own schedule.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use crate::hub::Hub;

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new().routes(utoipa_axum::routes!(dispatch_app)).routes(utoipa_axum::routes!(dispatch_device))
}

/// Where to connect (not the envelope: firmware reads these four keys at the top level).
#[derive(Serialize, ToSchema)]
pub struct Dispatch {
    /// Always 0.
    error: i64,
    /// Always "ok".
    reason: String,
    /// The address to connect to (for firmware that does not resolve names).
    #[serde(rename = "IP")]
    ip: String,
    port: u16,
    /// The host for `wss://{domain}:{port}/api/ws`.
    domain: String,
}

/// This node's public address; in a cluster, the less loaded of two live nodes picked at random.
fn answer(hub: &Hub) -> Json<Value> {
    let (ip, domain, port) = match &hub.cluster {
        Some(c) => c.nodes.dispatch(hub.metrics.connections_open.load(std::sync::atomic::Ordering::Relaxed)),
        None => {
            let (domain, port) = hub.public_ws();
            (hub.public_ip().to_owned(), domain, port)
        }
    };
    let reply = Dispatch { error: 0, reason: "ok".to_owned(), ip, port, domain };
    Json(serde_json::to_value(reply).unwrap_or_default())
}

/// Where an app opens its WebSocket. No authentication.
#[utoipa::path(method(get, post), path = "/dispatch/app", tag = "dispatch", responses((status = 200, body = Dispatch)))]
pub async fn dispatch_app(State(hub): State<Arc<Hub>>) -> Json<Value> {
    answer(&hub)
}

/// Where a device opens its WebSocket. No authentication; the body is ignored.
#[utoipa::path(method(get, post), path = "/dispatch/device", tag = "dispatch", responses((status = 200, body = Dispatch)))]
pub async fn dispatch_device(State(hub): State<Arc<Hub>>) -> Json<Value> {
    answer(&hub)
}
