use super::*;

fn ack(error: i64) -> Ack {
    Ack { error, params: None }
}

#[test]
fn waiters_with_the_same_sequence_complete_in_order() {
    let t = PendingTable::default();
    let (tx1, mut rx1) = oneshot::channel();
    let (tx2, mut rx2) = oneshot::channel();
    t.add("7".into(), tx1, None, 8).unwrap();
    t.add("7".into(), tx2, None, 8).unwrap();
    assert!(t.complete("7", ack(0), |_| {}));
    assert_eq!(rx1.try_recv().unwrap().error, 0);
    assert!(rx2.try_recv().is_err());
    assert!(t.complete("7", ack(1), |_| {}));
    assert_eq!(rx2.try_recv().unwrap().error, 1);
    assert!(!t.complete("7", ack(0), |_| {}), "a late ack finds nobody");
    assert_eq!(t.len(), 0);
}

#[test]
fn only_a_successful_update_hands_over_its_params() {
    let t = PendingTable::default();
    let params = crate::protocol::raw(r#"{"switch":"on"}"#.to_owned());
    let (tx, _rx) = oneshot::channel();
    t.add("1".into(), tx, Some(params.clone()), 8).unwrap();
    let mut merged = None;
    assert!(t.complete("1", ack(500), |p| merged = Some(p.get().to_owned())));
    assert_eq!(merged, None, "a device error changes nothing");
    let (tx, _rx) = oneshot::channel();
    t.add("2".into(), tx, Some(params), 8).unwrap();
    t.complete("2", ack(0), |p| merged = Some(p.get().to_owned()));
    assert_eq!(merged.as_deref(), Some(r#"{"switch":"on"}"#));
}

#[test]
fn removed_and_failed_waiters_leave_nothing_behind() {
    let t = PendingTable::default();
    let (tx, _rx1) = oneshot::channel();
    let token = t.add("1".into(), tx, None, 8).unwrap();
    t.remove("1", token);
    assert!(t.is_empty());
    let (tx, mut rx2) = oneshot::channel();
    t.add("2".into(), tx, None, 8).unwrap();
    t.fail_all();
    assert!(matches!(rx2.try_recv(), Err(oneshot::error::TryRecvError::Closed)));
}

#[test]
fn the_pending_table_is_bounded_per_device() {
    let t = PendingTable::default();
    let (tx, _r1) = oneshot::channel();
    t.add("1".into(), tx, None, 2).unwrap();
    let (tx, _r2) = oneshot::channel();
    t.add("2".into(), tx, None, 2).unwrap();
    let (tx, _r3) = oneshot::channel();
    assert!(t.add("3".into(), tx, None, 2).is_none());
    let (tx, _r4) = oneshot::channel();
    assert!(t.add("2".into(), tx, None, 2).is_some(), "a second waiter for a waiting sequence still fits");
}

#[tokio::test(start_paused = true)]
async fn a_departed_state_is_kept_for_a_while() {
    let recent = RecentStates::default();
    let id = DeviceId::new("d1");
    recent.keep(&id, DeviceState::from_json(r#"{"switch":"on"}"#));
    assert_eq!(recent.take(&id).map(|s| s.to_json()).as_deref(), Some(r#"{"switch":"on"}"#));
    assert!(recent.take(&id).is_none(), "taken once");
    recent.keep(&id, DeviceState::default());
    tokio::time::advance(RECENT_STATE_TTL).await;
    assert!(recent.take(&id).is_none(), "expired");
}
