use std::time::Duration;

use serde_json::value::RawValue;

use super::*;

fn offline() -> (Offline, DeliveryRequests) {
    Offline::new(16, Duration::from_secs(100))
}

fn mark_queued(o: &Offline, id: &DeviceId) {
    *lock(&o.devices).queued.entry(id.clone()).or_insert(0) += 1;
}

#[test]
fn one_delivery_per_device_and_a_register_during_it_asks_for_one_more_pass() {
    let (o, mut requests) = offline();
    let d = DeviceId::new("d1");
    // Nothing queued: a register starts nothing.
    o.deliver(&d);
    assert!(requests.try_recv().is_err());

    mark_queued(&o, &d);
    o.deliver(&d);
    assert_eq!(requests.try_recv().ok(), Some(d.clone()));
    // Registers while it runs start no second delivery; they ask for one more pass, once.
    o.deliver(&d);
    o.deliver(&d);
    assert!(requests.try_recv().is_err());
    assert!(o.pass_done(&d));
    assert!(!o.pass_done(&d));
    // Over: the next register starts a new one.
    o.deliver(&d);
    assert_eq!(requests.try_recv().ok(), Some(d));
}

#[test]
fn a_drained_device_is_forgotten_unless_a_command_came_meanwhile() {
    let (o, _requests) = offline();
    let d = DeviceId::new("d1");
    mark_queued(&o, &d);
    let seen = o.queued_count(&d).unwrap();
    mark_queued(&o, &d);
    o.drained(&d, seen);
    assert!(o.queued_count(&d).is_some(), "a command queued after the read is kept");
    let seen = o.queued_count(&d).unwrap();
    o.drained(&d, seen);
    assert_eq!(o.queued_count(&d), None);
}

#[test]
fn ttl_is_whole_seconds_up_to_the_maximum() {
    let (o, _requests) = offline();
    assert_eq!(o.ttl(0), Ok(None));
    assert_eq!(o.ttl(100), Ok(Some(Duration::from_secs(100))));
    assert_eq!(o.ttl(101), Err(BadTtl { max: 100 }));
    assert_eq!(o.ttl(-1), Err(BadTtl { max: 100 }));
    for bad in ["1.5", "\"60\"", "true", "1e3"] {
        let raw = RawValue::from_string(bad.to_owned()).unwrap();
        assert!(o.ttl_raw(&raw).is_err(), "{bad}");
    }
}

#[test]
fn a_command_out_for_delivery_is_marked_until_its_guard_drops() {
    let (o, _requests) = offline();
    let out = o.out(7);
    assert!(lock(&o.out).contains(&7));
    drop(out);
    assert!(lock(&o.out).is_empty());
}

#[test]
fn only_this_nodes_sessions_are_senders() {
    let (o, _requests) = offline();
    let mut cmd = QueuedCommand {
        id: 1,
        deviceid: DeviceId::new("d1"),
        user: UserKey::new("u"),
        origin_node: o.node().to_owned(),
        origin_session: Some(5),
        sequence: "\"1\"".into(),
        params: "{}".into(),
        queued_at: 0,
        expires_at: 1,
    };
    assert_eq!(o.sender_session(&cmd), Some(SessionId::from_stored(5)));
    cmd.origin_node = "another".into();
    assert_eq!(o.sender_session(&cmd), None);
}
