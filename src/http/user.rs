//! The seed's user section: `/v2/utils/get-region`, `/v2/user/login`, `refresh`, `logout`,
//! `profile` (read and update) and `change-pwd` here; the routes behind a verification code
//! (`verification-code`, `register`, `sms-login`, `reset-pwd`, `close-account`) in [`code`].
//!
//! Sign-authenticated routes (the seed's "user category": `X-CK-Appid` required) take a
//! [`Signed`], which checks the signature over the raw body (or query) before parsing it; the
//! others take a [`Caller`].

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use super::api::{Body, Empty, Envelope, Signed};
use super::auth::{Caller, Credential, bearer, credential, signed};
use super::error::{ApiError, ok};
use crate::auth::{password_ok, token_tag};
use crate::hub::Hub;
use crate::ids::{AppId, UserKey};
use crate::mailbox::CloseReason;
use crate::store::{Profile, ProfileChange, TokenCheck, User};

mod code;
mod region;

pub use region::region_of;

pub fn routes() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::new()
        .routes(utoipa_axum::routes!(get_region))
        .routes(utoipa_axum::routes!(login))
        .routes(utoipa_axum::routes!(code::register))
        .routes(utoipa_axum::routes!(code::sms_login))
        .routes(utoipa_axum::routes!(code::verification_code))
        .routes(utoipa_axum::routes!(code::reset_password))
        .routes(utoipa_axum::routes!(change_password))
        .routes(utoipa_axum::routes!(profile, update_profile))
        .routes(utoipa_axum::routes!(refresh))
        .routes(utoipa_axum::routes!(logout))
        .routes(utoipa_axum::routes!(code::close_account))
}

/// Longest nickname accepted.
pub const MAX_NICKNAME_CHARS: usize = 64;

/// The seed's user object (the fields this hub has; WeChat and ipCountry are left out).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserObject {
    /// Phone country code with its `+`, e.g. `+86`.
    pub country_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's id.
    pub apikey: String,
    pub nickname: String,
    /// 10 = Free (the only level here).
    pub account_level: i64,
    /// 0: the level does not expire.
    pub level_expired_at: i64,
    pub deny_recharge: bool,
    pub account_consult: bool,
    pub accept_email_ad: bool,
    /// Language of notifications: `cn` or `en`.
    pub lang: String,
}

impl UserObject {
    pub fn new(user: &User, profile: Option<&Profile>) -> UserObject {
        UserObject {
            country_code: user.country_code.clone(),
            phone_number: user.phone.clone(),
            email: user.email.clone(),
            apikey: user.apikey.as_str().to_owned(),
            nickname: user.nickname.clone(),
            account_level: 10,
            level_expired_at: 0,
            deny_recharge: false,
            account_consult: profile.is_some_and(|p| p.account_consult),
            accept_email_ad: profile.is_some_and(|p| p.accept_email_ad),
            lang: profile.map_or_else(|| "en".to_owned(), |p| p.lang.clone()),
        }
    }
}

/// The seed's user object with everything the store has on the user.
pub async fn user_info(hub: &Hub, user: &User) -> Result<Value, ApiError> {
    let profile = hub.store.profile(&user.apikey).await?;
    Ok(serde_json::to_value(UserObject::new(user, profile.as_ref())).unwrap_or_else(|_| json!({})))
}

/// What login, registration, SMS login and password reset answer.
#[derive(Serialize, ToSchema)]
pub struct Session {
    pub user: UserObject,
    /// Access token.
    pub at: String,
    /// Refresh token.
    pub rt: String,
    /// The user's region: cn, as, us or eu.
    pub region: String,
}

/// Issues a token pair for `apikey` through `appid` and answers the seed's login data.
async fn new_session(hub: &Hub, apikey: &UserKey, appid: &AppId) -> Result<Json<Value>, ApiError> {
    let user = hub.store.user(apikey).await?.ok_or_else(|| ApiError::new(10003, "user does not exist"))?;
    let profile = hub.store.profile(apikey).await?;
    let pair = hub.store.issue_tokens(apikey, appid.as_str(), hub.config.access_token_ttl, hub.config.refresh_token_ttl).await?;
    let region = user.region.clone();
    Ok(super::api::ok_data(Session { user: UserObject::new(&user, profile.as_ref()), at: pair.at, rt: pair.rt, region }))
}

/// Parses a JSON body; wrong types and missing fields are 400.
fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid parameters: {e}")))
}

/// `10004` with the region the account lives in.
fn redirect(region: &str) -> ApiError {
    let mut e = ApiError::new(10004, "redirection");
    e.data = json!({ "region": region });
    e
}

/// A `countryCode`: `+` and 1–4 digits.
fn check_country_code(cc: &str) -> Result<(), ApiError> {
    match cc.strip_prefix('+') {
        Some(digits) if !digits.is_empty() && digits.len() <= 4 && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(ApiError::bad_request("countryCode must be + and 1-4 digits, e.g. +86")),
    }
}

/// An optional `lang`: empty means "not given"; else a short language tag (`cn`, `en`, …).
fn check_lang(lang: Option<&str>) -> Result<Option<&str>, ApiError> {
    match lang.filter(|l| !l.is_empty()) {
        None => Ok(None),
        Some(l) if l.len() <= 16 && l.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_') => Ok(Some(l)),
        Some(_) => Err(ApiError::bad_request("lang must be a language tag such as cn or en")),
    }
}

// --- region --------------------------------------------------------------------------------

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct RegionQuery {
    /// Phone country code without `+`, e.g. `86`.
    country_code: String,
}

#[derive(Serialize, ToSchema)]
pub struct RegionData {
    /// as, cn, us or eu.
    region: String,
}

/// Which region serves a phone country code (Sign over the raw query string).
#[utoipa::path(get, path = "/v2/utils/get-region", tag = "user", security(("sign" = [])), params(RegionQuery),
    responses((status = 200, body = Envelope<RegionData>, description = "errors: 400 missing, malformed or unknown countryCode")))]
pub async fn get_region(Signed(_appid, q): Signed<RegionQuery>) -> Result<Json<Value>, ApiError> {
    // A `+` sent raw in a query string decodes to a space; accept it either way.
    let code = q.country_code.trim();
    let code = code.strip_prefix('+').unwrap_or(code);
    let region = region_of(code).ok_or_else(|| ApiError::bad_request("unknown countryCode"))?;
    Ok(super::api::ok_data(RegionData { region: region.to_owned() }))
}

// --- login ---------------------------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Login {
    /// `+` and the phone country code, e.g. `+86`.
    #[serde(default)]
    country_code: Option<String>,
    /// Case-insensitive.
    #[serde(default)]
    email: Option<String>,
    /// Checked first; starts with the country code, e.g. `+8618023456789`.
    #[serde(default)]
    phone_number: Option<String>,
    password: String,
    /// Language of notifications (`cn` or `en`); remembered on the account.
    #[serde(default)]
    lang: Option<String>,
}

/// Log in with email or phone number and password.
#[utoipa::path(post, path = "/v2/user/login", tag = "user", security(("sign" = [])), request_body = Login,
    responses((status = 200, body = Envelope<Session>,
        description = "errors: 400 bad parameters, 10001 wrong password, 10003 no such user, 10004 the account lives in \
            another region (data.region says which), 429 (HTTP 429 with Retry-After) too many failed attempts for the \
            account")))]
pub async fn login(State(hub): State<Arc<Hub>>, Signed(appid, req): Signed<Login>) -> Result<Json<Value>, ApiError> {
    if let Some(cc) = req.country_code.as_deref().filter(|c| !c.is_empty()) {
        check_country_code(cc)?;
    }
    let lang = check_lang(req.lang.as_deref())?;
    let user = match (req.phone_number.as_deref().filter(|s| !s.is_empty()), req.email.as_deref().filter(|s| !s.is_empty())) {
        (Some(phone), _) => hub.store.user_by_phone(phone).await?,
        (None, Some(email)) => hub.store.user_by_email(email).await?,
        (None, None) => return Err(ApiError::bad_request("email or phoneNumber is required")),
    };
    let Some(user) = user else { return Err(ApiError::new(10003, "user does not exist")) };
    if user.region != hub.config.region {
        return Err(redirect(&user.region));
    }
    hub.lockout.attempt(user.apikey.as_str()).map_err(ApiError::locked)?;
    if !hub.hasher.verify(req.password, user.password_hash.clone()).await {
        tracing::info!(user = %user.apikey, "login with a wrong password");
        return Err(ApiError::new(10001, "wrong password"));
    }
    hub.lockout.succeeded(user.apikey.as_str());
    if let Some(lang) = lang {
        hub.store.set_lang(&user.apikey, lang).await?;
    }
    tracing::info!(user = %user.apikey, %appid, "login");
    new_session(&hub, &user.apikey, &appid).await
}

// --- tokens --------------------------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
pub struct Refresh {
    /// The refresh token.
    rt: String,
}

#[derive(Serialize, ToSchema)]
pub struct Tokens {
    at: String,
    rt: String,
}

/// Exchange a refresh token for a new pair (Sign, or the access token being replaced).
#[utoipa::path(post, path = "/v2/user/refresh", tag = "user", security(("sign" = []), ("bearer" = [])), request_body = Refresh,
    responses((status = 200, body = Envelope<Tokens>,
        description = "errors: 400 missing rt, 401 unknown or used refresh token (or an access token of another pair), \
            402 refresh token expired")))]
pub async fn refresh(
    State(hub): State<Arc<Hub>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    // Either a Sign, or the access token being replaced (expired is fine: that is the point),
    // which must belong to the same pair as the refresh token.
    let bound_at = match credential(&headers)? {
        Credential::Sign(_) => {
            signed(&hub, &method, &uri, &headers, &body).await?;
            None
        }
        Credential::Bearer(at) => {
            match hub.store.check_access(at).await? {
                TokenCheck::Unknown => return Err(ApiError::new(401, "invalid access token")),
                TokenCheck::Valid { appid, .. } if appid_mismatch(&headers, appid.as_str()) => {
                    return Err(ApiError::new(407, "appid does not match the access token"));
                }
                _ => {}
            }
            Some(at)
        }
    };
    let req: Refresh = parse_body(&body)?;
    match hub.store.refresh(&req.rt, bound_at, hub.config.access_token_ttl, hub.config.refresh_token_ttl).await? {
        (_, Some(pair)) => Ok(ok(json!({ "at": pair.at, "rt": pair.rt }))),
        (TokenCheck::Expired, None) => Err(ApiError::new(402, "refresh token expired")),
        _ => Err(ApiError::new(401, "invalid refresh token")),
    }
}

fn appid_mismatch(headers: &HeaderMap, appid: &str) -> bool {
    headers.get("x-ck-appid").and_then(|v| v.to_str().ok()).is_some_and(|h| !h.is_empty() && h != appid)
}

/// Revoke the caller's token pair and close the WebSocket sessions opened with it.
#[utoipa::path(delete, path = "/v2/user/logout", tag = "user", security(("bearer" = [])),
    responses((status = 200, body = Envelope<Empty>, description = "no errors beyond the common ones")))]
pub async fn logout(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let caller = bearer(&hub, &headers).await?;
    hub.store.revoke(&caller.token).await?;
    let closed = hub.router.close_sessions(&caller.user, token_tag(&caller.token), CloseReason::LoggedOut);
    tracing::info!(user = %caller.user, sessions_closed = closed, "logout");
    Ok(ok(json!({})))
}

// --- profile and password ------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct ProfileData {
    user: UserObject,
    /// The user's region.
    region: String,
}

/// The caller's user object.
#[utoipa::path(get, path = "/v2/user/profile", tag = "user", security(("bearer" = [])),
    responses((status = 200, body = Envelope<ProfileData>, description = "no errors beyond the common ones")))]
pub async fn profile(State(hub): State<Arc<Hub>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let user = hub.store.user(&caller.user).await?.ok_or_else(|| ApiError::new(401, "invalid access token"))?;
    let settings = hub.store.profile(&caller.user).await?;
    let region = user.region.clone();
    Ok(super::api::ok_data(ProfileData { user: UserObject::new(&user, settings.as_ref()), region }))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateProfile {
    /// New nickname (at most 64 characters); empty or null leaves it.
    #[serde(default)]
    nickname: Option<String>,
    /// Whether the user takes email newsletters; null leaves it.
    #[serde(default)]
    accept_email_ad: Option<bool>,
    /// Only `true` (the user has had the membership consultation); null leaves it.
    #[serde(default)]
    account_consult: Option<bool>,
}

/// Change nickname, newsletter consent or the consultation flag.
#[utoipa::path(post, path = "/v2/user/profile", tag = "user", security(("bearer" = [])), request_body = UpdateProfile,
    responses((status = 200, body = Envelope<Empty>,
        description = "errors: 400 wrong types, a nickname over 64 characters, accountConsult other than true")))]
pub async fn update_profile(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<UpdateProfile>) -> Result<Json<Value>, ApiError> {
    if req.account_consult == Some(false) {
        return Err(ApiError::bad_request("accountConsult may only be true"));
    }
    let nickname = req.nickname.as_deref().filter(|n| !n.is_empty());
    if nickname.is_some_and(|n| n.chars().count() > MAX_NICKNAME_CHARS) {
        return Err(ApiError::bad_request(format!("nickname is longer than {MAX_NICKNAME_CHARS} characters")));
    }
    let change = ProfileChange { nickname, accept_email_ad: req.accept_email_ad, account_consult: req.account_consult };
    hub.store.update_profile(&caller.user, change).await?;
    Ok(ok(json!({})))
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangePassword {
    old_password: String,
    /// At least 8 characters with at least two of digits, letters and symbols.
    new_password: String,
}

/// Change the password. The caller's token pair stays valid; every other token of the user is
/// revoked and the WebSocket sessions opened with them are closed.
#[utoipa::path(post, path = "/v2/user/change-pwd", tag = "user", security(("bearer" = [])), request_body = ChangePassword,
    responses((status = 200, body = Envelope<Empty>,
        description = "errors: 400 the new password breaks the rule (8+ characters, two of digits/letters/symbols), \
            10001 wrong old password, 429 (HTTP 429 with Retry-After) too many failed attempts for the account")))]
pub async fn change_password(
    State(hub): State<Arc<Hub>>,
    caller: Caller,
    Body(req): Body<ChangePassword>,
) -> Result<Json<Value>, ApiError> {
    if !password_ok(&req.new_password) {
        return Err(ApiError::bad_request("password needs 8+ characters with two of digits, letters and symbols"));
    }
    let user = hub.store.user(&caller.user).await?.ok_or_else(|| ApiError::new(401, "invalid access token"))?;
    hub.lockout.attempt(caller.user.as_str()).map_err(ApiError::locked)?;
    if !hub.hasher.verify(req.old_password, user.password_hash).await {
        return Err(ApiError::new(10001, "wrong password"));
    }
    hub.lockout.succeeded(caller.user.as_str());
    let hash = hub.hasher.hash(req.new_password).await;
    hub.store.change_password(&caller.user, &hash, &caller.token).await?;
    let closed = hub.router.close_user_sessions(&caller.user, token_tag(&caller.token), CloseReason::LoggedOut);
    tracing::info!(user = %caller.user, sessions_closed = closed, "password changed");
    Ok(ok(json!({})))
}
