//! An app session after `userOnline`: commands go to the router, each waits for its device's
//! ack in this task (so ending the session drops every wait and its waiter entry), and whatever
//! the router queues for this user is written out in order.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::value::RawValue;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::{Read, Silence, Ws, read, reject, send, write_batch, write_unless_closed};
use crate::hub::Hub;
use crate::ids::{AppId, DeviceId, SessionId, UserKey};
use crate::protocol::{self, FrameError, Inbound, Outbound};
use crate::registry::SessionHandle;
use crate::router::pending::Outcome;
use crate::router::{Command, CommandKind, RouteError};
use crate::audience::Audience;

/// A finished wait: what to tell the app.
struct Done {
    sequence: Box<RawValue>,
    deviceid: DeviceId,
    owner: UserKey,
    /// The command's params when it was an update (echoed to the other sessions on success).
    params: Option<Box<RawValue>>,
    /// What to file as an operation notice on success (only for devices with `opsNotify` on).
    notice: Option<Box<OpsNotice>>,
    outcome: Outcome,
}

struct OpsNotice {
    audience: Arc<Audience>,
    user: UserKey,
    kind: CommandKind,
    params: Box<RawValue>,
}

type Wait = Pin<Box<dyn Future<Output = Done> + Send>>;

/// Attaches the session, then sends the handshake `reply`, so anything sent after the reply
/// already finds the session online.
/// A plain fn returning an `async move` block, so the arguments are not kept twice.
#[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
pub(super) fn run(
    hub: Arc<Hub>,
    mut ws: Ws,
    user: UserKey,
    appid: AppId,
    credential: u64,
    reply: String,
) -> impl Future<Output = ()> + Send {
    async move {
        let (handle, mut outbox, control) = SessionHandle::new(hub.config.outbox_capacity);
        handle.set_credential(credential);
        let id = handle.id;
        tracing::Span::current().record("session", tracing::field::display(id)).record("user", tracing::field::display(&user));
        tracing::info!(%appid, "app online");
        hub.router.attach_app(&user, handle);
        hub.metrics.app_sessions.fetch_add(1, Ordering::Relaxed);

        let mut waits: FuturesUnordered<Wait> = FuturesUnordered::new();
        let mut reachable: Option<Reachable> = None;
        let mut silence = Silence::new(&hub);
        let heartbeat = tokio::time::sleep_until(silence.deadline());
        tokio::pin!(heartbeat);

        'session: {
            if !send(&mut ws, reply).await {
                break 'session;
            }
            loop {
                tokio::select! {
                    reason = control.closed() => {
                        tracing::info!(?reason, "app session closed by the hub");
                        Box::pin(super::close_for(&mut ws, reason)).await;
                        break;
                    }
                    _ = hub.shutdown.cancelled() => {
                        Box::pin(super::close(&mut ws, CloseCode::Away, "shutting down")).await;
                        break;
                    }
                    Some(frame) = outbox.recv() => {
                        if !Box::pin(write_unless_closed(&hub, &control, write_batch(&mut ws, frame, &mut outbox))).await {
                            break;
                        }
                    }
                    Some(done) = waits.next(), if !waits.is_empty() => {
                        if !Box::pin(write_unless_closed(&hub, &control, send(&mut ws, answer(&hub, done, id)))).await {
                            break;
                        }
                    }
                    _ = &mut heartbeat => {
                        if silence.expired() {
                            hub.metrics.heartbeat_expired.fetch_add(1, Ordering::Relaxed);
                            tracing::info!("app silent past its heartbeat, closing");
                            Box::pin(super::close(&mut ws, CloseCode::Normal, "heartbeat timeout")).await;
                            break;
                        }
                        heartbeat.as_mut().reset(silence.deadline());
                    }
                    r = read(&mut ws) => {
                        silence.last_seen = Instant::now();
                        let reply = match r {
                            Read::Text(text) => Box::pin(on_text(&hub, &user, text.as_str(), &mut waits, &mut reachable)).await,
                            Read::Binary => Some(reject(&hub, &FrameError::Malformed("binary frame".into()), None)),
                            Read::Nothing => None,
                            Read::TooBig => {
                                Box::pin(super::close(&mut ws, CloseCode::Size, "message too big")).await;
                                break;
                            }
                            Read::End => break,
                        };
                        if let Some(reply) = reply {
                            if !Box::pin(write_unless_closed(&hub, &control, send(&mut ws, reply))).await {
                                break;
                            }
                        }
                    }
                }
            }
        }
        hub.router.detach_app(&user, id);
        hub.metrics.app_sessions.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(abandoned = waits.len(), "app offline");
    }
}

/// Handles one text frame; returns the immediate reply, if any. Routed commands answer later.
async fn on_text(
    hub: &Hub,
    user: &UserKey,
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
    match command(hub, user, kind, &frame, waits, reachable).await {
        Ok(()) => None,
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
struct Reachable {
    generation: i64,
    devices: HashSet<DeviceId>,
}

enum CommandRefused {
    Bad(FrameError),
    Code(i64, &'static str),
}

async fn command(
    hub: &Hub,
    user: &UserKey,
    kind: CommandKind,
    frame: &Inbound<'_>,
    waits: &mut FuturesUnordered<Wait>,
    reachable: &mut Option<Reachable>,
) -> Result<(), CommandRefused> {
    let deviceid = DeviceId::new(frame.require_deviceid().map_err(CommandRefused::Bad)?);
    let sequence = frame.sequence.ok_or(CommandRefused::Bad(FrameError::Missing("sequence")))?;
    let empty_list;
    let params: &RawValue = match (kind, frame.params) {
        (CommandKind::Query, None) => {
            empty_list = protocol::raw("[]".to_owned());
            &empty_list
        }
        (CommandKind::Query, Some(p)) if p.get().trim_start().starts_with('[') => p,
        (CommandKind::Query, Some(_)) => return Err(CommandRefused::Bad(FrameError::WrongType("params"))),
        (CommandKind::Update, Some(p)) if p.get().trim_start().starts_with('[') => p,
        _ => frame.object_params().map_err(CommandRefused::Bad)?,
    };
    if let Some(own) = frame.self_apikey.as_deref() {
        if !own.is_empty() && own != user.as_str() {
            return Err(CommandRefused::Code(406, "selfApikey is not this session's user"));
        }
    }
    if waits.len() >= hub.config.max_inflight {
        return Err(CommandRefused::Code(429, "too many commands waiting for devices"));
    }
    let pending = match hub.router.command(user, Command { kind, deviceid: &deviceid, sequence, params }) {
        Ok(p) => p,
        Err(RouteError::Denied) => return Err(CommandRefused::Code(406, "no permission for this device")),
        Err(RouteError::Busy) => return Err(CommandRefused::Code(504, "device is busy")),
        Err(RouteError::Offline) => {
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
    let owner = pending.owner.clone();
    // Recorded off the routing path: a queue push, written in batches by the state writer.
    hub.state.command_routed(&deviceid, &pending.audience, user, kind, params);
    let notice = (pending.audience.settings.ops_notify && kind != CommandKind::Query)
        .then(|| Box::new(OpsNotice { audience: pending.audience.clone(), user: user.clone(), kind, params: params.to_owned() }));
    let deadline = Instant::now() + hub.config.ack_timeout;
    let sequence = sequence.to_owned();
    // Only a successful update echoes its params to the other sessions.
    let params = (kind == CommandKind::Update).then(|| params.to_owned());
    waits.push(Box::pin(async move {
        let outcome = pending.wait(deadline).await;
        Done { sequence, deviceid, owner, params, notice, outcome }
    }));
    Ok(())
}

/// The reply to the app for a finished wait; a successful update is echoed to the device's other
/// listeners.
fn answer(hub: &Hub, done: Done, session: SessionId) -> String {
    let Done { sequence, deviceid, owner, params, notice, outcome } = done;
    let mut reply =
        Outbound { deviceid: Some(deviceid.as_str()), apikey: Some(owner.as_str()), sequence: Some(&sequence), ..Default::default() };
    let ack;
    match outcome {
        Outcome::Acked(a) => {
            hub.metrics.acks_delivered.fetch_add(1, Ordering::Relaxed);
            ack = a;
            reply.error = Some(ack.error);
            reply.params = ack.params.as_deref();
            if let (0, Some(params)) = (ack.error, &params) {
                hub.router.echo_command(&deviceid, params, session);
            }
            if let (0, Some(n)) = (ack.error, notice) {
                hub.state.command_done(&deviceid, &n.audience, &n.user, n.kind, &n.params);
            }
        }
        Outcome::TimedOut => {
            hub.metrics.timeouts_504.fetch_add(1, Ordering::Relaxed);
            reply.error = Some(504);
            reply.reason = Some("device did not answer in time");
        }
        Outcome::Gone => {
            hub.metrics.timeouts_504.fetch_add(1, Ordering::Relaxed);
            reply.error = Some(504);
            reply.reason = Some("device went offline");
        }
    }
    reply.to_text()
}
