//! `/v2/device/add`, `add-gsm`, `update-info`, `DELETE /v2/device`, `tags`: a user's devices.
//!
//! Adding claims a factory record (`switchyard admin device add`) for the caller; deleting gives
//! it up (owner) or leaves a share (sharee). Both bump the access-control version in the same
//! transaction and refresh the online device's audience on this node at once, so the new owner
//! can command it (and a former one cannot) without waiting for the next reload.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::api::{Body, DeleteParams, Empty, Envelope, ok_data};
use super::auth::Caller;
use super::error::ApiError;
use super::thing::thing_item;
use crate::hub::Hub;
use crate::ids::{DeviceId, UserKey};
use crate::store::Sort;
use crate::store::device::{DeviceError, DeviceRecord, Role};

/// Longest device name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Largest tags object, serialized.
pub const MAX_TAGS_BYTES: usize = 16 * 1024;

impl From<DeviceError> for ApiError {
    fn from(e: DeviceError) -> Self {
        match e {
            DeviceError::NotFound(what) => ApiError::new(405, format!("{what} not found")),
            DeviceError::Taken => ApiError::new(406, "the device belongs to another account"),
            DeviceError::Forbidden(why) => ApiError::new(406, why),
            DeviceError::TooLarge(what) => ApiError::bad_request(format!("{what} too large")),
            DeviceError::Store(e) => e.into(),
        }
    }
}

fn name_of(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!("name must hold 1 to {MAX_NAME_CHARS} characters")));
    }
    Ok(name)
}

fn sort_of(code: Option<i64>) -> Result<Sort, ApiError> {
    match code {
        None | Some(1) => Ok(Sort::First),
        Some(2) => Ok(Sort::Last),
        Some(_) => Err(ApiError::bad_request("sort must be 1 or 2")),
    }
}

/// The settings a new owner asked for over the defaults; each value must be the integer 0 or 1.
fn settings_of(asked: Option<&Value>) -> Result<String, ApiError> {
    let mut settings = json!({ "opsNotify": 0, "opsHistory": 1, "alarmNotify": 1 });
    match asked {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for key in ["opsNotify", "opsHistory", "alarmNotify"] {
                match m.get(key) {
                    None | Some(Value::Null) => {}
                    Some(v) if v.as_i64() == Some(0) || v.as_i64() == Some(1) => settings[key] = v.clone(),
                    Some(_) => return Err(ApiError::bad_request(format!("settings.{key} must be 0 or 1"))),
                }
            }
        }
        Some(_) => return Err(ApiError::bad_request("settings must be an object")),
    }
    Ok(settings.to_string())
}

/// Gives the online device (on this node) its current audience now.
pub(crate) async fn refresh_audience(hub: &Hub, deviceid: &str) -> Result<(), ApiError> {
    hub.acl.changed(&[DeviceId::new(deviceid)]).await;
    Ok(())
}

/// Claims a device for the caller and answers its thing item.
#[allow(clippy::too_many_arguments)]
async fn claim(
    hub: &Hub,
    user: &UserKey,
    record: &DeviceRecord,
    name: &str,
    settings: &str,
    familyid: Option<&str>,
    roomid: Option<&str>,
    sort: Sort,
) -> Result<Value, ApiError> {
    hub.store.claim_device(user, &record.deviceid, name, settings, familyid, roomid, sort).await?;
    refresh_audience(hub, &record.deviceid).await?;
    tracing::info!(user = %user, device = %record.deviceid, "device added");
    thing_item(hub, user, &record.deviceid).await?.ok_or_else(|| ApiError::new(500, "internal error"))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddDevice {
    /// 1 to 64 characters.
    pub name: String,
    /// 10 hex digits.
    pub deviceid: String,
    /// `{opsNotify, opsHistory, alarmNotify}`, each 0 or 1 (defaults 0, 1, 1).
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
    /// Code of an infrared device (accepted, not used).
    #[allow(dead_code)]
    pub ifr_code: Option<String>,
    /// Lowercase hex SHA-256 of deviceid followed by the device's factory apikey.
    pub digest: String,
    /// The device's chip id; must match the factory record when it has one.
    pub chipid: String,
    /// Default: the current family.
    pub familyid: Option<String>,
    /// Default: unassigned.
    pub roomid: Option<String>,
    /// 1 (default) an index smaller than the family's other things, 2 larger.
    pub sort: Option<i64>,
}

/// A thing item, as the add routes answer it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThingItemData {
    /// Always 1.
    pub item_type: i64,
    #[schema(value_type = Object)]
    pub item_data: Value,
    pub index: i64,
}

/// Adds a Wi-Fi device to the caller's account (adding it again to the same account re-names and
/// re-places it).
#[utoipa::path(post, path = "/v2/device/add", tag = "device", security(("bearer" = [])), request_body = AddDevice,
    responses((status = 200, body = Envelope<ThingItemData>, description = "errors: 400 bad name, settings or sort; 30010 deviceid \
        not 10 hex digits; 30011 no factory record; 30015 wrong digest; 30014 wrong chipid; 406 the device belongs to another \
        account; 405 unknown family or room")))]
pub async fn add(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<AddDevice>) -> Result<Json<Value>, ApiError> {
    let name = name_of(&req.name)?;
    let settings = settings_of(req.settings.as_ref())?;
    let sort = sort_of(req.sort)?;
    if req.deviceid.len() != 10 || !req.deviceid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::new(30010, "deviceid must be 10 hex digits"));
    }
    let record = hub.store.device_record(&req.deviceid).await?.ok_or_else(|| ApiError::new(30011, "no factory record for this device"))?;
    let expected = hex::encode(Sha256::digest(format!("{}{}", record.deviceid, record.factory_apikey).as_bytes()));
    if !req.digest.eq_ignore_ascii_case(&expected) {
        return Err(ApiError::new(30015, "wrong digest"));
    }
    if record.chipid.as_deref().is_some_and(|c| !c.is_empty() && !c.eq_ignore_ascii_case(req.chipid.trim())) {
        return Err(ApiError::new(30014, "wrong chipid"));
    }
    if record.owner.as_deref().is_some_and(|o| o != caller.user.as_str()) {
        return Err(ApiError::new(406, "the device belongs to another account"));
    }
    let item = claim(&hub, &caller.user, &record, name, &settings, req.familyid.as_deref(), req.roomid.as_deref(), sort).await?;
    Ok(super::error::ok(item))
}

#[derive(Deserialize, ToSchema)]
pub struct AddGsmDevice {
    /// The gsmId from the device's QR code URL (`…/addGsm?id=<gsmId>`).
    pub id: String,
    /// 1 to 64 characters.
    pub name: String,
    pub familyid: Option<String>,
    pub roomid: Option<String>,
    pub sort: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddedThings {
    pub thing_list: Vec<ThingItemData>,
}

/// Adds a GSM (4G) device by the id on its QR code.
#[utoipa::path(post, path = "/v2/device/add-gsm", tag = "device", security(("bearer" = [])), request_body = AddGsmDevice,
    responses((status = 200, body = Envelope<AddedThings>, description = "errors: 400 bad name or sort; 30018 no device with \
        this gsmId; 30007 the device belongs to another account; 405 unknown family or room")))]
pub async fn add_gsm(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<AddGsmDevice>) -> Result<Json<Value>, ApiError> {
    let name = name_of(&req.name)?;
    let sort = sort_of(req.sort)?;
    let id = req.id.trim();
    if id.is_empty() {
        return Err(ApiError::bad_request("id must not be empty"));
    }
    let record = hub.store.device_record_by_gsm(id).await?.ok_or_else(|| ApiError::new(30018, "no device with this gsmId"))?;
    if record.owner.as_deref().is_some_and(|o| o != caller.user.as_str()) {
        return Err(ApiError::new(30007, "the device was added by another account"));
    }
    let settings = settings_of(None)?;
    let item = match claim(&hub, &caller.user, &record, name, &settings, req.familyid.as_deref(), req.roomid.as_deref(), sort).await {
        Err(e) if e.code == 406 => return Err(ApiError::new(30007, "the device was added by another account")),
        other => other?,
    };
    Ok(super::error::ok(json!({ "thingList": [item] })))
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateInfo {
    pub deviceid: String,
    /// New name (owner only), 1 to 64 characters.
    pub name: Option<String>,
    /// A room of the family the caller keeps the device in; "" = unassigned.
    pub roomid: Option<String>,
}

/// Renames a device (its owner) and/or moves it to another room of the family the caller keeps
/// it in (owner or sharee: each user places a device for themselves).
#[utoipa::path(post, path = "/v2/device/update-info", tag = "device", security(("bearer" = [])), request_body = UpdateInfo,
    responses((status = 200, body = Envelope<Empty>, description = "errors: 400 bad name; 405 unknown device or not the caller's, \
        or a room not in the family the caller keeps it in; 406 a sharee renaming")))]
pub async fn update_info(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<UpdateInfo>) -> Result<Json<Value>, ApiError> {
    let name = req.name.as_deref().map(name_of).transpose()?;
    hub.store.update_device_info(&caller.user, &req.deviceid, name, req.roomid.as_deref()).await?;
    Ok(ok_data(Empty {}))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteDevice {
    pub deviceid: String,
}

/// Removes a device from the caller's account. The owner gives it up: its shares, everyone's
/// groups built on it and its history go, it leaves every group, and an online device is told
/// (`deleteNotify`). A sharee leaves only their share (and their groups built on it).
#[utoipa::path(delete, path = "/v2/device", tag = "device", security(("bearer" = [])), params(DeleteDevice),
    responses((status = 200, body = Envelope<Empty>, description = "errors: 400 missing deviceid; 405 unknown device or not the caller's")))]
pub async fn delete(
    State(hub): State<Arc<Hub>>,
    caller: Caller,
    DeleteParams(req): DeleteParams<DeleteDevice>,
) -> Result<Json<Value>, ApiError> {
    if !remove_from_account(&hub, &caller.user, &req.deviceid).await? {
        return Err(ApiError::new(405, "device not found"));
    }
    Ok(ok_data(Empty {}))
}

/// `user` removes a device from their account (both doors: `DELETE /v2/device` and seed 003's
/// `unsubscribe`): the owner releases it ([`crate::store::Store::release_device`]) and an online
/// device is told (`deleteNotify`); a sharee leaves their share
/// ([`crate::store::Store::leave_shared_device`]). Then the online device's audience is reloaded
/// on this node. `false` when the device is not theirs.
pub(crate) async fn remove_from_account(hub: &Hub, user: &UserKey, id: &str) -> Result<bool, ApiError> {
    match hub.store.device_role(user, id).await? {
        Some(Role::Owner) => {
            if !hub.store.release_device(user, id).await? {
                return Ok(false);
            }
            let frame = json!({
                "action": "notify",
                "cmd": "deleteNotify",
                "deviceid": id,
                "apikey": user.as_str(),
                "userAgent": "app",
                "sequence": crate::clock::now_millis().to_string(),
                "ts": 0,
            });
            let notified = hub.router.notify_device(&DeviceId::new(id), frame.to_string().into());
            tracing::info!(user = %user, device = %id, notified, "device deleted by its owner");
        }
        Some(Role::Sharee { .. }) => {
            if !hub.store.leave_shared_device(user, id).await? {
                return Ok(false);
            }
            tracing::info!(user = %user, device = %id, "shared device removed by its sharee");
        }
        None => return Ok(false),
    }
    refresh_audience(hub, id).await?;
    Ok(true)
}

#[derive(Deserialize, ToSchema)]
pub struct SetTags {
    pub deviceid: String,
    /// `replace` (default) or `merge` (top-level keys).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Any JSON object (at most 16 KiB); the server only keeps it.
    #[schema(value_type = Object)]
    pub tags: Map<String, Value>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatedThing {
    #[schema(value_type = Object)]
    pub updated_thing: Value,
}

/// Replaces or merges a device's tags (its owner only).
#[utoipa::path(post, path = "/v2/device/tags", tag = "device", security(("bearer" = [])), request_body = SetTags,
    responses((status = 200, body = Envelope<UpdatedThing>, description = "errors: 400 type not replace/merge, tags not an object \
        or too large; 405 unknown device or not the caller's; 406 a sharee")))]
pub async fn tags(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<SetTags>) -> Result<Json<Value>, ApiError> {
    let merge = match req.kind.as_deref() {
        None | Some("replace") => false,
        Some("merge") => true,
        Some(_) => return Err(ApiError::bad_request("type must be replace or merge")),
    };
    hub.store.set_device_tags(&caller.user, &req.deviceid, req.tags, merge, MAX_TAGS_BYTES).await?;
    let item = thing_item(&hub, &caller.user, &req.deviceid).await?.ok_or_else(|| ApiError::new(405, "device not found"))?;
    Ok(ok_data(UpdatedThing { updated_thing: item }))
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(add))
        .routes(utoipa_axum::routes!(add_gsm))
        .routes(utoipa_axum::routes!(update_info))
        .routes(utoipa_axum::routes!(delete))
        .routes(utoipa_axum::routes!(tags))
}
