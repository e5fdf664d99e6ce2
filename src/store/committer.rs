//! The recorder's transactions on the embedded store, on a SQLite connection of the recorder's
//! own, called from the recorder's writer thread: a whole group (the states to save and the
//! history rows) is one call that never leaves the thread, where sqlx's SQLite driver hands every
//! statement to its worker thread and back (a lone routed update spent most of its CPU in those
//! wake-ups). Groups that file notices, and every group on PostgreSQL, go through
//! [`Store::commit_group`].

use std::collections::HashMap;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::history::{account_label, row_bytes};
use super::{Actor, Operation, Result, SQLITE_PRAGMAS, Store, StoreError, Usage};
use crate::ids::{DeviceId, UserKey};

/// How often the checkpointer copies the write-ahead log into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The recorder's connection to the embedded store, and the thread that checkpoints for it.
pub struct Committer {
    conn: Connection,
    /// Dropped with the committer, which ends the checkpointer.
    _checkpointer: mpsc::Sender<()>,
}

impl Store {
    /// A connection of the recorder's own to the embedded store; `None` on PostgreSQL. Its
    /// commits never checkpoint (a checkpoint copies pages into the database file and syncs it,
    /// tens of milliseconds that every waiting answer would wait too): a thread of its own runs a
    /// passive checkpoint every [`CHECKPOINT_EVERY`] on another connection, beside the writer.
    pub fn committer(&self) -> Result<Option<Committer>> {
        let Some(file) = &self.sqlite_file else { return Ok(None) };
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
        Ok(Some(Committer { conn, _checkpointer: tx }))
    }
}

impl Committer {
    /// Saves the states and writes the history rows of `ops` in one transaction, like
    /// [`Store::commit_group`]; `ops` must file no notices. Returns what it added to each
    /// device's history. Blocks for the transaction.
    pub fn commit_group(&mut self, states: &[(DeviceId, String)], ops: &[Operation]) -> Result<HashMap<DeviceId, Usage>> {
        debug_assert!(ops.iter().all(|o| o.notices.is_empty()));
        Ok(write(&mut self.conn, states, ops)?)
    }
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
