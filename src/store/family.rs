//! Families, rooms and where each user keeps each thing (`things` rows). A user's first family is
//! made with the account; a thing (own device, shared device, group) is placed in one family of
//! the user who sees it, optionally in a room, at an index that orders the family's thing list.

use sqlx::{AnyConnection, Row};

use super::{Result, Store, StoreError, new_id};
use crate::clock::now_millis;
use crate::ids::UserKey;

/// What a thing is to the user who keeps it (the seed's `itemType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThingKind {
    OwnDevice = 1,
    SharedDevice = 2,
    Group = 3,
}

impl ThingKind {
    pub fn from_code(code: i64) -> Option<ThingKind> {
        match code {
            1 => Some(ThingKind::OwnDevice),
            2 => Some(ThingKind::SharedDevice),
            3 => Some(ThingKind::Group),
            _ => None,
        }
    }

    pub fn code(self) -> i64 {
        self as i64
    }
}

/// Where a new thing goes in its family's order (the seed's `sort`: 1 smaller, 2 larger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    First,
    Last,
}

impl Sort {
    /// The seed's `sort` number; anything but 2 means "first" (its default is 1).
    pub fn from_code(code: Option<i64>) -> Sort {
        if code == Some(2) { Sort::Last } else { Sort::First }
    }
}

/// One user's placement of one thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub kind: ThingKind,
    pub thingid: String,
    pub familyid: String,
    pub roomid: Option<String>,
    pub index: i64,
}

pub const FIRST_FAMILY_NAME: &str = "My Home";

impl Store {
    /// Creates a family for `apikey` (and makes it current when the user has none).
    pub(crate) async fn create_family_in(conn: &mut AnyConnection, apikey: &str, name: &str, sort: Sort) -> Result<(String, i64)> {
        let id = new_id();
        let edge: Option<i64> = match sort {
            Sort::First => sqlx::query_scalar("SELECT MIN(idx) FROM families WHERE apikey = $1"),
            Sort::Last => sqlx::query_scalar("SELECT MAX(idx) FROM families WHERE apikey = $1"),
        }
        .bind(apikey)
        .fetch_one(&mut *conn)
        .await?;
        let index = match (edge, sort) {
            (None, _) => 0,
            (Some(i), Sort::First) => i - 1,
            (Some(i), Sort::Last) => i + 1,
        };
        sqlx::query("INSERT INTO families (id, apikey, name, idx, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(apikey)
            .bind(name)
            .bind(index)
            .bind(now_millis())
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE users SET current_family = $1 WHERE apikey = $2 AND current_family IS NULL")
            .bind(&id)
            .bind(apikey)
            .execute(&mut *conn)
            .await?;
        Ok((id, index))
    }

    /// The user's current family, creating their first one if they have none.
    pub(crate) async fn current_family_in(conn: &mut AnyConnection, apikey: &str) -> Result<String> {
        let current: Option<Option<String>> =
            sqlx::query_scalar("SELECT current_family FROM users WHERE apikey = $1").bind(apikey).fetch_optional(&mut *conn).await?;
        match current {
            None => Err(StoreError::NotFound(format!("user {apikey}"))),
            Some(Some(id)) => Ok(id),
            Some(None) => Ok(Self::create_family_in(conn, apikey, FIRST_FAMILY_NAME, Sort::First).await?.0),
        }
    }

    /// Places (or re-places) a thing for `apikey`: in `familyid` (default: the current family),
    /// in `roomid` (must belong to that family; default: unassigned), first or last in order.
    /// Unknown family or room of this user → `NotFound`.
    pub(crate) async fn place_thing_in(
        conn: &mut AnyConnection,
        apikey: &str,
        kind: ThingKind,
        thingid: &str,
        familyid: Option<&str>,
        roomid: Option<&str>,
        sort: Sort,
    ) -> Result<Placement> {
        let familyid = match familyid.filter(|f| !f.is_empty()) {
            Some(f) => {
                let owned: Option<String> = sqlx::query_scalar("SELECT id FROM families WHERE id = $1 AND apikey = $2")
                    .bind(f)
                    .bind(apikey)
                    .fetch_optional(&mut *conn)
                    .await?;
                owned.ok_or_else(|| StoreError::NotFound(format!("family {f}")))?
            }
            None => Self::current_family_in(conn, apikey).await?,
        };
        let roomid = match roomid.filter(|r| !r.is_empty()) {
            Some(r) => {
                let found: Option<String> = sqlx::query_scalar("SELECT id FROM rooms WHERE id = $1 AND familyid = $2")
                    .bind(r)
                    .bind(&familyid)
                    .fetch_optional(&mut *conn)
                    .await?;
                Some(found.ok_or_else(|| StoreError::NotFound(format!("room {r}")))?)
            }
            None => None,
        };
        let edge: Option<i64> = match sort {
            Sort::First => sqlx::query_scalar("SELECT MIN(idx) FROM things WHERE familyid = $1 AND apikey = $2"),
            Sort::Last => sqlx::query_scalar("SELECT MAX(idx) FROM things WHERE familyid = $1 AND apikey = $2"),
        }
        .bind(&familyid)
        .bind(apikey)
        .fetch_one(&mut *conn)
        .await?;
        let index = match (edge, sort) {
            (None, _) => 0,
            (Some(i), Sort::First) => i - 1,
            (Some(i), Sort::Last) => i + 1,
        };
        sqlx::query("DELETE FROM things WHERE apikey = $1 AND thingid = $2").bind(apikey).bind(thingid).execute(&mut *conn).await?;
        sqlx::query("INSERT INTO things (apikey, kind, thingid, familyid, roomid, idx) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(apikey)
            .bind(kind.code())
            .bind(thingid)
            .bind(&familyid)
            .bind(&roomid)
            .bind(index)
            .execute(&mut *conn)
            .await?;
        Ok(Placement { kind, thingid: thingid.to_owned(), familyid, roomid, index })
    }

    /// Removes a thing from `apikey`'s families.
    pub(crate) async fn unplace_thing_in(conn: &mut AnyConnection, apikey: &str, thingid: &str) -> Result<()> {
        sqlx::query("DELETE FROM things WHERE apikey = $1 AND thingid = $2").bind(apikey).bind(thingid).execute(&mut *conn).await?;
        Ok(())
    }

    /// Where `user` keeps `thingid`, if they keep it.
    pub async fn placement(&self, user: &UserKey, thingid: &str) -> Result<Option<Placement>> {
        let row = sqlx::query("SELECT kind, thingid, familyid, roomid, idx FROM things WHERE apikey = $1 AND thingid = $2")
            .bind(user.as_str())
            .bind(thingid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| Placement {
            kind: ThingKind::from_code(r.get(0)).unwrap_or(ThingKind::OwnDevice),
            thingid: r.get(1),
            familyid: r.get(2),
            roomid: r.get(3),
            index: r.get(4),
        }))
    }

    /// The user's current family id (made if missing).
    pub async fn current_family(&self, user: &UserKey) -> Result<String> {
        let mut tx = self.begin().await?;
        let id = Self::current_family_in(&mut tx, user.as_str()).await?;
        tx.commit().await?;
        Ok(id)
    }
}

/// Families one user may have (`20002` beyond it).
pub const MAX_FAMILIES: i64 = 10;
/// Rooms one family may have (the seed's limit; `20002` beyond it).
pub const MAX_ROOMS: i64 = 100;

/// A family with its rooms, both in index order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub id: String,
    pub apikey: String,
    pub name: String,
    pub index: i64,
    pub rooms: Vec<Room>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub id: String,
    pub name: String,
    pub index: i64,
}

/// A thing as a client names it in a list: its kind (`itemType`) and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingRef {
    pub kind: ThingKind,
    pub id: String,
}

/// Why a change to families, rooms or thing order was refused.
#[derive(Debug, thiserror::Error)]
pub enum FamilyError {
    /// No such family, room or thing among the caller's own (other users' ids look the same).
    #[error("{0} not found")]
    NotFound(String),
    /// More families or rooms than allowed.
    #[error("too many {0}")]
    Limit(&'static str),
    /// The user's only family cannot be deleted.
    #[error("the last family cannot be deleted")]
    LastFamily,
    /// The request contradicts the stored data (a list that is not the family's rooms, …).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for FamilyError {
    fn from(e: sqlx::Error) -> Self {
        FamilyError::Store(e.into())
    }
}

type FamilyResult<T> = std::result::Result<T, FamilyError>;

/// The index a new member gets at one end of a list whose smallest and largest indexes are
/// `edge` (`None`: the list is empty).
fn edge_index(edge: Option<i64>, sort: Sort) -> i64 {
    match (edge, sort) {
        (None, _) => 0,
        (Some(i), Sort::First) => i - 1,
        (Some(i), Sort::Last) => i + 1,
    }
}

impl Store {
    /// Takes the user's row lock first, so that changes of one user's families run one after
    /// another (a count checked against a limit stays true until commit) and a SQLite
    /// transaction starts as a writer.
    async fn lock_user_in(conn: &mut AnyConnection, apikey: &str) -> FamilyResult<()> {
        let n = sqlx::query("UPDATE users SET current_family = current_family WHERE apikey = $1").bind(apikey).execute(&mut *conn).await?;
        if n.rows_affected() == 0 {
            return Err(FamilyError::NotFound(format!("user {apikey}")));
        }
        Ok(())
    }

    /// `id` if it is one of `apikey`'s families, else `NotFound`.
    async fn own_family_in(conn: &mut AnyConnection, apikey: &str, id: &str) -> FamilyResult<String> {
        let found: Option<String> = sqlx::query_scalar("SELECT id FROM families WHERE id = $1 AND apikey = $2")
            .bind(id)
            .bind(apikey)
            .fetch_optional(&mut *conn)
            .await?;
        found.ok_or_else(|| FamilyError::NotFound(format!("family {id}")))
    }

    /// `id` (when given and not empty) checked as the user's, else the current family.
    async fn family_or_current_in(conn: &mut AnyConnection, apikey: &str, id: Option<&str>) -> FamilyResult<String> {
        match id.filter(|f| !f.is_empty()) {
            Some(f) => Self::own_family_in(conn, apikey, f).await,
            None => Ok(Self::current_family_in(conn, apikey).await?),
        }
    }

    /// The family a room of `apikey` belongs to, else `NotFound`.
    async fn room_family_in(conn: &mut AnyConnection, apikey: &str, roomid: &str) -> FamilyResult<String> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT r.familyid FROM rooms r JOIN families f ON f.id = r.familyid WHERE r.id = $1 AND f.apikey = $2")
                .bind(roomid)
                .bind(apikey)
                .fetch_optional(&mut *conn)
                .await?;
        found.ok_or_else(|| FamilyError::NotFound(format!("room {roomid}")))
    }

    async fn rooms_in(conn: &mut AnyConnection, familyid: &str) -> FamilyResult<Vec<Room>> {
        let rows = sqlx::query("SELECT id, name, idx FROM rooms WHERE familyid = $1 ORDER BY idx, id")
            .bind(familyid)
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows.into_iter().map(|r| Room { id: r.get(0), name: r.get(1), index: r.get(2) }).collect())
    }

    /// Adds a room to a family whose room count the caller has checked.
    async fn insert_room_in(conn: &mut AnyConnection, familyid: &str, name: &str, index: i64) -> FamilyResult<Room> {
        let id = new_id();
        sqlx::query("INSERT INTO rooms (id, familyid, name, idx) VALUES ($1, $2, $3, $4)")
            .bind(&id)
            .bind(familyid)
            .bind(name)
            .bind(index)
            .execute(&mut *conn)
            .await?;
        Ok(Room { id, name: name.to_owned(), index })
    }

    /// The family the user means (`id`, or the current one when `None`/empty); someone else's
    /// or unknown → `NotFound`.
    pub async fn resolve_family(&self, user: &UserKey, id: Option<&str>) -> FamilyResult<String> {
        let mut tx = self.begin().await?;
        let id = Self::family_or_current_in(&mut tx, user.as_str(), id).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The user's families (by index, each with its rooms by index) and the current family id.
    pub async fn families(&self, user: &UserKey) -> FamilyResult<(Vec<Family>, String)> {
        let apikey = user.as_str();
        let mut tx = self.begin().await?;
        let current = Self::current_family_in(&mut tx, apikey).await?;
        let rows = sqlx::query("SELECT id, name, idx FROM families WHERE apikey = $1 ORDER BY idx, created_at, id")
            .bind(apikey)
            .fetch_all(&mut *tx)
            .await?;
        let mut families: Vec<Family> = rows
            .into_iter()
            .map(|r| Family { id: r.get(0), apikey: apikey.to_owned(), name: r.get(1), index: r.get(2), rooms: Vec::new() })
            .collect();
        let rooms = sqlx::query("SELECT r.familyid, r.id, r.name, r.idx FROM rooms r JOIN families f ON f.id = r.familyid WHERE f.apikey = $1 ORDER BY r.idx, r.id")
            .bind(apikey)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        for r in rooms {
            let familyid: String = r.get(0);
            if let Some(f) = families.iter_mut().find(|f| f.id == familyid) {
                f.rooms.push(Room { id: r.get(1), name: r.get(2), index: r.get(3) });
            }
        }
        Ok((families, current))
    }

    /// Creates a family with rooms named `room_names` (indexes 0, 1, 2… in list order).
    /// More than [`MAX_FAMILIES`] families or [`MAX_ROOMS`] rooms → `Limit`.
    pub async fn add_family(&self, user: &UserKey, name: &str, sort: Sort, room_names: &[String]) -> FamilyResult<Family> {
        let apikey = user.as_str();
        if room_names.len() as i64 > MAX_ROOMS {
            return Err(FamilyError::Limit("rooms"));
        }
        let mut tx = self.begin().await?;
        Self::lock_user_in(&mut tx, apikey).await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM families WHERE apikey = $1").bind(apikey).fetch_one(&mut *tx).await?;
        if count >= MAX_FAMILIES {
            return Err(FamilyError::Limit("families"));
        }
        let (id, index) = Self::create_family_in(&mut tx, apikey, name, sort).await?;
        let mut rooms = Vec::with_capacity(room_names.len());
        for (i, room) in room_names.iter().enumerate() {
            rooms.push(Self::insert_room_in(&mut tx, &id, room, i as i64).await?);
        }
        tx.commit().await?;
        Ok(Family { id, apikey: apikey.to_owned(), name: name.to_owned(), index, rooms })
    }

    /// Renames a family of the user (`None`: the current one).
    pub async fn rename_family(&self, user: &UserKey, id: Option<&str>, name: &str) -> FamilyResult<()> {
        let mut tx = self.begin().await?;
        let id = Self::family_or_current_in(&mut tx, user.as_str(), id).await?;
        sqlx::query("UPDATE families SET name = $1 WHERE id = $2").bind(name).bind(&id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes one of the user's families the current one.
    pub async fn set_current_family(&self, user: &UserKey, id: &str) -> FamilyResult<()> {
        let apikey = user.as_str();
        let mut tx = self.begin().await?;
        let id = Self::own_family_in(&mut tx, apikey, id).await?;
        sqlx::query("UPDATE users SET current_family = $1 WHERE apikey = $2").bind(&id).bind(apikey).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a family: its things (devices, shared devices, groups) move to `device_family`,
    /// unassigned, after the things already there and in their old order; its messages are
    /// filed under `device_family` too; when it was the current family, `switch_family` becomes
    /// current. The user's only family → `LastFamily`; `device_family` or `switch_family` the
    /// family being deleted → `Invalid`; any of the three not the user's → `NotFound`.
    pub async fn delete_family(&self, user: &UserKey, id: &str, device_family: &str, switch_family: &str) -> FamilyResult<()> {
        let apikey = user.as_str();
        let mut tx = self.begin().await?;
        Self::lock_user_in(&mut tx, apikey).await?;
        let id = Self::own_family_in(&mut tx, apikey, id).await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM families WHERE apikey = $1").bind(apikey).fetch_one(&mut *tx).await?;
        if count <= 1 {
            return Err(FamilyError::LastFamily);
        }
        for (what, other) in [("deviceFamily", device_family), ("switchFamily", switch_family)] {
            if other == id {
                return Err(FamilyError::Invalid(format!("{what} must be another family than the one deleted")));
            }
            Self::own_family_in(&mut tx, apikey, other).await?;
        }
        let last: Option<i64> =
            sqlx::query_scalar("SELECT MAX(idx) FROM things WHERE familyid = $1").bind(device_family).fetch_one(&mut *tx).await?;
        let first: Option<i64> =
            sqlx::query_scalar("SELECT MIN(idx) FROM things WHERE familyid = $1").bind(&id).fetch_one(&mut *tx).await?;
        if let Some(first) = first {
            let shift = last.map_or(0, |l| l + 1) - first;
            sqlx::query("UPDATE things SET familyid = $1, roomid = NULL, idx = idx + $2 WHERE familyid = $3")
                .bind(device_family)
                .bind(shift)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("UPDATE messages SET familyid = $1 WHERE apikey = $2 AND familyid = $3")
            .bind(device_family)
            .bind(apikey)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE users SET current_family = $1 WHERE apikey = $2 AND current_family = $3")
            .bind(switch_family)
            .bind(apikey)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM rooms WHERE familyid = $1").bind(&id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM families WHERE id = $1").bind(&id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds a room to one of the user's families, first or last; [`MAX_ROOMS`] already → `Limit`.
    pub async fn add_room(&self, user: &UserKey, familyid: &str, name: &str, sort: Sort) -> FamilyResult<Room> {
        let apikey = user.as_str();
        let mut tx = self.begin().await?;
        Self::lock_user_in(&mut tx, apikey).await?;
        let familyid = Self::own_family_in(&mut tx, apikey, familyid).await?;
        let row =
            sqlx::query("SELECT COUNT(*), MIN(idx), MAX(idx) FROM rooms WHERE familyid = $1").bind(&familyid).fetch_one(&mut *tx).await?;
        let (count, min, max): (i64, Option<i64>, Option<i64>) = (row.get(0), row.get(1), row.get(2));
        if count >= MAX_ROOMS {
            return Err(FamilyError::Limit("rooms"));
        }
        let index = edge_index(if sort == Sort::First { min } else { max }, sort);
        let room = Self::insert_room_in(&mut tx, &familyid, name, index).await?;
        tx.commit().await?;
        Ok(room)
    }

    /// Renames one of the user's rooms.
    pub async fn rename_room(&self, user: &UserKey, id: &str, name: &str) -> FamilyResult<()> {
        let mut tx = self.begin().await?;
        Self::room_family_in(&mut tx, user.as_str(), id).await?;
        sqlx::query("UPDATE rooms SET name = $1 WHERE id = $2").bind(name).bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes one of the user's rooms; the things in it stay in the family, unassigned.
    pub async fn delete_room(&self, user: &UserKey, id: &str) -> FamilyResult<()> {
        let mut tx = self.begin().await?;
        Self::room_family_in(&mut tx, user.as_str(), id).await?;
        sqlx::query("UPDATE things SET roomid = NULL WHERE roomid = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM rooms WHERE id = $1").bind(id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Orders a family's rooms: `ids` must be exactly its rooms, each once (else `Invalid`);
    /// each room's index becomes its position in the list.
    pub async fn sort_rooms(&self, user: &UserKey, familyid: Option<&str>, ids: &[String]) -> FamilyResult<()> {
        let apikey = user.as_str();
        let mut tx = self.begin().await?;
        Self::lock_user_in(&mut tx, apikey).await?;
        let familyid = Self::family_or_current_in(&mut tx, apikey, familyid).await?;
        let mut have: Vec<String> = Self::rooms_in(&mut tx, &familyid).await?.into_iter().map(|r| r.id).collect();
        let mut asked: Vec<&str> = ids.iter().map(String::as_str).collect();
        have.sort();
        asked.sort_unstable();
        if have.iter().map(String::as_str).ne(asked.iter().copied()) {
            return Err(FamilyError::Invalid("idList must hold every room of the family exactly once".into()));
        }
        for (i, id) in ids.iter().enumerate() {
            sqlx::query("UPDATE rooms SET idx = $1 WHERE id = $2").bind(i as i64).bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The user's things in a family, as (kind, thingid, roomid), by index.
    async fn family_things_in(conn: &mut AnyConnection, apikey: &str, familyid: &str) -> FamilyResult<Vec<(ThingRef, Option<String>)>> {
        let rows = sqlx::query("SELECT kind, thingid, roomid FROM things WHERE apikey = $1 AND familyid = $2 ORDER BY idx, thingid")
            .bind(apikey)
            .bind(familyid)
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let kind = ThingKind::from_code(r.get(0))?;
                Some((ThingRef { kind, id: r.get(1) }, r.get(2)))
            })
            .collect())
    }

    /// Orders the things of a family: each listed thing's index becomes its position; things the
    /// list leaves out follow, in their old order. A listed thing the user does not keep in that
    /// family (as that kind) → `NotFound`; a thing listed twice → `Invalid`.
    pub async fn sort_things(&self, user: &UserKey, familyid: Option<&str>, list: &[ThingRef]) -> FamilyResult<()> {
        let apikey = user.as_str();
        let mut tx = self.begin().await?;
        Self::lock_user_in(&mut tx, apikey).await?;
        let familyid = Self::family_or_current_in(&mut tx, apikey, familyid).await?;
        let kept: Vec<ThingRef> = Self::family_things_in(&mut tx, apikey, &familyid).await?.into_iter().map(|(t, _)| t).collect();
        for (i, t) in list.iter().enumerate() {
            if !kept.contains(t) {
                return Err(FamilyError::NotFound(format!("thing {} in family {familyid}", t.id)));
            }
            if list[..i].iter().any(|o| o.id == t.id) {
                return Err(FamilyError::Invalid(format!("thing {} is listed twice", t.id)));
            }
        }
        let rest = kept.iter().filter(|t| !list.contains(t));
        for (i, t) in list.iter().chain(rest).enumerate() {
            sqlx::query("UPDATE things SET idx = $1 WHERE apikey = $2 AND thingid = $3")
                .bind(i as i64)
                .bind(apikey)
                .bind(&t.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Sets which things are in a room: things of `old` missing from `new` leave it (unassigned),
    /// things of `new` missing from `old` join it. An item of `old` not in that room → `Invalid`;
    /// an item of `new` the user does not keep in the room's family → `NotFound`; a thing listed
    /// twice in one list → `Invalid` (so each list is at most the family's things long).
    pub async fn set_room_things(&self, user: &UserKey, roomid: &str, old: &[ThingRef], new: &[ThingRef]) -> FamilyResult<()> {
        let apikey = user.as_str();
        for (field, list) in [("oldThingList", old), ("newThingList", new)] {
            let mut seen = std::collections::HashSet::with_capacity(list.len());
            if let Some(t) = list.iter().find(|t| !seen.insert(t.id.as_str())) {
                return Err(FamilyError::Invalid(format!("thing {} is listed twice in {field}", t.id)));
            }
        }
        let mut tx = self.begin().await?;
        Self::lock_user_in(&mut tx, apikey).await?;
        let familyid = Self::room_family_in(&mut tx, apikey, roomid).await?;
        let kept = Self::family_things_in(&mut tx, apikey, &familyid).await?;
        for t in old {
            if !kept.iter().any(|(k, room)| k == t && room.as_deref() == Some(roomid)) {
                return Err(FamilyError::Invalid(format!("thing {} of oldThingList is not in room {roomid}", t.id)));
            }
        }
        for t in new {
            if !kept.iter().any(|(k, _)| k == t) {
                return Err(FamilyError::NotFound(format!("thing {} in family {familyid}", t.id)));
            }
        }
        for t in old.iter().filter(|t| !new.contains(t)) {
            sqlx::query("UPDATE things SET roomid = NULL WHERE apikey = $1 AND thingid = $2")
                .bind(apikey)
                .bind(&t.id)
                .execute(&mut *tx)
                .await?;
        }
        for t in new.iter().filter(|t| !old.contains(t)) {
            sqlx::query("UPDATE things SET roomid = $1 WHERE apikey = $2 AND thingid = $3")
                .bind(roomid)
                .bind(apikey)
                .bind(&t.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
