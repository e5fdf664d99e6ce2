//! What the dashboard shows live, and the one thing it does: the event stream
//! (`/dashboard/api/events`, Server-Sent Events), a device's page data and an operator's command.
//!
//! The stream sends, in this order: `history` (every kept sample), then as they come `sample`
//! (each new one), `devices` (the online devices matching `q`, at most [`MAX_LISTED`], whenever
//! the list changes) and, with `device=ID`, `device` (that device's live view and state, when it
//! changes). It looks every [`POLL`] and checks the login every [`RECHECK`]; a login that ended
//! gets `logout` and the stream ends. Nothing here waits on a peer: the router answers from
//! memory and the store is read only for names, owners and history.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::login::{Operator, api_error};
use super::{Dashboard, Labeled};
use crate::clock::now_millis;
use crate::command;
use crate::ids::DeviceId;
use crate::protocol::CommandKind;
use crate::router::{Command, DeviceView, Outcome, RouteError};
use crate::store::DeviceLabel;
use crate::sync::lock;

/// Most devices one `devices` event lists.
pub const MAX_LISTED: usize = 200;
/// Longest state text a list row carries (the device's page has all of it).
const LIST_STATE_CHARS: usize = 240;
/// How often the stream looks for changes.
const POLL: Duration = Duration::from_millis(250);
/// How often the stream checks that its login still holds.
const RECHECK: Duration = Duration::from_secs(30);
/// History entries a device's page shows.
const HISTORY_SHOWN: i64 = 50;

#[derive(Deserialize)]
pub struct Watch {
    /// Search text for the device list: part of an id, name, model or owner.
    #[serde(default)]
    q: String,
    /// A device whose page is open.
    #[serde(default)]
    device: Option<String>,
}

/// One online device as the list shows it.
#[derive(Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Row {
    id: String,
    name: String,
    model: String,
    product_model: String,
    owner: String,
    /// The live state as JSON text, cut to [`LIST_STATE_CHARS`].
    state: String,
    /// Milliseconds since the epoch.
    since: i64,
    last_seen: i64,
    pending: usize,
}

#[derive(Serialize, PartialEq)]
struct Listing {
    /// Devices online on this node.
    online: usize,
    /// Of those, how many match the search.
    matched: usize,
    rows: Vec<Row>,
}

/// Cuts `text` to at most `max` characters, marking the cut.
fn cut(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

impl Dashboard {
    /// Reads from the store the labels of online devices not seen since they attached.
    async fn refresh_labels(&self, online: &[DeviceView]) {
        let missing: Vec<(&str, i64)> = {
            let labels = lock(&self.labels);
            online
                .iter()
                .filter(|v| labels.get(&v.deviceid).is_none_or(|l| l.since != v.since))
                .map(|v| (v.deviceid.as_str(), v.since))
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        let ids: Vec<&str> = missing.iter().map(|(id, _)| *id).collect();
        match self.hub.store.device_labels(&ids).await {
            Ok(found) => {
                let mut found: HashMap<String, DeviceLabel> = found.into_iter().map(|l| (l.deviceid.clone(), l)).collect();
                let mut labels = lock(&self.labels);
                for (id, since) in missing {
                    // A device without a stored record (a `tmpReg` one) is shown by its id alone.
                    let label = found.remove(id).unwrap_or_else(|| DeviceLabel { deviceid: id.to_owned(), ..Default::default() });
                    labels.insert(DeviceId::new(id), Labeled::new(since, label));
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading device labels failed"),
        }
    }

    /// The online devices matching `q` (case-insensitive, in id, name, model or owner), by id.
    async fn listing(&self, q: &str) -> Listing {
        let router = &self.hub.router;
        let views: Vec<DeviceView> = router.online_devices().iter().filter_map(|id| router.device_view(id)).collect();
        self.refresh_labels(&views).await;
        let q = q.trim().to_lowercase();
        let (matched, shown): (usize, Vec<(usize, DeviceLabel)>) = {
            let labels = lock(&self.labels);
            let mut matched: Vec<usize> = (0..views.len())
                .filter(|&i| q.is_empty() || labels.get(&views[i].deviceid).is_some_and(|l| l.haystack.contains(&q)))
                .collect();
            matched.sort_unstable_by(|&a, &b| views[a].deviceid.cmp(&views[b].deviceid));
            let count = matched.len();
            matched.truncate(MAX_LISTED);
            let shown = matched
                .into_iter()
                .map(|i| {
                    let id = &views[i].deviceid;
                    (i, labels.get(id).map_or_else(|| DeviceLabel { deviceid: id.to_string(), ..Default::default() }, |l| l.label.clone()))
                })
                .collect();
            (count, shown)
        };
        let rows = shown
            .into_iter()
            .map(|(i, l)| {
                let v = &views[i];
                Row {
                    id: l.deviceid,
                    name: l.name,
                    model: l.model,
                    product_model: l.product_model,
                    owner: l.owner,
                    state: cut(router.live_params(&v.deviceid, &[]).unwrap_or_default(), LIST_STATE_CHARS),
                    since: v.since,
                    last_seen: v.last_seen,
                    pending: v.pending,
                }
            })
            .collect();
        Listing { online: views.len(), matched, rows }
    }

    /// One device's live part: online or not, its view and full state.
    fn live_device(&self, id: &DeviceId) -> Value {
        let router = &self.hub.router;
        match router.device_view(id) {
            Some(v) => serde_json::json!({
                "id": id.as_str(),
                "online": true,
                "since": v.since,
                "lastSeen": v.last_seen,
                "pending": v.pending,
                "owner": v.audience.as_ref().map(|a| a.owner.to_string()),
                "sharees": v.audience.as_ref().map_or(0, |a| a.sharees.len()),
                "state": router.live_params(id, &[]).and_then(|s| serde_json::from_str::<Value>(&s).ok()),
            }),
            None => serde_json::json!({ "id": id.as_str(), "online": false }),
        }
    }
}

fn event(name: &str, data: &impl Serialize) -> Event {
    Event::default().event(name).data(serde_json::to_string(data).unwrap_or_else(|_| "null".to_owned()))
}

/// What one stream remembers between looks.
struct Feed {
    /// The stream's place under [`super::MAX_STREAMS`], given back when it ends.
    _permit: tokio::sync::OwnedSemaphorePermit,
    dashboard: Arc<Dashboard>,
    operator: Operator,
    q: String,
    device: Option<DeviceId>,
    queued: VecDeque<Event>,
    last_sample: i64,
    last_listing: Option<Listing>,
    last_device: Option<Value>,
    checked: Instant,
    ended: bool,
}

impl Feed {
    /// Queues what changed since the last look; false once the stream should end.
    async fn look(&mut self) -> bool {
        if self.checked.elapsed() >= RECHECK {
            self.checked = Instant::now();
            if self.dashboard.hub.store.operator_session(&self.operator.token).await.ok().flatten().is_none() {
                self.queued.push_back(Event::default().event("logout").data("{}"));
                self.ended = true;
                return true;
            }
        }
        if let Some(s) = self.dashboard.samples.latest().filter(|s| s.t != self.last_sample) {
            self.last_sample = s.t;
            self.queued.push_back(event("sample", &s));
        }
        let listing = self.dashboard.listing(&self.q).await;
        if self.last_listing.as_ref() != Some(&listing) {
            self.queued.push_back(event("devices", &listing));
            self.last_listing = Some(listing);
        }
        if let Some(id) = &self.device {
            let live = self.dashboard.live_device(id);
            if self.last_device.as_ref() != Some(&live) {
                self.queued.push_back(event("device", &live));
                self.last_device = Some(live);
            }
        }
        true
    }
}

/// `GET /dashboard/api/events?q=&device=`: the live stream.
pub async fn events(State(dashboard): State<Arc<Dashboard>>, operator: Operator, Query(watch): Query<Watch>) -> Response {
    let Ok(permit) = dashboard.streams.clone().try_acquire_owned() else {
        return api_error(StatusCode::SERVICE_UNAVAILABLE, "too many dashboard pages are open");
    };
    let device = watch.device.filter(|d| crate::ids::valid_device_id(d)).map(DeviceId::new);
    let shutdown = dashboard.hub.shutdown.clone();
    let mut feed = Feed {
        _permit: permit,
        queued: VecDeque::from([event("history", &dashboard.samples.all())]),
        last_sample: dashboard.samples.latest().map_or(0, |s| s.t),
        dashboard,
        operator,
        q: watch.q.chars().take(100).collect(),
        device,
        last_listing: None,
        last_device: None,
        checked: Instant::now(),
        ended: false,
    };
    feed.look().await;
    let stream = futures_util::stream::unfold(feed, move |mut feed| {
        let shutdown = shutdown.clone();
        async move {
            loop {
                if let Some(e) = feed.queued.pop_front() {
                    return Some((Ok::<_, Infallible>(e), feed));
                }
                if feed.ended {
                    return None;
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.cancelled() => return None,
                }
                if !feed.look().await {
                    return None;
                }
            }
        }
    });
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> = Box::pin(stream);
    let mut answer = Sse::new(stream).keep_alive(KeepAlive::default()).into_response();
    answer.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    answer
}

/// A device id from a path, if it can be one.
fn device_id(id: &str) -> Option<DeviceId> {
    crate::ids::valid_device_id(id).then(|| DeviceId::new(id))
}

/// `GET /dashboard/api/devices/{id}`: the device's stored label, live part and recent history.
pub async fn device(State(dashboard): State<Arc<Dashboard>>, _operator: Operator, Path(id): Path<String>) -> Response {
    let Some(id) = device_id(&id) else { return api_error(StatusCode::NOT_FOUND, "no such device") };
    let store = &dashboard.hub.store;
    let (label, history) =
        match (store.device_labels(&[id.as_str()]).await, store.history(id.as_str(), now_millis() + 1, HISTORY_SHOWN).await) {
            (Ok(label), Ok(history)) => (label.into_iter().next(), history),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "reading a device for the dashboard failed");
                return api_error(StatusCode::SERVICE_UNAVAILABLE, "the store is not answering");
            }
        };
    let Some(label) = label else { return api_error(StatusCode::NOT_FOUND, "no such device") };
    let history: Vec<Value> = history
        .into_iter()
        .map(|h| {
            serde_json::json!({
                "userAgent": h.user_agent,
                "opsAccount": h.ops_account,
                "opsSwitchs": h.ops_switchs,
                // As filed: the params exactly as they were sent.
                "request": h.request,
                "opsTime": h.ops_time,
            })
        })
        .collect();
    let body = serde_json::json!({
        "id": label.deviceid,
        "name": label.name,
        "model": label.model,
        "productModel": label.product_model,
        "owner": label.owner,
        "live": dashboard.live_device(&id),
        "history": history,
    });
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

#[derive(Deserialize)]
struct CommandBody {
    /// `update` or `query`.
    action: String,
    /// An update's params (a non-empty object); a query's keys (an array of strings, empty for all).
    #[serde(default)]
    params: Option<Value>,
}

/// `POST /dashboard/api/devices/{id}/command` (JSON, same origin): sends a `query` or an
/// `update` through the command service as the logged-in operator and waits for the ack.
pub async fn command(
    State(dashboard): State<Arc<Dashboard>>,
    operator: Operator,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The cookie is SameSite=Strict; on top of it, only a same-origin script can send JSON here.
    let json = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return api_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send application/json");
    }
    if let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        let same = origin.to_str().ok().and_then(|o| o.split_once("://")).is_some_and(|(_, o)| Some(o) == host.to_str().ok());
        if !same {
            return api_error(StatusCode::FORBIDDEN, "cross-origin request refused");
        }
    }
    let Some(id) = device_id(&id) else { return api_error(StatusCode::NOT_FOUND, "no such device") };
    let Ok(req) = serde_json::from_slice::<CommandBody>(&body) else {
        return api_error(StatusCode::BAD_REQUEST, "body must be {\"action\",\"params\"}");
    };
    let (kind, params) = match (req.action.as_str(), req.params) {
        ("update", Some(Value::Object(p))) if !p.is_empty() => (CommandKind::Update, Value::Object(p)),
        ("update", _) => return api_error(StatusCode::BAD_REQUEST, "an update's params must be a non-empty object"),
        ("query", None) => (CommandKind::Query, Value::Array(Vec::new())),
        ("query", Some(Value::Array(keys))) if keys.iter().all(Value::is_string) => (CommandKind::Query, Value::Array(keys)),
        ("query", _) => return api_error(StatusCode::BAD_REQUEST, "a query's params must be an array of keys"),
        _ => return api_error(StatusCode::BAD_REQUEST, "action must be update or query"),
    };
    let params = crate::protocol::raw(params.to_string());
    let sequence: Box<RawValue> = command::next_sequence();
    let hub = &dashboard.hub;
    let sent = match command::send_as_operator(hub, &operator.email, Command { kind, deviceid: &id, sequence: &sequence, params: &params })
        .await
    {
        Ok(sent) => sent,
        Err(RouteError::Offline) => return api_error(StatusCode::CONFLICT, "device is offline"),
        Err(RouteError::Busy) => return api_error(StatusCode::CONFLICT, "device is busy"),
        Err(RouteError::Denied) => return api_error(StatusCode::FORBIDDEN, "the device has no owner to act for"),
    };
    tracing::info!(operator = %operator.email, device = %id, action = kind.action(), "operator command sent");
    let outcome = command::finish(hub, sent, Instant::now() + hub.config.ack_timeout).await;
    let answer = match outcome {
        Outcome::Acked(ack) => serde_json::json!({
            "error": ack.error,
            "sequence": sequence.get().trim_matches('"'),
            "params": ack.params.and_then(|p| serde_json::from_str::<Value>(p.get()).ok()),
        }),
        Outcome::TimedOut => return api_error(StatusCode::GATEWAY_TIMEOUT, "the device did not answer in time"),
        Outcome::Gone => return api_error(StatusCode::GATEWAY_TIMEOUT, "the device went offline"),
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(answer)).into_response()
}
