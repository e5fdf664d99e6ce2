//! A device connected to this node, as the router keeps it. Only the router sees it: everyone
//! else reaches a device through [`super::Router`] calls.

use std::sync::{Arc, RwLock};

use crate::audience::Audience;
use crate::device_state::LiveState;
use crate::ids::DeviceId;
use crate::mailbox::SessionHandle;
use crate::router::pending::PendingTable;
use crate::sync::{read, write};

pub(super) struct DeviceLink {
    pub deviceid: DeviceId,
    pub session: SessionHandle,
    /// Owner and sharees; `None` while the device is not bound to anyone. Replaced wholesale when
    /// sharing changes.
    audience: RwLock<Option<Arc<Audience>>>,
    /// Commands waiting for this device's ack.
    pub pending: Arc<PendingTable>,
    /// The device's latest params, also handed to the recorder when they change.
    pub live: Arc<LiveState>,
    /// When the session attached (milliseconds since the epoch).
    pub since: i64,
}

impl DeviceLink {
    pub fn new(session: SessionHandle, audience: Option<Audience>, live: Arc<LiveState>, since: i64) -> Self {
        DeviceLink {
            deviceid: live.deviceid.clone(),
            session,
            audience: RwLock::new(audience.map(Arc::new)),
            pending: Arc::default(),
            live,
            since,
        }
    }

    pub fn audience(&self) -> Option<Arc<Audience>> {
        read(&self.audience).clone()
    }

    pub fn set_audience(&self, audience: Option<Audience>) {
        *write(&self.audience) = audience.map(Arc::new);
    }
}
