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

/// History rows per `INSERT` statement (7 parameters each, well under both backends' limits).
const HISTORY_ROWS_PER_INSERT: usize = 100;

/// What a history row is counted as beyond its text fields: the id, the time, the row header and
/// the index entries (measured: see README, "Limits and guarantees"). Migration 0006 uses the same.
const ROW_OVERHEAD: usize = 80;

/// How much history a device (or the whole table) holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub rows: u64,
    pub bytes: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.rows += other.rows;
        self.bytes += other.bytes;
    }
}

/// Looks things up once per batch.
#[derive(Default)]
struct BatchCache {
    accounts: HashMap<UserKey, String>,
    names: HashMap<DeviceId, String>,
    families: HashMap<DeviceId, HashMap<String, String>>,
}

impl Store {
    /// Writes a batch of operations (history rows and their notices) in one transaction; returns
    /// what it added to each device's history.
    pub async fn record_operations(&self, ops: &[Operation]) -> Result<HashMap<DeviceId, Usage>> {
        let mut tx = self.begin().await?;
        let added = Self::record_operations_in(&mut tx, ops).await?;
        tx.commit().await?;
        Ok(added)
    }

    /// Saves devices' latest states and writes operations in one transaction (the recorder's
    /// group commit); returns what it added to each device's history.
    pub async fn commit_group(&self, states: &[(DeviceId, String)], ops: &[Operation]) -> Result<HashMap<DeviceId, Usage>> {
        let mut tx = self.begin().await?;
        Self::save_params_in(&mut tx, states).await?;
        let added = Self::record_operations_in(&mut tx, ops).await?;
        tx.commit().await?;
        Ok(added)
    }

    /// The same inside a caller's transaction.
    pub(crate) async fn record_operations_in(tx: &mut AnyConnection, ops: &[Operation]) -> Result<HashMap<DeviceId, Usage>> {
        let mut cache = BatchCache::default();
        let mut rows: Vec<(&Operation, Option<String>)> = Vec::new();
        for op in ops {
            let account = match &op.actor {
                Some(Actor::User(user)) => Some(Self::account_label_in(&mut *tx, &mut cache, user).await?),
                Some(Actor::Operator(email)) => Some(format!("operator:{email}")),
                None => None,
            };
            if !op.notices.is_empty() {
                Self::file_notices_in(&mut *tx, &mut cache, op, account.as_deref()).await?;
            }
            if op.history {
                rows.push((op, account));
            }
        }
        let mut added: HashMap<DeviceId, Usage> = HashMap::new();
        for chunk in rows.chunks(HISTORY_ROWS_PER_INSERT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let n = i * 7;
                    format!("(${}, ${}, ${}, ${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4, n + 5, n + 6, n + 7)
                })
                .collect();
            let sql = format!(
                "INSERT INTO history (deviceid, user_agent, ops_switchs, request, ops_account, ops_time, bytes) VALUES {}",
                values.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (op, account) in chunk {
                let bytes = row_bytes(op, account.as_deref());
                added.entry(op.deviceid.clone()).or_default().add(Usage { rows: 1, bytes });
                query = query
                    .bind(op.deviceid.as_str())
                    .bind(op.user_agent)
                    .bind(op.ops_switchs.as_str())
                    .bind(op.request.as_str())
                    .bind(account.as_deref())
                    .bind(op.ops_time)
                    .bind(bytes as i64);
            }
            query.execute(&mut *tx).await?;
        }
        Ok(added)
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
        let (email, phone) = row.map(|r| (r.get(0), r.get(1))).unwrap_or_default();
        let label = account_label(email, phone, user);
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

    /// Removes history entries older than `before` (milliseconds); returns how much went.
    pub async fn prune_history(&self, before: i64) -> Result<Usage> {
        let mut tx = self.begin().await?;
        let gone = usage(sqlx::query(USAGE_OLDER).bind(before).fetch_one(&mut *tx).await?);
        sqlx::query("DELETE FROM history WHERE ops_time < $1").bind(before).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(gone)
    }

    /// How much history a device holds.
    pub async fn history_usage(&self, deviceid: &DeviceId) -> Result<Usage> {
        Ok(usage(sqlx::query(USAGE_OF_DEVICE).bind(deviceid.as_str()).fetch_one(&self.pool).await?))
    }

    /// How much history each of `devices` holds (one query per 500 devices); a device without
    /// history is left out.
    pub async fn history_usage_of(&self, devices: &[DeviceId]) -> Result<HashMap<DeviceId, Usage>> {
        let mut usage = HashMap::with_capacity(devices.len());
        for chunk in devices.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT deviceid, CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM history \
                 WHERE deviceid IN ({}) GROUP BY deviceid",
                marks.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for d in chunk {
                query = query.bind(d.as_str());
            }
            for r in query.fetch_all(&self.pool).await? {
                let id: String = r.get(0);
                usage.insert(DeviceId::new(id), Usage { rows: r.get::<i64, _>(1) as u64, bytes: r.get::<i64, _>(2) as u64 });
            }
        }
        Ok(usage)
    }

    /// How much history all devices hold together (reads every row's size: once at start).
    pub async fn history_total(&self) -> Result<Usage> {
        Ok(usage(sqlx::query(USAGE_ALL).fetch_one(&self.pool).await?))
    }

    /// Removes a device's oldest history rows until at most `rows` rows of at most `bytes`
    /// together are left; returns what is left.
    pub async fn trim_device_history(&self, deviceid: &DeviceId, rows: u64, bytes: u64) -> Result<Usage> {
        let mut tx = self.begin().await?;
        // The newest id that no longer fits: counted from the newest row down, the first whose
        // running count or running size passes the bound. It and everything older go.
        sqlx::query(
            "DELETE FROM history WHERE deviceid = $1 AND id <= (\
               SELECT id FROM (\
                 SELECT id, ROW_NUMBER() OVER (ORDER BY id DESC) AS n, SUM(bytes) OVER (ORDER BY id DESC) AS total \
                 FROM history WHERE deviceid = $2\
               ) newest WHERE n > $3 OR total > $4 ORDER BY id DESC LIMIT 1)",
        )
        .bind(deviceid.as_str())
        .bind(deviceid.as_str())
        .bind(rows as i64)
        .bind(bytes as i64)
        .execute(&mut *tx)
        .await?;
        let left = usage(sqlx::query(USAGE_OF_DEVICE).bind(deviceid.as_str()).fetch_one(&mut *tx).await?);
        tx.commit().await?;
        Ok(left)
    }

    /// Removes the `rows` oldest history rows of all devices; returns how much went.
    pub async fn trim_oldest_history(&self, rows: u64) -> Result<Usage> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(bytes), 0) AS BIGINT), CAST(COALESCE(MAX(id), 0) AS BIGINT) \
             FROM (SELECT id, bytes FROM history ORDER BY id LIMIT $1) oldest",
        )
        .bind(rows as i64)
        .fetch_one(&mut *tx)
        .await?;
        let gone = Usage { rows: row.get::<i64, _>(0) as u64, bytes: row.get::<i64, _>(1) as u64 };
        sqlx::query("DELETE FROM history WHERE id <= $1").bind(row.get::<i64, _>(2)).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(gone)
    }
}

const USAGE_OF_DEVICE: &str = "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM history WHERE deviceid = $1";
const USAGE_OLDER: &str = "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM history WHERE ops_time < $1";
const USAGE_ALL: &str = "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM history";

fn usage(row: sqlx::any::AnyRow) -> Usage {
    Usage { rows: row.get::<i64, _>(0) as u64, bytes: row.get::<i64, _>(1) as u64 }
}

/// The account an app user operated with, from their row: email, else phone, else apikey.
pub(super) fn account_label(email: Option<String>, phone: Option<String>, user: &UserKey) -> String {
    email.filter(|e| !e.is_empty()).or(phone).filter(|l| !l.is_empty()).unwrap_or_else(|| user.to_string())
}

/// The size a history row is counted as (the `bytes` column).
pub(super) fn row_bytes(op: &Operation, account: Option<&str>) -> u64 {
    let text = op.deviceid.as_str().len() + op.user_agent.len() + op.ops_switchs.len() + op.request.len() + account.map_or(0, str::len);
    (text + ROW_OVERHEAD) as u64
}
