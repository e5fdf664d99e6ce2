//! Test harness: a real hub on port 0 (plain and TLS listeners) with its own data directory,
//! seeded through the real store, and WebSocket/HTTP clients that speak the real protocol.
//!
//! The store is the embedded SQLite file by default. With `SWITCHYARD_TEST_DATABASE_URL` set
//! (`postgres://postgres@127.0.0.1:5432/test`), every hub gets a fresh PostgreSQL database of its
//! own instead: see [`database`].
#![allow(dead_code)]

pub mod rest;
pub mod xlink;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchyard::emulate::{ClientWs, connect};
use switchyard::ids::{DeviceId, UserKey};
use switchyard::store::Store;
use switchyard::{Config, Hub, Settings};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_util::sync::CancellationToken;

use database::TestDatabase;
#[allow(unused_imports)]
pub use database::{backend_name, open_test_store};

pub const APPID: &str = "test-app";
pub const SECRET: &str = "test-secret-123";
pub const PASSWORD: &str = "pass1234";

pub struct TestHub {
    pub hub: Arc<Hub>,
    pub http: SocketAddr,
    pub https: SocketAddr,
    /// The operator listener (`/metrics`).
    pub metrics: SocketAddr,
    pub shutdown: CancellationToken,
    pub cert: PathBuf,
    finished: Option<tokio::task::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
    /// The hub's own PostgreSQL database (dropped with it); `None` on SQLite.
    database: Option<TestDatabase>,
}

/// A stopped hub's store, taken out of it with [`TestHub::keep_store`] so it outlives the hub.
pub struct KeptStore {
    pub dir: tempfile::TempDir,
    database: Option<TestDatabase>,
}

impl KeptStore {
    /// Opens the store the hub used.
    pub async fn open(&self) -> Store {
        let url = self.database.as_ref().map(|d| d.url.as_str());
        Store::open(&self.dir.path().join("data"), url).await.unwrap_or_else(|e| panic!("reopening the {} store: {e}", backend_name()))
    }
}

/// A seeded user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub email: String,
    pub apikey: UserKey,
    pub at: String,
}

impl TestHub {
    pub async fn start() -> TestHub {
        Self::start_with(|s| s).await
    }

    /// Starts a hub; `tune` may change settings (e.g. `ack_timeout_ms`).
    pub async fn start_with(tune: impl FnOnce(Settings) -> Settings) -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        switchyard::tls::ensure_dev_cert(&cert, &key).unwrap();
        let mut settings = Settings::new()
            .set("data_dir", dir.path().join("data").to_string_lossy())
            .set("http", "127.0.0.1:0")
            .set("https", "127.0.0.1:0")
            .set("metrics", "127.0.0.1:0")
            .set("tls_cert", cert.to_string_lossy())
            .set("tls_key", key.to_string_lossy());
        let database = TestDatabase::fresh();
        if let Some(db) = &database {
            settings = settings.set("database_url", db.url.clone());
        }
        let config = Config::resolve(&tune(settings)).unwrap();
        let shutdown = CancellationToken::new();
        let running =
            switchyard::start(config, shutdown.clone()).await.unwrap_or_else(|e| panic!("starting a hub on {}: {e}", backend_name()));
        let (hub, http, https, metrics) = (running.hub.clone(), running.http.unwrap(), running.https.unwrap(), running.metrics.unwrap());
        hub.store.add_app(APPID, SECRET).await.unwrap();
        let finished = Some(tokio::spawn(running.finished()));
        TestHub { hub, http, https, metrics, shutdown, cert, finished, dir, database }
    }

    /// Takes the data directory and database out of the hub, leaving throwaways, so that they
    /// survive [`TestHub::stop`] and the store can be reopened.
    pub fn keep_store(&mut self) -> KeptStore {
        KeptStore { dir: std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()), database: self.database.take() }
    }

    /// Runs `switchyard admin ARGS…` (the real binary) on this hub's store while the hub runs;
    /// returns its stdout, failing the test when it fails.
    pub fn admin(&self, args: &[&str]) -> String {
        let out = self.admin_run(args);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "switchyard admin {args:?} failed:\n{stdout}\n{stderr}");
        stdout.into_owned()
    }

    /// [`TestHub::admin`] that may fail.
    pub fn admin_run(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.arg("admin").arg("--data-dir").arg(self.dir.path().join("data"));
        if let Some(db) = &self.database {
            cmd.arg("--database-url").arg(&db.url);
        }
        cmd.args(args).env_remove("SWITCHYARD_DATABASE_URL").env_remove("SWITCHYARD_DATA_DIR").output().unwrap()
    }

    /// The store's URL, for a test that changes the database behind the hub's back.
    pub fn store_url(&self) -> String {
        match &self.database {
            Some(db) => db.url.clone(),
            None => format!("sqlite://{}", self.dir.path().join("data").join("switchyard.db").display()),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/ws", self.http)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Creates a user with a known password and an access token for APPID.
    pub async fn user(&self, email: &str) -> TestUser {
        let hash = switchyard::auth::hash_password(PASSWORD);
        let apikey = self.hub.store.add_user(Some(email), None, "+86", &hash, "cn").await.unwrap();
        let pair = self.hub.store.issue_tokens(&apikey, APPID, Duration::from_secs(3600), Duration::from_secs(7200)).await.unwrap();
        TestUser { email: email.to_owned(), apikey, at: pair.at }
    }

    /// Adds a device with factory key `key-<id>`, owned by `owner` when given.
    pub async fn device_record(&self, id: &str, owner: Option<&TestUser>) {
        self.hub.store.add_device(&DeviceId::new(id), &format!("key-{id}"), "EMU", 1, owner.map(|u| &u.apikey), "").await.unwrap();
    }

    pub async fn share(&self, id: &str, with: &TestUser) {
        self.hub.store.share_device(&DeviceId::new(id), &with.apikey, 15).await.unwrap();
        // Make the running hub see the change now rather than at its next poll.
        self.hub.acl.changed(&[DeviceId::new(id)]).await;
    }

    /// A raw socket, no handshake sent.
    pub async fn raw(&self) -> Client {
        Client { ws: connect(&self.ws_url(), None).await.unwrap() }
    }

    /// An app session that completed `userOnline`.
    pub async fn app(&self, user: &TestUser) -> Client {
        let mut c = self.raw().await;
        c.send(json!({"action":"userOnline","version":8,"ts":1,"at":user.at,"userAgent":"app","apikey":user.apikey.as_str(),"appid":APPID,"nonce":"abcd1234","sequence":"1"})).await;
        let reply = c.recv().await;
        assert_eq!(reply["error"], 0, "userOnline failed: {reply}");
        c
    }

    /// A device session that completed `register` (factory key `key-<id>`).
    pub async fn device(&self, id: &str) -> Client {
        let mut c = self.raw().await;
        c.send(json!({"userAgent":"device","apikey":format!("key-{id}"),"deviceid":id,"action":"register","version":2,"romVersion":"1.0","model":"EMU","ts":1})).await;
        let reply = c.recv().await;
        assert_eq!(reply["error"], 0, "register failed: {reply}");
        c
    }

    /// Stops the hub and waits until it has saved state and closed the store; then its data
    /// directory and database are removed (unless [`TestHub::keep_store`] took them).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(f) = self.finished.take() {
            f.await.unwrap();
        }
    }

    pub fn http_client(&self) -> reqwest::Client {
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
    }

    /// POSTs a Sign-authenticated JSON body (exact bytes given) to `path`.
    pub async fn post_signed(&self, path: &str, body: &str) -> Value {
        self.http_client()
            .post(format!("{}{path}", self.base()))
            .header("X-CK-Appid", APPID)
            .header("Authorization", format!("Sign {}", switchyard::auth::sign(SECRET, body.as_bytes())))
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// A test's end of a WebSocket.
pub struct Client {
    pub ws: ClientWs,
}

/// How long a test waits for a frame that should come.
pub const WAIT: Duration = Duration::from_secs(10);

impl Client {
    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    pub async fn send_text(&mut self, t: &str) {
        self.ws.send(Message::Text(t.to_owned().into())).await.unwrap();
    }

    /// The next text frame, as it was sent.
    pub async fn recv_text(&mut self) -> String {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for a frame") {
                Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        let t = self.recv_text().await;
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
    }

    /// Waits for the close frame (skipping text) and returns it.
    pub async fn recv_close(&mut self) -> Option<CloseFrame> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for close") {
                Some(Ok(Message::Close(c))) => return c,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Asserts nothing arrives for `ms` milliseconds.
    pub async fn silent_for(&mut self, ms: u64) {
        if let Ok(f) = tokio::time::timeout(Duration::from_millis(ms), self.ws.next()).await {
            panic!("expected silence, got {f:?}");
        }
    }
}

/// Polls `cond` (real time, every 2 ms) until it holds; fails the test after `limit`. Returns how
/// long it took.
pub async fn wait_until_within(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let started = std::time::Instant::now();
    while !cond() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

/// Polls `cond` (real time) until it holds; fails the test after 5 s.
pub async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_within(what, Duration::from_secs(5), cond).await;
}

/// [`wait_until`] for a check that has to await, such as a store query: polled every 20 ms.
pub async fn wait_until_async<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let started = std::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(5), "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Test databases, when `SWITCHYARD_TEST_DATABASE_URL` names a PostgreSQL server: each one is
/// created empty on that server (with `synchronous_commit` off), never reused, and named
/// `sy_t_<created unix secs>_<pid>_<tag>`.
///
/// A hub's database ([`TestDatabase::fresh`]) is dropped together with the hub. The databases the
/// real binary used for a data directory ([`database_for`]) live until the test process ends; the
/// first database a later test process creates sweeps those whose process has exited, once they
/// are [`STALE_AFTER_SECS`] old and nobody is connected. CI drops every unused `sy_t_` database
/// before the suite runs.
pub mod database {
    use std::collections::HashMap;
    use std::hash::{DefaultHasher, Hash, Hasher};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, OnceLock};
    use std::time::{SystemTime, UNIX_EPOCH};

    use sqlx::{AssertSqlSafe, Connection, PgConnection};
    use switchyard::store::Store;

    /// Names the PostgreSQL server (any database on it) to test against; unset means SQLite.
    pub const SERVER_VAR: &str = "SWITCHYARD_TEST_DATABASE_URL";
    /// How every test database's name begins.
    pub const PREFIX: &str = "sy_t_";
    /// Age past which a test database of an exited process is swept.
    pub const STALE_AFTER_SECS: u64 = 600;

    /// The server the tests run against, or `None` for the embedded SQLite store.
    pub fn server_url() -> Option<String> {
        std::env::var(SERVER_VAR).ok().filter(|u| !u.trim().is_empty())
    }

    /// The backend under test, for messages.
    pub fn backend_name() -> &'static str {
        if server_url().is_some() { "PostgreSQL" } else { "SQLite" }
    }

    /// One database of this test process, dropped (connections and all) when this value is.
    pub struct TestDatabase {
        pub name: String,
        pub url: String,
    }

    impl TestDatabase {
        /// A new empty database, or `None` when the tests run on SQLite.
        pub fn fresh() -> Option<TestDatabase> {
            let server = server_url()?;
            Some(create(server, new_name(rand::random())))
        }
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            let Some(server) = server_url() else { return };
            let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
            match blocking(async move { execute(&server, sql).await }) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("warning: could not drop test database {}: {e}", self.name),
                Err(_) => eprintln!("warning: could not drop test database {}", self.name),
            }
        }
    }

    /// The database for the store in `dir` as the real binary sees it (`SWITCHYARD_DATABASE_URL`):
    /// created on first use, the same one for every later use in this process; `None` on SQLite.
    pub fn database_for(dir: &Path) -> Option<String> {
        let server = server_url()?;
        // Never dropped: the binary may use a directory again until the very end of a test.
        static BY_DIR: OnceLock<Mutex<HashMap<PathBuf, TestDatabase>>> = OnceLock::new();
        let mut by_dir = BY_DIR.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        let db = by_dir.entry(dir.to_path_buf()).or_insert_with(|| {
            let mut h = DefaultHasher::new();
            dir.hash(&mut h);
            create(server, new_name(h.finish()))
        });
        Some(db.url.clone())
    }

    /// Opens the store of `dir` as the real binary does: the SQLite file in it, or its database.
    pub async fn open_test_store(dir: &Path) -> Store {
        let url = database_for(dir);
        Store::open(dir, url.as_deref()).await.unwrap_or_else(|e| panic!("opening the {} store of {}: {e}", backend_name(), dir.display()))
    }

    fn now_secs() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }

    fn new_name(tag: u64) -> String {
        format!("{PREFIX}{}_{}_{tag:016x}", now_secs(), std::process::id())
    }

    /// `server` with its database (the URL's path) replaced by `name`; the query is kept.
    fn url_for(server: &str, name: &str) -> String {
        let (head, query) = match server.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (server, None),
        };
        let authority = head.find("://").map_or(0, |i| i + 3);
        let path = head[authority..].find('/').map_or(head.len(), |i| authority + i);
        let mut url = format!("{}/{name}", &head[..path]);
        if let Some(q) = query {
            url.push('?');
            url.push_str(q);
        }
        url
    }

    /// Runs `f` to completion on a thread of its own with its own runtime, so that it works from
    /// plain and async tests alike and ignores a test's paused clock.
    fn blocking<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> std::thread::Result<T> {
        std::thread::spawn(move || tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(f))
            .join()
    }

    async fn execute(server: &str, sql: String) -> Result<(), sqlx::Error> {
        let mut conn = PgConnection::connect(server).await?;
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await?;
        conn.close().await
    }

    fn create(server: String, name: String) -> TestDatabase {
        let url = url_for(&server, &name);
        let made = blocking({
            let name = name.clone();
            let server = server.clone();
            async move {
                let mut conn = PgConnection::connect(&server).await?;
                static SWEPT: AtomicBool = AtomicBool::new(false);
                if !SWEPT.swap(true, Ordering::Relaxed) {
                    sweep(&mut conn).await;
                }
                sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut conn).await?;
                // A test database need not survive a crash of the server: commits do not wait for
                // the disk (it makes the suite on PostgreSQL about a third faster).
                sqlx::raw_sql(AssertSqlSafe(format!("ALTER DATABASE \"{name}\" SET synchronous_commit = off"))).execute(&mut conn).await?;
                conn.close().await
            }
        });
        match made {
            Ok(Ok(())) => TestDatabase { name, url },
            Ok(Err(e)) => panic!(
                "cannot create test database {name} on {server} ({SERVER_VAR}): {e}\n\
                 (is PostgreSQL running? unset {SERVER_VAR} to test on SQLite)"
            ),
            Err(_) => panic!("creating test database {name} on {server} panicked"),
        }
    }

    /// Drops the test databases of processes that have exited (see the module's doc).
    async fn sweep(conn: &mut PgConnection) {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'sy\\_t\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
        for name in names {
            let mut parts = name[PREFIX.len()..].split('_');
            let (Some(Ok(created)), Some(Ok(pid))) = (parts.next().map(str::parse::<u64>), parts.next().map(str::parse::<u32>)) else {
                continue;
            };
            if now_secs().saturating_sub(created) < STALE_AFTER_SECS || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            // Without FORCE, so a database somebody is connected to stays.
            let _ = sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\""))).execute(&mut *conn).await;
        }
    }
}
