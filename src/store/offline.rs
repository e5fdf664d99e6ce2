//! The offline command queue's rows (`offline_commands`): what [`crate::offline`] keeps for a
//! device that was offline when a command with a `ttl` came. Queueing merges by key and checks
//! the bound in one transaction that first locks the device's row, so two commands racing for
//! one device cannot both take its last place or both keep a key.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store};
use crate::ids::{DeviceId, UserKey};

/// One queued command as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedCommand {
    /// Its place in the device's queue (delivery runs in `id` order).
    pub id: i64,
    pub deviceid: DeviceId,
    /// Who sent it; the command is delivered and judged as theirs.
    pub user: UserKey,
    /// The node and app session that sent it (no session for a REST call).
    pub origin_node: String,
    pub origin_session: Option<i64>,
    /// The sequence as the sender wrote it (raw JSON).
    pub sequence: String,
    /// What is left of its params (a JSON object): keys a later command set are gone.
    pub params: String,
    /// Milliseconds since the epoch.
    pub queued_at: i64,
    pub expires_at: i64,
}

/// A command to queue.
pub struct NewQueued<'a> {
    pub deviceid: &'a DeviceId,
    pub user: &'a UserKey,
    pub origin_node: &'a str,
    pub origin_session: Option<i64>,
    pub sequence: &'a str,
    /// A JSON object.
    pub params: &'a RawValue,
    pub queued_at: i64,
    pub expires_at: i64,
}

/// What queueing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued {
    /// Queued under this id; `replaced` earlier commands lost every key and are gone.
    Added { id: i64, replaced: usize },
    /// The device already holds as many live commands as it may (after merging); nothing changed.
    Full,
}

const COLUMNS: &str = "id, deviceid, apikey, origin_node, origin_session, sequence, params, queued_at, expires_at";

fn queued_from(row: AnyRow) -> QueuedCommand {
    QueuedCommand {
        id: row.get(0),
        deviceid: DeviceId::new(row.get::<String, _>(1)),
        user: UserKey::new(row.get::<String, _>(2)),
        origin_node: row.get(3),
        origin_session: row.get(4),
        sequence: row.get(5),
        params: row.get(6),
        queued_at: row.get(7),
        expires_at: row.get(8),
    }
}

impl Store {
    /// Queues `cmd` behind the device's live commands (those not expired at `cmd.queued_at`):
    /// every key it sets is removed from the earlier ones, an earlier one left with no key is
    /// deleted, and then at most `limit` may remain with the new one included.
    pub async fn queue_command(&self, cmd: &NewQueued<'_>, limit: usize) -> Result<Queued> {
        let keys: BTreeMap<String, &RawValue> = serde_json::from_str(cmd.params.get()).unwrap_or_default();
        let mut tx = self.begin().await?;
        // Serialises queueing per device on PostgreSQL (SQLite's BEGIN IMMEDIATE already did).
        sqlx::query("UPDATE devices SET owner = owner WHERE deviceid = $1").bind(cmd.deviceid.as_str()).execute(&mut *tx).await?;
        let sql = format!("SELECT {COLUMNS} FROM offline_commands WHERE deviceid = $1 AND expires_at > $2 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(cmd.deviceid.as_str()).bind(cmd.queued_at).fetch_all(&mut *tx).await?;
        let mut kept = 0;
        let mut changes: Vec<(i64, Option<String>)> = Vec::new();
        for row in rows.into_iter().map(queued_from) {
            let mut params: Map<String, Value> = serde_json::from_str(&row.params).unwrap_or_default();
            let before = params.len();
            params.retain(|k, _| !keys.contains_key(k));
            if params.is_empty() {
                changes.push((row.id, None));
            } else {
                kept += 1;
                if params.len() != before {
                    changes.push((row.id, Some(Value::Object(params).to_string())));
                }
            }
        }
        if kept + 1 > limit {
            return Ok(Queued::Full);
        }
        let mut replaced = 0;
        for (id, params) in changes {
            match params {
                None => {
                    sqlx::query("DELETE FROM offline_commands WHERE id = $1").bind(id).execute(&mut *tx).await?;
                    replaced += 1;
                }
                Some(p) => {
                    sqlx::query("UPDATE offline_commands SET params = $1 WHERE id = $2").bind(p).bind(id).execute(&mut *tx).await?;
                }
            }
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO offline_commands (deviceid, apikey, origin_node, origin_session, sequence, params, queued_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(cmd.deviceid.as_str())
        .bind(cmd.user.as_str())
        .bind(cmd.origin_node)
        .bind(cmd.origin_session)
        .bind(cmd.sequence)
        .bind(cmd.params.get())
        .bind(cmd.queued_at)
        .bind(cmd.expires_at)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Queued::Added { id, replaced })
    }

    /// The device's commands that have not expired at `now`, in delivery order.
    pub async fn queued_commands(&self, deviceid: &DeviceId, now: i64) -> Result<Vec<QueuedCommand>> {
        let sql = format!("SELECT {COLUMNS} FROM offline_commands WHERE deviceid = $1 AND expires_at > $2 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(deviceid.as_str()).bind(now).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(queued_from).collect())
    }

    /// Removes one queued command; false when it was already gone.
    pub async fn remove_queued(&self, id: i64) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM offline_commands WHERE id = $1").bind(id).execute(&self.pool).await?.rows_affected() > 0)
    }

    /// Commands that expired at `now` or before, oldest expiry first, at most `limit`.
    pub async fn expired_commands(&self, now: i64, limit: i64) -> Result<Vec<QueuedCommand>> {
        let sql = format!("SELECT {COLUMNS} FROM offline_commands WHERE expires_at <= $1 ORDER BY expires_at, id LIMIT $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(queued_from).collect())
    }

    /// When the next queued command expires, if any is queued.
    pub async fn next_queued_expiry(&self) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar("SELECT MIN(expires_at) FROM offline_commands").fetch_one(&self.pool).await?)
    }

    /// The devices that have commands queued (expired or not), for a node that starts.
    pub async fn devices_with_queued_commands(&self) -> Result<Vec<DeviceId>> {
        let ids: Vec<String> = sqlx::query_scalar("SELECT DISTINCT deviceid FROM offline_commands").fetch_all(&self.pool).await?;
        Ok(ids.into_iter().map(DeviceId::new).collect())
    }
}
