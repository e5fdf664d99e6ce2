//! The seed-003 view of a user's devices: every device they own ("manage") or have a share of,
//! with its product, MAC, firmware details and activation, and the version of that list.
//!
//! The version is a per-user number kept beside a digest of the stored fields the list shows
//! (not `is_online` or `last_login`, which the live hub answers). Reading the list compares its
//! digest with the one last numbered and, when they differ, takes the next number in one
//! compare-and-set. So every change, whichever door made it (seed 004's `update-info`, a share
//! accepted by invite or made by `/v2/device/share`, `switchyard admin`, a released device, a
//! device's first `register`, a firmware version the device reports), raises the version the
//! next reader sees, without each writer having to know about versions; and a list that did not
//! change keeps its number however often it is polled.

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Result, Store};
use crate::ids::UserKey;

/// One device of a user's subscribed list, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribedDevice {
    pub deviceid: String,
    pub name: String,
    /// "" when the device has no product.
    pub product_id: String,
    /// 12 lowercase hex digits, "" when unknown.
    pub mac: String,
    pub access_key: String,
    pub mcu_mod: String,
    pub mcu_version: String,
    pub firmware_mod: String,
    /// The `fwVersion` the device last reported, else the one it was registered with.
    pub firmware_version: String,
    /// When the device first registered on the socket (milliseconds), `None` before.
    pub active_at: Option<i64>,
    /// When it last registered (milliseconds); not part of the digest.
    pub last_login: Option<i64>,
    /// The caller owns (manages) the device, rather than having a share of it.
    pub managed: bool,
}

/// A user's subscribed list and its version.
#[derive(Debug, Clone)]
pub struct Subscriptions {
    pub version: i64,
    pub devices: Vec<SubscribedDevice>,
}

/// What the version numbers: every listed field but `last_login`.
fn fingerprint(devices: &[SubscribedDevice]) -> String {
    let mut h = Sha256::new();
    for d in devices {
        for field in [
            d.deviceid.as_str(),
            &d.name,
            &d.product_id,
            &d.mac,
            &d.access_key,
            &d.mcu_mod,
            &d.mcu_version,
            &d.firmware_mod,
            &d.firmware_version,
            &d.active_at.map(|t| t.to_string()).unwrap_or_default(),
            if d.managed { "m" } else { "s" },
        ] {
            h.update(field.len().to_le_bytes());
            h.update(field.as_bytes());
        }
    }
    hex::encode(h.finalize())
}

const COLUMNS: &str = "d.deviceid, d.name, d.product_id, d.mac, d.access_key, d.mcu_mod, d.mcu_version, d.firmware_mod, \
     d.firmware_version, d.active_at, d.last_login, d.params, d.owner";

fn device_from(r: AnyRow, viewer: &UserKey) -> SubscribedDevice {
    let params: String = r.get(11);
    let reported = serde_json::from_str::<Value>(&params)
        .ok()
        .and_then(|p| p.get("fwVersion").and_then(Value::as_str).map(str::to_owned))
        .filter(|v| !v.is_empty());
    SubscribedDevice {
        deviceid: r.get(0),
        name: r.get(1),
        product_id: r.get::<Option<String>, _>(2).unwrap_or_default(),
        mac: r.get::<Option<String>, _>(3).unwrap_or_default(),
        access_key: r.get(4),
        mcu_mod: r.get(5),
        mcu_version: r.get(6),
        firmware_mod: r.get(7),
        firmware_version: reported.unwrap_or_else(|| r.get(8)),
        active_at: r.get(9),
        last_login: r.get(10),
        managed: r.get::<Option<String>, _>(12).as_deref() == Some(viewer.as_str()),
    }
}

impl Store {
    /// One device as `viewer`'s list would show it (whether or not it is in their list).
    pub async fn subscribed_device(&self, viewer: &UserKey, deviceid: &str) -> Result<Option<SubscribedDevice>> {
        let sql = format!("SELECT {COLUMNS} FROM devices d WHERE d.deviceid = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(deviceid).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| device_from(r, viewer)))
    }

    /// The devices `user` owns or has a share of, by id, with the list's version.
    pub async fn subscriptions(&self, user: &UserKey) -> Result<Subscriptions> {
        let sql = format!(
            "SELECT {COLUMNS} FROM devices d \
             WHERE d.owner = $1 OR d.deviceid IN (SELECT deviceid FROM shares WHERE apikey = $1) ORDER BY d.deviceid"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user.as_str()).fetch_all(&self.pool).await?;
        let devices: Vec<SubscribedDevice> = rows.into_iter().map(|r| device_from(r, user)).collect();
        let version = self.list_version(user, &fingerprint(&devices)).await?;
        Ok(Subscriptions { version, devices })
    }

    /// The version numbering `digest` for `user`: the stored one when the digest is the same,
    /// else the next number (1 for a user's first list).
    async fn list_version(&self, user: &UserKey, digest: &str) -> Result<i64> {
        let stored = sqlx::query("SELECT version, fingerprint FROM device_list_versions WHERE apikey = $1")
            .bind(user.as_str())
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = &stored
            && row.get::<String, _>(1) == digest
        {
            return Ok(row.get(0));
        }
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO device_list_versions (apikey, version, fingerprint) VALUES ($1, 0, '') ON CONFLICT (apikey) DO NOTHING")
            .bind(user.as_str())
            .execute(&mut *tx)
            .await?;
        // Compare-and-set: of two readers seeing the same change, only the first raises it.
        sqlx::query("UPDATE device_list_versions SET version = version + 1, fingerprint = $1 WHERE apikey = $2 AND fingerprint <> $1")
            .bind(digest)
            .bind(user.as_str())
            .execute(&mut *tx)
            .await?;
        let version: i64 = sqlx::query_scalar("SELECT version FROM device_list_versions WHERE apikey = $1")
            .bind(user.as_str())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// A device registered on the socket at `at` (milliseconds): its latest login, and its
    /// activation when this is the first. One statement.
    pub async fn device_logged_in(&self, deviceid: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE devices SET last_login = $1, active_at = COALESCE(active_at, $1) WHERE deviceid = $2")
            .bind(at)
            .bind(deviceid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
