//! `GET /v2/message/read`: the message centre. Messages are filed by other parts of the hub
//! (sharing, operations, alarms) under a family of the recipient, or under none; a family's list
//! shows its own messages and those filed under no family, newest first.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::api::{Envelope, Query, ok_data};
use super::auth::Caller;
use super::error::ApiError;
use crate::clock::now_millis;
use crate::hub::Hub;
use crate::ids::UserKey;
use crate::store::Message;

/// Most messages one call returns (the seed's `1 <= num <= 30`), also the default.
pub const MAX_MESSAGES: i64 = 30;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageItem {
    pub msgid: String,
    /// `shareNotify_v2`, `cancelShareNotify_v2`, `opsNotify_v2`, `alarmNotify_v2`, …
    pub msg_type: String,
    /// The message; its shape depends on `msgType`.
    #[schema(value_type = Object)]
    pub message: Value,
    /// When it was filed, milliseconds since the epoch.
    pub date: i64,
}

impl From<Message> for MessageItem {
    fn from(m: Message) -> Self {
        MessageItem { msgid: m.msgid, msg_type: m.msg_type, message: m.message, date: m.date }
    }
}

/// `GET /v2/message/read`'s data (also the homepage's `messageInfo`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageList {
    /// Newest first.
    pub message_list: Vec<MessageItem>,
}

/// Up to `num` (default 30, 1 to 30 else 400) of the caller's messages of `familyid` (default:
/// the current family; not the caller's → 405) and of no family, filed before `from`
/// (milliseconds; default now), newest first.
pub async fn message_list(
    hub: &Hub,
    user: &UserKey,
    familyid: Option<&str>,
    from: Option<i64>,
    num: Option<i64>,
) -> Result<MessageList, ApiError> {
    let num = num.unwrap_or(MAX_MESSAGES);
    if !(1..=MAX_MESSAGES).contains(&num) {
        return Err(ApiError::bad_request(format!("num must be 1 to {MAX_MESSAGES}")));
    }
    let familyid = hub.store.resolve_family(user, familyid).await?;
    let before = from.unwrap_or_else(|| now_millis() + 1);
    let messages = hub.store.messages(user, &familyid, before, num).await?;
    Ok(MessageList { message_list: messages.into_iter().map(MessageItem::from).collect() })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadMessages {
    /// Family id; absent or empty: the current family.
    pub familyid: Option<String>,
    /// Only messages older than this (milliseconds since the epoch); default now.
    pub from: Option<i64>,
    /// 1 to 30, default 30.
    pub num: Option<i64>,
}

/// The caller's message centre for one family, newest first; page with `from` = the last
/// message's `date`.
#[utoipa::path(get, path = "/v2/message/read", tag = "message", security(("bearer" = [])), params(ReadMessages),
    responses((status = 200, body = Envelope<MessageList>,
        description = "Messages of the family and those filed under no family. Errors: 400 num not 1 to 30 or not a number, 405 unknown family")))]
pub async fn read_messages(State(hub): State<Arc<Hub>>, caller: Caller, Query(q): Query<ReadMessages>) -> Result<Json<Value>, ApiError> {
    Ok(ok_data(message_list(&hub, &caller.user, q.familyid.as_deref(), q.from, q.num).await?))
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new().routes(utoipa_axum::routes!(read_messages))
}
