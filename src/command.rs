//! The one command path: every app command (a WebSocket session's, a REST call's, WeChat's, an
//! operator's on the dashboard) is sent,
//! recorded, waited for and settled here, so each way in gives the same guarantees.
//!
//! [`send`] routes the command ([`crate::router::Router::command`]: audience, sharee permit,
//! the device's pending table and outbox) and files it in history; [`Sent::wait`] waits for the
//! ack until a deadline; [`settle`] counts the outcome, echoes a successful update's params to
//! the device's other listeners (all of them, or all but the sending session) and files the
//! owner's operation notice. An acked update's params become the device's state in the router
//! itself, before the ack is handed over. [`finish_detached`] lets a command finish in a task
//! the node tracks, for callers that do not wait for the answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::audience::Audience;
use crate::hub::Hub;
use crate::ids::{DeviceId, SessionId, UserKey};
use crate::protocol::CommandKind;
use crate::router::{Command, Outcome, PendingAck, RouteError};
use crate::store::Actor;

/// What a command was, kept while it waits, for settling it.
pub struct Sent {
    pending: PendingAck,
    pub meta: Meta,
}

pub struct Meta {
    pub deviceid: DeviceId,
    /// The device owner's apikey, which answers to apps carry.
    pub owner: UserKey,
    /// Who sent it: an app user, or an operator on the dashboard.
    pub actor: Actor,
    pub kind: CommandKind,
    /// An `update`'s or `upgrade`'s params: echoed and filed once the device acks.
    pub params: Option<Box<RawValue>>,
    /// The session that sent it, which the echo leaves out.
    pub except: Option<SessionId>,
    audience: Arc<Audience>,
}

/// A fresh command sequence: the current time in milliseconds, never repeated by this process.
pub fn next_sequence() -> Box<RawValue> {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = crate::clock::now_millis();
    let mut prev = LAST.load(Ordering::Relaxed);
    let seq = loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(p) => prev = p,
        }
    };
    crate::protocol::raw(format!("\"{seq}\""))
}

/// Routes `cmd` for `user` and records it in the device's history. `from` is the sending app
/// session, if it came over a socket.
pub fn send(hub: &Hub, user: &UserKey, cmd: Command<'_>, from: Option<SessionId>) -> Result<Sent, RouteError> {
    route(hub, user, Actor::User(user.clone()), cmd, from)
}

/// Routes `cmd` for an operator of the dashboard (by email): with the owner's rights, since an
/// operator runs the node, and recorded in history as the operator's, not the owner's. A device
/// without an owner has nobody to act for: [`RouteError::Denied`].
pub fn send_as_operator(hub: &Hub, operator: &str, cmd: Command<'_>) -> Result<Sent, RouteError> {
    let audience = hub.router.audience(cmd.deviceid);
    let Some(owner) = audience.map(|a| a.owner.clone()) else {
        return Err(if hub.router.device_view(cmd.deviceid).is_some() { RouteError::Denied } else { RouteError::Offline });
    };
    route(hub, &owner, Actor::Operator(operator.to_owned()), cmd, None)
}

fn route(hub: &Hub, caller: &UserKey, actor: Actor, cmd: Command<'_>, from: Option<SessionId>) -> Result<Sent, RouteError> {
    let (kind, params) = (cmd.kind, cmd.params);
    let deviceid = cmd.deviceid.clone();
    let pending = hub.router.command(caller, cmd)?;
    // Recorded off the routing path: a queue push, written in batches by the recorder.
    hub.recorder.command_routed(&deviceid, &pending.audience, &actor, kind, params);
    let meta = Meta {
        deviceid,
        owner: pending.owner.clone(),
        actor,
        kind,
        params: (kind != CommandKind::Query).then(|| params.to_owned()),
        except: from,
        audience: pending.audience.clone(),
    };
    Ok(Sent { pending, meta })
}

impl Sent {
    /// Waits for the ack until `deadline`; the waiter is gone when this returns or is dropped.
    pub async fn wait(self, deadline: Instant) -> (Meta, Outcome) {
        let Sent { pending, meta } = self;
        (meta, pending.wait(deadline).await)
    }
}

/// Counts a finished command; a successful `update` is echoed to the device's listeners (but the
/// sender) and a successful `update`/`upgrade` files the owner's operation notice.
pub fn settle(hub: &Hub, meta: &Meta, outcome: &Outcome) {
    match outcome {
        Outcome::Acked(ack) => {
            hub.metrics.acks_delivered.fetch_add(1, Ordering::Relaxed);
            if let (0, Some(params)) = (ack.error, &meta.params) {
                if meta.kind == CommandKind::Update {
                    hub.router.echo_command(&meta.deviceid, params, meta.except);
                }
                hub.recorder.command_done(&meta.deviceid, &meta.audience, &meta.actor, meta.kind, params);
            }
        }
        Outcome::TimedOut | Outcome::Gone => {
            hub.metrics.timeouts_504.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits and settles.
pub async fn finish(hub: &Hub, sent: Sent, deadline: Instant) -> Outcome {
    let (meta, outcome) = sent.wait(deadline).await;
    settle(hub, &meta, &outcome);
    outcome
}

/// Lets a command finish in the background, in a task shutdown waits for.
pub fn finish_detached(hub: &Arc<Hub>, sent: Sent) {
    let deadline = Instant::now() + hub.config.ack_timeout;
    let task = hub.clone();
    hub.tasks.spawn(async move {
        finish(&task, sent, deadline).await;
    });
}
