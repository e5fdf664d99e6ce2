//! Whole-store copies for operators: an online backup of the SQLite file (`admin backup`) and a
//! move from SQLite to PostgreSQL (`admin migrate --to`).
//!
//! The backup is SQLite's `VACUUM INTO`, which writes a consistent copy of the database as of one
//! read transaction while the hub keeps writing (WAL mode). The move copies every table, parents
//! before children, inside one PostgreSQL transaction: it lands whole or not at all, and it
//! refuses a target that already holds data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, Store, StoreError};

/// Why a backup or a move was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the store is in PostgreSQL: back it up with pg_dump (e.g. `pg_dump -Fc -f switchyard.dump DBNAME`)")]
    BackupOnPostgres,
    #[error("{0} already exists; give a new file name")]
    TargetExists(String),
    #[error("the source store must be the SQLite file (it is already in PostgreSQL)")]
    SourceNotSqlite,
    #[error("the target must be a PostgreSQL URL (postgres://…)")]
    TargetNotPostgres,
    #[error("the target database is not empty (table {0} has rows); migrate into a fresh database")]
    TargetNotEmpty(String),
    #[error("table {table}: {problem}")]
    Value { table: String, problem: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// Tables the migrations fill themselves; their rows are overwritten rather than refused.
const SEEDED: &[&str] = &["meta"];

/// How many rows of each table a move copied, in copy order.
pub type Copied = Vec<(String, u64)>;

impl Store {
    /// Writes a consistent copy of the SQLite store to `file`, which must not exist yet. Safe
    /// while a hub runs.
    pub async fn backup_to(&self, file: &Path) -> Result<(), CopyError> {
        if self.backend != Backend::Sqlite {
            return Err(CopyError::BackupOnPostgres);
        }
        if file.exists() {
            return Err(CopyError::TargetExists(file.display().to_string()));
        }
        let path = std::path::absolute(file).map_err(|e| StoreError::DataDir { path: file.display().to_string(), source: e })?;
        sqlx::query("VACUUM INTO $1").bind(path.display().to_string()).execute(&self.pool).await?;
        Ok(())
    }

    /// Copies every row of this SQLite store into the PostgreSQL store `target` (freshly
    /// migrated, with no rows), in one transaction.
    pub async fn copy_into(&self, target: &Store) -> Result<Copied, CopyError> {
        if self.backend != Backend::Sqlite {
            return Err(CopyError::SourceNotSqlite);
        }
        if target.backend != Backend::Postgres {
            return Err(CopyError::TargetNotPostgres);
        }
        let columns = target_columns(target).await?;
        let order = dependency_order(target, columns.keys().cloned().collect()).await?;
        for table in order.iter().filter(|t| !SEEDED.contains(&t.as_str())) {
            let sql = format!("SELECT 1 FROM \"{table}\" LIMIT 1");
            if sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_optional(&target.pool).await?.is_some() {
                return Err(CopyError::TargetNotEmpty(table.clone()));
            }
        }
        // One read transaction on the source, so the copy is of one moment.
        let mut source = self.pool.begin().await?;
        let mut tx = target.pool.begin().await?;
        let mut copied = Vec::new();
        for table in &order {
            let cols = &columns[table];
            let names = cols.iter().map(|c| format!("\"{}\"", c.name)).collect::<Vec<_>>().join(", ");
            let select = format!("SELECT {names} FROM \"{table}\"");
            let rows: Vec<AnyRow> = sqlx::query(sqlx::AssertSqlSafe(select)).fetch_all(&mut *source).await?;
            if SEEDED.contains(&table.as_str()) && !rows.is_empty() {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM \"{table}\""))).execute(&mut *tx).await?;
            }
            let marks = (1..=cols.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
            let insert = format!("INSERT INTO \"{table}\" ({names}) VALUES ({marks})");
            for row in &rows {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(insert.clone()));
                for (i, col) in cols.iter().enumerate() {
                    let fail = |problem: String| CopyError::Value { table: table.clone(), problem };
                    q = if col.integer {
                        q.bind(integer_at(row, i).map_err(|p| fail(format!("column {}: {p}", col.name)))?)
                    } else {
                        q.bind(text_at(row, i).map_err(|p| fail(format!("column {}: {p}", col.name)))?)
                    };
                }
                q.execute(&mut *tx).await?;
            }
            for col in cols.iter().filter(|c| c.identity) {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('\"{table}\"', '{0}'), COALESCE((SELECT MAX(\"{0}\") FROM \"{table}\"), 0) + 1, false)",
                    col.name
                );
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
            }
            copied.push((table.clone(), rows.len() as u64));
        }
        tx.commit().await?;
        source.rollback().await?;
        Ok(copied)
    }
}

/// A column of a target table, and how its values are bound.
struct Column {
    name: String,
    integer: bool,
    identity: bool,
}

/// The target's tables (without sqlx's own) and their columns in order.
async fn target_columns(target: &Store) -> Result<BTreeMap<String, Vec<Column>>, CopyError> {
    let rows = sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text, is_identity::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name NOT LIKE '\\_sqlx%' ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&target.pool)
    .await?;
    let mut tables: BTreeMap<String, Vec<Column>> = BTreeMap::new();
    for r in rows {
        let (table, name, ty, identity): (String, String, String, String) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?);
        let integer = matches!(ty.as_str(), "bigint" | "integer" | "smallint");
        tables.entry(table).or_default().push(Column { name, integer, identity: identity == "YES" });
    }
    Ok(tables)
}

/// The tables ordered so that every table comes after the tables its foreign keys point to.
async fn dependency_order(target: &Store, tables: BTreeSet<String>) -> Result<Vec<String>, CopyError> {
    let rows = sqlx::query(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c \
         JOIN pg_namespace n ON n.oid = c.connamespace WHERE c.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(&target.pool)
    .await?;
    let mut parents: BTreeMap<String, BTreeSet<String>> = tables.iter().map(|t| (t.clone(), BTreeSet::new())).collect();
    for r in rows {
        let (child, parent): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        let (child, parent) = (child.trim_matches('"').to_owned(), parent.trim_matches('"').to_owned());
        if child != parent && tables.contains(&parent) {
            parents.entry(child).or_default().insert(parent);
        }
    }
    let mut order = Vec::new();
    let mut placed = BTreeSet::new();
    while placed.len() < parents.len() {
        let ready: Vec<String> = parents
            .iter()
            .filter(|(t, ps)| !placed.contains(*t) && ps.iter().all(|p| placed.contains(p)))
            .map(|(t, _)| t.clone())
            .collect();
        if ready.is_empty() {
            // A cycle of foreign keys: not in this schema; copy the rest in name order.
            order.extend(parents.keys().filter(|t| !placed.contains(*t)).cloned());
            break;
        }
        for t in ready {
            placed.insert(t.clone());
            order.push(t);
        }
    }
    Ok(order)
}

/// An integer column's value; SQLite may hold it as text.
fn integer_at(row: &AnyRow, i: usize) -> Result<Option<i64>, String> {
    match row.try_get::<Option<i64>, _>(i) {
        Ok(v) => Ok(v),
        Err(_) => match row.try_get::<Option<String>, _>(i) {
            Ok(None) => Ok(None),
            Ok(Some(s)) => s.trim().parse().map(Some).map_err(|_| format!("`{s}` is not a whole number")),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// A text column's value; SQLite may hold it as a number.
fn text_at(row: &AnyRow, i: usize) -> Result<Option<String>, String> {
    match row.try_get::<Option<String>, _>(i) {
        Ok(v) => Ok(v),
        Err(_) => match row.try_get::<Option<i64>, _>(i) {
            Ok(v) => Ok(v.map(|n| n.to_string())),
            Err(_) => row.try_get::<Option<f64>, _>(i).map(|v| v.map(|f| f.to_string())).map_err(|e| e.to_string()),
        },
    }
}
