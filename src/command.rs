//! The one command path: every app command (a WebSocket session's, a REST call's) is sent,
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

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::audience::Audience;
use crate::hub::Hub;
use crate::ids::{DeviceId, SessionId, UserKey};
use crate::protocol::CommandKind;
use crate::recorder::Recorder;
use crate::router::{Command, Outcome, PendingAck, RouteError};

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
    pub user: UserKey,
    pub kind: CommandKind,
    /// An `update`'s or `upgrade`'s params: echoed and filed once the device acks.
    pub params: Option<Box<RawValue>>,
    /// The session that sent it, which the echo leaves out.
    pub except: Option<SessionId>,
    audience: Arc<Audience>,
}

/// Routes `cmd` for `user` and records it in the device's history. `from` is the sending app
/// session, if it came over a socket.
pub fn send(hub: &Hub, user: &UserKey, cmd: Command<'_>, from: Option<SessionId>) -> Result<Sent, RouteError> {
    let (kind, params) = (cmd.kind, cmd.params);
    let deviceid = cmd.deviceid.clone();
    let pending = hub.router.command(user, cmd)?;
    // Recorded off the routing path: a queue push, written in batches by the recorder.
    hub.recorder.command_routed(&deviceid, &pending.audience, user, kind, params);
    let meta = Meta {
        deviceid,
        owner: pending.owner.clone(),
        user: user.clone(),
        kind,
        params: (kind != CommandKind::Query).then(|| params.to_owned()),
        except: from,
        audience: pending.audience.clone(),
    };
    Ok(Sent { pending, meta, recorder: hub.recorder.clone() })
}

impl Sent {
    /// Waits for the ack until `deadline`; the waiter is gone when this returns or is dropped.
    /// An `update` acked with error 0 changed the device's state: this then also waits until the
    /// recorder has committed it, and answers error 500 if that failed.
    pub async fn wait(self, deadline: Instant) -> (Meta, Outcome) {
        let Sent { pending, meta, recorder } = self;
        let mut outcome = pending.wait(deadline).await;
        if let Outcome::Acked(ack) = &mut outcome {
            if ack.error == 0 && meta.kind == CommandKind::Update && !recorder.commit().committed().await {
                ack.error = 500;
                ack.params = None;
            }
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
                    hub.router.echo_command(&meta.deviceid, params, meta.except);
                }
                hub.recorder.command_done(&meta.deviceid, &meta.audience, &meta.user, meta.kind, params);
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
