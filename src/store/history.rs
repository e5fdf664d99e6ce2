//! Operation history of devices (what apps commanded and devices reported, when the owner keeps
//! `opsHistory` on) and the notices those operations file. Rows are written in batches by the
//! recorder ([`crate::recorder`]), never on the routing path; the REST API reads and clears them.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::{AnyConnection, Row};

use super::{Result, Store};
use crate::ids::{DeviceId, UserKey};

/// One history entry as the REST API answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub deviceid: String,
    /// `app`, `device` or `operator` (a command sent from the dashboard).
    pub user_agent: String,
    /// The switch channels the operation touched (see [`crate::recorder`] for the format).
    pub ops_switchs: String,
    /// The operation as a JSON text: `{"action","userAgent","params"}`.
    pub request: String,
    /// The operating app user's email, phone or apikey, or `operator:<email>`; empty for device
    /// reports.
    pub ops_account: String,
    /// Milliseconds since the epoch.
    pub ops_time: i64,
}

/// One operation as the recorder files it.
#[derive(Debug, Clone)]
pub struct Operation {
    pub deviceid: DeviceId,
    pub user_agent: &'static str,
    pub ops_switchs: String,
    pub request: String,
    /// Who sent the command (an app user's account is looked up when the batch is written).
    pub actor: Option<Actor>,
    pub ops_time: i64,
    /// Whether to write a history row.
    pub history: bool,
    pub notices: Vec<Notice>,
}

/// Who sent a command that history files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An app user (over a socket, REST or WeChat): filed as their email, else phone, else apikey.
    User(UserKey),
    /// An operator on the dashboard, by email: filed as `operator:<email>` with the user agent
    /// [`OPERATOR_AGENT`], so it cannot pass for an app user.
    Operator(String),
}

/// The `userAgent` of history rows of commands an operator sent from the dashboard.
pub const OPERATOR_AGENT: &str = "operator";

/// A message-centre entry an operation files for one recipient. The writer adds `deviceName`
/// and, for app operations, `opsAccount` to the body (a JSON object).
#[derive(Debug, Clone)]
pub struct Notice {
    pub to: UserKey,
    pub msg_type: &'static str,
    pub message: Value,
}

/// History rows per `INSERT` statement (6 parameters each, well under both backends' limits).
const HISTORY_ROWS_PER_INSERT: usize = 100;

/// Looks things up once per batch.
#[derive(Default)]
struct BatchCache {
    accounts: HashMap<UserKey, String>,
    names: HashMap<DeviceId, String>,
    families: HashMap<DeviceId, HashMap<String, String>>,
}

impl Store {
    /// Writes a batch of operations (history rows and their notices) in one transaction; returns
    /// how many history rows it wrote.
    pub async fn record_operations(&self, ops: &[Operation]) -> Result<u64> {
        let mut tx = self.begin().await?;
        let mut cache = BatchCache::default();
        let mut rows: Vec<(&Operation, Option<String>)> = Vec::new();
        for op in ops {
            let account = match &op.actor {
                Some(Actor::User(user)) => Some(Self::account_label_in(&mut tx, &mut cache, user).await?),
                Some(Actor::Operator(email)) => Some(format!("operator:{email}")),
                None => None,
            };
            if !op.notices.is_empty() {
                Self::file_notices_in(&mut tx, &mut cache, op, account.as_deref()).await?;
            }
            if op.history {
                rows.push((op, account));
            }
        }
        for chunk in rows.chunks(HISTORY_ROWS_PER_INSERT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let n = i * 6;
                    format!("(${}, ${}, ${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4, n + 5, n + 6)
                })
                .collect();
            let sql = format!(
                "INSERT INTO history (deviceid, user_agent, ops_switchs, request, ops_account, ops_time) VALUES {}",
                values.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (op, account) in chunk {
                query = query
                    .bind(op.deviceid.as_str())
                    .bind(op.user_agent)
                    .bind(op.ops_switchs.as_str())
                    .bind(op.request.as_str())
                    .bind(account.as_deref())
                    .bind(op.ops_time);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Files one operation's notices, each under the family where its recipient keeps the device.
    async fn file_notices_in(conn: &mut AnyConnection, cache: &mut BatchCache, op: &Operation, account: Option<&str>) -> Result<()> {
        if !cache.names.contains_key(&op.deviceid) {
            let name: Option<String> = sqlx::query_scalar("SELECT name FROM devices WHERE deviceid = $1")
                .bind(op.deviceid.as_str())
                .fetch_optional(&mut *conn)
                .await?;
            cache.names.insert(op.deviceid.clone(), name.unwrap_or_default());
        }
        if !cache.families.contains_key(&op.deviceid) {
            let placed = sqlx::query("SELECT apikey, familyid FROM things WHERE thingid = $1 AND kind IN (1, 2)")
                .bind(op.deviceid.as_str())
                .fetch_all(&mut *conn)
                .await?;
            cache.families.insert(op.deviceid.clone(), placed.into_iter().map(|r| (r.get(0), r.get(1))).collect());
        }
        let name = &cache.names[&op.deviceid];
        let families = &cache.families[&op.deviceid];
        for notice in &op.notices {
            let mut message = notice.message.clone();
            if let Some(body) = message.as_object_mut() {
                body.insert("deviceName".into(), Value::String(name.clone()));
                if let Some(account) = account {
                    body.insert("opsAccount".into(), Value::String(account.to_owned()));
                }
            }
            let family = families.get(notice.to.as_str()).map(String::as_str);
            Self::add_message_in(&mut *conn, notice.to.as_str(), family, notice.msg_type, &message).await?;
        }
        Ok(())
    }

    /// The account an app user operated with: email, else phone, else apikey.
    async fn account_label_in(conn: &mut AnyConnection, cache: &mut BatchCache, user: &UserKey) -> Result<String> {
        if let Some(label) = cache.accounts.get(user) {
            return Ok(label.clone());
        }
        let row = sqlx::query("SELECT email, phone FROM users WHERE apikey = $1").bind(user.as_str()).fetch_optional(conn).await?;
        let label = row
            .and_then(|r| r.get::<Option<String>, _>(0).filter(|e| !e.is_empty()).or_else(|| r.get::<Option<String>, _>(1)))
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| user.to_string());
        cache.accounts.insert(user.clone(), label.clone());
        Ok(label)
    }

    /// Up to `num` history entries of a device from before `before` (milliseconds), newest first.
    pub async fn history(&self, deviceid: &str, before: i64, num: i64) -> Result<Vec<HistoryEntry>> {
        let rows = sqlx::query(
            "SELECT deviceid, user_agent, ops_switchs, request, ops_account, ops_time FROM history \
             WHERE deviceid = $1 AND ops_time < $2 ORDER BY ops_time DESC, id DESC LIMIT $3",
        )
        .bind(deviceid)
        .bind(before)
        .bind(num)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| HistoryEntry {
                deviceid: r.get(0),
                user_agent: r.get(1),
                ops_switchs: r.get::<Option<String>, _>(2).unwrap_or_default(),
                request: r.get(3),
                ops_account: r.get::<Option<String>, _>(4).unwrap_or_default(),
                ops_time: r.get(5),
            })
            .collect())
    }

    /// Removes every history entry of a device; returns how many there were.
    pub async fn clear_history(&self, deviceid: &str) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM history WHERE deviceid = $1").bind(deviceid).execute(&self.pool).await?.rows_affected())
    }

    /// Removes history entries older than `before` (milliseconds); returns how many.
    pub async fn prune_history(&self, before: i64) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM history WHERE ops_time < $1").bind(before).execute(&self.pool).await?.rows_affected())
    }
}
