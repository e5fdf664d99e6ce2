//! `/v2/family…`: families, rooms, the order of things in a family and which room they are in.
//!
//! Every id a client sends must be one of the caller's own families, rooms or things; anything
//! else (unknown, or another user's) is `405`, so other users' ids are never revealed. Names are
//! trimmed and must hold 1 to [`MAX_NAME_CHARS`] characters. A user has at most
//! [`crate::store::MAX_FAMILIES`] families and a family at most [`crate::store::MAX_ROOMS`] rooms (`20002` beyond).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::api::{Body, DeleteParams, Empty, Envelope, Query, ok_data};
use super::auth::Caller;
use super::error::ApiError;
use crate::hub::Hub;
use crate::ids::UserKey;
use crate::store::{Family, FamilyError, Room, Sort, ThingKind, ThingRef};

/// Longest family or room name, in characters.
pub const MAX_NAME_CHARS: usize = 50;

impl From<FamilyError> for ApiError {
    fn from(e: FamilyError) -> Self {
        match e {
            FamilyError::NotFound(what) => ApiError::new(405, format!("{what} not found")),
            FamilyError::Limit(what) => ApiError::new(20002, format!("too many {what}")),
            FamilyError::LastFamily => ApiError::new(20003, "the only family cannot be deleted"),
            FamilyError::Invalid(why) => ApiError::bad_request(why),
            FamilyError::Store(e) => e.into(),
        }
    }
}

/// A room as the seed lists it.
#[derive(Serialize, ToSchema)]
pub struct RoomItem {
    pub id: String,
    pub name: String,
    /// Order of the room in its family; may be negative.
    pub index: i64,
}

impl From<Room> for RoomItem {
    fn from(r: Room) -> Self {
        RoomItem { id: r.id, name: r.name, index: r.index }
    }
}

/// A family as the seed lists it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FamilyItem {
    pub id: String,
    /// The owner's apikey.
    pub apikey: String,
    pub name: String,
    /// Order of the family; may be negative.
    pub index: i64,
    pub room_list: Vec<RoomItem>,
}

impl From<Family> for FamilyItem {
    fn from(f: Family) -> Self {
        FamilyItem {
            id: f.id,
            apikey: f.apikey,
            name: f.name,
            index: f.index,
            room_list: f.rooms.into_iter().map(RoomItem::from).collect(),
        }
    }
}

/// A new family (without the owner's apikey, as the seed answers `POST /v2/family`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewFamily {
    pub id: String,
    pub name: String,
    pub index: i64,
    pub room_list: Vec<RoomItem>,
}

/// `GET /v2/family`'s data (also the homepage's `familyInfo`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FamilyList {
    /// The caller's families by index, each with its rooms by index.
    pub family_list: Vec<FamilyItem>,
    pub current_family_id: String,
}

/// The caller's families and current family.
pub async fn family_list(hub: &Hub, user: &UserKey) -> Result<FamilyList, ApiError> {
    let (families, current) = hub.store.families(user).await?;
    Ok(FamilyList { family_list: families.into_iter().map(FamilyItem::from).collect(), current_family_id: current })
}

/// A name trimmed and checked: 1 to [`MAX_NAME_CHARS`] characters, else 400.
fn name_of<'a>(field: &str, name: &'a str) -> Result<&'a str, ApiError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!("{field} must hold 1 to {MAX_NAME_CHARS} characters")));
    }
    Ok(name)
}

/// The seed's `sort`: 1 a smaller index than the others, 2 a larger one; anything else 400.
fn sort_of(code: i64) -> Result<Sort, ApiError> {
    match code {
        1 => Ok(Sort::First),
        2 => Ok(Sort::Last),
        _ => Err(ApiError::bad_request("sort must be 1 or 2")),
    }
}

/// A thing in a client's list.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThingItem {
    /// 1 own device, 2 device shared with the caller, 3 the caller's group.
    pub item_type: i64,
    /// Device id or group id.
    pub id: String,
}

fn thing_refs(field: &str, list: Vec<ThingItem>) -> Result<Vec<ThingRef>, ApiError> {
    list.into_iter()
        .map(|t| match ThingKind::from_code(t.item_type) {
            Some(kind) => Ok(ThingRef { kind, id: t.id }),
            None => Err(ApiError::bad_request(format!("{field}: itemType must be 1, 2 or 3"))),
        })
        .collect()
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FamilyQuery {
    /// Language of push texts, `cn` or `en` (accepted, not used here).
    #[allow(dead_code)]
    pub lang: Option<String>,
}

/// The caller's families with their rooms, and which one is current.
#[utoipa::path(get, path = "/v2/family", tag = "family", security(("bearer" = [])), params(FamilyQuery),
    responses((status = 200, body = Envelope<FamilyList>, description = "Families by index, rooms by index")))]
pub async fn get_families(State(hub): State<Arc<Hub>>, caller: Caller, Query(_q): Query<FamilyQuery>) -> Result<Json<Value>, ApiError> {
    Ok(ok_data(family_list(&hub, &caller.user).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddFamily {
    /// 1 to 50 characters.
    pub name: String,
    /// 1 = an index smaller than every other family's, 2 = larger.
    pub sort: i64,
    /// Rooms to create, indexed 0, 1, 2… in list order (at most 100).
    #[serde(default)]
    pub room_name_list: Option<Vec<String>>,
}

/// Creates a family, with rooms if asked.
#[utoipa::path(post, path = "/v2/family", tag = "family", security(("bearer" = [])), request_body = AddFamily,
    responses((status = 200, body = Envelope<NewFamily>,
        description = "errors: 400 bad name or sort, 20002 already 10 families or more than 100 rooms")))]
pub async fn add_family(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<AddFamily>) -> Result<Json<Value>, ApiError> {
    let name = name_of("name", &req.name)?;
    let sort = sort_of(req.sort)?;
    let rooms = req.room_name_list.unwrap_or_default();
    let rooms = rooms.iter().map(|r| name_of("roomNameList", r).map(str::to_owned)).collect::<Result<Vec<_>, _>>()?;
    let f = hub.store.add_family(&caller.user, name, sort, &rooms).await?;
    Ok(ok_data(NewFamily { id: f.id, name: f.name, index: f.index, room_list: f.rooms.into_iter().map(RoomItem::from).collect() }))
}

#[derive(Deserialize, ToSchema)]
pub struct RenameFamily {
    /// Family id; absent or empty: the current family.
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
}

/// Renames a family.
#[utoipa::path(put, path = "/v2/family", tag = "family", security(("bearer" = [])), request_body = RenameFamily,
    responses((status = 200, body = Envelope<Empty>, description = "errors: 400 bad name, 405 unknown family")))]
pub async fn rename_family(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<RenameFamily>) -> Result<Json<Value>, ApiError> {
    let name = name_of("name", &req.name)?;
    hub.store.rename_family(&caller.user, req.id.as_deref(), name).await?;
    Ok(ok_data(Empty {}))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct DeleteFamily {
    /// The family to delete.
    pub id: String,
    /// Another family of the caller that receives the deleted family's devices and groups.
    pub device_family: String,
    /// Another family of the caller that becomes current if the deleted one was current.
    pub switch_family: String,
}

/// Deletes a family. Its things move to `deviceFamily` (unassigned, after that family's things);
/// when it was the current family, `switchFamily` becomes current (otherwise the current family
/// stays as it is). Parameters in the query string or a JSON body.
#[utoipa::path(delete, path = "/v2/family", tag = "family", security(("bearer" = [])), params(DeleteFamily),
    responses((status = 200, body = Envelope<Empty>, description = "errors: 400 missing parameter, or deviceFamily/switchFamily \
        is the family being deleted; 405 unknown family (any of the three); 20003 the caller's only family")))]
pub async fn delete_family(
    State(hub): State<Arc<Hub>>,
    caller: Caller,
    DeleteParams(req): DeleteParams<DeleteFamily>,
) -> Result<Json<Value>, ApiError> {
    hub.store.delete_family(&caller.user, &req.id, &req.device_family, &req.switch_family).await?;
    Ok(ok_data(Empty {}))
}

#[derive(Deserialize, ToSchema)]
pub struct AddRoom {
    pub familyid: String,
    /// 1 to 50 characters.
    pub name: String,
    /// 1 = an index smaller than every other room's, 2 = larger.
    pub sort: i64,
}

/// Adds a room to a family.
#[utoipa::path(post, path = "/v2/family/room", tag = "family", security(("bearer" = [])), request_body = AddRoom,
    responses((status = 200, body = Envelope<RoomItem>,
        description = "errors: 400 bad name or sort, 405 unknown family, 20002 the family has 100 rooms already")))]
pub async fn add_room(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<AddRoom>) -> Result<Json<Value>, ApiError> {
    let name = name_of("name", &req.name)?;
    let sort = sort_of(req.sort)?;
    let room = hub.store.add_room(&caller.user, &req.familyid, name, sort).await?;
    Ok(ok_data(RoomItem::from(room)))
}

#[derive(Deserialize, ToSchema)]
pub struct RenameRoom {
    pub id: String,
    pub name: String,
}

/// Renames a room.
#[utoipa::path(put, path = "/v2/family/room", tag = "family", security(("bearer" = [])), request_body = RenameRoom,
    responses((status = 200, body = Envelope<Empty>, description = "errors: 400 bad name, 405 unknown room")))]
pub async fn rename_room(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<RenameRoom>) -> Result<Json<Value>, ApiError> {
    let name = name_of("name", &req.name)?;
    hub.store.rename_room(&caller.user, &req.id, name).await?;
    Ok(ok_data(Empty {}))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteRoom {
    pub id: String,
}

/// Deletes a room; the things in it stay in the family, unassigned. Parameters in the query
/// string or a JSON body.
#[utoipa::path(delete, path = "/v2/family/room", tag = "family", security(("bearer" = [])), params(DeleteRoom),
    responses((status = 200, body = Envelope<Empty>, description = "errors: 400 missing id, 405 unknown room")))]
pub async fn delete_room(
    State(hub): State<Arc<Hub>>,
    caller: Caller,
    DeleteParams(req): DeleteParams<DeleteRoom>,
) -> Result<Json<Value>, ApiError> {
    hub.store.delete_room(&caller.user, &req.id).await?;
    Ok(ok_data(Empty {}))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SortRooms {
    /// Family id; absent or empty: the current family.
    #[serde(default)]
    pub familyid: Option<String>,
    /// Every room of the family exactly once; a room's index becomes its position.
    pub id_list: Vec<String>,
}

/// Orders the rooms of a family.
#[utoipa::path(post, path = "/v2/family/room/index", tag = "family", security(("bearer" = [])), request_body = SortRooms,
    responses((status = 200, body = Envelope<Empty>,
        description = "errors: 400 idList is not exactly the family's rooms, 405 unknown family")))]
pub async fn sort_rooms(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<SortRooms>) -> Result<Json<Value>, ApiError> {
    hub.store.sort_rooms(&caller.user, req.familyid.as_deref(), &req.id_list).await?;
    Ok(ok_data(Empty {}))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SortThings {
    /// Family id; absent or empty: the current family.
    #[serde(default)]
    pub familyid: Option<String>,
    /// The family's things in their new order; a thing's index becomes its position. Things
    /// left out follow the listed ones in their old order.
    pub thing_list: Vec<ThingItem>,
}

/// Orders the devices and groups of a family.
#[utoipa::path(post, path = "/v2/family/thing/sort", tag = "family", security(("bearer" = [])), request_body = SortThings,
    responses((status = 200, body = Envelope<Empty>, description = "errors: 400 bad itemType or a thing listed twice, \
        405 unknown family, or a thing the caller does not keep in that family as that itemType")))]
pub async fn sort_things(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<SortThings>) -> Result<Json<Value>, ApiError> {
    let list = thing_refs("thingList", req.thing_list)?;
    hub.store.sort_things(&caller.user, req.familyid.as_deref(), &list).await?;
    Ok(ok_data(Empty {}))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomThings {
    pub roomid: String,
    /// The things in the room now (`[]` if none).
    pub old_thing_list: Vec<ThingItem>,
    /// The things that should be in the room.
    pub new_thing_list: Vec<ThingItem>,
}

/// Sets the things of a room: those of the old list missing from the new one leave the room
/// (unassigned), those of the new list missing from the old one join it.
#[utoipa::path(post, path = "/v2/family/room/thing", tag = "family", security(("bearer" = [])), request_body = RoomThings,
    responses((status = 200, body = Envelope<Empty>, description = "errors: 400 bad itemType, a thing listed twice in one list, \
        or an item of oldThingList that is not in the room, 405 unknown room or an item of newThingList the caller does not keep in the room's family")))]
pub async fn room_things(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<RoomThings>) -> Result<Json<Value>, ApiError> {
    let old = thing_refs("oldThingList", req.old_thing_list)?;
    let new = thing_refs("newThingList", req.new_thing_list)?;
    hub.store.set_room_things(&caller.user, &req.roomid, &old, &new).await?;
    Ok(ok_data(Empty {}))
}

#[derive(Deserialize, ToSchema)]
pub struct SwitchFamily {
    pub id: String,
}

/// Makes one of the caller's families the current one.
#[utoipa::path(post, path = "/v2/family/current", tag = "family", security(("bearer" = [])), request_body = SwitchFamily,
    responses((status = 200, body = Envelope<Empty>, description = "errors: 405 unknown family")))]
pub async fn switch_family(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<SwitchFamily>) -> Result<Json<Value>, ApiError> {
    hub.store.set_current_family(&caller.user, &req.id).await?;
    Ok(ok_data(Empty {}))
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(get_families, add_family, rename_family, delete_family))
        .routes(utoipa_axum::routes!(add_room, rename_room, delete_room))
        .routes(utoipa_axum::routes!(sort_rooms))
        .routes(utoipa_axum::routes!(sort_things))
        .routes(utoipa_axum::routes!(room_things))
        .routes(utoipa_axum::routes!(switch_family))
}
