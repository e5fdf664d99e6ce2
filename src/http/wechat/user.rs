//! Seed 002: WeChat users (known by openid, not platform accounts) and devices, called by a
//! WeChat application's backend ([`super::Signed`]).
//!
//! A WeChat user binds a device by its QR code, `{"deviceid","digest"}` with the digest seed
//! 004's `add` route checks (SHA-256 of the device id and its factory key), when the device's
//! product is bound to this WeChat application (seed 000). The binding makes them a listener of
//! the device, as a sharee is: they hear the results of their commands and the device's alarms
//! through `pushappmsg`. A bound WeChat user's command takes the socket's path, the one command
//! service, on the owner's behalf (the QR code proves possession, as for seed 004's `add`): an
//! offline device is answered at once, the ack awaited until the ack timeout (then 504), and the
//! result also pushed to the WeChat user in the background.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Signed;
use super::product::wechat_product;
use crate::command;
use crate::http::xlink::{ErrorBody, Fault, XlinkError};
use crate::hub::Hub;
use crate::ids::{DeviceId, UserKey};
use crate::protocol::CommandKind;
use crate::router::{Command, Outcome, RouteError};
use crate::store::WeChatBindError;

/// Most WeChat users one device may have bound.
pub const MAX_WECHAT_USERS_PER_DEVICE: i64 = 64;
/// Longest openid and push token accepted, in bytes.
const MAX_OPENID_BYTES: usize = 128;
const MAX_PUSH_TOKEN_BYTES: usize = 512;

#[derive(Deserialize, ToSchema)]
pub struct UserBind {
    pub openid: String,
    /// The token `pushappmsg` reaches this WeChat user with.
    pub push_token: String,
    /// The device's QR payload: the text `{"deviceid":"…","digest":"…"}` (or that object).
    #[schema(value_type = String)]
    pub qrcode: Value,
}

#[derive(Serialize, ToSchema)]
pub struct UserBound {
    pub deviceid: String,
    /// The platform's product of the device.
    pub product_id: String,
    /// WeChat's product id of the product's binding.
    pub wechat_product_id: String,
}

#[derive(Deserialize, ToSchema)]
pub struct UserUnbind {
    pub openid: String,
    pub deviceid: String,
}

#[derive(Deserialize, ToSchema)]
pub struct UserControl {
    pub openid: String,
    pub deviceid: String,
    /// A non-empty object: the `update` params sent to the device.
    #[schema(value_type = Object)]
    pub params: Value,
}

#[derive(Serialize, ToSchema)]
pub struct ControlResult {
    pub deviceid: String,
    /// The device's ack: 0 done, else the device's error code.
    pub error: i64,
    #[schema(value_type = Object)]
    pub params: Value,
}

fn check_openid(openid: &str) -> Result<(), XlinkError> {
    if openid.is_empty() || openid.len() > MAX_OPENID_BYTES {
        return Err(XlinkError::invalid(format!("openid must be 1 to {MAX_OPENID_BYTES} bytes")));
    }
    Ok(())
}

/// The device id and digest of a QR payload.
fn qr_payload(qrcode: &Value) -> Result<(String, String), XlinkError> {
    let bad = || XlinkError::new(Fault::BadQrCode, "qrcode must be the device's QR payload {\"deviceid\",\"digest\"}");
    let parsed;
    let object = match qrcode {
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text).map_err(|_| bad())?;
            &parsed
        }
        other => other,
    };
    let field = |k: &str| object.get(k).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 128).map(str::to_owned);
    Ok((field("deviceid").ok_or_else(bad)?, field("digest").ok_or_else(bad)?))
}

/// Binds a WeChat user to a device by its QR code (binding again updates the push token).
#[utoipa::path(post, path = "/v2/wechat/user/bind", tag = "wechat", security(("sign" = [])), request_body = UserBind,
    responses(
        (status = 200, body = UserBound),
        (status = 400, body = ErrorBody, description = "4001 bad input; 4006 the QR code is malformed or its digest wrong"),
        (status = 401, body = ErrorBody, description = "4013 unknown X-CK-Appid or a bad Sign"),
        (status = 404, body = ErrorBody, description = "4042 unknown device; 4045 the device's product is not bound to this WeChat application"),
        (status = 409, body = ErrorBody, description = "4099 the device has 64 WeChat users bound")))]
pub async fn bind(State(hub): State<Arc<Hub>>, req: Signed<UserBind>) -> Result<Json<UserBound>, XlinkError> {
    let Signed { app, body } = req;
    check_openid(&body.openid)?;
    if body.push_token.is_empty() || body.push_token.len() > MAX_PUSH_TOKEN_BYTES {
        return Err(XlinkError::invalid(format!("push_token must be 1 to {MAX_PUSH_TOKEN_BYTES} bytes")));
    }
    let (deviceid, digest) = qr_payload(&body.qrcode)?;
    let record = hub.store.device_record(&deviceid).await?.ok_or_else(|| XlinkError::new(Fault::UnknownDevice, "unknown device"))?;
    let expected = hex::encode(Sha256::digest(format!("{}{}", record.deviceid, record.factory_apikey).as_bytes()));
    if !digest.eq_ignore_ascii_case(&expected) {
        return Err(XlinkError::new(Fault::BadQrCode, "wrong digest"));
    }
    let not_bound = || XlinkError::new(Fault::NotBound, "the device's product is not bound to this WeChat application");
    let product_id = hub.store.device_product(&deviceid).await?.ok_or_else(not_bound)?;
    let bind = hub.store.wechat_bind(&product_id).await?.filter(|b| b.app_id == app.appid).ok_or_else(not_bound)?;
    let wechat_product_id = bind.wechat_iot.as_object().and_then(wechat_product).map(|p| p.to_string()).unwrap_or_default();
    match hub.store.bind_wechat_user(&app.appid, &body.openid, &deviceid, &body.push_token, MAX_WECHAT_USERS_PER_DEVICE).await {
        Ok(()) => {}
        Err(WeChatBindError::TooMany(n)) => {
            return Err(XlinkError::new(Fault::TooManyWeChatUsers, format!("the device has {n} WeChat users bound already")));
        }
        Err(WeChatBindError::Store(e)) => return Err(e.into()),
    }
    tracing::info!(app = %app.appid, device = %deviceid, "WeChat user bound to a device");
    Ok(Json(UserBound { deviceid, product_id, wechat_product_id }))
}

/// Unbinds a WeChat user from a device.
#[utoipa::path(post, path = "/v2/wechat/user/unbind", tag = "wechat", security(("sign" = [])), request_body = UserUnbind,
    responses(
        (status = 200, description = "Unbound; empty body"),
        (status = 400, body = ErrorBody, description = "4001 bad input"),
        (status = 401, body = ErrorBody, description = "4013 unknown X-CK-Appid or a bad Sign"),
        (status = 404, body = ErrorBody, description = "4045 the WeChat user is not bound to the device")))]
pub async fn unbind(State(hub): State<Arc<Hub>>, req: Signed<UserUnbind>) -> Result<(), XlinkError> {
    let Signed { app, body } = req;
    check_openid(&body.openid)?;
    if !hub.store.unbind_wechat_user(&app.appid, &body.openid, &body.deviceid).await? {
        return Err(XlinkError::new(Fault::NotBound, "the WeChat user is not bound to this device"));
    }
    tracing::info!(app = %app.appid, device = %body.deviceid, "WeChat user unbound from a device");
    Ok(())
}

/// Sends `params` to the device for a bound WeChat user, waits for its ack, answers the result
/// and pushes it to the WeChat user too.
#[utoipa::path(post, path = "/v2/wechat/user/control", tag = "wechat", security(("sign" = [])), request_body = UserControl,
    responses(
        (status = 200, body = ControlResult, description = "The device acked; the same result is pushed to the WeChat user"),
        (status = 400, body = ErrorBody, description = "4001 bad input (params not a non-empty object)"),
        (status = 401, body = ErrorBody, description = "4013 unknown X-CK-Appid or a bad Sign"),
        (status = 403, body = ErrorBody, description = "4031 the device has no owner"),
        (status = 404, body = ErrorBody, description = "4045 the WeChat user is not bound to the device"),
        (status = 409, body = ErrorBody, description = "4097 the device is offline (answered at once); 4098 the device is busy"),
        (status = 504, body = ErrorBody, description = "5041 no ack within the ack timeout (the timeout is pushed too)")))]
pub async fn control(State(hub): State<Arc<Hub>>, req: Signed<UserControl>) -> Result<Json<ControlResult>, XlinkError> {
    let Signed { app, body } = req;
    check_openid(&body.openid)?;
    if body.params.as_object().is_none_or(|m| m.is_empty()) {
        return Err(XlinkError::invalid("params must be a non-empty object"));
    }
    let push_token = hub
        .store
        .wechat_user_bind(&app.appid, &body.openid, &body.deviceid)
        .await?
        .ok_or_else(|| XlinkError::new(Fault::NotBound, "the WeChat user is not bound to this device"))?;
    let owner = hub
        .store
        .device_record(&body.deviceid)
        .await?
        .and_then(|r| r.owner)
        .ok_or_else(|| XlinkError::new(Fault::Forbidden, "the device has no owner"))?;
    let deviceid = DeviceId::new(body.deviceid.as_str());
    let params = crate::protocol::raw(body.params.to_string());
    let sequence = crate::command::next_sequence();
    let cmd = Command { kind: CommandKind::Update, deviceid: &deviceid, sequence: &sequence, params: &params };
    let sent = match command::send(&hub, &UserKey::new(owner), cmd, None).await {
        Ok(sent) => sent,
        Err(RouteError::Offline) => return Err(XlinkError::new(Fault::DeviceOffline, "the device is offline")),
        Err(RouteError::Busy) => return Err(XlinkError::new(Fault::DeviceBusy, "the device is busy")),
        Err(RouteError::Denied) => return Err(XlinkError::new(Fault::Forbidden, "the device refuses commands")),
    };
    let outcome = command::finish(&hub, sent, Instant::now() + hub.config.ack_timeout).await;
    let error = match &outcome {
        Outcome::Acked(ack) => ack.error,
        Outcome::TimedOut | Outcome::Gone => 504,
    };
    let msg = json!({ "type": "control", "deviceid": body.deviceid, "sequence": sequence, "error": error, "params": body.params });
    hub.wechat_work.push(&app.appid, &push_token, msg.to_string());
    match outcome {
        Outcome::Acked(_) => Ok(Json(ControlResult { deviceid: body.deviceid, error, params: body.params })),
        Outcome::TimedOut => Err(XlinkError::new(Fault::NoAnswer, "the device did not answer in time")),
        Outcome::Gone => Err(XlinkError::new(Fault::DeviceOffline, "the device went offline")),
    }
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new().routes(routes!(bind)).routes(routes!(unbind)).routes(routes!(control))
}
