//! Operation history and the notices operations file, through real sockets and the REST API:
//! what `GET /v2/device/history` answers after app commands and device reports, paging and its
//! limits, who may read and clear it, the device's settings (`opsHistory`, `opsNotify`,
//! `alarmNotify`) and that a clean shutdown writes everything acknowledged.

mod common;

use std::time::{Duration, Instant};

use common::rest::{Answer, api};
use common::{Client, TestHub, TestUser};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Adds an unowned factory record and claims it for `owner` through `POST /v2/device/add` with
/// `settings`, as an app does.
async fn add_device(hub: &TestHub, owner: &TestUser, id: &str, settings: Value) {
    hub.device_record(id, None).await;
    let digest = hex::encode(Sha256::digest(format!("{id}key-{id}").as_bytes()));
    api(hub, owner)
        .post("/v2/device/add", json!({"name": "Lamp", "deviceid": id, "settings": settings, "digest": digest, "chipid": ""}))
        .await
        .ok();
}

/// Sends an app `update` and plays the device acking it; returns the app's answer.
async fn update(app: &mut Client, device: &mut Client, id: &str, seq: &str, params: Value, error: i64) -> Value {
    app.send(json!({"action":"update","deviceid":id,"apikey":"","userAgent":"app","sequence":seq,"params":params})).await;
    let cmd = device.recv().await;
    assert_eq!(cmd["action"], "update", "{cmd}");
    assert_eq!(cmd["params"], params);
    device.send(json!({"error":error,"deviceid":id,"userAgent":"device","sequence":seq})).await;
    loop {
        let reply = app.recv().await;
        if reply["sequence"] == seq {
            return reply;
        }
    }
}

/// The device reports state and reads its ack.
async fn report(device: &mut Client, id: &str, params: Value) {
    device.send(json!({"action":"update","deviceid":id,"apikey":"x","userAgent":"device","params":params})).await;
    let ack = device.recv().await;
    assert_eq!(ack["error"], 0, "{ack}");
}

/// Reads the history until it holds `n` entries (it is written in the background).
async fn history_of(hub: &TestHub, user: &TestUser, id: &str, n: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let a = api(hub, user).get("/v2/device/history", &format!("deviceid={id}")).await;
        let list = a.ok()["histories"].as_array().cloned().unwrap();
        if list.len() >= n || Instant::now() > until {
            assert_eq!(list.len(), n, "history of {id}: {list:?}");
            return list;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The caller's messages of one type in their current family, waiting until there are `n`.
async fn messages_of(hub: &TestHub, user: &TestUser, msg_type: &str, n: usize) -> Vec<Value> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let a = api(hub, user).get("/v2/message/read", "").await;
        let list: Vec<Value> =
            a.ok()["messageList"].as_array().cloned().unwrap().into_iter().filter(|m| m["msgType"] == msg_type).collect();
        if list.len() >= n || Instant::now() > until {
            assert_eq!(list.len(), n, "{msg_type} messages: {list:?}");
            return list;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lets the writer drain what is queued, for checks that nothing more arrives.
async fn settle(hub: &TestHub) {
    let recorded = || hub.hub.metrics.history_recorded.load(std::sync::atomic::Ordering::Relaxed);
    let mut last = recorded();
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = recorded();
        if now == last {
            return;
        }
        last = now;
    }
}

#[tokio::test]
async fn app_commands_and_device_reports_are_recorded_newest_first() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    let bob = hub.user("bob@x.cc").await;
    hub.device_record("1000000001", Some(&alice)).await;
    let mut device = hub.device("1000000001").await;
    hub.share("1000000001", &bob).await;
    let mut app = hub.app(&alice).await;
    let mut bob_app = hub.app(&bob).await;

    let before = switchyard::clock::now_millis();
    assert_eq!(update(&mut app, &mut device, "1000000001", "s1", json!({"switch":"on"}), 0).await["error"], 0);
    report(&mut device, "1000000001", json!({"switch":"on","rssi":-40})).await;
    bob_app.send(json!({"action":"update","deviceid":"1000000001","apikey":alice.apikey.as_str(),"selfApikey":bob.apikey.as_str(),"userAgent":"app","sequence":"b1","params":{"switches":[{"outlet":0,"switch":"on"},{"outlet":2,"switch":"off"}]}})).await;
    let cmd = device.recv().await;
    device.send(json!({"error":0,"deviceid":"1000000001","sequence":cmd["sequence"].clone()})).await;
    app.send(json!({"action":"query","deviceid":"1000000001","apikey":"","userAgent":"app","sequence":"q1","params":["switch"]})).await;
    let q = device.recv().await;
    assert_eq!(q["action"], "query");
    device.send(json!({"error":0,"deviceid":"1000000001","sequence":"q1","params":{"switch":"on"}})).await;

    let list = history_of(&hub, &alice, "1000000001", 4).await;
    let times: Vec<i64> = list.iter().map(|h| h["opsTime"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    assert!(times.iter().all(|t| *t >= before && *t <= switchyard::clock::now_millis()));

    let query = &list[0];
    assert_eq!(query["userAgent"], "app");
    assert_eq!(query["opsAccount"], "alice@x.cc");
    assert_eq!(query["opsSwitchs"], "");
    let request: Value = serde_json::from_str(query["request"].as_str().unwrap()).unwrap();
    assert_eq!(request, json!({"action":"query","userAgent":"app","params":["switch"]}));

    let shared = &list[1];
    assert_eq!(shared["opsAccount"], "bob@x.cc");
    assert_eq!(shared["opsSwitchs"], "outlet0,outlet2");

    let reported = &list[2];
    assert_eq!(reported["deviceid"], "1000000001");
    assert_eq!(reported["userAgent"], "device");
    assert_eq!(reported["opsAccount"], "");
    assert_eq!(reported["opsSwitchs"], "switch");
    let request: Value = serde_json::from_str(reported["request"].as_str().unwrap()).unwrap();
    assert_eq!(request, json!({"action":"update","userAgent":"device","params":{"switch":"on","rssi":-40}}));

    let commanded = &list[3];
    assert_eq!(commanded["userAgent"], "app");
    assert_eq!(commanded["opsAccount"], "alice@x.cc");
    assert_eq!(commanded["opsSwitchs"], "switch");
    let request: Value = serde_json::from_str(commanded["request"].as_str().unwrap()).unwrap();
    assert_eq!(request, json!({"action":"update","userAgent":"app","params":{"switch":"on"}}));

    // The sharee reads the same history.
    assert_eq!(history_of(&hub, &bob, "1000000001", 4).await, list);
    assert!(hub.hub.metrics.history_recorded.load(std::sync::atomic::Ordering::Relaxed) >= 4);
    hub.stop().await;
}

#[tokio::test]
async fn paging_with_from_and_num() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    hub.device_record("1000000001", Some(&alice)).await;
    let mut device = hub.device("1000000001").await;
    for i in 0..5 {
        report(&mut device, "1000000001", json!({"n": i})).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let all = history_of(&hub, &alice, "1000000001", 5).await;
    let n_of = |h: &Value| serde_json::from_str::<Value>(h["request"].as_str().unwrap()).unwrap()["params"]["n"].clone();
    assert_eq!(all.iter().map(n_of).collect::<Vec<_>>(), [json!(4), json!(3), json!(2), json!(1), json!(0)]);

    let rest = api(&hub, &alice);
    let two = rest.get("/v2/device/history", "deviceid=1000000001&num=2").await;
    assert_eq!(two.ok()["histories"].as_array().unwrap().len(), 2);
    let from = all[1]["opsTime"].as_i64().unwrap();
    let older = rest.get("/v2/device/history", &format!("deviceid=1000000001&from={from}&num=30")).await;
    let older = older.ok()["histories"].as_array().cloned().unwrap();
    assert_eq!(older.iter().map(n_of).collect::<Vec<_>>(), [json!(2), json!(1), json!(0)]);
    let none = rest.get("/v2/device/history", "deviceid=1000000001&from=1").await;
    assert_eq!(none.ok()["histories"], json!([]));
    hub.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_400() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    hub.device_record("1000000001", Some(&alice)).await;
    let rest = api(&hub, &alice);
    for query in [
        "",
        "num=5",
        "deviceid=1000000001&num=0",
        "deviceid=1000000001&num=31",
        "deviceid=1000000001&num=-1",
        "deviceid=1000000001&num=ten",
        "deviceid=1000000001&from=soon",
        "deviceid=1000000001&from=-5",
    ] {
        rest.get("/v2/device/history", query).await.fails(400);
    }
    rest.get("/v2/device/history", "deviceid=1000000001&num=1").await.ok();
    rest.get("/v2/device/history", "deviceid=1000000001&num=30").await.ok();
    rest.delete("/v2/device/history", "").await.fails(400);
    rest.call(reqwest::Method::DELETE, "/v2/device/history", "", Some(&json!({"deviceid": 5}))).await.fails(400);
    hub.stop().await;
}

#[tokio::test]
async fn only_the_owner_and_sharees_read_and_only_the_owner_clears() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    let bob = hub.user("bob@x.cc").await;
    let carol = hub.user("carol@x.cc").await;
    hub.device_record("1000000001", Some(&alice)).await;
    hub.device_record("1000000002", Some(&carol)).await;
    hub.device_record("1000000003", None).await;
    hub.share("1000000001", &bob).await;
    let mut device = hub.device("1000000001").await;
    report(&mut device, "1000000001", json!({"switch":"off"})).await;
    history_of(&hub, &alice, "1000000001", 1).await;

    // Strangers, unknown and unowned ids look alike.
    api(&hub, &carol).get("/v2/device/history", "deviceid=1000000001").await.fails(405);
    api(&hub, &alice).get("/v2/device/history", "deviceid=1000000002").await.fails(405);
    api(&hub, &alice).get("/v2/device/history", "deviceid=1000000003").await.fails(405);
    api(&hub, &alice).get("/v2/device/history", "deviceid=nosuchdevice").await.fails(405);
    api(&hub, &carol).delete("/v2/device/history", "deviceid=1000000001").await.fails(405);
    api(&hub, &alice).delete("/v2/device/history", "deviceid=1000000009").await.fails(405);

    // The sharee reads but may not clear.
    history_of(&hub, &bob, "1000000001", 1).await;
    api(&hub, &bob).delete("/v2/device/history", "deviceid=1000000001").await.fails(406);
    history_of(&hub, &alice, "1000000001", 1).await;

    // The owner clears, by query string or by JSON body.
    api(&hub, &alice).delete("/v2/device/history", "deviceid=1000000001").await.ok();
    history_of(&hub, &alice, "1000000001", 0).await;
    report(&mut device, "1000000001", json!({"switch":"on"})).await;
    history_of(&hub, &alice, "1000000001", 1).await;
    api(&hub, &alice).call(reqwest::Method::DELETE, "/v2/device/history", "", Some(&json!({"deviceid":"1000000001"}))).await.ok();
    history_of(&hub, &bob, "1000000001", 0).await;
    hub.stop().await;
}

#[tokio::test]
async fn ops_history_off_records_nothing() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    add_device(&hub, &alice, "a000000001", json!({"opsHistory": 0, "alarmNotify": 0})).await;
    let mut device = hub.device("a000000001").await;
    let mut app = hub.app(&alice).await;
    update(&mut app, &mut device, "a000000001", "1", json!({"switch":"on"}), 0).await;
    report(&mut device, "a000000001", json!({"switch":"on"})).await;
    settle(&hub).await;
    history_of(&hub, &alice, "a000000001", 0).await;
    hub.stop().await;
}

#[tokio::test]
async fn settings_changed_while_online_take_effect() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    add_device(&hub, &alice, "a000000001", json!({"opsHistory": 0})).await;
    let mut device = hub.device("a000000001").await;
    report(&mut device, "a000000001", json!({"switch":"on"})).await;
    // Adding it again with other settings changes them; the hub reloads them with the next
    // access-control poll.
    add_device_again(&hub, &alice, "a000000001", json!({"opsHistory": 1})).await;
    let until = Instant::now() + Duration::from_secs(6);
    loop {
        report(&mut device, "a000000001", json!({"switch":"off"})).await;
        let a = api(&hub, &alice).get("/v2/device/history", "deviceid=a000000001").await;
        if !a.ok()["histories"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < until, "settings were not reloaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    hub.stop().await;
}

async fn add_device_again(hub: &TestHub, owner: &TestUser, id: &str, settings: Value) {
    let digest = hex::encode(Sha256::digest(format!("{id}key-{id}").as_bytes()));
    api(hub, owner)
        .post("/v2/device/add", json!({"name": "Lamp", "deviceid": id, "settings": settings, "digest": digest, "chipid": ""}))
        .await
        .ok();
}

#[tokio::test]
async fn ops_notify_tells_the_owner_of_acked_commands_and_reports() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    let bob = hub.user("bob@x.cc").await;
    add_device(&hub, &alice, "a000000001", json!({"opsNotify": 1})).await;
    hub.share("a000000001", &bob).await;
    let mut device = hub.device("a000000001").await;
    let mut bob_app = hub.app(&bob).await;

    // A refused command files nothing; an acked one does.
    bob_app.send(json!({"action":"update","deviceid":"a000000001","apikey":alice.apikey.as_str(),"selfApikey":bob.apikey.as_str(),"userAgent":"app","sequence":"1","params":{"switch":"on"}})).await;
    device.recv().await;
    device.send(json!({"error":400,"deviceid":"a000000001","sequence":"1"})).await;
    assert_eq!(bob_app.recv().await["error"], 400);
    bob_app.send(json!({"action":"update","deviceid":"a000000001","apikey":alice.apikey.as_str(),"selfApikey":bob.apikey.as_str(),"userAgent":"app","sequence":"2","params":{"switch":"on"}})).await;
    device.recv().await;
    device.send(json!({"error":0,"deviceid":"a000000001","sequence":"2"})).await;
    assert_eq!(bob_app.recv().await["error"], 0);
    let ops = messages_of(&hub, &alice, "opsNotify_v2", 1).await;
    let m = &ops[0]["message"];
    assert_eq!(m["deviceid"], "a000000001");
    assert_eq!(m["deviceName"], "Lamp");
    assert_eq!(m["userAgent"], "app");
    assert_eq!(m["action"], "update");
    assert_eq!(m["opsAccount"], "bob@x.cc");
    assert_eq!(m["params"], json!({"switch":"on"}));

    report(&mut device, "a000000001", json!({"switch":"on"})).await;
    let ops = messages_of(&hub, &alice, "opsNotify_v2", 2).await;
    let reported = ops.iter().find(|m| m["message"]["userAgent"] == "device").expect("the report's notice");
    assert!(reported["message"].get("opsAccount").is_none());
    // Sharees are not told of operations.
    settle(&hub).await;
    messages_of(&hub, &bob, "opsNotify_v2", 0).await;
    hub.stop().await;
}

#[tokio::test]
async fn ops_notify_off_by_default() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    hub.device_record("1000000001", Some(&alice)).await;
    let mut device = hub.device("1000000001").await;
    let mut app = hub.app(&alice).await;
    update(&mut app, &mut device, "1000000001", "1", json!({"switch":"on"}), 0).await;
    report(&mut device, "1000000001", json!({"switch":"on"})).await;
    history_of(&hub, &alice, "1000000001", 2).await;
    settle(&hub).await;
    messages_of(&hub, &alice, "opsNotify_v2", 0).await;
    hub.stop().await;
}

#[tokio::test]
async fn alarms_tell_the_owner_and_sharees() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    let bob = hub.user("bob@x.cc").await;
    hub.device_record("1000000001", Some(&alice)).await;
    hub.share("1000000001", &bob).await;
    let mut device = hub.device("1000000001").await;

    report(&mut device, "1000000001", json!({"alarm": 0, "switch": "off"})).await;
    report(&mut device, "1000000001", json!({"alarm": "off"})).await;
    report(&mut device, "1000000001", json!({"alarmType": "smoke", "battery": 80})).await;
    report(&mut device, "1000000001", json!({"alarm": 1})).await;
    for user in [&alice, &bob] {
        // Messages filed in the same millisecond have no set order among themselves.
        let alarms = messages_of(&hub, user, "alarmNotify_v2", 2).await;
        let smoke = alarms.iter().find(|m| m["message"]["alarmType"] == "smoke").expect("the smoke alarm");
        assert_eq!(smoke["message"]["deviceid"], "1000000001");
        assert_eq!(smoke["message"]["params"], json!({"alarmType": "smoke", "battery": 80}));
        assert!(smoke["message"]["opsTime"].as_i64().is_some());
        let other = alarms.iter().find(|m| m["message"]["params"] == json!({"alarm": 1})).expect("the alarm: 1 report");
        assert!(other["message"].get("alarmType").is_none());
    }
    hub.stop().await;
}

#[tokio::test]
async fn alarm_notify_off_files_no_alarm() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    add_device(&hub, &alice, "a000000001", json!({"alarmNotify": 0, "opsHistory": 0})).await;
    let mut device = hub.device("a000000001").await;
    report(&mut device, "a000000001", json!({"alarmType": "smoke"})).await;
    settle(&hub).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    messages_of(&hub, &alice, "alarmNotify_v2", 0).await;
    hub.stop().await;
}

#[tokio::test]
async fn a_clean_shutdown_writes_everything_acknowledged() {
    let mut hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    hub.device_record("1000000001", Some(&alice)).await;
    let mut device = hub.device("1000000001").await;
    for i in 0..200 {
        report(&mut device, "1000000001", json!({"n": i})).await;
    }
    let kept = hub.keep_store();
    hub.stop().await;
    let store = kept.open().await;
    let total = store.history("1000000001", i64::MAX, 1_000_000).await.unwrap().len();
    assert_eq!(total, 200, "every acknowledged report is in the history");
    store.close().await;
}

#[tokio::test]
async fn another_users_device_history_stays_hidden_in_answers() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    let carol = hub.user("carol@x.cc").await;
    hub.device_record("1000000001", Some(&alice)).await;
    let mut device = hub.device("1000000001").await;
    report(&mut device, "1000000001", json!({"switch":"on"})).await;
    history_of(&hub, &alice, "1000000001", 1).await;
    let a: Answer = api(&hub, &carol).get("/v2/device/history", "deviceid=1000000001").await;
    a.fails(405);
    assert_eq!(a.data, json!({}));
    hub.stop().await;
}

#[tokio::test]
async fn rest_commands_are_recorded_like_socket_commands() {
    let hub = TestHub::start().await;
    let alice = hub.user("rest-history@x.cc").await;
    add_device(&hub, &alice, "1000000aa1", json!({"opsNotify": 1})).await;
    let mut device = hub.device("1000000aa1").await;
    let rest = api(&hub, &alice);
    let call = rest.post("/v2/device/thing/status", json!({"type": 1, "id": "1000000aa1", "params": {"switch": "on"}}));
    let ack = async {
        let cmd = device.recv().await;
        device.send(json!({"error": 0, "deviceid": "1000000aa1", "sequence": cmd["sequence"]})).await;
    };
    let (answer, ()) = tokio::join!(call, ack);
    answer.ok();
    let list = history_of(&hub, &alice, "1000000aa1", 1).await;
    assert_eq!(list[0]["userAgent"], "app", "{list:?}");
    assert_eq!(list[0]["opsAccount"], "rest-history@x.cc");
    assert_eq!(messages_of(&hub, &alice, "opsNotify_v2", 1).await.len(), 1);
    hub.stop().await;
}
