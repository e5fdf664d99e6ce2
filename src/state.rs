//! Background work that keeps the store and the live sessions in step, off the routing path:
//! [`StateWriter`] saves reported device state in batches, and [`watch_acl`] reloads who may
//! reach each online device when sharing or ownership changes (also from `switchyard admin`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::registry::DeviceLink;
use crate::router::Router;
use crate::store::Store;

/// How long reports are gathered before one transaction saves them.
const BATCH_WINDOW: Duration = Duration::from_millis(250);

/// Queues devices whose state changed. Each link is queued at most once while it is dirty, so
/// the queue is bounded by the number of online devices.
#[derive(Clone)]
pub struct StateWriter {
    tx: mpsc::UnboundedSender<Arc<DeviceLink>>,
    store: Store,
}

impl StateWriter {
    /// Starts the writer. Once `stop` fires it saves everything still queued and ends; stop it
    /// only after the sessions that mark devices have ended.
    pub fn start(store: Store, stop: CancellationToken) -> (StateWriter, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (StateWriter { tx, store: store.clone() }, tokio::spawn(run(store, rx, stop)))
    }

    /// Saves one device's state at once if it is dirty (when its session ends).
    pub async fn save_now(&self, link: &Arc<DeviceLink>) {
        if link.dirty.load(Ordering::Acquire) {
            save(&self.store, vec![link.clone()]).await;
        }
    }

    pub fn mark(&self, link: &Arc<DeviceLink>) {
        if !link.dirty.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(link.clone());
        }
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Arc<DeviceLink>>, stop: CancellationToken) {
    loop {
        let first = tokio::select! {
            first = rx.recv() => first,
            _ = stop.cancelled() => None,
        };
        let Some(first) = first else { break };
        tokio::select! {
            _ = tokio::time::sleep(BATCH_WINDOW) => {}
            _ = stop.cancelled() => {}
        }
        let mut links = vec![first];
        while let Ok(l) = rx.try_recv() {
            links.push(l);
        }
        save(&store, links).await;
    }
    let mut rest = Vec::new();
    while let Ok(l) = rx.try_recv() {
        rest.push(l);
    }
    if !rest.is_empty() {
        tracing::info!(devices = rest.len(), "saving device state before exit");
        save(&store, rest).await;
    }
}

async fn save(store: &Store, links: Vec<Arc<DeviceLink>>) {
    let batch: Vec<_> = links
        .iter()
        .map(|l| {
            l.dirty.store(false, Ordering::Release);
            (l.deviceid.clone(), l.state.lock().unwrap_or_else(|p| p.into_inner()).to_json())
        })
        .collect();
    if let Err(e) = store.save_params(&batch).await {
        tracing::error!(error = %e, devices = batch.len(), "saving device state failed");
    }
}

/// Polls the store's access-control version; when it moves, reloads the audience of every
/// online device and publishes the new version in `generation` (app sessions drop their cached
/// list of reachable devices when it changes). Ends on `shutdown`.
pub async fn watch_acl(store: Store, router: Arc<dyn Router>, generation: Arc<AtomicI64>, every: Duration, shutdown: CancellationToken) {
    let mut seen = generation.load(Ordering::Acquire);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(version) = store.acl_version().await else { continue };
        if version == seen {
            continue;
        }
        seen = version;
        generation.store(version, Ordering::Release);
        let links = router.devices();
        tracing::debug!(version, devices = links.len(), "sharing changed, reloading audiences");
        match store.audiences().await {
            Ok(mut all) => {
                for link in links {
                    link.set_audience(all.remove(&link.deviceid));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reloading audiences failed; will retry");
                seen = -1;
            }
        }
    }
}
