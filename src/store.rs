//! The persistent store: app ids, users, tokens, products, devices, shares, invites, device state
//! and commands queued for offline devices.
//!
//! One [`Store`] over sqlx's `Any` pool, so the same SQL runs on both backends: an embedded SQLite
//! file under the data directory (the default; WAL mode, so `switchyard admin` can write while a
//! hub runs) or PostgreSQL (`--database-url postgres://…`). Queries use `$1` placeholders, which
//! both understand, and only `BIGINT`/`TEXT` values; where the SQL dialects differ the statement
//! asks [`Backend`]. Each backend has its own migrations folder with the same tables.
//!
//! Nothing here is called on the routing path: sessions read at handshake time, and device state,
//! history and messages are written in batches by [`crate::recorder::Recorder`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::{AnyPoolOptions, AnyRow};

use crate::audience::{Audience, DeviceSettings};
use crate::clock::now_secs;
use crate::ids::{AppId, DeviceId, UserKey};

mod accounts;
mod alarm_rule;
mod cluster;
mod committer;
mod copy;
pub mod device;
mod family;
mod firmware;
mod group;
mod history;
mod invite;
mod message;
mod offline;
mod operator;
mod product;
mod property;
mod share;
mod subscription;
mod wechat;
mod wechat_bind;

pub use accounts::{AccountError, ClosedAccount, NewAccount, Profile, ProfileChange};
pub use committer::Committer;
pub use copy::{Copied, CopyError};
pub use family::{FIRST_FAMILY_NAME, Family, FamilyError, MAX_FAMILIES, MAX_ROOMS, Placement, Room, Sort, ThingKind, ThingRef};
pub use firmware::{Firmware, FirmwareBin, compare_versions, valid_version};
pub use group::{Group, GroupError, MAX_GROUPS, NewGroup};
pub use history::{Actor, HistoryEntry, Notice, OPERATOR_AGENT, Operation, Usage};
pub use invite::{Answer, Invite, InviteError, InviteMode, InviteState, Invitee};
pub use message::Message;
pub use offline::{NewQueued, Queued, QueuedCommand};
pub use operator::{DeviceLabel, Operator};
pub use product::{DeviceDetails, NewProduct, Product, RegisterError, RegisteredDevice, normalize_mac, valid_product_id};
pub use property::{MAX_PROPERTIES, MAX_PROPERTY_KEY_BYTES, MAX_PROPERTY_VALUE_BYTES, PropertyError};
pub use share::{MAX_PERMIT, ShareError, Shared};
pub use subscription::{SubscribedDevice, Subscriptions};
pub use wechat::{AppCredentials, WeChatApp};
pub use wechat_bind::{AuthCounts, AuthState, WeChatBind, WeChatBindError, WeChatListener};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot prepare data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct User {
    pub apikey: UserKey,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub country_code: String,
    pub nickname: String,
    pub region: String,
    pub password_hash: String,
    pub created_at: i64,
}

/// A device as registration and the admin list read it: its factory key, model, owner, name and
/// stored state (the REST API's full row is [`device::DeviceRecord`]; the live connection is the
/// router's).
#[derive(Debug, Clone)]
pub struct DeviceBrief {
    pub deviceid: DeviceId,
    pub factory_apikey: String,
    pub model: String,
    pub uiid: i64,
    pub owner: Option<UserKey>,
    pub name: String,
    /// The last stored state, a JSON object.
    pub params: String,
    /// Whether it has registered once (seed 003's `is_active`).
    pub active: bool,
}

/// An access and refresh token pair as handed to a client; only their hashes are stored.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub at: String,
    pub rt: String,
}

/// What an access token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    Valid { apikey: UserKey, appid: AppId },
    Expired,
    Unknown,
}

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Joins text values of a group with commas (`group_concat` / `string_agg`).
    pub fn concat(self, expr: &str) -> String {
        match self {
            Backend::Sqlite => format!("group_concat({expr}, ',')"),
            Backend::Postgres => format!("string_agg({expr}, ',')"),
        }
    }
}

/// What every connection to the embedded store sets first.
const SQLITE_PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;";

#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    /// Where the store is, for the recorder's own connection ([`Store::committer`]).
    location: Arc<Location>,
}

/// Where a [`Store`]'s data is.
enum Location {
    /// The SQLite file.
    Sqlite(std::path::PathBuf),
    /// The PostgreSQL server's URL.
    Postgres(String),
}

/// Devices per query of [`Store::audiences_of`] (one parameter each, well under both backends'
/// limits).
const AUDIENCES_PER_QUERY: usize = 500;

/// A new id for a family, room, group or message: 24 hex digits, the shape the cloud's ids have.
pub fn new_id() -> String {
    random_hex(12)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A new user apikey in the UUID shape the cloud uses.
fn new_apikey() -> String {
    let h = random_hex(16);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// `apikey:permit` pairs joined by `group_concat`, as sharees sorted by apikey and their permits.
fn split_shares(joined: Option<String>) -> (Vec<UserKey>, Vec<i64>) {
    let mut pairs: Vec<(UserKey, i64)> = joined
        .iter()
        .flat_map(|j| j.split(','))
        .filter_map(|p| p.rsplit_once(':'))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, permit)| (UserKey::new(k), permit.parse().unwrap_or(0)))
        .collect();
    pairs.sort();
    pairs.into_iter().unzip()
}

/// The SQL text of one share as [`split_shares`] reads it.
const SHARE_PAIR: &str = "s.apikey || ':' || CAST(s.permit AS TEXT)";

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl Store {
    /// Opens the store and applies migrations: PostgreSQL when `database_url` is given, else
    /// the SQLite file `switchyard.db` in `data_dir` (created if needed).
    pub async fn open(data_dir: &Path, database_url: Option<&str>) -> Result<Store> {
        sqlx::any::install_default_drivers();
        match database_url {
            Some(url) => {
                let pool = AnyPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(10)).connect(url).await?;
                sqlx::migrate!("migrations/postgres").run(&pool).await?;
                Ok(Store { pool, backend: Backend::Postgres, location: Arc::new(Location::Postgres(url.to_owned())) })
            }
            None => {
                std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir { path: data_dir.display().to_string(), source })?;
                let dir = std::fs::canonicalize(data_dir)
                    .map_err(|source| StoreError::DataDir { path: data_dir.display().to_string(), source })?;
                let file = dir.join("switchyard.db");
                let url = format!("sqlite://{}?mode=rwc", file.display());
                let pool = AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            use sqlx::Executor;
                            conn.execute(SQLITE_PRAGMAS).await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?;
                sqlx::migrate!("migrations/sqlite").run(&pool).await?;
                Ok(Store { pool, backend: Backend::Sqlite, location: Arc::new(Location::Sqlite(file)) })
            }
        }
    }

    /// Starts a transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`): a
    /// transaction that reads before it writes would otherwise fail with "database is locked",
    /// without waiting, whenever another connection committed in between; this way it waits
    /// (up to the busy timeout) at the start instead.
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// The same inside a caller's transaction.
    pub(crate) async fn bump_acl_in(conn: &mut sqlx::AnyConnection) -> Result<()> {
        sqlx::query("UPDATE meta SET value = value + 1 WHERE key = 'acl_version'").execute(conn).await?;
        Ok(())
    }

    pub async fn acl_version(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = 'acl_version'").fetch_one(&self.pool).await?)
    }

    // --- app ids -------------------------------------------------------------------------

    pub async fn add_app(&self, appid: &str, secret: &str) -> Result<()> {
        sqlx::query("INSERT INTO apps (appid, secret, created_at) VALUES ($1, $2, $3)")
            .bind(appid)
            .bind(secret)
            .bind(now_secs())
            .execute(&self.pool)
            .await
            .map_err(|e| if unique_violation(&e) { StoreError::Conflict(format!("app {appid}")) } else { e.into() })?;
        Ok(())
    }

    pub async fn app_secret(&self, appid: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT secret FROM apps WHERE appid = $1").bind(appid).fetch_optional(&self.pool).await?)
    }

    // --- users ---------------------------------------------------------------------------

    pub async fn add_user(
        &self,
        email: Option<&str>,
        phone: Option<&str>,
        country_code: &str,
        password_hash: &str,
        region: &str,
    ) -> Result<UserKey> {
        let apikey = new_apikey();
        let email = email.map(str::to_ascii_lowercase);
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO users (apikey, email, phone, country_code, password_hash, region, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&apikey)
        .bind(&email)
        .bind(phone)
        .bind(country_code)
        .bind(password_hash)
        .bind(region)
        .bind(now_secs())
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if unique_violation(&e) { StoreError::Conflict(format!("user {}", email.as_deref().or(phone).unwrap_or(""))) } else { e.into() }
        })?;
        // Every account starts with a family, which is its current one.
        Self::create_family_in(&mut tx, &apikey, FIRST_FAMILY_NAME, Sort::First).await?;
        tx.commit().await?;
        Ok(UserKey::new(apikey))
    }

    const USER_COLUMNS: &str = "apikey, email, phone, country_code, nickname, region, password_hash, created_at";

    fn user_from(row: AnyRow) -> User {
        User {
            apikey: UserKey::new(row.get::<String, _>(0)),
            email: row.get(1),
            phone: row.get(2),
            country_code: row.get(3),
            nickname: row.get(4),
            region: row.get(5),
            password_hash: row.get(6),
            created_at: row.get(7),
        }
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {} FROM users WHERE email = $1", Self::USER_COLUMNS);
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(email.to_ascii_lowercase()).fetch_optional(&self.pool).await?;
        Ok(row.map(Self::user_from))
    }

    pub async fn user_by_phone(&self, phone: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {} FROM users WHERE phone = $1", Self::USER_COLUMNS);
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(phone).fetch_optional(&self.pool).await?;
        Ok(row.map(Self::user_from))
    }

    pub async fn user(&self, apikey: &UserKey) -> Result<Option<User>> {
        let sql = format!("SELECT {} FROM users WHERE apikey = $1", Self::USER_COLUMNS);
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(apikey.as_str()).fetch_optional(&self.pool).await?;
        Ok(row.map(Self::user_from))
    }

    pub async fn users(&self) -> Result<Vec<User>> {
        let sql = format!("SELECT {} FROM users ORDER BY created_at, apikey", Self::USER_COLUMNS);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(Self::user_from).collect())
    }

    // --- tokens --------------------------------------------------------------------------

    /// Issues a new access/refresh pair for `apikey` through `appid`.
    pub async fn issue_tokens(&self, apikey: &UserKey, appid: &str, at_ttl: Duration, rt_ttl: Duration) -> Result<TokenPair> {
        let pair = TokenPair { at: random_hex(20), rt: random_hex(20) };
        let pair_id = random_hex(8);
        let now = now_secs();
        let mut tx = self.begin().await?;
        for (token, kind, ttl) in [(&pair.at, "at", at_ttl), (&pair.rt, "rt", rt_ttl)] {
            sqlx::query("INSERT INTO tokens (hash, kind, pair, apikey, appid, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(token_hash(token))
                .bind(kind)
                .bind(&pair_id)
                .bind(apikey.as_str())
                .bind(appid)
                .bind(now + ttl.as_secs() as i64)
                .execute(&mut *tx)
                .await?;
        }
        // Keep expired tokens a while so their owners hear 402 (expired), not 401 (unknown).
        sqlx::query("DELETE FROM tokens WHERE expires_at < $1").bind(now - 90 * 86_400).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(pair)
    }

    async fn check(&self, token: &str, kind: &str) -> Result<(TokenCheck, Option<String>)> {
        let row = sqlx::query("SELECT apikey, appid, expires_at, pair FROM tokens WHERE hash = $1 AND kind = $2")
            .bind(token_hash(token))
            .bind(kind)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            None => (TokenCheck::Unknown, None),
            Some(row) if row.get::<i64, _>(2) < now_secs() => (TokenCheck::Expired, None),
            Some(row) => (
                TokenCheck::Valid { apikey: UserKey::new(row.get::<String, _>(0)), appid: AppId::new(row.get::<String, _>(1)) },
                Some(row.get(3)),
            ),
        })
    }

    pub async fn check_access(&self, at: &str) -> Result<TokenCheck> {
        Ok(self.check(at, "at").await?.0)
    }

    /// Exchanges a refresh token for a new pair; the old pair stops working at once. With
    /// `bound_at`, the access token must belong to the same pair as `rt`.
    pub async fn refresh(
        &self,
        rt: &str,
        bound_at: Option<&str>,
        at_ttl: Duration,
        rt_ttl: Duration,
    ) -> Result<(TokenCheck, Option<TokenPair>)> {
        let (check, pair_id) = self.check(rt, "rt").await?;
        let TokenCheck::Valid { apikey, appid } = &check else { return Ok((check, None)) };
        if let Some(at) = bound_at {
            let at_pair: Option<String> = sqlx::query_scalar("SELECT pair FROM tokens WHERE hash = $1 AND kind = 'at'")
                .bind(token_hash(at))
                .fetch_optional(&self.pool)
                .await?;
            if at_pair != pair_id {
                return Ok((TokenCheck::Unknown, None));
            }
        }
        let deleted = sqlx::query("DELETE FROM tokens WHERE pair = $1").bind(pair_id).execute(&self.pool).await?;
        if deleted.rows_affected() == 0 {
            // Another request rotated the same refresh token first.
            return Ok((TokenCheck::Unknown, None));
        }
        let pair = self.issue_tokens(apikey, appid.as_str(), at_ttl, rt_ttl).await?;
        Ok((check, Some(pair)))
    }

    /// Revokes the pair an access token belongs to.
    pub async fn revoke(&self, at: &str) -> Result<()> {
        sqlx::query("DELETE FROM tokens WHERE pair = (SELECT pair FROM tokens WHERE hash = $1 AND kind = 'at')")
            .bind(token_hash(at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // --- devices and shares --------------------------------------------------------------

    /// Adds a factory device record (owned, and placed in the owner's current family, when an
    /// owner is given); see [`Store::add_factory_device`] for the optional factory details.
    pub async fn add_device(
        &self,
        deviceid: &DeviceId,
        factory_apikey: &str,
        model: &str,
        uiid: i64,
        owner: Option<&UserKey>,
        name: &str,
    ) -> Result<()> {
        self.add_factory_device(deviceid, factory_apikey, model, uiid, owner, name, &device::FactoryDetails::default()).await
    }

    const DEVICE_COLUMNS: &str = "deviceid, factory_apikey, model, uiid, owner, name, params, active_at";

    fn device_from(row: AnyRow) -> DeviceBrief {
        DeviceBrief {
            deviceid: DeviceId::new(row.get::<String, _>(0)),
            factory_apikey: row.get(1),
            model: row.get(2),
            uiid: row.get(3),
            owner: row.get::<Option<String>, _>(4).map(UserKey::new),
            name: row.get(5),
            params: row.get(6),
            active: row.get::<Option<i64>, _>(7).is_some(),
        }
    }

    pub async fn device(&self, deviceid: &str) -> Result<Option<DeviceBrief>> {
        let sql = format!("SELECT {} FROM devices WHERE deviceid = $1", Self::DEVICE_COLUMNS);
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(deviceid).fetch_optional(&self.pool).await?.map(Self::device_from))
    }

    pub async fn devices(&self) -> Result<Vec<DeviceBrief>> {
        let sql = format!("SELECT {} FROM devices ORDER BY deviceid", Self::DEVICE_COLUMNS);
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?.into_iter().map(Self::device_from).collect())
    }

    /// Shares `deviceid` with `with` for its owner (the admin command's door): the same write as
    /// the REST route's ([`Store::share_devices`]: placement, notice, access-control bump). Sharing
    /// with the owner or twice is a conflict.
    pub async fn share_device(&self, deviceid: &DeviceId, with: &UserKey, permit: i64) -> Result<()> {
        let audience = self.audience(deviceid).await?;
        let Some(audience) = audience else {
            let found = self.device(deviceid.as_str()).await?.is_some();
            return Err(StoreError::NotFound(if found { format!("an owner of device {deviceid}") } else { format!("device {deviceid}") }));
        };
        if &audience.owner == with {
            return Err(StoreError::Conflict(format!("ownership of device {deviceid} by {with}")));
        }
        if audience.sharees.contains(with) {
            return Err(StoreError::Conflict(format!("share of {deviceid} with {with}")));
        }
        self.share_devices(&audience.owner, &[deviceid.as_str().to_owned()], with, permit, "").await.map_err(|e| match e {
            ShareError::Store(e) => e,
            other => StoreError::Conflict(other.to_string()),
        })?;
        Ok(())
    }

    /// A device's record and its audience in one query (what `register` needs).
    pub async fn device_with_audience(&self, deviceid: &str) -> Result<Option<(DeviceBrief, Option<Audience>)>> {
        let sql = format!(
            "SELECT {}, (SELECT {} FROM shares s WHERE s.deviceid = devices.deviceid), settings FROM devices WHERE deviceid = $1",
            Self::DEVICE_COLUMNS,
            self.backend.concat(SHARE_PAIR)
        );
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(deviceid).fetch_optional(&self.pool).await? else { return Ok(None) };
        let (sharees, permits) = split_shares(row.get(8));
        let settings = DeviceSettings::from_json(&row.get::<String, _>(9));
        let device = Self::device_from(row);
        let audience = device.owner.clone().map(|owner| Audience { owner, sharees, permits, settings });
        Ok(Some((device, audience)))
    }

    /// Owner and sharees of each of `devices` that has an owner, one query per
    /// [`AUDIENCES_PER_QUERY`] devices (for access-control reloads: what a node reads is its own
    /// online devices, never the whole fleet of a cluster).
    pub async fn audiences_of(&self, devices: &[DeviceId]) -> Result<HashMap<DeviceId, Audience>> {
        let mut found = HashMap::with_capacity(devices.len());
        for chunk in devices.chunks(AUDIENCES_PER_QUERY) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT d.deviceid, d.owner, {}, d.settings FROM devices d LEFT JOIN shares s ON s.deviceid = d.deviceid \
                 WHERE d.owner IS NOT NULL AND d.deviceid IN ({}) GROUP BY d.deviceid, d.owner, d.settings",
                self.backend.concat(SHARE_PAIR),
                marks.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for d in chunk {
                query = query.bind(d.as_str());
            }
            for row in query.fetch_all(&self.pool).await? {
                let id = DeviceId::new(row.get::<String, _>(0));
                let (sharees, permits) = split_shares(row.get(2));
                let settings = DeviceSettings::from_json(&row.get::<String, _>(3));
                found.insert(id, Audience { owner: UserKey::new(row.get::<String, _>(1)), sharees, permits, settings });
            }
        }
        Ok(found)
    }

    /// Owner and sharees of one device; `None` when it has no owner (or does not exist).
    pub async fn audience(&self, deviceid: &DeviceId) -> Result<Option<Audience>> {
        let row = sqlx::query("SELECT owner, settings FROM devices WHERE deviceid = $1")
            .bind(deviceid.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let Some(owner) = row.get::<Option<String>, _>(0) else { return Ok(None) };
        let settings = DeviceSettings::from_json(&row.get::<String, _>(1));
        let shares = sqlx::query("SELECT apikey, permit FROM shares WHERE deviceid = $1 ORDER BY created_at, apikey")
            .bind(deviceid.as_str())
            .fetch_all(&self.pool)
            .await?;
        let (sharees, permits) = shares.into_iter().map(|r| (UserKey::new(r.get::<String, _>(0)), r.get::<i64, _>(1))).unzip();
        Ok(Some(Audience { owner: UserKey::new(owner), sharees, permits, settings }))
    }

    /// Every device `user` owns or has shared with them.
    pub async fn reachable(&self, user: &UserKey) -> Result<std::collections::HashSet<DeviceId>> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT deviceid FROM devices WHERE owner = $1 UNION SELECT deviceid FROM shares WHERE apikey = $2")
                .bind(user.as_str())
                .bind(user.as_str())
                .fetch_all(&self.pool)
                .await?;
        Ok(ids.into_iter().map(DeviceId::new).collect())
    }

    /// Writes the latest state of several devices in one transaction.
    pub async fn save_params(&self, batch: &[(DeviceId, String)]) -> Result<()> {
        let mut tx = self.begin().await?;
        Self::save_params_in(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The same inside a caller's transaction.
    pub(crate) async fn save_params_in(conn: &mut sqlx::AnyConnection, batch: &[(DeviceId, String)]) -> Result<()> {
        for (deviceid, params) in batch {
            sqlx::query("UPDATE devices SET params = $1 WHERE deviceid = $2")
                .bind(params)
                .bind(deviceid.as_str())
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
