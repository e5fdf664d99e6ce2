use std::time::{Duration, Instant};

use serde_json::json;

use super::rule::{Rule, Watch, numeric};

fn rule(v: serde_json::Value) -> Rule {
    serde_json::from_value(v).unwrap()
}

#[test]
fn one_alarm_until_cleared() {
    let r = rule(json!({"param":"temperature","op":">","threshold":30,"clear":28}));
    r.check().unwrap();
    let mut w = Watch::default();
    let t = Instant::now();
    assert!(!w.observe(&r, 29.0, t));
    assert!(w.observe(&r, 31.0, t));
    assert!(!w.observe(&r, 35.0, t), "still over: no second alarm");
    assert!(!w.observe(&r, 29.0, t), "below the threshold but above clear: still tripped");
    assert!(!w.observe(&r, 31.0, t));
    assert!(!w.observe(&r, 28.0, t), "cleared");
    assert!(w.observe(&r, 30.5, t), "crossed again");
}

#[test]
fn cooldown_holds_a_cleared_rule_back() {
    let r = rule(json!({"param":"p","op":"<=","threshold":10,"cooldownSecs":60}));
    let mut w = Watch::default();
    let t = Instant::now();
    assert!(w.observe(&r, 10.0, t));
    assert!(!w.observe(&r, 11.0, t + Duration::from_secs(1)), "cleared");
    assert!(!w.observe(&r, 5.0, t + Duration::from_secs(30)), "cooling down");
    assert!(w.observe(&r, 5.0, t + Duration::from_secs(61)));
}

#[test]
fn every_op() {
    let t = Instant::now();
    for (op, fire, quiet) in [(">", 2.0, 1.0), (">=", 1.0, 0.5), ("<", 0.0, 1.0), ("<=", 1.0, 1.5), ("==", 1.0, 2.0)] {
        let r = rule(json!({"param":"p","op":op,"threshold":1}));
        r.check().unwrap();
        let mut w = Watch::default();
        assert!(!w.observe(&r, quiet, t), "{op} {quiet}");
        assert!(w.observe(&r, fire, t), "{op} {fire}");
        assert!(!w.observe(&r, quiet, t), "{op} clears");
        assert!(w.observe(&r, fire, t), "{op} again");
    }
}

#[test]
fn bad_rules_are_refused() {
    for bad in [
        json!({"param":"","op":">","threshold":1}),
        json!({"param":"p","op":">","threshold":1,"clear":2}),
        json!({"param":"p","op":"<","threshold":1,"clear":0}),
        json!({"param":"p","op":"==","threshold":1,"clear":0}),
        json!({"param":"p","op":">","threshold":1,"cooldownSecs":10_000_000}),
    ] {
        assert!(rule(bad.clone()).check().is_err(), "{bad}");
    }
    assert!(serde_json::from_value::<Rule>(json!({"param":"p","op":"!=","threshold":1})).is_err());
    assert!(serde_json::from_value::<Rule>(json!({"param":"p","op":">","threshold":"1"})).is_err());
    assert!(serde_json::from_value::<Rule>(json!({"param":"p","op":">","threshold":1,"extra":1})).is_err());
}

#[test]
fn numbers_and_numeric_strings() {
    assert_eq!(numeric(&json!(24.5)), Some(24.5));
    assert_eq!(numeric(&json!(" 24.5")), Some(24.5));
    assert_eq!(numeric(&json!("on")), None);
    assert_eq!(numeric(&json!(true)), None);
}

#[test]
fn rules_round_trip_as_posted() {
    let posted = json!({"param":"t","op":">=","threshold":30,"clear":28.5,"cooldownSecs":5});
    assert_eq!(serde_json::to_value(rule(posted.clone())).unwrap(), posted);
}
