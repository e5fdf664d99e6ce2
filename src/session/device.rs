//! A device session after `register`: state reports are merged into the live state and fanned
//! out at once, and acknowledged once the recorder committed them (group commit); acks complete
//! the waiting app command; `date` and `query` are answered here; commands the router queues are
//! written to the device in order.
//!
//! Answers leave in the order their frames came: while a report's answer waits for its commit,
//! later answers queue behind it ([`Device::answers`]), and the session keeps reading frames until
//! [`MAX_UNANSWERED`] wait.
//! After a register, the commands kept for the device while it was offline are delivered
//! ([`crate::offline`], by the command service's delivery task).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::handshake::Registered;
use super::{Handler, Ws, reject};
use crate::hub::Hub;
use crate::ids::{DeviceId, SessionId};
use crate::mailbox::SessionHandle;
use crate::protocol::{self, FrameError, Inbound, Outbound};
use crate::recorder::Commit;
use crate::router::{Ack, DeviceAttach};

/// Attaches the device to the router first, so a command sent right after the reply already
/// finds it (such a command waits in the outbox until the loop writes it), then runs the session
/// ([`super::drive`]).
/// A plain fn returning an `async move` block rather than an `async fn`: an async fn keeps a
/// second copy of its arguments (the socket among them) for its whole life.
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
pub(super) fn run(hub: Arc<Hub>, ws: Ws, device: Registered, reply: String) -> impl Future<Output = ()> + Send {
    async move {
        let Registered { id: deviceid, apikey, audience, state, record_login, at } = device;
        let (handle, outbox, mailbox) = SessionHandle::new(hub.config.outbox_capacity);
        let session = handle.id;
        tracing::Span::current().record("session", tracing::field::display(session)).record("deviceid", tracing::field::display(&deviceid));
        tracing::info!(bound = audience.is_some(), "device online");
        hub.router.attach_device(DeviceAttach { deviceid: deviceid.clone(), session: handle, audience, state, since: at });
        // Commands kept while it was offline follow the register answer (they wait in the outbox).
        hub.offline.deliver(&deviceid);
        hub.metrics.device_sessions.fetch_add(1, Ordering::Relaxed);
        let since = record_login.then_some(at);
        super::drive(hub, ws, mailbox, outbox, reply, Device { deviceid, session, apikey, since, answers: VecDeque::new() }).await;
    }
}

/// A device session's own part of the loop.
pub(super) struct Device {
    deviceid: DeviceId,
    session: SessionId,
    /// The owner's apikey, which replies to the device carry.
    apikey: String,
    /// When it logged in (milliseconds), for a registered device: stored when the session ends.
    since: Option<i64>,
    /// Answers not written yet, in the order of the frames they answer: the first waits for its
    /// commit, the others wait behind it.
    answers: VecDeque<Answer>,
}

/// Most answers waiting for a commit before the session stops reading the device's frames (the
/// socket then pushes back on the device).
const MAX_UNANSWERED: usize = 64;

/// An answer to one of the device's frames.
pub(super) enum Answer {
    Now(String),
    /// A report's: `ok` once its commit is done, `failed` if the store failed.
    AfterCommit {
        commit: Commit,
        ok: String,
        failed: String,
    },
}

impl Handler for Device {
    fn on_text(&mut self, hub: &Hub, text: Utf8Bytes) -> impl Future<Output = Option<String>> + Send {
        let reply = match on_text(hub, self, text.as_str()) {
            Some(Answer::Now(now)) if self.answers.is_empty() => Some(now),
            Some(answer) => {
                self.answers.push_back(answer);
                None
            }
            None => None,
        };
        std::future::ready(reply)
    }

    fn has_pending(&self) -> bool {
        !self.answers.is_empty()
    }

    fn reads(&self) -> bool {
        self.answers.len() < MAX_UNANSWERED
    }

    /// The first answer, once its commit is done. Cancel-safe: the commit is awaited in place and
    /// the answer leaves the queue only when it is ready.
    async fn next_answer(&mut self, _hub: &Hub) -> Option<String> {
        let committed = match self.answers.front_mut()? {
            Answer::Now(_) => true,
            Answer::AfterCommit { commit, .. } => commit.committed().await,
        };
        Some(match self.answers.pop_front()? {
            Answer::Now(text) => text,
            Answer::AfterCommit { ok, failed, .. } => {
                if committed {
                    ok
                } else {
                    failed
                }
            }
        })
    }

    async fn end(self, hub: &Hub) {
        let unsaved = hub.router.detach_device(&self.deviceid, self.session);
        hub.metrics.device_sessions.fetch_sub(1, Ordering::Relaxed);
        // Saved now rather than with the next batch, so a quick reconnect reads the latest state.
        if let Some(state) = unsaved {
            hub.recorder.save_now(&self.deviceid, state).await;
        }
        if let Some(at) = self.since
            && let Err(e) = hub.store.device_logged_in(self.deviceid.as_str(), at).await
        {
            tracing::warn!(error = %e, "cannot record the device's login");
        }
        tracing::info!("device offline");
    }
}

impl Device {
    /// A device session's state as `run` makes it, for [`super::fuzzing`].
    pub(super) fn new(deviceid: DeviceId, session: SessionId, apikey: String) -> Self {
        Device { deviceid, session, apikey, since: None, answers: VecDeque::new() }
    }
}

impl Answer {
    /// The text this answer sends: the success answer for a report (for [`super::fuzzing`]).
    pub(super) fn into_text(self) -> String {
        match self {
            Answer::Now(text) | Answer::AfterCommit { ok: text, .. } => text,
        }
    }
}

impl From<String> for Answer {
    fn from(text: String) -> Self {
        Answer::Now(text)
    }
}

pub(super) fn on_text(hub: &Hub, device: &Device, text: &str) -> Option<Answer> {
    if text == "ping" {
        return Some("pong".to_owned().into());
    }
    let frame = match Inbound::parse(text) {
        Ok(f) => f,
        Err(e) => return Some(reject(hub, &e, None).into()),
    };
    if let Some(id) = frame.deviceid.as_deref()
        && id != device.deviceid.as_str()
    {
        hub.metrics.frames_rejected.fetch_add(1, Ordering::Relaxed);
        return Some(protocol::error_frame(406, "a device may only speak for its own deviceid", frame.sequence).into());
    }
    let (deviceid, apikey) = (device.deviceid.as_str(), device.apikey.as_str());
    let ok = || Outbound {
        error: Some(0),
        deviceid: Some(deviceid),
        apikey: Some(apikey),
        sequence: frame.sequence,
        d_seq: frame.d_seq,
        ..Default::default()
    };
    match frame.action.as_deref() {
        None if frame.error.is_some() => {
            on_ack(hub, &device.deviceid, &frame);
            None
        }
        Some("update") => {
            let params = match frame.object_params() {
                Ok(p) => p,
                Err(e) => return Some(reject(hub, &e, Some(&frame)).into()),
            };
            let Ok(delta) = serde_json::from_str::<BTreeMap<String, &RawValue>>(params.get()) else {
                return Some(reject(hub, &FrameError::WrongType("params"), Some(&frame)).into());
            };
            let reported = hub.router.report(&device.deviceid, device.session, delta, params);
            if reported.is_ok() {
                hub.metrics.reports_received.fetch_add(1, Ordering::Relaxed);
            }
            let audience = match reported {
                Ok(audience) => audience,
                Err(e) => {
                    hub.metrics.frames_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(limit = e.limit, "state report refused: stored state would be too large");
                    return Some(protocol::error_frame(400, "device state would exceed the size limit", frame.sequence).into());
                }
            };
            // Neither waits: the alarm check is a queue push, and the commit is awaited by the
            // session loop while it goes on reading.
            if let Some(audience) = &audience {
                hub.alarms.offer(&device.deviceid, audience, params);
            }
            let commit = hub.recorder.reported(&device.deviceid, audience, params);
            let failed = protocol::error_frame(500, "state not stored, report again", frame.sequence);
            Some(Answer::AfterCommit { commit, ok: ok().to_text(), failed })
        }
        Some("query") => Some(query(hub, &device.deviceid, &frame, ok()).into()),
        Some("date") => {
            let date = protocol_date();
            Some(Outbound { date: Some(&date), ..ok() }.to_text().into())
        }
        Some("register" | "tmpReg") => Some(Outbound { config: Some(super::hb_config(hub)), ..ok() }.to_text().into()),
        Some(other) => Some(reject(hub, &FrameError::UnknownAction(other.to_owned()), Some(&frame)).into()),
        None => Some(reject(hub, &FrameError::Missing("action"), Some(&frame)).into()),
    }
}

/// An ack for a routed command: hand it to the waiting app, or drop it if nobody waits.
fn on_ack(hub: &Hub, deviceid: &DeviceId, frame: &Inbound<'_>) {
    let Some(sequence) = frame.sequence else {
        tracing::debug!("ack without a sequence dropped");
        return;
    };
    // The ack's params go to the app as received: only when the app can parse them.
    let params = match frame.params {
        Some(p) if !protocol::is_readable(p) => {
            hub.metrics.frames_rejected.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(sequence = sequence.get(), "ack params with an invalid escape or a number out of range dropped");
            None
        }
        p => p.map(ToOwned::to_owned),
    };
    let ack = Ack { error: frame.error.unwrap_or(0), params };
    if !hub.router.ack(deviceid, &protocol::sequence_key(sequence), ack) {
        hub.metrics.acks_late.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(sequence = sequence.get(), "late or unsolicited ack dropped");
    }
}

/// The device asks for its stored params: the named ones, or all for an empty list; the number
/// `0` when there is nothing to answer.
fn query(hub: &Hub, deviceid: &DeviceId, frame: &Inbound<'_>, ok: Outbound<'_>) -> String {
    let wanted: Vec<String> = match frame.params.map(|p| serde_json::from_str::<Vec<String>>(p.get())) {
        None => Vec::new(),
        Some(Ok(keys)) => keys,
        Some(Err(_)) => return protocol::error_frame(400, "field `params` has the wrong type", frame.sequence),
    };
    let answer = hub.router.live_params(deviceid, &wanted).filter(|p| p != "{}").map(protocol::raw);
    let params: &RawValue = answer.as_deref().unwrap_or_else(|| protocol::zero());
    Outbound { params: Some(params), ..ok }.to_text()
}

/// ISO-8601 UTC with milliseconds, as firmware expects from `date`.
pub fn protocol_date() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::now_utc().format(&format).expect("UTC timestamps format")
}
