//! WeChat on the platform side (seeds 000 and 002): each product's WeChat hardware binding (one
//! per product), each device's WeChat authorisation state (kept in the device's row), and the
//! WeChat users bound to a device by its QR code, who hear its command results and alarms
//! through `pushappmsg`. The in-memory progress of an authorisation job is not kept here (see
//! [`crate::wechat::work`]).

use serde_json::Value;
use sqlx::Row;

use super::{Result, Store, StoreError};
use crate::clock::now_millis;

/// A product's WeChat binding as posted: the WeChat application and the `wechat_iot` object.
#[derive(Debug, Clone, PartialEq)]
pub struct WeChatBind {
    pub app_id: String,
    pub wechat_iot: Value,
}

/// A device's WeChat authorisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthState {
    Processing,
    Passed,
    /// WeChat's errcode and errmsg, or the platform's reason (errcode -1) when WeChat did not answer.
    Failed {
        errcode: i64,
        errmsg: String,
    },
}

impl AuthState {
    pub fn name(&self) -> &'static str {
        match self {
            AuthState::Processing => "processing",
            AuthState::Passed => "passed",
            AuthState::Failed { .. } => "failed",
        }
    }
}

/// How a product's devices stand with WeChat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthCounts {
    pub processing: i64,
    pub passed: i64,
    pub failed: i64,
    /// The errcode and errmsg of the latest failure, if any device failed.
    pub last_failure: Option<(i64, String)>,
}

/// A WeChat user bound to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeChatListener {
    pub appid: String,
    pub openid: String,
    pub push_token: String,
}

/// Why a WeChat user could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum WeChatBindError {
    #[error("the device has {0} WeChat users bound already")]
    TooMany(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for WeChatBindError {
    fn from(e: sqlx::Error) -> Self {
        WeChatBindError::Store(e.into())
    }
}

impl Store {
    /// Binds `product_id` to WeChat application `app_id`, replacing an earlier binding.
    pub async fn set_wechat_bind(&self, product_id: &str, app_id: &str, wechat_iot: &Value) -> Result<()> {
        sqlx::query(
            "INSERT INTO wechat_product_binds (product_id, app_id, wechat_iot, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (product_id) DO UPDATE SET app_id = excluded.app_id, wechat_iot = excluded.wechat_iot, \
             updated_at = excluded.updated_at",
        )
        .bind(product_id)
        .bind(app_id)
        .bind(wechat_iot.to_string())
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn wechat_bind(&self, product_id: &str) -> Result<Option<WeChatBind>> {
        let row = sqlx::query("SELECT app_id, wechat_iot FROM wechat_product_binds WHERE product_id = $1")
            .bind(product_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| WeChatBind { app_id: r.get(0), wechat_iot: serde_json::from_str(&r.get::<String, _>(1)).unwrap_or(Value::Null) }))
    }

    /// Removes the product's binding; false when it had none.
    pub async fn delete_wechat_bind(&self, product_id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM wechat_product_binds WHERE product_id = $1").bind(product_id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// The devices of a product WeChat has not authorised yet, by id.
    pub async fn wechat_auth_pending(&self, product_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT deviceid FROM devices WHERE product_id = $1 AND (wechat_auth_state IS NULL OR wechat_auth_state <> 'passed') \
             ORDER BY deviceid",
        )
        .bind(product_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records the WeChat authorisation state of devices (`None`: never tried).
    pub async fn set_wechat_auth(&self, deviceids: &[String], state: Option<&AuthState>) -> Result<()> {
        let (name, errcode, errmsg) = match state {
            None => (None, 0, ""),
            Some(AuthState::Failed { errcode, errmsg }) => (Some("failed"), *errcode, errmsg.as_str()),
            Some(s) => (Some(s.name()), 0, "ok"),
        };
        let mut tx = self.begin().await?;
        for id in deviceids {
            sqlx::query(
                "UPDATE devices SET wechat_auth_state = $1, wechat_auth_errcode = $2, wechat_auth_errmsg = $3, wechat_auth_at = $4 \
                 WHERE deviceid = $5",
            )
            .bind(name)
            .bind(errcode)
            .bind(errmsg)
            .bind(now_millis())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A device's product and WeChat authorisation state (`None` inside: never tried); `None`
    /// for an unknown device.
    pub async fn wechat_auth(&self, deviceid: &str) -> Result<Option<(Option<String>, Option<AuthState>)>> {
        let row =
            sqlx::query("SELECT product_id, wechat_auth_state, wechat_auth_errcode, wechat_auth_errmsg FROM devices WHERE deviceid = $1")
                .bind(deviceid)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| {
            let state = match r.get::<Option<String>, _>(1).as_deref() {
                Some("processing") => Some(AuthState::Processing),
                Some("passed") => Some(AuthState::Passed),
                Some("failed") => Some(AuthState::Failed { errcode: r.get(2), errmsg: r.get(3) }),
                _ => None,
            };
            (r.get(0), state)
        }))
    }

    /// How the product's devices stand with WeChat.
    pub async fn wechat_auth_counts(&self, product_id: &str) -> Result<AuthCounts> {
        let rows = sqlx::query("SELECT wechat_auth_state, COUNT(*) FROM devices WHERE product_id = $1 AND wechat_auth_state IS NOT NULL GROUP BY wechat_auth_state")
            .bind(product_id)
            .fetch_all(&self.pool)
            .await?;
        let mut counts = AuthCounts::default();
        for r in rows {
            let n: i64 = r.get(1);
            match r.get::<String, _>(0).as_str() {
                "processing" => counts.processing = n,
                "passed" => counts.passed = n,
                "failed" => counts.failed = n,
                _ => {}
            }
        }
        let last = sqlx::query(
            "SELECT wechat_auth_errcode, wechat_auth_errmsg FROM devices WHERE product_id = $1 AND wechat_auth_state = 'failed' \
             ORDER BY wechat_auth_at DESC, deviceid LIMIT 1",
        )
        .bind(product_id)
        .fetch_optional(&self.pool)
        .await?;
        counts.last_failure = last.map(|r| (r.get(0), r.get(1)));
        Ok(counts)
    }

    /// Binds a WeChat user to a device (binding again updates the push token). A device has at
    /// most `max` WeChat users.
    pub async fn bind_wechat_user(
        &self,
        appid: &str,
        openid: &str,
        deviceid: &str,
        push_token: &str,
        max: i64,
    ) -> std::result::Result<(), WeChatBindError> {
        let mut tx = self.begin().await?;
        let bound: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM wechat_user_binds WHERE deviceid = $1 AND NOT (appid = $2 AND openid = $3)")
                .bind(deviceid)
                .bind(appid)
                .bind(openid)
                .fetch_one(&mut *tx)
                .await?;
        if bound >= max {
            return Err(WeChatBindError::TooMany(bound));
        }
        sqlx::query(
            "INSERT INTO wechat_user_binds (appid, openid, deviceid, push_token, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (appid, openid, deviceid) DO UPDATE SET push_token = excluded.push_token",
        )
        .bind(appid)
        .bind(openid)
        .bind(deviceid)
        .bind(push_token)
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Unbinds a WeChat user from a device; false when they were not bound.
    pub async fn unbind_wechat_user(&self, appid: &str, openid: &str, deviceid: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM wechat_user_binds WHERE appid = $1 AND openid = $2 AND deviceid = $3")
            .bind(appid)
            .bind(openid)
            .bind(deviceid)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The push token of a WeChat user bound to a device; `None` when not bound.
    pub async fn wechat_user_bind(&self, appid: &str, openid: &str, deviceid: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT push_token FROM wechat_user_binds WHERE appid = $1 AND openid = $2 AND deviceid = $3")
            .bind(appid)
            .bind(openid)
            .bind(deviceid)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Every WeChat user bound to a device, oldest binding first.
    pub async fn wechat_listeners(&self, deviceid: &str) -> Result<Vec<WeChatListener>> {
        let rows =
            sqlx::query("SELECT appid, openid, push_token FROM wechat_user_binds WHERE deviceid = $1 ORDER BY created_at, appid, openid")
                .bind(deviceid)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|r| WeChatListener { appid: r.get(0), openid: r.get(1), push_token: r.get(2) }).collect())
    }
}
