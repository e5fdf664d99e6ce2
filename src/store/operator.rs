//! Operators and their dashboard logins. Operators are not app users: an email and a password
//! hash, made by `switchyard admin operator add`, with no apikey, devices or tokens. A login is a
//! row keyed by the SHA-256 of a random cookie token (the token itself is never stored), with an
//! expiry; removing the operator removes their logins with it.
//!
//! Also what the dashboard shows beside the router's live view of a device: its name, model and
//! owner's account, read in batches.

use sqlx::Row;

use super::{Result, Store, StoreError, random_hex, token_hash, unique_violation};
use crate::clock::now_millis;

/// An operator as `admin operator list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub email: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// The stored parts of a device the dashboard lists and searches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceLabel {
    pub deviceid: String,
    pub name: String,
    /// The module model.
    pub model: String,
    /// The product model shown with the device, often empty.
    pub product_model: String,
    /// The owner's email, else phone, else apikey; empty without an owner.
    pub owner: String,
}

/// Device ids per `IN (…)` query of [`Store::device_labels`].
const LABELS_PER_QUERY: usize = 200;

impl Store {
    pub async fn add_operator(&self, email: &str, password_hash: &str) -> Result<()> {
        let email = email.trim().to_ascii_lowercase();
        sqlx::query("INSERT INTO operators (email, password_hash, created_at) VALUES ($1, $2, $3)")
            .bind(&email)
            .bind(password_hash)
            .bind(now_millis())
            .execute(&self.pool)
            .await
            .map_err(|e| if unique_violation(&e) { StoreError::Conflict(format!("operator {email}")) } else { e.into() })?;
        Ok(())
    }

    pub async fn operators(&self) -> Result<Vec<Operator>> {
        let rows = sqlx::query("SELECT email, created_at FROM operators ORDER BY email").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|r| Operator { email: r.get(0), created_at: r.get(1) }).collect())
    }

    /// Removes an operator and ends their logins; false when there was none.
    pub async fn remove_operator(&self, email: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let email = email.trim().to_ascii_lowercase();
        // Explicitly, not only by the foreign key: SQLite enforces it only with the pragma on.
        sqlx::query("DELETE FROM operator_sessions WHERE email = $1").bind(&email).execute(&mut *tx).await?;
        let gone = sqlx::query("DELETE FROM operators WHERE email = $1").bind(&email).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(gone > 0)
    }

    /// The operator's password hash, `None` when there is no such operator.
    pub async fn operator_password(&self, email: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT password_hash FROM operators WHERE email = $1")
            .bind(email.trim().to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Starts a login for `email` lasting `ttl_ms`; returns its token (only its hash is kept).
    /// Expired logins of anyone are removed on the way.
    pub async fn open_operator_session(&self, email: &str, ttl_ms: i64) -> Result<String> {
        let token = random_hex(32);
        let now = now_millis();
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM operator_sessions WHERE expires_at <= $1").bind(now).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO operator_sessions (token_hash, email, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_hash(&token))
            .bind(email.trim().to_ascii_lowercase())
            .bind(now)
            .bind(now + ttl_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(token)
    }

    /// The operator a login token belongs to, while it has not expired.
    pub async fn operator_session(&self, token: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT email FROM operator_sessions WHERE token_hash = $1 AND expires_at > $2")
            .bind(token_hash(token))
            .bind(now_millis())
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Ends a login (logout).
    pub async fn close_operator_session(&self, token: &str) -> Result<()> {
        sqlx::query("DELETE FROM operator_sessions WHERE token_hash = $1").bind(token_hash(token)).execute(&self.pool).await?;
        Ok(())
    }

    /// Name, model and owner of the given devices (those that exist), in batches.
    pub async fn device_labels(&self, ids: &[&str]) -> Result<Vec<DeviceLabel>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(LABELS_PER_QUERY) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT d.deviceid, d.name, d.model, d.product_model, u.email, u.phone, d.owner FROM devices d \
                 LEFT JOIN users u ON u.apikey = d.owner WHERE d.deviceid IN ({})",
                marks.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            for r in query.fetch_all(&self.pool).await? {
                let owner = [r.get::<Option<String>, _>(4), r.get(5), r.get(6)].into_iter().flatten().find(|s| !s.is_empty());
                out.push(DeviceLabel {
                    deviceid: r.get(0),
                    name: r.get(1),
                    model: r.get(2),
                    product_model: r.get(3),
                    owner: owner.unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }
}
