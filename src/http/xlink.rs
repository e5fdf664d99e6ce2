//! Seed 003's routes (the Xlink device API), a second front door to the same platform: devices
//! users register themselves, the versioned list of a user's devices, extension properties, and
//! sharing by invite code. Everything lands on the model seed 004's routes use: one user table,
//! one device table, one sharing model (see `store/invite.rs`).
//!
//! What differs at the door: clients send only `Access-Token: <at>` (the shared [`Caller`] check
//! accepts it beside `Bearer`), successes are the seed's bare bodies with HTTP 200 (an empty body
//! where the seed shows none), and failures are the fitting HTTP status with
//! `{"error":{"code":N,"msg":"…"}}`, N from the one table [`FAULTS`] (also in the README and in
//! `/openapi.json`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::auth::{Caller, bearer};
use super::error::ApiError;
use crate::hub::Hub;
use crate::store::{InviteError, PropertyError, RegisterError, StoreError};

mod device;
mod invite;

/// Every way a seed-003 route fails: the HTTP status and the body's `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    InvalidParams,
    BadProperty,
    TooManyProperties,
    ShareWithSelf,
    BadToken,
    TokenExpired,
    Forbidden,
    RegistrationClosed,
    UnknownProduct,
    UnknownDevice,
    UnknownInvite,
    UnknownUser,
    MacTaken,
    AlreadyShared,
    InviteExpired,
    InviteAnswered,
    TooManyInvites,
    Internal,
    BadSign,
    UnknownWeChatApp,
    BadQrCode,
    NotBound,
    AuthRunning,
    DeviceOffline,
    DeviceBusy,
    TooManyWeChatUsers,
    WeChatUnavailable,
    NoAnswer,
}

/// The one table of codes, in the order the README and the OpenAPI document list them.
pub const FAULTS: [Fault; 28] = [
    Fault::InvalidParams,
    Fault::BadProperty,
    Fault::TooManyProperties,
    Fault::ShareWithSelf,
    Fault::UnknownWeChatApp,
    Fault::BadQrCode,
    Fault::BadToken,
    Fault::TokenExpired,
    Fault::BadSign,
    Fault::Forbidden,
    Fault::RegistrationClosed,
    Fault::UnknownProduct,
    Fault::UnknownDevice,
    Fault::UnknownInvite,
    Fault::UnknownUser,
    Fault::NotBound,
    Fault::MacTaken,
    Fault::AlreadyShared,
    Fault::InviteExpired,
    Fault::InviteAnswered,
    Fault::TooManyInvites,
    Fault::AuthRunning,
    Fault::DeviceOffline,
    Fault::DeviceBusy,
    Fault::TooManyWeChatUsers,
    Fault::Internal,
    Fault::WeChatUnavailable,
    Fault::NoAnswer,
];

impl Fault {
    /// HTTP status, code, and what it means.
    pub fn entry(self) -> (StatusCode, i64, &'static str) {
        match self {
            Fault::InvalidParams => {
                (StatusCode::BAD_REQUEST, 4001, "bad input: not JSON, a missing or malformed field, a bad MAC, expire or mode")
            }
            Fault::BadProperty => (
                StatusCode::BAD_REQUEST,
                4002,
                "a bad property key (empty, `.`, NUL, leading `$`) or value (not a string, number or boolean, over 1 KiB)",
            ),
            Fault::TooManyProperties => (StatusCode::BAD_REQUEST, 4003, "the change would leave more than 10 properties"),
            Fault::ShareWithSelf => (StatusCode::BAD_REQUEST, 4004, "sharing a device with its manager"),
            Fault::BadToken => (StatusCode::UNAUTHORIZED, 4011, "missing or unknown access token"),
            Fault::TokenExpired => (StatusCode::UNAUTHORIZED, 4012, "expired access token"),
            Fault::Forbidden => (
                StatusCode::FORBIDDEN,
                4031,
                "not allowed: another user in the path, someone else's device, invite or product, a sharee doing what only the manager may, the manager answering their own invite",
            ),
            Fault::RegistrationClosed => (StatusCode::FORBIDDEN, 4032, "the product does not allow user registration"),
            Fault::UnknownProduct => (StatusCode::NOT_FOUND, 4041, "unknown product"),
            Fault::UnknownDevice => {
                (StatusCode::NOT_FOUND, 4042, "unknown device, or a property path naming another product than the device's")
            }
            Fault::UnknownInvite => (StatusCode::NOT_FOUND, 4043, "unknown invite code (or one the caller removed from their list)"),
            Fault::UnknownUser => (StatusCode::NOT_FOUND, 4044, "no account to share with (`app` mode)"),
            Fault::MacTaken => (StatusCode::CONFLICT, 4091, "a device with this MAC is already registered under the product"),
            Fault::AlreadyShared => (StatusCode::CONFLICT, 4092, "the user already shares the device"),
            Fault::InviteExpired => (StatusCode::CONFLICT, 4093, "the invite expired"),
            Fault::InviteAnswered => (StatusCode::CONFLICT, 4094, "the invite was already accepted, denied or cancelled"),
            Fault::TooManyInvites => (StatusCode::CONFLICT, 4095, "the device has 20 pending invites already"),
            Fault::Internal => (StatusCode::INTERNAL_SERVER_ERROR, 5001, "internal error"),
            Fault::BadSign => {
                (StatusCode::UNAUTHORIZED, 4013, "WeChat application routes: unknown X-CK-Appid, or a missing or wrong `Sign` signature")
            }
            Fault::UnknownWeChatApp => (StatusCode::BAD_REQUEST, 4005, "app_id names no WeChat application added to the platform"),
            Fault::BadQrCode => (StatusCode::BAD_REQUEST, 4006, "the QR code is not `{deviceid, digest}`, or its digest is wrong"),
            Fault::NotBound => (
                StatusCode::NOT_FOUND,
                4045,
                "no WeChat binding: the product has none (or one to another WeChat application), or the WeChat user is not bound to the device",
            ),
            Fault::AuthRunning => (StatusCode::CONFLICT, 4096, "a WeChat authorisation job already runs for the product"),
            Fault::DeviceOffline => (StatusCode::CONFLICT, 4097, "the device is offline"),
            Fault::DeviceBusy => (StatusCode::CONFLICT, 4098, "the device has as many commands waiting as it may"),
            Fault::TooManyWeChatUsers => (StatusCode::CONFLICT, 4099, "the device has as many WeChat users bound as it may"),
            Fault::WeChatUnavailable => (StatusCode::BAD_GATEWAY, 5021, "WeChat could not be reached or answered an HTTP error"),
            Fault::NoAnswer => {
                (StatusCode::GATEWAY_TIMEOUT, 5041, "no answer in time: WeChat within 5 s (`device_auth`), or the device's ack (`control`)")
            }
        }
    }
}

/// The code table as Markdown rows (`| HTTP | code | meaning |`), for the OpenAPI document.
pub fn code_table() -> String {
    let mut out = String::from("| HTTP | code | meaning |\n| --- | --- | --- |\n");
    for f in FAULTS {
        let (status, code, meaning) = f.entry();
        out.push_str(&format!("| {} | {code} | {meaning} |\n", status.as_u16()));
    }
    out
}

/// A seed-003 failure: a [`Fault`] with a message for humans. Internals never reach the client.
#[derive(Debug)]
pub struct XlinkError {
    pub fault: Fault,
    pub msg: String,
}

impl XlinkError {
    pub fn new(fault: Fault, msg: impl Into<String>) -> Self {
        XlinkError { fault, msg: msg.into() }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(Fault::InvalidParams, msg)
    }
}

/// The failure body: `{"error":{"code":N,"msg":"…"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// See the code table of the `xlink` tag.
    pub code: i64,
    pub msg: String,
}

impl IntoResponse for XlinkError {
    fn into_response(self) -> Response {
        let (status, code, _) = self.fault.entry();
        (status, axum::Json(ErrorBody { error: ErrorDetail { code, msg: self.msg } })).into_response()
    }
}

impl From<StoreError> for XlinkError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error while serving a request");
        XlinkError::new(Fault::Internal, "internal error")
    }
}

/// What the shared handlers answer in the seed-004 envelope, in this door's terms.
impl From<ApiError> for XlinkError {
    fn from(e: ApiError) -> Self {
        let fault = match e.code {
            400 => Fault::InvalidParams,
            401 | 407 => Fault::BadToken,
            402 => Fault::TokenExpired,
            405 => Fault::UnknownDevice,
            406 => Fault::Forbidden,
            _ => Fault::Internal,
        };
        // 500s were logged where they arose, with their cause.
        let msg = if fault == Fault::Internal { "internal error".to_owned() } else { e.msg };
        XlinkError::new(fault, msg)
    }
}

impl From<RegisterError> for XlinkError {
    fn from(e: RegisterError) -> Self {
        let fault = match &e {
            RegisterError::UnknownProduct(_) => Fault::UnknownProduct,
            RegisterError::NotAllowed(_) => Fault::RegistrationClosed,
            RegisterError::MacTaken(_) => Fault::MacTaken,
            RegisterError::Store(_) => Fault::Internal,
        };
        match e {
            RegisterError::Store(s) => s.into(),
            e => XlinkError::new(fault, e.to_string()),
        }
    }
}

impl From<PropertyError> for XlinkError {
    fn from(e: PropertyError) -> Self {
        let fault = match &e {
            PropertyError::UnknownDevice(_) | PropertyError::WrongProduct(..) => Fault::UnknownDevice,
            PropertyError::Forbidden(_) => Fault::Forbidden,
            PropertyError::BadKey(..) | PropertyError::BadValue(..) => Fault::BadProperty,
            PropertyError::TooMany(_) => Fault::TooManyProperties,
            PropertyError::Store(_) => Fault::Internal,
        };
        match e {
            PropertyError::Store(s) => s.into(),
            e => XlinkError::new(fault, e.to_string()),
        }
    }
}

impl From<InviteError> for XlinkError {
    fn from(e: InviteError) -> Self {
        let fault = match &e {
            InviteError::UnknownDevice(_) => Fault::UnknownDevice,
            InviteError::UnknownInvite => Fault::UnknownInvite,
            InviteError::Forbidden(_) => Fault::Forbidden,
            InviteError::WithSelf => Fault::ShareWithSelf,
            InviteError::AlreadyShared => Fault::AlreadyShared,
            InviteError::Expired => Fault::InviteExpired,
            InviteError::Answered(_) => Fault::InviteAnswered,
            InviteError::TooMany(_) => Fault::TooManyInvites,
            InviteError::Store(_) => Fault::Internal,
        };
        match e {
            InviteError::Store(s) => s.into(),
            e => XlinkError::new(fault, e.to_string()),
        }
    }
}

/// The caller, authenticated as every REST route authenticates (`Access-Token` or `Bearer`),
/// with failures in this door's form.
pub struct Account(pub Caller);

impl FromRequestParts<Arc<Hub>> for Account {
    type Rejection = XlinkError;

    async fn from_request_parts(parts: &mut Parts, hub: &Arc<Hub>) -> Result<Self, Self::Rejection> {
        Ok(Account(bearer(hub, &parts.headers).await?))
    }
}

impl Account {
    /// A `{user_id}` path segment must name the caller.
    pub fn check_path(&self, user_id: &str) -> Result<(), XlinkError> {
        if user_id != self.0.user.as_str() {
            return Err(XlinkError::new(Fault::Forbidden, "the path names another user"));
        }
        Ok(())
    }
}

/// A JSON body; not JSON, wrong types or missing fields → 400 with serde's reason.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(IntoResponse::into_response)?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| XlinkError::invalid(format!("invalid body: {e}")).into_response())
    }
}

/// Path parameters; a malformed segment → 400.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = XlinkError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParams(p.0))
            .map_err(|e| XlinkError::invalid(format!("invalid path: {}", e.body_text())))
    }
}

/// Milliseconds since the epoch as the seed writes times: `2015-10-09T08:15:40.843Z`.
pub fn iso_millis(ms: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// The `xlink` tag with the code table, and the `Access-Token` security scheme.
#[derive(OpenApi)]
#[openapi(modifiers(&XlinkDoc))]
struct XlinkApi;

struct XlinkDoc;

impl Modify for XlinkDoc {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "access_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description("Access-Token", "The access token, as seed 003 sends it"))),
        );
        let description = format!(
            "Seed 003 (the Xlink device API): devices users register, the versioned device list, extension properties, \
             sharing by invite code. Authenticated by `Access-Token: <at>` (or `Authorization: Bearer <at>`), no other \
             header needed. Successes are the bare bodies shown with HTTP 200 (an empty body where none is shown); failures \
             are the HTTP status below with `{{\"error\":{{\"code\":N,\"msg\":\"…\"}}}}`.\n\n{}",
            code_table()
        );
        openapi.tags.get_or_insert_with(Vec::new).push(TagBuilder::new().name("xlink").description(Some(description)).build());
    }
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::with_openapi(XlinkApi::openapi()).merge(device::routes()).merge(invite::routes())
}
