//! `/v2/user/login`, `refresh`, `logout` and `profile`, as the seed's user section describes.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Credential, bearer, credential, signed};
use super::error::{ApiError, ok};
use crate::Hub;
use crate::registry::CloseReason;
use crate::store::{TokenCheck, User};

/// The user routes that are registered with their OpenAPI entries (the rest are still listed in
/// `http::app`).
pub fn routes() -> utoipa_axum::router::OpenApiRouter<Arc<Hub>> {
    utoipa_axum::router::OpenApiRouter::new()
}

/// The seed's user object.
pub fn user_json(user: &User) -> Value {
    let mut v = json!({
        "apikey": user.apikey.as_str(),
        "countryCode": user.country_code,
        "nickname": user.nickname,
        "accountLevel": 10,
        "levelExpiredAt": 0,
        "denyRecharge": false,
        "accountConsult": false,
    });
    if let Some(email) = &user.email {
        v["email"] = json!(email);
    }
    if let Some(phone) = &user.phone {
        v["phoneNumber"] = json!(phone);
    }
    v
}

/// Parses a JSON body; wrong types and missing fields are 400.
pub fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid parameters: {e}")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Login {
    #[serde(default)]
    country_code: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone_number: Option<String>,
    password: String,
    #[serde(default)]
    #[allow(dead_code)]
    lang: Option<String>,
}

pub async fn login(
    State(hub): State<Arc<Hub>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let appid = signed(&hub, &method, &uri, &headers, &body).await?;
    let req: Login = parse_body(&body)?;
    if let Some(cc) = &req.country_code {
        if !cc.starts_with('+') {
            return Err(ApiError::bad_request("countryCode must start with +"));
        }
    }
    let user = match (req.phone_number.as_deref().filter(|s| !s.is_empty()), req.email.as_deref().filter(|s| !s.is_empty())) {
        (Some(phone), _) => hub.store.user_by_phone(phone).await?,
        (None, Some(email)) => hub.store.user_by_email(email).await?,
        (None, None) => return Err(ApiError::bad_request("email or phoneNumber is required")),
    };
    let Some(user) = user else { return Err(ApiError::new(10003, "user does not exist")) };
    if user.region != hub.config.region {
        let mut e = ApiError::new(10004, "redirection");
        e.data = json!({ "region": user.region });
        return Err(e);
    }
    if !hub.hasher.verify(req.password, user.password_hash.clone()).await {
        tracing::info!(user = %user.apikey, "login with a wrong password");
        return Err(ApiError::new(10001, "wrong password"));
    }
    let pair = hub.store.issue_tokens(&user.apikey, appid.as_str(), hub.config.access_token_ttl, hub.config.refresh_token_ttl).await?;
    tracing::info!(user = %user.apikey, %appid, "login");
    Ok(ok(json!({ "user": user_json(&user), "at": pair.at, "rt": pair.rt, "region": user.region })))
}

#[derive(Deserialize)]
struct Refresh {
    rt: String,
}

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

pub async fn logout(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let caller = bearer(&hub, &headers).await?;
    hub.store.revoke(&caller.token).await?;
    let closed = hub.router.close_sessions(&caller.user, crate::auth::token_tag(&caller.token), CloseReason::LoggedOut);
    tracing::info!(user = %caller.user, sessions_closed = closed, "logout");
    Ok(ok(json!({})))
}

pub async fn profile(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let caller = bearer(&hub, &headers).await?;
    let user = hub.store.user(&caller.user).await?.ok_or_else(|| ApiError::new(401, "invalid access token"))?;
    Ok(ok(json!({ "user": user_json(&user), "region": user.region })))
}
