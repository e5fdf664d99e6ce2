//! Invite-code sharing (seed 003): a device's owner (its "manager") invites a user by account
//! (`app`), whoever presents a code first (`qrcode`) or an email address (`email`); the invite
//! lives until it expires and is accepted, denied or cancelled once.
//!
//! There is one sharing model: accepting writes the share through [`Store::share_devices_in`],
//! the same write `/v2/device/share` makes (default permit, the sharee's `things` row of kind 2,
//! `shareNotify_v2`, the access-control version), in the same transaction that marks the invite
//! accepted. Taking a share back goes through seed 004's paths too ([`Store::release_device`],
//! [`Store::leave_shared_device`], [`Store::unshare_device`]); releasing a device also cancels
//! its pending invites ([`Store::forget_released_in`]).
//!
//! Every state change is one transaction that moves the invite from `pending` with a
//! compare-and-set, and accepting first locks the device's row, so of two users racing for one
//! `qrcode` invite exactly one gets the share, and a release cannot slip between the check that
//! the manager still owns the device and the share it writes.

use rand::RngCore;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::share::{MAX_PERMIT, ShareError};
use super::{Store, StoreError};
use crate::clock::now_millis;
use crate::ids::UserKey;

/// How an invite names its invitee (the seed's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteMode {
    /// An existing account, by apikey, email or phone.
    App,
    /// Nobody: whoever presents the code first.
    Qrcode,
    /// An email address, with or without an account yet; the code is mailed to it.
    Email,
}

impl InviteMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "app" => Some(InviteMode::App),
            "qrcode" => Some(InviteMode::Qrcode),
            "email" => Some(InviteMode::Email),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InviteMode::App => "app",
            InviteMode::Qrcode => "qrcode",
            InviteMode::Email => "email",
        }
    }
}

/// Where an invite stands (the seed's `state`). `Overtime` is a pending invite past its expiry;
/// it is not stored, but read so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteState {
    Pending,
    Accept,
    Deny,
    Cancel,
    Overtime,
}

impl InviteState {
    pub fn as_str(self) -> &'static str {
        match self {
            InviteState::Pending => "pending",
            InviteState::Accept => "accept",
            InviteState::Deny => "deny",
            InviteState::Cancel => "cancel",
            InviteState::Overtime => "overtime",
        }
    }

    fn read(stored: &str, expires_at: i64, now: i64) -> Self {
        match stored {
            "accept" => InviteState::Accept,
            "deny" => InviteState::Deny,
            "cancel" => InviteState::Cancel,
            _ if expires_at <= now => InviteState::Overtime,
            _ => InviteState::Pending,
        }
    }
}

/// An invite as a party sees it in their list.
#[derive(Debug, Clone)]
pub struct Invite {
    pub code: String,
    pub deviceid: String,
    pub mode: InviteMode,
    pub from: UserKey,
    /// The manager's account: email, else phone, else apikey.
    pub from_user: String,
    /// The invitee once known: named (`app`), the account holding the address (`email`) or
    /// whoever answered (`qrcode`).
    pub to: Option<UserKey>,
    /// The invitee's account as shown: email, phone or apikey; the address for `email`.
    pub to_user: String,
    pub state: InviteState,
    /// Why the invitee denied, when they said.
    pub reason: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    pub expires_at: i64,
}

/// Who an invite is for.
#[derive(Debug, Clone)]
pub enum Invitee {
    /// An existing account.
    User(UserKey),
    Qrcode,
    /// An address, lowercased.
    Email(String),
}

/// Why an invite change was refused.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error("device {0} not found")]
    UnknownDevice(String),
    #[error("invite not found")]
    UnknownInvite,
    /// Not the manager (sharing, cancelling), not the invitee (answering), not a party.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("a device cannot be shared with its manager")]
    WithSelf,
    #[error("the user already shares this device")]
    AlreadyShared,
    #[error("the invite expired")]
    Expired,
    #[error("the invite was already {0}")]
    Answered(&'static str),
    #[error("device {0} has {MAX_PENDING_INVITES} pending invites already")]
    TooMany(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for InviteError {
    fn from(e: sqlx::Error) -> Self {
        InviteError::Store(e.into())
    }
}

impl From<ShareError> for InviteError {
    fn from(e: ShareError) -> Self {
        match e {
            ShareError::WithOwner => InviteError::WithSelf,
            // The device changed hands under a pending invite: the invite no longer stands.
            ShareError::NotFound(_) | ShareError::NotOwner(_) => InviteError::Answered("cancelled"),
            ShareError::Store(e) => InviteError::Store(e),
        }
    }
}

type InviteResult<T> = std::result::Result<T, InviteError>;

/// Pending, unexpired invites one device may have: the bound on invites (and invite emails) a
/// manager can have outstanding per device.
pub const MAX_PENDING_INVITES: i64 = 20;

/// An answer to an invite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'a> {
    Accept,
    Deny { reason: &'a str },
}

/// A new invite code: 128 random bits as 32 lowercase hex digits (URL-safe).
fn new_code() -> String {
    let mut buf = [0u8; 16];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// How an account is shown: email, else phone, else apikey.
fn account(apikey: &str, email: Option<String>, phone: Option<String>) -> String {
    email.or(phone).unwrap_or_else(|| apikey.to_owned())
}

const INVITE_COLUMNS: &str = "i.code, i.deviceid, i.mode, i.from_apikey, f.email, f.phone, COALESCE(i.to_apikey, e.apikey), t.email, t.phone, \
     i.to_user, i.state, i.reason, i.created_at, i.expires_at";

const INVITE_JOINS: &str = "share_invites i JOIN users f ON f.apikey = i.from_apikey \
     LEFT JOIN users e ON i.to_apikey IS NULL AND i.mode = 'email' AND e.email = i.to_user \
     LEFT JOIN users t ON t.apikey = COALESCE(i.to_apikey, e.apikey)";

fn invite_from(r: AnyRow, now: i64) -> Invite {
    let from: String = r.get(3);
    let mode = InviteMode::parse(&r.get::<String, _>(2)).unwrap_or(InviteMode::App);
    let to: Option<String> = r.get(6);
    let stored_to_user: String = r.get(9);
    let to_user = match (&to, mode) {
        (_, InviteMode::Email) => stored_to_user,
        (Some(k), _) => account(k, r.get(7), r.get(8)),
        (None, _) => String::new(),
    };
    Invite {
        code: r.get(0),
        deviceid: r.get(1),
        mode,
        from_user: account(&from, r.get(4), r.get(5)),
        from: UserKey::new(from),
        to: to.map(UserKey::new),
        to_user,
        state: InviteState::read(&r.get::<String, _>(10), r.get(13), now),
        reason: r.get(11),
        created_at: r.get(12),
        expires_at: r.get(13),
    }
}

impl Store {
    async fn invite_in(conn: &mut AnyConnection, code: &str, now: i64) -> InviteResult<Invite> {
        let sql = format!("SELECT {INVITE_COLUMNS} FROM {INVITE_JOINS} WHERE i.code = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(code).fetch_optional(&mut *conn).await?;
        row.map(|r| invite_from(r, now)).ok_or(InviteError::UnknownInvite)
    }

    async fn shares_in(conn: &mut AnyConnection, deviceid: &str, user: &str) -> InviteResult<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM shares WHERE deviceid = $1 AND apikey = $2")
            .bind(deviceid)
            .bind(user)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(found.is_some())
    }

    /// The manager of `deviceid` invites `invitee` for `ttl_ms`; answers the invite code.
    /// Unknown device → `UnknownDevice`; the caller does not own it → `Forbidden`; the manager
    /// as invitee (also by their own address) → `WithSelf`; a user who shares it already →
    /// `AlreadyShared`.
    pub async fn create_invite(&self, from: &UserKey, deviceid: &str, invitee: &Invitee, ttl_ms: i64) -> InviteResult<Invite> {
        let now = now_millis();
        let mut tx = self.begin().await?;
        let owner: Option<Option<String>> =
            sqlx::query_scalar("SELECT owner FROM devices WHERE deviceid = $1").bind(deviceid).fetch_optional(&mut *tx).await?;
        let Some(owner) = owner else { return Err(InviteError::UnknownDevice(deviceid.to_owned())) };
        if owner.as_deref() != Some(from.as_str()) {
            return Err(InviteError::Forbidden("only the device's manager may share it"));
        }
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM share_invites WHERE deviceid = $1 AND state = 'pending' AND expires_at > $2")
                .bind(deviceid)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
        if pending >= MAX_PENDING_INVITES {
            return Err(InviteError::TooMany(deviceid.to_owned()));
        }
        let (to_apikey, to_user) = match invitee {
            Invitee::User(k) => (Some(k.as_str().to_owned()), String::new()),
            Invitee::Qrcode => (None, String::new()),
            Invitee::Email(address) => {
                let holder: Option<String> =
                    sqlx::query_scalar("SELECT apikey FROM users WHERE email = $1").bind(address).fetch_optional(&mut *tx).await?;
                // The address is checked against its account now, and again when someone accepts.
                if let Some(holder) = holder {
                    if holder == from.as_str() {
                        return Err(InviteError::WithSelf);
                    }
                    if Self::shares_in(&mut tx, deviceid, &holder).await? {
                        return Err(InviteError::AlreadyShared);
                    }
                }
                (None, address.clone())
            }
        };
        if let Some(k) = &to_apikey {
            if k == from.as_str() {
                return Err(InviteError::WithSelf);
            }
            if Self::shares_in(&mut tx, deviceid, k).await? {
                return Err(InviteError::AlreadyShared);
            }
        }
        let mode = match invitee {
            Invitee::User(_) => InviteMode::App,
            Invitee::Qrcode => InviteMode::Qrcode,
            Invitee::Email(_) => InviteMode::Email,
        };
        let code = new_code();
        sqlx::query(
            "INSERT INTO share_invites (code, deviceid, from_apikey, mode, to_apikey, to_user, state, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8)",
        )
        .bind(&code)
        .bind(deviceid)
        .bind(from.as_str())
        .bind(mode.as_str())
        .bind(to_apikey.as_deref())
        .bind(&to_user)
        .bind(now)
        .bind(now + ttl_ms)
        .execute(&mut *tx)
        .await?;
        let invite = Self::invite_in(&mut tx, &code, now).await?;
        tx.commit().await?;
        Ok(invite)
    }

    /// May `user` answer `invite`? The named user; for `email` the account holding the address;
    /// for `qrcode` anyone but the manager.
    fn check_invitee(user: &UserKey, invite: &Invite) -> InviteResult<()> {
        if &invite.from == user {
            return Err(InviteError::Forbidden("the manager cannot answer their own invite"));
        }
        // For `email`, `to` is the account holding the address (see `INVITE_JOINS`).
        if invite.mode != InviteMode::Qrcode && invite.to.as_ref() != Some(user) {
            return Err(InviteError::Forbidden("the invite is for another user"));
        }
        Ok(())
    }

    /// A pending invite may still be answered or cancelled: else `Expired` or `Answered`.
    fn check_pending(invite: &Invite) -> InviteResult<()> {
        match invite.state {
            InviteState::Pending => Ok(()),
            InviteState::Overtime => Err(InviteError::Expired),
            InviteState::Accept => Err(InviteError::Answered("accepted")),
            InviteState::Deny => Err(InviteError::Answered("denied")),
            InviteState::Cancel => Err(InviteError::Answered("cancelled")),
        }
    }

    /// Moves a pending, unexpired invite to `state`; `false` when another change came first.
    async fn settle_in(conn: &mut AnyConnection, code: &str, state: &str, to: Option<&str>, reason: &str, now: i64) -> InviteResult<bool> {
        let n = sqlx::query(
            "UPDATE share_invites SET state = $1, to_apikey = COALESCE($2, to_apikey), reason = $3, answered_at = $4 \
             WHERE code = $5 AND state = 'pending' AND expires_at > $4",
        )
        .bind(state)
        .bind(to)
        .bind(reason)
        .bind(now)
        .bind(code)
        .execute(&mut *conn)
        .await?;
        Ok(n.rows_affected() == 1)
    }

    /// `user` accepts or denies an invite. Accepting shares the device with them with the
    /// default permit, in the same transaction. Unknown code → `UnknownInvite`; not theirs to
    /// answer → `Forbidden`; no longer pending → `Expired`/`Answered`; they share it already →
    /// `AlreadyShared` (and the invite stays pending).
    pub async fn answer_invite(&self, user: &UserKey, code: &str, answer: Answer<'_>) -> InviteResult<Invite> {
        let now = now_millis();
        let mut tx = self.begin().await?;
        let invite = Self::invite_in(&mut tx, code, now).await?;
        Self::check_invitee(user, &invite)?;
        Self::check_pending(&invite)?;
        match answer {
            Answer::Accept => {
                // Lock the device's row while it is still the manager's: a release waits for
                // this transaction, or this one sees the device released.
                let held = sqlx::query("UPDATE devices SET owner = owner WHERE deviceid = $1 AND owner = $2")
                    .bind(&invite.deviceid)
                    .bind(invite.from.as_str())
                    .execute(&mut *tx)
                    .await?;
                if held.rows_affected() == 0 {
                    return Err(InviteError::Answered("cancelled"));
                }
                if !Self::settle_in(&mut tx, code, "accept", Some(user.as_str()), "", now).await? {
                    return Err(Self::check_pending(&Self::invite_in(&mut tx, code, now).await?)
                        .err()
                        .unwrap_or(InviteError::Answered("answered")));
                }
                if Self::shares_in(&mut tx, &invite.deviceid, user.as_str()).await? {
                    return Err(InviteError::AlreadyShared);
                }
                Self::share_devices_in(&mut tx, &invite.from, std::slice::from_ref(&invite.deviceid), user, MAX_PERMIT, "").await?;
            }
            Answer::Deny { reason } => {
                if !Self::settle_in(&mut tx, code, "deny", Some(user.as_str()), reason, now).await? {
                    return Err(Self::check_pending(&Self::invite_in(&mut tx, code, now).await?)
                        .err()
                        .unwrap_or(InviteError::Answered("answered")));
                }
            }
        }
        let invite = Self::invite_in(&mut tx, code, now).await?;
        tx.commit().await?;
        Ok(invite)
    }

    /// The manager cancels a pending invite. Not theirs → `Forbidden`; no longer pending →
    /// `Expired`/`Answered`.
    pub async fn cancel_invite(&self, user: &UserKey, code: &str) -> InviteResult<()> {
        let now = now_millis();
        let mut tx = self.begin().await?;
        let invite = Self::invite_in(&mut tx, code, now).await?;
        if &invite.from != user {
            return Err(InviteError::Forbidden("only the manager who sent the invite may cancel it"));
        }
        Self::check_pending(&invite)?;
        if !Self::settle_in(&mut tx, code, "cancel", None, "", now).await? {
            return Err(Self::check_pending(&Self::invite_in(&mut tx, code, now).await?)
                .err()
                .unwrap_or(InviteError::Answered("answered")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Which side of `invite` `user` is on: `Some(true)` the sender, `Some(false)` the invitee.
    fn party(user: &UserKey, invite: &Invite) -> Option<bool> {
        if &invite.from == user {
            Some(true)
        } else if invite.to.as_ref() == Some(user) {
            Some(false)
        } else {
            None
        }
    }

    /// A party removes an invite from their own list; a pending one is cancelled first. Once
    /// no party lists it any more, it is deleted. Not a party, or removed already →
    /// `UnknownInvite` for removed, `Forbidden` for strangers.
    pub async fn delete_invite(&self, user: &UserKey, code: &str) -> InviteResult<()> {
        let now = now_millis();
        let mut tx = self.begin().await?;
        let invite = Self::invite_in(&mut tx, code, now).await?;
        let Some(sender) = Self::party(user, &invite) else {
            return Err(InviteError::Forbidden("only the manager and the invitee may remove an invite"));
        };
        let column = if sender { "from_hidden" } else { "to_hidden" };
        let hidden = sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE share_invites SET {column} = 1 WHERE code = $1 AND {column} = 0")))
            .bind(code)
            .execute(&mut *tx)
            .await?;
        if hidden.rows_affected() == 0 {
            return Err(InviteError::UnknownInvite);
        }
        Self::settle_in(&mut tx, code, "cancel", None, "", now).await?;
        // Gone from every list that could show it: the sender's, and the invitee's when there is one.
        sqlx::query(
            "DELETE FROM share_invites WHERE code = $1 AND from_hidden = 1 \
             AND (to_hidden = 1 OR (to_apikey IS NULL AND mode = 'qrcode'))",
        )
        .bind(code)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every invite `user` sent or received and has not removed, newest first.
    pub async fn invites_of(&self, user: &UserKey) -> std::result::Result<Vec<Invite>, StoreError> {
        let now = now_millis();
        let email: Option<Option<String>> =
            sqlx::query_scalar("SELECT email FROM users WHERE apikey = $1").bind(user.as_str()).fetch_optional(&self.pool).await?;
        let sql = format!(
            "SELECT {INVITE_COLUMNS} FROM {INVITE_JOINS} WHERE (i.from_apikey = $1 AND i.from_hidden = 0) \
             OR (i.to_hidden = 0 AND (i.to_apikey = $1 OR (i.to_apikey IS NULL AND i.mode = 'email' AND i.to_user = $2))) \
             ORDER BY i.created_at DESC, i.code"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user.as_str()).bind(email.flatten()).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|r| invite_from(r, now)).collect())
    }

    /// What releasing a device ends beside its shares, inside the releasing transaction: its
    /// pending invites are cancelled and its extension properties removed.
    pub(crate) async fn forget_released_in(conn: &mut AnyConnection, deviceid: &str) -> super::Result<()> {
        sqlx::query("UPDATE share_invites SET state = 'cancel', answered_at = $1 WHERE deviceid = $2 AND state = 'pending'")
            .bind(now_millis())
            .bind(deviceid)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM device_properties WHERE deviceid = $1").bind(deviceid).execute(&mut *conn).await?;
        Ok(())
    }
}
