//! `/v2/device/thing…`: thing lists, device and group status, commands through the hub.

use std::sync::Arc;

use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;

use super::error::ApiError;
use crate::Hub;
use crate::ids::UserKey;

/// The seed's thing item (`{itemType, itemData, index}`) of one device or group as `user` keeps
/// it; `None` when the user does not keep it.
pub async fn thing_item(hub: &Hub, user: &UserKey, thingid: &str) -> Result<Option<Value>, ApiError> {
    let _ = (hub, user, thingid);
    Ok(None)
}

/// A family's things as `user` sees them (default family: the current one), ordered by index,
/// those with index >= `begin_index`, at most `num` (0 = all); with the family's total.
pub async fn thing_list(hub: &Hub, user: &UserKey, familyid: Option<&str>, num: i64, begin_index: i64) -> Result<(Vec<Value>, i64), ApiError> {
    let _ = (hub, user, familyid, num, begin_index);
    Ok((Vec::new(), 0))
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
}
