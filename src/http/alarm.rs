//! Threshold alarm rules of a device, for its owner: `GET|POST|DELETE /v2/device/alarm-rule`.
//! A POST replaces the device's rules; the evaluator ([`crate::alarm`]) judges the next report by
//! them. Answers as seed 003's routes do: bare bodies, failures as `{"error":{"code","msg"}}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::{Deserialize, Serialize};
use utoipa::openapi::tag::TagBuilder;
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::xlink::{Account, ErrorBody, Fault, JsonBody, XlinkError};
use crate::alarm::{MAX_RULES, Rule};
use crate::hub::Hub;
use crate::ids::DeviceId;

#[derive(Deserialize, IntoParams)]
pub struct DeviceParam {
    pub deviceid: String,
}

#[derive(Deserialize, Serialize, ToSchema)]
pub struct AlarmRules {
    pub deviceid: String,
    /// At most 16; an empty list removes the device's rules.
    pub rules: Vec<Rule>,
}

/// The device id of a GET or DELETE, from the query string.
fn device_param(query: Option<&str>) -> Result<String, XlinkError> {
    serde_urlencoded::from_str::<DeviceParam>(query.unwrap_or(""))
        .map(|p| p.deviceid)
        .map_err(|e| XlinkError::invalid(format!("invalid parameters: {e}")))
}

/// The device, when the caller owns it: unknown → 404, anyone else's (a sharee's too) → 403.
async fn owned(hub: &Hub, caller: &Account, deviceid: &str) -> Result<DeviceId, XlinkError> {
    let record = hub.store.device_record(deviceid).await?.ok_or_else(|| XlinkError::new(Fault::UnknownDevice, "unknown device"))?;
    if record.owner.as_deref() != Some(caller.0.user.as_str()) {
        return Err(XlinkError::new(Fault::Forbidden, "only the device's owner sets its alarm rules"));
    }
    Ok(DeviceId::new(record.deviceid))
}

async fn stored_rules(hub: &Hub, deviceid: &DeviceId) -> Result<Vec<Rule>, XlinkError> {
    let text = hub.store.alarm_rules(deviceid.as_str()).await?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default())
}

/// The device's alarm rules.
#[utoipa::path(get, path = "/v2/device/alarm-rule", tag = "alarm", security(("access_token" = []), ("bearer" = [])),
    params(DeviceParam),
    responses(
        (status = 200, body = AlarmRules),
        (status = 400, body = ErrorBody, description = "4001 no deviceid"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 not the device's owner"),
        (status = 404, body = ErrorBody, description = "4042 unknown device")))]
pub async fn get_rules(State(hub): State<Arc<Hub>>, caller: Account, RawQuery(query): RawQuery) -> Result<Json<AlarmRules>, XlinkError> {
    let deviceid = owned(&hub, &caller, &device_param(query.as_deref())?).await?;
    let rules = stored_rules(&hub, &deviceid).await?;
    Ok(Json(AlarmRules { deviceid: deviceid.as_str().to_owned(), rules }))
}

/// Replaces the device's alarm rules; answers them as stored.
#[utoipa::path(post, path = "/v2/device/alarm-rule", tag = "alarm", security(("access_token" = []), ("bearer" = [])),
    request_body = AlarmRules,
    responses(
        (status = 200, body = AlarmRules),
        (status = 400, body = ErrorBody, description = "4001 bad input: an unknown op, a threshold or clear not a number, clear past \
            the threshold, more than 16 rules, a param over 64 bytes, cooldownSecs over a week"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 not the device's owner"),
        (status = 404, body = ErrorBody, description = "4042 unknown device")))]
pub async fn set_rules(
    State(hub): State<Arc<Hub>>,
    caller: Account,
    JsonBody(req): JsonBody<AlarmRules>,
) -> Result<Json<AlarmRules>, XlinkError> {
    let deviceid = owned(&hub, &caller, &req.deviceid).await?;
    if req.rules.len() > MAX_RULES {
        return Err(XlinkError::invalid(format!("at most {MAX_RULES} rules")));
    }
    for (i, rule) in req.rules.iter().enumerate() {
        rule.check().map_err(|e| XlinkError::invalid(format!("rules[{i}]: {e}")))?;
    }
    if req.rules.is_empty() {
        hub.store.delete_alarm_rules(deviceid.as_str()).await?;
    } else {
        let text = serde_json::to_string(&req.rules).map_err(|_| XlinkError::new(Fault::Internal, "internal error"))?;
        hub.store.set_alarm_rules(deviceid.as_str(), &text).await?;
    }
    hub.alarms.reload(&hub.store, &deviceid).await?;
    tracing::info!(device = %deviceid, rules = req.rules.len(), "alarm rules set");
    Ok(Json(AlarmRules { deviceid: deviceid.as_str().to_owned(), rules: req.rules }))
}

/// Removes the device's alarm rules.
#[utoipa::path(delete, path = "/v2/device/alarm-rule", tag = "alarm", security(("access_token" = []), ("bearer" = [])),
    params(DeviceParam),
    responses(
        (status = 200, description = "Removed (or there were none); empty body"),
        (status = 400, body = ErrorBody, description = "4001 no deviceid"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 not the device's owner"),
        (status = 404, body = ErrorBody, description = "4042 unknown device")))]
pub async fn delete_rules(State(hub): State<Arc<Hub>>, caller: Account, RawQuery(query): RawQuery) -> Result<(), XlinkError> {
    let deviceid = owned(&hub, &caller, &device_param(query.as_deref())?).await?;
    hub.store.delete_alarm_rules(deviceid.as_str()).await?;
    hub.alarms.reload(&hub.store, &deviceid).await?;
    tracing::info!(device = %deviceid, "alarm rules removed");
    Ok(())
}

#[derive(OpenApi)]
#[openapi(modifiers(&AlarmDoc))]
struct AlarmApi;

struct AlarmDoc;

impl Modify for AlarmDoc {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let description = "Threshold alarm rules (seed 002), for the device's owner by `Access-Token` or `Bearer`. A report \
            whose value of `param` (a number or numeric string) crosses `op threshold` raises one alarm, then none until a \
            report clears it (back past `clear`) and `cooldownSecs` have passed. The alarm reaches every app session of the \
            owner and sharees as `{\"action\":\"alarm\",\"deviceid\",\"apikey\",\"params\":{\"param\",\"value\",\"op\",\"threshold\"},\"ts\"}`, \
            the message centre as `alarmNotify_v2`, and every WeChat user bound to the device through `pushappmsg`. \
            Failures as in the `xlink` tag's table.";
        openapi.tags.get_or_insert_with(Vec::new).push(TagBuilder::new().name("alarm").description(Some(description)).build());
    }
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::with_openapi(AlarmApi::openapi()).routes(routes!(get_rules, set_rules, delete_rules))
}
