use super::*;

#[test]
fn the_outbox_is_bounded_and_closed_with_its_receiver() {
    let (handle, mut outbox, _mailbox) = SessionHandle::new(2);
    assert_eq!(handle.offer("a".into()), Ok(()));
    assert_eq!(handle.offer("b".into()), Ok(()));
    assert_eq!(handle.offer("c".into()), Err(Refused::Full));
    assert_eq!(outbox.try_recv().as_ref().map(|f| f.as_str()), Some("a"));
    assert_eq!(handle.offer("c".into()), Ok(()));
    drop(outbox);
    assert_eq!(handle.offer("d".into()), Err(Refused::Closed));
}

#[test]
fn a_full_outbox_closes_the_session_once() {
    let metrics = Metrics::default();
    let (handle, _rx, mailbox) = SessionHandle::new(1);
    assert!(handle.deliver("a".into(), &metrics));
    assert!(!handle.deliver("b".into(), &metrics));
    assert!(!handle.deliver("c".into(), &metrics));
    assert_eq!(mailbox.reason(), Some(CloseReason::SlowConsumer));
    assert_eq!(metrics.slow_consumers.load(Ordering::Relaxed), 1);
}
