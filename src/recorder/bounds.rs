//! Keeps history within its bounds: at most so many rows and bytes per device, and so many bytes
//! for all devices together. [`Tallies`] follows how much each device holds (read from the store
//! the first time the device is recorded, then counted as rows are added) and trims the oldest
//! rows once a bound is passed, down to nine tenths of it, so a busy device is trimmed every
//! tenth of its bound rather than on every write. It runs on the recorder's writer thread, after a commit,
//! never on the routing path.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::ids::DeviceId;
use crate::metrics::Metrics;
use crate::store::{Store, Usage};

/// How much history the recorder keeps.
#[derive(Debug, Clone, Copy)]
pub struct HistoryBounds {
    pub rows_per_device: u64,
    pub bytes_per_device: u64,
    pub bytes_total: u64,
    /// Params longer than this are recorded as a marker (see [`super::truncated_params`]).
    pub params_max: usize,
}

/// Devices trimmed after one commit; the others over a bound wait for the next commits.
const TRIMS_PER_COMMIT: usize = 2;

/// Oldest rows removed per statement when all history is over its bound.
const TRIM_BATCH: u64 = 1000;
/// Statements of [`TRIM_BATCH`] per pass; the rest waits for the next commit.
const TRIM_ROUNDS: usize = 16;

fn nine_tenths(n: u64) -> u64 {
    (n - n / 10).max(1)
}

/// What the recorder knows of how much history each device and all devices hold.
pub(super) struct Tallies {
    bounds: HistoryBounds,
    devices: HashMap<DeviceId, Usage>,
    /// All history; read once, on the first commit.
    total: Option<Usage>,
    /// Devices over a bound, trimmed [`TRIMS_PER_COMMIT`] at a time, first come first; each once.
    over: VecDeque<DeviceId>,
    queued: HashSet<DeviceId>,
    metrics: Arc<Metrics>,
}

impl Tallies {
    pub fn new(bounds: HistoryBounds, metrics: Arc<Metrics>) -> Self {
        Tallies { bounds, devices: HashMap::new(), total: None, over: VecDeque::new(), queued: HashSet::new(), metrics }
    }

    /// After a commit that added `added` to the devices' history: counts it and trims what is over
    /// a bound. Store errors are logged; the counts are read again later.
    pub async fn committed(&mut self, store: &Store, added: HashMap<DeviceId, Usage>) {
        if added.is_empty() && self.over.is_empty() {
            return;
        }
        let sum = added.values().fold(Usage::default(), |mut a, u| {
            a.add(*u);
            a
        });
        match &mut self.total {
            Some(total) => total.add(sum),
            None => match store.history_total().await {
                Ok(total) => self.total = Some(total),
                Err(e) => tracing::warn!(error = %e, "cannot read the size of history"),
            },
        }
        let b = self.bounds;
        // Devices seen for the first time: read together, and the store's counts already hold
        // this commit's rows.
        let unknown: Vec<DeviceId> = added.keys().filter(|d| !self.devices.contains_key(*d)).cloned().collect();
        let mut first = if unknown.is_empty() {
            HashMap::new()
        } else {
            match store.history_usage_of(&unknown).await {
                Ok(first) => first,
                Err(e) => {
                    tracing::warn!(error = %e, devices = unknown.len(), "cannot read the size of devices' history");
                    HashMap::new()
                }
            }
        };
        for (deviceid, u) in added {
            let usage = match self.devices.get_mut(&deviceid) {
                Some(t) => {
                    t.add(u);
                    *t
                }
                None => match first.remove(&deviceid) {
                    Some(t) => *self.devices.entry(deviceid.clone()).or_insert(t),
                    None => continue,
                },
            };
            if (usage.rows > b.rows_per_device || usage.bytes > b.bytes_per_device) && self.queued.insert(deviceid.clone()) {
                self.over.push_back(deviceid);
            }
        }
        self.trim_some(store).await;
        self.trim_total(store).await;
    }

    /// Whether devices over a bound wait to be trimmed.
    pub fn trims_pending(&self) -> bool {
        !self.over.is_empty()
    }

    /// Trims up to [`TRIMS_PER_COMMIT`] of the devices over a bound. Devices fed alike cross
    /// their bound together: trimming them all at once would hold up the commits (and the answers
    /// waiting for them) behind one long pause. The writer also calls this while idle, so a
    /// burst's devices are all trimmed without waiting for more traffic.
    pub async fn trim_some(&mut self, store: &Store) {
        let b = self.bounds;
        for _ in 0..TRIMS_PER_COMMIT {
            let Some(deviceid) = self.over.pop_front() else { break };
            self.queued.remove(&deviceid);
            let Some(usage) = self.devices.get(&deviceid).copied() else { continue };
            match store.trim_device_history(&deviceid, nine_tenths(b.rows_per_device), nine_tenths(b.bytes_per_device)).await {
                Ok(left) => {
                    let gone = usage.rows.saturating_sub(left.rows);
                    self.metrics.history_trimmed.fetch_add(gone, Ordering::Relaxed);
                    if let Some(total) = &mut self.total {
                        total.rows = total.rows.saturating_sub(gone);
                        total.bytes = total.bytes.saturating_sub(usage.bytes.saturating_sub(left.bytes));
                    }
                    self.devices.insert(deviceid, left);
                }
                Err(e) => tracing::warn!(error = %e, device = %deviceid, "trimming a device's history failed"),
            }
        }
    }

    /// Removes the oldest rows of all history while it is over its bound (a bounded number of
    /// statements per call). The devices' counts stay as they were, too high for the devices whose
    /// rows went; a count too high costs one trim that removes nothing and reads the true count.
    async fn trim_total(&mut self, store: &Store) {
        let Some(total) = &mut self.total else { return };
        if total.bytes <= self.bounds.bytes_total {
            return;
        }
        let target = nine_tenths(self.bounds.bytes_total);
        for _ in 0..TRIM_ROUNDS {
            if total.bytes <= target {
                break;
            }
            match store.trim_oldest_history(TRIM_BATCH).await {
                Ok(gone) if gone.rows > 0 => {
                    total.rows = total.rows.saturating_sub(gone.rows);
                    total.bytes = total.bytes.saturating_sub(gone.bytes);
                    self.metrics.history_trimmed.fetch_add(gone.rows, Ordering::Relaxed);
                }
                Ok(_) => {
                    *total = Usage::default();
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "trimming the oldest history failed");
                    break;
                }
            }
        }
    }

    /// Rows older than the retention went: forgets the devices' counts (read again when next
    /// recorded) and takes what went off the total.
    pub fn pruned(&mut self, gone: Usage) {
        self.devices.clear();
        if let Some(total) = &mut self.total {
            total.rows = total.rows.saturating_sub(gone.rows);
            total.bytes = total.bytes.saturating_sub(gone.bytes);
        }
    }
}
