//! Seed 003's device routes: a user registers a device of a product, lists the devices they
//! manage or share (with the list's version), reads and changes a device's extension properties,
//! and gives a device up (`unsubscribe`: a sharee leaves the share, the manager releases the
//! device, through the same path as seed 004's `DELETE /v2/device`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::{Account, ErrorBody, Fault, JsonBody, PathParams, XlinkError, iso_millis};
use crate::hub::Hub;
use crate::ids::DeviceId;
use crate::store::{DeviceDetails, SubscribedDevice, normalize_mac};

/// Longest optional text field of a registration (name, access key, MCU and firmware fields).
pub const MAX_FIELD_CHARS: usize = 64;

#[derive(Deserialize, ToSchema)]
pub struct RegisterDevice {
    /// A product that allows user registration.
    pub product_id: String,
    /// 12 hex digits; `:`, `-` or `.` separators allowed.
    pub mac: String,
    /// Default: the product's name.
    pub name: Option<String>,
    /// The device's local password.
    pub access_key: Option<String>,
    pub mcu_mod: Option<String>,
    pub mcu_version: Option<String>,
    pub firmware_mod: Option<String>,
    pub firmware_version: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RegisteredDevice {
    pub device_id: String,
    pub product_id: String,
    /// Normalised: 12 lowercase hex digits.
    pub mac: String,
    pub name: String,
    pub access_key: String,
    pub mcu_mod: String,
    pub mcu_version: String,
    pub firmware_mod: String,
    pub firmware_version: String,
    /// When the device was made by this request: the key it registers with on `/api/ws`
    /// (`register` with it as `apikey`). Shown only here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_key: Option<String>,
}

/// A field of at most [`MAX_FIELD_CHARS`] characters (trimmed); `None` stays `None`.
fn field(name: &str, value: Option<String>) -> Result<Option<String>, XlinkError> {
    match value {
        Some(v) if v.chars().count() > MAX_FIELD_CHARS => {
            Err(XlinkError::invalid(format!("{name} may hold at most {MAX_FIELD_CHARS} characters")))
        }
        Some(v) => Ok(Some(v.trim().to_owned())),
        None => Ok(None),
    }
}

/// Registers a new device of a product for the caller, who becomes its manager.
#[utoipa::path(post, path = "/v2/user/{user_id}/register_device", tag = "xlink",
    security(("access_token" = []), ("bearer" = [])),
    params(("user_id" = String, Path, description = "the caller's apikey")), request_body = RegisterDevice,
    responses(
        (status = 200, body = RegisteredDevice, description = "An unowned factory record with this product and MAC is bound \
            to the caller; otherwise a device is made with a fresh device_id and device_key"),
        (status = 400, body = ErrorBody, description = "4001 bad input (missing product_id or mac, a bad MAC, a field over 64 characters)"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 another user in the path; 4032 the product does not allow user registration"),
        (status = 404, body = ErrorBody, description = "4041 unknown product"),
        (status = 409, body = ErrorBody, description = "4091 the MAC is already registered under this product")))]
pub async fn register_device(
    State(hub): State<Arc<Hub>>,
    caller: Account,
    PathParams(user_id): PathParams<String>,
    JsonBody(req): JsonBody<RegisterDevice>,
) -> Result<Json<RegisteredDevice>, XlinkError> {
    caller.check_path(&user_id)?;
    if req.product_id.is_empty() {
        return Err(XlinkError::invalid("product_id is required"));
    }
    let mac =
        normalize_mac(&req.mac).ok_or_else(|| XlinkError::invalid("mac must be 12 hex digits (`:`, `-` or `.` separators allowed)"))?;
    let name = field("name", req.name)?;
    if name.as_deref().is_some_and(str::is_empty) {
        return Err(XlinkError::invalid("name must not be empty"));
    }
    let details = DeviceDetails {
        name,
        access_key: field("access_key", req.access_key)?,
        mcu_mod: field("mcu_mod", req.mcu_mod)?,
        mcu_version: field("mcu_version", req.mcu_version)?,
        firmware_mod: field("firmware_mod", req.firmware_mod)?,
        firmware_version: field("firmware_version", req.firmware_version)?,
    };
    let user = &caller.0.user;
    let registered = hub.store.register_user_device(user, &req.product_id, &mac, &details).await?;
    tracing::info!(user = %user, device = %registered.deviceid, product = %req.product_id, "device registered by its user");
    super::super::device::refresh_audience(&hub, &registered.deviceid).await?;
    let d =
        hub.store.subscribed_device(user, &registered.deviceid).await?.ok_or_else(|| XlinkError::new(Fault::Internal, "internal error"))?;
    Ok(Json(RegisteredDevice {
        device_id: d.deviceid,
        product_id: d.product_id,
        mac: d.mac,
        name: d.name,
        access_key: d.access_key,
        mcu_mod: d.mcu_mod,
        mcu_version: d.mcu_version,
        firmware_mod: d.firmware_mod,
        firmware_version: d.firmware_version,
        device_key: registered.device_key,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The version the client holds (digits; default 0). When it is the current one, the answer
    /// is `{"version"}` alone.
    pub version: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeviceList {
    /// The list's version, digits. It rises on every change to the list or to a listed device's
    /// stored fields (not on online/offline or `last_login`).
    pub version: String,
    /// Absent when the client's version is the current one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<Vec<ListedDevice>>,
}

#[derive(Serialize, ToSchema)]
pub struct ListedDevice {
    pub id: String,
    pub mac: String,
    /// Set by the device's first registration on the socket.
    pub is_active: bool,
    /// `2015-10-09T08:15:40.843Z`; "" while inactive.
    pub active_date: String,
    /// Connected to the hub now.
    pub is_online: bool,
    /// Its latest registration on the socket; "" before the first.
    pub last_login: String,
    /// Not used by this hub: "".
    pub active_code: String,
    /// Not used by this hub: "".
    pub authorize_code: String,
    pub mcu_mod: String,
    pub mcu_version: String,
    pub firmware_mod: String,
    /// The `fwVersion` the device last reported, else the registered one.
    pub firmware_version: String,
    /// "" for a device without a product.
    pub product_id: String,
    pub access_key: String,
    /// The device's name (seed 004's, also changed by `update-info`).
    pub name: String,
}

fn listed(hub: &Hub, d: SubscribedDevice) -> ListedDevice {
    // Online: the live hub says since when; offline: the login stored when its session ended.
    let online_since = hub.router.device_view(&DeviceId::new(d.deviceid.as_str())).map(|v| v.since);
    ListedDevice {
        is_online: online_since.is_some(),
        is_active: d.active_at.is_some(),
        active_date: d.active_at.map(iso_millis).unwrap_or_default(),
        last_login: online_since.or(d.last_login).map(iso_millis).unwrap_or_default(),
        active_code: String::new(),
        authorize_code: String::new(),
        id: d.deviceid,
        mac: d.mac,
        mcu_mod: d.mcu_mod,
        mcu_version: d.mcu_version,
        firmware_mod: d.firmware_mod,
        firmware_version: d.firmware_version,
        product_id: d.product_id,
        access_key: d.access_key,
        name: d.name,
    }
}

/// Every device the caller manages or has accepted a share of, with the list's version.
#[utoipa::path(get, path = "/v2/user/{user_id}/subscribe/devices", tag = "xlink",
    security(("access_token" = []), ("bearer" = [])),
    params(("user_id" = String, Path, description = "the caller's apikey"), ListQuery),
    responses(
        (status = 200, body = DeviceList),
        (status = 400, body = ErrorBody, description = "4001 version is not digits"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 another user in the path")))]
pub async fn subscribed_devices(
    State(hub): State<Arc<Hub>>,
    caller: Account,
    PathParams(user_id): PathParams<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<DeviceList>, XlinkError> {
    caller.check_path(&user_id)?;
    let q: ListQuery =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).map_err(|e| XlinkError::invalid(format!("invalid query: {e}")))?;
    let known = match q.version.as_deref() {
        None | Some("") => None,
        Some(v) if v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()) => v.parse::<i64>().ok(),
        Some(_) => return Err(XlinkError::invalid("version must be a number")),
    };
    let subs = hub.store.subscriptions(&caller.0.user).await?;
    let list = (known != Some(subs.version)).then(|| subs.devices.into_iter().map(|d| listed(&hub, d)).collect());
    Ok(Json(DeviceList { version: subs.version.to_string(), list }))
}

/// A device's extension properties: its owner and sharees may read them.
#[utoipa::path(get, path = "/v2/product/{product_id}/device/{device_id}/property", tag = "xlink",
    security(("access_token" = []), ("bearer" = [])),
    params(("product_id" = String, Path), ("device_id" = String, Path)),
    responses(
        (status = 200, body = Object, description = "The property map: up to 10 keys, each a string, number or boolean"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 neither the manager nor a sharee"),
        (status = 404, body = ErrorBody, description = "4042 unknown device, or not a device of this product")))]
pub async fn get_properties(
    State(hub): State<Arc<Hub>>,
    caller: Account,
    PathParams((product_id, device_id)): PathParams<(String, String)>,
) -> Result<Json<Map<String, Value>>, XlinkError> {
    Ok(Json(hub.store.device_properties(&caller.0.user, &product_id, &device_id).await?))
}

/// Merges keys into a device's extension properties (its manager only); `null` removes a key.
#[utoipa::path(post, path = "/v2/product/{product_id}/device/{device_id}/property", tag = "xlink",
    security(("access_token" = []), ("bearer" = [])),
    params(("product_id" = String, Path), ("device_id" = String, Path)),
    request_body(content = Object, description = "Keys to set (a string, number or boolean of at most 1 KiB as JSON) or \
        remove (null). A key may not be empty, contain `.` or NUL, or start with `$`."),
    responses(
        (status = 200, body = Object, description = "The whole property map after the change"),
        (status = 400, body = ErrorBody, description = "4001 not a JSON object; 4002 a bad key or value (named); 4003 more \
            than 10 keys after the merge. Nothing is changed."),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 not the manager"),
        (status = 404, body = ErrorBody, description = "4042 unknown device, or not a device of this product")))]
pub async fn set_properties(
    State(hub): State<Arc<Hub>>,
    caller: Account,
    PathParams((product_id, device_id)): PathParams<(String, String)>,
    JsonBody(changes): JsonBody<Map<String, Value>>,
) -> Result<Json<Map<String, Value>>, XlinkError> {
    Ok(Json(hub.store.merge_device_properties(&caller.0.user, &product_id, &device_id, &changes).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct Unsubscribe {
    pub device_id: String,
}

/// The caller gives a device up: a sharee leaves the share; the manager releases the device,
/// which ends every share and pending invite of it (as `DELETE /v2/device` does).
#[utoipa::path(post, path = "/v2/user/{user_id}/unsubscribe", tag = "xlink",
    security(("access_token" = []), ("bearer" = [])),
    params(("user_id" = String, Path, description = "the caller's apikey")), request_body = Unsubscribe,
    responses(
        (status = 200, description = "Empty body"),
        (status = 400, body = ErrorBody, description = "4001 missing device_id"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 another user in the path, or a device the caller neither manages nor shares"),
        (status = 404, body = ErrorBody, description = "4042 unknown device")))]
pub async fn unsubscribe(
    State(hub): State<Arc<Hub>>,
    caller: Account,
    PathParams(user_id): PathParams<String>,
    JsonBody(req): JsonBody<Unsubscribe>,
) -> Result<StatusCode, XlinkError> {
    caller.check_path(&user_id)?;
    if req.device_id.is_empty() {
        return Err(XlinkError::invalid("device_id is required"));
    }
    if !super::super::device::remove_from_account(&hub, &caller.0.user, &req.device_id).await? {
        return Err(match hub.store.device_record(&req.device_id).await? {
            Some(_) => XlinkError::new(Fault::Forbidden, "the caller neither manages nor shares this device"),
            None => XlinkError::new(Fault::UnknownDevice, format!("device {} not found", req.device_id)),
        });
    }
    Ok(StatusCode::OK)
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(register_device))
        .routes(utoipa_axum::routes!(subscribed_devices))
        .routes(utoipa_axum::routes!(get_properties, set_properties))
        .routes(utoipa_axum::routes!(unsubscribe))
}
