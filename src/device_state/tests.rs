use super::*;

#[test]
fn device_state_merges_raw_values_within_its_cap() {
    let mut s = DeviceState::from_json(r#"{"switch":"off","rssi":-40}"#);
    let delta: BTreeMap<String, &RawValue> = serde_json::from_str(r#"{"switch":"on","timers":[1,2]}"#).unwrap();
    s.merge(delta, 1024).unwrap();
    assert_eq!(s.to_json(), r#"{"rssi":-40,"switch":"on","timers":[1,2]}"#);
    assert_eq!(s.pick(&["switch".to_owned(), "nope".to_owned()]).unwrap(), r#"{"switch":"on"}"#);
    assert!(s.pick(&["nope".to_owned()]).is_none());
    let before = s.to_json();
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(2000));
    let delta: BTreeMap<String, &RawValue> = serde_json::from_str(&big).unwrap();
    assert_eq!(s.merge(delta, 1024), Err(StateTooLarge { limit: 1024 }));
    assert_eq!(s.to_json(), before, "a refused report changes nothing");
    assert!(DeviceState::default().pick(&[]).is_none());
}
