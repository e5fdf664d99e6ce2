//! The recorder's one task: gathers entries and changed states into groups and commits each group
//! in one transaction (the states, the history rows, the notices), then tells whoever waits for
//! that commit. After a commit it trims history that is over a bound ([`super::bounds`]) and,
//! hourly, removes history past its retention.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::bounds::Tallies;
use super::{Entry, Options, compose};
use crate::clock::now_millis;
use crate::device_state::{DirtyQueue, LiveState};
use crate::ids::DeviceId;
use crate::metrics::Metrics;
use crate::store::{Operation, Store};

/// Most entries one transaction takes; the rest wait for the next.
const GROUP_ENTRIES: usize = 2048;

/// One group: what its transaction writes and who waits for it.
#[derive(Default)]
struct Group {
    entries: Vec<Entry>,
    states: Vec<Arc<LiveState>>,
}

pub(super) struct Writer {
    store: Store,
    metrics: Arc<Metrics>,
    options: Options,
    tallies: Tallies,
    /// Marks states again whose save failed, so a later group retries them.
    dirty: DirtyQueue,
}

impl Writer {
    pub fn new(store: Store, metrics: Arc<Metrics>, options: Options, dirty: DirtyQueue) -> Writer {
        let tallies = Tallies::new(options.bounds, metrics.clone());
        Writer { store, metrics, options, tallies, dirty }
    }

    /// Commits groups until `stop`, then everything still queued.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Entry>,
        mut states: mpsc::UnboundedReceiver<Arc<LiveState>>,
        stop: CancellationToken,
    ) {
        let mut prune = tokio::time::interval(Duration::from_secs(3600));
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut group = Group::default();
            tokio::select! {
                n = rx.recv_many(&mut group.entries, GROUP_ENTRIES) => if n == 0 { break },
                Some(state) = states.recv() => group.states.push(state),
                _ = prune.tick() => {
                    self.prune().await;
                    continue;
                }
                _ = stop.cancelled() => break,
            }
            // Gather for a moment: one transaction for the reports of these milliseconds.
            if !self.options.commit_window.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(self.options.commit_window) => {}
                    _ = stop.cancelled() => {}
                }
            }
            self.gather(&mut group, &mut rx, &mut states);
            self.commit(group).await;
        }
        rx.close();
        loop {
            let mut group = Group::default();
            self.gather(&mut group, &mut rx, &mut states);
            if group.entries.is_empty() && group.states.is_empty() {
                break;
            }
            tracing::info!(entries = group.entries.len(), devices = group.states.len(), "recording before exit");
            self.commit(group).await;
        }
    }

    /// Takes what is queued. Entries first, then states: a state was marked before the entry that
    /// waits for it was queued, so every state such an entry needs is taken too.
    fn gather(&self, group: &mut Group, rx: &mut mpsc::Receiver<Entry>, states: &mut mpsc::UnboundedReceiver<Arc<LiveState>>) {
        while group.entries.len() < GROUP_ENTRIES {
            match rx.try_recv() {
                Ok(entry) => group.entries.push(entry),
                Err(_) => break,
            }
        }
        while let Ok(state) = states.try_recv() {
            group.states.push(state);
        }
    }

    /// Writes one group in one transaction and tells its waiters; then trims history.
    async fn commit(&mut self, group: Group) {
        let Group { entries, states } = group;
        let mut waiters: Vec<oneshot::Sender<bool>> = Vec::new();
        let mut ops: Vec<Operation> = Vec::new();
        for entry in entries {
            if let Some(done) = entry.done {
                waiters.push(done);
            }
            if let Some(op) = entry.event.and_then(|e| compose(e, self.options.bounds.params_max, &self.metrics)) {
                ops.push(op);
            }
        }
        // A state marked twice before this group is saved once.
        let mut saves: HashMap<DeviceId, String> = HashMap::with_capacity(states.len());
        for state in &states {
            saves.insert(state.deviceid.clone(), state.take_for_save());
        }
        let saves: Vec<(DeviceId, String)> = saves.into_iter().collect();
        if saves.is_empty() && ops.is_empty() {
            for w in waiters {
                let _ = w.send(true);
            }
            return;
        }
        match self.store.commit_group(&saves, &ops).await {
            Ok(added) => {
                self.metrics.commit_groups.fetch_add(1, Ordering::Relaxed);
                self.metrics.history_recorded.fetch_add(added.values().map(|u| u.rows).sum(), Ordering::Relaxed);
                for w in waiters {
                    let _ = w.send(true);
                }
                self.tallies.committed(&self.store, added).await;
            }
            Err(e) => {
                let rows = ops.iter().filter(|o| o.history).count() as u64;
                self.metrics.history_dropped.fetch_add(rows, Ordering::Relaxed);
                self.metrics.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, devices = saves.len(), operations = ops.len(), "committing device state and history failed");
                for w in waiters {
                    let _ = w.send(false);
                }
                // The states are still live; a later group saves them.
                for state in &states {
                    self.dirty.mark(state);
                }
            }
        }
    }

    async fn prune(&mut self) {
        let before = now_millis() - super::HISTORY_RETENTION.as_millis() as i64;
        match self.store.prune_history(before).await {
            Ok(gone) => self.tallies.pruned(gone),
            Err(e) => tracing::warn!(error = %e, "pruning old history failed"),
        }
    }
}
