//! A device that only acks an `update` (stock firmware often sends no report after it) still
//! ends up with the command's params as its state: live for REST at once, saved for after it
//! goes offline, the same whether the command came over the socket or REST. A report sent
//! afterwards wins.

mod common;

use std::time::Duration;

use common::rest::api;
use common::{Client, TestHub, TestUser};
use serde_json::{Value, json};

const DEV: &str = "1000000001";

async fn status(hub: &TestHub, user: &TestUser) -> Value {
    api(hub, user).get("/v2/device/thing/status", &format!("type=1&id={DEV}")).await.ok()["params"].clone()
}

async fn listed_params(hub: &TestHub, user: &TestUser) -> Value {
    let list = api(hub, user).get("/v2/device/thing", "num=0").await.ok().clone();
    list["thingList"][0]["itemData"]["params"].clone()
}

/// Reads the next command the device gets and acks it with error 0 and nothing else.
async fn ack_only(dev: &mut Client, owner: &TestUser) -> Value {
    let cmd = dev.recv().await;
    assert_eq!(cmd["action"], "update", "{cmd}");
    dev.send(json!({"error":0,"userAgent":"device","apikey":owner.apikey.as_str(),"deviceid":DEV,"sequence":cmd["sequence"]})).await;
    cmd
}

#[tokio::test]
async fn an_acked_update_becomes_the_state_over_the_socket_and_rest() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let mut dev = hub.device(DEV).await;
    dev.send(json!({"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"action":"update","params":{"switch":"off","voltage":230}})).await;
    assert_eq!(dev.recv().await["error"], 0);
    assert_eq!(status(&hub, &alice).await, json!({"switch":"off","voltage":230}));

    // Over the socket: the app hears the ack, and REST already shows the new state.
    let mut app = hub.app(&alice).await;
    app.send(json!({"action":"update","deviceid":DEV,"apikey":alice.apikey.as_str(),"userAgent":"app","sequence":"100","ts":0,"params":{"switch":"on"}}))
        .await;
    ack_only(&mut dev, &alice).await;
    let ack = app.recv().await;
    assert_eq!((ack["error"].as_i64(), ack["sequence"].as_str()), (Some(0), Some("100")), "{ack}");
    assert_eq!(status(&hub, &alice).await, json!({"switch":"on","voltage":230}));
    assert_eq!(listed_params(&hub, &alice).await, json!({"switch":"on","voltage":230}));

    // Over REST: the same.
    let call = tokio::spawn({
        let a_at = alice.at.clone();
        let base = hub.base();
        async move {
            reqwest::Client::new()
                .post(format!("{base}/v2/device/thing/status"))
                .bearer_auth(a_at)
                .json(&json!({"type":1,"id":DEV,"params":{"switch":"off"}}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    ack_only(&mut dev, &alice).await;
    assert_eq!(call.await.unwrap()["error"], 0);
    assert_eq!(status(&hub, &alice).await, json!({"switch":"off","voltage":230}));

    // A device error changes nothing.
    app.send(json!({"action":"update","deviceid":DEV,"apikey":alice.apikey.as_str(),"userAgent":"app","sequence":"101","ts":0,"params":{"switch":"on"}}))
        .await;
    let cmd = dev.recv().await;
    dev.send(json!({"error":500,"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"sequence":cmd["sequence"]})).await;
    loop {
        let f = app.recv().await;
        if f.get("action").is_none() {
            assert_eq!(f["error"], 500, "{f}");
            break;
        }
    }
    assert_eq!(status(&hub, &alice).await, json!({"switch":"off","voltage":230}));

    // A report after the ack wins.
    app.send(json!({"action":"update","deviceid":DEV,"apikey":alice.apikey.as_str(),"userAgent":"app","sequence":"102","ts":0,"params":{"switch":"on"}}))
        .await;
    ack_only(&mut dev, &alice).await;
    dev.send(json!({"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"action":"update","params":{"switch":"off"}})).await;
    assert_eq!(dev.recv().await["error"], 0);
    assert_eq!(status(&hub, &alice).await, json!({"switch":"off","voltage":230}));

    // Acked without a report, then offline: the saved state is the acked one.
    app.send(json!({"action":"update","deviceid":DEV,"apikey":alice.apikey.as_str(),"userAgent":"app","sequence":"103","ts":0,"params":{"switch":"on"}}))
        .await;
    ack_only(&mut dev, &alice).await;
    drop(dev);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = api(&hub, &alice).get("/v2/device/thing", "num=0").await.ok().clone();
        let item = &v["thingList"][0]["itemData"];
        if item["online"] == false {
            assert_eq!(item["params"], json!({"switch":"on","voltage":230}), "{item}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the device never went offline");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&hub, &alice).await, json!({"switch":"on","voltage":230}));
    hub.stop().await;
}
