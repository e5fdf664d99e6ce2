//! The cluster's directory of held devices (`cluster_devices`): which node holds each device and
//! by which epoch. Only a cluster ([`crate::cluster`]) uses it, and only on PostgreSQL.

use std::fmt::Write as _;

use sqlx::Row;

use super::{Result, Store};
use crate::ids::DeviceId;

impl Store {
    /// Records that `node` now holds each of `deviceids` (distinct, at most a few hundred); returns
    /// each device's new epoch, greater than every earlier claim of it in this cluster. One
    /// statement for all: thousands of devices registering at once are claimed in a few round
    /// trips. Rows are written in id order, so two nodes claiming overlapping sets lock them in
    /// the same order.
    pub async fn hold_devices(&self, cluster: &str, deviceids: &[DeviceId], node: &str) -> Result<Vec<(DeviceId, i64)>> {
        if deviceids.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<&str> = deviceids.iter().map(DeviceId::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut sql = String::from("INSERT INTO cluster_devices (cluster, deviceid, node, epoch) VALUES ");
        for i in 0..ids.len() {
            let _ = write!(sql, "{}($1, ${}, $2, 1)", if i == 0 { "" } else { ", " }, i + 3);
        }
        sql.push_str(
            " ON CONFLICT (cluster, deviceid) DO UPDATE SET node = excluded.node, epoch = cluster_devices.epoch + 1 \
             RETURNING deviceid, epoch",
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(cluster).bind(node);
        for id in ids {
            query = query.bind(id);
        }
        let rows = query.persistent(false).fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((DeviceId::new(r.try_get::<String, _>(0)?), r.try_get(1)?))).collect()
    }

    /// The device went offline on `node`: cleared only when that claim is still the latest.
    pub async fn unhold_device(&self, cluster: &str, deviceid: &DeviceId, node: &str, epoch: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE cluster_devices SET node = '' WHERE cluster = $1 AND deviceid = $2 AND node = $3 AND epoch = $4")
            .bind(cluster)
            .bind(deviceid.as_str())
            .bind(node)
            .bind(epoch)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks offline every device `node` still holds (it died); returns them with the epochs of
    /// their claims. Two survivors running this at once get disjoint lists: each row is cleared once.
    pub async fn reap_node(&self, cluster: &str, node: &str) -> Result<Vec<(DeviceId, i64)>> {
        let rows = sqlx::query("UPDATE cluster_devices SET node = '' WHERE cluster = $1 AND node = $2 RETURNING deviceid, epoch")
            .bind(cluster)
            .bind(node)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((DeviceId::new(r.try_get::<String, _>(0)?), r.try_get(1)?))).collect()
    }

    /// Every device some node holds, with that node and the epoch of its claim.
    pub async fn held_devices(&self, cluster: &str) -> Result<Vec<(DeviceId, String, i64)>> {
        let rows = sqlx::query("SELECT deviceid, node, epoch FROM cluster_devices WHERE cluster = $1 AND node <> ''")
            .bind(cluster)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((DeviceId::new(r.try_get::<String, _>(0)?), r.try_get(1)?, r.try_get(2)?))).collect()
    }
}
