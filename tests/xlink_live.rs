//! Seed 003 end to end over real sockets: a device a user registered through `register_device`
//! connects with its `device_key`, is shared by invite code, and the sharee's WebSocket session
//! commands it and hears its reports; after `unsubscribe` the sharee hears nothing and is refused,
//! and when the manager releases the device it is told (`deleteNotify`).

mod common;

use std::time::{Duration, Instant};

use common::xlink::{product, xlink};
use common::{Client, TestHub, TestUser};
use serde_json::{Value, json};

fn command(device: &str, owner: &TestUser, sharee: &TestUser, sequence: &str) -> Value {
    json!({"action":"update","deviceid":device,"apikey":owner.apikey.as_str(),"selfApikey":sharee.apikey.as_str(),
        "userAgent":"app","sequence":sequence,"ts":0,"params":{"switch":"on"}})
}

fn report(device: &str, owner: &TestUser, params: Value) -> Value {
    json!({"userAgent":"device","apikey":owner.apikey.as_str(),"deviceid":device,"action":"update","params":params})
}

/// The next frame on `c` that is not a fanned-out update.
async fn next_reply(c: &mut Client) -> Value {
    loop {
        let v = c.recv().await;
        if v.get("action").is_none() {
            return v;
        }
    }
}

#[tokio::test]
async fn a_registered_device_shared_by_invite_is_commanded_by_the_sharee_until_they_unsubscribe() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let sam = hub.user("sam@example.com").await;
    product(&hub, "plug", true).await;
    let a = xlink(&hub, &alice);
    let made = a.register("plug", "a4:cf:12:00:00:01").await.ok().clone();
    let (id, key) = (made["device_id"].as_str().unwrap().to_owned(), made["device_key"].as_str().unwrap().to_owned());

    // The device registers like any other, its key as the factory apikey.
    let mut dev = hub.raw().await;
    dev.send(
        json!({"userAgent":"device","apikey":key,"deviceid":id,"action":"register","version":2,"romVersion":"1.0","model":"EMU","ts":1}),
    )
    .await;
    let reg = dev.recv().await;
    assert_eq!((reg["error"].as_i64(), reg["apikey"].as_str()), (Some(0), Some(alice.apikey.as_str())), "{reg}");
    let mut sam_app = hub.app(&sam).await;
    let mut owner_app = hub.app(&alice).await;

    // Before the share: refused.
    sam_app.send(command(&id, &alice, &sam, "before")).await;
    assert_eq!(sam_app.recv().await["error"], 406);

    let code = a.invite(&id, "qrcode", None).await.ok()["invite_code"].as_str().unwrap().to_owned();
    xlink(&hub, &sam).accept(&code).await.empty();

    // The sharee's command reaches the device (allowing the hub up to ~3 s to follow).
    let deadline = Instant::now() + Duration::from_millis(3500);
    let mut n = 0;
    let sequence = loop {
        n += 1;
        let sequence = format!("s{n}");
        sam_app.send(command(&id, &alice, &sam, &sequence)).await;
        match tokio::time::timeout(Duration::from_millis(300), dev.recv()).await {
            Ok(f) => {
                assert_eq!(
                    (f["action"].as_str(), f["sequence"].as_str(), f["params"].clone()),
                    (Some("update"), Some(sequence.as_str()), json!({"switch":"on"})),
                    "{f}"
                );
                break sequence;
            }
            Err(_) => {
                assert_eq!(sam_app.recv().await["error"], 406);
                assert!(Instant::now() < deadline, "the hub did not follow the accepted invite in time");
            }
        }
    };
    dev.send(json!({"error":0,"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":id,"sequence":sequence})).await;
    let r = next_reply(&mut sam_app).await;
    assert_eq!((r["error"].as_i64(), r["sequence"].as_str()), (Some(0), Some(sequence.as_str())), "{r}");
    assert_eq!(owner_app.recv().await["params"], json!({"switch":"on"}), "the manager hears the sharee's command");

    // The sharee hears the device's reports.
    dev.send(report(&id, &alice, json!({"switch":"off"}))).await;
    assert_eq!(dev.recv().await["error"], 0);
    for app in [&mut owner_app, &mut sam_app] {
        let f = app.recv().await;
        assert_eq!(
            (f["action"].as_str(), f["deviceid"].as_str(), f["params"].clone()),
            (Some("update"), Some(id.as_str()), json!({"switch":"off"})),
            "{f}"
        );
    }

    // After unsubscribe: silence, and refusal.
    xlink(&hub, &sam).unsubscribe(&id).await.empty();
    dev.send(report(&id, &alice, json!({"switch":"on"}))).await;
    assert_eq!(dev.recv().await["error"], 0);
    assert_eq!(owner_app.recv().await["params"], json!({"switch":"on"}));
    sam_app.silent_for(300).await;
    sam_app.send(command(&id, &alice, &sam, "after")).await;
    let r = sam_app.recv().await;
    assert_eq!((r["error"].as_i64(), r["sequence"].as_str()), (Some(406), Some("after")), "{r}");
    dev.silent_for(100).await;

    // The manager releases it: the device is told, and nobody hears it any more.
    a.unsubscribe(&id).await.empty();
    let f = dev.recv().await;
    assert_eq!((f["action"].as_str(), f["cmd"].as_str()), (Some("notify"), Some("deleteNotify")), "{f}");
    owner_app.send(command(&id, &alice, &alice, "gone")).await;
    assert_eq!(owner_app.recv().await["error"], 406);
    hub.stop().await;
}
