//! Entry points for the fuzz targets (the `fuzz/` crate), not an API: one text frame through an
//! app's or a device's session handler exactly as the session loop hands it over, without a
//! socket. The caller owns the hub and whatever device session it attached.

use futures_util::stream::FuturesUnordered;

use super::{app, device};
use crate::hub::Hub;
use crate::ids::{DeviceId, SessionId, UserKey};

/// One frame from an app session of `user` that has nothing in flight. The commands it routes
/// are abandoned when this returns, as when the session ends (their pending entries go with them).
pub async fn app_frame(hub: &Hub, user: &UserKey, session: SessionId, text: &str) -> Option<String> {
    let mut waits = FuturesUnordered::new();
    let mut reachable = None;
    app::on_text(hub, user, session, text, &mut waits, &mut reachable).await
}

/// One frame from the session of device `deviceid` (owned by `owner`); the answer it would send,
/// a report's success answer included (its commit is not awaited).
pub fn device_frame(hub: &Hub, deviceid: &DeviceId, session: SessionId, owner: &str, text: &str) -> Option<String> {
    let device = device::Device::new(deviceid.clone(), session, owner.to_owned());
    device::on_text(hub, &device, text).map(device::Answer::into_text)
}
