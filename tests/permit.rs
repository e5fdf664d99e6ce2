//! Share permits on the socket: a sharee's `update` that changes the device's timers beyond the
//! share's permit bits (1 add, 2 modify, 4 delete, 8 enable/disable) is refused with 406 before
//! it reaches the device; everything else, and anything the owner sends, is forwarded. Judged
//! against the device's live state, through real sockets and the real server.

mod common;

use std::time::{Duration, Instant};

use common::rest::api;
use common::{Client, TestHub, TestUser};
use serde_json::{Value, json};
use switchyard::ids::DeviceId;

const ID: &str = "1000000001";

fn timer(id: &str, at: &str, enabled: i64) -> Value {
    json!({"mId": id, "type": "once", "at": at, "enabled": enabled, "do": {"switch": "on"}})
}

fn current_timers() -> Value {
    json!([timer("a", "2030-01-01T00:00:00.000Z", 1), timer("b", "2030-01-02T00:00:00.000Z", 1)])
}

struct Setup {
    hub: TestHub,
    alice: TestUser,
    bob: TestUser,
    device: Client,
    owner_app: Client,
    bob_app: Client,
}

/// Alice owns the device, which reports two timers; Bob has it shared with `permit`.
async fn setup(permit: i64) -> Setup {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    let bob = hub.user("bob@x.cc").await;
    hub.device_record(ID, Some(&alice)).await;
    let id = DeviceId::new(ID);
    hub.hub.store.share_device(&id, &bob.apikey, permit).await.unwrap();
    let mut device = hub.device(ID).await;
    device
        .send(
            json!({"action":"update","deviceid":ID,"apikey":"k","userAgent":"device","params":{"switch":"off","timers":current_timers()}}),
        )
        .await;
    assert_eq!(device.recv().await["error"], 0);
    let owner_app = hub.app(&alice).await;
    let bob_app = hub.app(&bob).await;
    Setup { hub, alice, bob, device, owner_app, bob_app }
}

/// Sends an update from `app`; returns the answer when it comes before the device hears of the
/// command (a refusal), else plays the device acking it and returns that answer.
async fn update(app: &mut Client, device: &mut Client, owner: &TestUser, me: &TestUser, seq: &str, params: Value) -> Value {
    app.send(json!({"action":"update","deviceid":ID,"apikey":owner.apikey.as_str(),"selfApikey":me.apikey.as_str(),"userAgent":"app","sequence":seq,"params":params})).await;
    let cmd = tokio::select! {
        refused = next_answer(app, seq) => return refused,
        cmd = device.recv() => cmd,
    };
    assert_eq!(cmd["sequence"], seq, "the device got another command: {cmd}");
    assert_eq!(cmd["params"], params);
    device.send(json!({"error":0,"deviceid":ID,"sequence":seq})).await;
    next_answer(app, seq).await
}

async fn next_answer(app: &mut Client, seq: &str) -> Value {
    loop {
        let f = app.recv().await;
        if f["sequence"] == seq {
            return f;
        }
    }
}

#[tokio::test]
async fn a_sharee_without_timer_rights_may_switch_but_not_touch_timers() {
    let Setup { hub, alice, bob, mut device, mut bob_app, .. } = setup(0).await;
    let add = json!({"timers": [timer("a", "2030-01-01T00:00:00.000Z", 1), timer("b", "2030-01-02T00:00:00.000Z", 1), timer("c", "2031-01-01T00:00:00.000Z", 1)]});
    let refused = update(&mut bob_app, &mut device, &alice, &bob, "1", add).await;
    assert_eq!(refused["error"], 406, "{refused}");
    assert_eq!(refused["deviceid"], ID);
    assert!(refused.get("action").is_none());
    // Other params pass, and the device never saw the refused command (update() checks the
    // device's next command is this one).
    assert_eq!(update(&mut bob_app, &mut device, &alice, &bob, "2", json!({"switch":"on"})).await["error"], 0);
    // Sending the same timers back changes nothing, so it passes.
    assert_eq!(
        update(&mut bob_app, &mut device, &alice, &bob, "3", json!({"timers": current_timers(), "switch": "off"})).await["error"],
        0
    );
    hub.stop().await;
}

#[tokio::test]
async fn each_bit_allows_its_own_change_only() {
    let changes = [
        // (needed bit, params)
        (1, json!({"timers": [timer("a", "2030-01-01T00:00:00.000Z", 1), timer("b", "2030-01-02T00:00:00.000Z", 1), timer("c", "x", 1)]})),
        (2, json!({"timers": [timer("a", "2035-01-01T00:00:00.000Z", 1), timer("b", "2030-01-02T00:00:00.000Z", 1)]})),
        (4, json!({"timers": [timer("a", "2030-01-01T00:00:00.000Z", 1)]})),
        (8, json!({"timers": [timer("a", "2030-01-01T00:00:00.000Z", 0), timer("b", "2030-01-02T00:00:00.000Z", 1)]})),
    ];
    for bit in [1, 2, 4, 8] {
        let Setup { hub, alice, bob, mut device, mut bob_app, .. } = setup(bit).await;
        for (i, (needs, params)) in changes.iter().enumerate() {
            let seq = format!("{bit}-{i}");
            let answer = update(&mut bob_app, &mut device, &alice, &bob, &seq, params.clone()).await;
            let expected = if *needs == bit { 0 } else { 406 };
            assert_eq!(answer["error"], expected, "permit {bit}, change needing {needs}: {answer}");
        }
        hub.stop().await;
    }
}

#[tokio::test]
async fn the_check_follows_the_live_state() {
    let Setup { hub, alice, bob, mut device, mut bob_app, .. } = setup(1).await;
    // The device reports a third timer: sending all three is no longer an addition.
    let three = json!([timer("a", "2030-01-01T00:00:00.000Z", 1), timer("b", "2030-01-02T00:00:00.000Z", 1), timer("c", "x", 1)]);
    device.send(json!({"action":"update","deviceid":ID,"apikey":"k","userAgent":"device","params":{"timers":three}})).await;
    assert_eq!(device.recv().await["error"], 0);
    assert_eq!(update(&mut bob_app, &mut device, &alice, &bob, "1", json!({"timers": three})).await["error"], 0);
    // Dropping one now needs delete.
    assert_eq!(update(&mut bob_app, &mut device, &alice, &bob, "2", json!({"timers": current_timers()})).await["error"], 406);
    hub.stop().await;
}

#[tokio::test]
async fn the_owner_is_never_limited() {
    let Setup { hub, alice, mut device, mut owner_app, .. } = setup(0).await;
    for (i, params) in [json!({"timers": []}), json!({"timers": [timer("z", "1", 0)]}), json!({"timers": "junk"})].into_iter().enumerate() {
        assert_eq!(update(&mut owner_app, &mut device, &alice, &alice, &i.to_string(), params).await["error"], 0);
    }
    hub.stop().await;
}

#[tokio::test]
async fn a_full_permit_allows_every_timer_change() {
    let Setup { hub, alice, bob, mut device, mut bob_app, .. } = setup(15).await;
    assert_eq!(update(&mut bob_app, &mut device, &alice, &bob, "1", json!({"timers": []})).await["error"], 0);
    assert_eq!(update(&mut bob_app, &mut device, &alice, &bob, "2", json!({"timers": [timer("q", "2", 1)]})).await["error"], 0);
    hub.stop().await;
}

#[tokio::test]
async fn a_permit_changed_over_rest_reaches_the_running_hub() {
    let Setup { hub, alice, bob, mut device, mut bob_app, .. } = setup(0).await;
    let drop_b = json!({"timers": [timer("a", "2030-01-01T00:00:00.000Z", 1)]});
    assert_eq!(update(&mut bob_app, &mut device, &alice, &bob, "0", drop_b.clone()).await["error"], 406);
    api(&hub, &alice).post("/v2/device/share/permit", json!({"deviceid": ID, "apikey": bob.apikey.as_str(), "permit": 4})).await.ok();
    // The hub reloads permits with its access-control poll (every 2 s).
    let until = Instant::now() + Duration::from_secs(6);
    let mut i = 1;
    loop {
        let answer = update(&mut bob_app, &mut device, &alice, &bob, &i.to_string(), drop_b.clone()).await;
        if answer["error"] == 0 {
            break;
        }
        assert_eq!(answer["error"], 406);
        assert!(Instant::now() < until, "the new permit never applied");
        tokio::time::sleep(Duration::from_millis(200)).await;
        i += 1;
    }
    hub.stop().await;
}

#[tokio::test]
async fn the_rest_status_route_applies_the_same_rule() {
    let Setup { hub, bob, mut device, .. } = setup(ADD_ONLY).await;
    let b = api(&hub, &bob);
    // Deleting timer "b" needs bit 4, which bob lacks: refused before the device hears of it.
    let refused =
        b.post("/v2/device/thing/status", json!({"type": 1, "id": ID, "params": {"timers": [current_timers()[0].clone()]}})).await;
    refused.fails(406);
    let batch = b
        .post("/v2/device/thing/batch-status", json!({"thingList": [{"type": 1, "id": ID, "params": {"timers": []}}], "timeout": 500}))
        .await;
    assert_eq!(batch.ok()["respList"][0]["error"], 406, "{batch:?}");
    // Adding one is within the permit: it reaches the device.
    let mut timers = current_timers().as_array().unwrap().clone();
    timers.push(timer("c", "2030-01-03T00:00:00.000Z", 1));
    let call = b.post("/v2/device/thing/status", json!({"type": 1, "id": ID, "params": {"timers": timers}}));
    let ack = async {
        let cmd = device.recv().await;
        assert_eq!(cmd["params"]["timers"].as_array().unwrap().len(), 3, "{cmd}");
        device.send(json!({"error": 0, "deviceid": ID, "sequence": cmd["sequence"]})).await;
    };
    let (answer, ()) = tokio::join!(call, ack);
    answer.ok();
    hub.stop().await;
}

const ADD_ONLY: i64 = 1;
