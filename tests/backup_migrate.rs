//! `admin backup FILE` copies the SQLite store while a hub runs, and `admin migrate --to` moves a
//! SQLite store into a fresh PostgreSQL database, whole, refusing one that holds data.
//!
//! The migrate test needs PostgreSQL: the server of `SWITCHYARD_TEST_DATABASE_URL`, else
//! `postgres://postgres@127.0.0.1:5432/test`. It makes its own `sy_t_…` database there.

mod procs;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use procs::{Proc, WAIT, backend_name, command, free_port, run};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use switchyard::store::Store;

const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/test";

/// `switchyard admin --data-dir DIR <args>` on the SQLite file, whatever the test backend.
fn sqlite_admin(dir: &Path, args: &[&str]) -> Command {
    let mut all = vec!["admin", "--data-dir", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut c = command(&all);
    c.env("SWITCHYARD_DATABASE_URL", "");
    c
}

fn ok(cmd: Command) -> String {
    let out = run(cmd);
    assert!(out.success(), "{out}");
    out.stdout
}

/// Fills a SQLite store through the CLI: an app, two users, a device shared between them.
fn seed(dir: &Path) {
    ok(sqlite_admin(dir, &["app", "add", "--appid", "mig-app", "--secret", "mig-secret-1"]));
    ok(sqlite_admin(dir, &["user", "add", "--email", "owner@example.com", "--password", "pass1234"]));
    ok(sqlite_admin(dir, &["user", "add", "--email", "guest@example.com", "--password", "pass1234"]));
    ok(sqlite_admin(dir, &["device", "add", "--deviceid", "1000000aa1", "--factory-apikey", "fk-1", "--owner", "owner@example.com"]));
    ok(sqlite_admin(dir, &["device", "share", "--deviceid", "1000000aa1", "--with", "guest@example.com"]));
}

#[test]
fn backup_copies_the_store_while_the_hub_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let mut cmd = command(&["serve", "--data-dir", data_s, "--http", &http, "--https", "off", "--metrics", "off"]);
    cmd.current_dir(tmp.path());
    let mut hub = Proc::spawn("serve", cmd);
    let deadline = Instant::now() + WAIT;
    while !hub.stderr().contains("hub started") {
        assert!(hub.try_status().is_none() && Instant::now() < deadline, "the hub did not start\n{}", hub.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Written while the hub runs, then copied while it still does.
    procs::admin_ok(&data, &["user", "add", "--email", "kept@example.com", "--password", "pass1234"]);
    let file = tmp.path().join("backup.db");
    let out = procs::admin(&data, &["backup", file.to_str().unwrap()]);
    if backend_name() == "PostgreSQL" {
        assert!(!out.success() && out.stderr.contains("pg_dump"), "{out}");
        return;
    }
    assert!(out.success(), "{out}\n{}", hub.stderr());
    assert!(file.exists());
    // A second backup to the same file is refused rather than overwriting it.
    let again = procs::admin(&data, &["backup", file.to_str().unwrap()]);
    assert!(!again.success() && again.stderr.contains("already exists"), "{again}");
    hub.terminate();
    hub.wait_exit();

    // The copy is a whole store: open it as one.
    let restored = tmp.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    std::fs::copy(&file, restored.join("switchyard.db")).unwrap();
    let listed = ok(sqlite_admin(&restored, &["user", "list"]));
    assert!(listed.contains("kept@example.com"), "{listed}");
}

/// The rows of every table, as text, for comparing two stores.
async fn rows_of(store_url: &str, tables: &[String]) -> Vec<(String, i64)> {
    let pool = sqlx::AnyPool::connect(store_url).await.unwrap();
    let mut out = Vec::new();
    for t in tables {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM \"{t}\""))).fetch_one(&pool).await.unwrap();
        out.push((t.clone(), n));
    }
    pool.close().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_moves_every_table_into_a_fresh_postgres_database() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let seeded = data.clone();
    tokio::task::spawn_blocking(move || seed(&seeded)).await.unwrap();

    let server = std::env::var("SWITCHYARD_TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_SERVER.into());
    let name = format!("sy_t_{}_{}_migrate", switchyard::clock::now_secs(), std::process::id());
    let base = server.split('?').next().unwrap();
    let target = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
    let mut admin_conn =
        PgConnection::connect(&server).await.unwrap_or_else(|e| panic!("PostgreSQL is needed for this test ({server}): {e}"));
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut admin_conn).await.unwrap();

    let (dir, to) = (data.clone(), target.clone());
    let out = tokio::task::spawn_blocking(move || run(sqlite_admin(&dir, &["migrate", "--to", &to]))).await.unwrap();
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("copied"), "{out}");

    // Every table has as many rows on both sides, and the moved store works as a store.
    sqlx::any::install_default_drivers();
    let tables: Vec<String> = {
        let pool = sqlx::AnyPool::connect(&target).await.unwrap();
        let t = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx%' ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        pool.close().await;
        t
    };
    assert!(tables.len() > 10, "{tables:?}");
    let sqlite_url = format!("sqlite://{}", data.join("switchyard.db").display());
    assert_eq!(rows_of(&target, &tables).await, rows_of(&sqlite_url, &tables).await);
    let moved = Store::open(&data, Some(&target)).await.unwrap();
    let users: Vec<String> = moved.users().await.unwrap().into_iter().filter_map(|u| u.email).collect();
    assert!(users.contains(&"owner@example.com".to_owned()) && users.contains(&"guest@example.com".to_owned()), "{users:?}");
    moved.close().await;

    // The target now holds data: a second move is refused and changes nothing.
    let (dir, to) = (data.clone(), target.clone());
    let again = tokio::task::spawn_blocking(move || run(sqlite_admin(&dir, &["migrate", "--to", &to]))).await.unwrap();
    assert!(!again.success() && again.stderr.contains("not empty"), "{again}");
    assert_eq!(rows_of(&target, &tables).await, rows_of(&sqlite_url, &tables).await);

    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))).execute(&mut admin_conn).await.unwrap();
}
