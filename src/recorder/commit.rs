//! The recorder's writer: one thread of its own that gathers entries and changed states into
//! groups and commits each group in one transaction (the states, the history rows, the notices),
//! then tells whoever waits for that commit. After a commit it trims history that is over a bound
//! ([`super::bounds`]) and, hourly, removes history past its retention.
//!
//! Sessions hand entries over through a [`Queue`] (a locked vector): an entry nobody waits for
//! (a command's history row, a notice) is only pushed, without waking the writer; it rides with
//! the next commit someone waits for, or goes [`LAZY`] later. An entry that waits for its commit
//! (a report, an acked update) wakes the writer, which commits at once (after the commit window,
//! when one is set) whatever is queued by then. Whatever queues while a transaction is under way
//! joins the next one. The transaction runs on the writer's own connection ([`Committer`]): on the
//! embedded store without leaving the thread, on PostgreSQL as one statement. Groups that file
//! notices go through the store's pool on the runtime.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use super::bounds::Tallies;
use super::{Entry, HISTORY_QUEUE, Options, compose};
use crate::clock::now_millis;
use crate::device_state::{DirtyQueue, LiveState};
use crate::ids::DeviceId;
use crate::metrics::Metrics;
use crate::store::{Committer, Operation, Store};
use crate::sync::lock;

/// Most entries one transaction takes; the rest wait for the next.
const GROUP_ENTRIES: usize = 2048;

/// How long entries nobody waits for (history rows of commands, notices, states saved without a
/// report) may gather before their transaction, when no commit is asked for meanwhile.
const LAZY: Duration = Duration::from_millis(100);

/// How often history past its retention is removed.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Where sessions queue entries for the writer; at most [`HISTORY_QUEUE`] wait.
#[derive(Default)]
pub(super) struct Queue {
    inner: Mutex<Queued>,
    ready: Condvar,
}

#[derive(Default)]
struct Queued {
    entries: Vec<Entry>,
    /// Whether a queued entry waits for its commit.
    waited: bool,
    stop: bool,
    /// The writer is waiting on `ready`.
    parked: bool,
}

impl Queue {
    /// Queues an entry; wakes the writer when the entry waits for its commit or a group's worth
    /// is queued. Gives the entry back when the queue is full or the writer stopped.
    pub fn push(&self, entry: Entry) -> Result<(), Entry> {
        let mut q = lock(&self.inner);
        if q.stop || q.entries.len() >= HISTORY_QUEUE {
            return Err(entry);
        }
        q.waited |= entry.done.is_some();
        q.entries.push(entry);
        if q.parked && (q.waited || q.entries.len() >= GROUP_ENTRIES) {
            q.parked = false;
            drop(q);
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Tells the writer to commit what is queued and end; later entries are refused.
    pub fn stop(&self) {
        lock(&self.inner).stop = true;
        self.ready.notify_one();
    }
}

/// One group: what its transaction writes and who waits for it.
#[derive(Default)]
struct Group {
    entries: Vec<Entry>,
    states: Vec<Arc<LiveState>>,
}

pub(super) struct Writer {
    store: Store,
    /// The recorder's own connection to the store, for groups without notices (`None` when it
    /// failed to open: everything then goes through the pool).
    committer: Option<Committer>,
    metrics: Arc<Metrics>,
    options: Options,
    tallies: Tallies,
    /// Marks states again whose save failed, so a later group retries them.
    dirty: DirtyQueue,
    queue: Arc<Queue>,
    /// The runtime, for the store's async calls.
    runtime: Handle,
    slow: SlowCommits,
}

/// A commit (with the history bookkeeping after it) longer than this is logged: every answer
/// queued behind it waited that long.
const SLOW_COMMIT: Duration = Duration::from_millis(50);

/// Logs slow commits, at most one line per [`SLOW_LOG_EVERY`] with a count of the others.
#[derive(Default)]
struct SlowCommits {
    last_log: Option<Instant>,
    unlogged: u64,
}

/// At most one slow-commit line this often.
const SLOW_LOG_EVERY: Duration = Duration::from_secs(10);

impl SlowCommits {
    fn check(&mut self, statement: Duration, bookkeeping: Duration, devices: usize, operations: usize) {
        if statement + bookkeeping < SLOW_COMMIT {
            return;
        }
        if self.last_log.is_some_and(|t| t.elapsed() < SLOW_LOG_EVERY) {
            self.unlogged += 1;
            return;
        }
        self.last_log = Some(Instant::now());
        let others = std::mem::take(&mut self.unlogged);
        tracing::warn!(
            statement_ms = statement.as_millis() as u64,
            history_bounds_ms = bookkeeping.as_millis() as u64,
            devices,
            operations,
            slow_since_last_line = others,
            "a slow commit delayed the answers waiting for it and those queued behind it"
        );
    }
}

impl Writer {
    pub fn new(store: Store, metrics: Arc<Metrics>, options: Options, dirty: DirtyQueue, queue: Arc<Queue>, runtime: Handle) -> Writer {
        let tallies = Tallies::new(options.bounds, metrics.clone());
        let committer = store
            .committer()
            .inspect_err(|e| tracing::warn!(error = %e, "the recorder's own store connection failed to open; committing through the pool"))
            .ok();
        Writer { store, committer, metrics, options, tallies, dirty, queue, runtime, slow: SlowCommits::default() }
    }

    /// Commits groups until [`Queue::stop`], then everything still queued. Blocks: run it on a
    /// thread of its own.
    pub fn run(mut self, mut states: mpsc::UnboundedReceiver<Arc<LiveState>>) {
        if let Some(committer) = &mut self.committer {
            committer.warm_up(&self.runtime);
        }
        let mut next_prune = Instant::now();
        loop {
            let (waited, stop) = self.wait();
            if waited && !stop && !self.options.commit_window.is_zero() {
                // Gather for a moment: one transaction for the reports of these milliseconds.
                std::thread::sleep(self.options.commit_window);
            }
            let group = self.gather(&mut states);
            let empty = group.entries.is_empty() && group.states.is_empty();
            if stop {
                if empty {
                    break;
                }
                tracing::info!(entries = group.entries.len(), devices = group.states.len(), "recording before exit");
            }
            if !empty {
                self.commit(group);
            } else if self.tallies.trims_pending() {
                // Devices left over a bound by the last commits: trimmed while nothing else waits.
                self.runtime.block_on(self.tallies.trim_some(&self.store));
            }
            if Instant::now() >= next_prune {
                next_prune = Instant::now() + PRUNE_EVERY;
                self.prune();
            }
        }
    }

    /// Waits until an entry waits for its commit, a group's worth is queued, `stop`, or [`LAZY`]
    /// passed without any of those. Returns (waited, stop).
    fn wait(&self) -> (bool, bool) {
        let mut q = lock(&self.queue.inner);
        while !(q.stop || q.waited || q.entries.len() >= GROUP_ENTRIES) {
            q.parked = true;
            let (guard, timeout) = self.queue.ready.wait_timeout(q, LAZY).unwrap_or_else(|p| p.into_inner());
            q = guard;
            q.parked = false;
            if timeout.timed_out() {
                break;
            }
        }
        (q.waited, q.stop)
    }

    /// Takes what is queued. Entries first, then states: a state was marked before the entry that
    /// waits for it was queued, so every state such an entry needs is taken too.
    fn gather(&self, states: &mut mpsc::UnboundedReceiver<Arc<LiveState>>) -> Group {
        let mut group = Group::default();
        {
            let mut q = lock(&self.queue.inner);
            if q.entries.len() <= GROUP_ENTRIES {
                group.entries = std::mem::take(&mut q.entries);
                q.waited = false;
            } else {
                let rest = q.entries.split_off(GROUP_ENTRIES);
                group.entries = std::mem::replace(&mut q.entries, rest);
                q.waited = q.entries.iter().any(|e| e.done.is_some());
            }
        }
        while let Ok(state) = states.try_recv() {
            group.states.push(state);
        }
        group
    }

    /// Writes one group in one transaction and tells its waiters; then trims history.
    fn commit(&mut self, group: Group) {
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
        let started = Instant::now();
        let result = match &mut self.committer {
            Some(committer) if ops.iter().all(|o| o.notices.is_empty()) => committer.commit_group(&saves, &ops, &self.runtime),
            _ => self.runtime.block_on(self.store.commit_group(&saves, &ops)),
        };
        match result {
            Ok(added) => {
                let took = started.elapsed();
                self.metrics.commit_seconds.observe(took);
                self.metrics.commit_groups.fetch_add(1, Ordering::Relaxed);
                self.metrics.history_recorded.fetch_add(added.values().map(|u| u.rows).sum(), Ordering::Relaxed);
                for w in waiters {
                    let _ = w.send(true);
                }
                let trimmed = Instant::now();
                self.runtime.block_on(self.tallies.committed(&self.store, added));
                self.slow.check(took, trimmed.elapsed(), saves.len(), ops.len());
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

    fn prune(&mut self) {
        let before = now_millis() - super::HISTORY_RETENTION.as_millis() as i64;
        match self.runtime.block_on(self.store.prune_history(before)) {
            Ok(gone) => self.tallies.pruned(gone),
            Err(e) => tracing::warn!(error = %e, "pruning old history failed"),
        }
    }
}
