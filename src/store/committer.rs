//! The recorder's transactions, on a connection of the recorder's own, called from the
//! recorder's writer thread: a whole group (the states to save and the history rows) is one call.
//!
//! - On the embedded store it is a SQLite connection that never leaves the thread, where sqlx's
//!   SQLite driver hands every statement to its worker thread and back (a lone routed update
//!   spent most of its CPU in those wake-ups).
//! - On PostgreSQL it is one statement (the states and the rows passed as arrays, the account
//!   labels looked up in it), so a group costs one round trip and the server's WAL flush, where
//!   a transaction of separate statements costs one round trip each.
//!
//! Groups that file notices go through [`Store::commit_group`].

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use sqlx::postgres::PgConnection;
use sqlx::{Connection as _, Row};
use tokio::runtime::Handle;

use super::history::{account_label, row_bytes};
use super::{Actor, Location, Operation, Result, SQLITE_PRAGMAS, Store, StoreError, Usage};
use crate::ids::{DeviceId, UserKey};

/// How often the checkpointer copies the write-ahead log into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The recorder's connection to the store.
pub enum Committer {
    /// The embedded store, and the thread that checkpoints for it.
    Sqlite {
        conn: Connection,
        /// Dropped with the committer, which ends the checkpointer.
        _checkpointer: mpsc::Sender<()>,
    },
    /// PostgreSQL: one connection, made at start ([`Committer::warm_up`]) and again after a failure, used from
    /// the writer thread through the runtime. Not a pool: a pool pings a connection before
    /// handing it out and returns it through a task of its own, a round trip and a hop on every
    /// commit.
    Postgres { url: String, conn: Option<PgConnection> },
}

impl Store {
    /// A connection of the recorder's own to the store.
    ///
    /// On SQLite its commits never checkpoint (a checkpoint copies pages into the database file
    /// and syncs it, tens of milliseconds that every waiting answer would wait too): a thread of
    /// its own runs a passive checkpoint every [`CHECKPOINT_EVERY`] on another connection,
    /// beside the writer. On PostgreSQL the connection is made by [`Committer::warm_up`].
    pub fn committer(&self) -> Result<Committer> {
        let file = match &*self.location {
            Location::Postgres(url) => return Ok(Committer::Postgres { url: url.clone(), conn: None }),
            Location::Sqlite(file) => file,
        };
        let conn = Connection::open(file)?;
        conn.execute_batch(SQLITE_PRAGMAS)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpoints = Connection::open(file)?;
        checkpoints.execute_batch(SQLITE_PRAGMAS)?;
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(CHECKPOINT_EVERY) {
                    if let Err(e) = checkpoints.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "checkpointing the store's write-ahead log failed");
                    }
                }
            })
            .map_err(|e| StoreError::DataDir { path: file.display().to_string(), source: e })?;
        Ok(Committer::Sqlite { conn, _checkpointer: tx })
    }
}

impl Committer {
    /// On PostgreSQL: connects and runs the group statement once with nothing in it, so the
    /// first real group does not wait for the server to start a backend and plan the statement
    /// (about 100 ms here, which every answer queued behind that group waited too). Failures are
    /// the first commit's to report. Blocks, like [`Committer::commit_group`].
    pub fn warm_up(&mut self, runtime: &Handle) {
        if let Committer::Postgres { .. } = self
            && let Err(e) = self.commit_group(&[], &[], runtime)
        {
            tracing::warn!(error = %e, "the recorder could not reach PostgreSQL at start; it tries again at the first commit");
        }
    }

    /// Saves the states and writes the history rows of `ops` in one transaction, like
    /// [`Store::commit_group`]; `ops` must file no notices, and `states` must name each device
    /// once. Returns what it added to each device's history. Blocks for the transaction (on
    /// PostgreSQL through `runtime`: call it from outside the runtime).
    pub fn commit_group(&mut self, states: &[(DeviceId, String)], ops: &[Operation], runtime: &Handle) -> Result<HashMap<DeviceId, Usage>> {
        debug_assert!(ops.iter().all(|o| o.notices.is_empty()));
        match self {
            Committer::Sqlite { conn, .. } => Ok(write(conn, states, ops)?),
            Committer::Postgres { url, conn } => runtime.block_on(async {
                let connected = match conn {
                    Some(c) => c,
                    None => conn.insert(PgConnection::connect(url).await?),
                };
                let written = write_pg(connected, states, ops).await;
                if written.is_err() {
                    // Whatever broke, the next commit starts on a new connection.
                    *conn = None;
                }
                written
            }),
        }
    }
}

/// The group as one PostgreSQL statement. A statement outside a transaction block is a
/// transaction of its own, and data-modifying `WITH` parts all run to completion in it. A row's
/// account is the operator's label, or the app user's email, else phone, else apikey (as
/// [`account_label`]); its counted size adds the account's length to what [`row_bytes`] counts
/// without it. Rows are inserted in the group's order (`ORDER BY n`), so their ids keep it.
const PG_GROUP: &str = "\
WITH saved AS (\
    UPDATE devices d SET params = s.params FROM UNNEST($1::text[], $2::text[]) AS s(deviceid, params) \
    WHERE d.deviceid = s.deviceid RETURNING 1\
), rows AS (\
    SELECT r.n, r.deviceid, r.user_agent, r.ops_switchs, r.request, r.ops_time, r.bytes, \
        COALESCE(r.label, CASE WHEN r.apikey IS NOT NULL THEN COALESCE(\
            (SELECT COALESCE(NULLIF(u.email, ''), NULLIF(u.phone, '')) FROM users u WHERE u.apikey = r.apikey), r.apikey) END) AS account \
    FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::text[], $10::text[]) \
        WITH ORDINALITY AS r(deviceid, user_agent, ops_switchs, request, ops_time, bytes, apikey, label, n)\
), added AS (\
    INSERT INTO history (deviceid, user_agent, ops_switchs, request, ops_account, ops_time, bytes) \
    SELECT deviceid, user_agent, ops_switchs, request, account, ops_time, bytes + COALESCE(OCTET_LENGTH(account), 0) \
    FROM rows ORDER BY n RETURNING deviceid, bytes\
) \
SELECT deviceid, CAST(COUNT(*) AS BIGINT), CAST(SUM(bytes) AS BIGINT) FROM added GROUP BY deviceid";

async fn write_pg(conn: &mut PgConnection, states: &[(DeviceId, String)], ops: &[Operation]) -> Result<HashMap<DeviceId, Usage>> {
    let (ids, params): (Vec<&str>, Vec<&str>) = states.iter().map(|(d, p)| (d.as_str(), p.as_str())).unzip();
    let rows: Vec<&Operation> = ops.iter().filter(|o| o.history).collect();
    let mut operator_labels: Vec<Option<String>> = Vec::with_capacity(rows.len());
    let mut apikeys: Vec<Option<&str>> = Vec::with_capacity(rows.len());
    for op in &rows {
        let (apikey, label) = match &op.actor {
            Some(Actor::User(user)) => (Some(user.as_str()), None),
            Some(Actor::Operator(email)) => (None, Some(format!("operator:{email}"))),
            None => (None, None),
        };
        apikeys.push(apikey);
        operator_labels.push(label);
    }
    let found = sqlx::query(PG_GROUP)
        .bind(ids)
        .bind(params)
        .bind(rows.iter().map(|o| o.deviceid.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|o| o.user_agent).collect::<Vec<_>>())
        .bind(rows.iter().map(|o| o.ops_switchs.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|o| o.request.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|o| o.ops_time).collect::<Vec<_>>())
        .bind(rows.iter().map(|o| row_bytes(o, None) as i64).collect::<Vec<_>>())
        .bind(apikeys)
        .bind(operator_labels)
        .fetch_all(conn)
        .await?;
    Ok(found
        .into_iter()
        .map(|r| {
            let usage = Usage { rows: r.get::<i64, _>(1) as u64, bytes: r.get::<i64, _>(2) as u64 };
            (DeviceId::new(r.get::<String, _>(0)), usage)
        })
        .collect())
}

fn write(conn: &mut Connection, states: &[(DeviceId, String)], ops: &[Operation]) -> rusqlite::Result<HashMap<DeviceId, Usage>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut added: HashMap<DeviceId, Usage> = HashMap::new();
    {
        let mut save = tx.prepare_cached("UPDATE devices SET params = ?1 WHERE deviceid = ?2")?;
        for (deviceid, params) in states {
            save.execute((params, deviceid.as_str()))?;
        }
        let mut person = tx.prepare_cached("SELECT email, phone FROM users WHERE apikey = ?1")?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO history (deviceid, user_agent, ops_switchs, request, ops_account, ops_time, bytes) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut accounts: HashMap<&UserKey, String> = HashMap::new();
        for op in ops.iter().filter(|o| o.history) {
            let account = match &op.actor {
                Some(Actor::User(user)) => Some(match accounts.get(user) {
                    Some(label) => label.clone(),
                    None => {
                        let found: Option<(Option<String>, Option<String>)> =
                            person.query_row([user.as_str()], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
                        let (email, phone) = found.unwrap_or_default();
                        let label = account_label(email, phone, user);
                        accounts.insert(user, label.clone());
                        label
                    }
                }),
                Some(Actor::Operator(email)) => Some(format!("operator:{email}")),
                None => None,
            };
            let bytes = row_bytes(op, account.as_deref());
            insert.execute((
                op.deviceid.as_str(),
                op.user_agent,
                &op.ops_switchs,
                &op.request,
                account.as_deref(),
                op.ops_time,
                bytes as i64,
            ))?;
            added.entry(op.deviceid.clone()).or_default().add(Usage { rows: 1, bytes });
        }
    }
    tx.commit()?;
    Ok(added)
}
