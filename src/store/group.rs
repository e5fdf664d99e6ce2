//! Device groups: a user's named set of devices of one UI type (`uiid`) around a main device,
//! with a free-form `params` object the API only keeps. A group belongs to one user, who keeps it
//! in one of their families as a thing of kind 3; its members are devices that user owns or has
//! shared with them and whose uiid is the group's (the main device's).

use serde_json::{Map, Value};
use sqlx::{AnyConnection, Row};

use super::{Placement, Result, Sort, Store, StoreError, ThingKind, new_id};
use crate::clock::now_millis;
use crate::ids::UserKey;

/// Groups one user may have (`30009` beyond it).
pub const MAX_GROUPS: i64 = 100;
/// Largest stored group state, as JSON text.
pub const MAX_GROUP_PARAMS_BYTES: usize = 64 * 1024;

/// A group as its user sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub main_deviceid: String,
    pub uiid: i64,
    /// The saved group state, a JSON object.
    pub params: Value,
    /// Member device ids, the main device first, the rest by id.
    pub members: Vec<String>,
}

/// What a new group is made of.
#[derive(Debug, Clone)]
pub struct NewGroup<'a> {
    pub name: &'a str,
    pub main_deviceid: &'a str,
    pub familyid: Option<&'a str>,
    pub roomid: Option<&'a str>,
    pub sort: Sort,
    /// Other devices to add; those of another uiid or out of the user's reach are left out.
    pub deviceids: &'a [String],
}

/// Why a change to groups was refused.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// No such group, device, family or room among the caller's (other users' ids look the same).
    #[error("{0} not found")]
    NotFound(String),
    /// The user has [`MAX_GROUPS`] groups already.
    #[error("too many groups")]
    Limit,
    /// The request contradicts the stored data (a member list without the main device, …).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for GroupError {
    fn from(e: sqlx::Error) -> Self {
        GroupError::Store(e.into())
    }
}

type GroupResult<T> = std::result::Result<T, GroupError>;

impl Store {
    /// Takes the user's row lock first, so one user's group changes run one after another (the
    /// group count stays true until commit) and a SQLite transaction starts as a writer.
    async fn lock_group_owner_in(conn: &mut AnyConnection, apikey: &str) -> GroupResult<()> {
        let n = sqlx::query("UPDATE users SET current_family = current_family WHERE apikey = $1").bind(apikey).execute(&mut *conn).await?;
        if n.rows_affected() == 0 {
            return Err(GroupError::NotFound(format!("user {apikey}")));
        }
        Ok(())
    }

    /// The uiid of `deviceid` when `apikey` owns it or has it shared with them.
    pub(crate) async fn reachable_uiid_in(conn: &mut AnyConnection, apikey: &str, deviceid: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT d.uiid FROM devices d WHERE d.deviceid = $1 \
             AND (d.owner = $2 OR EXISTS (SELECT 1 FROM shares s WHERE s.deviceid = d.deviceid AND s.apikey = $3))",
        )
        .bind(deviceid)
        .bind(apikey)
        .bind(apikey)
        .fetch_optional(&mut *conn)
        .await?)
    }

    /// The devices of `list` that may join a group of `uiid` around `main`: reachable by
    /// `apikey`, of that uiid; `main` first, each once.
    async fn usable_members_in(conn: &mut AnyConnection, apikey: &str, uiid: i64, main: &str, list: &[String]) -> Result<Vec<String>> {
        let mut members = vec![main.to_owned()];
        for id in list {
            if members.contains(id) {
                continue;
            }
            if Self::reachable_uiid_in(conn, apikey, id).await? == Some(uiid) {
                members.push(id.clone());
            }
        }
        Ok(members)
    }

    async fn insert_members_in(conn: &mut AnyConnection, groupid: &str, members: &[String]) -> Result<()> {
        for id in members {
            sqlx::query("INSERT INTO group_members (groupid, deviceid) VALUES ($1, $2)").bind(groupid).bind(id).execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// One of `apikey`'s groups with its members.
    pub(crate) async fn group_in(conn: &mut AnyConnection, apikey: &str, id: &str) -> Result<Option<Group>> {
        let row = sqlx::query("SELECT id, name, main_deviceid, uiid, params FROM device_groups WHERE id = $1 AND apikey = $2")
            .bind(id)
            .bind(apikey)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut group = group_from(&row);
        let ids: Vec<String> = sqlx::query_scalar("SELECT deviceid FROM group_members WHERE groupid = $1 ORDER BY deviceid")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
        group.members = ordered_members(&group.main_deviceid, ids);
        Ok(Some(group))
    }

    /// Deletes one of `apikey`'s groups, its members and the user's things row of it.
    pub(crate) async fn delete_group_in(conn: &mut AnyConnection, apikey: &str, id: &str) -> Result<bool> {
        let n = sqlx::query("DELETE FROM device_groups WHERE id = $1 AND apikey = $2").bind(id).bind(apikey).execute(&mut *conn).await?;
        if n.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM group_members WHERE groupid = $1").bind(id).execute(&mut *conn).await?;
        Self::unplace_thing_in(conn, apikey, id).await?;
        Ok(true)
    }

    /// One of `user`'s groups.
    pub async fn group(&self, user: &UserKey, id: &str) -> Result<Option<Group>> {
        Self::group_in(&mut *self.pool.acquire().await?, user.as_str(), id).await
    }

    /// The user's groups kept in `familyid` (default: the current family), by index.
    pub async fn family_groups(&self, user: &UserKey, familyid: Option<&str>) -> Result<Vec<(Group, Placement)>> {
        let apikey = user.as_str();
        let mut tx = self.begin().await?;
        let familyid = match familyid {
            Some(f) => f.to_owned(),
            None => Self::current_family_in(&mut tx, apikey).await?,
        };
        let rows = sqlx::query(
            "SELECT g.id, g.name, g.main_deviceid, g.uiid, g.params, t.familyid, t.roomid, t.idx \
             FROM things t JOIN device_groups g ON g.id = t.thingid AND g.apikey = t.apikey \
             WHERE t.apikey = $1 AND t.familyid = $2 AND t.kind = $3 ORDER BY t.idx, g.id",
        )
        .bind(apikey)
        .bind(&familyid)
        .bind(ThingKind::Group.code())
        .fetch_all(&mut *tx)
        .await?;
        let members = sqlx::query(
            "SELECT m.groupid, m.deviceid FROM group_members m JOIN device_groups g ON g.id = m.groupid \
             WHERE g.apikey = $1 ORDER BY m.deviceid",
        )
        .bind(apikey)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .iter()
            .map(|r| {
                let mut group = group_from(r);
                let ids = members.iter().filter(|m| m.get::<String, _>(0) == group.id).map(|m| m.get::<String, _>(1)).collect();
                group.members = ordered_members(&group.main_deviceid, ids);
                let placement =
                    Placement { kind: ThingKind::Group, thingid: group.id.clone(), familyid: r.get(5), roomid: r.get(6), index: r.get(7) };
                (group, placement)
            })
            .collect())
    }

    /// Creates a group around a device the user owns or has shared with them (else `NotFound`)
    /// and places it in the user's family (unknown family or room → `NotFound`). Listed devices
    /// of another uiid, or out of the user's reach, are left out; the main device is always a
    /// member. [`MAX_GROUPS`] already → `Limit`.
    pub async fn add_group(&self, user: &UserKey, new: NewGroup<'_>) -> GroupResult<(Group, Placement)> {
        let apikey = user.as_str();
        let mut tx = self.begin().await?;
        Self::lock_group_owner_in(&mut tx, apikey).await?;
        let uiid = Self::reachable_uiid_in(&mut tx, apikey, new.main_deviceid)
            .await?
            .ok_or_else(|| GroupError::NotFound(format!("device {}", new.main_deviceid)))?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM device_groups WHERE apikey = $1").bind(apikey).fetch_one(&mut *tx).await?;
        if count >= MAX_GROUPS {
            return Err(GroupError::Limit);
        }
        let id = new_id();
        sqlx::query(
            "INSERT INTO device_groups (id, apikey, name, main_deviceid, uiid, params, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(apikey)
        .bind(new.name)
        .bind(new.main_deviceid)
        .bind(uiid)
        .bind("{}")
        .bind(now_millis())
        .execute(&mut *tx)
        .await?;
        let members = Self::usable_members_in(&mut tx, apikey, uiid, new.main_deviceid, new.deviceids).await?;
        Self::insert_members_in(&mut tx, &id, &members).await?;
        let placement = Self::place_thing_in(&mut tx, apikey, ThingKind::Group, &id, new.familyid, new.roomid, new.sort).await.map_err(
            |e| match e {
                StoreError::NotFound(what) => GroupError::NotFound(what),
                other => GroupError::Store(other),
            },
        )?;
        tx.commit().await?;
        let group = Group {
            id,
            name: new.name.to_owned(),
            main_deviceid: new.main_deviceid.to_owned(),
            uiid,
            params: Value::Object(Map::new()),
            members,
        };
        Ok((group, placement))
    }

    /// Renames one of the user's groups.
    pub async fn rename_group(&self, user: &UserKey, id: &str, name: &str) -> GroupResult<()> {
        let n = sqlx::query("UPDATE device_groups SET name = $1 WHERE id = $2 AND apikey = $3")
            .bind(name)
            .bind(id)
            .bind(user.as_str())
            .execute(&self.pool)
            .await?;
        if n.rows_affected() == 0 {
            return Err(GroupError::NotFound(format!("group {id}")));
        }
        Ok(())
    }

    /// Deletes one of the user's groups (its members stay where they are).
    pub async fn delete_group(&self, user: &UserKey, id: &str) -> GroupResult<()> {
        let mut tx = self.begin().await?;
        if !Self::delete_group_in(&mut tx, user.as_str(), id).await? {
            return Err(GroupError::NotFound(format!("group {id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Saves `params` into the group's state: each given key replaces the stored one, the rest
    /// stay. A state larger than [`MAX_GROUP_PARAMS_BYTES`] → `Invalid`.
    pub async fn set_group_params(&self, user: &UserKey, id: &str, params: &Map<String, Value>) -> GroupResult<Value> {
        let apikey = user.as_str();
        let mut tx = self.begin().await?;
        Self::lock_group_owner_in(&mut tx, apikey).await?;
        let stored: Option<String> = sqlx::query_scalar("SELECT params FROM device_groups WHERE id = $1 AND apikey = $2")
            .bind(id)
            .bind(apikey)
            .fetch_optional(&mut *tx)
            .await?;
        let stored = stored.ok_or_else(|| GroupError::NotFound(format!("group {id}")))?;
        let mut state = match serde_json::from_str::<Value>(&stored) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        for (k, v) in params {
            state.insert(k.clone(), v.clone());
        }
        let state = Value::Object(state);
        let text = state.to_string();
        if text.len() > MAX_GROUP_PARAMS_BYTES {
            return Err(GroupError::Invalid(format!("the group state may hold at most {MAX_GROUP_PARAMS_BYTES} bytes")));
        }
        sqlx::query("UPDATE device_groups SET params = $1 WHERE id = $2").bind(&text).bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(state)
    }

    /// Replaces the members of one of the user's groups with `list`, which must hold the main
    /// device (else `Invalid`); listed devices of another uiid or out of the user's reach are left
    /// out. Returns the new members and the devices that left.
    pub async fn set_group_members(&self, user: &UserKey, id: &str, list: &[String]) -> GroupResult<(Vec<String>, Vec<String>)> {
        let apikey = user.as_str();
        let mut tx = self.begin().await?;
        Self::lock_group_owner_in(&mut tx, apikey).await?;
        let group = Self::group_in(&mut tx, apikey, id).await?.ok_or_else(|| GroupError::NotFound(format!("group {id}")))?;
        if !list.contains(&group.main_deviceid) {
            return Err(GroupError::Invalid("deviceidList must contain the group's main device".into()));
        }
        let members = Self::usable_members_in(&mut tx, apikey, group.uiid, &group.main_deviceid, list).await?;
        sqlx::query("DELETE FROM group_members WHERE groupid = $1").bind(id).execute(&mut *tx).await?;
        Self::insert_members_in(&mut tx, id, &members).await?;
        tx.commit().await?;
        let left = group.members.into_iter().filter(|m| !members.contains(m)).collect();
        Ok((members, left))
    }
}

fn group_from(row: &sqlx::any::AnyRow) -> Group {
    let params: String = row.get(4);
    Group {
        id: row.get(0),
        name: row.get(1),
        main_deviceid: row.get(2),
        uiid: row.get(3),
        params: serde_json::from_str(&params).unwrap_or_else(|_| Value::Object(Map::new())),
        members: Vec::new(),
    }
}

/// The main device first, then the others in the order given.
fn ordered_members(main: &str, ids: Vec<String>) -> Vec<String> {
    let (mut first, rest): (Vec<String>, Vec<String>) = ids.into_iter().partition(|d| d == main);
    first.extend(rest);
    first
}
