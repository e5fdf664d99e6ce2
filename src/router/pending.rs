//! One routed command waiting for its device's ack. The waiter entry in the device's table is
//! removed by a guard: on ack (the device side takes it), on timeout or when the app session that
//! waits drops the future, whichever comes first. Nothing can leak past the ack deadline.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::ids::UserKey;
use crate::registry::{Ack, DeviceLink};
use crate::audience::Audience;

/// How a wait ended.
#[derive(Debug)]
pub enum Outcome {
    Acked(Ack),
    /// No ack before the deadline.
    TimedOut,
    /// The device went away (disconnected or replaced) before acking.
    Gone,
}

pub struct PendingAck {
    rx: oneshot::Receiver<Ack>,
    guard: WaiterGuard,
    /// The device owner's apikey, which the reply to the app carries.
    pub owner: UserKey,
    /// The device's audience (with its settings) as the command was routed.
    pub audience: Arc<Audience>,
}

struct WaiterGuard {
    link: Arc<DeviceLink>,
    key: Arc<str>,
    token: u64,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.link.remove_waiter(&self.key, self.token);
    }
}

impl PendingAck {
    pub(crate) fn new(rx: oneshot::Receiver<Ack>, link: Arc<DeviceLink>, key: Arc<str>, token: u64, audience: Arc<Audience>) -> Self {
        PendingAck { rx, guard: WaiterGuard { link, key, token }, owner: audience.owner.clone(), audience }
    }

    /// Waits until `deadline` for the ack. The waiter entry is gone when this returns or is dropped.
    pub async fn wait(self, deadline: Instant) -> Outcome {
        let PendingAck { rx, guard, .. } = self;
        let outcome = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(ack)) => Outcome::Acked(ack),
            Ok(Err(_)) => Outcome::Gone,
            Err(_) => Outcome::TimedOut,
        };
        drop(guard);
        outcome
    }
}
