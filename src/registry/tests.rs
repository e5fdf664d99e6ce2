use super::*;

fn link(id: &str) -> (Arc<DeviceLink>, Outbox) {
    let (handle, rx, _control) = SessionHandle::new(2);
    (Arc::new(DeviceLink::new(DeviceId::new(id), handle, None, Default::default())), rx)
}

#[test]
fn waiters_with_the_same_sequence_complete_in_order() {
    let (l, _rx) = link("d1");
    let (tx1, mut rx1) = oneshot::channel();
    let (tx2, mut rx2) = oneshot::channel();
    l.add_waiter("7".into(), tx1, None, 8).unwrap();
    l.add_waiter("7".into(), tx2, None, 8).unwrap();
    assert!(l.complete("7", Ack { error: 0, params: None }, |_| {}));
    assert_eq!(rx1.try_recv().unwrap().error, 0);
    assert!(rx2.try_recv().is_err());
    assert!(l.complete("7", Ack { error: 1, params: None }, |_| {}));
    assert_eq!(rx2.try_recv().unwrap().error, 1);
    assert!(!l.complete("7", Ack { error: 0, params: None }, |_| {}), "a late ack finds nobody");
    assert_eq!(l.pending_len(), 0);
}

#[test]
fn removed_and_failed_waiters_leave_nothing_behind() {
    let (l, _rx) = link("d1");
    let (tx, _rx1) = oneshot::channel();
    let t = l.add_waiter("1".into(), tx, None, 8).unwrap();
    l.remove_waiter("1", t);
    assert_eq!(l.pending_len(), 0);
    let (tx, mut rx2) = oneshot::channel();
    l.add_waiter("2".into(), tx, None, 8).unwrap();
    l.fail_pending();
    assert!(matches!(rx2.try_recv(), Err(oneshot::error::TryRecvError::Closed)));
}

#[test]
fn a_full_outbox_closes_the_session_once() {
    let metrics = Metrics::default();
    let (handle, _rx, control) = SessionHandle::new(1);
    assert!(handle.deliver("a".into(), &metrics));
    assert!(!handle.deliver("b".into(), &metrics));
    assert!(!handle.deliver("c".into(), &metrics));
    assert_eq!(control.reason(), Some(CloseReason::SlowConsumer));
    assert_eq!(metrics.slow_consumers.load(Ordering::Relaxed), 1);
}

#[test]
fn a_replaced_device_is_not_removed_by_its_old_session() {
    let reg = Registry::default();
    let (old, _r1) = link("d1");
    let (new, _r2) = link("d1");
    reg.insert_device(old.clone());
    assert!(reg.insert_device(new.clone()).is_some());
    assert!(!reg.remove_device(&old.deviceid, old.session.id));
    assert_eq!(reg.device(&new.deviceid).unwrap().session.id, new.session.id);
    assert!(reg.remove_device(&new.deviceid, new.session.id));
}

#[test]
fn the_pending_table_is_bounded_per_device() {
    let (l, _rx) = link("d1");
    let (tx, _r1) = oneshot::channel();
    l.add_waiter("1".into(), tx, None, 2).unwrap();
    let (tx, _r2) = oneshot::channel();
    l.add_waiter("2".into(), tx, None, 2).unwrap();
    let (tx, _r3) = oneshot::channel();
    assert!(l.add_waiter("3".into(), tx, None, 2).is_none());
    let (tx, _r4) = oneshot::channel();
    assert!(l.add_waiter("2".into(), tx, None, 2).is_some(), "a second waiter for a waiting sequence still fits");
}

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

#[test]
fn the_outbox_is_bounded_and_closed_with_its_receiver() {
    let (handle, mut outbox, _control) = SessionHandle::new(2);
    assert_eq!(handle.offer("a".into()), Ok(()));
    assert_eq!(handle.offer("b".into()), Ok(()));
    assert_eq!(handle.offer("c".into()), Err(Refused::Full));
    assert_eq!(outbox.try_recv().as_ref().map(|f| f.as_str()), Some("a"));
    assert_eq!(handle.offer("c".into()), Ok(()));
    drop(outbox);
    assert_eq!(handle.offer("d".into()), Err(Refused::Closed));
}
