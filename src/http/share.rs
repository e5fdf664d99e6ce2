//! `/v2/device/share…`: sharing devices with other users. Only a device's owner shares it,
//! changes a sharee's permit or takes it back; each change reaches running hubs through the
//! access-control version (see [`crate::acl::Acl`]), so the sharee's sessions start or
//! stop hearing the device within one poll.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::api::{Body, DeleteParams, Envelope, ok_data};
use super::auth::Caller;
use super::error::ApiError;
use super::group::UpdatedThings;
use super::thing::thing_item;
use crate::hub::Hub;
use crate::ids::{DeviceId, UserKey};
use crate::store::{MAX_PERMIT, ShareError, Shared};

/// Most devices one share request may list.
pub const MAX_SHARE_DEVICES: usize = 50;
/// Longest share comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 200;

impl From<ShareError> for ApiError {
    fn from(e: ShareError) -> Self {
        match e {
            ShareError::NotFound(what) => ApiError::new(405, format!("{what} not found")),
            ShareError::NotOwner(id) => ApiError::new(406, format!("only the owner of device {id} may change its sharing")),
            ShareError::WithOwner => ApiError::bad_request("a device cannot be shared with its owner"),
            ShareError::Store(e) => e.into(),
        }
    }
}

fn check_permit(permit: i64) -> Result<(), ApiError> {
    if !(0..=MAX_PERMIT).contains(&permit) {
        return Err(ApiError::bad_request(format!("permit must be 0 to {MAX_PERMIT}")));
    }
    Ok(())
}

fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::bad_request(format!("{what} is required")));
    }
    Ok(())
}

/// Who to share with: the phone number is looked up first.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareUser {
    /// Required with `phoneNumber`.
    #[serde(default)]
    pub country_code: Option<String>,
    /// With the country code in front, e.g. "+8613800000000".
    #[serde(default)]
    pub phone_number: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShareDevices {
    /// 1 to 50 devices the caller owns.
    pub deviceid_list: Vec<String>,
    pub user: ShareUser,
    /// Timer rights, a sum of 1 add, 2 modify, 4 delete, 8 enable (0 to 15).
    pub permit: i64,
    /// Up to 200 characters.
    #[serde(default)]
    pub comment: Option<String>,
    /// Only 1 (silent sharing, the default) is supported.
    #[serde(default)]
    pub share_type: Option<i64>,
}

/// Shares devices with another user, at once (silent sharing).
#[utoipa::path(post, path = "/v2/device/share", tag = "share", security(("bearer" = [])), request_body = ShareDevices,
    responses((status = 200, body = Envelope<UpdatedThings>, description = "updatedThingList: the devices as the owner \
        sees them, their shareTo naming the sharee's apikey. Sharing a device the user has already: permit and comment \
        are updated, no new notice. Errors: 400 bad parameters (also sharing with yourself, shareType other than 1), \
        405 unknown device, 406 the caller does not own a listed device, 30008 the user to share with does not exist")))]
pub async fn share_devices(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<ShareDevices>) -> Result<Json<Value>, ApiError> {
    if req.deviceid_list.is_empty() || req.deviceid_list.len() > MAX_SHARE_DEVICES {
        return Err(ApiError::bad_request(format!("deviceidList must hold 1 to {MAX_SHARE_DEVICES} ids")));
    }
    if req.deviceid_list.iter().any(String::is_empty) {
        return Err(ApiError::bad_request("deviceidList holds an empty id"));
    }
    check_permit(req.permit)?;
    if req.share_type.is_some_and(|t| t != 1) {
        return Err(ApiError::bad_request("only shareType 1 (silent sharing) is supported"));
    }
    let comment = req.comment.unwrap_or_default();
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(ApiError::bad_request(format!("comment may hold at most {MAX_COMMENT_CHARS} characters")));
    }
    let phone = req.user.phone_number.as_deref().filter(|p| !p.is_empty());
    let email = req.user.email.as_deref().filter(|e| !e.is_empty());
    let sharee = match (phone, email) {
        (Some(phone), _) => {
            if req.user.country_code.as_deref().is_none_or(str::is_empty) {
                return Err(ApiError::bad_request("countryCode is required with phoneNumber"));
            }
            hub.store.user_by_phone(phone).await?
        }
        (None, Some(email)) => hub.store.user_by_email(email).await?,
        (None, None) => return Err(ApiError::bad_request("user needs a phoneNumber or an email")),
    };
    let Some(sharee) = sharee else { return Err(ApiError::new(30008, "the user to share with does not exist")) };
    let mut ids: Vec<String> = Vec::with_capacity(req.deviceid_list.len());
    for id in req.deviceid_list {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let outcome = hub.store.share_devices(&caller.user, &ids, &sharee.apikey, req.permit, &comment).await?;
    let changed: Vec<DeviceId> = ids.iter().map(|id| DeviceId::new(id.as_str())).collect();
    hub.acl.changed(&changed).await;
    let new = outcome.iter().filter(|o| **o == Shared::New).count();
    tracing::info!(user = %caller.user, sharee = %sharee.apikey, devices = ids.len(), new, "devices shared");
    let mut items = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(item) = thing_item(&hub, &caller.user, id).await? {
            items.push(item);
        }
    }
    Ok(ok_data(UpdatedThings { updated_thing_list: items }))
}

/// One device's thing item after a change.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatedThing {
    /// The device's thing item as the owner sees it (see `GET /v2/device/thing`).
    #[schema(value_type = Object)]
    pub updated_thing: Value,
}

async fn updated_thing(hub: &Hub, user: &UserKey, deviceid: &str) -> Result<Json<Value>, ApiError> {
    let item = thing_item(hub, user, deviceid).await?.unwrap_or_else(|| Value::Object(Default::default()));
    Ok(ok_data(UpdatedThing { updated_thing: item }))
}

#[derive(Deserialize, ToSchema)]
pub struct SharePermit {
    pub deviceid: String,
    /// The sharee's apikey (from the device's `shareTo`).
    pub apikey: String,
    /// 0 to 15, as for sharing.
    pub permit: i64,
}

/// Changes a sharee's timer rights.
#[utoipa::path(post, path = "/v2/device/share/permit", tag = "share", security(("bearer" = [])), request_body = SharePermit,
    responses((status = 200, body = Envelope<UpdatedThing>, description = "errors: 400 bad parameters, \
        405 unknown device or no such share, 406 the caller does not own the device")))]
pub async fn share_permit(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<SharePermit>) -> Result<Json<Value>, ApiError> {
    check_id("deviceid", &req.deviceid)?;
    check_id("apikey", &req.apikey)?;
    check_permit(req.permit)?;
    hub.store.set_share_permit(&caller.user, &req.deviceid, &UserKey::new(req.apikey.as_str()), req.permit).await?;
    hub.acl.changed(&[DeviceId::new(req.deviceid.as_str())]).await;
    updated_thing(&hub, &caller.user, &req.deviceid).await
}

#[derive(Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Unshare {
    pub deviceid: String,
    /// The sharee's apikey.
    pub apikey: String,
}

/// The owner takes a device back from a sharee; the sharee's groups built on it go too.
#[utoipa::path(delete, path = "/v2/device/share", tag = "share", security(("bearer" = [])), params(Unshare),
    responses((status = 200, body = Envelope<UpdatedThing>, description = "parameters in the query string or a JSON body; \
        errors: 400 bad parameters, 405 unknown device or no such share, 406 the caller does not own the device")))]
pub async fn unshare(
    State(hub): State<Arc<Hub>>,
    caller: Caller,
    DeleteParams(req): DeleteParams<Unshare>,
) -> Result<Json<Value>, ApiError> {
    check_id("deviceid", &req.deviceid)?;
    check_id("apikey", &req.apikey)?;
    hub.store.unshare_device(&caller.user, &req.deviceid, &UserKey::new(req.apikey.as_str())).await?;
    hub.acl.changed(&[DeviceId::new(req.deviceid.as_str())]).await;
    tracing::info!(user = %caller.user, sharee = %req.apikey, device = %req.deviceid, "share removed");
    updated_thing(&hub, &caller.user, &req.deviceid).await
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new().routes(utoipa_axum::routes!(share_devices, unshare)).routes(utoipa_axum::routes!(share_permit))
}
