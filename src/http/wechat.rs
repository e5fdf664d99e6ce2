//! WeChat's doors into the platform.
//!
//! - [`product`] (seed 000): the owner of a product binds it to its WeChat hardware information
//!   and has its devices authorised with WeChat (`adddevice` through the connector), one device
//!   synchronously or all of them in a background job. Authenticated like every REST route
//!   (`Access-Token` or `Bearer`).
//! - [`user`] (seed 002): the mini-program's backend, authenticated as the WeChat application
//!   (`X-CK-Appid` and `Authorization: Sign …` with that application's secret, [`Signed`]),
//!   binds WeChat users (openids) to devices by QR code, unbinds them, and controls devices for
//!   them through the one command service ([`crate::command`]), the result pushed back with
//!   `pushappmsg`.
//!
//! Both answer as seed 003's routes do: bare bodies with HTTP 200, failures as the fitting status
//! with `{"error":{"code","msg"}}` from the one table ([`super::xlink::FAULTS`]). Nothing here is
//! on the routing path: WeChat is awaited only by the request that asked for it, and pushes run
//! in background tasks ([`crate::wechat::Work`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use utoipa::openapi::tag::TagBuilder;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use super::auth::{appid_header, check_nonce, check_sign};
use super::xlink::{Fault, XlinkError};
use crate::hub::Hub;
use crate::wechat::{AppCredentials, WeChatError};

pub mod product;
pub mod user;

/// A request from a WeChat application's backend: the application (found by `X-CK-Appid`,
/// its `Sign` checked over the raw body with its secret) and the JSON body.
pub struct Signed<T> {
    pub app: AppCredentials,
    pub body: T,
}

impl<T: DeserializeOwned> FromRequest<Arc<Hub>> for Signed<T> {
    type Rejection = Response;

    async fn from_request(req: Request, hub: &Arc<Hub>) -> Result<Self, Self::Rejection> {
        let (method, uri, headers) = (req.method().clone(), req.uri().clone(), req.headers().clone());
        let bytes = Bytes::from_request(req, hub).await.map_err(IntoResponse::into_response)?;
        let reject = |fault, msg: &str| XlinkError::new(fault, msg).into_response();
        check_nonce(&headers).map_err(|e| reject(Fault::InvalidParams, &e.msg))?;
        let appid = appid_header(&headers).ok_or_else(|| reject(Fault::BadSign, "missing X-CK-Appid"))?;
        let app = match hub.store.wechat_app(appid).await {
            Ok(Some(app)) => app,
            Ok(None) => return Err(reject(Fault::BadSign, "X-CK-Appid names no WeChat application on the platform")),
            Err(e) => return Err(XlinkError::from(e).into_response()),
        };
        check_sign(&app.secret, &method, &uri, &headers, &bytes).map_err(|e| reject(Fault::BadSign, &e.msg))?;
        let body = serde_json::from_slice(&bytes).map_err(|e| reject(Fault::InvalidParams, &format!("invalid body: {e}")))?;
        Ok(Signed { app, body })
    }
}

/// WeChat's errcode and errmsg for a failed call, as recorded with a device: WeChat's own, or -1
/// and the reason when WeChat did not answer one.
pub fn failure(e: &WeChatError) -> (i64, String) {
    (e.errcode().unwrap_or(-1), e.errmsg())
}

/// The `wechat` tag.
#[derive(OpenApi)]
#[openapi(modifiers(&WeChatDoc))]
struct WeChatApi;

struct WeChatDoc;

impl Modify for WeChatDoc {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let description = "Seeds 000 and 002: a product's WeChat hardware binding and its devices' WeChat authorisation \
            (the product's owner, by `Access-Token` or `Bearer`), and the routes of a WeChat application's backend \
            (`X-CK-Appid` and `Authorization: Sign base64(HMAC-SHA256(secret, raw body))` with the secret given to \
            `switchyard admin wechat-app add`): binding WeChat users to devices by QR code and controlling them. \
            Successes are the bare bodies shown with HTTP 200; failures the HTTP status with \
            `{\"error\":{\"code\":N,\"msg\":\"…\"}}`, codes from the table of the `xlink` tag. WeChat's own errcodes \
            (40101 among them) come back inside `resp` with HTTP 200.";
        openapi.tags.get_or_insert_with(Vec::new).push(TagBuilder::new().name("wechat").description(Some(description)).build());
    }
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::with_openapi(WeChatApi::openapi()).merge(product::routes()).merge(user::routes())
}
