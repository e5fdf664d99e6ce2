//! Where frames go. [`Router`] is the one seam between sessions and the rest of the cluster:
//! "which socket holds this device" and "which sessions belong to this user" are answered behind
//! it, so a broker-backed router can replace [`LocalRouter`] without session code knowing whether
//! a peer is local. The router never awaits a peer: it queues without waiting and returns.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::ids::{DeviceId, SessionId, UserKey};
use crate::metrics::Metrics;
use crate::permit;
use crate::protocol::{self, Outbound};
use crate::registry::{CloseReason, DeviceLink, DeviceState, Refused, Registry, SessionHandle};
use crate::audience::Audience;

pub mod pending;

pub use pending::PendingAck;

/// Distinct sequences that may wait for one device's acks at once.
pub const MAX_PENDING_PER_DEVICE: usize = 1024;

/// What an app asked a device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Update,
    Query,
    Upgrade,
}

impl CommandKind {
    pub fn action(self) -> &'static str {
        match self {
            CommandKind::Update => "update",
            CommandKind::Query => "query",
            CommandKind::Upgrade => "upgrade",
        }
    }
}

/// An app command, borrowed from the app's frame.
pub struct Command<'a> {
    pub kind: CommandKind,
    pub deviceid: &'a DeviceId,
    pub sequence: &'a RawValue,
    pub params: &'a RawValue,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    /// The device is not connected to the hub (the caller decides between 504 and a denial).
    #[error("device is offline")]
    Offline,
    /// The caller neither owns the device nor has it shared with them, or is a sharee whose
    /// update changes timers in a way their share's permit does not allow ([`crate::permit`]).
    #[error("no permission for this device")]
    Denied,
    /// The device has as many commands queued or waiting as it may; it stays connected.
    #[error("device is busy")]
    Busy,
}

/// The seam between sessions and delivery.
pub trait Router: Send + Sync + 'static {
    fn attach_app(&self, user: &UserKey, session: SessionHandle);
    fn detach_app(&self, user: &UserKey, session: SessionId);
    /// Forwards an app's command to the device; the returned waiter resolves with its ack.
    fn command(&self, caller: &UserKey, cmd: Command<'_>) -> Result<PendingAck, RouteError>;
    /// After a successful app `update`: tells the device's other listeners the new params.
    fn echo_command(&self, deviceid: &DeviceId, params: &RawValue, except: SessionId);
    /// Makes `link` the device's connection, closing one it replaces, and announces it online.
    fn attach_device(&self, link: Arc<DeviceLink>);
    /// Forgets `link` if it is still current, fails its waiters and announces it offline.
    fn detach_device(&self, link: &Arc<DeviceLink>);
    /// Fans a device's state report out to its owner's and sharees' sessions.
    fn report(&self, link: &DeviceLink, params: &RawValue);
    /// Online devices of this node (for access-control refreshes and admin views).
    fn devices(&self) -> Vec<Arc<DeviceLink>>;
    /// The online connection of one device (its live state, for the REST API).
    fn device(&self, deviceid: &DeviceId) -> Option<Arc<DeviceLink>>;
    /// Queues a frame the hub itself sends a device (e.g. `notify`/`deleteNotify`); false when
    /// the device is offline or its queue is full.
    fn notify_device(&self, deviceid: &DeviceId, frame: Utf8Bytes) -> bool;
    /// How many app sessions `user` has open.
    fn user_sessions(&self, user: &UserKey) -> usize;
    /// Closes `user`'s app sessions that logged in with the credential tagged `credential`.
    fn close_sessions(&self, user: &UserKey, credential: u64, reason: CloseReason) -> usize;
    /// Closes all of `user`'s app sessions except those that logged in with the credential
    /// tagged `keep` (0 keeps none).
    fn close_user_sessions(&self, user: &UserKey, keep: u64, reason: CloseReason) -> usize;
}

/// A router for a single node: everything is in this process's [`Registry`].
pub struct LocalRouter {
    registry: Registry,
    metrics: Arc<Metrics>,
    /// State of devices that went away in the last [`RECENT_STATE_TTL`]: a device that
    /// reconnects at once may have read the store before its old session's final save landed.
    recent: Mutex<RecentStates>,
}

/// How long a departed device's state is kept for a reconnect; its save lands well within this.
const RECENT_STATE_TTL: Duration = Duration::from_secs(5);

#[derive(Default)]
struct RecentStates {
    by_device: HashMap<DeviceId, (Instant, DeviceState)>,
    order: VecDeque<(Instant, DeviceId)>,
}

impl RecentStates {
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < RECENT_STATE_TTL {
                break;
            }
            let (at, id) = self.order.pop_front().expect("front exists");
            if self.by_device.get(&id).is_some_and(|(t, _)| *t == at) {
                self.by_device.remove(&id);
            }
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl LocalRouter {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        LocalRouter { registry: Registry::default(), metrics, recent: Mutex::default() }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Queues one serialized frame to every session of every member, except one session.
    fn fan_out(&self, audience: &Audience, frame: Utf8Bytes, except: Option<SessionId>) {
        let mut delivered = 0u64;
        for user in audience.members() {
            self.registry.for_each_session(user, |s| {
                if Some(s.id) != except && s.deliver(frame.clone(), &self.metrics) {
                    delivered += 1;
                }
            });
        }
        self.metrics.reports_fanned_out.fetch_add(1, Ordering::Relaxed);
        self.metrics.deliveries.fetch_add(delivered, Ordering::Relaxed);
    }

    fn sysmsg(&self, link: &DeviceLink, online: bool) {
        let Some(audience) = link.audience() else { return };
        let params = if online { r#"{"online":true}"# } else { r#"{"online":false}"# };
        let params = protocol::raw(params.to_owned());
        let frame = Outbound {
            action: Some("sysmsg"),
            deviceid: Some(link.deviceid.as_str()),
            apikey: Some(audience.owner.as_str()),
            ts: Some(now_secs()),
            params: Some(&params),
            ..Default::default()
        }
        .to_text();
        self.fan_out(&audience, frame.into(), None);
    }
}

/// Whether a sharee's update is within their share's permit, judged against the live state. Only
/// `timers` is governed, so params that do not mention it (and full permits) pass unparsed.
fn sharee_may(link: &DeviceLink, audience: &Audience, caller: &UserKey, params: &RawValue) -> bool {
    let permit = audience.permit_of(caller).unwrap_or(0);
    if permit & permit::ALL_TIMERS == permit::ALL_TIMERS || !params.get().contains("\"timers\"") {
        return true;
    }
    let Ok(requested) = serde_json::from_str::<serde_json::Value>(params.get()) else { return false };
    let current = link.state.lock().unwrap_or_else(|p| p.into_inner()).pick(&["timers".to_owned()]);
    let current = current.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or(serde_json::Value::Null);
    permit::allowed(permit, &current, &requested)
}

impl Router for LocalRouter {
    fn device(&self, deviceid: &DeviceId) -> Option<Arc<DeviceLink>> {
        self.registry.device(deviceid)
    }

    fn notify_device(&self, deviceid: &DeviceId, frame: Utf8Bytes) -> bool {
        self.registry.device(deviceid).is_some_and(|link| link.session.offer(frame).is_ok())
    }

    fn attach_app(&self, user: &UserKey, session: SessionHandle) {
        self.registry.insert_user(user, session);
    }

    fn detach_app(&self, user: &UserKey, session: SessionId) {
        self.registry.remove_user(user, session);
    }

    fn command(&self, caller: &UserKey, cmd: Command<'_>) -> Result<PendingAck, RouteError> {
        let link = self.registry.device(cmd.deviceid).ok_or(RouteError::Offline)?;
        let audience = link.audience().ok_or(RouteError::Denied)?;
        if !audience.contains(caller) {
            return Err(RouteError::Denied);
        }
        if cmd.kind == CommandKind::Update && &audience.owner != caller && !sharee_may(&link, &audience, caller, cmd.params) {
            return Err(RouteError::Denied);
        }
        let frame = Outbound {
            action: Some(cmd.kind.action()),
            deviceid: Some(link.deviceid.as_str()),
            apikey: Some(audience.owner.as_str()),
            user_agent: Some("app"),
            sequence: Some(cmd.sequence),
            ts: Some(0),
            params: Some(cmd.params),
            from: Some("app"),
            ..Default::default()
        }
        .to_text();
        let (tx, rx) = oneshot::channel();
        let key = protocol::sequence_key(cmd.sequence);
        // An acked update's params become the device's state: firmware often acks without a report.
        let merge = (cmd.kind == CommandKind::Update && cmd.params.get().trim_start().starts_with('{')).then(|| cmd.params.to_owned());
        let token = link.add_waiter(key.clone(), tx, merge, MAX_PENDING_PER_DEVICE).ok_or(RouteError::Busy)?;
        if let Err(refused) = link.session.offer(frame.into()) {
            link.remove_waiter(&key, token);
            return Err(match refused {
                Refused::Full => RouteError::Busy,
                Refused::Closed => RouteError::Offline,
            });
        }
        self.metrics.commands_routed.fetch_add(1, Ordering::Relaxed);
        Ok(PendingAck::new(rx, link, key, token, audience))
    }

    fn echo_command(&self, deviceid: &DeviceId, params: &RawValue, except: SessionId) {
        let Some(link) = self.registry.device(deviceid) else { return };
        let Some(audience) = link.audience() else { return };
        let frame = Outbound {
            action: Some("update"),
            deviceid: Some(deviceid.as_str()),
            apikey: Some(audience.owner.as_str()),
            user_agent: Some("app"),
            params: Some(params),
            ..Default::default()
        }
        .to_text();
        self.fan_out(&audience, frame.into(), Some(except));
    }

    fn attach_device(&self, link: Arc<DeviceLink>) {
        let recent = {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.expire(Instant::now());
            recent.by_device.remove(&link.deviceid).map(|(_, state)| state)
        };
        if let Some(state) = recent {
            *link.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
        }
        if let Some(old) = self.registry.insert_device(link.clone()) {
            // The old link's state may be newer than what the store had at register time.
            let state = old.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
            *link.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
            self.metrics.devices_replaced.fetch_add(1, Ordering::Relaxed);
            tracing::info!(device = %link.deviceid, old = %old.session.id, new = %link.session.id, "device connection replaced");
            old.session.close(CloseReason::Replaced);
            old.fail_pending();
        }
        self.sysmsg(&link, true);
    }

    fn detach_device(&self, link: &Arc<DeviceLink>) {
        link.fail_pending();
        if self.registry.remove_device(&link.deviceid, link.session.id) {
            let state = link.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let now = Instant::now();
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            recent.expire(now);
            recent.by_device.insert(link.deviceid.clone(), (now, state));
            recent.order.push_back((now, link.deviceid.clone()));
            drop(recent);
            self.sysmsg(link, false);
        }
    }

    fn report(&self, link: &DeviceLink, params: &RawValue) {
        let Some(audience) = link.audience() else { return };
        let frame = Outbound {
            action: Some("update"),
            deviceid: Some(link.deviceid.as_str()),
            apikey: Some(audience.owner.as_str()),
            user_agent: Some("device"),
            params: Some(params),
            ..Default::default()
        }
        .to_text();
        self.fan_out(&audience, frame.into(), None);
    }

    fn devices(&self) -> Vec<Arc<DeviceLink>> {
        self.registry.devices()
    }

    fn user_sessions(&self, user: &UserKey) -> usize {
        self.registry.user_sessions(user)
    }

    fn close_sessions(&self, user: &UserKey, credential: u64, reason: CloseReason) -> usize {
        let mut closed = 0;
        self.registry.for_each_session(user, |s| {
            if s.credential() == credential {
                s.close(reason);
                closed += 1;
            }
        });
        closed
    }

    fn close_user_sessions(&self, user: &UserKey, keep: u64, reason: CloseReason) -> usize {
        let mut closed = 0;
        self.registry.for_each_session(user, |s| {
            if keep == 0 || s.credential() != keep {
                s.close(reason);
                closed += 1;
            }
        });
        closed
    }
}
