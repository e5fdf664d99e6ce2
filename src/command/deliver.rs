//! Delivering the commands kept for a device while it was offline ([`crate::offline`]), once it
//! registers: one delivery per device at a time, each command sent through [`super::send`] as
//! its sender's (so the router judges its right again), waited for until the ack timeout and
//! settled as a live command (echo to the other sessions, history, notice). Then:
//!
//! - acked (any error code) → removed from the queue; the sending session, if still connected to
//!   this node, gets the ack with its original sequence;
//! - refused by the router → removed, filed in history as `denied`, the sender told 406;
//! - not acked in time → stays queued (it is sent again at the next registration while its ttl
//!   lasts) and the next command goes;
//! - device gone → the pass stops; everything not acked stays queued.
//!
//! A register during a pass (a replacing connection) asks for another pass, which reads the queue
//! again: a command acked and removed is never sent again, one still queued is sent once per pass.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::time::Instant;

use super::{send, settle};
use crate::clock::now_millis;
use crate::hub::Hub;
use crate::ids::DeviceId;
use crate::offline::{Answer, DeliveryRequests, Dropped};
use crate::protocol::CommandKind;
use crate::router::{Command, Outcome, RouteError};
use crate::store::QueuedCommand;

/// How often a command that found the device busy is tried again in one pass, and how long apart.
const BUSY_TRIES: u32 = 5;
const BUSY_PAUSE: Duration = Duration::from_millis(500);

/// Starts a delivery task (one the node tracks) for each device [`crate::offline::Offline::deliver`]
/// names, until shutdown.
pub async fn run_deliveries(hub: Arc<Hub>, mut requests: DeliveryRequests) {
    loop {
        let deviceid = tokio::select! {
            d = requests.recv() => d,
            _ = hub.shutdown.cancelled() => None,
        };
        let Some(deviceid) = deviceid else { return };
        let task = hub.clone();
        hub.tasks.spawn(async move { deliver(&task, deviceid).await });
    }
}

/// Passes over the device's queue until no register asked for another.
async fn deliver(hub: &Hub, deviceid: DeviceId) {
    loop {
        if hub.router.device_view(&deviceid).is_some() && !hub.shutdown.is_cancelled() {
            pass(hub, &deviceid).await;
        }
        if !hub.offline.pass_done(&deviceid) {
            return;
        }
    }
}

enum Next {
    Go,
    Stop,
}

async fn pass(hub: &Hub, deviceid: &DeviceId) {
    let Some(count) = hub.offline.queued_count(deviceid) else { return };
    let cmds = match hub.store.queued_commands(deviceid, now_millis()).await {
        Ok(cmds) => cmds,
        Err(e) => {
            tracing::warn!(error = %e, device = %deviceid, "cannot read the device's queued commands");
            return;
        }
    };
    let mut left = 0;
    for cmd in &cmds {
        match one(hub, cmd).await {
            (Next::Go, done) => left += usize::from(!done),
            (Next::Stop, _) => return,
        }
    }
    if left == 0 {
        hub.offline.drained(deviceid, count);
    }
}

/// Delivers one command; says whether to go on, and whether the command is done with.
async fn one(hub: &Hub, cmd: &QueuedCommand) -> (Next, bool) {
    // Claimed before the expiry check: the expiry task either sees the claim and leaves the
    // command to this delivery, or dropped it as expired and this check sees that too.
    let _out = hub.offline.out(cmd.id);
    if cmd.expires_at <= now_millis() {
        return (Next::Go, false);
    }
    let (Ok(sequence), Ok(params)) = (RawValue::from_string(cmd.sequence.clone()), RawValue::from_string(cmd.params.clone())) else {
        tracing::warn!(id = cmd.id, "a queued command is not JSON; removed");
        remove(hub, cmd).await;
        return (Next::Go, true);
    };
    let from = hub.offline.sender_session(cmd);
    let mut busy = 0;
    let sent = loop {
        let command = Command { kind: CommandKind::Update, deviceid: &cmd.deviceid, sequence: &sequence, params: &params };
        match send(hub, &cmd.user, command, from).await {
            Ok(sent) => break sent,
            Err(RouteError::Offline) => return (Next::Stop, false),
            Err(RouteError::Denied) => {
                remove(hub, cmd).await;
                let audience = hub.store.audience(&cmd.deviceid).await.ok().flatten().map(Arc::new);
                tracing::info!(device = %cmd.deviceid, sequence = %cmd.sequence, "queued command no longer allowed; dropped");
                hub.offline.dropped(hub.router.as_ref(), &hub.recorder, cmd, audience.as_ref(), Dropped::Denied);
                return (Next::Go, true);
            }
            Err(RouteError::Busy) => {
                busy += 1;
                if busy >= BUSY_TRIES {
                    return (Next::Stop, false);
                }
                tokio::select! {
                    _ = tokio::time::sleep(BUSY_PAUSE) => {}
                    _ = hub.shutdown.cancelled() => return (Next::Stop, false),
                }
            }
        }
    };
    let (meta, outcome) = sent.wait(Instant::now() + hub.config.ack_timeout).await;
    settle(hub, &meta, &outcome);
    match outcome {
        Outcome::Acked(ack) => {
            let answer = Answer { error: ack.error, reason: None, params: ack.params.as_deref() };
            hub.offline.tell_sender(hub.router.as_ref(), cmd, &meta.owner, answer);
            remove(hub, cmd).await;
            (Next::Go, true)
        }
        Outcome::TimedOut => {
            tracing::info!(device = %cmd.deviceid, sequence = %cmd.sequence, "queued command not acked in time; kept");
            (Next::Go, false)
        }
        Outcome::Gone => (Next::Stop, false),
    }
}

async fn remove(hub: &Hub, cmd: &QueuedCommand) {
    if let Err(e) = hub.store.remove_queued(cmd.id).await {
        tracing::warn!(error = %e, id = cmd.id, "cannot remove a delivered command from the queue");
    }
}
