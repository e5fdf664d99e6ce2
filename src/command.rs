//! The one command path: every app command (a WebSocket session's, a REST call's, WeChat's, an
//! operator's on the dashboard) is sent,
//! recorded, waited for and settled here, so each way in gives the same guarantees.
//!
//! [`send`] routes the command ([`crate::router::Router::command`]: audience, sharee permit,
//! the device's pending table and outbox) and files it in history; [`Sent::wait`] waits for the
//! ack until a deadline; [`settle`] counts the outcome, echoes a successful update's params to
//! the device's other listeners (all of them, or all but the sending session) and files the
//! owner's operation notice. An acked update's params become the device's state in the router
//! itself, before the ack is handed over, and [`Sent::wait`] returns only once the recorder has
//! committed that state (a failed commit turns the answer into error 500). [`finish_detached`] lets a command finish in a task
//! the node tracks, for callers that do not wait for the answer.
//!
//! [`send_or_keep`] is [`send`] for an `update` that carries a `ttl`: when the router finds the
//! device offline, the command is kept for it ([`crate::offline`]) instead of refused. Kept
//! commands come back here when the device registers: [`run_deliveries`] sends them through this same
//! path, one at a time in the order they were queued, and settles each as a live command.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::audience::Audience;
use crate::hub::Hub;
use crate::ids::{DeviceId, SessionId, UserKey};
use crate::offline::{Kept, Order, QueueError};
use crate::protocol::CommandKind;
use crate::recorder::Recorder;
use crate::router::{Command, Outcome, PendingAck, RouteError};
use crate::store::Actor;

mod deliver;

pub use deliver::run_deliveries;

/// What a command was, kept while it waits, for settling it.
pub struct Sent {
    pending: PendingAck,
    pub meta: Meta,
    recorder: Recorder,
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
/// A device on another node of a cluster is asked first ([`crate::router::Routed::Away`]).
pub async fn send(hub: &Hub, user: &UserKey, cmd: Command<'_>, from: Option<SessionId>) -> Result<Sent, RouteError> {
    route(hub, user, Actor::User(user.clone()), cmd, from).await
}

/// Routes `cmd` for an operator of the dashboard (by email): with the owner's rights, since an
/// operator runs the node, and recorded in history as the operator's, not the owner's. A device
/// without an owner has nobody to act for: [`RouteError::Denied`].
pub async fn send_as_operator(hub: &Hub, operator: &str, cmd: Command<'_>) -> Result<Sent, RouteError> {
    let audience = hub.router.audience(cmd.deviceid);
    let Some(owner) = audience.map(|a| a.owner.clone()) else {
        return Err(if hub.router.device_view(cmd.deviceid).is_some() { RouteError::Denied } else { RouteError::Offline });
    };
    route(hub, &owner, Actor::Operator(operator.to_owned()), cmd, None).await
}

async fn route(hub: &Hub, caller: &UserKey, actor: Actor, cmd: Command<'_>, from: Option<SessionId>) -> Result<Sent, RouteError> {
    let (kind, params) = (cmd.kind, cmd.params);
    let deviceid = cmd.deviceid.clone();
    let pending = hub.router.command(caller, cmd).accepted().await?;
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
    Ok(Sent { pending, meta, recorder: hub.recorder.clone() })
}

/// What became of a command sent with [`send_or_keep`].
pub enum Routed {
    /// Routed to the online device: wait for its ack as for [`send`].
    Sent(Sent),
    /// Kept for the offline device until it registers or the ttl passes.
    Kept(Kept),
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Route(RouteError),
    #[error(transparent)]
    Queue(QueueError),
}

/// [`send`], except that an `update` with a `ttl` for a device that is offline is kept for it
/// rather than refused ([`crate::offline::Offline::queue`]: the sender's right is checked
/// against the store, later commands replace earlier ones key by key, the queue is bounded).
/// Without a ttl, or for an online device, it is [`send`].
pub async fn send_or_keep(
    hub: &Hub,
    user: &UserKey,
    cmd: Command<'_>,
    from: Option<SessionId>,
    ttl: Option<Duration>,
) -> Result<Routed, SendError> {
    let (deviceid, sequence, params) = (cmd.deviceid, cmd.sequence, cmd.params);
    let ttl = ttl.filter(|_| cmd.kind == CommandKind::Update);
    match send(hub, user, cmd, from).await {
        Ok(sent) => Ok(Routed::Sent(sent)),
        Err(RouteError::Offline) => {
            let Some(ttl) = ttl else { return Err(SendError::Route(RouteError::Offline)) };
            let order = Order { deviceid, user, session: from, sequence, params, ttl };
            let kept = hub.offline.queue(&hub.store, order).await.map_err(SendError::Queue)?;
            // The device may have registered while this was being queued, and found nothing.
            if hub.router.device_view(deviceid).is_some() {
                hub.offline.deliver(deviceid);
            }
            Ok(Routed::Kept(kept))
        }
        Err(e) => Err(SendError::Route(e)),
    }
}

impl Sent {
    /// Waits for the ack until `deadline`; the waiter is gone when this returns or is dropped.
    /// An `update` acked with error 0 changed the device's state: this then also waits until the
    /// recorder has committed it, and answers error 500 if that failed. A device on another node
    /// changed state there: that node commits it before it relays the ack.
    pub async fn wait(self, deadline: Instant) -> (Meta, Outcome) {
        let Sent { pending, meta, recorder } = self;
        let remote = pending.is_remote();
        let mut outcome = pending.wait(deadline).await;
        if let Outcome::Acked(ack) = &mut outcome
            && ack.error == 0
            && meta.kind == CommandKind::Update
            && !remote
            && !recorder.commit().committed().await
        {
            ack.error = 500;
            ack.params = None;
        }
        (meta, outcome)
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
                    hub.router.echo_command(&meta.audience, &meta.deviceid, params, meta.except);
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
