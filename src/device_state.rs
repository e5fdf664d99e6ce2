//! A device's live state: its reported params, each key's latest value kept as raw JSON (merged
//! without re-encoding, size-capped), and the [`LiveState`] cell the router keeps per online
//! device and hands to the recorder, through a [`DirtyQueue`], when it changed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::ids::DeviceId;
use crate::sync::lock;

/// A device's reported params: each key's latest value kept as raw JSON, so reports are merged
/// and answered without re-encoding values, with their total size tracked for the cap.
#[derive(Debug, Default, Clone)]
pub struct DeviceState {
    values: BTreeMap<Box<str>, Box<RawValue>>,
    bytes: usize,
}

/// A report that would make the stored state larger than allowed.
#[derive(Debug, PartialEq, Eq)]
pub struct StateTooLarge {
    pub limit: usize,
}

fn entry_bytes(key: &str, value: &RawValue) -> usize {
    key.len() + value.get().len() + 4
}

impl DeviceState {
    /// Reads a stored JSON object; anything else is an empty state.
    pub fn from_json(text: &str) -> Self {
        let values: BTreeMap<Box<str>, Box<RawValue>> = serde_json::from_str(text).unwrap_or_default();
        let bytes = values.iter().map(|(k, v)| entry_bytes(k, v)).sum();
        DeviceState { values, bytes }
    }

    /// Merges a report's keys; refused whole when the result would exceed `limit` bytes.
    pub fn merge(&mut self, delta: BTreeMap<String, &RawValue>, limit: usize) -> Result<(), StateTooLarge> {
        let mut bytes = self.bytes;
        for (k, v) in &delta {
            bytes -= self.values.get(k.as_str()).map_or(0, |old| entry_bytes(k, old));
            bytes += entry_bytes(k, v);
        }
        if bytes > limit {
            return Err(StateTooLarge { limit });
        }
        for (k, v) in delta {
            self.values.insert(k.into(), v.to_owned());
        }
        self.bytes = bytes;
        Ok(())
    }

    /// The JSON object of the named keys (all when `keys` is empty); `None` when it would be empty.
    pub fn pick(&self, keys: &[String]) -> Option<String> {
        let picked: BTreeMap<&str, &RawValue> = if keys.is_empty() {
            self.values.iter().map(|(k, v)| (&**k, &**v)).collect()
        } else {
            keys.iter().filter_map(|k| self.values.get_key_value(k.as_str())).map(|(k, v)| (&**k, &**v)).collect()
        };
        (!picked.is_empty()).then(|| serde_json::to_string(&picked).expect("raw values serialize"))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.values).expect("raw values serialize")
    }

    /// The state's size as counted against the cap.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// One online device's state as the router keeps it: merged by reports and acked updates, read
/// for queries and REST, saved by the recorder when `dirty`.
#[derive(Debug)]
pub struct LiveState {
    pub deviceid: DeviceId,
    state: Mutex<DeviceState>,
    dirty: AtomicBool,
}

impl LiveState {
    pub fn new(deviceid: DeviceId, state: DeviceState) -> Self {
        LiveState { deviceid, state: Mutex::new(state), dirty: AtomicBool::new(false) }
    }

    pub fn merge(&self, delta: BTreeMap<String, &RawValue>, limit: usize) -> Result<(), StateTooLarge> {
        lock(&self.state).merge(delta, limit)
    }

    /// The JSON object of the named keys (all when `keys` is empty); `None` when empty.
    pub fn pick(&self, keys: &[String]) -> Option<String> {
        lock(&self.state).pick(keys)
    }

    pub fn to_json(&self) -> String {
        lock(&self.state).to_json()
    }

    pub fn bytes(&self) -> usize {
        lock(&self.state).bytes()
    }

    pub fn snapshot(&self) -> DeviceState {
        lock(&self.state).clone()
    }

    pub fn replace(&self, state: DeviceState) {
        *lock(&self.state) = state;
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// The state to save, clearing the dirty mark first (a change after this marks it again).
    pub fn take_for_save(&self) -> String {
        self.dirty.store(false, Ordering::Release);
        self.to_json()
    }
}

/// Where changed states go to be saved: the router marks, the recorder receives. Each state
/// is queued at most once while it is dirty, so the queue is bounded by the online devices.
#[derive(Clone, Debug)]
pub struct DirtyQueue(mpsc::UnboundedSender<Arc<LiveState>>);

impl DirtyQueue {
    pub fn new() -> (DirtyQueue, mpsc::UnboundedReceiver<Arc<LiveState>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (DirtyQueue(tx), rx)
    }

    pub fn mark(&self, live: &Arc<LiveState>) {
        if !live.dirty.swap(true, Ordering::AcqRel) {
            let _ = self.0.send(live.clone());
        }
    }
}

#[cfg(test)]
mod tests;
