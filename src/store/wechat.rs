//! WeChat applications (`switchyard admin wechat-app add|list`): the appid and secret the WeChat
//! connector fetches access tokens with, and that seed 002's mini-program backends sign with.
//! The secret is read only by [`Store::wechat_app`]; listings carry the appid and time alone.

use sqlx::Row;

use super::{Result, Store, StoreError, unique_violation};
use crate::clock::now_millis;

/// A WeChat application as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeChatApp {
    pub appid: String,
    /// When it was added, milliseconds since the epoch.
    pub created_at: i64,
}

impl Store {
    pub async fn add_wechat_app(&self, appid: &str, secret: &str) -> Result<()> {
        sqlx::query("INSERT INTO wechat_apps (appid, secret, created_at) VALUES ($1, $2, $3)")
            .bind(appid)
            .bind(secret)
            .bind(now_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| if unique_violation(&e) { StoreError::Conflict(format!("WeChat application {appid}")) } else { e.into() })?;
        Ok(())
    }

    /// Every WeChat application, by appid.
    pub async fn wechat_apps(&self) -> Result<Vec<WeChatApp>> {
        let rows = sqlx::query("SELECT appid, created_at FROM wechat_apps ORDER BY appid").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(WeChatApp { appid: r.try_get("appid")?, created_at: r.try_get("created_at")? })).collect()
    }

    /// The application's appid and secret, for the connector.
    pub async fn wechat_app(&self, appid: &str) -> Result<Option<AppCredentials>> {
        let secret: Option<String> =
            sqlx::query_scalar("SELECT secret FROM wechat_apps WHERE appid = $1").bind(appid).fetch_optional(&self.pool).await?;
        Ok(secret.map(|secret| AppCredentials { appid: appid.to_owned(), secret }))
    }
}

/// A WeChat application's appid and secret, as added with `switchyard admin wechat-app add`.
/// Its `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct AppCredentials {
    pub appid: String,
    pub secret: String,
}

impl std::fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredentials").field("appid", &self.appid).field("secret", &"***").finish()
    }
}
