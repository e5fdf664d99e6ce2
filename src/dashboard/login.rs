//! Who is at the dashboard. An operator logs in with the form (`POST /dashboard/login`, `email`
//! and `password` form-encoded); the password is checked with the hub's [`crate::auth::Hasher`]
//! after an attempt is taken from the per-account lockout (`operator:<email>`), as app logins
//! are. A success opens a server-side login in the store ([`crate::store::Store::open_operator_session`])
//! and sets its random token in an HttpOnly, SameSite=Strict cookie limited to `/dashboard`;
//! logout removes the login. Pages answer a visitor without a valid login with a redirect to the
//! form, the API with 401.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::{Dashboard, INDEX_HTML, LOGIN_HTML, escape_html, page};

/// The cookie holding a login's token.
pub const COOKIE: &str = "switchyard_operator";
/// How long a login lasts.
pub const SESSION_SECS: i64 = 12 * 3600;

/// A logged-in operator, taken from the request's cookie. As an extractor it refuses with 401
/// (for the API); pages use [`logged_in`] and redirect instead.
pub struct Operator {
    pub email: String,
    pub token: String,
}

/// The login token a request carries, if any.
fn token_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|(_, value)| value.to_owned())
}

/// The operator whose unexpired login the request's cookie names.
pub async fn logged_in(dashboard: &Dashboard, headers: &HeaderMap) -> Option<Operator> {
    let token = token_of(headers)?;
    match dashboard.hub.store.operator_session(&token).await {
        Ok(email) => email.map(|email| Operator { email, token }),
        Err(e) => {
            tracing::warn!(error = %e, "reading a dashboard login failed");
            None
        }
    }
}

impl FromRequestParts<Arc<Dashboard>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, dashboard: &Arc<Dashboard>) -> Result<Self, Self::Rejection> {
        logged_in(dashboard, &parts.headers).await.ok_or_else(|| api_error(StatusCode::UNAUTHORIZED, "log in first"))
    }
}

/// A JSON error for the dashboard's API.
pub fn api_error(status: StatusCode, reason: &str) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(serde_json::json!({ "error": status.as_u16(), "reason": reason })))
        .into_response()
}

/// `GET /dashboard` (and a device's page): the app, for a logged-in operator.
pub async fn index(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    match logged_in(&dashboard, &headers).await {
        Some(op) => page(INDEX_HTML.replace("{{operator}}", &escape_html(&op.email))),
        None => Redirect::to("/dashboard/login").into_response(),
    }
}

/// The login form, with a message and the email given, if any.
fn login_page(message: &str, email: &str) -> Response {
    let message = if message.is_empty() { String::new() } else { format!(r#"<p class="error" role="alert">{}</p>"#, escape_html(message)) };
    page(LOGIN_HTML.replace("{{message}}", &message).replace("{{email}}", &escape_html(email)))
}

/// `GET /dashboard/login`.
pub async fn form(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if logged_in(&dashboard, &headers).await.is_some() {
        return Redirect::to("/dashboard").into_response();
    }
    login_page("", "")
}

#[derive(Deserialize)]
struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// `POST /dashboard/login`: the form again with a message on failure; on success a login, its
/// cookie and a redirect to the dashboard.
pub async fn submit(State(dashboard): State<Arc<Dashboard>>, body: Bytes) -> Response {
    let Ok(Credentials { email, password }) = serde_urlencoded::from_bytes::<Credentials>(&body) else {
        return (StatusCode::BAD_REQUEST, login_page("The form could not be read.", "")).into_response();
    };
    let email = email.trim().to_ascii_lowercase();
    let hub = &dashboard.hub;
    let stored = match hub.store.operator_password(&email).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::error!(error = %e, "reading an operator failed");
            return (StatusCode::SERVICE_UNAVAILABLE, login_page("The store is not answering; try again.", &email)).into_response();
        }
    };
    let Some(hash) = stored else {
        // Checked against a stand-in hash all the same, so the answer takes as long as for an
        // operator that exists: timing does not tell which emails are operators.
        static STAND_IN: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
        let stand_in = STAND_IN.get_or_init(|| hub.hasher.hash("not an operator's password".to_owned())).await;
        hub.hasher.verify(password, stand_in.clone()).await;
        tracing::info!(%email, "dashboard login for an unknown operator");
        return login_page("Wrong email or password.", &email);
    };
    // The same lockout as app accounts: attempts count before the check, a success clears them.
    let account = format!("operator:{email}");
    if let Err(retry) = hub.lockout.attempt(&account) {
        let secs = retry.as_secs().max(1);
        let mut answer = (StatusCode::TOO_MANY_REQUESTS, login_page(&format!("Too many failed attempts: try again in {secs} s."), &email))
            .into_response();
        answer.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return answer;
    }
    if !hub.hasher.verify(password, hash).await {
        tracing::info!(%email, "dashboard login with a wrong password");
        return login_page("Wrong email or password.", &email);
    }
    hub.lockout.succeeded(&account);
    let token = match hub.store.open_operator_session(&email, SESSION_SECS * 1000).await {
        Ok(token) => token,
        Err(e) => {
            tracing::error!(error = %e, "opening a dashboard login failed");
            return (StatusCode::SERVICE_UNAVAILABLE, login_page("The store is not answering; try again.", &email)).into_response();
        }
    };
    tracing::info!(%email, "operator logged in to the dashboard");
    let cookie = format!("{COOKIE}={token}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}");
    let mut answer = Redirect::to("/dashboard").into_response();
    answer.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("hex and ASCII"));
    answer
}

/// `POST /dashboard/logout`: ends the login and clears the cookie.
pub async fn logout(State(dashboard): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if let Some(token) = token_of(&headers)
        && let Err(e) = dashboard.hub.store.close_operator_session(&token).await
    {
        tracing::warn!(error = %e, "ending a dashboard login failed");
    }
    let cookie = format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0");
    let mut answer = Redirect::to("/dashboard/login").into_response();
    answer.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ASCII"));
    answer
}
