//! `/v2/device/thing…`: thing lists, device and group status, commands through the hub.
//!
//! A thing is what a user keeps in a family (a `things` row): their own device (`itemType` 1), a
//! device shared with them (2) or one of their groups (3). Lists are rendered from a handful of
//! batched store reads whatever their length; a device's `online` and live `params` come from
//! the hub's registry. Ids that are unknown or not the caller's are `405` (or simply absent from
//! a list), so other users' ids are never revealed.
//!
//! Commands go to the device through the same router as the WebSocket's: the REST call waits
//! for the device's ack (up to `--ack-timeout-ms`); with `ttl`, an update for an offline device is
//! kept for it ([`crate::offline`]). An `update` the device acks with error 0
//! becomes its state, as on the socket; a report that follows wins.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::time::Instant;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::api::{Body, Empty, Envelope, Query, ok_data};
use super::auth::Caller;
use super::error::ApiError;
use crate::command::{self, Routed, SendError, Sent};
use crate::hub::Hub;
use crate::ids::{DeviceId, UserKey};
use crate::offline::QueueError;
use crate::protocol::CommandKind;
use crate::router::{Command, Outcome, RouteError};
use crate::store::device::{DeviceRecord, GroupRecord, Person, ShareEntry};
use crate::store::{Placement, ThingKind};

/// The seed's "device control failed" (offline, refused or failed command).
pub const CONTROL_FAILED: i64 = 4002;
/// A device that did not ack in time.
pub const NO_ACK: i64 = 504;
/// Batch status: the device is offline.
pub const OFFLINE: i64 = 30022;
/// Things one `POST /v2/device/thing` or batch-status call may name.
pub const MAX_LIST: usize = 10;
/// Longest wait a batch-status call may ask for, in milliseconds.
pub const MAX_BATCH_TIMEOUT_MS: i64 = 8000;

/// The seed's thing item (`{itemType, itemData, index}`) of one device or group as `user` keeps
/// it; `None` when the user does not keep it.
pub async fn thing_item(hub: &Hub, user: &UserKey, thingid: &str) -> Result<Option<Value>, ApiError> {
    let rows = hub.store.placements_of(user, &[thingid.to_owned()]).await?;
    Ok(render(hub, user, rows).await?.into_iter().next())
}

/// A family's things as `user` sees them (default family: the current one), ordered by index,
/// those with index > `begin_index` (exclusive), at most `num` (0 = all); with the family's total.
/// A family that is not the user's → `405`.
pub async fn thing_list(
    hub: &Hub,
    user: &UserKey,
    familyid: Option<&str>,
    num: i64,
    begin_index: i64,
) -> Result<(Vec<Value>, i64), ApiError> {
    let familyid = hub.store.resolve_family(user, familyid).await?;
    let (rows, total) = hub.store.things_page(user, &familyid, begin_index, num).await?;
    Ok((render(hub, user, rows).await?, total))
}

/// Renders placements (in their order) as thing items; things the user no longer may see (a
/// stale row) are left out.
async fn render(hub: &Hub, user: &UserKey, rows: Vec<Placement>) -> Result<Vec<Value>, ApiError> {
    let device_ids: Vec<String> = rows.iter().filter(|p| p.kind != ThingKind::Group).map(|p| p.thingid.clone()).collect();
    let group_ids: Vec<String> = rows.iter().filter(|p| p.kind == ThingKind::Group).map(|p| p.thingid.clone()).collect();
    let (devices, shares, groups_of, groups) = if device_ids.is_empty() {
        (HashMap::new(), Vec::new(), Vec::new(), hub.store.viewer_groups(user, &group_ids).await?)
    } else {
        (
            hub.store.device_records(&device_ids).await?,
            hub.store.shares_of(&device_ids).await?,
            hub.store.viewer_groups_of(user, &device_ids).await?,
            if group_ids.is_empty() { HashMap::new() } else { hub.store.viewer_groups(user, &group_ids).await? },
        )
    };
    let me = user.as_str();
    let owners: Vec<String> = {
        let mine: HashSet<&str> = shares.iter().filter(|s| s.apikey == me).map(|s| s.deviceid.as_str()).collect();
        let set: HashSet<String> =
            devices.values().filter(|d| mine.contains(d.deviceid.as_str())).filter_map(|d| d.owner.clone()).collect();
        set.into_iter().collect()
    };
    let people = if owners.is_empty() { HashMap::new() } else { hub.store.people(&owners).await? };
    let mut out = Vec::with_capacity(rows.len());
    for p in &rows {
        let item = if p.kind == ThingKind::Group {
            groups.get(&p.thingid).map(|g| group_item(hub, g, p))
        } else {
            devices.get(&p.thingid).and_then(|d| device_item(hub, me, d, p, &shares, &groups_of, &people))
        };
        out.extend(item);
    }
    Ok(out)
}

fn family_json(p: &Placement) -> Value {
    json!({ "familyid": p.familyid, "index": p.index, "roomid": p.roomid.as_deref().unwrap_or("") })
}

/// Stored or live params as an object. A value that cannot be read (a number out of range stored
/// before the socket refused them) is left out on its own, never the whole state with it.
fn object(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => json!({}),
        Err(_) => match serde_json::from_str::<std::collections::BTreeMap<String, Box<RawValue>>>(text) {
            Ok(raw) => {
                let readable = raw.into_iter().filter_map(|(k, v)| serde_json::from_str::<Value>(v.get()).ok().map(|v| (k, v)));
                Value::Object(readable.collect())
            }
            Err(_) => json!({}),
        },
    }
}

fn person_json(p: &Person, permit: i64, comment: &str, shared_at: i64) -> Value {
    let mut v = json!({ "apikey": p.apikey, "permit": permit, "nickname": p.nickname, "comment": comment, "shareTime": shared_at });
    if let Some(phone) = &p.phone {
        v["phoneNumber"] = json!(phone);
    }
    if let Some(email) = &p.email {
        v["email"] = json!(email);
    }
    v
}

/// A device's live state when it is online here, else the stored one (online when another node
/// of a cluster holds it: its state reaches the store within the recorder's batch).
fn live_params(hub: &Hub, d: &DeviceRecord) -> (bool, Value) {
    let id = DeviceId::new(d.deviceid.as_str());
    match hub.router.live_params(&id, &[]) {
        Some(state) => (true, object(&state)),
        None => (hub.router.online_elsewhere(&id), object(&d.params)),
    }
}

fn device_item(
    hub: &Hub,
    me: &str,
    d: &DeviceRecord,
    p: &Placement,
    shares: &[ShareEntry],
    groups_of: &[(String, String)],
    people: &HashMap<String, Person>,
) -> Option<Value> {
    let owner = d.owner.as_deref()?;
    let own = owner == me;
    let my_share = shares.iter().find(|s| s.deviceid == d.deviceid && s.apikey == me);
    if !own && my_share.is_none() {
        return None;
    }
    let mut extra = json!({
        "ui": "", "description": "", "manufacturer": "", "mac": "", "apmac": "", "modelInfo": "", "brandId": "",
    });
    let mut gsm = None;
    if let Value::Object(stored) = object(&d.extra) {
        for (k, v) in stored {
            if k == "gsmInfoData" {
                gsm = Some(v);
            } else {
                extra[k] = v;
            }
        }
    }
    extra["model"] = json!(d.model);
    extra["uiid"] = json!(d.uiid);
    let (online, params) = live_params(hub, d);
    let dev_groups: Vec<Value> =
        groups_of.iter().filter(|(dev, _)| dev == &d.deviceid).map(|(_, g)| json!({ "type": 1, "groupId": g })).collect();
    let mut data = json!({
        "name": d.name,
        "deviceid": d.deviceid,
        "apikey": owner,
        "extra": extra,
        "brandName": d.brand_name,
        "brandLogo": d.brand_logo,
        "showBrand": !d.brand_name.is_empty(),
        "productModel": d.product_model,
        "devGroups": dev_groups,
        "settings": object(&d.settings),
        "family": family_json(p),
        "online": online,
        "params": params,
    });
    if let Some(tags) = &d.tags {
        data["tags"] = object(tags);
    }
    if let Some(cfg) = &d.dev_config {
        data["devConfig"] = object(cfg);
    }
    if let Some(gsm) = gsm {
        data["gsmInfoData"] = gsm;
    }
    if own {
        // The factory key lets whoever holds it register as the device: only its owner sees it.
        data["devicekey"] = json!(d.factory_apikey);
        let to: Vec<Value> =
            shares.iter().filter(|s| s.deviceid == d.deviceid).map(|s| person_json(&s.person, s.permit, &s.comment, s.shared_at)).collect();
        if !to.is_empty() {
            data["shareTo"] = Value::Array(to);
        }
    } else if let Some(s) = my_share {
        let owner_person =
            people.get(owner).cloned().unwrap_or(Person { apikey: owner.to_owned(), phone: None, email: None, nickname: String::new() });
        data["sharedBy"] = person_json(&owner_person, s.permit, &s.comment, s.shared_at);
    }
    Some(json!({ "itemType": if own { 1 } else { 2 }, "itemData": data, "index": p.index }))
}

fn group_item(_hub: &Hub, g: &GroupRecord, p: &Placement) -> Value {
    json!({
        "itemType": 3,
        "itemData": { "id": g.id, "name": g.name, "mainDeviceId": g.main_deviceid, "family": family_json(p), "params": object(&g.params) },
        "index": p.index,
    })
}

// --- commands ------------------------------------------------------------------------------

/// Sends an `update` to a device for `user` through the command service.
async fn send_update(hub: &Hub, user: &UserKey, deviceid: &DeviceId, params: &RawValue) -> Result<Sent, RouteError> {
    let sequence = command::next_sequence();
    command::send(hub, user, Command { kind: CommandKind::Update, deviceid, sequence: &sequence, params }, None).await
}

/// The params of a status change: a non-empty JSON object (else 400).
fn params_of(v: &Value) -> Result<Box<RawValue>, ApiError> {
    match v {
        Value::Object(m) if !m.is_empty() => Ok(crate::protocol::raw(v.to_string())),
        _ => Err(ApiError::bad_request("params must be a non-empty object")),
    }
}

/// Sends the update to every member of one of `user`'s groups that `user` may command and that
/// is online; the answers are not awaited. Not their group → 405.
async fn update_group(hub: &Arc<Hub>, user: &UserKey, groupid: &str, params: &Value) -> Result<(), ApiError> {
    let raw = params_of(params)?;
    let members = hub.store.viewer_group_devices(user, groupid).await?.ok_or_else(|| ApiError::new(405, "group not found"))?;
    for id in members {
        if hub.store.device_role(user, &id).await?.is_none() {
            continue;
        }
        // The router refuses what the user may not send (a sharee's timers beyond the permit).
        if let Ok(sent) = send_update(hub, user, &DeviceId::new(id), &raw).await {
            command::finish_detached(hub, sent);
        }
    }
    Ok(())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ThingQuery {
    /// Language of push texts (accepted, not used).
    #[allow(dead_code)]
    pub lang: Option<String>,
    /// One of the caller's families; default the current one.
    pub familyid: Option<String>,
    /// How many things (default 30; 0 = all).
    pub num: Option<i64>,
    /// List things with an index greater than this one (exclusive: page on with the last index
    /// seen, as the official SDK does; default: from the first).
    pub begin_index: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThingListData {
    /// `{itemType, itemData, index}` items by index: itemType 1 own device, 2 shared device, 3 group.
    #[schema(value_type = Vec<Object>)]
    pub thing_list: Vec<Value>,
    /// Things in the family (devices and groups).
    pub total: i64,
}

/// A family's things (devices and groups) by index.
#[utoipa::path(get, path = "/v2/device/thing", tag = "device", security(("bearer" = [])), params(ThingQuery),
    responses((status = 200, body = Envelope<ThingListData>,
        description = "Paging: `beginIndex` is exclusive; the next page starts after the last `index` seen. \
            errors: 400 bad num/beginIndex (num < 0), 405 familyid not one of the caller's families")))]
pub async fn get_things(State(hub): State<Arc<Hub>>, caller: Caller, Query(q): Query<ThingQuery>) -> Result<Json<Value>, ApiError> {
    let num = q.num.unwrap_or(30);
    if num < 0 {
        return Err(ApiError::bad_request("num must be 0 or more"));
    }
    let (thing_list, total) = thing_list(&hub, &caller.user, q.familyid.as_deref(), num, q.begin_index.unwrap_or(i64::MIN)).await?;
    Ok(ok_data(ThingListData { thing_list, total }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThingRefItem {
    /// 1 or 2: a device id; 3 (or 4): a group id.
    pub item_type: i64,
    pub id: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThingsRequest {
    /// 1 to 10 things.
    pub thing_list: Vec<ThingRefItem>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThingsData {
    #[schema(value_type = Vec<Object>)]
    pub thing_list: Vec<Value>,
}

/// The named things the caller keeps, in the order asked; unknown ids, other users' ids and ids
/// of the wrong kind are left out of the answer.
#[utoipa::path(post, path = "/v2/device/thing", tag = "device", security(("bearer" = [])), request_body = ThingsRequest,
    responses((status = 200, body = Envelope<ThingsData>, description = "errors: 400 not 1 to 10 items or itemType not 1-4")))]
pub async fn post_things(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<ThingsRequest>) -> Result<Json<Value>, ApiError> {
    if req.thing_list.is_empty() || req.thing_list.len() > MAX_LIST {
        return Err(ApiError::bad_request("thingList must hold 1 to 10 items"));
    }
    let mut asked: Vec<(bool, String)> = Vec::new();
    for t in &req.thing_list {
        let group = match t.item_type {
            1 | 2 => false,
            3 | 4 => true,
            _ => return Err(ApiError::bad_request("itemType must be 1, 2, 3 or 4")),
        };
        if !asked.contains(&(group, t.id.clone())) {
            asked.push((group, t.id.clone()));
        }
    }
    let ids: Vec<String> = asked.iter().map(|(_, id)| id.clone()).collect();
    let rows = hub.store.placements_of(&caller.user, &ids).await?;
    let rows: Vec<Placement> = asked
        .iter()
        .filter_map(|(group, id)| rows.iter().find(|p| &p.thingid == id && (p.kind == ThingKind::Group) == *group).cloned())
        .collect();
    Ok(ok_data(ThingsData { thing_list: render(&hub, &caller.user, rows).await? }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// 1 device, 2 group.
    #[serde(rename = "type")]
    pub kind: i64,
    /// Device id or group id.
    pub id: String,
    /// Keys to answer, separated by `|` (default: all).
    pub params: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct StatusData {
    #[schema(value_type = Object)]
    pub params: Value,
}

/// A device's state (live when it is online, else as last stored) or a group's state.
#[utoipa::path(get, path = "/v2/device/thing/status", tag = "device", security(("bearer" = [])), params(StatusQuery),
    responses((status = 200, body = Envelope<StatusData>,
        description = "errors: 400 type not 1 or 2, 405 unknown device or group, or not the caller's")))]
pub async fn get_status(State(hub): State<Arc<Hub>>, caller: Caller, Query(q): Query<StatusQuery>) -> Result<Json<Value>, ApiError> {
    let params = match q.kind {
        1 => {
            if hub.store.device_role(&caller.user, &q.id).await?.is_none() {
                return Err(ApiError::new(405, "device not found"));
            }
            let record = hub.store.device_record(&q.id).await?.ok_or_else(|| ApiError::new(405, "device not found"))?;
            live_params(&hub, &record).1
        }
        2 => {
            let groups = hub.store.viewer_groups(&caller.user, std::slice::from_ref(&q.id)).await?;
            let group = groups.get(&q.id).ok_or_else(|| ApiError::new(405, "group not found"))?;
            object(&group.params)
        }
        _ => return Err(ApiError::bad_request("type must be 1 or 2")),
    };
    let keys: Vec<&str> = q.params.as_deref().unwrap_or("").split('|').map(str::trim).filter(|k| !k.is_empty()).collect();
    let params = match params {
        Value::Object(m) if !keys.is_empty() => Value::Object(m.into_iter().filter(|(k, _)| keys.contains(&k.as_str())).collect()),
        other => other,
    };
    Ok(ok_data(StatusData { params }))
}

#[derive(Deserialize, ToSchema)]
pub struct StatusChange {
    /// 1 device, 2 group.
    #[serde(rename = "type")]
    pub kind: i64,
    /// Device id or group id.
    pub id: String,
    /// The params to send, a non-empty object.
    #[schema(value_type = Object)]
    pub params: Value,
    /// Seconds to keep the update for the device if it is offline (0 or absent: refuse at once as
    /// offline); at most `--offline-ttl-max-secs`. A device only (`type` 1), and not in
    /// batch-status.
    #[serde(default)]
    pub ttl: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct QueuedData {
    /// Always true: the device was offline and the update is kept for it.
    pub queued: bool,
}

/// Sends `params` to a device (and waits for its ack) or to every online device of a group
/// (without waiting). An update the device acks with error 0 becomes its state (a later report wins).
/// With `ttl`, an update for a device that is offline is kept for it (answered `{"queued":true}`)
/// and delivered when it registers.
#[utoipa::path(post, path = "/v2/device/thing/status", tag = "device", security(("bearer" = [])), request_body = StatusChange,
    responses((status = 200, body = Envelope<Empty>, description = "With `ttl` and the device offline: `data` is `{\"queued\":true}`. \
        errors: 400 bad type, params or ttl (ttl with a group), 405 unknown device or group \
        or not the caller's, 406 a sharee changing timers without the permission, 4002 device offline (without ttl), busy, \
        its offline queue full or answering with an error (the device's code in msg), 504 no ack within the ack timeout")))]
pub async fn post_status(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<StatusChange>) -> Result<Json<Value>, ApiError> {
    let ttl = match (req.ttl, req.kind) {
        (None, _) => None,
        (Some(_), 2) => return Err(ApiError::bad_request("ttl applies to a device (type 1)")),
        (Some(secs), _) => hub.offline.ttl(secs).map_err(|e| ApiError::bad_request(e.to_string()))?,
    };
    match req.kind {
        1 => {
            let raw = params_of(&req.params)?;
            if hub.store.device_role(&caller.user, &req.id).await?.is_none() {
                return Err(ApiError::new(405, "device not found"));
            }
            let deviceid = DeviceId::new(req.id.as_str());
            let sequence = command::next_sequence();
            let cmd = Command { kind: CommandKind::Update, deviceid: &deviceid, sequence: &sequence, params: &raw };
            let sent = match command::send_or_keep(&hub, &caller.user, cmd, None, ttl).await {
                Ok(Routed::Sent(sent)) => sent,
                Ok(Routed::Kept(_)) => return Ok(ok_data(QueuedData { queued: true })),
                Err(SendError::Route(RouteError::Offline)) => return Err(ApiError::new(CONTROL_FAILED, "device is offline")),
                Err(SendError::Route(RouteError::Busy)) => return Err(ApiError::new(CONTROL_FAILED, "device is busy")),
                Err(SendError::Route(RouteError::Denied) | SendError::Queue(QueueError::Denied)) => {
                    return Err(ApiError::new(406, "no permission to change these params"));
                }
                Err(SendError::Queue(QueueError::Full)) => {
                    return Err(ApiError::new(CONTROL_FAILED, "the device's queue of offline commands is full"));
                }
                Err(SendError::Queue(QueueError::Store(e))) => return Err(e.into()),
            };
            let deadline = Instant::now() + hub.config.ack_timeout;
            match command::finish(&hub, sent, deadline).await {
                Outcome::Acked(ack) if ack.error == 0 => Ok(ok_data(Empty {})),
                Outcome::Acked(ack) => Err(ApiError::new(CONTROL_FAILED, format!("device answered error {}", ack.error))),
                Outcome::TimedOut => Err(ApiError::new(NO_ACK, "device did not answer in time")),
                Outcome::Gone => Err(ApiError::new(CONTROL_FAILED, "device went offline")),
            }
        }
        2 => {
            update_group(&hub, &caller.user, &req.id, &req.params).await?;
            Ok(ok_data(Empty {}))
        }
        _ => Err(ApiError::bad_request("type must be 1 or 2")),
    }
}

#[derive(Deserialize, ToSchema)]
pub struct BatchStatus {
    /// 1 to 10 things, each id once.
    #[serde(rename = "thingList")]
    pub thing_list: Vec<StatusChange>,
    /// How long to wait for the devices' acks, 0 to 8000 ms (default 0: answer at once).
    #[serde(default)]
    pub timeout: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchItem {
    #[serde(rename = "type")]
    pub kind: i64,
    pub id: String,
    /// 0 done (always for groups, and for every item when timeout is 0), 30022 device offline,
    /// 405 unknown device or not the caller's, 406 a sharee changing timers without the
    /// permission, 504 no ack in time, else the device's own error code.
    pub error: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchData {
    pub resp_list: Vec<BatchItem>,
}

/// Sends params to several devices and groups at once; waits up to `timeout` ms for the devices'
/// acks and answers each thing's outcome.
#[utoipa::path(post, path = "/v2/device/thing/batch-status", tag = "device", security(("bearer" = [])), request_body = BatchStatus,
    responses((status = 200, body = Envelope<BatchData>, description = "errors: 400 not 1 to 10 things, an id twice, type not 1 or 2, \
        params not a non-empty object, timeout outside 0..8000; per item see respList.error")))]
pub async fn batch_status(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<BatchStatus>) -> Result<Json<Value>, ApiError> {
    let list = req.thing_list;
    if list.is_empty() || list.len() > MAX_LIST {
        return Err(ApiError::bad_request("thingList must hold 1 to 10 items"));
    }
    let timeout = req.timeout.unwrap_or(0);
    if !(0..=MAX_BATCH_TIMEOUT_MS).contains(&timeout) {
        return Err(ApiError::bad_request("timeout must be 0 to 8000"));
    }
    if list.iter().any(|t| t.ttl.is_some()) {
        return Err(ApiError::bad_request("ttl is for POST /v2/device/thing/status, not batch-status"));
    }
    let mut raws = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        if t.kind != 1 && t.kind != 2 {
            return Err(ApiError::bad_request("type must be 1 or 2"));
        }
        if list[..i].iter().any(|o| o.id == t.id) {
            return Err(ApiError::bad_request(format!("id {} is listed twice", t.id)));
        }
        raws.push(params_of(&t.params)?);
    }
    let deadline = Instant::now() + std::time::Duration::from_millis(timeout as u64);
    let mut results: Vec<BatchItem> = Vec::with_capacity(list.len());
    let mut waits = Vec::new();
    for (t, raw) in list.iter().zip(raws) {
        let mut error = 0;
        if t.kind == 2 {
            // A group's answer is always 0; an unknown group is simply skipped.
            if let Err(e) = update_group(&hub, &caller.user, &t.id, &t.params).await
                && e.code == 500
            {
                return Err(e);
            }
        } else {
            match hub.store.device_role(&caller.user, &t.id).await? {
                None => error = 405,
                Some(_) => match send_update(&hub, &caller.user, &DeviceId::new(t.id.as_str()), &raw).await {
                    Err(RouteError::Offline) => error = OFFLINE,
                    Err(RouteError::Busy) => error = NO_ACK,
                    Err(RouteError::Denied) => error = 406,
                    Ok(sent) if timeout == 0 => command::finish_detached(&hub, sent),
                    Ok(sent) => waits.push((results.len(), sent)),
                },
            }
        }
        results.push(BatchItem { kind: t.kind, id: t.id.clone(), error });
    }
    let outcomes = futures_util::future::join_all(waits.into_iter().map(|(i, sent)| {
        let hub = &hub;
        async move { (i, command::finish(hub, sent, deadline).await) }
    }))
    .await;
    for (i, outcome) in outcomes {
        results[i].error = match outcome {
            Outcome::Acked(ack) => ack.error,
            Outcome::TimedOut => NO_ACK,
            Outcome::Gone => OFFLINE,
        };
    }
    Ok(ok_data(BatchData { resp_list: results }))
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(get_things, post_things))
        .routes(utoipa_axum::routes!(get_status, post_status))
        .routes(utoipa_axum::routes!(batch_status))
}
