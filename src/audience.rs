//! Who may reach a device, and what its owner asked to be recorded: the in-memory view of
//! sharing and settings that the router judges commands and fans reports out by. The store loads
//! it; nothing here touches the store.

use crate::ids::UserKey;

/// Who may hear and command a device: its owner first, then the users it is shared with, with
/// what each sharee may change and what the owner asked to be recorded and told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    pub owner: UserKey,
    pub sharees: Vec<UserKey>,
    /// Each sharee's share `permit` (see [`crate::permit`]), in the order of `sharees`.
    pub permits: Vec<i64>,
    pub settings: DeviceSettings,
}

/// A device's `settings` as its owner set them (the seed's defaults when unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSettings {
    /// `opsNotify`: file an `opsNotify_v2` message for each operation (default off).
    pub ops_notify: bool,
    /// `opsHistory`: record operations in the device's history (default on).
    pub ops_history: bool,
    /// `alarmNotify`: file an `alarmNotify_v2` message for each alarm report (default on).
    pub alarm_notify: bool,
}

impl Default for DeviceSettings {
    fn default() -> Self {
        DeviceSettings { ops_notify: false, ops_history: true, alarm_notify: true }
    }
}

impl DeviceSettings {
    /// Reads the stored JSON object; missing or unreadable keys keep their defaults.
    pub fn from_json(text: &str) -> Self {
        let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let flag = |key: &str, default: bool| v.get(key).and_then(serde_json::Value::as_i64).map_or(default, |n| n != 0);
        let d = DeviceSettings::default();
        DeviceSettings {
            ops_notify: flag("opsNotify", d.ops_notify),
            ops_history: flag("opsHistory", d.ops_history),
            alarm_notify: flag("alarmNotify", d.alarm_notify),
        }
    }
}

impl Audience {
    /// An audience of the owner alone, with default settings.
    pub fn owner_only(owner: UserKey) -> Self {
        Audience { owner, sharees: Vec::new(), permits: Vec::new(), settings: DeviceSettings::default() }
    }

    /// The share permit of `user` when the device is shared with them (`None` for the owner and
    /// for strangers).
    pub fn permit_of(&self, user: &UserKey) -> Option<i64> {
        self.sharees.iter().position(|k| k == user).map(|i| self.permits.get(i).copied().unwrap_or(0))
    }

    pub fn contains(&self, user: &UserKey) -> bool {
        &self.owner == user || self.sharees.contains(user)
    }

    pub fn members(&self) -> impl Iterator<Item = &UserKey> {
        std::iter::once(&self.owner).chain(self.sharees.iter())
    }
}
