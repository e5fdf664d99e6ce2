//! What a sharee may change: the share's `permit` bits govern the device's `timers` and nothing
//! else. [`required`] says which bits a params change needs, [`allowed`] whether a permit holds
//! them. Pure functions over JSON, used by the router before it forwards a sharee's `update` and
//! by the REST status route, so both apply the same rule.
//!
//! Timers are matched by `mId` (entries without one are matched by equal content): an entry that
//! is new needs [`ADD_TIMER`], one that is gone needs [`DELETE_TIMER`], one whose fields changed
//! needs [`MODIFY_TIMER`], and one whose `enabled` changed needs [`ENABLE_TIMER`] (a change of
//! both needs both). A `timers` value that is not an array needs every timer bit.

use serde_json::Value;

/// Bit 1: add a timer.
pub const ADD_TIMER: i64 = 1;
/// Bit 2: modify a timer.
pub const MODIFY_TIMER: i64 = 2;
/// Bit 4: delete a timer.
pub const DELETE_TIMER: i64 = 4;
/// Bit 8: enable or disable a timer.
pub const ENABLE_TIMER: i64 = 8;
/// Every timer bit.
pub const ALL_TIMERS: i64 = ADD_TIMER | MODIFY_TIMER | DELETE_TIMER | ENABLE_TIMER;

/// Whether someone holding `permit` may apply `requested` to a device whose params are `current`.
pub fn allowed(permit: i64, current: &Value, requested: &Value) -> bool {
    required(current, requested) & !permit == 0
}

/// The permit bits that applying `requested` (an update's params) to `current` (the device's
/// params) needs; 0 when it does not touch `timers`.
pub fn required(current: &Value, requested: &Value) -> i64 {
    let Some(new) = requested.get("timers") else { return 0 };
    let Some(new) = new.as_array() else { return ALL_TIMERS };
    let old: &[Value] = current.get("timers").and_then(Value::as_array).map_or(&[], Vec::as_slice);
    timers_required(old, new)
}

fn timer_id(t: &Value) -> Option<&Value> {
    t.get("mId").filter(|id| !id.is_null())
}

fn timers_required(old: &[Value], new: &[Value]) -> i64 {
    let mut needs = 0;
    // Old entries still unmatched; a matched one is taken, so duplicates count once each.
    let mut left: Vec<Option<&Value>> = old.iter().map(Some).collect();
    for entry in new {
        let found = match timer_id(entry) {
            Some(id) => left.iter_mut().find(|o| o.is_some_and(|o| timer_id(o) == Some(id))),
            None => left.iter_mut().find(|o| o.is_some_and(|o| timer_id(o).is_none() && o == entry)),
        };
        match found.and_then(Option::take) {
            None => needs |= ADD_TIMER,
            Some(before) => needs |= change_required(before, entry),
        }
    }
    if left.iter().any(Option::is_some) {
        needs |= DELETE_TIMER;
    }
    needs
}

/// What changing one timer entry from `before` to `after` needs.
fn change_required(before: &Value, after: &Value) -> i64 {
    if before == after {
        return 0;
    }
    let (b, a) = match (before.as_object(), after.as_object()) {
        (Some(b), Some(a)) => (b, a),
        // Not objects: no `enabled` to tell apart, so it is a modification.
        _ => return MODIFY_TIMER,
    };
    let mut needs = 0;
    let keys = b.keys().chain(a.keys().filter(|k| !b.contains_key(*k)));
    for key in keys {
        if b.get(key) != a.get(key) {
            needs |= if key == "enabled" { ENABLE_TIMER } else { MODIFY_TIMER };
        }
    }
    needs
}

#[cfg(test)]
mod tests;
