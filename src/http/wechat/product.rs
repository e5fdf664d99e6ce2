//! Seed 000: a product's WeChat hardware binding and its devices' WeChat authorisation, for the
//! product's owner.
//!
//! `auth` answers at once and runs a background job that authorises, one device at a time, every
//! device of the product WeChat has not authorised yet, and stops at the first failure; one job
//! runs per product, its progress kept in memory ([`crate::wechat::Work`]). `device_auth`
//! authorises one device while the caller waits, at most [`DEVICE_AUTH_DEADLINE`]. Each device's
//! state (`processing`, `passed`, `failed` with WeChat's errcode and errmsg) is stored with it.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::failure;
use crate::http::xlink::{Account, ErrorBody, Fault, JsonBody, PathParams, XlinkError};
use crate::hub::Hub;
use crate::store::{AuthState, Product, WeChatBind};
use crate::wechat::{AppCredentials, WeChatError};

/// The longest `device_auth` waits for WeChat (the seed's 5 s).
pub const DEVICE_AUTH_DEADLINE: Duration = Duration::from_secs(5);

/// The fields of `wechat_iot`, every one required.
pub const IOT_FIELDS: [&str; 10] = [
    "product_id",
    "connect_protocol",
    "auth_key",
    "close_strategy",
    "conn_strategy",
    "crypt_method",
    "auth_ver",
    "manu_mac_pos",
    "ser_mac_pos",
    "ble_simple_protocol",
];

/// The WeChat hardware information of a product (see WeChat's documentation). Each value is a
/// string or a number when posted, and answered as a string.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct WeChatIot {
    /// The WeChat product id of the model QR code (digits).
    pub product_id: String,
    /// 3 Bluetooth or 4 Wi-Fi.
    pub connect_protocol: String,
    pub auth_key: String,
    pub close_strategy: String,
    pub conn_strategy: String,
    pub crypt_method: String,
    pub auth_ver: String,
    pub manu_mac_pos: String,
    pub ser_mac_pos: String,
    pub ble_simple_protocol: String,
}

#[derive(Deserialize, Serialize, ToSchema)]
pub struct Binding {
    /// A WeChat application added with `switchyard admin wechat-app add`.
    pub app_id: String,
    #[schema(value_type = WeChatIot)]
    pub wechat_iot: Map<String, Value>,
}

/// Checks `wechat_iot`: every field present, a string or a number, `product_id` digits,
/// `connect_protocol` 3 or 4. Answers it with string values and only the seed's fields.
fn check_iot(iot: &Map<String, Value>) -> Result<Map<String, Value>, XlinkError> {
    let mut out = Map::new();
    for key in IOT_FIELDS {
        let text = match iot.get(key) {
            Some(Value::String(s)) if s.len() <= 256 => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(XlinkError::invalid(format!("wechat_iot.{key} must be a string or a number"))),
            None => return Err(XlinkError::invalid(format!("wechat_iot.{key} is required"))),
        };
        out.insert(key.to_owned(), Value::String(text));
    }
    if wechat_product(&out).is_none() {
        return Err(XlinkError::invalid("wechat_iot.product_id must be WeChat's numeric product id"));
    }
    if !matches!(out["connect_protocol"].as_str(), Some("3" | "4")) {
        return Err(XlinkError::invalid("wechat_iot.connect_protocol must be 3 (Bluetooth) or 4 (Wi-Fi)"));
    }
    Ok(out)
}

/// WeChat's product id in a stored `wechat_iot`.
pub fn wechat_product(iot: &Map<String, Value>) -> Option<u64> {
    iot.get("product_id")?.as_str()?.parse().ok()
}

/// The product, when the caller owns it: unknown → 404, someone else's → 403.
async fn owned(hub: &Hub, caller: &Account, product_id: &str) -> Result<Product, XlinkError> {
    let product = hub.store.product(product_id).await?.ok_or_else(|| XlinkError::new(Fault::UnknownProduct, "unknown product"))?;
    if product.owner.as_ref() != Some(&caller.0.user) {
        return Err(XlinkError::new(Fault::Forbidden, "the product belongs to another account"));
    }
    Ok(product)
}

/// The product's binding, its application's credentials and WeChat product id; none → 404.
async fn bound(hub: &Hub, product_id: &str) -> Result<(WeChatBind, AppCredentials, u64), XlinkError> {
    let none = || XlinkError::new(Fault::NotBound, "the product has no WeChat binding");
    let bind = hub.store.wechat_bind(product_id).await?.ok_or_else(none)?;
    let app = hub.store.wechat_app(&bind.app_id).await?.ok_or_else(none)?;
    let pid = bind.wechat_iot.as_object().and_then(wechat_product).ok_or_else(none)?;
    Ok((bind, app, pid))
}

/// Binds the product to its WeChat hardware information (replacing an earlier binding).
#[utoipa::path(post, path = "/v2/wechat/{product_id}/bind", tag = "wechat", security(("access_token" = []), ("bearer" = [])),
    params(("product_id" = String, Path)), request_body = Binding,
    responses(
        (status = 200, description = "Bound; empty body"),
        (status = 400, body = ErrorBody, description = "4001 a missing or bad field (connect_protocol other than 3 or 4); 4005 unknown app_id"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 not the product's owner"),
        (status = 404, body = ErrorBody, description = "4041 unknown product")))]
pub async fn bind(
    State(hub): State<Arc<Hub>>,
    caller: Account,
    PathParams(product_id): PathParams<String>,
    JsonBody(req): JsonBody<Binding>,
) -> Result<(), XlinkError> {
    owned(&hub, &caller, &product_id).await?;
    let iot = check_iot(&req.wechat_iot)?;
    if hub.store.wechat_app(&req.app_id).await?.is_none() {
        return Err(XlinkError::new(Fault::UnknownWeChatApp, "app_id names no WeChat application on the platform"));
    }
    hub.store.set_wechat_bind(&product_id, &req.app_id, &Value::Object(iot)).await?;
    tracing::info!(product = %product_id, app = %req.app_id, "product bound to WeChat");
    Ok(())
}

/// The product's WeChat binding.
#[utoipa::path(get, path = "/v2/wechat/{product_id}/bind", tag = "wechat", security(("access_token" = []), ("bearer" = [])),
    params(("product_id" = String, Path)),
    responses(
        (status = 200, body = Binding),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 not the product's owner"),
        (status = 404, body = ErrorBody, description = "4041 unknown product; 4045 no binding")))]
pub async fn get_bind(
    State(hub): State<Arc<Hub>>,
    caller: Account,
    PathParams(product_id): PathParams<String>,
) -> Result<Json<Binding>, XlinkError> {
    owned(&hub, &caller, &product_id).await?;
    let bind =
        hub.store.wechat_bind(&product_id).await?.ok_or_else(|| XlinkError::new(Fault::NotBound, "the product has no WeChat binding"))?;
    Ok(Json(Binding { app_id: bind.app_id, wechat_iot: bind.wechat_iot.as_object().cloned().unwrap_or_default() }))
}

/// Removes the product's WeChat binding.
#[utoipa::path(delete, path = "/v2/wechat/{product_id}/bind", tag = "wechat", security(("access_token" = []), ("bearer" = [])),
    params(("product_id" = String, Path)),
    responses(
        (status = 200, description = "Removed; empty body"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 not the product's owner"),
        (status = 404, body = ErrorBody, description = "4041 unknown product; 4045 no binding")))]
pub async fn delete_bind(
    State(hub): State<Arc<Hub>>,
    caller: Account,
    PathParams(product_id): PathParams<String>,
) -> Result<(), XlinkError> {
    owned(&hub, &caller, &product_id).await?;
    if !hub.store.delete_wechat_bind(&product_id).await? {
        return Err(XlinkError::new(Fault::NotBound, "the product has no WeChat binding"));
    }
    tracing::info!(product = %product_id, "product's WeChat binding removed");
    Ok(())
}

/// Starts authorising with WeChat every device of the product it has not authorised yet;
/// answers at once.
#[utoipa::path(post, path = "/v2/wechat/{product_id}/auth", tag = "wechat", security(("access_token" = []), ("bearer" = [])),
    params(("product_id" = String, Path)),
    responses(
        (status = 200, description = "The job started; empty body. It authorises one device at a time and stops at the first \
            failure; follow it with `auth_state`"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 not the product's owner"),
        (status = 404, body = ErrorBody, description = "4041 unknown product; 4045 no binding"),
        (status = 409, body = ErrorBody, description = "4096 a job already runs for the product")))]
pub async fn auth(State(hub): State<Arc<Hub>>, caller: Account, PathParams(product_id): PathParams<String>) -> Result<(), XlinkError> {
    owned(&hub, &caller, &product_id).await?;
    let (_, app, wx_product) = bound(&hub, &product_id).await?;
    let guard = hub
        .wechat_work
        .start_job(&product_id)
        .ok_or_else(|| XlinkError::new(Fault::AuthRunning, "a WeChat authorisation job already runs for this product"))?;
    let pending = hub.store.wechat_auth_pending(&product_id).await?;
    hub.store.set_wechat_auth(&pending, Some(&AuthState::Processing)).await?;
    hub.wechat_work.update(&product_id, |p| p.total = pending.len());
    tracing::info!(product = %product_id, devices = pending.len(), "WeChat authorisation job started");
    let task = hub.clone();
    hub.tasks.spawn(async move {
        let _guard = guard;
        run_job(&task, &product_id, &app, wx_product, pending).await;
    });
    Ok(())
}

/// Authorises `pending` one by one; at the first failure records it and gives the devices not
/// tried back their "never tried" state. Shutdown stops it the same way.
async fn run_job(hub: &Hub, product_id: &str, app: &AppCredentials, wx_product: u64, pending: Vec<String>) {
    for (i, id) in pending.iter().enumerate() {
        let result = tokio::select! {
            r = hub.wechat.add_devices(app, wx_product, std::slice::from_ref(id)) => Some(r),
            _ = hub.shutdown.cancelled() => None,
        };
        let state = match &result {
            Some(Ok(())) => AuthState::Passed,
            Some(Err(e)) => {
                let (errcode, errmsg) = failure(e);
                AuthState::Failed { errcode, errmsg }
            }
            None => {
                let _ = hub.store.set_wechat_auth(&pending[i..], None).await;
                return;
            }
        };
        let failed = matches!(state, AuthState::Failed { .. });
        let saved = hub.store.set_wechat_auth(std::slice::from_ref(id), Some(&state)).await;
        if let AuthState::Failed { errcode, errmsg } = &state {
            tracing::info!(product = %product_id, device = %id, errcode, "WeChat authorisation job stopped at a failure");
            let error = Some((*errcode, errmsg.clone()));
            hub.wechat_work.update(product_id, |p| p.error = error);
        } else {
            hub.wechat_work.update(product_id, |p| p.done += 1);
        }
        if failed || saved.is_err() {
            if let Err(e) = &saved {
                tracing::error!(error = %e, "recording a WeChat authorisation failed; the job stops");
                hub.wechat_work.update(product_id, |p| p.error = Some((-1, "internal error".to_owned())));
            }
            if let Err(e) = hub.store.set_wechat_auth(&pending[i + 1..], None).await {
                tracing::error!(error = %e, "resetting devices a stopped job did not try failed");
            }
            return;
        }
    }
    tracing::info!(product = %product_id, devices = pending.len(), "WeChat authorisation job done");
}

#[derive(Serialize, ToSchema)]
pub struct BaseInfo {
    /// The WeChat product id of the binding.
    pub device_type: String,
    pub device_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceAuthItem {
    pub base_info: BaseInfo,
    /// WeChat's errcode (0 when authorised).
    pub errcode: i64,
    pub errmsg: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceAuthAnswer {
    pub resp: Vec<DeviceAuthItem>,
}

/// Authorises one device of the product with WeChat and answers WeChat's result.
#[utoipa::path(post, path = "/v2/wechat/{product_id}/device_auth/{device_id}", tag = "wechat",
    security(("access_token" = []), ("bearer" = [])),
    params(("product_id" = String, Path), ("device_id" = String, Path)),
    responses(
        (status = 200, body = DeviceAuthAnswer, description = "WeChat's answer, its errcode (0, 40101, …) inside `resp`; the \
            device is recorded `passed` or `failed`"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 not the product's owner"),
        (status = 404, body = ErrorBody, description = "4041 unknown product; 4042 no such device in the product; 4045 no binding"),
        (status = 502, body = ErrorBody, description = "5021 WeChat unreachable or answering an HTTP error (the device is recorded `failed`)"),
        (status = 504, body = ErrorBody, description = "5041 WeChat did not answer within 5 s (the device is recorded `failed`)")))]
pub async fn device_auth(
    State(hub): State<Arc<Hub>>,
    caller: Account,
    PathParams((product_id, device_id)): PathParams<(String, String)>,
) -> Result<Json<DeviceAuthAnswer>, XlinkError> {
    owned(&hub, &caller, &product_id).await?;
    let (bind, app, wx_product) = bound(&hub, &product_id).await?;
    match hub.store.wechat_auth(&device_id).await? {
        Some((Some(p), _)) if p == product_id => {}
        _ => return Err(XlinkError::new(Fault::UnknownDevice, "no such device in this product")),
    }
    let ids = [device_id.clone()];
    hub.store.set_wechat_auth(&ids, Some(&AuthState::Processing)).await?;
    let result = tokio::time::timeout(DEVICE_AUTH_DEADLINE, hub.wechat.add_devices(&app, wx_product, &ids))
        .await
        .unwrap_or(Err(WeChatError::Timeout(DEVICE_AUTH_DEADLINE)));
    let (state, refusal) = match &result {
        Ok(()) => (AuthState::Passed, None),
        Err(e) => {
            let (errcode, errmsg) = failure(e);
            let refusal = match e {
                _ if e.errcode().is_some() => None,
                WeChatError::Timeout(_) => Some(XlinkError::new(Fault::NoAnswer, "WeChat did not answer within 5 s")),
                _ => Some(XlinkError::new(Fault::WeChatUnavailable, "WeChat could not be reached")),
            };
            (AuthState::Failed { errcode, errmsg }, refusal)
        }
    };
    hub.store.set_wechat_auth(&ids, Some(&state)).await?;
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    let (errcode, errmsg) = match state {
        AuthState::Failed { errcode, errmsg } => (errcode, errmsg),
        _ => (0, "ok".to_owned()),
    };
    let device_type = bind.wechat_iot["product_id"].as_str().unwrap_or_default().to_owned();
    Ok(Json(DeviceAuthAnswer { resp: vec![DeviceAuthItem { base_info: BaseInfo { device_type, device_id }, errcode, errmsg }] }))
}

#[derive(Serialize, ToSchema)]
pub struct FailedCount {
    pub count: i64,
    /// Of the latest failure (0 when none).
    pub errcode: i64,
    /// Of the latest failure ("ok" when none).
    pub errmsg: String,
}

/// The latest authorisation job since the node started (in memory only).
#[derive(Serialize, ToSchema)]
pub struct JobProgress {
    pub running: bool,
    pub total: usize,
    pub done: usize,
}

#[derive(Serialize, ToSchema)]
pub struct AuthStateAnswer {
    pub processing: i64,
    pub passed: i64,
    pub failed: FailedCount,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobProgress>,
}

/// How the product's devices stand with WeChat.
#[utoipa::path(get, path = "/v2/wechat/{product_id}/auth_state", tag = "wechat", security(("access_token" = []), ("bearer" = [])),
    params(("product_id" = String, Path)),
    responses(
        (status = 200, body = AuthStateAnswer),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 not the product's owner"),
        (status = 404, body = ErrorBody, description = "4041 unknown product; 4045 no binding")))]
pub async fn auth_state(
    State(hub): State<Arc<Hub>>,
    caller: Account,
    PathParams(product_id): PathParams<String>,
) -> Result<Json<AuthStateAnswer>, XlinkError> {
    owned(&hub, &caller, &product_id).await?;
    bound(&hub, &product_id).await?;
    let counts = hub.store.wechat_auth_counts(&product_id).await?;
    let (errcode, errmsg) = counts.last_failure.unwrap_or((0, "ok".to_owned()));
    let job = hub.wechat_work.progress(&product_id).map(|p| JobProgress { running: p.running, total: p.total, done: p.done });
    Ok(Json(AuthStateAnswer {
        processing: counts.processing,
        passed: counts.passed,
        failed: FailedCount { count: counts.failed, errcode, errmsg },
        job,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct DeviceAuthState {
    /// `passed`, `processing`, `failed`, or `none` when never tried.
    pub state: String,
    /// WeChat's errcode when failed (-1: WeChat did not answer), else 0.
    pub err_code: i64,
    pub msg: String,
}

/// One device's WeChat authorisation state.
#[utoipa::path(get, path = "/v2/wechat/{product_id}/device_auth_state/{device_id}", tag = "wechat",
    security(("access_token" = []), ("bearer" = [])),
    params(("product_id" = String, Path), ("device_id" = String, Path)),
    responses(
        (status = 200, body = DeviceAuthState),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 not the product's owner"),
        (status = 404, body = ErrorBody, description = "4041 unknown product; 4042 no such device in the product; 4045 no binding")))]
pub async fn device_auth_state(
    State(hub): State<Arc<Hub>>,
    caller: Account,
    PathParams((product_id, device_id)): PathParams<(String, String)>,
) -> Result<Json<DeviceAuthState>, XlinkError> {
    owned(&hub, &caller, &product_id).await?;
    bound(&hub, &product_id).await?;
    let state = match hub.store.wechat_auth(&device_id).await? {
        Some((Some(p), state)) if p == product_id => state,
        _ => return Err(XlinkError::new(Fault::UnknownDevice, "no such device in this product")),
    };
    let (state, err_code, msg) = match state {
        None => ("none", 0, String::new()),
        Some(AuthState::Failed { errcode, errmsg }) => ("failed", errcode, errmsg),
        Some(s) => (s.name(), 0, "ok".to_owned()),
    };
    Ok(Json(DeviceAuthState { state: state.to_owned(), err_code, msg }))
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
        .routes(routes!(bind, get_bind, delete_bind))
        .routes(routes!(auth))
        .routes(routes!(device_auth))
        .routes(routes!(auth_state))
        .routes(routes!(device_auth_state))
}
