//! Commands for a device that is offline right now: an `update` with `ttl` is kept (answered
//! `queued` at once), delivered after the device's register answer, and its ack reaches the
//! sending session with the original sequence while the user's other sessions hear the echo.
//! The edge cases persistent-RPC users report: ordering and replacement by key, no duplicates
//! after a reconnect or a replacing connection, expiry while offline and after a delivery that
//! was never acked, the bound, and the permission checked at queue time and again at delivery.

mod common;

use std::time::Duration;

use common::rest::api;
use common::{Client, TestHub, TestUser, wait_until, wait_until_async};
use serde_json::{Value, json};
use switchyard::ids::DeviceId;

const DEV: &str = "1000000077";

fn update(user: &TestUser, seq: &str, params: Value, ttl: Option<Value>) -> Value {
    let mut f =
        json!({"action":"update","deviceid":DEV,"apikey":user.apikey.as_str(),"userAgent":"app","sequence":seq,"ts":0,"params":params});
    if let Some(ttl) = ttl {
        f["ttl"] = ttl;
    }
    f
}

/// Sends an update with `ttl` seconds for the device `user` owns and asserts it was kept.
async fn keep(app: &mut Client, user: &TestUser, seq: &str, params: Value, ttl: u64) {
    keep_for(app, user, user, seq, params, ttl).await;
}

/// The same for a device `owner` owns (the answer carries the owner's apikey).
async fn keep_for(app: &mut Client, user: &TestUser, owner: &TestUser, seq: &str, params: Value, ttl: u64) {
    app.send(update(user, seq, params, Some(json!(ttl)))).await;
    let reply = next(app).await;
    assert_eq!(reply, json!({"error":0,"queued":true,"deviceid":DEV,"apikey":owner.apikey.as_str(),"sequence":seq}), "kept {seq}");
}

/// The next frame that is not a `sysmsg` (devices coming and going).
async fn next(c: &mut Client) -> Value {
    loop {
        let f = c.recv().await;
        if f["action"] != "sysmsg" {
            return f;
        }
    }
}

/// Asserts only `sysmsg` frames arrive for `ms` milliseconds.
async fn quiet(c: &mut Client, ms: u64) {
    let end = tokio::time::Instant::now() + Duration::from_millis(ms);
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return;
        }
        if let Ok(f) = tokio::time::timeout(left, c.recv()).await {
            assert_eq!(f["action"], "sysmsg", "expected nothing, got {f}");
        }
    }
}

/// The device's next command; asserts its sequence and params.
async fn command(dev: &mut Client, seq: &str, params: Value) -> Value {
    let cmd = dev.recv().await;
    assert_eq!((cmd["action"].as_str(), cmd["sequence"].as_str()), (Some("update"), Some(seq)), "{cmd}");
    assert_eq!(cmd["params"], params, "{cmd}");
    cmd
}

async fn ack(dev: &mut Client, cmd: &Value) {
    dev.send(json!({"error":0,"userAgent":"device","apikey":cmd["apikey"],"deviceid":DEV,"sequence":cmd["sequence"]})).await;
}

async fn offline(hub: &TestHub) {
    wait_until("the device is offline", || hub.hub.router.device_view(&DeviceId::new(DEV)).is_none()).await;
}

/// The device's history requests (newest first), once `pred` holds for one of them.
async fn history_with(hub: &TestHub, what: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    let requests = || async {
        let rows = hub.hub.store.history(DEV, i64::MAX, 100).await.unwrap();
        rows.into_iter().map(|r| serde_json::from_str::<Value>(&r.request).unwrap()).collect::<Vec<_>>()
    };
    wait_until_async(what, || async { requests().await.iter().any(&pred) }).await;
    requests().await
}

#[tokio::test]
async fn a_kept_update_follows_the_register_answer_and_its_ack_reaches_the_sender() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let mut sender = hub.app(&alice).await;
    let mut other = hub.app(&alice).await;

    // Without ttl nothing changed: an offline device is 504 at once.
    sender.send(update(&alice, "1", json!({"switch":"on"}), None)).await;
    let reply = next(&mut sender).await;
    assert_eq!((reply["error"].as_i64(), reply.get("queued")), (Some(504), None), "{reply}");
    // ttl 0 is the same as none.
    sender.send(update(&alice, "1b", json!({"switch":"on"}), Some(json!(0)))).await;
    assert_eq!(next(&mut sender).await["error"], 504);

    keep(&mut sender, &alice, "2", json!({"switch":"on"}), 60).await;
    // `device` asserts that the first frame is the register answer; the command comes after it.
    let mut dev = hub.device(DEV).await;
    let cmd = command(&mut dev, "2", json!({"switch":"on"})).await;
    assert_eq!(cmd["apikey"], alice.apikey.as_str());
    ack(&mut dev, &cmd).await;
    let answer = next(&mut sender).await;
    assert_eq!(answer, json!({"error":0,"deviceid":DEV,"apikey":alice.apikey.as_str(),"sequence":"2"}));
    let echo = next(&mut other).await;
    assert_eq!((echo["action"].as_str(), echo["userAgent"].as_str()), (Some("update"), Some("app")), "{echo}");
    assert_eq!(echo["params"], json!({"switch":"on"}));
    // The sender hears its ack, not the echo; the device hears it once.
    quiet(&mut sender, 300).await;
    dev.silent_for(300).await;
    let status = api(&hub, &alice).get("/v2/device/thing/status", &format!("type=1&id={DEV}")).await;
    assert_eq!(status.ok()["params"], json!({"switch":"on"}));
    let history = history_with(&hub, "the delivered command in history", |r| r["params"] == json!({"switch":"on"})).await;
    assert!(history.iter().all(|r| r.get("dropped").is_none()), "{history:?}");

    // For an online device a ttl changes nothing: a live command and its ack.
    sender.send(update(&alice, "3", json!({"switch":"off"}), Some(json!(60)))).await;
    let cmd = command(&mut dev, "3", json!({"switch":"off"})).await;
    ack(&mut dev, &cmd).await;
    assert_eq!(next(&mut sender).await, json!({"error":0,"deviceid":DEV,"apikey":alice.apikey.as_str(),"sequence":"3"}));
    hub.stop().await;
}

#[tokio::test]
async fn kept_commands_arrive_in_order_and_later_keys_replace_earlier_ones() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let mut app = hub.app(&alice).await;
    keep(&mut app, &alice, "q1", json!({"switch":"on"}), 60).await;
    keep(&mut app, &alice, "q2", json!({"color":"red","mode":"x"}), 60).await;
    keep(&mut app, &alice, "q3", json!({"switch":"off"}), 60).await; // q1 is gone
    keep(&mut app, &alice, "q4", json!({"mode":"y"}), 60).await; // q2 keeps only its color

    let mut dev = hub.device(DEV).await;
    for (seq, params) in [("q2", json!({"color":"red"})), ("q3", json!({"switch":"off"})), ("q4", json!({"mode":"y"}))] {
        let cmd = command(&mut dev, seq, params).await;
        ack(&mut dev, &cmd).await;
        let answer = next(&mut app).await;
        assert_eq!((answer["error"].as_i64(), answer["sequence"].as_str()), (Some(0), Some(seq)), "{answer}");
    }
    dev.silent_for(300).await;
    quiet(&mut app, 200).await;
    hub.stop().await;
}

#[tokio::test]
async fn a_reconnect_or_a_replacing_connection_gets_each_pending_command_once_and_an_acked_one_never() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let mut app = hub.app(&alice).await;
    keep(&mut app, &alice, "d1", json!({"switch":"on"}), 60).await;

    // Delivered, not acked, the device drops: it stays queued and comes again, once.
    let mut first = hub.device(DEV).await;
    command(&mut first, "d1", json!({"switch":"on"})).await;
    drop(first);
    offline(&hub).await;
    let mut second = hub.device(DEV).await;
    command(&mut second, "d1", json!({"switch":"on"})).await;
    second.silent_for(200).await;

    // A connection that replaces the one holding the unacked delivery gets it once too.
    let mut third = hub.device(DEV).await;
    second.recv_close().await;
    let cmd = command(&mut third, "d1", json!({"switch":"on"})).await;
    // Registering again on the same socket is answered, and delivers nothing.
    third
        .send(json!({"userAgent":"device","apikey":"key-1000000077","deviceid":DEV,"action":"register","version":2,"model":"EMU","ts":1}))
        .await;
    assert_eq!(third.recv().await["error"], 0);
    third.silent_for(200).await;
    ack(&mut third, &cmd).await;
    assert_eq!(next(&mut app).await["sequence"], "d1");
    quiet(&mut app, 200).await;

    // Acked: never delivered again.
    drop(third);
    offline(&hub).await;
    let mut fourth = hub.device(DEV).await;
    fourth.silent_for(500).await;
    assert!(hub.hub.store.queued_commands(&DeviceId::new(DEV), 0).await.unwrap().is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn expired_commands_are_dropped_recorded_and_told_to_their_sender() {
    let hub = TestHub::start_with(|s| s.set("ack_timeout_ms", "300")).await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let mut app = hub.app(&alice).await;

    // Expires while the device is offline.
    keep(&mut app, &alice, "e1", json!({"switch":"on"}), 1).await;
    let told = next(&mut app).await;
    assert_eq!((told["error"].as_i64(), told["sequence"].as_str()), (Some(504), Some("e1")), "{told}");
    assert!(told["reason"].as_str().is_some_and(|r| r.contains("expired")), "{told}");
    history_with(&hub, "the expired command in history", |r| r["dropped"] == "expired" && r["params"] == json!({"switch":"on"})).await;
    let mut dev = hub.device(DEV).await;
    dev.silent_for(300).await;
    drop(dev);
    offline(&hub).await;

    // Delivered before it expired, never acked, the device drops: kept until its ttl passes
    // (sent again at a register before then), then dropped and recorded the same way.
    keep(&mut app, &alice, "e2", json!({"switch":"off"}), 2).await;
    let mut dev = hub.device(DEV).await;
    command(&mut dev, "e2", json!({"switch":"off"})).await;
    // The ack timeout passes; the sender hears nothing yet, the command is still queued.
    quiet(&mut app, 500).await;
    drop(dev);
    offline(&hub).await;
    let told = next(&mut app).await;
    assert_eq!((told["error"].as_i64(), told["sequence"].as_str()), (Some(504), Some("e2")), "{told}");
    history_with(&hub, "the second expiry in history", |r| r["dropped"] == "expired" && r["params"] == json!({"switch":"off"})).await;
    let mut dev = hub.device(DEV).await;
    dev.silent_for(300).await;
    hub.stop().await;
}

#[tokio::test]
async fn a_command_delivered_before_it_expires_is_settled_by_its_ack_not_its_ttl() {
    let hub = TestHub::start().await; // the ack timeout (3 s) outlasts the 1 s ttl
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let mut app = hub.app(&alice).await;
    keep(&mut app, &alice, "x1", json!({"switch":"on"}), 1).await;
    let mut dev = hub.device(DEV).await;
    let cmd = command(&mut dev, "x1", json!({"switch":"on"})).await;
    // The ttl passes while the delivery waits for the ack; the expiry leaves it alone.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    ack(&mut dev, &cmd).await;
    assert_eq!(next(&mut app).await, json!({"error":0,"deviceid":DEV,"apikey":alice.apikey.as_str(),"sequence":"x1"}));
    quiet(&mut app, 500).await;
    let history = history_with(&hub, "the delivered command in history", |r| r["params"] == json!({"switch":"on"})).await;
    assert!(history.iter().all(|r| r.get("dropped").is_none()), "{history:?}");
    hub.stop().await;
}

#[tokio::test]
async fn the_queue_is_bounded_and_ttl_and_permissions_are_checked() {
    let hub = TestHub::start_with(|s| s.set("offline_queue_per_device", "2").set("offline_ttl_max_secs", "100")).await;
    let alice = hub.user("alice@example.com").await;
    let bob = hub.user("bob@example.com").await;
    let carol = hub.user("carol@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    hub.share(DEV, &carol).await;
    let mut app = hub.app(&alice).await;

    keep(&mut app, &alice, "b1", json!({"a":1}), 60).await;
    keep(&mut app, &alice, "b2", json!({"b":1}), 60).await;
    app.send(update(&alice, "b3", json!({"c":1}), Some(json!(60)))).await;
    let full = next(&mut app).await;
    assert_eq!((full["error"].as_i64(), full["sequence"].as_str()), (Some(429), Some("b3")), "{full}");
    assert!(full["reason"].as_str().is_some_and(|r| r.contains("full")), "{full}");
    // Replacing a key takes no new place.
    keep(&mut app, &alice, "b4", json!({"a":2}), 60).await;

    for (seq, ttl) in [("t1", json!(101)), ("t2", json!(-1)), ("t3", json!("60")), ("t4", json!(1.5))] {
        app.send(update(&alice, seq, json!({"x":1}), Some(ttl))).await;
        let bad = next(&mut app).await;
        assert_eq!((bad["error"].as_i64(), bad["sequence"].as_str()), (Some(400), Some(seq)), "{bad}");
    }
    app.send(json!({"action":"query","deviceid":DEV,"apikey":alice.apikey.as_str(),"sequence":"t5","params":[],"ttl":60})).await;
    assert_eq!(next(&mut app).await["error"], 400);

    // Someone else's device: the live command's refusal, nothing kept.
    let mut stranger = hub.app(&bob).await;
    stranger.send(update(&bob, "s1", json!({"switch":"on"}), Some(json!(60)))).await;
    let refused = next(&mut stranger).await;
    assert_eq!((refused["error"].as_i64(), refused.get("queued")), (Some(406), None), "{refused}");
    api(&hub, &bob).post("/v2/device/thing/status", json!({"type":1,"id":DEV,"params":{"switch":"on"},"ttl":60})).await.fails(405);

    // A sharee whose permit does not cover timers is refused at queue time.
    let owner = alice.apikey.clone();
    hub.hub.store.set_share_permit(&owner, DEV, &carol.apikey, 0).await.unwrap();
    hub.hub.acl.changed(&[DeviceId::new(DEV)]).await;
    let mut sharee = hub.app(&carol).await;
    sharee.send(update(&carol, "p1", json!({"timers":[{"mId":"t","enabled":1}]}), Some(json!(60)))).await;
    assert_eq!(next(&mut sharee).await["error"], 406);
    assert_eq!(hub.hub.store.queued_commands(&DeviceId::new(DEV), 0).await.unwrap().len(), 2);
    hub.stop().await;
}

#[tokio::test]
async fn the_senders_right_is_checked_again_at_delivery() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let carol = hub.user("carol@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    hub.share(DEV, &carol).await;
    let mut sharee = hub.app(&carol).await;
    keep_for(&mut sharee, &carol, &alice, "c1", json!({"switch":"on"}), 60).await;

    // The owner takes the share back before the device comes online.
    hub.hub.store.unshare_device(&alice.apikey, DEV, &carol.apikey).await.unwrap();
    hub.hub.acl.changed(&[DeviceId::new(DEV)]).await;
    let mut dev = hub.device(DEV).await;
    let told = next(&mut sharee).await;
    assert_eq!((told["error"].as_i64(), told["sequence"].as_str()), (Some(406), Some("c1")), "{told}");
    dev.silent_for(300).await;
    history_with(&hub, "the refused command in history", |r| r["dropped"] == "denied").await;
    assert!(hub.hub.store.queued_commands(&DeviceId::new(DEV), 0).await.unwrap().is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn rest_keeps_an_update_with_ttl_for_an_offline_device() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let a = api(&hub, &alice);
    let mut app = hub.app(&alice).await;

    a.post("/v2/device/thing/status", json!({"type":1,"id":DEV,"params":{"switch":"on"}})).await.fails(4002);
    let kept = a.post("/v2/device/thing/status", json!({"type":1,"id":DEV,"params":{"switch":"on"},"ttl":60})).await;
    assert_eq!(kept.ok(), &json!({"queued":true}));
    a.post("/v2/device/thing/status", json!({"type":1,"id":DEV,"params":{"switch":"on"},"ttl":-5})).await.fails(400);
    a.post("/v2/device/thing/status", json!({"type":2,"id":"g","params":{"switch":"on"},"ttl":60})).await.fails(400);
    a.post("/v2/device/thing/batch-status", json!({"thingList":[{"type":1,"id":DEV,"params":{"switch":"on"},"ttl":60}]})).await.fails(400);

    let mut dev = hub.device(DEV).await;
    let cmd = dev.recv().await;
    assert_eq!((cmd["action"].as_str(), &cmd["params"]), (Some("update"), &json!({"switch":"on"})), "{cmd}");
    ack(&mut dev, &cmd).await;
    // A REST sender has no session: every session of the user hears the echo.
    let echo = next(&mut app).await;
    assert_eq!((echo["action"].as_str(), &echo["params"]), (Some("update"), &json!({"switch":"on"})), "{echo}");
    dev.silent_for(300).await;
    hub.stop().await;
}

#[tokio::test]
async fn releasing_a_device_or_leaving_a_share_drops_what_was_kept_for_it() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let carol = hub.user("carol@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    hub.share(DEV, &carol).await;
    let mut owner = hub.app(&alice).await;
    let mut sharee = hub.app(&carol).await;
    keep(&mut owner, &alice, "o1", json!({"switch":"on"}), 60).await;
    keep_for(&mut sharee, &carol, &alice, "s1", json!({"color":"red"}), 60).await;
    let queued = || async { hub.hub.store.queued_commands(&DeviceId::new(DEV), 0).await.unwrap() };
    assert_eq!(queued().await.len(), 2);

    api(&hub, &carol).delete("/v2/device", &format!("deviceid={DEV}")).await.ok();
    let left = queued().await;
    assert_eq!((left.len(), left[0].user.as_str()), (1, alice.apikey.as_str()), "{left:?}");
    api(&hub, &alice).delete("/v2/device", &format!("deviceid={DEV}")).await.ok();
    assert!(queued().await.is_empty());
    hub.stop().await;
}
