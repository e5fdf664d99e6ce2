//! Commands for a device that is offline right now. An app's `update` with `"ttl": SECONDS` (or
//! the REST status change with `ttl`) for a device the router says is offline is kept here as the
//! device's desired state for that long, in the store (`offline_commands`), so it survives a
//! restart. [`Offline::queue`] checks the sender's right to command the device (owner, or sharee
//! within their permit, against the stored state) and merges by key: a later command's keys are
//! taken out of earlier ones, and an earlier one left without keys is gone. At most
//! `--offline-queue-per-device` commands wait per device.
//!
//! Delivery is the command service's (`command::run_deliveries`): after a successful register the
//! device session calls [`Offline::deliver`], which hands the device to that task without
//! waiting. This module keeps what delivery needs in memory — which
//! devices may have commands queued (so a register of a device with none costs no store query),
//! which device has a delivery running (one at a time per device; a register during it asks for
//! another pass), and which commands are out waiting for an ack (the expiry task leaves those
//! alone). [`Offline::expire`] is the task that drops expired commands, files them in history
//! (`"dropped":"expired"`) and tells their sender's session, if it is still connected here.
//!
//! A command's sender is named by this node's name (random per start) and its app session id,
//! so after a restart, or on another node, no session is mistaken for it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::audience::Audience;
use crate::clock::now_millis;
use crate::ids::{DeviceId, SessionId, UserKey};
use crate::permit;
use crate::protocol::Outbound;
use crate::recorder::Recorder;
use crate::router::Router;
use crate::store::{NewQueued, Queued, QueuedCommand, Store, StoreError};
use crate::sync::lock;

/// Expired commands the expiry task takes from the store at once.
const EXPIRY_BATCH: i64 = 256;
/// The expiry task looks at the store at least this often, and at most this often.
const EXPIRY_MAX_SLEEP: Duration = Duration::from_secs(60);
const EXPIRY_MIN_SLEEP: Duration = Duration::from_millis(250);

/// The offline queue's memory; its rows are in the store.
pub struct Offline {
    /// This node's name, random per start.
    node: String,
    /// Commands that may wait per device (`--offline-queue-per-device`).
    limit: usize,
    /// The longest `ttl` accepted (`--offline-ttl-max-secs`).
    max_ttl: Duration,
    devices: Mutex<Devices>,
    /// Queued commands delivered and waiting for the device's ack.
    out: Mutex<HashSet<i64>>,
    /// Wakes the expiry task when a command is queued (it may expire sooner than it thought).
    wake: Notify,
    /// Devices whose delivery should start, to the command service's delivery task (at most one
    /// entry per device: a device is sent only when it had no delivery running).
    deliveries: mpsc::UnboundedSender<DeviceId>,
}

/// The receiving end of [`Offline`]'s delivery requests, for
/// the command service's `run_deliveries` (this module sits below it and does not import it).
pub type DeliveryRequests = mpsc::UnboundedReceiver<DeviceId>;

#[derive(Default)]
struct Devices {
    /// Devices that may have commands queued, each with a count of the commands queued since the
    /// node started (a delivery that found nothing forgets the device only if that is unchanged).
    queued: HashMap<DeviceId, u64>,
    /// Devices with a delivery running; true when a register asked for another pass.
    delivering: HashMap<DeviceId, bool>,
}

/// A command to keep for an offline device.
pub struct Order<'a> {
    pub deviceid: &'a DeviceId,
    pub user: &'a UserKey,
    /// The app session that sent it; none for REST.
    pub session: Option<SessionId>,
    pub sequence: &'a RawValue,
    /// A JSON object (the caller checked).
    pub params: &'a RawValue,
    pub ttl: Duration,
}

/// A command kept: the device owner's apikey (for the answer) and its place in the queue.
#[derive(Debug)]
pub struct Kept {
    pub owner: UserKey,
    pub id: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Not the owner nor a sharee, or a sharee whose timers change the permit does not allow:
    /// the same refusal as a live command's.
    #[error("no permission for this device")]
    Denied,
    /// The device already has as many commands queued as it may.
    #[error("the device's queue of offline commands is full")]
    Full,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a `ttl` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("ttl must be a whole number of seconds from 0 to {max}")]
pub struct BadTtl {
    pub max: u64,
}

/// Removes a delivered command from [`Offline`]'s set of commands out when dropped.
pub struct Out<'a> {
    offline: &'a Offline,
    id: i64,
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        lock(&self.offline.out).remove(&self.id);
    }
}

impl Offline {
    pub fn new(limit: usize, max_ttl: Duration) -> (Self, DeliveryRequests) {
        let mut name = [0u8; 8];
        rand::rng().fill_bytes(&mut name);
        let (deliveries, requests) = mpsc::unbounded_channel();
        let offline = Offline {
            node: hex::encode(name),
            limit,
            max_ttl,
            devices: Mutex::default(),
            out: Mutex::default(),
            wake: Notify::new(),
            deliveries,
        };
        (offline, requests)
    }

    /// Learns which devices have commands queued (at start).
    pub async fn load(&self, store: &Store) -> Result<(), StoreError> {
        let ids = store.devices_with_queued_commands().await?;
        let mut devices = lock(&self.devices);
        for id in ids {
            devices.queued.entry(id).or_insert(0);
        }
        Ok(())
    }

    /// This node's name, as queued commands record their sender's node.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Reads a `ttl` in seconds: 0 asks for nothing (`None`), 1 to the maximum is kept that long.
    pub fn ttl(&self, secs: i64) -> Result<Option<Duration>, BadTtl> {
        let max = self.max_ttl.as_secs();
        match u64::try_from(secs) {
            Ok(0) => Ok(None),
            Ok(s) if s <= max => Ok(Some(Duration::from_secs(s))),
            _ => Err(BadTtl { max }),
        }
    }

    /// The same for the raw `ttl` of a frame: a JSON integer.
    pub fn ttl_raw(&self, raw: &RawValue) -> Result<Option<Duration>, BadTtl> {
        match serde_json::from_str::<i64>(raw.get()) {
            Ok(secs) => self.ttl(secs),
            Err(_) => Err(BadTtl { max: self.max_ttl.as_secs() }),
        }
    }

    /// Keeps `order` for its device, which the router found offline. The sender must be the
    /// device's owner or a sharee whose permit covers the change (judged against the stored
    /// state); the command is judged again when it is delivered.
    pub async fn queue(&self, store: &Store, order: Order<'_>) -> Result<Kept, QueueError> {
        let (device, audience) = store.device_with_audience(order.deviceid.as_str()).await?.ok_or(QueueError::Denied)?;
        let audience = audience.ok_or(QueueError::Denied)?;
        if !audience.contains(order.user)
            || (&audience.owner != order.user && !sharee_may(&audience, order.user, &device.params, order.params))
        {
            return Err(QueueError::Denied);
        }
        let now = now_millis();
        let cmd = NewQueued {
            deviceid: order.deviceid,
            user: order.user,
            origin_node: &self.node,
            origin_session: order.session.map(|s| s.get() as i64),
            sequence: order.sequence.get(),
            params: order.params,
            queued_at: now,
            expires_at: now.saturating_add(order.ttl.as_millis() as i64),
        };
        let id = match store.queue_command(&cmd, self.limit).await? {
            Queued::Added { id, replaced } => {
                if replaced > 0 {
                    tracing::debug!(device = %order.deviceid, replaced, "queued command replaced earlier ones");
                }
                id
            }
            Queued::Full => return Err(QueueError::Full),
        };
        *lock(&self.devices).queued.entry(order.deviceid.clone()).or_insert(0) += 1;
        self.wake.notify_one();
        Ok(Kept { owner: audience.owner.clone(), id })
    }

    /// A device registered (or got a command queued while it came online): starts delivering
    /// its queued commands, or asks the delivery already running for another pass. Does nothing
    /// for a device with nothing queued; never waits.
    pub fn deliver(&self, deviceid: &DeviceId) {
        let mut devices = lock(&self.devices);
        if let Some(again) = devices.delivering.get_mut(deviceid) {
            *again = true;
            return;
        }
        if !devices.queued.contains_key(deviceid) {
            return;
        }
        devices.delivering.insert(deviceid.clone(), false);
        if self.deliveries.send(deviceid.clone()).is_err() {
            // The delivery task is gone: the node is shutting down.
            devices.delivering.remove(deviceid);
        }
    }

    /// How many commands were queued for the device since the start; `None` when it has none.
    pub fn queued_count(&self, deviceid: &DeviceId) -> Option<u64> {
        lock(&self.devices).queued.get(deviceid).copied()
    }

    /// A delivery found nothing left: forget the device unless a command was queued since
    /// `count` was read.
    pub fn drained(&self, deviceid: &DeviceId, count: u64) {
        let mut devices = lock(&self.devices);
        if devices.queued.get(deviceid) == Some(&count) {
            devices.queued.remove(deviceid);
        }
    }

    /// A delivery pass ended: true when it must run again (a register came meanwhile), else the
    /// delivery is over.
    pub fn pass_done(&self, deviceid: &DeviceId) -> bool {
        let mut devices = lock(&self.devices);
        match devices.delivering.get_mut(deviceid) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                devices.delivering.remove(deviceid);
                false
            }
        }
    }

    /// Marks a command as delivered and waiting for its ack until the guard is dropped; the
    /// expiry task leaves it alone meanwhile.
    pub fn out(&self, id: i64) -> Out<'_> {
        lock(&self.out).insert(id);
        Out { offline: self, id }
    }

    /// The app session that sent `cmd`, when it was one of this node's.
    pub fn sender_session(&self, cmd: &QueuedCommand) -> Option<SessionId> {
        let session = cmd.origin_session.filter(|_| cmd.origin_node == self.node)?;
        Some(SessionId::from_stored(session as u64))
    }

    /// Tells the session that sent `cmd` how it ended, in the form of a command's answer, if
    /// that session is still connected here.
    pub fn tell_sender(&self, router: &dyn Router, cmd: &QueuedCommand, owner: &UserKey, answer: Answer<'_>) -> bool {
        let Some(session) = self.sender_session(cmd) else { return false };
        let Ok(sequence) = RawValue::from_string(cmd.sequence.clone()) else { return false };
        let frame = Outbound {
            error: Some(answer.error),
            reason: answer.reason,
            deviceid: Some(cmd.deviceid.as_str()),
            apikey: Some(owner.as_str()),
            sequence: Some(&sequence),
            params: answer.params,
            ..Default::default()
        }
        .to_text();
        router.tell_session(&cmd.user, session, frame.into())
    }

    /// Drops expired commands until `shutdown`: each is removed, filed in history and told to
    /// its sender's session. Wakes at the next expiry (at least every minute, at most every
    /// quarter second) or when a command is queued.
    pub async fn expire(self: Arc<Self>, store: Store, router: Arc<dyn Router>, recorder: Recorder, shutdown: CancellationToken) {
        loop {
            let next = match self.expire_now(&store, router.as_ref(), &recorder).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "dropping expired offline commands failed");
                    Some(now_millis() + 5_000)
                }
            };
            let now = now_millis();
            let wait = next.map_or(EXPIRY_MAX_SLEEP, |at| Duration::from_millis(at.saturating_sub(now).max(0) as u64));
            let wait = wait.clamp(EXPIRY_MIN_SLEEP, EXPIRY_MAX_SLEEP);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One round of [`Offline::expire`]; returns when the next command expires.
    async fn expire_now(&self, store: &Store, router: &dyn Router, recorder: &Recorder) -> Result<Option<i64>, StoreError> {
        let now = now_millis();
        let expired = store.expired_commands(now, EXPIRY_BATCH).await?;
        let full = expired.len() as i64 == EXPIRY_BATCH;
        let mut audiences: HashMap<DeviceId, Option<Arc<Audience>>> = HashMap::new();
        for cmd in expired {
            // Delivered before it expired and waiting for the ack: the delivery decides.
            if lock(&self.out).contains(&cmd.id) {
                continue;
            }
            if !store.remove_queued(cmd.id).await? {
                continue;
            }
            let audience = match audiences.get(&cmd.deviceid) {
                Some(a) => a.clone(),
                None => {
                    let a = store.audience(&cmd.deviceid).await?.map(Arc::new);
                    audiences.insert(cmd.deviceid.clone(), a.clone());
                    a
                }
            };
            tracing::info!(device = %cmd.deviceid, sequence = %cmd.sequence, "queued command expired");
            self.dropped(router, recorder, &cmd, audience.as_ref(), Dropped::Expired);
        }
        if full {
            return Ok(Some(now));
        }
        store.next_queued_expiry().await
    }

    /// Files a command dropped undelivered and tells its sender.
    pub fn dropped(&self, router: &dyn Router, recorder: &Recorder, cmd: &QueuedCommand, audience: Option<&Arc<Audience>>, why: Dropped) {
        let Ok(params) = RawValue::from_string(cmd.params.clone()) else { return };
        let Some(audience) = audience else { return };
        recorder.command_dropped(&cmd.deviceid, audience, &cmd.user, &params, why.as_str());
        self.tell_sender(router, cmd, &audience.owner, why.answer());
    }
}

/// Why a queued command was dropped before the device acked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Its `ttl` passed while the device was offline (or before it acked a delivery that failed).
    Expired,
    /// At delivery its sender was no longer allowed to send it.
    Denied,
}

impl Dropped {
    /// As history's `request` names it (`"dropped":…`).
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::Expired => "expired",
            Dropped::Denied => "denied",
        }
    }

    /// What the sender's session hears.
    pub fn answer(self) -> Answer<'static> {
        match self {
            Dropped::Expired => Answer { error: 504, reason: Some("queued command expired before the device took it"), params: None },
            Dropped::Denied => Answer { error: 406, reason: Some("no permission for this device"), params: None },
        }
    }
}

/// How a queued command ended, as its sender hears it.
pub struct Answer<'a> {
    pub error: i64,
    pub reason: Option<&'a str>,
    pub params: Option<&'a RawValue>,
}

/// Whether a sharee's change is within their permit, judged against the device's stored params
/// (the router judges the live ones when the command is delivered).
fn sharee_may(audience: &Audience, user: &UserKey, stored: &str, params: &RawValue) -> bool {
    let permit = audience.permit_of(user).unwrap_or(0);
    if permit & permit::ALL_TIMERS == permit::ALL_TIMERS || !params.get().contains("\"timers\"") {
        return true;
    }
    let Ok(requested) = serde_json::from_str::<Value>(params.get()) else { return false };
    let current = serde_json::from_str::<Value>(stored).unwrap_or(Value::Null);
    permit::allowed(permit, &current, &requested)
}

#[cfg(test)]
mod tests;
