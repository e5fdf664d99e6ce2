use super::*;

fn link(id: &str) -> (Arc<DeviceLink>, mpsc::Receiver<Utf8Bytes>) {
    let (handle, rx, _control) = SessionHandle::new(2);
    (Arc::new(DeviceLink::new(DeviceId::new(id), handle, None, Default::default())), rx)
}

#[test]
fn waiters_with_the_same_sequence_complete_in_order() {
    let (l, _rx) = link("d1");
    let (tx1, mut rx1) = oneshot::channel();
    let (tx2, mut rx2) = oneshot::channel();
    l.add_waiter("7".into(), tx1);
    l.add_waiter("7".into(), tx2);
    assert!(l.complete("7", Ack { error: 0, params: None }));
    assert_eq!(rx1.try_recv().unwrap().error, 0);
    assert!(rx2.try_recv().is_err());
    assert!(l.complete("7", Ack { error: 1, params: None }));
    assert_eq!(rx2.try_recv().unwrap().error, 1);
    assert!(!l.complete("7", Ack { error: 0, params: None }), "a late ack finds nobody");
    assert_eq!(l.pending_len(), 0);
}

#[test]
fn removed_and_failed_waiters_leave_nothing_behind() {
    let (l, _rx) = link("d1");
    let (tx, _rx1) = oneshot::channel();
    let t = l.add_waiter("1".into(), tx);
    l.remove_waiter("1", t);
    assert_eq!(l.pending_len(), 0);
    let (tx, mut rx2) = oneshot::channel();
    l.add_waiter("2".into(), tx);
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
