use super::*;

fn owner() -> UserKey {
    UserKey::new("owner")
}

/// Adds a waiter of the device's owner, with quotas out of the way.
fn add(t: &PendingTable, key: &str, tx: oneshot::Sender<Ack>, merge: Option<Box<RawValue>>, limit: usize) -> Option<u64> {
    let user = owner();
    t.add(key.into(), tx, merge, Asker { user: &user, owner: true }, Quota { per_user: usize::MAX / 4 }, limit)
}

fn ack(error: i64) -> Ack {
    Ack { error, params: None }
}

#[test]
fn waiters_with_the_same_sequence_complete_in_order() {
    let t = PendingTable::default();
    let (tx1, mut rx1) = oneshot::channel();
    let (tx2, mut rx2) = oneshot::channel();
    add(&t, "7", tx1, None, 8).unwrap();
    add(&t, "7", tx2, None, 8).unwrap();
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
    add(&t, "1", tx, Some(params.clone()), 8).unwrap();
    let mut merged = None;
    assert!(t.complete("1", ack(500), |p| merged = Some(p.get().to_owned())));
    assert_eq!(merged, None, "a device error changes nothing");
    let (tx, _rx) = oneshot::channel();
    add(&t, "2", tx, Some(params), 8).unwrap();
    t.complete("2", ack(0), |p| merged = Some(p.get().to_owned()));
    assert_eq!(merged.as_deref(), Some(r#"{"switch":"on"}"#));
}

#[test]
fn removed_and_failed_waiters_leave_nothing_behind() {
    let t = PendingTable::default();
    let (tx, _rx1) = oneshot::channel();
    let token = add(&t, "1", tx, None, 8).unwrap();
    t.remove("1", token);
    assert!(t.is_empty());
    let (tx, mut rx2) = oneshot::channel();
    add(&t, "2", tx, None, 8).unwrap();
    t.fail_all();
    assert!(matches!(rx2.try_recv(), Err(oneshot::error::TryRecvError::Closed)));
}

#[test]
fn the_pending_table_is_bounded_per_device() {
    let t = PendingTable::default();
    let (tx, _r1) = oneshot::channel();
    add(&t, "1", tx, None, 2).unwrap();
    let (tx, _r2) = oneshot::channel();
    add(&t, "2", tx, None, 2).unwrap();
    let (tx, _r3) = oneshot::channel();
    assert!(add(&t, "3", tx, None, 2).is_none());
    let (tx, _r4) = oneshot::channel();
    assert!(add(&t, "2", tx, None, 2).is_some(), "a second waiter for a waiting sequence still fits");
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

#[test]
fn each_user_has_a_quota_and_sharees_together_twice_that() {
    let t = PendingTable::default();
    let quota = Quota { per_user: 2 };
    let (owner, sam, kim, lee) = (owner(), UserKey::new("sam"), UserKey::new("kim"), UserKey::new("lee"));
    let mut keep = Vec::new();
    let mut try_add = |user: &UserKey, is_owner: bool, key: &str| {
        let (tx, rx) = oneshot::channel();
        keep.push(rx);
        t.add(key.into(), tx, None, Asker { user, owner: is_owner }, quota, 1024)
    };
    assert!(try_add(&sam, false, "s1").is_some());
    assert!(try_add(&sam, false, "s2").is_some());
    assert!(try_add(&sam, false, "s3").is_none(), "sam is at his quota");
    assert!(try_add(&kim, false, "k1").is_some());
    let k2 = try_add(&kim, false, "k2");
    assert!(k2.is_some());
    assert!(try_add(&lee, false, "l1").is_none(), "the sharees together are at twice the quota");
    assert!(try_add(&owner, true, "o1").is_some(), "the owner is not held back by sharees");
    assert!(try_add(&owner, true, "o2").is_some());
    assert!(try_add(&owner, true, "o3").is_none(), "the owner has a quota too");
    // A finished command gives its place back.
    t.remove("k2", k2.unwrap());
    assert!(t.complete("s1", ack(0), |_| {}));
    assert!(try_add(&lee, false, "l1").is_some());
    assert!(try_add(&sam, false, "s3").is_some());
    assert!(try_add(&lee, false, "l2").is_none());
}
