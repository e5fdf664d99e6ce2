//! `POST /v2/homepage`: user, families, things and messages in one call. Each part is answered
//! only when its `get…` field is present (as an object; `null` counts as absent), and each is
//! the same data its own route gives.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::api::{Body, Envelope, ok_data};
use super::auth::Caller;
use super::error::ApiError;
use super::family::{FamilyList, family_list};
use super::message::{MessageList, message_list};
use crate::hub::Hub;

/// `getThing`'s defaults (the seed's).
const DEFAULT_THING_NUM: i64 = 30;
const DEFAULT_BEGIN_INDEX: i64 = i64::MIN;

#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct GetThing {
    /// How many things; default 30, 0 = all.
    pub num: Option<i64>,
    /// Things with an index greater than this one (exclusive, as on `GET /v2/device/thing`);
    /// default: from the first.
    pub begin_index: Option<i64>,
}

#[derive(Deserialize, ToSchema, Default)]
pub struct GetMessage {
    /// Only messages older than this (milliseconds); default now.
    pub from: Option<i64>,
    /// 1 to 30, default 30.
    pub num: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Homepage {
    /// Language of push texts, `cn` or `en` (accepted, not used here).
    #[allow(dead_code)]
    pub lang: Option<String>,
    /// The phone's model, os, imei, romVersion, appVersion (accepted, not used here).
    #[allow(dead_code)]
    #[schema(value_type = Option<Object>)]
    pub client_info: Option<Map<String, Value>>,
    /// Present: answer `userInfo`.
    #[schema(value_type = Option<Object>)]
    pub get_user: Option<Map<String, Value>>,
    /// Present: answer `familyInfo` (every family).
    #[schema(value_type = Option<Object>)]
    pub get_family: Option<Map<String, Value>>,
    /// Present: answer `thingInfo` (things of the current family).
    pub get_thing: Option<GetThing>,
    /// Present: answer `sceneInfo` (scenes are not open: always an empty list).
    #[schema(value_type = Option<Object>)]
    pub get_scene: Option<Map<String, Value>>,
    /// Present: answer `messageInfo` (messages of the current family).
    pub get_message: Option<GetMessage>,
}

/// `thingInfo`: things of the current family, as `GET /v2/device/thing` lists them.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThingInfo {
    #[schema(value_type = Vec<Object>)]
    pub thing_list: Vec<Value>,
    /// How many things the family has in all.
    pub total: i64,
}

/// `sceneInfo`: always empty (scenes are not open in the seed).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SceneInfo {
    #[schema(value_type = Vec<Object>)]
    pub scene_list: Vec<Value>,
}

/// The parts asked for; the others are left out.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HomepageData {
    /// The user object, as `GET /v2/user/profile` gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub user_info: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_info: Option<FamilyList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thing_info: Option<ThingInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_info: Option<MessageList>,
}

/// What an app shows on start, in one call.
#[utoipa::path(post, path = "/v2/homepage", tag = "homepage", security(("bearer" = [])), request_body = Homepage,
    responses((status = 200, body = Envelope<HomepageData>, description = "Only the parts asked for. Errors: 400 a get… field \
        that is not an object, getThing.num negative, getMessage.num not 1 to 30")))]
pub async fn homepage(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<Homepage>) -> Result<Json<Value>, ApiError> {
    // Check every input before reading anything.
    if let Some(t) = &req.get_thing
        && t.num.is_some_and(|n| n < 0)
    {
        return Err(ApiError::bad_request("getThing.num must be 0 (all) or more"));
    }
    if let Some(m) = &req.get_message
        && m.num.is_some_and(|n| !(1..=super::message::MAX_MESSAGES).contains(&n))
    {
        return Err(ApiError::bad_request(format!("getMessage.num must be 1 to {}", super::message::MAX_MESSAGES)));
    }
    let user = &caller.user;
    let mut data = HomepageData { user_info: None, family_info: None, thing_info: None, scene_info: None, message_info: None };
    if req.get_user.is_some() {
        let u = hub.store.user(user).await?.ok_or_else(|| ApiError::new(401, "invalid access token"))?;
        data.user_info = Some(super::user::user_info(&hub, &u).await?);
    }
    if req.get_family.is_some() {
        data.family_info = Some(family_list(&hub, user).await?);
    }
    if let Some(t) = &req.get_thing {
        let num = t.num.unwrap_or(DEFAULT_THING_NUM);
        let begin = t.begin_index.unwrap_or(DEFAULT_BEGIN_INDEX);
        let (thing_list, total) = super::thing::thing_list(&hub, user, None, num, begin).await?;
        data.thing_info = Some(ThingInfo { thing_list, total });
    }
    if req.get_scene.is_some() {
        data.scene_info = Some(SceneInfo { scene_list: Vec::new() });
    }
    if let Some(m) = &req.get_message {
        data.message_info = Some(message_list(&hub, user, None, m.from, m.num).await?);
    }
    Ok(ok_data(data))
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new().routes(utoipa_axum::routes!(homepage))
}
