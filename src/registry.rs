//! The live sessions of this node: which socket holds each device, which sockets belong to each
//! user. Both maps are sharded by key hash behind short, never-awaited mutexes, so no global lock
//! sits on the hot path. A [`SessionHandle`] is how anyone but the owning task reaches a socket:
//! a bounded outbox (queued without waiting, never awaited) and a close request.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::value::RawValue;
use tokio::sync::{Notify, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::ids::{DeviceId, SessionId, UserKey};
use crate::metrics::Metrics;
use crate::audience::Audience;

/// Why the hub asked a session to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// Its outbound queue was full: it is not reading fast enough.
    SlowConsumer = 1,
    /// Another connection registered the same device.
    Replaced = 2,
    /// The access token the session logged in with was revoked (logout).
    LoggedOut = 3,
}

/// Shared between a session task and every handle to it: the close request and the outbound
/// queue. The queue is a plain deque that allocates only when frames arrive (an idle session
/// holds no queue memory), bounded by `capacity`.
#[derive(Debug)]
pub struct Control {
    reason: AtomicU8,
    notify: Notify,
    queue: Mutex<Queue>,
    ready: Notify,
    capacity: usize,
    /// A tag of the credential an app session logged in with (0 for devices), so revoking it
    /// can close the sessions it opened.
    credential: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Utf8Bytes>,
    /// Set when the session's receiving end is gone: nothing more is accepted.
    closed: bool,
}

impl Control {
    fn new(capacity: usize) -> Self {
        Control {
            reason: AtomicU8::new(0),
            notify: Notify::new(),
            queue: Mutex::default(),
            ready: Notify::new(),
            capacity,
            credential: AtomicU64::new(0),
        }
    }

    /// Resolves once a close was requested; returns the first reason given.
    pub async fn closed(&self) -> CloseReason {
        loop {
            if let Some(r) = self.reason() {
                return r;
            }
            self.notify.notified().await;
        }
    }

    pub fn reason(&self) -> Option<CloseReason> {
        match self.reason.load(Ordering::Acquire) {
            1 => Some(CloseReason::SlowConsumer),
            2 => Some(CloseReason::Replaced),
            3 => Some(CloseReason::LoggedOut),
            _ => None,
        }
    }

    fn request(&self, reason: CloseReason) {
        if self.reason.compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            self.notify.notify_one();
        }
    }

    fn push(&self, frame: Utf8Bytes) -> Result<(), Refused> {
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.closed {
                return Err(Refused::Closed);
            }
            if q.frames.len() >= self.capacity {
                return Err(Refused::Full);
            }
            q.frames.push_back(frame);
        }
        self.ready.notify_one();
        Ok(())
    }

    fn pop(&self) -> Option<Utf8Bytes> {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        let frame = q.frames.pop_front();
        if q.frames.is_empty() && q.frames.capacity() > 16 {
            // Give back what a burst grew; an idle session keeps a small queue at most.
            q.frames = VecDeque::new();
        }
        frame
    }
}

/// The session task's end of its outbound queue. Dropping it closes the queue and frees what
/// is left in it.
#[derive(Debug)]
pub struct Outbox {
    control: Arc<Control>,
}

impl Outbox {
    /// The next queued frame, waiting for one. (`Option` for the `select!` pattern; never `None`.)
    pub async fn recv(&mut self) -> Option<Utf8Bytes> {
        loop {
            if let Some(f) = self.control.pop() {
                return Some(f);
            }
            // A push between the pop and this wait leaves a permit, so no wake-up is lost.
            self.control.ready.notified().await;
        }
    }

    pub fn try_recv(&mut self) -> Option<Utf8Bytes> {
        self.control.pop()
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut q = self.control.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.closed = true;
        q.frames = VecDeque::new();
    }
}

/// A handle to one live session. Cloning is cheap; the session task holds the receiving end.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub id: SessionId,
    control: Arc<Control>,
}

/// Why a frame could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    Closed,
}

impl SessionHandle {
    /// Queues a frame without waiting and without judging the peer: a full queue is the
    /// caller's to answer (a command for a busy device), not a reason to close the session.
    pub fn offer(&self, frame: Utf8Bytes) -> Result<(), Refused> {
        self.control.push(frame)
    }

    /// A handle and the two ends its session task keeps.
    pub fn new(capacity: usize) -> (SessionHandle, Outbox, Arc<Control>) {
        let control = Arc::new(Control::new(capacity));
        (SessionHandle { id: SessionId::next(), control: control.clone() }, Outbox { control: control.clone() }, control)
    }

    /// Queues a frame without waiting. A full queue closes the session as a slow consumer: the
    /// router never waits for a peer.
    pub fn deliver(&self, frame: Utf8Bytes, metrics: &Metrics) -> bool {
        match self.control.push(frame) {
            Ok(()) => true,
            Err(Refused::Full) => {
                if self.control.reason().is_none() {
                    metrics.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(session = %self.id, "outbound queue full, closing slow consumer");
                }
                self.close(CloseReason::SlowConsumer);
                false
            }
            Err(Refused::Closed) => false,
        }
    }

    pub fn close(&self, reason: CloseReason) {
        self.control.request(reason);
    }

    /// Records the credential tag this session logged in with.
    pub fn set_credential(&self, tag: u64) {
        self.control.credential.store(tag, Ordering::Relaxed);
    }

    pub fn credential(&self) -> u64 {
        self.control.credential.load(Ordering::Relaxed)
    }
}

/// The answer a device gave to a routed command.
#[derive(Debug)]
pub struct Ack {
    pub error: i64,
    pub params: Option<Box<RawValue>>,
}

struct Waiter {
    token: u64,
    tx: oneshot::Sender<Ack>,
    /// An `update`'s params, merged into the device's state when it acks with error 0.
    merge: Option<Box<RawValue>>,
}

/// A device connected to this node, as the router sees it.
pub struct DeviceLink {
    pub deviceid: DeviceId,
    pub session: SessionHandle,
    /// Owner and sharees; `None` while the device is not bound to anyone. Replaced wholesale when
    /// sharing changes.
    audience: RwLock<Option<Arc<Audience>>>,
    /// Commands waiting for this device's ack, by sequence text. Several apps may use the same
    /// sequence at once: each key holds its waiters in arrival order.
    pending: Mutex<HashMap<Arc<str>, Vec<Waiter>>>,
    next_token: AtomicU64,
    /// The device's latest reported params.
    pub state: Mutex<DeviceState>,
    /// Set when `state` changed since the state writer last saved it.
    pub dirty: AtomicBool,
}

impl DeviceLink {
    pub fn new(deviceid: DeviceId, session: SessionHandle, audience: Option<Audience>, state: DeviceState) -> Self {
        DeviceLink {
            deviceid,
            session,
            audience: RwLock::new(audience.map(Arc::new)),
            pending: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(0),
            state: Mutex::new(state),
            dirty: AtomicBool::new(false),
        }
    }

    pub fn audience(&self) -> Option<Arc<Audience>> {
        self.audience.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_audience(&self, audience: Option<Audience>) {
        *self.audience.write().unwrap_or_else(|p| p.into_inner()) = audience.map(Arc::new);
    }

    /// Registers a waiter for `key`; the returned token removes exactly this waiter later.
    /// `None` when `limit` sequences are already waiting on this device.
    /// `merge` is what the device's state becomes (merged) once it acks with error 0.
    pub fn add_waiter(&self, key: Arc<str>, tx: oneshot::Sender<Ack>, merge: Option<Box<RawValue>>, limit: usize) -> Option<u64> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= limit && !pending.contains_key(&key) {
            return None;
        }
        pending.entry(key).or_default().push(Waiter { token, tx, merge });
        Some(token)
    }

    pub fn remove_waiter(&self, key: &str, token: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = pending.get_mut(key) {
            list.retain(|w| w.token != token);
            if list.is_empty() {
                pending.remove(key);
            }
        }
    }

    /// Hands the device's ack to the oldest waiter for `key`. A successful `update`'s params go to
    /// `on_success` first, so whoever hears the ack already finds them in the state. False when
    /// nobody waits (a late or unsolicited ack), which the caller drops.
    pub fn complete(&self, key: &str, ack: Ack, on_success: impl FnOnce(&RawValue)) -> bool {
        let waiter = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let Some(list) = pending.get_mut(key) else { return false };
            let w = list.remove(0);
            if list.is_empty() {
                pending.remove(key);
            }
            w
        };
        if let (0, Some(params)) = (ack.error, &waiter.merge) {
            on_success(params);
        }
        waiter.tx.send(ack).is_ok()
    }

    /// Drops every waiter: their apps answer 504 at once. Called when the device goes away.
    pub fn fail_pending(&self) {
        let drained = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        drop(drained);
    }

    pub fn pending_len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).values().map(Vec::len).sum()
    }
}

/// A device's reported params: each key's latest value kept as raw JSON, so reports are merged
/// and answered without re-encoding values, with their total size tracked for the cap.
#[derive(Debug, Default, Clone)]
pub struct DeviceState {
    values: BTreeMap<Box<str>, Box<RawValue>>,
    bytes: usize,
}

/// A report that would make the stored state larger than allowed.
#[derive(Debug, PartialEq, Eq)]
pub struct StateTooLarge {
    pub limit: usize,
}

fn entry_bytes(key: &str, value: &RawValue) -> usize {
    key.len() + value.get().len() + 4
}

impl DeviceState {
    /// Reads a stored JSON object; anything else is an empty state.
    pub fn from_json(text: &str) -> Self {
        let values: BTreeMap<Box<str>, Box<RawValue>> = serde_json::from_str(text).unwrap_or_default();
        let bytes = values.iter().map(|(k, v)| entry_bytes(k, v)).sum();
        DeviceState { values, bytes }
    }

    /// Merges a report's keys; refused whole when the result would exceed `limit` bytes.
    pub fn merge(&mut self, delta: BTreeMap<String, &RawValue>, limit: usize) -> Result<(), StateTooLarge> {
        let mut bytes = self.bytes;
        for (k, v) in &delta {
            bytes -= self.values.get(k.as_str()).map_or(0, |old| entry_bytes(k, old));
            bytes += entry_bytes(k, v);
        }
        if bytes > limit {
            return Err(StateTooLarge { limit });
        }
        for (k, v) in delta {
            self.values.insert(k.into(), v.to_owned());
        }
        self.bytes = bytes;
        Ok(())
    }

    /// The JSON object of the named keys (all when `keys` is empty); `None` when it would be empty.
    pub fn pick(&self, keys: &[String]) -> Option<String> {
        let picked: BTreeMap<&str, &RawValue> = if keys.is_empty() {
            self.values.iter().map(|(k, v)| (&**k, &**v)).collect()
        } else {
            keys.iter().filter_map(|k| self.values.get_key_value(k.as_str())).map(|(k, v)| (&**k, &**v)).collect()
        };
        (!picked.is_empty()).then(|| serde_json::to_string(&picked).expect("raw values serialize"))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.values).expect("raw values serialize")
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A fixed array of mutex-guarded maps, picked by key hash.
struct Sharded<K, V> {
    shards: Box<[Mutex<HashMap<K, V>>]>,
    hasher: RandomState,
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    fn new(count: usize) -> Self {
        Sharded { shards: (0..count).map(|_| Mutex::new(HashMap::new())).collect(), hasher: RandomState::new() }
    }

    fn shard(&self, key: &K) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
        let i = self.hasher.hash_one(key) as usize % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

const SHARDS: usize = 64;

/// Device → link and user → sessions, for this node only.
pub struct Registry {
    devices: Sharded<DeviceId, Arc<DeviceLink>>,
    users: Sharded<UserKey, Vec<SessionHandle>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry { devices: Sharded::new(SHARDS), users: Sharded::new(SHARDS) }
    }
}

impl Registry {
    pub fn device(&self, id: &DeviceId) -> Option<Arc<DeviceLink>> {
        self.devices.shard(id).get(id).cloned()
    }

    /// Makes `link` the device's current connection; returns the one it replaced.
    pub fn insert_device(&self, link: Arc<DeviceLink>) -> Option<Arc<DeviceLink>> {
        self.devices.shard(&link.deviceid).insert(link.deviceid.clone(), link)
    }

    /// Removes the device's entry only if `session` still holds it.
    pub fn remove_device(&self, id: &DeviceId, session: SessionId) -> bool {
        let mut shard = self.devices.shard(id);
        if shard.get(id).is_some_and(|l| l.session.id == session) {
            shard.remove(id);
            true
        } else {
            false
        }
    }

    pub fn devices(&self) -> Vec<Arc<DeviceLink>> {
        self.devices.shards.iter().flat_map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect::<Vec<_>>()).collect()
    }

    pub fn insert_user(&self, user: &UserKey, session: SessionHandle) {
        self.users.shard(user).entry(user.clone()).or_default().push(session);
    }

    pub fn remove_user(&self, user: &UserKey, session: SessionId) {
        let mut shard = self.users.shard(user);
        if let Some(list) = shard.get_mut(user) {
            list.retain(|s| s.id != session);
            if list.is_empty() {
                shard.remove(user);
            }
        }
    }

    /// Calls `f` for each session of `user` while its shard is locked; `f` must not block.
    pub fn for_each_session(&self, user: &UserKey, mut f: impl FnMut(&SessionHandle)) {
        if let Some(list) = self.users.shard(user).get(user) {
            list.iter().for_each(&mut f);
        }
    }

    pub fn user_sessions(&self, user: &UserKey) -> usize {
        self.users.shard(user).get(user).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests;
