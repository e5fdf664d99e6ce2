//! `/v2/device/group…`: device groups. A group belongs to the user who made it, is kept in one
//! of their families as a thing of kind 3 and holds devices of its main device's uiid that the
//! user owns or has shared with them. Its `params` are only kept, never sent to devices.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::api::{Body, DeleteParams, Empty, Envelope, Query, ok_data};
use super::auth::Caller;
use super::error::ApiError;
use super::thing::thing_item;
use crate::hub::Hub;
use crate::store::{Group, GroupError, NewGroup, Placement, Sort, ThingKind};

/// Longest group name, in characters (the seed's limit).
pub const MAX_NAME_CHARS: usize = 50;
/// Most devices one request may list for a group.
pub const MAX_LIST: usize = 200;

/// Where a group is kept (the seed's `family` object).
#[derive(Serialize, ToSchema)]
pub struct GroupFamily {
    pub familyid: String,
    /// Order among the family's things; may be negative.
    pub index: i64,
    /// The room, "" when unassigned.
    pub roomid: String,
}

/// The seed's group `itemData`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupData {
    pub id: String,
    pub name: String,
    pub main_device_id: String,
    pub family: GroupFamily,
    /// The saved group state.
    #[schema(value_type = Object)]
    pub params: Value,
}

/// A group as a thing item (`itemType` 3).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupItem {
    /// Always 3.
    pub item_type: i64,
    pub item_data: GroupData,
    pub index: i64,
}

/// The thing item of a group as its user keeps it.
pub fn group_item(group: Group, placement: Placement) -> GroupItem {
    GroupItem {
        item_type: ThingKind::Group.code(),
        item_data: GroupData {
            id: group.id,
            name: group.name,
            main_device_id: group.main_deviceid,
            family: GroupFamily { familyid: placement.familyid, index: placement.index, roomid: placement.roomid.unwrap_or_default() },
            params: group.params,
        },
        index: placement.index,
    }
}

impl From<GroupError> for ApiError {
    fn from(e: GroupError) -> Self {
        match e {
            GroupError::NotFound(what) => ApiError::new(405, format!("{what} not found")),
            GroupError::Limit => ApiError::new(30009, format!("at most {} groups per user", crate::store::MAX_GROUPS)),
            GroupError::Invalid(why) => ApiError::bad_request(why),
            GroupError::Store(e) => e.into(),
        }
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let n = name.trim().chars().count();
    if n == 0 || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!("name must be 1 to {MAX_NAME_CHARS} characters")));
    }
    Ok(())
}

fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::bad_request(format!("{what} is required")));
    }
    Ok(())
}

fn check_list(list: &[String]) -> Result<(), ApiError> {
    if list.len() > MAX_LIST {
        return Err(ApiError::bad_request(format!("deviceidList may hold at most {MAX_LIST} ids")));
    }
    Ok(())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListGroups {
    /// Language of push texts (`cn` or `en`); accepted and ignored.
    #[serde(default)]
    pub lang: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupList {
    pub group_list: Vec<GroupItem>,
}

/// The caller's groups in their current family, by index.
#[utoipa::path(get, path = "/v2/device/group", tag = "group", security(("bearer" = [])), params(ListGroups),
    responses((status = 200, body = Envelope<GroupList>, description = "errors: 400 bad parameters")))]
pub async fn list_groups(State(hub): State<Arc<Hub>>, caller: Caller, Query(_q): Query<ListGroups>) -> Result<Json<Value>, ApiError> {
    let groups = hub.store.family_groups(&caller.user, None).await?;
    Ok(ok_data(GroupList { group_list: groups.into_iter().map(|(g, p)| group_item(g, p)).collect() }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddGroup {
    /// 1 to 50 characters.
    pub name: String,
    /// A device the caller owns or has shared with them; its uiid becomes the group's.
    pub main_device_id: String,
    /// Default: the current family.
    #[serde(default)]
    pub familyid: Option<String>,
    /// Default: unassigned.
    #[serde(default)]
    pub roomid: Option<String>,
    /// 1 (default) a smaller index than the family's things, 2 a larger one.
    #[serde(default)]
    pub sort: Option<i64>,
    /// Other members; devices of another uiid or out of the caller's reach are left out.
    #[serde(default)]
    pub deviceid_list: Option<Vec<String>>,
}

/// Creates a group around a main device.
#[utoipa::path(post, path = "/v2/device/group", tag = "group", security(("bearer" = [])), request_body = AddGroup,
    responses((status = 200, body = Envelope<GroupItem>, description = "errors: 400 bad parameters, \
        405 unknown main device, family or room, 30009 too many groups")))]
pub async fn add_group(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<AddGroup>) -> Result<Json<Value>, ApiError> {
    check_name(&req.name)?;
    check_id("mainDeviceId", &req.main_device_id)?;
    if req.sort.is_some_and(|s| s != 1 && s != 2) {
        return Err(ApiError::bad_request("sort must be 1 or 2"));
    }
    let list = req.deviceid_list.unwrap_or_default();
    check_list(&list)?;
    let new = NewGroup {
        name: &req.name,
        main_deviceid: &req.main_device_id,
        familyid: req.familyid.as_deref(),
        roomid: req.roomid.as_deref(),
        sort: Sort::from_code(req.sort),
        deviceids: &list,
    };
    let (group, placement) = hub.store.add_group(&caller.user, new).await?;
    tracing::info!(user = %caller.user, group = %group.id, members = group.members.len(), "group added");
    Ok(ok_data(group_item(group, placement)))
}

#[derive(Deserialize, ToSchema)]
pub struct RenameGroup {
    pub id: String,
    /// 1 to 50 characters.
    pub name: String,
}

/// Renames a group (the only change this route makes).
#[utoipa::path(put, path = "/v2/device/group", tag = "group", security(("bearer" = [])), request_body = RenameGroup,
    responses((status = 200, body = Envelope<Empty>, description = "errors: 400 bad parameters, 405 unknown group")))]
pub async fn rename_group(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<RenameGroup>) -> Result<Json<Value>, ApiError> {
    check_id("id", &req.id)?;
    check_name(&req.name)?;
    hub.store.rename_group(&caller.user, &req.id, &req.name).await?;
    Ok(ok_data(Empty {}))
}

#[derive(Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteGroup {
    pub id: String,
}

/// Deletes a group; its devices stay where they are.
#[utoipa::path(delete, path = "/v2/device/group", tag = "group", security(("bearer" = [])), params(DeleteGroup),
    responses((status = 200, body = Envelope<Empty>, description = "parameters in the query string or a JSON body; \
        errors: 400 bad parameters, 405 unknown group")))]
pub async fn delete_group(
    State(hub): State<Arc<Hub>>,
    caller: Caller,
    DeleteParams(req): DeleteParams<DeleteGroup>,
) -> Result<Json<Value>, ApiError> {
    check_id("id", &req.id)?;
    hub.store.delete_group(&caller.user, &req.id).await?;
    tracing::info!(user = %caller.user, group = %req.id, "group deleted");
    Ok(ok_data(Empty {}))
}

#[derive(Deserialize, ToSchema)]
pub struct GroupStatus {
    pub id: String,
    /// Keys to save into the group's state (each replaces the stored value); only kept.
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
}

/// Saves group state; nothing is sent to the member devices.
#[utoipa::path(post, path = "/v2/device/group/status", tag = "group", security(("bearer" = [])), request_body = GroupStatus,
    responses((status = 200, body = Envelope<Empty>, description = "errors: 400 bad parameters or a state over 64 KiB, \
        405 unknown group")))]
pub async fn group_status(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<GroupStatus>) -> Result<Json<Value>, ApiError> {
    check_id("id", &req.id)?;
    hub.store.set_group_params(&caller.user, &req.id, &req.params).await?;
    Ok(ok_data(Empty {}))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupMembers {
    pub id: String,
    /// The new members; must contain the main device. Devices of another uiid or out of the
    /// caller's reach are left out.
    pub deviceid_list: Vec<String>,
}

/// Thing items of devices whose data changed.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdatedThings {
    /// Thing items (see `GET /v2/device/thing`).
    #[schema(value_type = Vec<Object>)]
    pub updated_thing_list: Vec<Value>,
}

/// Replaces a group's members.
#[utoipa::path(post, path = "/v2/device/group/update", tag = "group", security(("bearer" = [])), request_body = GroupMembers,
    responses((status = 200, body = Envelope<UpdatedThings>, description = "updatedThingList: the thing items of the \
        members, then of the devices that left; errors: 400 bad parameters or a list without the main device, \
        405 unknown group")))]
pub async fn group_members(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<GroupMembers>) -> Result<Json<Value>, ApiError> {
    check_id("id", &req.id)?;
    check_list(&req.deviceid_list)?;
    let (members, left) = hub.store.set_group_members(&caller.user, &req.id, &req.deviceid_list).await?;
    let mut items = Vec::with_capacity(members.len() + left.len());
    for id in members.iter().chain(&left) {
        if let Some(item) = thing_item(&hub, &caller.user, id).await? {
            items.push(item);
        }
    }
    Ok(ok_data(UpdatedThings { updated_thing_list: items }))
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(list_groups, add_group, rename_group, delete_group))
        .routes(utoipa_axum::routes!(group_status))
        .routes(utoipa_axum::routes!(group_members))
}
