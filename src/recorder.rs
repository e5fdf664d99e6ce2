//! The recorder: what the live hub writes to the store, off the routing path. [`Recorder`] saves
//! the device states the router marked changed and files events (history rows, `opsNotify_v2` and
//! `alarmNotify_v2` notices), both in one transaction per gathered group ([`commit`]).
//!
//! # Group commit
//!
//! A device's report is acknowledged only once the transaction holding its state (and its history
//! row) is committed: the session takes a [`Commit`] with the report and writes `{"error":0}` when
//! it resolves, `{"error":500}` when the store failed. The writer commits as soon as an entry
//! waits (after `--commit-window-ms`, 0 by default, when set), and whatever queues while a
//! transaction is under way joins the next one, so one transaction serves every report that
//! arrived meanwhile.
//! An app's command that the device acked and that changed its state is answered the same way,
//! after the commit that holds the new state.
//!
//! # Events
//!
//! Sessions and the command service hand the recorder a small [`Event`] through a bounded queue ([`HISTORY_QUEUE`] entries;
//! when full the entry is dropped and counted in `history_dropped`) and never wait for the store.
//! An event nobody waits for does not wake the writer (see [`commit`]).
//! What is filed, decided from the device's settings as the router last loaded them:
//!
//! - `opsHistory` on (default): every app command routed to the device (`update`, `query`,
//!   `upgrade`; `userAgent` "app", `opsAccount` the user's email, else phone, else apikey) and
//!   and every command an operator sent from the dashboard (`userAgent` "operator", `opsAccount`
//!   `operator:<email>`), and every device state report (`userAgent` "device", `opsAccount` ""). `request` is the JSON text
//!   `{"action":…,"userAgent":…,"params":…}` with the params exactly as sent; `opsSwitchs` lists
//!   the channels the params set, comma-separated: `switch` for a single-channel `switch` and
//!   `outlet<N>` for each entry of `switches` (e.g. `outlet0,outlet2`), "" when none. A command
//!   queued for an offline device is filed when it is delivered, like any other; one dropped
//!   undelivered (expired, or its sender lost the right to send it) is filed with
//!   `"dropped":"expired"` or `"dropped":"denied"` added to `request`.
//! - `opsNotify` on (default off): an `opsNotify_v2` message for the owner (sharees are not told:
//!   the setting is the owner's) for each app `update`/`upgrade` the device acked with error 0 and
//!   each device report. Body: `deviceid`, `deviceName`, `userAgent`, `params`, `opsTime`, and
//!   `opsAccount` for app operations.
//! - `alarmNotify` on (default): an `alarmNotify_v2` message for the owner and every sharee for
//!   each device report that carries an alarm: a key `alarmType` (any value but null), or a key
//!   `alarm` whose value is not null, false, 0, "", "off" or "0". Body: `deviceid`, `deviceName`,
//!   `params`, `alarmType` (when reported), `opsTime`.
//!
//! Messages are filed under the family where each recipient keeps the device. A clean shutdown
//! writes everything queued before the store closes.
//!
//! # Bounds
//!
//! Params longer than [`HistoryBounds::params_max`] are recorded as a marker
//! `{"_truncated":{"bytes":N,"keys":[…]}}` (their size and top-level keys) rather than in full, and
//! [`bounds`] keeps each device's history, and all of it, within its rows and bytes, oldest first.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use serde_json::value::RawValue;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::audience::Audience;
use crate::clock::now_millis;
use crate::device_state::DirtyQueue;
use crate::ids::{DeviceId, UserKey};
use crate::metrics::Metrics;
use crate::protocol::CommandKind;
use crate::store::{Actor, Notice, OPERATOR_AGENT, Operation, Store};

mod bounds;
mod commit;

pub use bounds::HistoryBounds;

/// Entries (events and commit requests) that may wait for the writer; beyond this an event is
/// dropped and counted, and a commit request fails at once.
pub const HISTORY_QUEUE: usize = 16_384;
/// How long history is kept; older entries are removed hourly.
pub const HISTORY_RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// Receives the states the router marked changed (through a [`DirtyQueue`], each at most once
/// while it is dirty, so that queue is bounded by the number of online devices) and entries to
/// file (bounded by [`HISTORY_QUEUE`]).
#[derive(Clone)]
pub struct Recorder {
    queue: Arc<commit::Queue>,
    store: Store,
    metrics: Arc<Metrics>,
}

/// How the recorder writes.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub bounds: HistoryBounds,
    /// How long a group gathers after its first entry before its transaction starts.
    pub commit_window: Duration,
}

/// What the sessions queue: an event to file, a request to be told when everything queued before
/// it (and the states marked before it) is committed, or both.
struct Entry {
    event: Option<Event>,
    done: Option<oneshot::Sender<bool>>,
}

/// Resolves once the transaction holding what was queued before it is committed: `true`, or
/// `false` when it failed (the store failed, the queue was full or the recorder stopped).
pub struct Commit(Option<oneshot::Receiver<bool>>);

impl Commit {
    fn failed() -> Commit {
        Commit(None)
    }

    /// Waits for the commit; cancel-safe (awaits by reference).
    pub async fn committed(&mut self) -> bool {
        match &mut self.0 {
            Some(rx) => rx.await.unwrap_or(false),
            None => false,
        }
    }
}

/// An operation as a session hands it over: raw parts only, composed off the routing path.
pub struct Event {
    deviceid: DeviceId,
    audience: Arc<Audience>,
    source: Source,
    params: Box<RawValue>,
    at: i64,
    history: bool,
    ops_notice: bool,
    /// Why a queued command was dropped without reaching the device, for its history row.
    dropped: Option<&'static str>,
}

enum Source {
    App { actor: Actor, kind: CommandKind },
    Device,
}

impl Recorder {
    /// Starts the writer; the router marks changed states on the returned [`DirtyQueue`]. Once
    /// `stop` fires it commits everything still queued and ends; stop it only after the sessions
    /// that mark devices and record operations have ended.
    pub fn start(
        store: Store,
        metrics: Arc<Metrics>,
        options: Options,
        stop: CancellationToken,
    ) -> (Recorder, DirtyQueue, tokio::task::JoinHandle<()>) {
        let (dirty, dirty_rx) = DirtyQueue::new();
        let queue = Arc::new(commit::Queue::default());
        let writer = commit::Writer::new(store.clone(), metrics.clone(), options, dirty.clone(), queue.clone(), Handle::current());
        // A thread of its own, not `spawn_blocking`: a blocking task that never ends would keep a
        // paused test clock from advancing, and would hold a slot of the blocking pool for good.
        let (ended, ended_rx) = oneshot::channel::<()>();
        let refuse = queue.clone();
        let spawned = std::thread::Builder::new().name("recorder".into()).spawn(move || {
            writer.run(dirty_rx);
            let _ = ended.send(());
        });
        if let Err(e) = spawned {
            // Every report and acked update is then answered 500 rather than left waiting.
            tracing::error!(error = %e, "the recorder's thread did not start: nothing will be stored");
            refuse.stop();
        }
        let task = tokio::spawn(async move {
            let _ = ended_rx.await;
        });
        let stopping = queue.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            stopping.stop();
        });
        (Recorder { queue, store, metrics }, dirty, task)
    }

    /// An app command was routed to a device: records it when the device keeps history.
    pub fn command_routed(&self, deviceid: &DeviceId, audience: &Arc<Audience>, actor: &Actor, kind: CommandKind, params: &RawValue) {
        if audience.settings.ops_history {
            self.push(Event {
                deviceid: deviceid.clone(),
                audience: audience.clone(),
                source: Source::App { actor: actor.clone(), kind },
                params: params.to_owned(),
                at: now_millis(),
                history: true,
                ops_notice: false,
                dropped: None,
            });
        }
    }

    /// A command queued for an offline device ([`crate::offline`]) was dropped before the device
    /// acked it (`why`: `expired`, or `denied` when its sender lost the right to send it): files
    /// a history row when the device keeps history.
    pub fn command_dropped(&self, deviceid: &DeviceId, audience: &Arc<Audience>, user: &UserKey, params: &RawValue, why: &'static str) {
        if audience.settings.ops_history {
            self.push(Event {
                deviceid: deviceid.clone(),
                audience: audience.clone(),
                source: Source::App { actor: Actor::User(user.clone()), kind: CommandKind::Update },
                params: params.to_owned(),
                at: now_millis(),
                history: true,
                ops_notice: false,
                dropped: Some(why),
            });
        }
    }

    /// The device acked an app command with error 0: files the owner's operation notice when
    /// the device has `opsNotify` on (for `update` and `upgrade`; a query changes nothing).
    pub fn command_done(&self, deviceid: &DeviceId, audience: &Arc<Audience>, actor: &Actor, kind: CommandKind, params: &RawValue) {
        if audience.settings.ops_notify && kind != CommandKind::Query {
            self.push(Event {
                deviceid: deviceid.clone(),
                audience: audience.clone(),
                source: Source::App { actor: actor.clone(), kind },
                params: params.to_owned(),
                at: now_millis(),
                history: false,
                ops_notice: true,
                dropped: None,
            });
        }
    }

    /// A device reported state (already merged into its live state, which the router marked for
    /// saving): records it and files notices as its settings ask, when it has an audience. The
    /// returned [`Commit`] resolves once the state and the history row are committed.
    pub fn reported(&self, deviceid: &DeviceId, audience: Option<Arc<Audience>>, params: &RawValue) -> Commit {
        let event = audience.and_then(|audience| {
            let s = audience.settings;
            // The alarm check proper runs in the writer; this only spares it reports that cannot be one.
            let maybe_alarm = s.alarm_notify && params.get().contains("\"alarm");
            (s.ops_history || s.ops_notify || maybe_alarm).then(|| Event {
                deviceid: deviceid.clone(),
                audience,
                source: Source::Device,
                params: params.to_owned(),
                at: now_millis(),
                history: s.ops_history,
                ops_notice: s.ops_notify,
                dropped: None,
            })
        });
        self.commit_with(event)
    }

    /// A commit point: resolves once everything queued and every state marked before this call
    /// is committed.
    pub fn commit(&self) -> Commit {
        self.commit_with(None)
    }

    fn commit_with(&self, event: Option<Event>) -> Commit {
        let (tx, rx) = oneshot::channel();
        match self.queue.push(Entry { event, done: Some(tx) }) {
            Ok(()) => Commit(Some(rx)),
            Err(entry) => {
                if entry.event.is_some_and(|e| e.history) {
                    self.metrics.history_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Commit::failed()
            }
        }
    }

    fn push(&self, event: Event) {
        if self.queue.push(Entry { event: Some(event), done: None }).is_err() {
            self.metrics.history_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Saves one device's state at once (when its session ends, so a quick reconnect reads it).
    pub async fn save_now(&self, deviceid: &DeviceId, state: String) {
        if let Err(e) = self.store.save_params(&[(deviceid.clone(), state)]).await {
            tracing::error!(error = %e, device = %deviceid, "saving device state failed");
        }
    }
}

/// What one operation files; `None` when nothing (e.g. a report that turned out not to be an alarm
/// on a device without history). Params longer than `params_max` bytes go into the history row
/// as a marker (see [`truncated_params`]).
fn compose(op: Event, params_max: usize, metrics: &Metrics) -> Option<Operation> {
    let params: Value = serde_json::from_str(op.params.get()).unwrap_or(Value::Null);
    let (user_agent, action, actor) = match &op.source {
        Source::App { actor: actor @ Actor::User(_), kind } => ("app", kind.action(), Some(actor.clone())),
        Source::App { actor: actor @ Actor::Operator(_), kind } => (OPERATOR_AGENT, kind.action(), Some(actor.clone())),
        Source::Device => ("device", "update", None),
    };
    let mut notices = Vec::new();
    if op.ops_notice {
        let mut body = serde_json::json!({ "deviceid": op.deviceid.as_str(), "userAgent": user_agent, "params": params, "opsTime": op.at });
        if let Source::App { kind, .. } = &op.source {
            body["action"] = Value::from(kind.action());
        }
        notices.push(Notice { to: op.audience.owner.clone(), msg_type: "opsNotify_v2", message: body });
    }
    if matches!(op.source, Source::Device) && op.audience.settings.alarm_notify && is_alarm(&params) {
        let mut body = serde_json::json!({ "deviceid": op.deviceid.as_str(), "params": params, "opsTime": op.at });
        if let Some(t) = params.get("alarmType").filter(|t| !t.is_null()) {
            body["alarmType"] = t.clone();
        }
        for to in op.audience.members() {
            notices.push(Notice { to: to.clone(), msg_type: "alarmNotify_v2", message: body.clone() });
        }
    }
    if !op.history && notices.is_empty() {
        return None;
    }
    let marker = (op.history && op.params.get().len() > params_max).then(|| {
        metrics.history_truncated.fetch_add(1, Ordering::Relaxed);
        truncated_params(&params, op.params.get().len())
    });
    let recorded = marker.as_deref().unwrap_or(op.params.get());
    let request = match op.dropped {
        None => format!(r#"{{"action":"{action}","userAgent":"{user_agent}","params":{recorded}}}"#),
        Some(why) => format!(r#"{{"action":"{action}","userAgent":"{user_agent}","params":{recorded},"dropped":"{why}"}}"#),
    };
    Some(Operation {
        deviceid: op.deviceid,
        user_agent,
        ops_switchs: switch_channels(&params),
        request,
        actor,
        ops_time: op.at,
        history: op.history,
        notices,
    })
}

/// Most bytes of key names a truncation marker lists.
const MARKER_KEYS_BYTES: usize = 256;

/// What history records instead of params too long to keep every time:
/// `{"_truncated":{"bytes":N,"keys":[…]}}`, the params' size as sent and their top-level keys (as
/// many as fit in [`MARKER_KEYS_BYTES`]; `"more":true` when some were left out).
pub fn truncated_params(params: &Value, bytes: usize) -> String {
    let mut keys = Vec::new();
    let mut room = MARKER_KEYS_BYTES;
    let mut more = false;
    for k in params.as_object().into_iter().flat_map(|o| o.keys()) {
        if k.len() > room {
            more = true;
            break;
        }
        room -= k.len();
        keys.push(k.as_str());
    }
    let mut marker = serde_json::json!({ "bytes": bytes, "keys": keys });
    if more {
        marker["more"] = Value::Bool(true);
    }
    serde_json::json!({ "_truncated": marker }).to_string()
}

/// The channels params set: `switch` for a single-channel switch, `outlet<N>` per `switches` entry.
pub fn switch_channels(params: &Value) -> String {
    let mut channels: Vec<String> = Vec::new();
    if params.get("switch").is_some() {
        channels.push("switch".to_owned());
    }
    if let Some(outlets) = params.get("switches").and_then(Value::as_array) {
        for o in outlets {
            if let Some(n) = o.get("outlet").and_then(Value::as_i64) {
                channels.push(format!("outlet{n}"));
            }
        }
    }
    channels.join(",")
}

/// Whether a device report carries an alarm (see the module's doc).
pub fn is_alarm(params: &Value) -> bool {
    if params.get("alarmType").is_some_and(|t| !t.is_null()) {
        return true;
    }
    match params.get("alarm") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::String(s)) => !matches!(s.as_str(), "" | "off" | "0"),
        Some(_) => true,
    }
}
