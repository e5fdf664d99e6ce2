use std::sync::Arc;

use super::*;
use crate::device_state::{DeviceState, LiveState};

fn link(id: &str) -> Arc<DeviceLink> {
    let (handle, _outbox, _mailbox) = SessionHandle::new(2);
    Arc::new(DeviceLink::new(handle, None, Arc::new(LiveState::new(DeviceId::new(id), DeviceState::default())), 0))
}

#[test]
fn a_replaced_device_is_not_removed_by_its_old_session() {
    let reg = Registry::default();
    let old = link("d1");
    let new = link("d1");
    reg.insert_device(old.clone());
    assert!(reg.insert_device(new.clone()).is_some());
    assert!(reg.remove_device(&old.deviceid, old.session.id).is_none());
    assert_eq!(reg.device(&new.deviceid).unwrap().session.id, new.session.id);
    assert!(reg.remove_device(&new.deviceid, new.session.id).is_some());
}

#[test]
fn users_keep_each_of_their_sessions() {
    let reg = Registry::default();
    let user = UserKey::new("u1");
    let (a, _oa, _ma) = SessionHandle::new(2);
    let (b, _ob, _mb) = SessionHandle::new(2);
    reg.insert_user(&user, a.clone());
    reg.insert_user(&user, b.clone());
    assert_eq!(reg.user_sessions(&user), 2);
    reg.remove_user(&user, a.id);
    let mut seen = Vec::new();
    reg.for_each_session(&user, |s| seen.push(s.id));
    assert_eq!(seen, vec![b.id]);
    reg.remove_user(&user, b.id);
    assert_eq!(reg.user_sessions(&user), 0);
}
