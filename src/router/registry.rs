//! Who is online on this node: device id → its [`DeviceLink`], user → that user's app sessions.
//! Both maps are sharded by key hash behind short mutexes that are never held across an
//! `.await`, so no global lock sits on the hot path.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex};

use super::link::DeviceLink;
use crate::ids::{DeviceId, SessionId, UserKey};
use crate::mailbox::SessionHandle;
use crate::sync::lock;

/// A fixed array of mutex-guarded maps, picked by key hash.
struct Sharded<K, V> {
    shards: Box<[Mutex<HashMap<K, V>>]>,
    hasher: RandomState,
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    fn new(count: usize) -> Self {
        Sharded { shards: (0..count).map(|_| Mutex::new(HashMap::new())).collect(), hasher: RandomState::new() }
    }

    fn shard(&self, key: &K) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
        let i = self.hasher.hash_one(key) as usize % self.shards.len();
        lock(&self.shards[i])
    }
}

const SHARDS: usize = 64;

/// Device → link and user → sessions, for this node only.
pub(super) struct Registry {
    devices: Sharded<DeviceId, Arc<DeviceLink>>,
    users: Sharded<UserKey, Vec<SessionHandle>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry { devices: Sharded::new(SHARDS), users: Sharded::new(SHARDS) }
    }
}

impl Registry {
    pub fn device(&self, id: &DeviceId) -> Option<Arc<DeviceLink>> {
        self.devices.shard(id).get(id).cloned()
    }

    /// Makes `link` the device's current connection; returns the one it replaced.
    pub fn insert_device(&self, link: Arc<DeviceLink>) -> Option<Arc<DeviceLink>> {
        self.devices.shard(&link.deviceid).insert(link.deviceid.clone(), link)
    }

    /// Removes the device's entry only if `session` still holds it; returns it.
    pub fn remove_device(&self, id: &DeviceId, session: SessionId) -> Option<Arc<DeviceLink>> {
        let mut shard = self.devices.shard(id);
        if shard.get(id).is_some_and(|l| l.session.id == session) { shard.remove(id) } else { None }
    }

    pub fn devices(&self) -> Vec<Arc<DeviceLink>> {
        self.devices.shards.iter().flat_map(|s| lock(s).values().cloned().collect::<Vec<_>>()).collect()
    }

    pub fn insert_user(&self, user: &UserKey, session: SessionHandle) {
        self.users.shard(user).entry(user.clone()).or_default().push(session);
    }

    pub fn remove_user(&self, user: &UserKey, session: SessionId) {
        let mut shard = self.users.shard(user);
        if let Some(list) = shard.get_mut(user) {
            list.retain(|s| s.id != session);
            if list.is_empty() {
                shard.remove(user);
            }
        }
    }

    /// Calls `f` for each session of `user` while its shard is locked; `f` must not block.
    pub fn for_each_session(&self, user: &UserKey, mut f: impl FnMut(&SessionHandle)) {
        if let Some(list) = self.users.shard(user).get(user) {
            list.iter().for_each(&mut f);
        }
    }

    pub fn user_sessions(&self, user: &UserKey) -> usize {
        self.users.shard(user).get(user).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests;
