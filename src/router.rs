//! Where frames go. [`Router`] is the one way to a device: "which socket holds this device",
//! "which sessions belong to this user", a device's live state, its pending acks and its audience
//! are all answered behind it, so a broker-backed router can replace [`LocalRouter`] without the
//! sessions, the command service or the REST handlers knowing whether a peer is local. The
//! router never awaits a peer: it queues without waiting and returns.
//!
//! Inside: [`registry`] (the sharded maps of who is online here), [`link`] (one online device:
//! its session handle, audience, pending table and live state), [`pending`] (waiters, their cap
//! and guard, and the state of devices that just left).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::audience::Audience;
use crate::clock::now_secs;
use crate::device_state::{DeviceState, DirtyQueue, LiveState, StateTooLarge};
use crate::ids::{DeviceId, SessionId, UserKey};
use crate::mailbox::{CloseReason, Refused, SessionHandle};
use crate::metrics::Metrics;
use crate::permit;
use crate::protocol::{self, CommandKind, Outbound};

mod link;
pub mod pending;
mod registry;

use link::DeviceLink;
use pending::Asker;
use pending::RecentStates;
pub use pending::{Ack, MAX_PENDING_PER_DEVICE, Outcome, PendingAck, Quota};
use registry::Registry;

/// An app command, borrowed from the app's frame.
#[derive(Clone, Copy)]
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

/// A device session that finished its handshake, handed to [`Router::attach_device`].
pub struct DeviceAttach {
    pub deviceid: DeviceId,
    pub session: SessionHandle,
    pub audience: Option<Audience>,
    /// The state the store had at register time.
    pub state: DeviceState,
    /// When it registered (milliseconds since the epoch): its login time, and its activation
    /// time when this was its first registration, so the two agree.
    pub since: i64,
}

/// How [`Router::command`] answers: at once when the device is on this node (or nowhere), or
/// later when another node holds it and must be asked first.
pub enum Routed {
    Here(Result<PendingAck, RouteError>),
    Away(Pin<Box<dyn Future<Output = Result<PendingAck, RouteError>> + Send>>),
}

impl Routed {
    pub async fn accepted(self) -> Result<PendingAck, RouteError> {
        match self {
            Routed::Here(r) => r,
            Routed::Away(f) => f.await,
        }
    }
}

/// Where frames for users go beyond this node: the cluster's user subjects ([`crate::cluster`]).
/// A single node has none.
pub trait Beyond: Send + Sync {
    /// Called after the local delivery of a frame meant for every session of `audience`.
    fn fan_out(&self, audience: &Audience, frame: &Utf8Bytes);
}

/// What the router knows of one online device, for operators and tests.
#[derive(Debug, Clone)]
pub struct DeviceView {
    pub deviceid: DeviceId,
    pub session: SessionId,
    pub audience: Option<Arc<Audience>>,
    /// Commands waiting for the device's ack.
    pub pending: usize,
    /// The size of its state, as counted against the cap.
    pub state_bytes: usize,
    /// When its session attached, in milliseconds since the epoch.
    pub since: i64,
    /// When the device last sent anything (a report, an ack, a ping), in milliseconds since the
    /// epoch.
    pub last_seen: i64,
}

/// The seam between sessions (and the command service, REST and the access-control reloads) and
/// delivery. Every call can be answered by a router whose devices live on other nodes.
pub trait Router: Send + Sync + 'static {
    fn attach_app(&self, user: &UserKey, session: SessionHandle);
    fn detach_app(&self, user: &UserKey, session: SessionId);
    /// Makes the session the device's connection, closing one it replaces (whose state it takes
    /// over), and announces it online.
    fn attach_device(&self, device: DeviceAttach);
    /// Forgets the device if `session` still holds it, fails its waiters and announces it
    /// offline. Returns the device's state when it has changes not saved yet.
    fn detach_device(&self, deviceid: &DeviceId, session: SessionId) -> Option<String>;
    /// Forwards an app's command to the device; the returned waiter resolves with its ack. A
    /// device on another node answers [`Routed::Away`]: its node is asked first.
    fn command(&self, caller: &UserKey, cmd: Command<'_>) -> Routed;
    /// The device's ack for `sequence` (its key, [`protocol::sequence_key`]): handed to the
    /// oldest waiter; an acked `update` becomes the device's state first. False when nobody
    /// waits (a late or unsolicited ack).
    fn ack(&self, deviceid: &DeviceId, sequence: &str, ack: Ack) -> bool;
    /// After a successful `update`: tells the device's listeners (`audience`, as the command was
    /// routed) the new params, except one session (the sender's) when given.
    fn echo_command(&self, audience: &Audience, deviceid: &DeviceId, params: &RawValue, except: Option<SessionId>);
    /// A device's state report from `session`: merged into its state (refused whole when the
    /// state would grow past the router's cap) and fanned out to its owner's and sharees'
    /// sessions. Returns the audience it went to (`None`: nobody, or not the device's current
    /// session).
    fn report(
        &self,
        deviceid: &DeviceId,
        session: SessionId,
        delta: BTreeMap<String, &RawValue>,
        params: &RawValue,
    ) -> Result<Option<Arc<Audience>>, StateTooLarge>;
    /// Queues a frame the hub composed about a device (e.g. a threshold `alarm`) to every app
    /// session of its owner and sharees, as a report is; false when the device is not online
    /// here or has no owner.
    fn fan_out_to_audience(&self, deviceid: &DeviceId, frame: Utf8Bytes) -> bool;
    /// The device's live params as a JSON object, only `keys` when not empty (`{}` when there
    /// are none); `None` when the device is offline.
    fn live_params(&self, deviceid: &DeviceId, keys: &[String]) -> Option<String>;
    /// The online device's audience as the router judges by it.
    fn audience(&self, deviceid: &DeviceId) -> Option<Arc<Audience>>;
    /// Replaces an online device's audience (sharing changed); false when it is not online here.
    fn set_audience(&self, deviceid: &DeviceId, audience: Option<Audience>) -> bool;
    /// The devices online on this node.
    fn online_devices(&self) -> Vec<DeviceId>;
    /// Whether the device is online on another node of a cluster (never on a single node).
    fn online_elsewhere(&self, _deviceid: &DeviceId) -> bool {
        false
    }
    /// Sharing of `devices` changed in the store (this node's audiences are reloaded already):
    /// tells the other nodes of a cluster.
    fn sharing_changed(&self, _devices: &[DeviceId]) {}
    /// What the router knows of an online device.
    fn device_view(&self, deviceid: &DeviceId) -> Option<DeviceView>;
    /// Queues a frame the hub itself sends a device (e.g. `notify`/`deleteNotify`); false when
    /// the device is offline or its queue is full.
    fn notify_device(&self, deviceid: &DeviceId, frame: Utf8Bytes) -> bool;
    /// Queues a frame to one app session of `user` (e.g. the late answer to a command that was
    /// queued while its device was offline); false when that session is not connected here.
    fn tell_session(&self, user: &UserKey, session: SessionId, frame: Utf8Bytes) -> bool;
    /// How many app sessions `user` has open on this node.
    fn user_sessions(&self, user: &UserKey) -> usize;
    /// How many app sessions `user` has open on every node of a cluster, as far as this node has
    /// heard (the bound of `--max-sessions-per-user`); this node's own on a single node.
    fn user_sessions_everywhere(&self, user: &UserKey) -> usize {
        self.user_sessions(user)
    }
    /// Every session open on this node (what a drain closes).
    fn sessions(&self) -> Vec<SessionHandle>;
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
    /// Where changed device states go to be saved.
    dirty: DirtyQueue,
    recent: RecentStates,
    /// Largest state a device may have, in bytes of JSON (`--max-frame-bytes`).
    state_limit: usize,
    /// How a device's pending table is shared between users (`--max-device-queue-per-user`).
    quota: Quota,
    /// Where fan-outs go beyond this node, set once by a cluster.
    beyond: OnceLock<Arc<dyn Beyond>>,
}

impl LocalRouter {
    pub fn new(metrics: Arc<Metrics>, dirty: DirtyQueue, state_limit: usize, quota: Quota) -> Self {
        LocalRouter {
            registry: Registry::default(),
            metrics,
            dirty,
            recent: RecentStates::default(),
            state_limit,
            quota,
            beyond: OnceLock::new(),
        }
    }

    /// Sends every later fan-out beyond this node too (set once, by the cluster).
    pub fn send_beyond(&self, beyond: Arc<dyn Beyond>) {
        let _ = self.beyond.set(beyond);
    }

    /// Queues a frame to every session of `user` on this node only (a fan-out from another node).
    pub fn deliver_here(&self, user: &UserKey, frame: &Utf8Bytes) -> u64 {
        let mut delivered = 0u64;
        self.registry.for_each_session(user, |s| {
            if s.deliver(frame.clone(), &self.metrics) {
                delivered += 1;
            }
        });
        self.metrics.deliveries.fetch_add(delivered, Ordering::Relaxed);
        delivered
    }

    pub fn holds(&self, deviceid: &DeviceId) -> bool {
        self.registry.device(deviceid).is_some()
    }

    /// Like [`Router::detach_device`], but says whether `session` still held the device (the
    /// outer `Option`); the inner one is the unsaved state.
    pub fn detach(&self, deviceid: &DeviceId, session: SessionId) -> Option<Option<String>> {
        let link = self.registry.remove_device(deviceid, session)?;
        link.pending.fail_all();
        self.recent.keep(deviceid, link.live.snapshot());
        self.sysmsg(&link, false);
        Some(link.live.is_dirty().then(|| link.live.take_for_save()))
    }

    /// Another node took the device over: closes its session here as replaced, fails its waiters
    /// (504 at once) and hands back its latest state, without an offline sysmsg.
    pub fn evict(&self, deviceid: &DeviceId) -> Option<DeviceState> {
        let link = self.registry.remove_any_device(deviceid)?;
        link.session.close(CloseReason::Replaced);
        link.pending.fail_all();
        self.metrics.devices_replaced.fetch_add(1, Ordering::Relaxed);
        Some(link.live.snapshot())
    }

    /// Takes over the state another node handed over, unless the device changed here already.
    pub fn adopt_state(&self, deviceid: &DeviceId, state: DeviceState) {
        if let Some(link) = self.registry.device(deviceid).filter(|l| !l.live.is_dirty()) {
            link.live.replace(state);
        }
    }

    /// Closes every device session on this node (a node cut off from its cluster).
    pub fn close_devices(&self, reason: CloseReason) -> usize {
        let links = self.registry.devices();
        links.iter().for_each(|l| l.session.close(reason));
        links.len()
    }

    /// App sessions on this node.
    pub fn app_sessions(&self) -> usize {
        self.registry.app_sessions()
    }

    /// Routes a command to a device on this node.
    pub fn command_here(&self, caller: &UserKey, cmd: Command<'_>) -> Result<PendingAck, RouteError> {
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
        // Fair between users: each has a quota of this device's pending table, sharees together
        // twice that, and sharees leave a quarter of its outbox to the owner.
        let owner = &audience.owner == caller;
        let asker = Asker { user: caller, owner };
        let token = link.pending.add(key.clone(), tx, merge, asker, self.quota, MAX_PENDING_PER_DEVICE).ok_or(RouteError::Busy)?;
        let offered = if owner { link.session.offer(frame.into()) } else { link.session.offer_leaving_room(frame.into()) };
        if let Err(refused) = offered {
            link.pending.remove(&key, token);
            return Err(match refused {
                Refused::Full => RouteError::Busy,
                Refused::Closed => RouteError::Offline,
            });
        }
        self.metrics.commands_routed.fetch_add(1, Ordering::Relaxed);
        Ok(PendingAck::new(rx, link.pending.clone(), key, token, audience))
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
        if let Some(beyond) = self.beyond.get() {
            beyond.fan_out(audience, &frame);
        }
    }

    fn sysmsg(&self, link: &DeviceLink, online: bool) {
        if let Some(audience) = link.audience() {
            self.announce(&link.deviceid, &audience, online);
        }
    }

    /// Tells the device's audience it went on- or offline (`sysmsg`).
    pub fn announce(&self, deviceid: &DeviceId, audience: &Audience, online: bool) {
        let params = if online { r#"{"online":true}"# } else { r#"{"online":false}"# };
        let params = protocol::raw(params.to_owned());
        let frame = Outbound {
            action: Some("sysmsg"),
            deviceid: Some(deviceid.as_str()),
            apikey: Some(audience.owner.as_str()),
            ts: Some(now_secs() as u64),
            params: Some(&params),
            ..Default::default()
        }
        .to_text();
        self.fan_out(audience, frame.into(), None);
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
    let current = link.live.pick(&["timers".to_owned()]);
    let current = current.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or(serde_json::Value::Null);
    permit::allowed(permit, &current, &requested)
}

impl Router for LocalRouter {
    fn attach_app(&self, user: &UserKey, session: SessionHandle) {
        self.registry.insert_user(user, session);
    }

    fn detach_app(&self, user: &UserKey, session: SessionId) {
        self.registry.remove_user(user, session);
    }

    fn attach_device(&self, device: DeviceAttach) {
        let DeviceAttach { deviceid, session, audience, state, since } = device;
        // A device that reconnects at once may have read the store before its old session's
        // final save landed.
        let state = self.recent.take(&deviceid).unwrap_or(state);
        let link = Arc::new(DeviceLink::new(session, audience, Arc::new(LiveState::new(deviceid, state)), since));
        if let Some(old) = self.registry.insert_device(link.clone()) {
            // The old link's state may be newer than what the store had at register time.
            link.live.replace(old.live.snapshot());
            self.metrics.devices_replaced.fetch_add(1, Ordering::Relaxed);
            tracing::info!(device = %link.deviceid, old = %old.session.id, new = %link.session.id, "device connection replaced");
            old.session.close(CloseReason::Replaced);
            old.pending.fail_all();
        }
        self.sysmsg(&link, true);
    }

    fn detach_device(&self, deviceid: &DeviceId, session: SessionId) -> Option<String> {
        self.detach(deviceid, session).flatten()
    }

    fn command(&self, caller: &UserKey, cmd: Command<'_>) -> Routed {
        Routed::Here(self.command_here(caller, cmd))
    }

    fn ack(&self, deviceid: &DeviceId, sequence: &str, ack: Ack) -> bool {
        let Some(link) = self.registry.device(deviceid) else { return false };
        link.pending.complete(sequence, ack, |params| {
            // An acked update changed the device as a report would; a later report still wins.
            let Ok(delta) = serde_json::from_str::<BTreeMap<String, &RawValue>>(params.get()) else { return };
            if link.live.merge(delta, self.state_limit).is_ok() {
                self.dirty.mark(&link.live);
            }
        })
    }

    fn echo_command(&self, audience: &Audience, deviceid: &DeviceId, params: &RawValue, except: Option<SessionId>) {
        let frame = Outbound {
            action: Some("update"),
            deviceid: Some(deviceid.as_str()),
            apikey: Some(audience.owner.as_str()),
            user_agent: Some("app"),
            params: Some(params),
            ..Default::default()
        }
        .to_text();
        self.fan_out(audience, frame.into(), except);
    }

    fn report(
        &self,
        deviceid: &DeviceId,
        session: SessionId,
        delta: BTreeMap<String, &RawValue>,
        params: &RawValue,
    ) -> Result<Option<Arc<Audience>>, StateTooLarge> {
        let Some(link) = self.registry.device(deviceid).filter(|l| l.session.id == session) else { return Ok(None) };
        link.live.merge(delta, self.state_limit)?;
        self.dirty.mark(&link.live);
        let Some(audience) = link.audience() else { return Ok(None) };
        let frame = Outbound {
            action: Some("update"),
            deviceid: Some(deviceid.as_str()),
            apikey: Some(audience.owner.as_str()),
            user_agent: Some("device"),
            params: Some(params),
            ..Default::default()
        }
        .to_text();
        self.fan_out(&audience, frame.into(), None);
        Ok(Some(audience))
    }

    fn fan_out_to_audience(&self, deviceid: &DeviceId, frame: Utf8Bytes) -> bool {
        let Some(audience) = self.registry.device(deviceid).and_then(|l| l.audience()) else { return false };
        self.fan_out(&audience, frame, None);
        true
    }

    fn live_params(&self, deviceid: &DeviceId, keys: &[String]) -> Option<String> {
        let link = self.registry.device(deviceid)?;
        Some(link.live.pick(keys).unwrap_or_else(|| "{}".to_owned()))
    }

    fn audience(&self, deviceid: &DeviceId) -> Option<Arc<Audience>> {
        self.registry.device(deviceid)?.audience()
    }

    fn set_audience(&self, deviceid: &DeviceId, audience: Option<Audience>) -> bool {
        match self.registry.device(deviceid) {
            Some(link) => {
                link.set_audience(audience);
                true
            }
            None => false,
        }
    }

    fn online_devices(&self) -> Vec<DeviceId> {
        self.registry.devices().into_iter().map(|l| l.deviceid.clone()).collect()
    }

    fn device_view(&self, deviceid: &DeviceId) -> Option<DeviceView> {
        let link = self.registry.device(deviceid)?;
        Some(DeviceView {
            deviceid: link.deviceid.clone(),
            session: link.session.id,
            audience: link.audience(),
            pending: link.pending.len(),
            state_bytes: link.live.bytes(),
            since: link.since,
            last_seen: link.session.last_heard(),
        })
    }

    fn notify_device(&self, deviceid: &DeviceId, frame: Utf8Bytes) -> bool {
        self.registry.device(deviceid).is_some_and(|link| link.session.offer(frame).is_ok())
    }

    fn tell_session(&self, user: &UserKey, session: SessionId, frame: Utf8Bytes) -> bool {
        let mut told = false;
        self.registry.for_each_session(user, |s| {
            if s.id == session {
                told = s.deliver(frame.clone(), &self.metrics);
            }
        });
        told
    }

    fn user_sessions(&self, user: &UserKey) -> usize {
        self.registry.user_sessions(user)
    }

    fn sessions(&self) -> Vec<SessionHandle> {
        self.registry.sessions()
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
