//! An app session after `userOnline`: commands go through the command service ([`crate::command`]),
//! an `update` with `ttl` for an offline device is kept for it and answered `queued` at once,
//! each waits for its device's ack in this task (so ending the session drops every wait and its
//! waiter entry), and whatever the router queues for this user is written out in order.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Handler, reject};
use crate::command::{self, Meta, Routed, SendError};
use crate::hub::Hub;
use crate::ids::{AppId, DeviceId, SessionId, UserKey};
use crate::mailbox::SessionHandle;
use crate::offline::QueueError;
use crate::protocol::{self, CommandKind, FrameError, Inbound, Outbound};
use crate::router::{Command, Outcome, RouteError};

/// A finished wait: what to tell the app.
pub(super) struct Done {
    sequence: Box<RawValue>,
    meta: Meta,
    outcome: Outcome,
}

pub(super) type Wait = Pin<Box<dyn Future<Output = Done> + Send>>;

/// Attaches the session, then runs it ([`super::drive`]); the handshake `reply` is sent after the
/// attach, so anything sent after the reply already finds the session online.
/// A plain fn returning an `async move` block, so the arguments are not kept twice.
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
pub(super) fn run(
    hub: Arc<Hub>,
    ws: super::Ws,
    user: UserKey,
    appid: AppId,
    credential: u64,
    reply: String,
) -> impl Future<Output = ()> + Send {
    async move {
        let (handle, outbox, mailbox) = SessionHandle::new(hub.config.outbox_capacity);
        handle.set_credential(credential);
        let id = handle.id;
        tracing::Span::current().record("session", tracing::field::display(id)).record("apikey", tracing::field::display(&user));
        tracing::info!(%appid, "app online");
        hub.router.attach_app(&user, handle);
        hub.metrics.app_sessions.fetch_add(1, Ordering::Relaxed);
        let app = App { user, id, waits: FuturesUnordered::new(), reachable: None };
        super::drive(hub, ws, mailbox, outbox, reply, app).await;
    }
}

/// An app session's own part of the loop: its user, its commands waiting for acks, and its cached
/// list of reachable devices.
struct App {
    user: UserKey,
    id: SessionId,
    waits: FuturesUnordered<Wait>,
    reachable: Option<Reachable>,
}

impl Handler for App {
    async fn on_text(&mut self, hub: &Hub, text: Utf8Bytes) -> Option<String> {
        on_text(hub, &self.user, self.id, text.as_str(), &mut self.waits, &mut self.reachable).await
    }

    fn has_pending(&self) -> bool {
        !self.waits.is_empty()
    }

    async fn next_answer(&mut self, hub: &Hub) -> Option<String> {
        self.waits.next().await.map(|done| answer(hub, done))
    }

    fn end(self, hub: &Hub) -> impl Future<Output = ()> + Send {
        hub.router.detach_app(&self.user, self.id);
        hub.metrics.app_sessions.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(abandoned = self.waits.len(), "app offline");
        std::future::ready(())
    }
}

/// Handles one text frame; returns the immediate reply, if any. Routed commands answer later.
pub(super) async fn on_text(
    hub: &Hub,
    user: &UserKey,
    session: SessionId,
    text: &str,
    waits: &mut FuturesUnordered<Wait>,
    reachable: &mut Option<Reachable>,
) -> Option<String> {
    if text == "ping" {
        return Some("pong".to_owned());
    }
    let frame = match Inbound::parse(text) {
        Ok(f) => f,
        Err(e) => return Some(reject(hub, &e, None)),
    };
    let kind = match frame.action.as_deref() {
        Some("update") => CommandKind::Update,
        Some("query") => CommandKind::Query,
        Some("upgrade") => CommandKind::Upgrade,
        Some("userOnline") => {
            let reply = Outbound {
                error: Some(0),
                apikey: Some(user.as_str()),
                config: Some(super::hb_config(hub)),
                sequence: frame.sequence,
                ..Default::default()
            };
            return Some(reply.to_text());
        }
        Some(other) => return Some(reject(hub, &FrameError::UnknownAction(other.to_owned()), Some(&frame))),
        None => return Some(reject(hub, &FrameError::Missing("action"), Some(&frame))),
    };
    match command(hub, user, session, kind, &frame, waits, reachable).await {
        Ok(reply) => reply,
        Err(CommandRefused::Bad(e)) => Some(reject(hub, &e, Some(&frame))),
        Err(CommandRefused::Code(code, reason)) => {
            if code == 504 {
                hub.metrics.timeouts_504.fetch_add(1, Ordering::Relaxed);
            }
            Some(
                Outbound {
                    error: Some(code),
                    reason: Some(reason),
                    deviceid: frame.deviceid.as_deref(),
                    sequence: frame.sequence,
                    ..Default::default()
                }
                .to_text(),
            )
        }
    }
}

/// The devices this session's user may reach, as of one access-control generation.
pub(super) struct Reachable {
    generation: i64,
    devices: HashSet<DeviceId>,
}

enum CommandRefused {
    Bad(FrameError),
    Code(i64, &'static str),
}

/// Sends one command; returns the immediate answer when there is one (a command kept for an
/// offline device), else the answer comes when its wait ends.
async fn command(
    hub: &Hub,
    user: &UserKey,
    session: SessionId,
    kind: CommandKind,
    frame: &Inbound<'_>,
    waits: &mut FuturesUnordered<Wait>,
    reachable: &mut Option<Reachable>,
) -> Result<Option<String>, CommandRefused> {
    let deviceid = DeviceId::new(frame.require_deviceid().map_err(CommandRefused::Bad)?);
    let sequence = frame.sequence.ok_or(CommandRefused::Bad(FrameError::Missing("sequence")))?;
    let empty_list;
    let params: &RawValue = match (kind, frame.params) {
        (CommandKind::Query, None) => {
            empty_list = protocol::raw("[]".to_owned());
            &empty_list
        }
        (CommandKind::Query, Some(p)) if p.get().trim_start().starts_with('[') => forwardable(p)?,
        (CommandKind::Query, Some(_)) => return Err(CommandRefused::Bad(FrameError::WrongType("params"))),
        (CommandKind::Update, Some(p)) if p.get().trim_start().starts_with('[') => forwardable(p)?,
        _ => frame.object_params().map_err(CommandRefused::Bad)?,
    };
    if let Some(own) = frame.self_apikey.as_deref()
        && !own.is_empty()
        && own != user.as_str()
    {
        return Err(CommandRefused::Code(406, "selfApikey is not this session's user"));
    }
    let ttl = match frame.ttl {
        None => None,
        Some(_) if kind != CommandKind::Update => return Err(CommandRefused::Code(400, "ttl applies to update only")),
        Some(_) if !params.get().trim_start().starts_with('{') => {
            return Err(CommandRefused::Code(400, "an update with ttl needs params as an object"));
        }
        Some(raw) => {
            hub.offline.ttl_raw(raw).map_err(|_| CommandRefused::Code(400, "ttl must be whole seconds from 0 to the hub's maximum"))?
        }
    };
    if waits.len() >= hub.config.max_inflight {
        return Err(CommandRefused::Code(429, "too many commands waiting for devices"));
    }
    let routed = command::send_or_keep(hub, user, Command { kind, deviceid: &deviceid, sequence, params }, Some(session), ttl).await;
    let sent = match routed {
        Ok(Routed::Sent(sent)) => sent,
        Ok(Routed::Kept(kept)) => {
            let reply = Outbound {
                error: Some(0),
                queued: Some(true),
                deviceid: Some(deviceid.as_str()),
                apikey: Some(kept.owner.as_str()),
                sequence: Some(sequence),
                ..Default::default()
            };
            return Ok(Some(reply.to_text()));
        }
        Err(SendError::Queue(QueueError::Denied)) => return Err(CommandRefused::Code(406, "no permission for this device")),
        Err(SendError::Queue(QueueError::Full)) => return Err(CommandRefused::Code(429, "the device's queue of offline commands is full")),
        Err(SendError::Queue(QueueError::Store(e))) => {
            tracing::warn!(error = %e, "store unavailable");
            return Err(CommandRefused::Code(500, "internal error"));
        }
        Err(SendError::Route(RouteError::Denied)) => return Err(CommandRefused::Code(406, "no permission for this device")),
        Err(SendError::Route(RouteError::Busy)) => return Err(CommandRefused::Code(504, "device is busy")),
        Err(SendError::Route(RouteError::Offline)) => {
            // Offline: tell a member 504 as the seed says, and anyone else no more than a denial.
            // Membership comes from this session's cached list, loaded once per sharing change,
            // so commands for unknown ids cost no store query each.
            let generation = hub.acl.generation();
            if reachable.as_ref().is_none_or(|r| r.generation != generation) {
                match Box::pin(hub.store.reachable(user)).await {
                    Ok(devices) => *reachable = Some(Reachable { generation, devices }),
                    Err(e) => {
                        tracing::warn!(error = %e, "store unavailable");
                        return Err(CommandRefused::Code(500, "internal error"));
                    }
                }
            }
            let member = reachable.as_ref().is_some_and(|r| r.devices.contains(&deviceid));
            return Err(if member {
                CommandRefused::Code(504, "device is offline")
            } else {
                CommandRefused::Code(406, "no permission for this device")
            });
        }
    };
    let deadline = Instant::now() + hub.config.ack_timeout;
    let sequence = sequence.to_owned();
    waits.push(Box::pin(async move {
        let (meta, outcome) = sent.wait(deadline).await;
        Done { sequence, meta, outcome }
    }));
    Ok(None)
}

/// List `params`, passed to the device as received once the device (and every later reader) can
/// parse them; objects are checked by [`Inbound::object_params`].
fn forwardable(params: &RawValue) -> Result<&RawValue, CommandRefused> {
    if protocol::is_readable(params) { Ok(params) } else { Err(CommandRefused::Bad(FrameError::Unreadable("params"))) }
}

/// The reply to the app for a finished wait, once the command service settled it (a successful
/// update is echoed to the device's other listeners).
fn answer(hub: &Hub, done: Done) -> String {
    let Done { sequence, meta, outcome } = done;
    command::settle(hub, &meta, &outcome);
    let mut reply = Outbound {
        deviceid: Some(meta.deviceid.as_str()),
        apikey: Some(meta.owner.as_str()),
        sequence: Some(&sequence),
        ..Default::default()
    };
    match &outcome {
        Outcome::Acked(ack) => {
            reply.error = Some(ack.error);
            reply.params = ack.params.as_deref();
        }
        Outcome::TimedOut => {
            reply.error = Some(504);
            reply.reason = Some("device did not answer in time");
        }
        Outcome::Gone => {
            reply.error = Some(504);
            reply.reason = Some("device went offline");
        }
    }
    reply.to_text()
}
