//! Who is online on this node: device id → its [`DeviceLink`], user → that user's app sessions.
//! Both maps are `dashmap`s (sharded by key hash behind short locks that are never held across
//! an `.await`), so no global lock sits on the hot path. `benches/hub.rs` (`registry_shape`)
//! measures them against the 64 mutex-guarded `HashMap`s this replaced.

use std::sync::Arc;

use dashmap::DashMap;

use super::link::DeviceLink;
use crate::ids::{DeviceId, SessionId, UserKey};
use crate::mailbox::SessionHandle;

/// Shards per map: more than dashmap's default on small machines, which measured faster here.
const SHARDS: usize = 64;

/// Device → link and user → sessions, for this node only.
pub(super) struct Registry {
    devices: DashMap<DeviceId, Arc<DeviceLink>>,
    users: DashMap<UserKey, Vec<SessionHandle>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry { devices: DashMap::with_shard_amount(SHARDS), users: DashMap::with_shard_amount(SHARDS) }
    }
}

impl Registry {
    pub fn device(&self, id: &DeviceId) -> Option<Arc<DeviceLink>> {
        self.devices.get(id).map(|l| l.value().clone())
    }

    /// Makes `link` the device's current connection; returns the one it replaced.
    pub fn insert_device(&self, link: Arc<DeviceLink>) -> Option<Arc<DeviceLink>> {
        self.devices.insert(link.deviceid.clone(), link)
    }

    /// Removes the device's entry only if `session` still holds it; returns it.
    pub fn remove_device(&self, id: &DeviceId, session: SessionId) -> Option<Arc<DeviceLink>> {
        self.devices.remove_if(id, |_, l| l.session.id == session).map(|(_, l)| l)
    }

    /// Removes the device's entry whoever holds it; returns it.
    pub fn remove_any_device(&self, id: &DeviceId) -> Option<Arc<DeviceLink>> {
        self.devices.remove(id).map(|(_, l)| l)
    }

    /// App sessions on this node.
    pub fn app_sessions(&self) -> usize {
        self.users.iter().map(|e| e.value().len()).sum()
    }

    pub fn devices(&self) -> Vec<Arc<DeviceLink>> {
        self.devices.iter().map(|e| e.value().clone()).collect()
    }

    pub fn insert_user(&self, user: &UserKey, session: SessionHandle) {
        self.users.entry(user.clone()).or_default().push(session);
    }

    pub fn remove_user(&self, user: &UserKey, session: SessionId) {
        if let Some(mut list) = self.users.get_mut(user) {
            list.retain(|s| s.id != session);
        }
        self.users.remove_if(user, |_, list| list.is_empty());
    }

    /// Calls `f` for each session of `user` while its shard is read-locked; `f` must not block.
    pub fn for_each_session(&self, user: &UserKey, mut f: impl FnMut(&SessionHandle)) {
        if let Some(list) = self.users.get(user) {
            list.iter().for_each(&mut f);
        }
    }

    pub fn user_sessions(&self, user: &UserKey) -> usize {
        self.users.get(user).map_or(0, |l| l.len())
    }

    /// Every session on this node: devices first, then apps.
    pub fn sessions(&self) -> Vec<SessionHandle> {
        let mut all: Vec<SessionHandle> = self.devices.iter().map(|e| e.value().session.clone()).collect();
        for e in self.users.iter() {
            all.extend(e.value().iter().cloned());
        }
        all
    }
}

#[cfg(test)]
mod tests;
