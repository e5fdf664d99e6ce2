//! `POST /v2/device/ota/query`: firmware updates from the operator's catalogue
//! (`switchyard admin firmware add`). A device is offered the newest catalogued version of the
//! model it reports when that is newer than the version it runs (dotted versions compared
//! numerically). The app then sends the socket `upgrade` action, which the hub forwards.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::api::{Body, Envelope, ok_data};
use super::auth::Caller;
use super::error::ApiError;
use crate::hub::Hub;
use crate::store::{FirmwareBin, compare_versions};

/// Most devices one query may name (the seed: more than 0, at most 30).
pub const MAX_DEVICES: usize = 30;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtaQuery {
    /// 1 to 30 devices.
    pub device_info_list: Vec<DeviceInfo>,
}

#[derive(Deserialize, ToSchema)]
pub struct DeviceInfo {
    pub deviceid: String,
    /// The device's module model (as the device reports it).
    pub model: String,
    /// The firmware version it runs.
    pub version: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtaInfo {
    pub deviceid: String,
    /// The newest version in the catalogue.
    pub version: String,
    pub bin_list: Vec<FirmwareBin>,
    /// Reserved; always "".
    #[serde(rename = "type")]
    pub kind: String,
    /// Reserved; always "".
    pub force_time: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtaInfoList {
    /// Only the devices that have a newer version; devices the caller may not see are left out.
    pub ota_info_list: Vec<OtaInfo>,
}

/// Which of the named devices (owned by or shared with the caller) have newer firmware.
#[utoipa::path(post, path = "/v2/device/ota/query", tag = "ota", security(("bearer" = [])), request_body = OtaQuery,
    responses((status = 200, body = Envelope<OtaInfoList>,
        description = "Devices without a newer version, with a model the catalogue does not know, or that are not the caller's are \
            left out of the list. Errors: 400 deviceInfoList empty, longer than 30, or an item missing a field or of the wrong type")))]
pub async fn query_ota(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<OtaQuery>) -> Result<Json<Value>, ApiError> {
    let list = req.device_info_list;
    if list.is_empty() || list.len() > MAX_DEVICES {
        return Err(ApiError::bad_request(format!("deviceInfoList must hold 1 to {MAX_DEVICES} devices")));
    }
    let mut visible = Vec::new();
    for info in list {
        if hub.store.device_role(&caller.user, &info.deviceid).await?.is_some() {
            visible.push(info);
        }
    }
    let models: Vec<String> = visible.iter().map(|d| d.model.clone()).collect();
    let latest = hub.store.latest_firmware(&models).await?;
    let ota_info_list = visible
        .into_iter()
        .filter_map(|d| {
            let fw = latest.iter().find(|f| f.model == d.model)?;
            (compare_versions(&fw.version, &d.version) == std::cmp::Ordering::Greater).then(|| OtaInfo {
                deviceid: d.deviceid,
                version: fw.version.clone(),
                bin_list: fw.bins.clone(),
                kind: String::new(),
                force_time: String::new(),
            })
        })
        .collect();
    Ok(ok_data(OtaInfoList { ota_info_list }))
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new().routes(utoipa_axum::routes!(query_ota))
}
