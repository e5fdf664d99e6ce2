use serde_json::json;

use super::*;

fn timer(id: &str, at: &str, enabled: i64) -> Value {
    json!({"mId": id, "type": "once", "at": at, "enabled": enabled, "do": {"switch": "on"}})
}

fn current() -> Value {
    json!({"switch": "off", "timers": [timer("a", "2026-01-01T00:00:00Z", 1), timer("b", "2026-01-02T00:00:00Z", 1)]})
}

#[test]
fn params_without_timers_need_nothing() {
    assert_eq!(required(&current(), &json!({"switch": "on"})), 0);
    assert!(allowed(0, &current(), &json!({"switch": "on", "pulse": "on"})));
}

#[test]
fn the_same_timers_need_nothing() {
    let same = json!({"timers": current()["timers"].clone()});
    assert_eq!(required(&current(), &same), 0);
    assert!(allowed(0, &current(), &same));
}

#[test]
fn a_new_timer_needs_add() {
    let req = json!({"timers": [timer("a", "2026-01-01T00:00:00Z", 1), timer("b", "2026-01-02T00:00:00Z", 1), timer("c", "x", 1)]});
    assert_eq!(required(&current(), &req), ADD_TIMER);
    assert!(allowed(ADD_TIMER, &current(), &req));
    assert!(!allowed(MODIFY_TIMER | DELETE_TIMER | ENABLE_TIMER, &current(), &req));
}

#[test]
fn a_removed_timer_needs_delete() {
    let req = json!({"timers": [timer("a", "2026-01-01T00:00:00Z", 1)]});
    assert_eq!(required(&current(), &req), DELETE_TIMER);
    assert!(allowed(DELETE_TIMER, &current(), &req));
    assert!(!allowed(ADD_TIMER | MODIFY_TIMER | ENABLE_TIMER, &current(), &req));
    assert_eq!(required(&current(), &json!({"timers": []})), DELETE_TIMER);
}

#[test]
fn a_changed_timer_needs_modify() {
    let req = json!({"timers": [timer("a", "2026-03-01T00:00:00Z", 1), timer("b", "2026-01-02T00:00:00Z", 1)]});
    assert_eq!(required(&current(), &req), MODIFY_TIMER);
    assert!(allowed(MODIFY_TIMER, &current(), &req));
    assert!(!allowed(ENABLE_TIMER, &current(), &req));
}

#[test]
fn only_enabled_changed_needs_enable() {
    let req = json!({"timers": [timer("a", "2026-01-01T00:00:00Z", 0), timer("b", "2026-01-02T00:00:00Z", 1)]});
    assert_eq!(required(&current(), &req), ENABLE_TIMER);
    assert!(allowed(ENABLE_TIMER, &current(), &req));
    assert!(!allowed(MODIFY_TIMER, &current(), &req));
}

#[test]
fn enabled_and_other_fields_changed_need_both() {
    let req = json!({"timers": [timer("a", "2026-05-01T00:00:00Z", 0), timer("b", "2026-01-02T00:00:00Z", 1)]});
    assert_eq!(required(&current(), &req), MODIFY_TIMER | ENABLE_TIMER);
    assert!(!allowed(MODIFY_TIMER, &current(), &req));
    assert!(allowed(MODIFY_TIMER | ENABLE_TIMER, &current(), &req));
}

#[test]
fn order_does_not_matter() {
    let req = json!({"timers": [timer("b", "2026-01-02T00:00:00Z", 1), timer("a", "2026-01-01T00:00:00Z", 1)]});
    assert_eq!(required(&current(), &req), 0);
}

#[test]
fn replacing_one_timer_needs_add_and_delete() {
    let req = json!({"timers": [timer("a", "2026-01-01T00:00:00Z", 1), timer("z", "2026-01-02T00:00:00Z", 1)]});
    assert_eq!(required(&current(), &req), ADD_TIMER | DELETE_TIMER);
}

#[test]
fn timers_that_are_not_an_array_need_everything() {
    assert_eq!(required(&current(), &json!({"timers": "none"})), ALL_TIMERS);
    assert_eq!(required(&current(), &json!({"timers": null})), ALL_TIMERS);
    assert!(allowed(ALL_TIMERS, &current(), &json!({"timers": {}})));
    assert!(!allowed(ADD_TIMER | DELETE_TIMER | MODIFY_TIMER, &current(), &json!({"timers": {}})));
}

#[test]
fn a_device_without_timers_counts_as_an_empty_list() {
    let req = json!({"timers": [timer("a", "x", 1)]});
    assert_eq!(required(&json!({"switch": "on"}), &req), ADD_TIMER);
    assert_eq!(required(&json!({}), &json!({"timers": []})), 0);
    assert_eq!(required(&json!({"timers": "junk"}), &req), ADD_TIMER);
}

#[test]
fn entries_without_an_id_match_by_content() {
    let cur = json!({"timers": [{"at": "1", "enabled": 1}]});
    assert_eq!(required(&cur, &json!({"timers": [{"at": "1", "enabled": 1}]})), 0);
    // Without an id a changed entry cannot be told from a replaced one.
    assert_eq!(required(&cur, &json!({"timers": [{"at": "1", "enabled": 0}]})), ADD_TIMER | DELETE_TIMER);
}

#[test]
fn a_duplicated_id_counts_as_a_new_timer() {
    let t = timer("a", "2026-01-01T00:00:00Z", 1);
    let req = json!({"timers": [t.clone(), t, timer("b", "2026-01-02T00:00:00Z", 1)]});
    assert_eq!(required(&current(), &req), ADD_TIMER);
}

#[test]
fn a_full_permit_allows_anything() {
    for req in [json!({"timers": []}), json!({"timers": [timer("q", "1", 0)]}), json!({"timers": 5})] {
        assert!(allowed(ALL_TIMERS, &current(), &req));
    }
}
