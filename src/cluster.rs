//! Many nodes, one hub: a [`ClusterRouter`] wraps this node's [`LocalRouter`] and carries what
//! crosses nodes over NATS, with PostgreSQL (shared by every node) ordering device ownership.
//!
//! - **Directory.** Every node subscribes once to a subject of its own ([`wire::Subjects::node`]).
//!   A node that claims a device announces it with the claim's epoch ([`wire::Presence`]), and
//!   every node keeps a table of which node holds which device (`elsewhere`, read from the store
//!   at start). A command for a device that is not here is a request on its holder's subject; a
//!   device in nobody's table, a holder that no longer has it, or NATS's "no responders" (the
//!   holder died) is the offline path: 504, or 406 for a stranger. The holder judges audience,
//!   permits and quotas with its live state, queues a waiter in its own pending table, and answers
//!   `accepted` (with the audience), a refusal, and later the ack (after committing the state it
//!   changed) or `gone`. The requester owns the deadline and matches answers by its own call id,
//!   never by `sequence`. One subscription per node rather than one per device: a subscription
//!   costs about 6 KB of buffer in the NATS client, more than the rest of a held device.
//! - **Users.** A node subscribes to a user's subject while it has app sessions of that user (and
//!   a few seconds after the last leaves). Every fan-out (reports, sysmsg, echoes, alarms) is
//!   delivered to this node's sessions first, then published once per member of the audience.
//! - **Local first.** Nothing for a device or a session on this node goes through NATS, and the
//!   connection uses `no_echo`.
//! - **Takeover.** A device registering here bumps its epoch in `cluster_devices`, and the
//!   announcement tells the old holder to let go: it closes its session as replaced, fails its
//!   waiters (504) and sends the latest state to the new holder's subject, with no offline
//!   sysmsg. Epochs order the announcements, whatever order they arrive in.
//! - **Node loss** ([`nodes`]): heartbeats every second; a node silent for [`nodes::DEAD_AFTER`]
//!   is dead, and whichever survivor clears its rows in `cluster_devices` first sends their
//!   offline sysmsgs. A node cut off from NATS that long closes its own device sessions.
//! - **Shared limits.** Every node counts every node's REST calls in its rate-limit windows
//!   ([`crate::rate`]: the calls counted here go out on the limits subject every
//!   [`LIMITS_EVERY`]), and bounds a user's app sessions by their count on every node: each node
//!   holding sessions of a user tells the others its count on the user's subject whenever it
//!   changes, and asks for theirs when it subscribes ([`Inner::user_sessions_everywhere`]).
//! - **Never await a peer.** Everything bound for NATS goes through one bounded forwarder queue
//!   ([`Forwarder`]); when it is full a command is answered busy and a fan-out is counted and dropped.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use futures_util::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::acl::Acl;
use crate::audience::Audience;
use crate::auth::lockout::Lockout;
use crate::device_state::{DeviceState, StateTooLarge};
use crate::ids::{DeviceId, SessionId, UserKey};
use crate::mailbox::{CloseReason, SessionHandle};
use crate::metrics::Metrics;
use crate::rate::{RateLimiter, Unsent};
use crate::recorder::Recorder;
use crate::router::{Ack, Beyond, Command, DeviceAttach, DeviceView, LocalRouter, Outcome, PendingAck, RouteError, Routed, Router};
use crate::store::Store;

pub mod nodes;
mod wire;

pub use nodes::Nodes;
use wire::{Reply, Subjects, ToNode};

/// Messages waiting for the NATS connection; beyond this a command is busy and a fan-out dropped.
const FORWARD_QUEUE: usize = 65_536;
/// How long a node keeps a user's subscription after its last session of that user left.
const USER_LINGER: Duration = Duration::from_secs(5);
/// Claims written to the store in one statement, at most.
const CLAIM_BATCH: usize = 256;
/// How often the REST calls counted here are told to the other nodes.
pub const LIMITS_EVERY: Duration = Duration::from_millis(100);
/// Rate-limit counts per message on the limits subject (a few tens of bytes each).
const HITS_PER_MESSAGE: usize = 512;

/// How a node joins its cluster.
pub struct Settings {
    pub url: String,
    pub name: String,
    pub node: String,
    /// How long a command waits for its device's ack (`--ack-timeout-ms`).
    pub ack_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach NATS at {url}: {source}")]
    Connect { url: String, source: async_nats::ConnectError },
    #[error("NATS refused a subscription: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The host name, as a subject token, for a node started without `--node-id`.
pub fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_default();
    let id: String =
        host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(64).collect();
    if id.is_empty() { "node".to_owned() } else { id }
}

/// Something bound for NATS.
enum Out {
    Publish { subject: String, payload: Bytes },
    Request { subject: String, reply: String, payload: Bytes },
}

/// The one queue to the NATS connection, drained by one task: callers never await NATS.
pub struct Forwarder {
    tx: mpsc::Sender<Out>,
    subjects: Arc<Subjects>,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    fn send(&self, out: Out) -> bool {
        if self.tx.try_send(out).is_ok() {
            return true;
        }
        self.metrics.cluster_dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    fn publish(&self, subject: String, payload: impl Into<Bytes>) -> bool {
        self.send(Out::Publish { subject, payload: payload.into() })
    }
}

impl Beyond for Forwarder {
    fn fan_out(&self, audience: &Audience, frame: &Utf8Bytes) {
        let mut payload = Vec::with_capacity(frame.len() + 1);
        payload.push(wire::FRAME);
        payload.extend_from_slice(frame.as_bytes());
        let payload = Bytes::from(payload);
        for user in audience.members() {
            self.send(Out::Publish { subject: self.subjects.user(user), payload: payload.clone() });
        }
    }
}

async fn forward(client: async_nats::Client, mut rx: mpsc::Receiver<Out>) {
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 64).await > 0 {
        for out in batch.drain(..) {
            let sent = match out {
                Out::Publish { subject, payload } => client.publish(subject, payload).await,
                Out::Request { subject, reply, payload } => client.publish_with_reply(subject, reply, payload).await,
            };
            if let Err(e) = sent {
                tracing::debug!(error = %e, "publishing to NATS failed");
            }
        }
    }
}

/// A user this node has subscribed to: the subscription's stop, and how many app sessions of the
/// user each other node said it holds.
struct Subscribed {
    stop: CancellationToken,
    elsewhere: HashMap<String, u32>,
}

/// One remote command of this node, until its ack, refusal, `gone` or the caller's drop.
struct Call {
    accept: Option<oneshot::Sender<Result<Arc<Audience>, RouteError>>>,
    ack: Option<oneshot::Sender<Ack>>,
}

/// Removes a call's entry when the command is answered, times out or its waiter is dropped.
struct CallGuard {
    calls: Arc<DashMap<u64, Call>>,
    id: u64,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.calls.remove(&self.id);
    }
}

/// Work that touches the store or NATS subscriptions, done in order by one task.
enum Control {
    Claim(DeviceId),
    Release(DeviceId),
    UserJoined(UserKey),
    UserMaybeGone(UserKey),
    Flush(oneshot::Sender<()>),
    /// NATS came back after an outage: announcements may have been missed, the table of other
    /// nodes' devices is read again from the store.
    Resync,
}

struct Inner {
    local: LocalRouter,
    client: async_nats::Client,
    subjects: Arc<Subjects>,
    forwarder: Arc<Forwarder>,
    settings: Settings,
    store: Store,
    /// This node's recorder: an acked update for another node's app is committed before the ack
    /// goes back.
    recorder: Recorder,
    metrics: Arc<Metrics>,
    control: mpsc::UnboundedSender<Control>,
    calls: Arc<DashMap<u64, Call>>,
    next_call: AtomicU64,
    /// Devices this node holds, by the epoch of its claim.
    held: DashMap<DeviceId, i64>,
    users: DashMap<UserKey, Subscribed>,
    /// Users whose session count here changed (or was asked for): published in order by one task
    /// (`ask`: ask the other nodes for theirs too).
    counts: mpsc::UnboundedSender<(UserKey, bool)>,
    /// Devices online on other nodes: the node and the epoch of its claim (from presence
    /// announcements, and the store at start). A command for one of them goes to that node.
    elsewhere: DashMap<DeviceId, (String, i64)>,
    acl: OnceLock<Arc<Acl>>,
    lockout: OnceLock<Arc<Lockout>>,
    rate: OnceLock<Arc<RateLimiter>>,
}

/// Publishes this node's secret checks for the other nodes' lockouts.
struct LockoutPeers(Arc<Forwarder>);

impl crate::auth::lockout::Peers for LockoutPeers {
    fn tell(&self, account: &str, event: crate::auth::lockout::Event) {
        let msg = wire::Check { account: account.to_owned(), event };
        if let Ok(payload) = serde_json::to_vec(&msg) {
            self.0.publish(self.0.subjects.checks(), payload);
        }
    }
}

/// The router of a cluster node: [`LocalRouter`] for what is here, NATS for the rest.
pub struct ClusterRouter {
    inner: Arc<Inner>,
    pub nodes: Arc<Nodes>,
}

impl ClusterRouter {
    /// Connects to NATS, marks offline the devices this node's previous run left held, and starts
    /// the node's tasks (forwarder, control, replies, presence and sharing, heartbeats).
    pub async fn start(
        settings: Settings,
        local: LocalRouter,
        store: Store,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        advert: nodes::Advert,
        shutdown: CancellationToken,
    ) -> Result<Arc<ClusterRouter>, ClusterError> {
        let events = metrics.clone();
        let (control, control_rx) = mpsc::unbounded_channel();
        let reconnected = control.clone();
        // The first `Connected` is the connection made here; the start reads the directory itself.
        let connected_before = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client = async_nats::ConnectOptions::new()
            .name(format!("switchyard {}", settings.node))
            .no_echo()
            .max_reconnects(None)
            .event_callback(move |event| {
                let metrics = events.clone();
                let reconnected = reconnected.clone();
                let connected_before = connected_before.clone();
                async move {
                    match event {
                        async_nats::Event::SlowConsumer(sid) => {
                            metrics.cluster_slow_consumers.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(subscription = sid, "a NATS subscription fell behind and lost messages");
                        }
                        async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                        async_nats::Event::Connected => {
                            tracing::info!("connected to NATS");
                            if connected_before.swap(true, Ordering::Relaxed) {
                                let _ = reconnected.send(Control::Resync);
                            }
                        }
                        other => tracing::info!(event = %other, "NATS"),
                    }
                }
            })
            .connect(settings.url.as_str())
            .await
            .map_err(|source| ClusterError::Connect { url: settings.url.clone(), source })?;
        let subjects = Arc::new(Subjects::new(&settings.name, &settings.node));
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE);
        tokio::spawn(forward(client.clone(), rx));
        let forwarder = Arc::new(Forwarder { tx, subjects: subjects.clone(), metrics: metrics.clone() });
        local.send_beyond(forwarder.clone());
        let (counts, counts_rx) = mpsc::unbounded_channel();
        let replies = client.subscribe(subjects.replies()).await?;
        let mine = client.subscribe(subjects.node(&settings.node)).await?;
        let presence = client.subscribe(subjects.presence()).await?;
        let acl = client.subscribe(subjects.acl()).await?;
        let checks = client.subscribe(subjects.checks()).await?;
        let heartbeats = client.subscribe(subjects.heartbeat()).await?;
        let limits = client.subscribe(subjects.limits()).await?;
        let inner = Arc::new(Inner {
            local,
            client,
            subjects,
            forwarder,
            settings,
            store,
            recorder,
            metrics,
            control,
            calls: Arc::default(),
            next_call: AtomicU64::new(1),
            held: DashMap::new(),
            users: DashMap::new(),
            counts,
            elsewhere: DashMap::new(),
            acl: OnceLock::new(),
            lockout: OnceLock::new(),
            rate: OnceLock::new(),
        });
        // Devices this node held when it last stopped (a crash): offline now.
        let left = inner.store.reap_node(&inner.settings.name, &inner.settings.node).await?;
        inner.announce_offline(left).await;
        for (id, node, epoch) in inner.store.held_devices(&inner.settings.name).await? {
            inner.elsewhere.insert(id, (node, epoch));
        }
        tokio::spawn(inner.clone().control_loop(control_rx));
        tokio::spawn(inner.clone().reply_loop(replies));
        tokio::spawn(inner.clone().node_loop(mine));
        tokio::spawn(inner.clone().broadcast_loop(presence, acl, checks));
        tokio::spawn(inner.clone().count_loop(counts_rx));
        tokio::spawn(inner.clone().limits_in(limits));
        let nodes = Arc::new(Nodes::new(inner.settings.node.clone(), advert));
        tokio::spawn(nodes::run(nodes.clone(), inner.clone(), heartbeats, shutdown));
        tracing::info!(node = %inner.settings.node, cluster = %inner.settings.name, "joined the cluster");
        Ok(Arc::new(ClusterRouter { inner, nodes }))
    }

    /// Counts every node's failed secret checks in `lockout`: this node's attempts are published,
    /// the others' mirrored.
    pub fn share_lockout(&self, lockout: Arc<Lockout>) {
        lockout.share_with(Arc::new(LockoutPeers(self.inner.forwarder.clone())));
        let _ = self.inner.lockout.set(lockout);
    }

    /// Counts every node's REST calls in `rate`: this node's are published every
    /// [`LIMITS_EVERY`], the others' mirrored.
    pub fn share_rate_limit(&self, rate: Arc<RateLimiter>) {
        rate.share();
        if self.inner.rate.set(rate.clone()).is_ok() {
            tokio::spawn(self.inner.clone().limits_out(rate));
        }
    }

    /// Lets sharing changes announced by other nodes reach this node's audiences.
    pub fn set_acl(&self, acl: Arc<Acl>) {
        let _ = self.inner.acl.set(acl);
    }

    /// Waits until the releases of devices that already left are written (at shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.control.send(Control::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.client.flush()).await;
    }
}

impl Inner {
    fn node(&self) -> &str {
        &self.settings.node
    }

    fn announce_presence(&self, id: &DeviceId, node: &str, epoch: i64) {
        let msg = wire::Presence { deviceid: id.as_str().to_owned(), node: node.to_owned(), epoch };
        if let Ok(payload) = serde_json::to_vec(&msg) {
            self.forwarder.publish(self.subjects.presence(), payload);
        }
    }

    /// Offline sysmsgs for devices whose node is gone, to every node's sessions.
    async fn announce_offline(&self, devices: Vec<(DeviceId, i64)>) {
        for (id, epoch) in devices {
            self.metrics.cluster_devices_reaped.fetch_add(1, Ordering::Relaxed);
            self.elsewhere.remove_if(&id, |_, (_, e)| *e <= epoch);
            self.announce_presence(&id, "", epoch);
            match self.store.audience(&id).await {
                Ok(Some(audience)) => self.local.announce(&id, &audience, false),
                Ok(None) => {}
                Err(e) => tracing::warn!(device = %id, error = %e, "no offline sysmsg: the store did not answer"),
            }
        }
    }

    async fn control_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Control>) {
        let mut batch = Vec::with_capacity(CLAIM_BATCH);
        let mut claims: Vec<DeviceId> = Vec::new();
        while rx.recv_many(&mut batch, CLAIM_BATCH).await > 0 {
            // Claims in a row go to the store together; anything else keeps its place after them.
            for c in batch.drain(..) {
                if let Control::Claim(id) = c {
                    claims.push(id);
                    continue;
                }
                if !claims.is_empty() {
                    self.claim(std::mem::take(&mut claims)).await;
                }
                match c {
                    Control::Claim(_) => {}
                    Control::Release(id) => self.release(id).await,
                    Control::UserJoined(user) => self.subscribe_user(user).await,
                    Control::UserMaybeGone(user) => {
                        if self.local.user_sessions(&user) == 0
                            && let Some((_, sub)) = self.users.remove(&user)
                        {
                            sub.stop.cancel();
                        }
                    }
                    Control::Flush(done) => {
                        let _ = done.send(());
                    }
                    Control::Resync => self.resync().await,
                }
            }
            if !claims.is_empty() {
                self.claim(std::mem::take(&mut claims)).await;
            }
        }
    }

    /// Makes this node the holder of the devices (those still attached here): a new epoch for
    /// each in the store, announced to every node. Whichever node held one before lets go when it
    /// hears that (see [`Inner::claimed_elsewhere`]) and sends its state here.
    async fn claim(self: &Arc<Self>, mut ids: Vec<DeviceId>) {
        ids.retain(|id| self.local.holds(id));
        let claimed = match self.store.hold_devices(&self.settings.name, &ids, self.node()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(devices = ids.len(), error = %e, "claiming devices in the store failed; other nodes cannot reach them");
                return;
            }
        };
        for (id, epoch) in claimed {
            self.claimed(id, epoch);
        }
    }

    /// This node's claim of the device got `epoch`.
    fn claimed(&self, id: DeviceId, epoch: i64) {
        // Under the entry's lock, as the presence handler decides under it: a newer claim that
        // was announced while this one was in the store wins, and exactly one of the two sees
        // the other.
        let lost_to = match self.held.entry(id.clone()) {
            dashmap::Entry::Occupied(o) if *o.get() > epoch => return, // a newer claim of this node's
            entry => match self.elsewhere.get(&id).filter(|h| h.1 > epoch).map(|h| h.clone()) {
                Some(newer) => {
                    if let dashmap::Entry::Occupied(o) = entry {
                        o.remove();
                    }
                    Some(newer)
                }
                None => {
                    entry.insert(epoch);
                    self.elsewhere.remove_if(&id, |_, (_, e)| *e < epoch);
                    None
                }
            },
        };
        match lost_to {
            Some((node, theirs)) => self.let_go(&id, &node, theirs),
            None => self.announce_presence(&id, self.node(), epoch),
        }
    }

    /// Another node claimed the device with `epoch` (a presence announcement): when this node
    /// holds it by an older claim, it lets go. Decided and recorded under the `held` entry's lock,
    /// as [`Inner::claim`] decides, so of two claims in flight exactly one sees the other.
    fn claimed_elsewhere(&self, id: DeviceId, node: String, epoch: i64) {
        let entry = self.held.entry(id.clone());
        let lost = match &entry {
            // This node's claim is the newer one: the announcement is stale.
            dashmap::Entry::Occupied(o) if *o.get() >= epoch => return,
            dashmap::Entry::Occupied(_) => true,
            dashmap::Entry::Vacant(_) => false,
        };
        if lost {
            self.let_go(&id, &node, epoch);
        }
        // After the state went out: a command routed by this entry reaches `node` behind it.
        self.note_holder(id, node, epoch);
        if let (true, dashmap::Entry::Occupied(o)) = (lost, entry) {
            o.remove();
        }
    }

    /// Records in the directory that `node` holds the device by the claim `epoch`, unless a newer
    /// claim is known already.
    fn note_holder(&self, id: DeviceId, node: String, epoch: i64) {
        match self.elsewhere.entry(id) {
            dashmap::Entry::Occupied(o) if o.get().1 > epoch => {}
            dashmap::Entry::Occupied(mut o) => {
                o.insert((node, epoch));
            }
            dashmap::Entry::Vacant(v) => {
                v.insert((node, epoch));
            }
        }
    }

    /// The device was taken over by `node`'s claim `epoch`: its session here closes as replaced,
    /// its waiters fail (504), and its latest state goes to `node`, with no offline sysmsg.
    fn let_go(&self, id: &DeviceId, node: &str, epoch: i64) {
        let Some(state) = self.local.evict(id) else { return };
        tracing::info!(device = %id, to = %node, "device taken over by another node");
        let msg = ToNode::State { dev: id.as_str().to_owned(), epoch, state: state.to_json() };
        if let Ok(payload) = serde_json::to_vec(&msg) {
            self.forwarder.publish(self.subjects.node(node), payload);
        }
    }

    /// Reads again from the store which node holds which device (after a NATS outage, in which
    /// announcements may have been lost). An entry announced meanwhile with a newer epoch stays.
    async fn resync(&self) {
        // What was known before reading: an entry gone from the store is removed only when no
        // announcement changed it meanwhile.
        let before: HashMap<DeviceId, i64> = self.elsewhere.iter().map(|e| (e.key().clone(), e.value().1)).collect();
        let held = match self.store.held_devices(&self.settings.name).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "could not read which node holds which device");
                return;
            }
        };
        let mut known: HashSet<DeviceId> = HashSet::with_capacity(held.len());
        for (id, node, epoch) in held {
            known.insert(id.clone());
            if node != self.node() {
                self.note_holder(id, node, epoch);
            }
        }
        self.elsewhere.retain(|id, (_, epoch)| known.contains(id) || before.get(id) != Some(epoch));
        tracing::info!(devices = self.elsewhere.len(), "read again which node holds which device");
    }

    async fn release(&self, id: DeviceId) {
        if self.local.holds(&id) {
            return; // it came back: a newer claim follows
        }
        let Some((_, epoch)) = self.held.remove(&id) else { return };
        match self.store.unhold_device(&self.settings.name, &id, self.node(), epoch).await {
            Ok(true) => self.announce_presence(&id, "", epoch),
            Ok(false) => {}
            Err(e) => tracing::warn!(device = %id, error = %e, "releasing the device in the store failed"),
        }
    }

    async fn subscribe_user(self: &Arc<Self>, user: UserKey) {
        if self.users.contains_key(&user) || self.local.user_sessions(&user) == 0 {
            return;
        }
        match self.client.subscribe(self.subjects.user(&user)).await {
            Ok(sub) => {
                let stop = CancellationToken::new();
                self.users.insert(user.clone(), Subscribed { stop: stop.clone(), elsewhere: Default::default() });
                // The nodes that already hold sessions of the user answer with their counts.
                let _ = self.counts.send((user.clone(), true));
                tokio::spawn(self.clone().user_loop(user, sub, stop));
            }
            Err(e) => tracing::warn!(apikey = %user, error = %e, "subscribing to the user's subject failed"),
        }
    }

    /// This node's subject: other nodes' commands and notices for the devices held here, and
    /// the state of devices taken over from them. One subscription for every device.
    async fn node_loop(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            let Ok(ask) = serde_json::from_slice::<ToNode>(&msg.payload) else {
                tracing::debug!("unreadable message on the node's subject");
                continue;
            };
            match ask {
                ToNode::Cmd { dev, caller, kind, seq, params, ms } => {
                    let Some(reply) = msg.reply else { continue };
                    let (Ok(seq), Ok(params)) = (RawValue::from_string(seq), RawValue::from_string(params)) else { continue };
                    self.serve_command(&DeviceId::new(dev), reply.to_string(), UserKey::new(caller), kind.into(), &seq, &params, ms);
                }
                ToNode::Notify { dev, frame } => {
                    self.local.notify_device(&DeviceId::new(dev), frame.into());
                }
                ToNode::State { dev, epoch, state } => {
                    let id = DeviceId::new(dev);
                    if self.held.get(&id).is_some_and(|e| *e == epoch) {
                        tracing::info!(device = %id, "took the device over from another node, with its state");
                        self.local.adopt_state(&id, DeviceState::from_json(&state));
                    }
                }
            }
        }
    }

    /// Another node's app command for a device held here: judged and queued like a local one;
    /// the answers go to `reply`.
    #[allow(clippy::too_many_arguments)]
    fn serve_command(
        self: &Arc<Self>,
        id: &DeviceId,
        reply: String,
        caller: UserKey,
        kind: crate::protocol::CommandKind,
        seq: &RawValue,
        params: &RawValue,
        ms: u64,
    ) {
        let answer = |r: &Reply| serde_json::to_vec(r).unwrap_or_default();
        match self.local.command_here(&caller, Command { kind, deviceid: id, sequence: seq, params }) {
            Err(e) => {
                self.forwarder.publish(reply, answer(&Reply::Refused { why: e.into() }));
            }
            Ok(pending) => {
                let accepted = Reply::Accepted { audience: (&*pending.audience).into() };
                self.forwarder.publish(reply.clone(), answer(&accepted));
                let me = self.clone();
                let deadline = Instant::now() + Duration::from_millis(ms);
                tokio::spawn(async move {
                    let done = match pending.wait(deadline).await {
                        // The ack changed the device's state here: committed before the answer, as
                        // for a local command ([`crate::command::Sent::wait`]).
                        Outcome::Acked(ack)
                            if ack.error == 0
                                && kind == crate::protocol::CommandKind::Update
                                && !me.recorder.commit().committed().await =>
                        {
                            Reply::Ack { error: 500, params: None }
                        }
                        Outcome::Acked(ack) => Reply::Ack { error: ack.error, params: ack.params.map(|p| p.get().to_owned()) },
                        Outcome::TimedOut | Outcome::Gone => Reply::Gone,
                    };
                    me.forwarder.publish(reply, answer(&done));
                });
            }
        }
    }

    async fn user_loop(self: Arc<Self>, user: UserKey, mut sub: async_nats::Subscriber, stop: CancellationToken) {
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = sub.next() => match m { Some(m) => m, None => return },
            };
            match msg.payload.first() {
                Some(&wire::FRAME) => {
                    if let Ok(frame) = Utf8Bytes::try_from(msg.payload.slice(1..)) {
                        self.local.deliver_here(&user, &frame);
                    }
                }
                Some(&wire::CLOSE) => {
                    let Ok(close) = serde_json::from_slice::<wire::Close>(&msg.payload[1..]) else { continue };
                    let Some(reason) = CloseReason::from_code(close.reason) else { continue };
                    match close.credential {
                        Some(c) => self.local.close_sessions(&user, c, reason),
                        None => self.local.close_user_sessions(&user, close.keep, reason),
                    };
                }
                Some(&wire::COUNT) => {
                    let Ok(count) = serde_json::from_slice::<wire::Count>(&msg.payload[1..]) else { continue };
                    if count.node == self.node() {
                        continue;
                    }
                    if let Some(mut sub) = self.users.get_mut(&user) {
                        if count.sessions == 0 {
                            sub.elsewhere.remove(&count.node);
                        } else {
                            sub.elsewhere.insert(count.node, count.sessions);
                        }
                    }
                    if count.ask && self.local.user_sessions(&user) > 0 {
                        let _ = self.counts.send((user.clone(), false));
                    }
                }
                _ => {}
            }
        }
    }

    /// Publishes this node's count of a user's sessions, read when it is sent: as one task reads
    /// and sends them in order, the last count a node hears from here is the current one.
    async fn count_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<(UserKey, bool)>) {
        while let Some((user, ask)) = rx.recv().await {
            let count = wire::Count { node: self.node().to_owned(), sessions: self.local.user_sessions(&user) as u32, ask };
            let mut payload = vec![wire::COUNT];
            if serde_json::to_writer(&mut payload, &count).is_ok() {
                self.forwarder.publish(self.subjects.user(&user), payload);
            }
        }
    }

    /// `user`'s app sessions here and, as last heard, on the other nodes holding some. A node
    /// learns the others' counts when it subscribes to the user, a NATS round trip after its
    /// first session of the user: that session (and any racing it) is admitted unseen.
    fn user_sessions_everywhere(&self, user: &UserKey) -> usize {
        let elsewhere = self.users.get(user).map_or(0, |s| s.elsewhere.values().map(|n| *n as usize).sum());
        self.local.user_sessions(user) + elsewhere
    }

    /// A node died: its session counts no longer hold.
    fn forget_node(&self, node: &str) {
        for mut sub in self.users.iter_mut() {
            sub.elsewhere.remove(node);
        }
    }

    /// Sends the REST calls counted here to the other nodes, every [`LIMITS_EVERY`].
    async fn limits_out(self: Arc<Self>, rate: Arc<RateLimiter>) {
        let mut tick = tokio::time::interval(LIMITS_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let unsent = rate.take_unsent();
            for chunk in unsent.chunks(HITS_PER_MESSAGE) {
                let hits = chunk.iter().map(|u| (u.key.0, u.key.1.as_str().to_owned(), u.key.2.clone(), u.window, u.calls)).collect();
                if let Ok(payload) = serde_json::to_vec(&wire::Hits { hits }) {
                    self.forwarder.publish(self.subjects.limits(), payload);
                }
            }
        }
    }

    /// The other nodes' REST calls, added to this node's windows.
    async fn limits_in(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(m) = sub.next().await {
            let (Some(rate), Ok(hits)) = (self.rate.get(), serde_json::from_slice::<wire::Hits>(&m.payload)) else { continue };
            for (ip, method, route, window, calls) in hits.hits {
                let Ok(method) = axum::http::Method::from_bytes(method.as_bytes()) else { continue };
                rate.mirror(Unsent { key: (ip, method, route), window, calls });
            }
        }
    }

    /// Answers to this node's remote commands, by call id (the reply subject's last token).
    async fn reply_loop(self: Arc<Self>, mut sub: async_nats::Subscriber) {
        while let Some(msg) = sub.next().await {
            let Some(id) = msg.subject.rsplit('.').next().and_then(|t| t.parse::<u64>().ok()) else { continue };
            if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                // Nobody holds the device.
                if let Some((_, mut call)) = self.calls.remove(&id)
                    && let Some(tx) = call.accept.take()
                {
                    let _ = tx.send(Err(RouteError::Offline));
                }
                continue;
            }
            let Ok(reply) = serde_json::from_slice::<Reply>(&msg.payload) else { continue };
            match reply {
                Reply::Accepted { audience } => {
                    if let Some(mut call) = self.calls.get_mut(&id)
                        && let Some(tx) = call.accept.take()
                    {
                        let _ = tx.send(Ok(Arc::new(audience.into())));
                    }
                }
                Reply::Refused { why } => {
                    if let Some((_, mut call)) = self.calls.remove(&id)
                        && let Some(tx) = call.accept.take()
                    {
                        let _ = tx.send(Err(why.into()));
                    }
                }
                Reply::Ack { error, params } => {
                    if let Some((_, mut call)) = self.calls.remove(&id)
                        && let Some(tx) = call.ack.take()
                    {
                        let params = params.and_then(|p| RawValue::from_string(p).ok());
                        let _ = tx.send(Ack { error, params });
                    }
                }
                Reply::Gone => {
                    self.calls.remove(&id);
                }
            }
        }
    }

    /// Presence of devices on other nodes, sharing changes and failed secret checks on them.
    async fn broadcast_loop(
        self: Arc<Self>,
        mut presence: async_nats::Subscriber,
        mut acl: async_nats::Subscriber,
        mut checks: async_nats::Subscriber,
    ) {
        loop {
            tokio::select! {
                m = presence.next() => {
                    let Some(m) = m else { return };
                    let Ok(p) = serde_json::from_slice::<wire::Presence>(&m.payload) else { continue };
                    let id = DeviceId::new(p.deviceid);
                    if p.node.is_empty() {
                        self.elsewhere.remove_if(&id, |_, (_, e)| *e <= p.epoch);
                    } else if p.node != self.node() {
                        self.claimed_elsewhere(id, p.node, p.epoch);
                    }
                }
                m = checks.next() => {
                    let Some(m) = m else { return };
                    let Ok(check) = serde_json::from_slice::<wire::Check>(&m.payload) else { continue };
                    if let Some(lockout) = self.lockout.get() {
                        lockout.mirror(&check.account, check.event);
                    }
                }
                m = acl.next() => {
                    let Some(m) = m else { return };
                    let Ok(change) = serde_json::from_slice::<wire::AclChange>(&m.payload) else { continue };
                    let devices: Vec<DeviceId> = change.devices.into_iter().map(DeviceId::new).collect();
                    if let Some(acl) = self.acl.get() {
                        acl.apply(&devices).await;
                    }
                }
            }
        }
    }

    /// A command for a device on another node (or on none).
    fn command_away(&self, caller: &UserKey, cmd: Command<'_>) -> Routed {
        // Online nowhere, as far as the announcements tell: the offline path, without a round trip.
        let Some(subject) = self.elsewhere.get(cmd.deviceid).map(|h| self.subjects.node(&h.0)) else {
            return Routed::Here(Err(RouteError::Offline));
        };
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let ask = ToNode::Cmd {
            dev: cmd.deviceid.as_str().to_owned(),
            caller: caller.as_str().to_owned(),
            kind: cmd.kind.into(),
            seq: cmd.sequence.get().to_owned(),
            params: cmd.params.get().to_owned(),
            ms: self.settings.ack_timeout.as_millis() as u64,
        };
        let Ok(payload) = serde_json::to_vec(&ask) else { return Routed::Here(Err(RouteError::Busy)) };
        let (accept_tx, accept_rx) = oneshot::channel();
        let (ack_tx, ack_rx) = oneshot::channel();
        self.calls.insert(id, Call { accept: Some(accept_tx), ack: Some(ack_tx) });
        let guard = CallGuard { calls: self.calls.clone(), id };
        let out = Out::Request { subject, reply: self.subjects.reply(id), payload: payload.into() };
        if !self.forwarder.send(out) {
            return Routed::Here(Err(RouteError::Busy));
        }
        self.metrics.cluster_requests.fetch_add(1, Ordering::Relaxed);
        let wait = self.settings.ack_timeout;
        Routed::Away(Box::pin(async move {
            match tokio::time::timeout(wait, accept_rx).await {
                Ok(Ok(Ok(audience))) => Ok(PendingAck::remote(ack_rx, Box::new(guard), audience)),
                Ok(Ok(Err(e))) => Err(e),
                // No answer at all: the holder died with the request in flight.
                _ => Err(RouteError::Offline),
            }
        }))
    }

    fn publish_close(&self, user: &UserKey, close: wire::Close) {
        let mut payload = vec![wire::CLOSE];
        if serde_json::to_writer(&mut payload, &close).is_ok() {
            self.forwarder.publish(self.subjects.user(user), payload);
        }
    }
}

impl Router for ClusterRouter {
    fn attach_app(&self, user: &UserKey, session: SessionHandle) {
        self.inner.local.attach_app(user, session);
        if self.inner.users.contains_key(user) {
            let _ = self.inner.counts.send((user.clone(), false));
        } else {
            // The subscription sends the count (and asks for the others').
            let _ = self.inner.control.send(Control::UserJoined(user.clone()));
        }
    }

    fn detach_app(&self, user: &UserKey, session: SessionId) {
        self.inner.local.detach_app(user, session);
        let _ = self.inner.counts.send((user.clone(), false));
        if self.inner.local.user_sessions(user) == 0 {
            let (control, user) = (self.inner.control.clone(), user.clone());
            tokio::spawn(async move {
                tokio::time::sleep(USER_LINGER).await;
                let _ = control.send(Control::UserMaybeGone(user));
            });
        }
    }

    fn attach_device(&self, device: DeviceAttach) {
        let id = device.deviceid.clone();
        self.inner.local.attach_device(device);
        let _ = self.inner.control.send(Control::Claim(id));
    }

    fn detach_device(&self, deviceid: &DeviceId, session: SessionId) -> Option<String> {
        let unsaved = self.inner.local.detach(deviceid, session)?;
        let _ = self.inner.control.send(Control::Release(deviceid.clone()));
        unsaved
    }

    fn command(&self, caller: &UserKey, cmd: Command<'_>) -> Routed {
        // Local first, with one registry lookup: only a device that is not here goes to NATS
        // (a device here whose session just closed answers offline as on one node).
        match self.inner.local.command_here(caller, cmd) {
            Err(RouteError::Offline) if !self.inner.local.holds(cmd.deviceid) => self.inner.command_away(caller, cmd),
            routed => Routed::Here(routed),
        }
    }

    fn ack(&self, deviceid: &DeviceId, sequence: &str, ack: Ack) -> bool {
        self.inner.local.ack(deviceid, sequence, ack)
    }

    fn echo_command(&self, audience: &Audience, deviceid: &DeviceId, params: &RawValue, except: Option<SessionId>) {
        self.inner.local.echo_command(audience, deviceid, params, except);
    }

    fn report(
        &self,
        deviceid: &DeviceId,
        session: SessionId,
        delta: BTreeMap<String, &RawValue>,
        params: &RawValue,
    ) -> Result<Option<Arc<Audience>>, StateTooLarge> {
        self.inner.local.report(deviceid, session, delta, params)
    }

    fn fan_out_to_audience(&self, deviceid: &DeviceId, frame: Utf8Bytes) -> bool {
        self.inner.local.fan_out_to_audience(deviceid, frame)
    }

    fn live_params(&self, deviceid: &DeviceId, keys: &[String]) -> Option<String> {
        self.inner.local.live_params(deviceid, keys)
    }

    fn audience(&self, deviceid: &DeviceId) -> Option<Arc<Audience>> {
        self.inner.local.audience(deviceid)
    }

    fn set_audience(&self, deviceid: &DeviceId, audience: Option<Audience>) -> bool {
        self.inner.local.set_audience(deviceid, audience)
    }

    fn online_devices(&self) -> Vec<DeviceId> {
        self.inner.local.online_devices()
    }

    fn online_elsewhere(&self, deviceid: &DeviceId) -> bool {
        !self.inner.local.holds(deviceid) && self.inner.elsewhere.contains_key(deviceid)
    }

    fn sharing_changed(&self, devices: &[DeviceId]) {
        let change = wire::AclChange { devices: devices.iter().map(|d| d.as_str().to_owned()).collect() };
        if let Ok(payload) = serde_json::to_vec(&change) {
            self.inner.forwarder.publish(self.inner.subjects.acl(), payload);
        }
    }

    fn device_view(&self, deviceid: &DeviceId) -> Option<DeviceView> {
        self.inner.local.device_view(deviceid)
    }

    fn notify_device(&self, deviceid: &DeviceId, frame: Utf8Bytes) -> bool {
        if self.inner.local.holds(deviceid) {
            return self.inner.local.notify_device(deviceid, frame);
        }
        let Some(subject) = self.inner.elsewhere.get(deviceid).map(|h| self.inner.subjects.node(&h.0)) else {
            return false;
        };
        let msg = ToNode::Notify { dev: deviceid.as_str().to_owned(), frame: frame.as_str().to_owned() };
        let payload = serde_json::to_vec(&msg).unwrap_or_default();
        self.inner.forwarder.publish(subject, payload)
    }

    /// Session ids are a node's own: a session on another node is not reached (the user's other
    /// sessions still hear the echo).
    fn tell_session(&self, user: &UserKey, session: SessionId, frame: Utf8Bytes) -> bool {
        self.inner.local.tell_session(user, session, frame)
    }

    fn user_sessions(&self, user: &UserKey) -> usize {
        self.inner.local.user_sessions(user)
    }

    fn user_sessions_everywhere(&self, user: &UserKey) -> usize {
        self.inner.user_sessions_everywhere(user)
    }

    fn sessions(&self) -> Vec<SessionHandle> {
        self.inner.local.sessions()
    }

    fn close_sessions(&self, user: &UserKey, credential: u64, reason: CloseReason) -> usize {
        self.inner.publish_close(user, wire::Close { credential: Some(credential), keep: 0, reason: reason as u8 });
        self.inner.local.close_sessions(user, credential, reason)
    }

    fn close_user_sessions(&self, user: &UserKey, keep: u64, reason: CloseReason) -> usize {
        self.inner.publish_close(user, wire::Close { credential: None, keep, reason: reason as u8 });
        self.inner.local.close_user_sessions(user, keep, reason)
    }
}
