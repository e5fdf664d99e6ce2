//! `/dispatch/app` and `/dispatch/device`: where to open the long connection. No auth; the body,
//! if any, is ignored (firmware sends its identity there, but any node may take any device).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::Hub;

pub async fn dispatch(State(hub): State<Arc<Hub>>) -> Json<Value> {
    let (domain, port) = hub.public_ws();
    let ip = hub.public_ip();
    Json(json!({ "error": 0, "reason": "ok", "IP": ip, "port": port, "domain": domain }))
}
