//! Families, rooms and where each user keeps each thing (`things` rows). A user's first family is
//! made with the account; a thing (own device, shared device, group) is placed in one family of
//! the user who sees it, optionally in a room, at an index that orders the family's thing list.

use sqlx::{AnyConnection, Row};

use super::{Result, Store, StoreError, new_id, now_millis};
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
        let mut tx = self.pool.begin().await?;
        let id = Self::current_family_in(&mut tx, user.as_str()).await?;
        tx.commit().await?;
        Ok(id)
    }
}
