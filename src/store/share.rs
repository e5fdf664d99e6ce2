//! Sharing devices: an owner lets other users hear and command a device (`shares` rows, with a
//! timer permit and a comment). A share places the device in the sharee's current family as a
//! thing of kind 2 and files a `shareNotify_v2` for them; removing it undoes that, drops the
//! sharee's groups built on the device and files `cancelShareNotify_v2`. Every change of who may
//! reach a device, or of a sharee's permit, bumps the access-control version, so running hubs
//! reload their audiences (which carry the permits).

use serde_json::{Value, json};
use sqlx::{AnyConnection, Row};

use super::{Result, Sort, Store, StoreError, ThingKind};
use crate::clock::now_secs;
use crate::ids::UserKey;

/// Highest timer permit: the sum of 1 add, 2 modify, 4 delete, 8 enable.
pub const MAX_PERMIT: i64 = 15;

/// Why a sharing change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// No such device among those the caller may reach, or no such share of it.
    #[error("{0} not found")]
    NotFound(String),
    /// The caller reaches the device through a share but does not own it.
    #[error("only the owner of device {0} may change its sharing")]
    NotOwner(String),
    /// The owner named themselves as the sharee.
    #[error("a device cannot be shared with its owner")]
    WithOwner,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ShareError {
    fn from(e: sqlx::Error) -> Self {
        ShareError::Store(e.into())
    }
}

type ShareResult<T> = std::result::Result<T, ShareError>;

/// How a new share ended up for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// A new share: placed for the sharee and announced to them.
    New,
    /// The sharee had it already; permit and comment were updated.
    Updated,
}

impl Store {
    /// Takes the owner's row lock first, so a SQLite transaction starts as a writer.
    async fn lock_sharer_in(conn: &mut AnyConnection, apikey: &str) -> ShareResult<()> {
        let n = sqlx::query("UPDATE users SET current_family = current_family WHERE apikey = $1").bind(apikey).execute(&mut *conn).await?;
        if n.rows_affected() == 0 {
            return Err(ShareError::NotFound(format!("user {apikey}")));
        }
        Ok(())
    }

    /// The device's name when `apikey` owns it; `NotOwner` when they only have it shared;
    /// `NotFound` when they cannot reach it (or it does not exist).
    async fn owned_device_in(conn: &mut AnyConnection, apikey: &str, deviceid: &str) -> ShareResult<String> {
        let row = sqlx::query("SELECT owner, name FROM devices WHERE deviceid = $1").bind(deviceid).fetch_optional(&mut *conn).await?;
        if let Some(row) = &row {
            if row.get::<Option<String>, _>(0).as_deref() == Some(apikey) {
                return Ok(row.get(1));
            }
            let shared: Option<i64> = sqlx::query_scalar("SELECT 1 FROM shares WHERE deviceid = $1 AND apikey = $2")
                .bind(deviceid)
                .bind(apikey)
                .fetch_optional(&mut *conn)
                .await?;
            if shared.is_some() {
                return Err(ShareError::NotOwner(deviceid.to_owned()));
            }
        }
        Err(ShareError::NotFound(format!("device {deviceid}")))
    }

    /// The `sharedBy` object of a message: who owns the device.
    async fn sharer_json_in(conn: &mut AnyConnection, apikey: &str) -> Result<Value> {
        let row = sqlx::query("SELECT nickname, email, phone FROM users WHERE apikey = $1").bind(apikey).fetch_optional(&mut *conn).await?;
        let mut v = json!({ "apikey": apikey });
        if let Some(row) = row {
            v["nickname"] = json!(row.get::<String, _>(0));
            if let Some(email) = row.get::<Option<String>, _>(1) {
                v["email"] = json!(email);
            }
            if let Some(phone) = row.get::<Option<String>, _>(2) {
                v["phoneNumber"] = json!(phone);
            }
        }
        Ok(v)
    }

    /// Shares each of `deviceids` (all owned by `owner`: else `NotOwner` for a device shared
    /// with them, `NotFound` for one they cannot reach) with `sharee`, in one transaction. A new
    /// share places the device in the sharee's current family and files `shareNotify_v2` for
    /// them there; a device the sharee has already gets the new permit and comment. The owner as
    /// sharee → `WithOwner`.
    pub async fn share_devices(
        &self,
        owner: &UserKey,
        deviceids: &[String],
        sharee: &UserKey,
        permit: i64,
        comment: &str,
    ) -> ShareResult<Vec<Shared>> {
        let mut tx = self.begin().await?;
        let outcome = Self::share_devices_in(&mut tx, owner, deviceids, sharee, permit, comment).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// [`Store::share_devices`] inside a caller's transaction (the invite-code door accepts an
    /// invite and writes its share in one transaction).
    pub(crate) async fn share_devices_in(
        tx: &mut AnyConnection,
        owner: &UserKey,
        deviceids: &[String],
        sharee: &UserKey,
        permit: i64,
        comment: &str,
    ) -> ShareResult<Vec<Shared>> {
        if owner == sharee {
            return Err(ShareError::WithOwner);
        }
        Self::lock_sharer_in(&mut *tx, owner.as_str()).await?;
        let shared_by = Self::sharer_json_in(&mut *tx, owner.as_str()).await?;
        let mut outcome = Vec::with_capacity(deviceids.len());
        for deviceid in deviceids {
            let name = Self::owned_device_in(&mut *tx, owner.as_str(), deviceid).await?;
            let updated = sqlx::query("UPDATE shares SET permit = $1, comment = $2 WHERE deviceid = $3 AND apikey = $4")
                .bind(permit)
                .bind(comment)
                .bind(deviceid)
                .bind(sharee.as_str())
                .execute(&mut *tx)
                .await?;
            if updated.rows_affected() > 0 {
                outcome.push(Shared::Updated);
                continue;
            }
            sqlx::query("INSERT INTO shares (deviceid, apikey, permit, comment, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(deviceid)
                .bind(sharee.as_str())
                .bind(permit)
                .bind(comment)
                .bind(now_secs())
                .execute(&mut *tx)
                .await?;
            let placed =
                Self::place_thing_in(&mut *tx, sharee.as_str(), ThingKind::SharedDevice, deviceid, None, None, Sort::First).await?;
            let message = json!({
                "deviceid": deviceid,
                "deviceName": name,
                "permit": permit,
                "comment": comment,
                "sharedBy": shared_by,
            });
            Self::add_message_in(&mut *tx, sharee.as_str(), Some(&placed.familyid), "shareNotify_v2", &message).await?;
            outcome.push(Shared::New);
        }
        // Audiences carry each sharee's permit, so an updated share is news to the hubs too.
        Self::bump_acl_in(&mut *tx).await?;
        Ok(outcome)
    }

    /// Changes the timer permit `sharee` has on a device `owner` owns. Errors as for
    /// [`Store::share_devices`]; no such share → `NotFound`.
    pub async fn set_share_permit(&self, owner: &UserKey, deviceid: &str, sharee: &UserKey, permit: i64) -> ShareResult<()> {
        let mut tx = self.begin().await?;
        Self::lock_sharer_in(&mut tx, owner.as_str()).await?;
        Self::owned_device_in(&mut tx, owner.as_str(), deviceid).await?;
        let n = sqlx::query("UPDATE shares SET permit = $1 WHERE deviceid = $2 AND apikey = $3")
            .bind(permit)
            .bind(deviceid)
            .bind(sharee.as_str())
            .execute(&mut *tx)
            .await?;
        if n.rows_affected() == 0 {
            return Err(ShareError::NotFound(format!("share of {deviceid} with {sharee}")));
        }
        // Running hubs judge a sharee's timer changes by the permit in the device's audience.
        Self::bump_acl_in(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The owner takes a device back from `sharee` (see [`Store::remove_share_in`]). Errors as
    /// for [`Store::share_devices`]; no such share → `NotFound`.
    pub async fn unshare_device(&self, owner: &UserKey, deviceid: &str, sharee: &UserKey) -> ShareResult<()> {
        let mut tx = self.begin().await?;
        Self::lock_sharer_in(&mut tx, owner.as_str()).await?;
        Self::owned_device_in(&mut tx, owner.as_str(), deviceid).await?;
        if !Self::remove_share_in(&mut tx, deviceid, sharee.as_str()).await? {
            return Err(ShareError::NotFound(format!("share of {deviceid} with {sharee}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes one share inside a caller's transaction: the share, the sharee's things row of
    /// the device, the sharee's groups whose main device it is (with their things rows), the
    /// device from the sharee's other groups; files `cancelShareNotify_v2` for the sharee (in
    /// the family where they kept the device) and bumps the access-control version. `false`
    /// (and nothing changed) when there was no such share.
    pub(crate) async fn remove_share_in(conn: &mut AnyConnection, deviceid: &str, sharee: &str) -> Result<bool> {
        let n =
            sqlx::query("DELETE FROM shares WHERE deviceid = $1 AND apikey = $2").bind(deviceid).bind(sharee).execute(&mut *conn).await?;
        if n.rows_affected() == 0 {
            return Ok(false);
        }
        let kept_in: Option<String> = sqlx::query_scalar("SELECT familyid FROM things WHERE apikey = $1 AND thingid = $2")
            .bind(sharee)
            .bind(deviceid)
            .fetch_optional(&mut *conn)
            .await?;
        Self::unplace_thing_in(conn, sharee, deviceid).await?;
        let built_on: Vec<String> = sqlx::query_scalar("SELECT id FROM device_groups WHERE apikey = $1 AND main_deviceid = $2")
            .bind(sharee)
            .bind(deviceid)
            .fetch_all(&mut *conn)
            .await?;
        for groupid in &built_on {
            Self::delete_group_in(conn, sharee, groupid).await?;
        }
        sqlx::query("DELETE FROM group_members WHERE deviceid = $1 AND groupid IN (SELECT id FROM device_groups WHERE apikey = $2)")
            .bind(deviceid)
            .bind(sharee)
            .execute(&mut *conn)
            .await?;
        let row = sqlx::query("SELECT name, owner FROM devices WHERE deviceid = $1").bind(deviceid).fetch_optional(&mut *conn).await?;
        let (name, owner): (String, Option<String>) = row.map(|r| (r.get(0), r.get(1))).unwrap_or_default();
        let mut message = json!({ "deviceid": deviceid, "deviceName": name });
        if let Some(owner) = owner {
            message["sharedBy"] = Self::sharer_json_in(conn, &owner).await?;
        }
        let familyid = match kept_in {
            Some(f) => f,
            None => Self::current_family_in(conn, sharee).await?,
        };
        Self::add_message_in(conn, sharee, Some(&familyid), "cancelShareNotify_v2", &message).await?;
        Self::bump_acl_in(conn).await?;
        Ok(true)
    }
}
