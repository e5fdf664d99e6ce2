//! Who may reach each online device, kept in step with the store.
//!
//! Sharing, ownership, share permits and device settings live in the store; the router answers
//! from each online device's audience (owner, sharees, permits, settings) in memory. A change
//! made in this process (a REST handler) calls [`Acl::changed`] after its transaction commits
//! and before it answers, so the caller's next command already finds the new audience. Changes
//! made by other processes (`switchyard admin` while the hub runs) bump `meta.acl_version` in
//! the same transaction, and [`Acl::watch`] polls that version and reloads every audience when it
//! moves. One lock orders the two, so a poll that read the store before a change cannot apply
//! its older view after the change's own reload.
//!
//! [`Acl::generation`] is the version this node has applied; app sessions keep their cached list
//! of reachable devices (for offline answers) only while it is unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ids::DeviceId;
use crate::router::Router;
use crate::store::{Store, StoreError};

pub struct Acl {
    store: Store,
    router: Arc<dyn Router>,
    /// The store's `acl_version` as last applied to the router.
    generation: AtomicI64,
    /// Held while audiences are read from the store and applied.
    reload: tokio::sync::Mutex<()>,
}

impl Acl {
    pub async fn new(store: Store, router: Arc<dyn Router>) -> Result<Self, StoreError> {
        let generation = AtomicI64::new(store.acl_version().await?);
        Ok(Acl { store, router, generation, reload: tokio::sync::Mutex::new(()) })
    }

    pub fn generation(&self) -> i64 {
        self.generation.load(Ordering::Acquire)
    }

    /// After a change this process committed: reloads the audiences of `devices` that are online
    /// here (all online devices when `devices` is empty), then tells the other nodes of a cluster.
    pub async fn changed(&self, devices: &[DeviceId]) {
        self.apply(devices).await;
        self.router.sharing_changed(devices);
    }

    /// Reloads the audiences of `devices` that are online here (all when `devices` is empty).
    /// When the store's version moved by more than this one change (another process changed
    /// something too), everything is reloaded.
    pub async fn apply(&self, devices: &[DeviceId]) {
        let _held = self.reload.lock().await;
        let result = async {
            let version = self.store.acl_version().await?;
            if devices.is_empty() || version > self.generation() + 1 {
                return self.reload_all(version).await;
            }
            let online: std::collections::HashSet<DeviceId> = self.router.online_devices().into_iter().collect();
            for id in devices.iter().filter(|id| online.contains(*id)) {
                self.router.set_audience(id, self.store.audience(id).await?);
            }
            self.generation.fetch_max(version, Ordering::AcqRel);
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // The poll retries: the version it has not applied yet still differs.
            tracing::warn!(error = %e, "reloading audiences after a change failed; the next poll retries");
        }
    }

    /// Reloads every online device's audience and records `version` as applied. Reads only the
    /// devices online here: a cluster node's cost follows its own connections, not the fleet.
    async fn reload_all(&self, version: i64) -> Result<(), StoreError> {
        let online = self.router.online_devices();
        tracing::debug!(version, devices = online.len(), "sharing changed, reloading audiences");
        let mut all = self.store.audiences_of(&online).await?;
        for id in online {
            let audience = all.remove(&id);
            self.router.set_audience(&id, audience);
        }
        self.generation.fetch_max(version, Ordering::AcqRel);
        Ok(())
    }

    /// Polls the store's version every `every` and reloads everything when another process moved
    /// it. Ends on `shutdown`.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let _held = self.reload.lock().await;
            let Ok(version) = self.store.acl_version().await else { continue };
            if version == self.generation() {
                continue;
            }
            if let Err(e) = self.reload_all(version).await {
                tracing::warn!(error = %e, "reloading audiences failed; will retry");
            }
        }
    }
}
