//! Seed 003's sharing by invite code: the manager shares a device with an account (`app`), with
//! whoever presents the code first (`qrcode`) or with an email address (`email`, the code sent
//! through the verification-code sender); the invitee accepts or denies, the manager may cancel
//! while it is pending, and either party removes it from their list.
//!
//! Accepting writes the same share seed 004's `/v2/device/share` writes (see `store/invite.rs`),
//! then reloads the online device's audience on this node
//! ([`crate::http::device::refresh_audience`]) so the sharee's next command works at once.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use super::{Account, ErrorBody, Fault, JsonBody, PathParams, XlinkError, iso_millis};
use crate::hub::Hub;
use crate::ids::UserKey;
use crate::store::{Answer, Invite, InviteMode, Invitee};
use crate::verify::InviteMail;

/// Shortest and longest life of an invite, in seconds.
pub const MIN_EXPIRE_SECS: i64 = 60;
pub const MAX_EXPIRE_SECS: i64 = 30 * 86_400;
/// Longest reason for a denial, in characters.
pub const MAX_REASON_CHARS: usize = 200;

#[derive(Deserialize, ToSchema)]
pub struct ShareDevice {
    pub device_id: String,
    /// `app`: the invitee's apikey, email or phone (an existing account); `email`: an address;
    /// `qrcode`: not used.
    pub user: Option<String>,
    /// Seconds the invite may be answered in: 60 to 2,592,000 (30 days).
    pub expire: i64,
    /// `app`, `qrcode` or `email`.
    pub mode: String,
}

#[derive(Serialize, ToSchema)]
pub struct InviteCode {
    /// 128 random bits, URL-safe.
    pub invite_code: String,
}

/// Finds the account `user` names: an apikey, else an email address, else a phone number.
async fn account(hub: &Hub, user: &str) -> Result<Option<UserKey>, XlinkError> {
    if let Some(u) = hub.store.user(&UserKey::new(user)).await? {
        return Ok(Some(u.apikey));
    }
    let found = if user.contains('@') { hub.store.user_by_email(user).await? } else { hub.store.user_by_phone(user).await? };
    Ok(found.map(|u| u.apikey))
}

fn valid_email(address: &str) -> bool {
    address.len() <= 254
        && !address.chars().any(char::is_whitespace)
        && matches!(address.split_once('@'), Some((local, domain)) if !local.is_empty() && domain.contains('.') && !domain.contains('@'))
}

/// The manager invites someone to share a device.
#[utoipa::path(post, path = "/v2/share/device", tag = "xlink", security(("access_token" = []), ("bearer" = [])),
    request_body = ShareDevice,
    responses(
        (status = 200, body = InviteCode, description = "For `email`, the code is also sent to the address"),
        (status = 400, body = ErrorBody, description = "4001 bad mode, expire or user; 4004 sharing with yourself"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 not the device's manager"),
        (status = 404, body = ErrorBody, description = "4042 unknown device; 4044 no such account (`app`)"),
        (status = 409, body = ErrorBody, description = "4092 the user already shares the device; 4095 20 invites pending")))]
pub async fn share(
    State(hub): State<Arc<Hub>>,
    caller: Account,
    JsonBody(req): JsonBody<ShareDevice>,
) -> Result<Json<InviteCode>, XlinkError> {
    if req.device_id.is_empty() {
        return Err(XlinkError::invalid("device_id is required"));
    }
    let mode = InviteMode::parse(&req.mode).ok_or_else(|| XlinkError::invalid("mode must be app, qrcode or email"))?;
    if !(MIN_EXPIRE_SECS..=MAX_EXPIRE_SECS).contains(&req.expire) {
        return Err(XlinkError::invalid(format!("expire must be {MIN_EXPIRE_SECS} to {MAX_EXPIRE_SECS} seconds")));
    }
    let user = req.user.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let invitee = match (mode, user) {
        (InviteMode::Qrcode, _) => Invitee::Qrcode,
        (_, None) => return Err(XlinkError::invalid("user is required for app and email sharing")),
        (InviteMode::App, Some(u)) => {
            Invitee::User(account(&hub, u).await?.ok_or_else(|| XlinkError::new(Fault::UnknownUser, "no account to share with"))?)
        }
        (InviteMode::Email, Some(u)) => {
            if !valid_email(u) {
                return Err(XlinkError::invalid("user must be an email address"));
            }
            Invitee::Email(u.to_ascii_lowercase())
        }
    };
    let from = &caller.0.user;
    let invite = hub.store.create_invite(from, &req.device_id, &invitee, req.expire * 1000).await?;
    tracing::info!(user = %from, device = %invite.deviceid, mode = mode.as_str(), "share invite created");
    if let Invitee::Email(address) = &invitee {
        let (sender, to, sent_invite) = (hub.codes.clone(), address.clone(), invite.clone());
        let sent = tokio::task::spawn_blocking(move || {
            let mail = InviteMail {
                code: &sent_invite.code,
                from: &sent_invite.from_user,
                deviceid: &sent_invite.deviceid,
                expires_at: sent_invite.expires_at,
            };
            sender.send_invite(&to, &mail)
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            tracing::error!(result = ?sent.map(|r| r.map_err(|e| e.to_string())), "cannot deliver a share invite");
            // An invite nobody can learn the code of must not stay pending.
            hub.store.cancel_invite(from, &invite.code).await.ok();
            return Err(XlinkError::new(Fault::Internal, "cannot deliver the invite"));
        }
    }
    Ok(Json(InviteCode { invite_code: invite.code }))
}

#[derive(Deserialize, ToSchema)]
pub struct InviteRef {
    pub invite_code: String,
}

#[derive(Deserialize, ToSchema)]
pub struct Deny {
    pub invite_code: String,
    /// Up to 200 characters.
    pub reason: Option<String>,
}

fn code_of(code: &str) -> Result<&str, XlinkError> {
    if code.is_empty() {
        return Err(XlinkError::invalid("invite_code is required"));
    }
    Ok(code)
}

/// The manager cancels a pending invite.
#[utoipa::path(post, path = "/v2/share/device/cancel", tag = "xlink", security(("access_token" = []), ("bearer" = [])),
    request_body = InviteRef,
    responses(
        (status = 200, description = "Empty body"),
        (status = 400, body = ErrorBody, description = "4001 missing invite_code"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 not the manager who sent it"),
        (status = 404, body = ErrorBody, description = "4043 unknown invite"),
        (status = 409, body = ErrorBody, description = "4093 expired; 4094 already answered or cancelled")))]
pub async fn cancel(State(hub): State<Arc<Hub>>, caller: Account, JsonBody(req): JsonBody<InviteRef>) -> Result<StatusCode, XlinkError> {
    hub.store.cancel_invite(&caller.0.user, code_of(&req.invite_code)?).await?;
    Ok(StatusCode::OK)
}

/// The invitee accepts: the device is shared with them (default permit, `shareNotify_v2`, thing
/// item of type 2), and their sessions hear and may command it at once.
#[utoipa::path(post, path = "/v2/share/device/accept", tag = "xlink", security(("access_token" = []), ("bearer" = [])),
    request_body = InviteRef,
    responses(
        (status = 200, description = "Empty body"),
        (status = 400, body = ErrorBody, description = "4001 missing invite_code"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 the invite names someone else, or the manager answering their own"),
        (status = 404, body = ErrorBody, description = "4043 unknown invite"),
        (status = 409, body = ErrorBody, description = "4092 the caller shares the device already; 4093 expired; 4094 already \
            answered or cancelled (also: another user took a `qrcode` invite first)")))]
pub async fn accept(State(hub): State<Arc<Hub>>, caller: Account, JsonBody(req): JsonBody<InviteRef>) -> Result<StatusCode, XlinkError> {
    let user = &caller.0.user;
    let invite = hub.store.answer_invite(user, code_of(&req.invite_code)?, Answer::Accept).await?;
    tracing::info!(user = %user, device = %invite.deviceid, from = %invite.from, "share invite accepted");
    super::super::device::refresh_audience(&hub, &invite.deviceid).await?;
    Ok(StatusCode::OK)
}

/// The invitee declines.
#[utoipa::path(post, path = "/v2/share/device/deny", tag = "xlink", security(("access_token" = []), ("bearer" = [])),
    request_body = Deny,
    responses(
        (status = 200, description = "Empty body"),
        (status = 400, body = ErrorBody, description = "4001 missing invite_code, reason too long"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 the invite names someone else, or the manager answering their own"),
        (status = 404, body = ErrorBody, description = "4043 unknown invite"),
        (status = 409, body = ErrorBody, description = "4093 expired; 4094 already answered or cancelled")))]
pub async fn deny(State(hub): State<Arc<Hub>>, caller: Account, JsonBody(req): JsonBody<Deny>) -> Result<StatusCode, XlinkError> {
    let reason = req.reason.unwrap_or_default();
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(XlinkError::invalid(format!("reason may hold at most {MAX_REASON_CHARS} characters")));
    }
    hub.store.answer_invite(&caller.0.user, code_of(&req.invite_code)?, Answer::Deny { reason: &reason }).await?;
    Ok(StatusCode::OK)
}

#[derive(Serialize, ToSchema)]
pub struct InviteItem {
    pub invite_code: String,
    /// The manager's apikey.
    pub from_id: String,
    /// The manager's account: email, else phone, else apikey.
    pub from_user: String,
    /// The invitee's apikey; "" for a `qrcode` invite nobody took yet (or an `email` one whose
    /// address has no account).
    pub to_id: String,
    /// The invitee's account; the address for `email`.
    pub to_user: String,
    pub device_id: String,
    /// `pending`, `accept`, `deny`, `cancel` or `overtime` (pending past its expiry).
    pub state: String,
    /// `2015-10-09T08:15:40.843Z`.
    pub create_date: String,
    pub expire_date: String,
    /// `app`, `qrcode` or `email`.
    pub mode: String,
}

impl From<Invite> for InviteItem {
    fn from(i: Invite) -> Self {
        InviteItem {
            invite_code: i.code,
            from_id: i.from.as_str().to_owned(),
            from_user: i.from_user,
            to_id: i.to.map(|k| k.as_str().to_owned()).unwrap_or_default(),
            to_user: i.to_user,
            device_id: i.deviceid,
            state: i.state.as_str().to_owned(),
            create_date: iso_millis(i.created_at),
            expire_date: iso_millis(i.expires_at),
            mode: i.mode.as_str().to_owned(),
        }
    }
}

/// Every invite the caller sent or received (and has not removed), newest first: a bare array.
#[utoipa::path(get, path = "/v2/share/device/list", tag = "xlink", security(("access_token" = []), ("bearer" = [])),
    responses(
        (status = 200, body = Vec<InviteItem>),
        (status = 401, body = ErrorBody, description = "4011, 4012")))]
pub async fn list(State(hub): State<Arc<Hub>>, caller: Account) -> Result<Json<Vec<InviteItem>>, XlinkError> {
    Ok(Json(hub.store.invites_of(&caller.0.user).await?.into_iter().map(InviteItem::from).collect()))
}

/// Either party removes an invite from their own list; a pending one is cancelled.
#[utoipa::path(delete, path = "/v2/share/device/delete/{invite_code}", tag = "xlink", security(("access_token" = []), ("bearer" = [])),
    params(("invite_code" = String, Path)),
    responses(
        (status = 200, description = "Empty body"),
        (status = 401, body = ErrorBody, description = "4011, 4012"),
        (status = 403, body = ErrorBody, description = "4031 neither the manager nor the invitee"),
        (status = 404, body = ErrorBody, description = "4043 unknown invite, or removed from the caller's list already")))]
pub async fn delete(State(hub): State<Arc<Hub>>, caller: Account, PathParams(code): PathParams<String>) -> Result<StatusCode, XlinkError> {
    hub.store.delete_invite(&caller.0.user, &code).await?;
    Ok(StatusCode::OK)
}

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(share))
        .routes(utoipa_axum::routes!(cancel))
        .routes(utoipa_axum::routes!(accept))
        .routes(utoipa_axum::routes!(deny))
        .routes(utoipa_axum::routes!(list))
        .routes(utoipa_axum::routes!(delete))
}
