//! The one error type of the HTTP side. It becomes the seed's envelope
//! `{"error":N,"msg":"…","data":{}}` with HTTP status 200, as the cloud answers; internal errors
//! are logged here and never shown to the client.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub code: i64,
    pub msg: String,
    pub data: Value,
}

impl ApiError {
    pub fn new(code: i64, msg: impl Into<String>) -> Self {
        ApiError { code, msg: msg.into(), data: json!({}) }
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, msg)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error while serving a request");
        ApiError::new(500, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        Json(json!({ "error": self.code, "msg": self.msg, "data": self.data })).into_response()
    }
}

/// A successful envelope.
pub fn ok(data: Value) -> Json<Value> {
    Json(json!({ "error": 0, "msg": "", "data": data }))
}

pub async fn not_found() -> ApiError {
    ApiError::new(403, "api not found")
}
