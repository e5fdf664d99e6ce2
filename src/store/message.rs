//! The message centre: notices kept per recipient (`shareNotify_v2`, `cancelShareNotify_v2`,
//! `opsNotify_v2`, `alarmNotify_v2`, …), newest first, filed under a family of the recipient.

use serde_json::Value;
use sqlx::AnyConnection;

use super::{Result, Store, new_id, now_millis};
use crate::ids::UserKey;

impl Store {
    /// Files a message for `apikey` inside a caller's transaction; returns its msgid.
    pub(crate) async fn add_message_in(
        conn: &mut AnyConnection,
        apikey: &str,
        familyid: Option<&str>,
        msg_type: &str,
        message: &Value,
    ) -> Result<String> {
        let msgid = new_id();
        sqlx::query("INSERT INTO messages (msgid, apikey, familyid, msg_type, message, date) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&msgid)
            .bind(apikey)
            .bind(familyid)
            .bind(msg_type)
            .bind(message.to_string())
            .bind(now_millis())
            .execute(conn)
            .await?;
        Ok(msgid)
    }

    /// Files a message for `user`.
    pub async fn add_message(&self, user: &UserKey, familyid: Option<&str>, msg_type: &str, message: &Value) -> Result<String> {
        Self::add_message_in(&mut *self.pool.acquire().await?, user.as_str(), familyid, msg_type, message).await
    }
}
