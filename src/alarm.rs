//! Threshold alarms: owners set rules on a device (`/v2/device/alarm-rule`); a device report that
//! crosses one raises an alarm to every app session of the owner and sharees, to the message
//! centre and to every WeChat user bound to the device.
//!
//! Evaluation never blocks routing. The device session, right after the router fanned its report
//! out, hands the report to [`Alarms::offer`]: a read of the in-memory rule table and, for a device
//! with rules, a `try_send` into a bounded queue ([`QUEUE`]; when full the report is not evaluated,
//! and counted in `alarm_reports_dropped`). One evaluator task ([`run`]) owns the queue's other end
//! and the per-rule state ([`rule::Watch`]). On a crossing it
//!
//! 1. fans `{"action":"alarm","deviceid","apikey","params":{"param","value","op","threshold"},"ts"}`
//!    out through [`crate::router::Router::fan_out_to_audience`] (queued, never awaited);
//! 2. files `alarmNotify_v2` for the owner and each sharee at once (not in the state writer's
//!    batch), in a task of its own, when the device keeps `alarmNotify` on;
//! 3. pushes the alarm to every bound WeChat user through `pushappmsg` in background tasks with
//!    bounded retries ([`crate::wechat::Work::push`]), so a slow or absent WeChat delays nothing.
//!
//! Rules live in the store; [`Alarms`] keeps them in memory, loaded at start and reloaded for a
//! device after each change its owner makes. Changing a device's rules resets their state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::audience::Audience;
use crate::clock::{now_millis, now_secs};
use crate::ids::DeviceId;
use crate::protocol::{self, Outbound};
use crate::router::Router;
use crate::store::{Notice, Operation, Store, StoreError};
use crate::wechat;

pub mod rule;
#[cfg(test)]
mod tests;

pub use rule::{MAX_RULES, Op, Rule};

/// Reports that may wait for the evaluator; beyond this they are not evaluated.
pub const QUEUE: usize = 4096;

/// A report handed to the evaluator.
pub struct Report {
    deviceid: DeviceId,
    audience: Arc<Audience>,
    params: Box<RawValue>,
    at: Instant,
}

/// The rule table and the evaluator queue's sending end (the evaluator task, [`run`], holds the
/// receiving end).
pub struct Alarms {
    queue: mpsc::Sender<Report>,
    rules: RwLock<HashMap<DeviceId, Arc<[Rule]>>>,
    pub raised: AtomicU64,
    pub dropped: AtomicU64,
}

/// The evaluator's end of the queue, handed to [`run`].
pub struct Queue(mpsc::Receiver<Report>);

impl Alarms {
    /// An empty table and its queue; [`Alarms::load`] fills the table.
    pub fn new() -> (Alarms, Queue) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let alarms = Alarms { queue: tx, rules: RwLock::default(), raised: AtomicU64::new(0), dropped: AtomicU64::new(0) };
        (alarms, Queue(rx))
    }

    /// Loads every device's rules (at start).
    pub async fn load(&self, store: &Store) -> Result<(), StoreError> {
        let mut table = HashMap::new();
        for (id, text) in store.all_alarm_rules().await? {
            match parse(&text) {
                Some(rules) if !rules.is_empty() => {
                    table.insert(id, rules);
                }
                Some(_) => {}
                None => tracing::warn!(device = %id, "stored alarm rules are unreadable; ignored"),
            }
        }
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = table;
        Ok(())
    }

    /// Reloads one device's rules after its owner changed them.
    pub async fn reload(&self, store: &Store, deviceid: &DeviceId) -> Result<(), StoreError> {
        let rules = store.alarm_rules(deviceid.as_str()).await?.as_deref().and_then(parse).filter(|r| !r.is_empty());
        let mut table = self.rules.write().unwrap_or_else(|e| e.into_inner());
        match rules {
            Some(r) => table.insert(deviceid.clone(), r),
            None => table.remove(deviceid),
        };
        Ok(())
    }

    /// A device's rules as the evaluator judges by them.
    pub fn rules_of(&self, deviceid: &DeviceId) -> Option<Arc<[Rule]>> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).get(deviceid).cloned()
    }

    /// A report the router fanned out: queued for the evaluator when the device has rules.
    /// Never waits.
    pub fn offer(&self, deviceid: &DeviceId, audience: &Arc<Audience>, params: &RawValue) {
        if !self.rules.read().unwrap_or_else(|e| e.into_inner()).contains_key(deviceid) {
            return;
        }
        let report = Report { deviceid: deviceid.clone(), audience: audience.clone(), params: params.to_owned(), at: Instant::now() };
        if self.queue.try_send(report).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(dropped = n + 1, "alarm queue full; reports dropped without evaluation");
            }
        }
    }
}

/// The stored JSON array of rules; `None` when unreadable.
fn parse(text: &str) -> Option<Arc<[Rule]>> {
    serde_json::from_str::<Vec<Rule>>(text).ok().map(Arc::from)
}

/// One device's rules and their state, reset when the rules change.
struct DeviceWatch {
    rules: Arc<[Rule]>,
    watches: Vec<rule::Watch>,
}

/// What the evaluator task needs of the node (the parts of the hub it uses, handed over at
/// start, so this module sits below the hub rather than beside it).
pub struct Evaluator {
    pub alarms: Arc<Alarms>,
    pub router: Arc<dyn Router>,
    pub store: Store,
    pub tasks: tokio_util::task::TaskTracker,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub wechat_work: wechat::Work,
}

/// The evaluator: takes reports off the queue until shutdown, and raises what crosses a rule.
pub async fn run(hub: Arc<Evaluator>, queue: Queue) {
    let Queue(mut rx) = queue;
    let mut devices: HashMap<DeviceId, DeviceWatch> = HashMap::new();
    loop {
        let report = tokio::select! {
            r = rx.recv() => r,
            _ = hub.shutdown.cancelled() => None,
        };
        let Some(report) = report else { break };
        let Some(rules) = hub.alarms.rules_of(&report.deviceid) else {
            devices.remove(&report.deviceid);
            continue;
        };
        let watch = devices.entry(report.deviceid.clone()).or_insert_with(|| DeviceWatch { rules: rules.clone(), watches: Vec::new() });
        if !Arc::ptr_eq(&watch.rules, &rules) || watch.watches.len() != rules.len() {
            *watch = DeviceWatch { watches: vec![rule::Watch::default(); rules.len()], rules: rules.clone() };
        }
        let Ok(params) = serde_json::from_str::<Map<String, Value>>(report.params.get()) else { continue };
        for (rule, state) in rules.iter().zip(watch.watches.iter_mut()) {
            let Some(value) = params.get(&rule.param) else { continue };
            let Some(n) = rule::numeric(value) else { continue };
            if state.observe(rule, n, report.at) {
                raise(&hub, &report, rule, value);
            }
        }
    }
}

/// The alarm's `params`: `{"param","value","op","threshold"}`.
pub fn alarm_params(rule: &Rule, value: &Value) -> Value {
    json!({ "param": rule.param, "value": value, "op": rule.op.symbol(), "threshold": rule.threshold })
}

/// Delivers one alarm: to the audience's sessions now, to the message centre and WeChat users
/// in tasks the node tracks.
fn raise(hub: &Arc<Evaluator>, report: &Report, rule: &Rule, value: &Value) {
    hub.alarms.raised.fetch_add(1, Ordering::Relaxed);
    let params = alarm_params(rule, value);
    let ts = now_secs() as u64;
    let raw = protocol::raw(params.to_string());
    let frame = Outbound {
        action: Some("alarm"),
        deviceid: Some(report.deviceid.as_str()),
        apikey: Some(report.audience.owner.as_str()),
        params: Some(&raw),
        ts: Some(ts),
        ..Default::default()
    }
    .to_text();
    hub.router.fan_out_to_audience(&report.deviceid, frame.into());
    tracing::info!(device = %report.deviceid, param = %rule.param, op = rule.op.symbol(), "threshold alarm raised");

    if report.audience.settings.alarm_notify {
        let body = json!({ "deviceid": report.deviceid.as_str(), "params": params, "alarmType": "threshold", "opsTime": now_millis() });
        let notices =
            report.audience.members().map(|to| Notice { to: to.clone(), msg_type: "alarmNotify_v2", message: body.clone() }).collect();
        let op = Operation {
            deviceid: report.deviceid.clone(),
            user_agent: "device",
            ops_switchs: String::new(),
            request: String::new(),
            actor: None,
            ops_time: now_millis(),
            history: false,
            notices,
        };
        let store = hub.store.clone();
        hub.tasks.spawn(async move {
            if let Err(e) = store.record_operations(std::slice::from_ref(&op)).await {
                tracing::error!(error = %e, device = %op.deviceid, "filing an alarm in the message centre failed");
            }
        });
    }

    let msg = json!({ "type": "alarm", "deviceid": report.deviceid.as_str(), "params": params, "ts": ts }).to_string();
    let (task_hub, deviceid) = (hub.clone(), report.deviceid.clone());
    hub.tasks.spawn(async move {
        match task_hub.store.wechat_listeners(deviceid.as_str()).await {
            Ok(listeners) => {
                for l in listeners {
                    task_hub.wechat_work.push(&l.appid, &l.push_token, msg.clone());
                }
            }
            Err(e) => tracing::error!(error = %e, device = %deviceid, "reading the WeChat users of a device failed"),
        }
    });
}
