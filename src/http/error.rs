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
    /// Answer HTTP 429 with this `Retry-After` (seconds) instead of 200.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: i64, msg: impl Into<String>) -> Self {
        ApiError { code, msg: msg.into(), data: json!({}), retry_after: None }
    }

    /// The account is locked after too many failed checks (see [`crate::auth::lockout`]).
    pub fn locked(retry_after: std::time::Duration) -> Self {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let mut e = Self::new(429, format!("too many failed attempts for this account; retry in {secs} s"));
        e.retry_after = Some(secs.max(1));
        e
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
        let mut res = Json(json!({ "error": self.code, "msg": self.msg, "data": self.data })).into_response();
        if let Some(secs) = self.retry_after {
            *res.status_mut() = axum::http::StatusCode::TOO_MANY_REQUESTS;
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        res
    }
}

/// A successful envelope.
pub fn ok(data: Value) -> Json<Value> {
    Json(json!({ "error": 0, "msg": "", "data": data }))
}

pub async fn not_found() -> ApiError {
    ApiError::new(403, "api not found")
}
