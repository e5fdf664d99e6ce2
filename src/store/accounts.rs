//! Account changes beyond the user row's basics: verification codes (one live code per address and
//! purpose, its send limits and wrong-guess count), registration, password reset and account
//! closing behind a code, password and profile changes. Each change runs in one transaction; a
//! wrong code is itself a change (its guess is counted), so that transaction commits the count
//! and nothing else.

use sqlx::{AnyConnection, Row};

use super::{FIRST_FAMILY_NAME, Result, Sort, Store, StoreError, new_apikey, token_hash, unique_violation};
use crate::auth::same_secret;
use crate::clock::now_secs;
use crate::ids::{DeviceId, UserKey};
use crate::verify::{CODE_TTL_MS, MAX_ATTEMPTS, Purpose, SEND_LIMITS, code_hash};

/// Why an account change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// No live code for that address and purpose matches (wrong, expired, used or voided).
    #[error("wrong or expired verification code")]
    WrongCode,
    /// The address was sent as many codes as it may be for now.
    #[error("too many verification codes sent")]
    TooManySends,
    /// An account with that email or phone number exists.
    #[error("account already exists")]
    Exists,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AccountError {
    fn from(e: sqlx::Error) -> Self {
        AccountError::Store(e.into())
    }
}

type AccountResult<T> = std::result::Result<T, AccountError>;

/// The user's settings that the seed's user object carries beside the basics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub accept_email_ad: bool,
    pub account_consult: bool,
    pub lang: String,
}

/// A new account as registration makes it.
#[derive(Debug, Clone, Copy)]
pub struct NewAccount<'a> {
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub country_code: &'a str,
    pub password_hash: &'a str,
    pub region: &'a str,
}

/// Profile fields to change; `None` leaves one as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProfileChange<'a> {
    pub nickname: Option<&'a str>,
    pub accept_email_ad: Option<bool>,
    pub account_consult: Option<bool>,
}

/// What closing an account touched, so the live hub can tell the devices and sessions involved.
#[derive(Debug, Clone, Default)]
pub struct ClosedAccount {
    /// Devices the user owned: factory records again, with no owner.
    pub released: Vec<DeviceId>,
    /// Devices others had shared with the user.
    pub unshared: Vec<DeviceId>,
}

/// Settings a device returns to when its owner's account is closed (the schema's default).
const DEFAULT_DEVICE_SETTINGS: &str = r#"{"opsNotify":0,"opsHistory":1,"alarmNotify":1}"#;

impl Store {
    /// The user's profile settings; `None` when there is no such user.
    pub async fn profile(&self, apikey: &UserKey) -> Result<Option<Profile>> {
        let row = sqlx::query("SELECT accept_email_ad, account_consult, lang FROM users WHERE apikey = $1")
            .bind(apikey.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| Profile { accept_email_ad: r.get::<i64, _>(0) != 0, account_consult: r.get::<i64, _>(1) != 0, lang: r.get(2) }))
    }

    /// Remembers the language the user's notifications should use.
    pub async fn set_lang(&self, apikey: &UserKey, lang: &str) -> Result<()> {
        sqlx::query("UPDATE users SET lang = $1 WHERE apikey = $2").bind(lang).bind(apikey.as_str()).execute(&self.pool).await?;
        Ok(())
    }

    /// Changes the given profile fields in one statement.
    pub async fn update_profile(&self, apikey: &UserKey, change: ProfileChange<'_>) -> Result<()> {
        sqlx::query(
            "UPDATE users SET nickname = COALESCE($1, nickname), accept_email_ad = COALESCE($2, accept_email_ad), \
             account_consult = COALESCE($3, account_consult) WHERE apikey = $4",
        )
        .bind(change.nickname)
        .bind(change.accept_email_ad.map(i64::from))
        .bind(change.account_consult.map(i64::from))
        .bind(apikey.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // --- verification codes --------------------------------------------------------------

    /// Makes `code` the live code for `target` and `purpose` (replacing an earlier one) and
    /// counts the send; refused with `TooManySends` when a send limit is reached. `now` is in
    /// milliseconds.
    pub async fn record_code(&self, target: &str, purpose: Purpose, code: &str, now: i64) -> AccountResult<()> {
        let mut tx = self.begin().await?;
        for (window, max) in SEND_LIMITS {
            let sent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM code_sends WHERE target = $1 AND sent_at > $2")
                .bind(target)
                .bind(now - window)
                .fetch_one(&mut *tx)
                .await?;
            if sent >= max {
                return Err(AccountError::TooManySends);
            }
        }
        let day = SEND_LIMITS[SEND_LIMITS.len() - 1].0;
        sqlx::query("DELETE FROM code_sends WHERE sent_at <= $1").bind(now - day).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM verification_codes WHERE expires_at < $1").bind(now).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO code_sends (target, sent_at) VALUES ($1, $2)").bind(target).bind(now).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM verification_codes WHERE target = $1 AND purpose = $2")
            .bind(target)
            .bind(purpose.code())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO verification_codes (target, purpose, code_hash, expires_at, attempts) VALUES ($1, $2, $3, $4, 0)")
            .bind(target)
            .bind(purpose.code())
            .bind(code_hash(target, purpose, code))
            .bind(now + CODE_TTL_MS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uses up the live code of one of `targets` for `purpose` if `code` is it. A wrong code
    /// counts a guess against every live code of those targets; the last allowed guess voids it.
    pub async fn take_code(&self, targets: &[&str], purpose: Purpose, code: &str, now: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        let taken = Self::take_code_in(&mut tx, targets, purpose, code, now).await?;
        tx.commit().await?;
        Ok(taken)
    }

    async fn take_code_in(conn: &mut AnyConnection, targets: &[&str], purpose: Purpose, code: &str, now: i64) -> Result<bool> {
        let mut live = Vec::new();
        for target in targets {
            let row = sqlx::query("SELECT code_hash, expires_at, attempts FROM verification_codes WHERE target = $1 AND purpose = $2")
                .bind(*target)
                .bind(purpose.code())
                .fetch_optional(&mut *conn)
                .await?;
            let Some(row) = row else { continue };
            let (stored, expires_at, attempts): (String, i64, i64) = (row.get(0), row.get(1), row.get(2));
            if expires_at < now {
                continue;
            }
            if same_secret(&stored, &code_hash(target, purpose, code)) {
                sqlx::query("DELETE FROM verification_codes WHERE target = $1 AND purpose = $2")
                    .bind(*target)
                    .bind(purpose.code())
                    .execute(&mut *conn)
                    .await?;
                return Ok(true);
            }
            live.push((*target, attempts));
        }
        for (target, attempts) in live {
            let sql = if attempts + 1 >= MAX_ATTEMPTS {
                "DELETE FROM verification_codes WHERE target = $1 AND purpose = $2"
            } else {
                "UPDATE verification_codes SET attempts = attempts + 1 WHERE target = $1 AND purpose = $2"
            };
            sqlx::query(sql).bind(target).bind(purpose.code()).execute(&mut *conn).await?;
        }
        Ok(false)
    }

    // --- accounts behind a code ----------------------------------------------------------

    /// Creates an account if `code` is the live registration code of `target`; the account gets
    /// its first family, as [`Store::add_user`] gives one.
    pub async fn register_with_code(&self, account: NewAccount<'_>, target: &str, code: &str, now: i64) -> AccountResult<UserKey> {
        let email = account.email.map(str::to_ascii_lowercase);
        let mut tx = self.begin().await?;
        let existing: Option<String> = sqlx::query_scalar("SELECT apikey FROM users WHERE email = $1 OR phone = $2")
            .bind(&email)
            .bind(account.phone)
            .fetch_optional(&mut *tx)
            .await?;
        if existing.is_some() {
            return Err(AccountError::Exists);
        }
        if !Self::take_code_in(&mut tx, &[target], Purpose::Register, code, now).await? {
            tx.commit().await?;
            return Err(AccountError::WrongCode);
        }
        let apikey = new_apikey();
        sqlx::query(
            "INSERT INTO users (apikey, email, phone, country_code, password_hash, region, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&apikey)
        .bind(&email)
        .bind(account.phone)
        .bind(account.country_code)
        .bind(account.password_hash)
        .bind(account.region)
        .bind(now_secs())
        .execute(&mut *tx)
        .await
        .map_err(|e| if unique_violation(&e) { AccountError::Exists } else { e.into() })?;
        Self::create_family_in(&mut tx, &apikey, FIRST_FAMILY_NAME, Sort::First).await?;
        tx.commit().await?;
        Ok(UserKey::new(apikey))
    }

    /// Sets a new password if `code` is the live reset code of `target`, and revokes every token
    /// of the user.
    pub async fn reset_password_with_code(
        &self,
        apikey: &UserKey,
        target: &str,
        code: &str,
        password_hash: &str,
        now: i64,
    ) -> AccountResult<()> {
        let mut tx = self.begin().await?;
        if !Self::take_code_in(&mut tx, &[target], Purpose::ResetPassword, code, now).await? {
            tx.commit().await?;
            return Err(AccountError::WrongCode);
        }
        sqlx::query("UPDATE users SET password_hash = $1 WHERE apikey = $2")
            .bind(password_hash)
            .bind(apikey.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tokens WHERE apikey = $1").bind(apikey.as_str()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets a new password and revokes the user's tokens except the pair `keep_at` belongs to.
    pub async fn change_password(&self, apikey: &UserKey, password_hash: &str, keep_at: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE apikey = $2")
            .bind(password_hash)
            .bind(apikey.as_str())
            .execute(&mut *tx)
            .await?;
        let keep: Option<String> = sqlx::query_scalar("SELECT pair FROM tokens WHERE hash = $1 AND kind = 'at'")
            .bind(token_hash(keep_at))
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tokens WHERE apikey = $1 AND pair <> $2")
            .bind(apikey.as_str())
            .bind(keep.unwrap_or_default())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes an account if `code` is the live closing code of one of `targets` (the user's
    /// email and phone). Its tokens, families, rooms, groups, messages and the shares to and from
    /// it go; its devices lose their owner, their shares, their history and their owner's
    /// settings, so they can be added again.
    pub async fn close_account_with_code(&self, apikey: &UserKey, targets: &[&str], code: &str, now: i64) -> AccountResult<ClosedAccount> {
        let user = apikey.as_str();
        let mut tx = self.begin().await?;
        if !Self::take_code_in(&mut tx, targets, Purpose::CloseAccount, code, now).await? {
            tx.commit().await?;
            return Err(AccountError::WrongCode);
        }
        let released: Vec<String> =
            sqlx::query_scalar("SELECT deviceid FROM devices WHERE owner = $1 ORDER BY deviceid").bind(user).fetch_all(&mut *tx).await?;
        let unshared: Vec<String> =
            sqlx::query_scalar("SELECT deviceid FROM shares WHERE apikey = $1 ORDER BY deviceid").bind(user).fetch_all(&mut *tx).await?;
        let owned = "(SELECT deviceid FROM devices WHERE owner = $1)";
        let own_groups = "(SELECT id FROM device_groups WHERE apikey = $1)";
        let own_families = "(SELECT id FROM families WHERE apikey = $1)";
        let statements = [
            // Other users lose the devices this user shared with them.
            format!("DELETE FROM things WHERE kind = 2 AND thingid IN {owned}"),
            format!("DELETE FROM shares WHERE deviceid IN {owned}"),
            // Everyone's groups built on them go (as when the owner deletes a device).
            format!("DELETE FROM things WHERE kind = 3 AND thingid IN (SELECT id FROM device_groups WHERE main_deviceid IN {owned})"),
            format!("DELETE FROM group_members WHERE groupid IN (SELECT id FROM device_groups WHERE main_deviceid IN {owned})"),
            format!("DELETE FROM device_groups WHERE main_deviceid IN {owned}"),
            format!("DELETE FROM group_members WHERE deviceid IN {owned}"),
            format!("DELETE FROM history WHERE deviceid IN {owned}"),
            format!("DELETE FROM device_properties WHERE deviceid IN {owned}"),
            format!(
                "UPDATE devices SET owner = NULL, owned_at = NULL, name = '', tags = NULL, settings = '{DEFAULT_DEVICE_SETTINGS}' \
                 WHERE owner = $1"
            ),
            // Everything that is the user's own.
            "DELETE FROM shares WHERE apikey = $1".to_owned(),
            "DELETE FROM things WHERE apikey = $1".to_owned(),
            format!("DELETE FROM group_members WHERE groupid IN {own_groups}"),
            "DELETE FROM device_groups WHERE apikey = $1".to_owned(),
            "UPDATE users SET current_family = NULL WHERE apikey = $1".to_owned(),
            format!("DELETE FROM rooms WHERE familyid IN {own_families}"),
            "DELETE FROM families WHERE apikey = $1".to_owned(),
            "DELETE FROM messages WHERE apikey = $1".to_owned(),
            "DELETE FROM tokens WHERE apikey = $1".to_owned(),
            "DELETE FROM users WHERE apikey = $1".to_owned(),
        ];
        for sql in statements {
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(user).execute(&mut *tx).await?;
        }
        for target in targets {
            sqlx::query("DELETE FROM verification_codes WHERE target = $1").bind(*target).execute(&mut *tx).await?;
        }
        Self::bump_acl_in(&mut tx).await?;
        tx.commit().await?;
        Ok(ClosedAccount {
            released: released.into_iter().map(DeviceId::new).collect(),
            unshared: unshared.into_iter().map(DeviceId::new).collect(),
        })
    }
}
