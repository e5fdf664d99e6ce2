//! The message centre: notices kept per recipient (`shareNotify_v2`, `cancelShareNotify_v2`,
//! `opsNotify_v2`, `alarmNotify_v2`, …), newest first, filed under a family of the recipient.

use serde_json::Value;
use sqlx::{AnyConnection, Row};

use super::{Result, Store, new_id};
use crate::clock::now_millis;
use crate::ids::UserKey;

/// One message-centre entry as its recipient reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub msgid: String,
    pub msg_type: String,
    /// The message body (a JSON object as filed).
    pub message: Value,
    /// When it was filed, milliseconds since the epoch.
    pub date: i64,
}

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

    /// Up to `num` of `user`'s messages filed before `before` (milliseconds), newest first, from
    /// family `familyid` or filed under no family (those show in every family).
    pub async fn messages(&self, user: &UserKey, familyid: &str, before: i64, num: i64) -> Result<Vec<Message>> {
        let rows = sqlx::query(
            "SELECT msgid, msg_type, message, date FROM messages \
             WHERE apikey = $1 AND (familyid = $2 OR familyid IS NULL) AND date < $3 \
             ORDER BY date DESC, msgid DESC LIMIT $4",
        )
        .bind(user.as_str())
        .bind(familyid)
        .bind(before)
        .bind(num)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let text: String = r.get(2);
                Message {
                    msgid: r.get(0),
                    msg_type: r.get(1),
                    message: serde_json::from_str(&text).unwrap_or(Value::String(text)),
                    date: r.get(3),
                }
            })
            .collect())
    }
}
