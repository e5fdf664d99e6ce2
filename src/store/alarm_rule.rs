//! Threshold alarm rules, one JSON array per device as its owner posted it
//! (`/v2/device/alarm-rule`). The alarm evaluator ([`crate::alarm`]) keeps them in memory; it
//! loads them all at start and one device's again after each change.

use sqlx::Row;

use super::{Result, Store};
use crate::clock::now_millis;
use crate::ids::DeviceId;

impl Store {
    /// Replaces a device's rules (`rules` a JSON array).
    pub async fn set_alarm_rules(&self, deviceid: &str, rules: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO alarm_rules (deviceid, rules, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (deviceid) DO UPDATE SET rules = excluded.rules, updated_at = excluded.updated_at",
        )
        .bind(deviceid)
        .bind(rules)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a device's rules; false when it had none.
    pub async fn delete_alarm_rules(&self, deviceid: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM alarm_rules WHERE deviceid = $1").bind(deviceid).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// A device's rules as stored; `None` when it has none.
    pub async fn alarm_rules(&self, deviceid: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT rules FROM alarm_rules WHERE deviceid = $1").bind(deviceid).fetch_optional(&self.pool).await?)
    }

    /// Every device's rules.
    pub async fn all_alarm_rules(&self) -> Result<Vec<(DeviceId, String)>> {
        let rows = sqlx::query("SELECT deviceid, rules FROM alarm_rules").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|r| (DeviceId::new(r.get::<String, _>(0)), r.get(1))).collect())
    }
}
