//! The cluster's directory of held devices (`cluster_devices`): which node holds each device and
//! by which epoch. Only a cluster ([`crate::cluster`]) uses it, and only on PostgreSQL.

use sqlx::Row;

use super::{Result, Store};
use crate::ids::DeviceId;

impl Store {
    /// Records that `node` now holds the device; returns the new epoch, greater than every
    /// earlier claim of the device in this cluster.
    pub async fn hold_device(&self, cluster: &str, deviceid: &DeviceId, node: &str) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO cluster_devices (cluster, deviceid, node, epoch) VALUES ($1, $2, $3, 1) \
             ON CONFLICT (cluster, deviceid) DO UPDATE SET node = excluded.node, epoch = cluster_devices.epoch + 1 \
             RETURNING epoch",
        )
        .bind(cluster)
        .bind(deviceid.as_str())
        .bind(node)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
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
