//! The recorder's own connection ([`Committer`]: one SQLite transaction on the writer's thread,
//! or one PostgreSQL statement) writes exactly what the store's reference path
//! ([`Store::commit_group`], a transaction of separate statements) writes: the same states, the
//! same history rows with the same account labels and sizes, the same usage answered. Runs on
//! the backend under test (SQLite, or PostgreSQL with `SWITCHYARD_TEST_DATABASE_URL`).

mod common;

use std::collections::HashMap;

use common::database::open_test_store;
use switchyard::ids::{DeviceId, UserKey};
use switchyard::store::{Actor, HistoryEntry, Operation, Store, Usage};

/// One operation on `device` at `t`, sent by `actor`.
fn op(device: &str, t: i64, actor: Option<Actor>, history: bool) -> Operation {
    Operation {
        deviceid: DeviceId::new(device),
        user_agent: if actor.is_some() { "app" } else { "device" },
        ops_switchs: format!("[{{\"outlet\":{t}}}]"),
        request: format!("{{\"action\":\"update\",\"params\":{{\"n\":{t},\"name\":\"中文\"}}}}"),
        actor,
        ops_time: 1_700_000_000_000 + t,
        history,
        notices: Vec::new(),
    }
}

/// A store with three users (email; phone only; neither) and two devices, and the group to write.
async fn setup(store: &Store, tag: &str) -> (Vec<(DeviceId, String)>, Vec<Operation>) {
    let mailed = store.add_user(Some(&format!("{tag}@x.cc")), None, "+86", "h", "cn").await.unwrap();
    let phoned = store.add_user(None, Some(&format!("+86139{}", &tag[..1].repeat(8))), "+86", "h", "cn").await.unwrap();
    let bare = UserKey::new(format!("no-such-user-{tag}"));
    let (d1, d2) = (format!("{tag}d1"), format!("{tag}d2"));
    for d in [&d1, &d2] {
        store.add_device(&DeviceId::new(d.as_str()), "fk", "M", 1, Some(&mailed), "dev").await.unwrap();
    }
    let states = vec![
        (DeviceId::new(d1.as_str()), r#"{"switch":"on","n":1}"#.to_owned()),
        (DeviceId::new(d2.as_str()), r#"{"switch":"off"}"#.to_owned()),
    ];
    let ops = vec![
        op(&d1, 1, Some(Actor::User(mailed.clone())), true),
        op(&d1, 2, None, true),
        op(&d2, 3, Some(Actor::User(phoned)), true),
        op(&d2, 4, Some(Actor::User(bare)), true),
        op(&d1, 5, Some(Actor::Operator("ops@example.com".into())), true),
        op(&d2, 6, Some(Actor::User(mailed)), false),
        op(&d1, 7, None, true),
    ];
    (states, ops)
}

/// What the store holds of a device afterwards: its state and its history, oldest first.
async fn written(store: &Store, device: &DeviceId) -> (String, Vec<HistoryEntry>, Usage) {
    let params = store.device_record(device.as_str()).await.unwrap().unwrap().params;
    let mut history = store.history(device.as_str(), i64::MAX, 100).await.unwrap();
    history.reverse();
    (params, history, store.history_usage(device).await.unwrap())
}

/// The tag's part of a device id or account, so both paths' figures compare.
fn untag(s: &str, tag: &str) -> String {
    s.replace(tag, "T")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorders_own_connection_writes_what_the_reference_path_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_test_store(dir.path()).await;

    // The reference: the store's transaction of separate statements.
    let (states, ops) = setup(&store, "aaaa").await;
    let by_reference = store.commit_group(&states, &ops).await.unwrap();

    // The recorder's connection, from a thread outside the runtime as the writer calls it.
    let (states2, ops2) = setup(&store, "bbbb").await;
    let mut committer = store.committer().unwrap();
    let runtime = tokio::runtime::Handle::current();
    let (by_committer, _committer) = tokio::task::spawn_blocking(move || {
        let added = committer.commit_group(&states2, &ops2, &runtime).unwrap();
        (added, committer)
    })
    .await
    .unwrap();

    let normal = |added: HashMap<DeviceId, Usage>, tag: &str| -> Vec<(String, Usage)> {
        let mut v: Vec<_> = added.into_iter().map(|(d, u)| (untag(d.as_str(), tag), u)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(normal(by_committer, "bbbb"), normal(by_reference, "aaaa"), "usage answered");
    for d in ["d1", "d2"] {
        let (p1, h1, u1) = written(&store, &DeviceId::new(format!("aaaa{d}"))).await;
        let (p2, h2, u2) = written(&store, &DeviceId::new(format!("bbbb{d}"))).await;
        assert_eq!(p2, p1, "state of {d}");
        assert_eq!(u2, u1, "stored usage of {d}");
        let rows = |h: Vec<HistoryEntry>, tag: &str| -> Vec<(String, String, String, String, String, i64)> {
            h.into_iter()
                .map(|e| (untag(&e.deviceid, tag), e.user_agent, e.ops_switchs, e.request, untag(&e.ops_account, tag), e.ops_time))
                .collect()
        };
        let (r1, r2) = (rows(h1, "aaaa"), rows(h2, "bbbb"));
        assert_eq!(r2, r1, "history of {d}");
        assert!(!r1.is_empty());
    }
    // The labels themselves: email, phone, the apikey of an unknown user, the operator, none.
    let accounts: Vec<String> = written(&store, &DeviceId::new("bbbbd1")).await.1.into_iter().map(|e| e.ops_account).collect();
    assert_eq!(accounts, ["bbbb@x.cc", "", "operator:ops@example.com", ""]);
    let accounts: Vec<String> = written(&store, &DeviceId::new("bbbbd2")).await.1.into_iter().map(|e| e.ops_account).collect();
    assert_eq!(accounts, [format!("+86139{}", "b".repeat(8)), "no-such-user-bbbb".to_owned()]);
}
