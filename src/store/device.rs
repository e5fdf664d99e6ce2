//! Devices as users keep them: the factory record with what its owner set (name, settings, tags),
//! claiming a device for an account and giving it up, and the batched reads a thing list is
//! rendered from (records, shares, people, groups), a few queries per list whatever its length.

use std::collections::HashMap;

use serde_json::{Map, Value};
use sqlx::{AnyConnection, Row};

use super::{Placement, Result, Sort, Store, StoreError, ThingKind, unique_violation};
use crate::clock::{now_millis, now_secs};
use crate::ids::{DeviceId, UserKey};

/// What a device's settings are until its owner changes them.
pub const DEFAULT_SETTINGS: &str = r#"{"opsNotify":0,"opsHistory":1,"alarmNotify":1}"#;

/// Ids per `IN (…)` list, well under both backends' parameter limits.
const CHUNK: usize = 500;

/// A device's row: the factory record and what its owner set.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    pub deviceid: String,
    pub factory_apikey: String,
    pub model: String,
    pub uiid: i64,
    pub owner: Option<String>,
    pub name: String,
    /// The last stored state, a JSON object.
    pub params: String,
    /// JSON object.
    pub settings: String,
    /// JSON object, or none.
    pub tags: Option<String>,
    /// The factory's extra details, a JSON object.
    pub extra: String,
    pub chipid: Option<String>,
    pub brand_name: String,
    pub brand_logo: String,
    pub product_model: String,
    pub dev_config: Option<String>,
    pub gsm_id: Option<String>,
    pub owned_at: Option<i64>,
}

const RECORD_COLUMNS: &str = "deviceid, factory_apikey, model, uiid, owner, name, params, settings, tags, extra, chipid, \
     brand_name, brand_logo, product_model, dev_config, gsm_id, owned_at";

fn record_from(r: sqlx::any::AnyRow) -> DeviceRecord {
    DeviceRecord {
        deviceid: r.get(0),
        factory_apikey: r.get(1),
        model: r.get(2),
        uiid: r.get(3),
        owner: r.get(4),
        name: r.get(5),
        params: r.get(6),
        settings: r.get(7),
        tags: r.get(8),
        extra: r.get(9),
        chipid: r.get(10),
        brand_name: r.get(11),
        brand_logo: r.get(12),
        product_model: r.get(13),
        dev_config: r.get(14),
        gsm_id: r.get(15),
        owned_at: r.get(16),
    }
}

/// One share of a device, with the sharee's contact details.
#[derive(Debug, Clone)]
pub struct ShareEntry {
    pub deviceid: String,
    pub apikey: String,
    pub permit: i64,
    pub comment: String,
    /// When it was shared, milliseconds since the epoch.
    pub shared_at: i64,
    pub person: Person,
}

/// A user as another user sees them in a share.
#[derive(Debug, Clone)]
pub struct Person {
    pub apikey: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub nickname: String,
}

/// A device group.
#[derive(Debug, Clone)]
pub struct GroupRecord {
    pub id: String,
    pub apikey: String,
    pub name: String,
    pub main_deviceid: String,
    /// JSON object.
    pub params: String,
}

/// What a user is to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Sharee { permit: i64 },
}

/// Why a change to a device was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No such device, family or room among the caller's (other users' look the same).
    #[error("{0} not found")]
    NotFound(String),
    /// The device belongs to another account.
    #[error("the device belongs to another account")]
    Taken,
    /// The caller keeps the device but may not do this (a sharee renaming it, …).
    #[error("{0}")]
    Forbidden(&'static str),
    /// The result would be larger than allowed.
    #[error("{0} too large")]
    TooLarge(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for DeviceError {
    fn from(e: sqlx::Error) -> Self {
        DeviceError::Store(e.into())
    }
}

/// Factory details beyond id, key, model and uiid (all optional).
#[derive(Debug, Clone, Default)]
pub struct FactoryDetails {
    pub chipid: Option<String>,
    pub gsm_id: Option<String>,
    pub brand_name: Option<String>,
    pub product_model: Option<String>,
    pub mac: Option<String>,
    /// The product the device is an instance of (see [`crate::store::Product`]); its MAC is then
    /// kept normalised, one device per product and MAC.
    pub product_id: Option<String>,
}

/// `$first, $first+1, …` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Share times were once kept in seconds; answer milliseconds either way.
fn as_millis(t: i64) -> i64 {
    if t < 100_000_000_000 { t * 1000 } else { t }
}

impl Store {
    pub async fn device_record(&self, deviceid: &str) -> Result<Option<DeviceRecord>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM devices WHERE deviceid = $1");
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(deviceid).fetch_optional(&self.pool).await?.map(record_from))
    }

    pub async fn device_record_by_gsm(&self, gsm_id: &str) -> Result<Option<DeviceRecord>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM devices WHERE gsm_id = $1");
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(gsm_id).fetch_optional(&self.pool).await?.map(record_from))
    }

    /// The records of several devices, by id (unknown ids are absent).
    pub async fn device_records(&self, ids: &[String]) -> Result<HashMap<String, DeviceRecord>> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let sql = format!("SELECT {RECORD_COLUMNS} FROM devices WHERE deviceid IN ({})", placeholders(1, chunk.len()));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(&self.pool).await? {
                let rec = record_from(r);
                out.insert(rec.deviceid.clone(), rec);
            }
        }
        Ok(out)
    }

    /// Every share of the given devices with the sharees' details, oldest first.
    pub async fn shares_of(&self, ids: &[String]) -> Result<Vec<ShareEntry>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT s.deviceid, s.apikey, s.permit, s.comment, s.created_at, u.phone, u.email, u.nickname \
                 FROM shares s JOIN users u ON u.apikey = s.apikey WHERE s.deviceid IN ({}) ORDER BY s.created_at, s.apikey",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            out.extend(q.fetch_all(&self.pool).await?.into_iter().map(|r| {
                let apikey: String = r.get(1);
                ShareEntry {
                    deviceid: r.get(0),
                    apikey: apikey.clone(),
                    permit: r.get(2),
                    comment: r.get(3),
                    shared_at: as_millis(r.get(4)),
                    person: Person { apikey, phone: r.get(5), email: r.get(6), nickname: r.get(7) },
                }
            }));
        }
        Ok(out)
    }

    /// Contact details of several users, by apikey.
    pub async fn people(&self, apikeys: &[String]) -> Result<HashMap<String, Person>> {
        let mut out = HashMap::with_capacity(apikeys.len());
        for chunk in apikeys.chunks(CHUNK) {
            let sql = format!("SELECT apikey, phone, email, nickname FROM users WHERE apikey IN ({})", placeholders(1, chunk.len()));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for k in chunk {
                q = q.bind(k);
            }
            for r in q.fetch_all(&self.pool).await? {
                let p = Person { apikey: r.get(0), phone: r.get(1), email: r.get(2), nickname: r.get(3) };
                out.insert(p.apikey.clone(), p);
            }
        }
        Ok(out)
    }

    /// `(deviceid, groupid)` for each of `viewer`'s groups that holds (or is built on) one of
    /// the given devices, in group creation order.
    pub async fn viewer_groups_of(&self, viewer: &UserKey, ids: &[String]) -> Result<Vec<(String, String)>> {
        let mut out: Vec<(String, String)> = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let list = placeholders(2, chunk.len());
            let sql = format!(
                "SELECT m.deviceid, g.id, g.created_at FROM group_members m JOIN device_groups g ON g.id = m.groupid \
                 WHERE g.apikey = $1 AND m.deviceid IN ({list}) \
                 UNION SELECT g.main_deviceid, g.id, g.created_at FROM device_groups g WHERE g.apikey = $1 AND g.main_deviceid IN ({list}) \
                 ORDER BY 3, 2"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(viewer.as_str());
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(&self.pool).await? {
                let pair: (String, String) = (r.get(0), r.get(1));
                if !out.contains(&pair) {
                    out.push(pair);
                }
            }
        }
        Ok(out)
    }

    /// Several of `viewer`'s groups, by id (others' and unknown ids are absent).
    pub async fn viewer_groups(&self, viewer: &UserKey, ids: &[String]) -> Result<HashMap<String, GroupRecord>> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT id, apikey, name, main_deviceid, params FROM device_groups WHERE apikey = $1 AND id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(viewer.as_str());
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(&self.pool).await? {
                let g = GroupRecord { id: r.get(0), apikey: r.get(1), name: r.get(2), main_deviceid: r.get(3), params: r.get(4) };
                out.insert(g.id.clone(), g);
            }
        }
        Ok(out)
    }

    /// The devices of one of `viewer`'s groups (its main device first); `None` when the group is
    /// not theirs.
    pub async fn viewer_group_devices(&self, viewer: &UserKey, groupid: &str) -> Result<Option<Vec<String>>> {
        let main: Option<String> = sqlx::query_scalar("SELECT main_deviceid FROM device_groups WHERE id = $1 AND apikey = $2")
            .bind(groupid)
            .bind(viewer.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(main) = main else { return Ok(None) };
        let members: Vec<String> = sqlx::query_scalar("SELECT deviceid FROM group_members WHERE groupid = $1 ORDER BY deviceid")
            .bind(groupid)
            .fetch_all(&self.pool)
            .await?;
        let mut ids: Vec<String> = members.into_iter().filter(|m| m != &main).collect();
        ids.insert(0, main);
        Ok(Some(ids))
    }

    /// A page of a family's things as `user` keeps them: index > `begin` (exclusive, so a client
    /// that pages with the last index it saw gets no duplicates), at most `num`
    /// (0 = all), by index; with the number of things in the family.
    pub async fn things_page(&self, user: &UserKey, familyid: &str, begin: i64, num: i64) -> Result<(Vec<Placement>, i64)> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM things WHERE apikey = $1 AND familyid = $2")
            .bind(user.as_str())
            .bind(familyid)
            .fetch_one(&self.pool)
            .await?;
        let limit = if num <= 0 { i64::MAX } else { num };
        let rows = sqlx::query(
            "SELECT kind, thingid, familyid, roomid, idx FROM things WHERE apikey = $1 AND familyid = $2 AND idx > $3 \
             ORDER BY idx, thingid LIMIT $4",
        )
        .bind(user.as_str())
        .bind(familyid)
        .bind(begin)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok((rows.into_iter().filter_map(placement_from).collect(), total))
    }

    /// Where `user` keeps each of the given things (those they do not keep are absent).
    pub async fn placements_of(&self, user: &UserKey, ids: &[String]) -> Result<Vec<Placement>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let sql = format!(
                "SELECT kind, thingid, familyid, roomid, idx FROM things WHERE apikey = $1 AND thingid IN ({}) ORDER BY idx, thingid",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user.as_str());
            for id in chunk {
                q = q.bind(id);
            }
            out.extend(q.fetch_all(&self.pool).await?.into_iter().filter_map(placement_from));
        }
        Ok(out)
    }

    pub(crate) async fn role_in(conn: &mut AnyConnection, user: &str, deviceid: &str) -> Result<Option<Role>> {
        let row = sqlx::query(
            "SELECT d.owner, s.permit FROM devices d LEFT JOIN shares s ON s.deviceid = d.deviceid AND s.apikey = $1 WHERE d.deviceid = $2",
        )
        .bind(user)
        .bind(deviceid)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.and_then(|r| {
            let owner: Option<String> = r.get(0);
            let permit: Option<i64> = r.get(1);
            if owner.as_deref() == Some(user) {
                Some(Role::Owner)
            } else if owner.is_some() {
                permit.map(|permit| Role::Sharee { permit })
            } else {
                None
            }
        }))
    }

    /// What `user` is to a device: owner, sharee or nothing (also for unknown ids).
    pub async fn device_role(&self, user: &UserKey, deviceid: &str) -> Result<Option<Role>> {
        Self::role_in(&mut *self.pool.acquire().await?, user.as_str(), deviceid).await
    }

    /// Makes `user` the owner of a device (again, when it is theirs already) with a name and
    /// settings, placed in `familyid`/`roomid` (defaults: the current family, unassigned).
    /// Owned by someone else → `Taken`; unknown device, family or room → `NotFound`.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_device(
        &self,
        user: &UserKey,
        deviceid: &str,
        name: &str,
        settings: &str,
        familyid: Option<&str>,
        roomid: Option<&str>,
        sort: Sort,
    ) -> std::result::Result<Placement, DeviceError> {
        let apikey = user.as_str();
        let mut tx = self.begin().await?;
        let claimed = sqlx::query(
            "UPDATE devices SET owner = $1, name = $2, settings = $3, owned_at = $4 WHERE deviceid = $5 AND (owner IS NULL OR owner = $6)",
        )
        .bind(apikey)
        .bind(name)
        .bind(settings)
        .bind(now_millis())
        .bind(deviceid)
        .bind(apikey)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() == 0 {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT deviceid FROM devices WHERE deviceid = $1").bind(deviceid).fetch_optional(&mut *tx).await?;
            return Err(if exists.is_some() { DeviceError::Taken } else { DeviceError::NotFound(format!("device {deviceid}")) });
        }
        let placement = match Self::place_thing_in(&mut tx, apikey, ThingKind::OwnDevice, deviceid, familyid, roomid, sort).await {
            Ok(p) => p,
            Err(StoreError::NotFound(what)) => return Err(DeviceError::NotFound(what)),
            Err(e) => return Err(e.into()),
        };
        Self::bump_acl_in(&mut tx).await?;
        tx.commit().await?;
        Ok(placement)
    }

    /// Deletes `user`'s own groups built on `deviceid` and takes it out of their other groups
    /// (`user` None: everyone's).
    async fn drop_from_groups_in(conn: &mut AnyConnection, deviceid: &str, user: Option<&str>) -> Result<()> {
        let scope = if user.is_some() { " AND apikey = $2" } else { "" };
        let doomed = format!("SELECT id FROM device_groups WHERE main_deviceid = $1{scope}");
        for sql in [
            format!("DELETE FROM things WHERE kind = 3 AND thingid IN ({doomed})"),
            format!("DELETE FROM group_members WHERE groupid IN ({doomed})"),
            format!("DELETE FROM device_groups WHERE main_deviceid = $1{scope}"),
            format!("DELETE FROM group_members WHERE deviceid = $1 AND groupid IN (SELECT id FROM device_groups WHERE 1 = 1{scope})"),
        ] {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(deviceid);
            if let Some(u) = user {
                q = q.bind(u);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// The owner gives a device up: it has no owner, name, settings or tags any more, its shares,
    /// everyone's placements of it, groups built on it, its history and the commands kept for it
    /// while offline are gone, and it leaves every group. `false` when `user` does not own it.
    pub async fn release_device(&self, user: &UserKey, deviceid: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let released = sqlx::query(
            "UPDATE devices SET owner = NULL, name = '', settings = $1, tags = NULL, owned_at = NULL WHERE deviceid = $2 AND owner = $3",
        )
        .bind(DEFAULT_SETTINGS)
        .bind(deviceid)
        .bind(user.as_str())
        .execute(&mut *tx)
        .await?;
        if released.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM shares WHERE deviceid = $1").bind(deviceid).execute(&mut *tx).await?;
        Self::forget_released_in(&mut tx, deviceid).await?;
        Self::drop_from_groups_in(&mut tx, deviceid, None).await?;
        sqlx::query("DELETE FROM things WHERE thingid = $1 AND kind IN (1, 2)").bind(deviceid).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM history WHERE deviceid = $1").bind(deviceid).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM offline_commands WHERE deviceid = $1").bind(deviceid).execute(&mut *tx).await?;
        Self::bump_acl_in(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A sharee gives a shared device up: their share, their placement of it, their groups built
    /// on it and the commands they kept for it while offline are gone, and it leaves their other
    /// groups. `false` when it is not shared with `user`.
    pub async fn leave_shared_device(&self, user: &UserKey, deviceid: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let left = sqlx::query("DELETE FROM shares WHERE deviceid = $1 AND apikey = $2")
            .bind(deviceid)
            .bind(user.as_str())
            .execute(&mut *tx)
            .await?;
        if left.rows_affected() == 0 {
            return Ok(false);
        }
        Self::drop_from_groups_in(&mut tx, deviceid, Some(user.as_str())).await?;
        Self::unplace_thing_in(&mut tx, user.as_str(), deviceid).await?;
        sqlx::query("DELETE FROM offline_commands WHERE deviceid = $1 AND apikey = $2")
            .bind(deviceid)
            .bind(user.as_str())
            .execute(&mut *tx)
            .await?;
        Self::bump_acl_in(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Renames a device (owner only) and/or moves it to a room of the family `user` keeps it in
    /// (`Some("")`: unassigned). Sharee renaming → `Forbidden`; device or room not the user's →
    /// `NotFound`.
    pub async fn update_device_info(
        &self,
        user: &UserKey,
        deviceid: &str,
        name: Option<&str>,
        roomid: Option<&str>,
    ) -> std::result::Result<(), DeviceError> {
        let apikey = user.as_str();
        let mut tx = self.begin().await?;
        let role = Self::role_in(&mut tx, apikey, deviceid).await?.ok_or_else(|| DeviceError::NotFound(format!("device {deviceid}")))?;
        if let Some(name) = name {
            if role != Role::Owner {
                return Err(DeviceError::Forbidden("only the owner may rename a device"));
            }
            sqlx::query("UPDATE devices SET name = $1 WHERE deviceid = $2").bind(name).bind(deviceid).execute(&mut *tx).await?;
        }
        if let Some(roomid) = roomid {
            let familyid: Option<String> = sqlx::query_scalar("SELECT familyid FROM things WHERE apikey = $1 AND thingid = $2")
                .bind(apikey)
                .bind(deviceid)
                .fetch_optional(&mut *tx)
                .await?;
            let familyid = familyid.ok_or_else(|| DeviceError::NotFound(format!("device {deviceid}")))?;
            let room = if roomid.is_empty() {
                None
            } else {
                let found: Option<String> = sqlx::query_scalar("SELECT id FROM rooms WHERE id = $1 AND familyid = $2")
                    .bind(roomid)
                    .bind(&familyid)
                    .fetch_optional(&mut *tx)
                    .await?;
                Some(found.ok_or_else(|| DeviceError::NotFound(format!("room {roomid}")))?)
            };
            sqlx::query("UPDATE things SET roomid = $1 WHERE apikey = $2 AND thingid = $3")
                .bind(room)
                .bind(apikey)
                .bind(deviceid)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replaces or merges (top-level keys) a device's tags; owner only (sharee → `Forbidden`,
    /// anyone else → `NotFound`); new tags over `max_bytes` serialized → `TooLarge`. Returns
    /// the new tags.
    pub async fn set_device_tags(
        &self,
        user: &UserKey,
        deviceid: &str,
        tags: Map<String, Value>,
        merge: bool,
        max_bytes: usize,
    ) -> std::result::Result<Map<String, Value>, DeviceError> {
        let mut tx = self.begin().await?;
        match Self::role_in(&mut tx, user.as_str(), deviceid).await? {
            Some(Role::Owner) => {}
            Some(Role::Sharee { .. }) => return Err(DeviceError::Forbidden("only the owner may change a device's tags")),
            None => return Err(DeviceError::NotFound(format!("device {deviceid}"))),
        }
        let new = if merge {
            let old: Option<String> =
                sqlx::query_scalar("SELECT tags FROM devices WHERE deviceid = $1").bind(deviceid).fetch_one(&mut *tx).await?;
            let mut old: Map<String, Value> = old.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
            old.extend(tags);
            old
        } else {
            tags
        };
        let text = Value::Object(new.clone()).to_string();
        if text.len() > max_bytes {
            return Err(DeviceError::TooLarge("tags"));
        }
        sqlx::query("UPDATE devices SET tags = $1 WHERE deviceid = $2").bind(text).bind(deviceid).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(new)
    }

    /// Sets a device's settings (a JSON object such as [`DEFAULT_SETTINGS`]) whoever owns it, for
    /// seeding; the live hub reads them when the device next registers. `false` when no such device.
    pub async fn set_device_settings(&self, deviceid: &DeviceId, settings: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE devices SET settings = $1 WHERE deviceid = $2")
            .bind(settings)
            .bind(deviceid.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Adds a factory device record with its optional details (and an owner, placed in their
    /// current family); an id or GSM id already used → `Conflict`.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_factory_device(
        &self,
        deviceid: &DeviceId,
        factory_apikey: &str,
        model: &str,
        uiid: i64,
        owner: Option<&UserKey>,
        name: &str,
        details: &FactoryDetails,
    ) -> Result<()> {
        let mut extra = serde_json::json!({ "model": model, "uiid": uiid });
        if let Some(mac) = &details.mac {
            extra["mac"] = Value::from(mac.as_str());
        }
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO devices (deviceid, factory_apikey, model, uiid, owner, name, created_at, owned_at, extra, chipid, gsm_id, \
             brand_name, product_model, product_id, mac) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(deviceid.as_str())
        .bind(factory_apikey)
        .bind(model)
        .bind(uiid)
        .bind(owner.map(UserKey::as_str))
        .bind(name)
        .bind(now_secs())
        .bind(owner.map(|_| now_millis()))
        .bind(extra.to_string())
        .bind(details.chipid.as_deref())
        .bind(details.gsm_id.as_deref())
        .bind(details.brand_name.as_deref().unwrap_or(""))
        .bind(details.product_model.as_deref().unwrap_or(""))
        .bind(details.product_id.as_deref())
        .bind(details.mac.as_deref().and_then(super::normalize_mac))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if unique_violation(&e) {
                StoreError::Conflict(format!("device {deviceid}, its GSM id or its product and MAC"))
            } else {
                e.into()
            }
        })?;
        if let Some(owner) = owner {
            Self::place_thing_in(&mut tx, owner.as_str(), ThingKind::OwnDevice, deviceid.as_str(), None, None, Sort::First).await?;
        }
        Self::bump_acl_in(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn placement_from(r: sqlx::any::AnyRow) -> Option<Placement> {
    Some(Placement { kind: ThingKind::from_code(r.get(0))?, thingid: r.get(1), familyid: r.get(2), roomid: r.get(3), index: r.get(4) })
}
