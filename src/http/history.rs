//! `/v2/device/history`: a device's operation history (what apps commanded and the device
//! reported, recorded by the recorder when the device's `opsHistory` setting is on; see
//! [`crate::recorder`] for what each field holds). The owner and sharees read it; only the owner
//! clears it.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::api::{DeleteParams, Empty, Envelope, Query, ok_data};
use super::auth::Caller;
use super::error::ApiError;
use crate::clock::now_millis;
use crate::hub::Hub;
use crate::store::HistoryEntry;
use crate::store::device::Role;

/// Most entries one call returns (the seed's `1 <= num <= 30`), also the default.
pub const MAX_HISTORY: i64 = 30;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadHistory {
    /// The device.
    pub deviceid: String,
    /// Only entries older than this (milliseconds since the epoch); default now.
    pub from: Option<i64>,
    /// 1 to 30, default 30.
    pub num: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryItem {
    pub deviceid: String,
    /// `app` or `device`, or `operator` for a command sent from the operator dashboard.
    pub user_agent: String,
    /// The switch channels the operation set, comma-separated: `switch` for a single-channel
    /// device, `outlet<N>` per channel of a multi-channel one; "" when none.
    pub ops_switchs: String,
    /// The operation as JSON text: `{"action","userAgent","params"}`, params as sent.
    pub request: String,
    /// For app operations the operating user's email, else phone, else apikey (a sharee's too);
    /// `operator:<email>` for an operator's; "" for device reports.
    pub ops_account: String,
    /// Milliseconds since the epoch.
    pub ops_time: i64,
}

impl From<HistoryEntry> for HistoryItem {
    fn from(h: HistoryEntry) -> Self {
        HistoryItem {
            deviceid: h.deviceid,
            user_agent: h.user_agent,
            ops_switchs: h.ops_switchs,
            request: h.request,
            ops_account: h.ops_account,
            ops_time: h.ops_time,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Histories {
    /// Newest first.
    pub histories: Vec<HistoryItem>,
}

/// Up to `num` history entries of a device the caller owns or has shared with them, older than
/// `from`, newest first; page with `from` = the last entry's `opsTime`.
#[utoipa::path(get, path = "/v2/device/history", tag = "history", security(("bearer" = [])), params(ReadHistory),
    responses((status = 200, body = Envelope<Histories>,
        description = "errors: 400 missing deviceid, num not 1 to 30, from negative or not numbers; 405 unknown device or not the caller's (owned or shared)")))]
pub async fn read_history(State(hub): State<Arc<Hub>>, caller: Caller, Query(q): Query<ReadHistory>) -> Result<Json<Value>, ApiError> {
    let num = q.num.unwrap_or(MAX_HISTORY);
    if !(1..=MAX_HISTORY).contains(&num) {
        return Err(ApiError::bad_request(format!("num must be 1 to {MAX_HISTORY}")));
    }
    if q.from.is_some_and(|f| f < 0) {
        return Err(ApiError::bad_request("from must not be negative"));
    }
    if hub.store.device_role(&caller.user, &q.deviceid).await?.is_none() {
        return Err(ApiError::new(405, "device not found"));
    }
    let before = q.from.unwrap_or_else(|| now_millis() + 1);
    let entries = hub.store.history(&q.deviceid, before, num).await?;
    Ok(ok_data(Histories { histories: entries.into_iter().map(HistoryItem::from).collect() }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClearHistory {
    /// The device.
    pub deviceid: String,
}

/// Clears a device's history; only its owner may.
#[utoipa::path(delete, path = "/v2/device/history", tag = "history", security(("bearer" = [])), params(ClearHistory),
    responses((status = 200, body = Envelope<Empty>,
        description = "deviceid in the query string or a JSON body. Errors: 400 missing deviceid; 405 unknown device or not the caller's; 406 the caller is a sharee, not the owner")))]
pub async fn clear_history(
    State(hub): State<Arc<Hub>>,
    caller: Caller,
    DeleteParams(req): DeleteParams<ClearHistory>,
) -> Result<Json<Value>, ApiError> {
    match hub.store.device_role(&caller.user, &req.deviceid).await? {
        None => Err(ApiError::new(405, "device not found")),
        Some(Role::Sharee { .. }) => Err(ApiError::new(406, "only the owner may clear the history")),
        Some(Role::Owner) => {
            let removed = hub.store.clear_history(&req.deviceid).await?;
            tracing::info!(user = %caller.user, device = %req.deviceid, removed, "history cleared");
            Ok(ok_data(Empty {}))
        }
    }
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new().routes(utoipa_axum::routes!(read_history, clear_history))
}
