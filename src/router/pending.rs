//! Commands waiting for their device's ack, and what a departed device left behind.
//!
//! [`PendingTable`] is one device's waiters, by sequence text, bounded by
//! [`MAX_PENDING_PER_DEVICE`]. Each routed command holds a [`PendingAck`]: its waiter is removed
//! by a guard on ack (the device side takes it), on timeout, or when whoever waits drops the
//! future, whichever comes first, so nothing can leak past the ack deadline. [`RecentStates`]
//! keeps a departed device's state for a few seconds, for a reconnect that read the store before
//! the old session's final save landed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::audience::Audience;
use crate::device_state::DeviceState;
use crate::ids::{DeviceId, UserKey};
use crate::sync::lock;

/// Distinct sequences that may wait for one device's acks at once.
pub const MAX_PENDING_PER_DEVICE: usize = 1024;

/// How one device's capacity is shared between the users who may command it: each user may have
/// `per_user` commands waiting (across all their sessions), and all sharees together twice that,
/// so the owner's commands wait behind a bounded number of others whatever sharees do.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub per_user: usize,
}

impl Quota {
    pub fn sharees(self) -> usize {
        self.per_user.saturating_mul(2)
    }
}

/// The answer a device gave to a routed command.
#[derive(Debug)]
pub struct Ack {
    pub error: i64,
    pub params: Option<Box<RawValue>>,
}

/// How a wait ended.
#[derive(Debug)]
pub enum Outcome {
    Acked(Ack),
    /// No ack before the deadline.
    TimedOut,
    /// The device went away (disconnected or replaced) before acking.
    Gone,
}

struct Waiter {
    token: u64,
    tx: oneshot::Sender<Ack>,
    /// Whose command it is, and whether that is the device's owner (for the quotas).
    user: UserKey,
    owner: bool,
    /// An `update`'s params, merged into the device's state when it acks with error 0.
    merge: Option<Box<RawValue>>,
}

/// One device's commands waiting for acks. Several apps may use the same sequence at once: each
/// key holds its waiters in arrival order.
#[derive(Default)]
pub struct PendingTable {
    waiters: Mutex<Waiters>,
    next_token: AtomicU64,
}

#[derive(Default)]
struct Waiters {
    by_sequence: HashMap<Arc<str>, Vec<Waiter>>,
    /// Waiting commands per user, and of all sharees together.
    per_user: HashMap<UserKey, usize>,
    sharees: usize,
}

impl Waiters {
    fn forget(&mut self, w: &Waiter) {
        if let Some(n) = self.per_user.get_mut(&w.user) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&w.user);
            }
        }
        if !w.owner {
            self.sharees -= 1;
        }
    }
}

/// Who is asking, for the quotas of [`PendingTable::add`].
pub struct Asker<'a> {
    pub user: &'a UserKey,
    pub owner: bool,
}

impl PendingTable {
    /// Registers a waiter for `key`; the returned token removes exactly this waiter later. `merge`
    /// is what the device's state takes on when it acks with error 0. `None` when `limit`
    /// sequences are already waiting, or when the asker is over their [`Quota`].
    pub fn add(
        &self,
        key: Arc<str>,
        tx: oneshot::Sender<Ack>,
        merge: Option<Box<RawValue>>,
        asker: Asker<'_>,
        quota: Quota,
        limit: usize,
    ) -> Option<u64> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut waiters = lock(&self.waiters);
        if waiters.by_sequence.len() >= limit && !waiters.by_sequence.contains_key(&key) {
            return None;
        }
        if waiters.per_user.get(asker.user).copied().unwrap_or(0) >= quota.per_user || (!asker.owner && waiters.sharees >= quota.sharees())
        {
            return None;
        }
        *waiters.per_user.entry(asker.user.clone()).or_default() += 1;
        if !asker.owner {
            waiters.sharees += 1;
        }
        let w = Waiter { token, tx, user: asker.user.clone(), owner: asker.owner, merge };
        waiters.by_sequence.entry(key).or_default().push(w);
        Some(token)
    }

    pub fn remove(&self, key: &str, token: u64) {
        let mut waiters = lock(&self.waiters);
        let Some(list) = waiters.by_sequence.get_mut(key) else { return };
        let Some(at) = list.iter().position(|w| w.token == token) else { return };
        let w = list.remove(at);
        if list.is_empty() {
            waiters.by_sequence.remove(key);
        }
        waiters.forget(&w);
    }

    /// Hands the device's ack to the oldest waiter for `key`. A successful `update`'s params go to
    /// `on_success` first, so whoever hears the ack already finds them in the state. False when
    /// nobody waits (a late or unsolicited ack).
    pub fn complete(&self, key: &str, ack: Ack, on_success: impl FnOnce(&RawValue)) -> bool {
        let waiter = {
            let mut waiters = lock(&self.waiters);
            let Some(list) = waiters.by_sequence.get_mut(key) else { return false };
            let w = list.remove(0);
            if list.is_empty() {
                waiters.by_sequence.remove(key);
            }
            waiters.forget(&w);
            w
        };
        if let (0, Some(params)) = (ack.error, &waiter.merge) {
            on_success(params);
        }
        waiter.tx.send(ack).is_ok()
    }

    /// Drops every waiter: whoever waits answers 504 at once. Called when the device goes away.
    pub fn fail_all(&self) {
        let drained = std::mem::take(&mut *lock(&self.waiters));
        drop(drained);
    }

    pub fn len(&self) -> usize {
        lock(&self.waiters).by_sequence.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.waiters).by_sequence.is_empty()
    }
}

/// A routed command waiting for its ack.
pub struct PendingAck {
    rx: oneshot::Receiver<Ack>,
    guard: Guard,
    /// The device owner's apikey, which the reply to the app carries.
    pub owner: UserKey,
    /// The device's audience (with its settings) as the command was routed.
    pub audience: Arc<Audience>,
}

/// What removes the waiter: an entry of a local pending table, or of another node's table (the
/// cluster's call entry, whose drop tells nobody: the holder drops its waiter at the deadline).
enum Guard {
    Local(#[allow(dead_code)] WaiterGuard),
    Remote(#[allow(dead_code)] Box<dyn Send + Sync>),
}

struct WaiterGuard {
    table: Arc<PendingTable>,
    key: Arc<str>,
    token: u64,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.table.remove(&self.key, self.token);
    }
}

impl PendingAck {
    pub(super) fn new(rx: oneshot::Receiver<Ack>, table: Arc<PendingTable>, key: Arc<str>, token: u64, audience: Arc<Audience>) -> Self {
        PendingAck { rx, guard: Guard::Local(WaiterGuard { table, key, token }), owner: audience.owner.clone(), audience }
    }

    /// A command another node routed: `rx` gets the ack that node relays; dropping `guard`
    /// forgets the call.
    pub fn remote(rx: oneshot::Receiver<Ack>, guard: Box<dyn Send + Sync>, audience: Arc<Audience>) -> Self {
        PendingAck { rx, guard: Guard::Remote(guard), owner: audience.owner.clone(), audience }
    }

    /// Whether another node holds the device (and commits what its ack changed before relaying it).
    pub fn is_remote(&self) -> bool {
        matches!(self.guard, Guard::Remote(_))
    }

    /// Waits until `deadline` for the ack. The waiter entry is gone when this returns or is dropped.
    pub async fn wait(self, deadline: Instant) -> Outcome {
        let PendingAck { rx, guard, .. } = self;
        let outcome = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(ack)) => Outcome::Acked(ack),
            Ok(Err(_)) => Outcome::Gone,
            Err(_) => Outcome::TimedOut,
        };
        drop(guard);
        outcome
    }
}

/// How long a departed device's state is kept for a reconnect; its save lands well within this.
pub const RECENT_STATE_TTL: Duration = Duration::from_secs(5);

/// States of devices that went away in the last [`RECENT_STATE_TTL`].
#[derive(Default)]
pub struct RecentStates {
    inner: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    by_device: HashMap<DeviceId, (Instant, DeviceState)>,
    order: VecDeque<(Instant, DeviceId)>,
}

impl Recent {
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < RECENT_STATE_TTL {
                break;
            }
            let Some((at, id)) = self.order.pop_front() else { break };
            if self.by_device.get(&id).is_some_and(|(t, _)| *t == at) {
                self.by_device.remove(&id);
            }
        }
    }
}

impl RecentStates {
    pub fn keep(&self, deviceid: &DeviceId, state: DeviceState) {
        let now = Instant::now();
        let mut recent = lock(&self.inner);
        recent.expire(now);
        recent.by_device.insert(deviceid.clone(), (now, state));
        recent.order.push_back((now, deviceid.clone()));
    }

    pub fn take(&self, deviceid: &DeviceId) -> Option<DeviceState> {
        let mut recent = lock(&self.inner);
        recent.expire(Instant::now());
        recent.by_device.remove(deviceid).map(|(_, state)| state)
    }
}

#[cfg(test)]
mod tests;
