//! Request authentication as the seed's header table says: `Sign` (HMAC of the raw body, or of
//! the query string for GET) for user-category routes, `Bearer <at>` (or `Access-Token: <at>`)
//! elsewhere.

use axum::http::{HeaderMap, Method, Uri};

use super::error::ApiError;
use crate::auth::verify_sign;
use crate::hub::Hub;
use crate::ids::{AppId, UserKey};
use crate::store::TokenCheck;

pub enum Credential<'a> {
    Sign(&'a str),
    Bearer(&'a str),
}

pub fn credential(headers: &HeaderMap) -> Result<Credential<'_>, ApiError> {
    let value =
        headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or_else(|| ApiError::new(401, "missing Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sign") => Ok(Credential::Sign(rest.trim())),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Credential::Bearer(rest.trim())),
        _ => Err(ApiError::new(401, "Authorization must be `Sign …` or `Bearer …`")),
    }
}

/// Longest `X-CK-Nonce` accepted.
pub const MAX_NONCE_BYTES: usize = 64;

/// `X-CK-Nonce` may be absent; when sent it must be printable ASCII (space to `~`), at most
/// [`MAX_NONCE_BYTES`]. The seed says 8 letters or digits, but the official SDK builds it as
/// `Math.random().toString(36).slice(-8)`, which now and then holds a `.`, and the vendor's cloud
/// does not check it: control characters and non-ASCII bytes are still refused.
pub fn check_nonce(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get("x-ck-nonce").map(|v| v.as_bytes()) {
        None | Some(b"") => Ok(()),
        Some(n) if n.len() <= MAX_NONCE_BYTES && n.iter().all(|b| (b' '..=b'~').contains(b)) => Ok(()),
        Some(_) => Err(ApiError::bad_request("X-CK-Nonce must be printable ASCII, at most 64 characters")),
    }
}

pub(crate) fn appid_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-ck-appid").and_then(|v| v.to_str().ok()).filter(|s| !s.is_empty())
}

/// Checks a `Sign` request: a known app id and a signature over the raw body (POST) or the raw
/// query string (GET).
pub async fn signed(hub: &Hub, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<AppId, ApiError> {
    check_nonce(headers)?;
    let appid = appid_header(headers).ok_or_else(|| ApiError::new(407, "missing X-CK-Appid"))?;
    let secret = hub.store.app_secret(appid).await?.ok_or_else(|| ApiError::new(407, "appid not allowed"))?;
    check_sign(&secret, method, uri, headers, body)?;
    Ok(AppId::new(appid))
}

/// The `Authorization: Sign …` check alone, with the caller's secret (an app's, or a WeChat
/// application's for seed 002's routes).
pub fn check_sign(secret: &str, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let Credential::Sign(signature) = credential(headers)? else {
        return Err(ApiError::new(401, "this route needs a Sign authorization"));
    };
    let message = if method == Method::GET { uri.query().unwrap_or("").as_bytes() } else { body };
    if !verify_sign(secret, message, signature) {
        return Err(ApiError::new(401, "sign verification failed"));
    }
    Ok(())
}

/// A user authenticated by an access token.
pub struct Caller {
    pub user: UserKey,
    pub appid: AppId,
    pub token: String,
}

/// The access token of a request: `Authorization: Bearer <at>`, or (as seed 003's clients send
/// it, with no other header) `Access-Token: <at>` when there is no `Authorization`.
pub async fn bearer(hub: &Hub, headers: &HeaderMap) -> Result<Caller, ApiError> {
    check_nonce(headers)?;
    let access_token = headers.get("access-token").filter(|_| !headers.contains_key("authorization"));
    let token = match access_token {
        Some(v) => v.to_str().map(str::trim).map_err(|_| ApiError::new(401, "invalid access token"))?,
        None => match credential(headers)? {
            Credential::Bearer(token) => token,
            Credential::Sign(_) => return Err(ApiError::new(401, "this route needs a Bearer access token")),
        },
    };
    match hub.store.check_access(token).await? {
        TokenCheck::Unknown => Err(ApiError::new(401, "invalid access token")),
        TokenCheck::Expired => Err(ApiError::new(402, "access token expired")),
        TokenCheck::Valid { apikey, appid } => {
            if appid_header(headers).is_some_and(|h| h != appid.as_str()) {
                return Err(ApiError::new(407, "appid does not match the access token"));
            }
            Ok(Caller { user: apikey, appid, token: token.to_owned() })
        }
    }
}
