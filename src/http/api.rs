//! What every REST handler is built from: the Bearer-authenticated [`Caller`] as an extractor,
//! [`Body`] and [`Query`] extractors that answer malformed input with `400` in the envelope, the
//! [`Envelope`] schema for the OpenAPI document, and the document itself ([`ApiDoc`]).
//!
//! A handler looks like
//!
//! ```ignore
//! #[utoipa::path(post, path = "/v2/family/room", tag = "family", security(("bearer" = [])),
//!     request_body = AddRoom, responses((status = 200, body = Envelope<RoomItem>,
//!     description = "errors: 400 bad parameters, 405 unknown family, 20002 100 rooms already")))]
//! pub async fn add_room(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<AddRoom>)
//!     -> Result<Json<Value>, ApiError> { … Ok(ok_data(room)) }
//! ```
//!
//! and is registered in its area's `routes()` with `utoipa_axum::routes!`, so the route and its
//! OpenAPI entry come from the same item and cannot drift.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::auth::{Caller, bearer};
use super::error::ApiError;
use crate::Hub;

impl FromRequestParts<Arc<Hub>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, hub: &Arc<Hub>) -> Result<Self, Self::Rejection> {
        bearer(hub, &parts.headers).await
    }
}

/// A JSON request body. Not JSON, wrong types or missing fields → `400` with serde's reason;
/// over the size limit → `413`.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        serde_json::from_slice(&bytes).map(Body).map_err(|e| ApiError::bad_request(format!("invalid parameters: {e}")).into_response())
    }
}

/// Query-string parameters; malformed ones → `400`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::bad_request(format!("invalid parameters: {}", e.body_text())))
    }
}

/// Parameters of a `DELETE` route: clients send them in the query string (the seed's own SDK
/// does), some as a JSON body; a non-empty body wins. Malformed → `400`.
pub struct DeleteParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for DeleteParams<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let query = req.uri().query().unwrap_or("").to_owned();
        let bytes = Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        let parsed = if bytes.iter().all(u8::is_ascii_whitespace) {
            serde_urlencoded::from_str::<T>(&query).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice::<T>(&bytes).map_err(|e| e.to_string())
        };
        parsed.map(DeleteParams).map_err(|e| ApiError::bad_request(format!("invalid parameters: {e}")).into_response())
    }
}

/// The seed's response envelope: `error` 0 and `msg` "" on success, `data` the payload.
#[derive(Serialize, ToSchema)]
pub struct Envelope<T> {
    /// 0 on success, else the error code (see the route's description).
    pub error: i64,
    /// "" on success, else a reason for humans.
    pub msg: String,
    pub data: T,
}

/// An empty `data` object.
#[derive(Serialize, ToSchema, Default)]
pub struct Empty {}

/// A successful envelope around any serialisable payload.
pub fn ok_data<T: Serialize>(data: T) -> axum::Json<serde_json::Value> {
    super::error::ok(serde_json::to_value(data).unwrap_or_else(|_| serde_json::json!({})))
}

/// The OpenAPI document; each area adds its paths through `OpenApiRouter`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard REST API",
        description = "The eWeLink/CoolKit v2 REST API as Switchyard serves it. Every answer is the envelope \
            `{\"error\":N,\"msg\":\"…\",\"data\":{…}}` (HTTP 200 unless the description says otherwise). \
            Common errors on every route: 400 bad parameters, 401 bad token or signature, 402 expired token, \
            403 unknown API, 405 unknown resource, 406 not allowed, 407 appid not allowed, 412 rate limit \
            (HTTP 429 with Retry-After), 413 body too large (HTTP 413), 500 internal error."
    ),
    modifiers(&Security),
    tags(
        (name = "user", description = "Accounts, login and tokens (Sign auth unless noted)"),
        (name = "homepage", description = "Everything an app shows on start, in one call"),
        (name = "device", description = "Things, device status and commands, adding and removing devices"),
        (name = "group", description = "Device groups"),
        (name = "share", description = "Sharing devices with other users"),
        (name = "history", description = "Operation history of a device"),
        (name = "ota", description = "Firmware updates"),
        (name = "family", description = "Families and rooms"),
        (name = "message", description = "The message centre"),
        (name = "dispatch", description = "Where clients open their WebSocket")
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        components.add_security_scheme(
            "sign",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Sign base64(HMAC-SHA256(appSecret, raw body or query))` with the app id in X-CK-Appid",
            ))),
        );
    }
}
