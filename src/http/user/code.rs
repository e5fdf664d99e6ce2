//! The user routes behind a verification code: sending one (`verification-code`), and what a code
//! allows: `register` (type 0), `reset-pwd` (1), `close-account` (3), `sms-login` (4).
//!
//! A code is six digits, sent to an email address or phone number through the hub's
//! [`crate::verify::CodeSender`], valid for 10 minutes, used once, void after 5 wrong guesses;
//! one address gets at most 3 a minute, 20 an hour, 100 a day (`10010` beyond).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::{Session, check_country_code, check_lang, new_session, redirect};
use crate::auth::password_ok;
use crate::clock::now_millis;
use crate::http::api::{Body, Empty, Envelope, Signed};
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ok};
use crate::hub::Hub;
use crate::ids::DeviceId;
use crate::mailbox::CloseReason;
use crate::store::{AccountError, NewAccount, User};
use crate::verify::{Purpose, new_code};

/// Longest email address accepted (RFC 5321's path limit).
const MAX_EMAIL_LEN: usize = 254;

/// Where a code goes and whom it names: a phone number (`+` and digits) or an email address
/// (kept lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Phone(String),
    Email(String),
}

impl Address {
    /// The phone number when given (the seed checks it first), else the email; `country_code`,
    /// when given, must begin the phone number.
    fn from_request(phone: Option<&str>, email: Option<&str>, country_code: Option<&str>) -> Result<Address, ApiError> {
        match (phone.map(str::trim).filter(|s| !s.is_empty()), email.map(str::trim).filter(|s| !s.is_empty())) {
            (Some(phone), _) => {
                let digits = phone.strip_prefix('+').unwrap_or("");
                if !(6..=16).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ApiError::bad_request("phoneNumber must be + and the country code and number, e.g. +8618023456789"));
                }
                if let Some(cc) = country_code
                    && (!phone.starts_with(cc) || phone.len() <= cc.len())
                {
                    return Err(ApiError::bad_request("phoneNumber must start with countryCode"));
                }
                Ok(Address::Phone(phone.to_owned()))
            }
            (None, Some(email)) => {
                let valid = email.len() <= MAX_EMAIL_LEN
                    && !email.chars().any(char::is_whitespace)
                    && email
                        .split_once('@')
                        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
                if !valid {
                    return Err(ApiError::bad_request("email is not an email address"));
                }
                Ok(Address::Email(email.to_ascii_lowercase()))
            }
            (None, None) => Err(ApiError::bad_request("email or phoneNumber is required")),
        }
    }

    fn target(&self) -> &str {
        match self {
            Address::Phone(p) | Address::Email(p) => p,
        }
    }

    async fn user(&self, hub: &Hub) -> Result<Option<User>, ApiError> {
        Ok(match self {
            Address::Phone(p) => hub.store.user_by_phone(p).await?,
            Address::Email(e) => hub.store.user_by_email(e).await?,
        })
    }
}

/// The user an address names, living in this node's region: `10003` when there is none,
/// `10004` when they live elsewhere.
async fn local_user(hub: &Hub, address: &Address) -> Result<User, ApiError> {
    let user = address.user(hub).await?.ok_or_else(|| ApiError::new(10003, "user does not exist"))?;
    if user.region != hub.config.region {
        return Err(redirect(&user.region));
    }
    Ok(user)
}

fn required_code(code: &str) -> Result<&str, ApiError> {
    let code = code.trim();
    if code.is_empty() {
        return Err(ApiError::bad_request("verificationCode is required"));
    }
    Ok(code)
}

fn check_password(password: &str) -> Result<(), ApiError> {
    if password_ok(password) {
        Ok(())
    } else {
        Err(ApiError::bad_request("password needs 8+ characters with two of digits, letters and symbols"))
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::WrongCode => ApiError::new(10002, "wrong or expired verification code"),
            AccountError::TooManySends => ApiError::new(10010, "verification codes are sent too often"),
            AccountError::Exists => ApiError::new(10009, "account already exists"),
            AccountError::Store(e) => e.into(),
        }
    }
}

// --- sending a code ------------------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendCode {
    /// 0 register, 1 reset password, 3 close account, 4 SMS login.
    #[serde(rename = "type")]
    kind: i64,
    #[serde(default)]
    email: Option<String>,
    /// Checked first; `+`, country code and number. Type 4 takes only `+86` numbers.
    #[serde(default)]
    phone_number: Option<String>,
}

/// Send a verification code to an email address or phone number.
#[utoipa::path(post, path = "/v2/user/verification-code", tag = "user", security(("sign" = [])), request_body = SendCode,
    responses((status = 200, body = Envelope<Empty>,
        description = "errors: 400 bad parameters (unknown type, no address, SMS login outside +86), 10003 no such user \
            (types 1, 3, 4), 10004 the account lives in another region (data.region), 10009 account exists (type 0), \
            10010 sent too often (3 a minute, 20 an hour, 100 a day per address)")))]
pub async fn verification_code(State(hub): State<Arc<Hub>>, Signed(_appid, req): Signed<SendCode>) -> Result<Json<Value>, ApiError> {
    let purpose = Purpose::from_code(req.kind).ok_or_else(|| ApiError::bad_request("type must be 0, 1, 3 or 4"))?;
    let address = Address::from_request(req.phone_number.as_deref(), req.email.as_deref(), None)?;
    match purpose {
        Purpose::Register => {
            if address.user(&hub).await?.is_some() {
                return Err(ApiError::new(10009, "account already exists"));
            }
        }
        Purpose::SmsLogin => {
            if !matches!(&address, Address::Phone(p) if p.starts_with("+86")) {
                return Err(ApiError::bad_request("SMS login takes only mainland China (+86) phone numbers"));
            }
            local_user(&hub, &address).await?;
        }
        Purpose::ResetPassword | Purpose::CloseAccount => {
            local_user(&hub, &address).await?;
        }
    }
    let code = new_code();
    hub.store.record_code(address.target(), purpose, &code, now_millis()).await?;
    let (sender, to) = (hub.codes.clone(), address.target().to_owned());
    let sent = tokio::task::spawn_blocking(move || sender.send(&to, purpose, &code)).await;
    match sent {
        Ok(Ok(())) => Ok(ok(json!({}))),
        Ok(Err(e)) => {
            tracing::error!(error = %e, purpose = purpose.name(), "cannot deliver a verification code");
            Err(ApiError::new(500, "cannot deliver the verification code"))
        }
        Err(e) => {
            tracing::error!(error = %e, "verification code sender panicked");
            Err(ApiError::new(500, "cannot deliver the verification code"))
        }
    }
}

// --- register ------------------------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Register {
    /// `+` and the phone country code, e.g. `+86`.
    country_code: String,
    /// Stored lowercase.
    #[serde(default)]
    email: Option<String>,
    /// Checked first; starts with the country code.
    #[serde(default)]
    phone_number: Option<String>,
    /// The type 0 code sent to the email or phone.
    verification_code: String,
    /// At least 8 characters with at least two of digits, letters and symbols.
    password: String,
}

/// Create an account (it gets this node's region and a first family) and log it in.
#[utoipa::path(post, path = "/v2/user/register", tag = "user", security(("sign" = [])), request_body = Register,
    responses((status = 200, body = Envelope<Session>,
        description = "errors: 400 bad parameters (countryCode without +, a phone not starting with it, a weak password), \
            10002 wrong or expired code, 10009 account exists")))]
pub async fn register(State(hub): State<Arc<Hub>>, Signed(appid, req): Signed<Register>) -> Result<Json<Value>, ApiError> {
    check_country_code(&req.country_code)?;
    let address = Address::from_request(req.phone_number.as_deref(), req.email.as_deref(), Some(&req.country_code))?;
    let code = required_code(&req.verification_code)?;
    check_password(&req.password)?;
    if address.user(&hub).await?.is_some() {
        return Err(ApiError::new(10009, "account already exists"));
    }
    let hash = hub.hasher.hash(req.password).await;
    let (email, phone) = match &address {
        Address::Phone(p) => (None, Some(p.as_str())),
        Address::Email(e) => (Some(e.as_str()), None),
    };
    let account = NewAccount { email, phone, country_code: &req.country_code, password_hash: &hash, region: &hub.config.region };
    let apikey = hub.store.register_with_code(account, address.target(), code, now_millis()).await?;
    tracing::info!(user = %apikey, %appid, "registered");
    new_session(&hub, &apikey, &appid).await
}

// --- SMS login -----------------------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SmsLogin {
    /// Only `+86`.
    country_code: String,
    /// Starts with the country code.
    phone_number: String,
    /// The type 4 code sent to the phone.
    verification_code: String,
    /// Language of notifications (`cn` or `en`).
    #[serde(default)]
    lang: Option<String>,
}

/// Log in with a code sent by SMS (mainland China numbers only).
#[utoipa::path(post, path = "/v2/user/sms-login", tag = "user", security(("sign" = [])), request_body = SmsLogin,
    responses((status = 200, body = Envelope<Session>,
        description = "errors: 400 bad parameters or a country code other than +86, 10002 wrong or expired code, \
            429 (HTTP 429 with Retry-After) too many failed attempts for the account, \
            10003 no such user, 10004 the account lives in another region (data.region)")))]
pub async fn sms_login(State(hub): State<Arc<Hub>>, Signed(appid, req): Signed<SmsLogin>) -> Result<Json<Value>, ApiError> {
    check_country_code(&req.country_code)?;
    if req.country_code != "+86" {
        return Err(ApiError::bad_request("SMS login takes only mainland China (+86) phone numbers"));
    }
    let address = Address::from_request(Some(&req.phone_number), None, Some(&req.country_code))?;
    let code = required_code(&req.verification_code)?;
    let lang = check_lang(req.lang.as_deref())?;
    let user = local_user(&hub, &address).await?;
    hub.lockout.attempt(user.apikey.as_str()).map_err(ApiError::locked)?;
    if !hub.store.take_code(&[address.target()], Purpose::SmsLogin, code, now_millis()).await? {
        return Err(ApiError::new(10002, "wrong or expired verification code"));
    }
    hub.lockout.succeeded(user.apikey.as_str());
    if let Some(lang) = lang {
        hub.store.set_lang(&user.apikey, lang).await?;
    }
    tracing::info!(user = %user.apikey, %appid, "sms login");
    new_session(&hub, &user.apikey, &appid).await
}

// --- reset password ------------------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetPassword {
    #[serde(default)]
    email: Option<String>,
    /// Checked first.
    #[serde(default)]
    phone_number: Option<String>,
    /// The type 1 code sent to the email or phone.
    verification_code: String,
    /// The new password: at least 8 characters with at least two of digits, letters and symbols.
    password: String,
}

/// Set a new password with a code. Every token of the user is revoked and their WebSocket
/// sessions are closed; the answer carries a fresh pair.
#[utoipa::path(post, path = "/v2/user/reset-pwd", tag = "user", security(("sign" = [])), request_body = ResetPassword,
    responses((status = 200, body = Envelope<Session>,
        description = "errors: 400 bad parameters or a weak password, 10002 wrong or expired code, 10003 no such user, \
            10004 the account lives in another region (data.region)")))]
pub async fn reset_password(State(hub): State<Arc<Hub>>, Signed(appid, req): Signed<ResetPassword>) -> Result<Json<Value>, ApiError> {
    let address = Address::from_request(req.phone_number.as_deref(), req.email.as_deref(), None)?;
    let code = required_code(&req.verification_code)?;
    check_password(&req.password)?;
    let user = local_user(&hub, &address).await?;
    let hash = hub.hasher.hash(req.password).await;
    hub.store.reset_password_with_code(&user.apikey, address.target(), code, &hash, now_millis()).await?;
    let closed = hub.router.close_user_sessions(&user.apikey, 0, CloseReason::LoggedOut);
    tracing::info!(user = %user.apikey, sessions_closed = closed, "password reset");
    new_session(&hub, &user.apikey, &appid).await
}

// --- close account -------------------------------------------------------------------------

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloseAccount {
    /// The type 3 code sent to the user's email or phone.
    verification_code: String,
}

/// Delete the caller's account: tokens, families, groups, messages, shares to and from it. Its
/// devices become unowned factory records (online ones are told `deleteNotify`) and can be
/// added again; its WebSocket sessions are closed.
#[utoipa::path(post, path = "/v2/user/close-account", tag = "user", security(("bearer" = [])), request_body = CloseAccount,
    responses((status = 200, body = Envelope<Empty>, description = "errors: 400 missing code, 10002 wrong or expired code")))]
pub async fn close_account(State(hub): State<Arc<Hub>>, caller: Caller, Body(req): Body<CloseAccount>) -> Result<Json<Value>, ApiError> {
    let code = required_code(&req.verification_code)?;
    let user = hub.store.user(&caller.user).await?.ok_or_else(|| ApiError::new(401, "invalid access token"))?;
    let targets: Vec<&str> = user.phone.iter().chain(user.email.iter()).map(String::as_str).collect();
    let closed = hub.store.close_account_with_code(&caller.user, &targets, code, now_millis()).await?;
    let sessions = hub.router.close_user_sessions(&caller.user, 0, CloseReason::LoggedOut);
    // Nobody reaches the released devices from now on; then they are told to reset.
    let changed: Vec<DeviceId> = closed.released.iter().chain(&closed.unshared).cloned().collect();
    hub.acl.changed(&changed).await;
    for id in &closed.released {
        hub.router.notify_device(id, delete_notify(id, caller.user.as_str()).into());
    }
    tracing::info!(user = %caller.user, devices = closed.released.len(), sessions_closed = sessions, "account closed");
    Ok(ok(json!({})))
}

/// Tells a device it was removed from its account: it resets and reconnects.
fn delete_notify(id: &DeviceId, apikey: &str) -> String {
    json!({
        "action": "notify",
        "cmd": "deleteNotify",
        "deviceid": id.as_str(),
        "apikey": apikey,
        "userAgent": "app",
        "sequence": now_millis().to_string(),
    })
    .to_string()
}
