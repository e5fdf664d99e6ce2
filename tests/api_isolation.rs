//! The two-user matrix: no REST route lets one user read or change another user's device, group,
//! family, room, history or messages — and a sharee cannot do what only the owner may. Every
//! attempt must fail, and afterwards the owner's data must be exactly as it was.

mod common;

use std::time::Duration;

use common::TestHub;
use common::rest::{Answer, Api, api};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const D1: &str = "a000000001";
const D2: &str = "a000000002";
const CAROLS: &str = "c000000001";

#[track_caller]
fn refused(what: &str, a: &Answer) {
    assert!(a.error != 0, "{what} should have been refused, got {a:?}");
    assert_ne!(a.error, 403, "{what} is not even routed: {a:?}");
    assert_ne!(a.error, 500, "{what} failed internally: {a:?}");
}

/// Everything `alice` can see, to compare before and after the attack.
async fn snapshot(a: &Api<'_>, device: &str, group: &str) -> Value {
    let mut things = a.get("/v2/device/thing", "num=0").await.ok().clone();
    // Online state and live params may change underneath; names, ids and placement may not.
    for t in things["thingList"].as_array_mut().unwrap() {
        t["itemData"].as_object_mut().unwrap().remove("online");
        t["itemData"].as_object_mut().unwrap().remove("params");
    }
    json!({
        "families": a.get("/v2/family", "").await.ok().clone(),
        "things": things,
        "history": a.get("/v2/device/history", &format!("deviceid={device}")).await.ok().clone(),
        "messages": a.get("/v2/message/read", "").await.ok().clone(),
        "group": a.get("/v2/device/thing/status", &format!("type=2&id={group}")).await.ok().clone(),
    })
}

#[tokio::test]
async fn no_route_reaches_another_users_things() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let bob = hub.user("bob@example.com").await;
    let carol = hub.user("carol@example.com").await;
    hub.device_record(D1, Some(&alice)).await;
    hub.device_record(D2, Some(&alice)).await;
    hub.device_record(CAROLS, Some(&carol)).await;
    let a = api(&hub, &alice);
    let b = api(&hub, &bob);

    // Alice's world: a room, a second family, a group, history, a message (carol shares with her).
    let families = a.get("/v2/family", "").await.ok().clone();
    let home = families["currentFamilyId"].as_str().unwrap().to_owned();
    let room =
        a.post("/v2/family/room", json!({"familyid": home, "name": "Kitchen", "sort": 1})).await.ok()["id"].as_str().unwrap().to_owned();
    let cabin = a.post("/v2/family", json!({"name": "Cabin", "sort": 2})).await.ok()["id"].as_str().unwrap().to_owned();
    let group =
        a.post("/v2/device/group", json!({"name": "Lights", "mainDeviceId": D1, "deviceidList": [D2]})).await.ok()["itemData"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
    api(&hub, &carol)
        .post("/v2/device/share", json!({"deviceidList": [CAROLS], "user": {"email": "alice@example.com"}, "permit": 0}))
        .await
        .ok();
    let mut device = hub.device(D1).await;
    device
        .send(
            json!({"action": "update", "deviceid": D1, "apikey": alice.apikey.as_str(), "userAgent": "device", "params": {"switch": "on"}}),
        )
        .await;
    let mut recorded = false;
    for _ in 0..50 {
        if !a.get("/v2/device/history", &format!("deviceid={D1}")).await.ok()["histories"].as_array().unwrap().is_empty() {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recorded, "the device report never reached the history");
    assert!(!a.get("/v2/message/read", "").await.ok()["messageList"].as_array().unwrap().is_empty());
    let before = snapshot(&a, D1, &group).await;

    // Bob, knowing every id, tries every route.
    let digest = hex::encode(Sha256::digest(format!("{D1}key-{D1}")));
    refused("thing list of alice's family", &b.get("/v2/device/thing", &format!("familyid={home}")).await);
    let listed = b.post("/v2/device/thing", json!({"thingList": [{"itemType": 1, "id": D1}, {"itemType": 3, "id": group}]})).await;
    if listed.error == 0 {
        assert_eq!(listed.data["thingList"], json!([]), "bob listed alice's things: {listed:?}");
    }
    refused("device status", &b.get("/v2/device/thing/status", &format!("type=1&id={D1}")).await);
    refused("group status", &b.get("/v2/device/thing/status", &format!("type=2&id={group}")).await);
    refused("device command", &b.post("/v2/device/thing/status", json!({"type": 1, "id": D1, "params": {"switch": "off"}})).await);
    refused("group command", &b.post("/v2/device/thing/status", json!({"type": 2, "id": group, "params": {"switch": "off"}})).await);
    let batch = b
        .post("/v2/device/thing/batch-status", json!({"thingList": [{"type": 1, "id": D1, "params": {"switch": "off"}}], "timeout": 500}))
        .await;
    if batch.error == 0 {
        assert_ne!(batch.data["respList"][0]["error"], 0, "bob commanded alice's device: {batch:?}");
    }
    refused(
        "adding an owned device",
        &b.post("/v2/device/add", json!({"name": "mine", "deviceid": D1, "digest": digest, "chipid": ""})).await,
    );
    refused("renaming", &b.post("/v2/device/update-info", json!({"deviceid": D1, "name": "pwned"})).await);
    refused("deleting", &b.delete("/v2/device", &format!("deviceid={D1}")).await);
    refused("tags", &b.post("/v2/device/tags", json!({"deviceid": D1, "tags": {"x": "y"}})).await);
    refused("group on her device", &b.post("/v2/device/group", json!({"name": "mine", "mainDeviceId": D1})).await);
    refused("group rename", &b.put("/v2/device/group", json!({"id": group, "name": "pwned"})).await);
    refused("group delete", &b.delete("/v2/device/group", &format!("id={group}")).await);
    refused("group params", &b.post("/v2/device/group/status", json!({"id": group, "params": {"switch": "off"}})).await);
    refused("group members", &b.post("/v2/device/group/update", json!({"id": group, "deviceidList": [D1]})).await);
    refused(
        "sharing her device",
        &b.post("/v2/device/share", json!({"deviceidList": [D1], "user": {"email": "bob@example.com"}, "permit": 15})).await,
    );
    refused(
        "changing a permit",
        &b.post("/v2/device/share/permit", json!({"deviceid": CAROLS, "apikey": alice.apikey.as_str(), "permit": 15})).await,
    );
    refused("unsharing", &b.delete("/v2/device/share", &format!("deviceid={CAROLS}&apikey={}", alice.apikey)).await);
    refused("reading history", &b.get("/v2/device/history", &format!("deviceid={D1}")).await);
    refused("clearing history", &b.delete("/v2/device/history", &format!("deviceid={D1}")).await);
    let ota = b.post("/v2/device/ota/query", json!({"deviceInfoList": [{"deviceid": D1, "model": "EMU", "version": "0.0.1"}]})).await;
    if ota.error == 0 {
        assert_eq!(ota.data["otaInfoList"], json!([]));
    }
    refused("renaming her family", &b.put("/v2/family", json!({"id": home, "name": "pwned"})).await);
    refused("deleting her family", &b.delete("/v2/family", &format!("id={cabin}&deviceFamily={home}&switchFamily={home}")).await);
    refused("adding a room to her family", &b.post("/v2/family/room", json!({"familyid": home, "name": "x", "sort": 1})).await);
    refused("renaming her room", &b.put("/v2/family/room", json!({"id": room, "name": "pwned"})).await);
    refused("deleting her room", &b.delete("/v2/family/room", &format!("id={room}")).await);
    refused("sorting her rooms", &b.post("/v2/family/room/index", json!({"familyid": home, "idList": [room]})).await);
    refused(
        "sorting her things",
        &b.post("/v2/family/thing/sort", json!({"familyid": home, "thingList": [{"itemType": 1, "id": D1}]})).await,
    );
    refused(
        "moving her things",
        &b.post("/v2/family/room/thing", json!({"roomid": room, "oldThingList": [], "newThingList": [{"itemType": 1, "id": D1}]})).await,
    );
    refused("switching to her family", &b.post("/v2/family/current", json!({"id": home})).await);
    refused("reading her messages", &b.get("/v2/message/read", &format!("familyid={home}")).await);
    let page = b.post("/v2/homepage", json!({"getUser": {}, "getFamily": {}, "getThing": {"num": 0}, "getMessage": {}})).await;
    let text = page.ok().to_string();
    for secret in [D1, D2, group.as_str(), home.as_str(), room.as_str(), cabin.as_str(), alice.apikey.as_str()] {
        assert!(!text.contains(secret), "bob's homepage shows {secret}: {text}");
    }

    // Alice as a sharee of carol's device may use it, but not act as its owner.
    refused("a sharee renaming", &a.post("/v2/device/update-info", json!({"deviceid": CAROLS, "name": "mine"})).await);
    refused("a sharee tagging", &a.post("/v2/device/tags", json!({"deviceid": CAROLS, "tags": {"x": "y"}})).await);
    refused(
        "a sharee resharing",
        &a.post("/v2/device/share", json!({"deviceidList": [CAROLS], "user": {"email": "bob@example.com"}, "permit": 15})).await,
    );
    refused("a sharee clearing history", &a.delete("/v2/device/history", &format!("deviceid={CAROLS}")).await);

    assert_eq!(snapshot(&a, D1, &group).await, before, "alice's data changed");
    hub.stop().await;
}

/// Seed 003's routes: Bob, knowing every id and invite code, tries each route on Alice's
/// device and invites (and as Alice's sharee, what only the manager may); every attempt fails
/// with 403 or 404 in that door's form, and Alice's device, properties, shares and invites are
/// as they were.
#[tokio::test]
async fn no_seed_003_route_reaches_another_users_devices_or_invites() {
    use common::xlink::{Reply, product, xlink};

    #[track_caller]
    fn refused_x(what: &str, r: &Reply) {
        assert!(matches!(r.status, 403 | 404), "{what} should have been refused, got {r:?}");
        assert!(r.code().is_some(), "{what}: not the seed-003 error form: {r:?}");
    }

    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let bob = hub.user("bob@example.com").await;
    let carol = hub.user("carol@example.com").await;
    product(&hub, "lamp", true).await;
    let (a, b) = (xlink(&hub, &alice), xlink(&hub, &bob));
    let id = a.register("lamp", "aabbccddee01").await.ok()["device_id"].as_str().unwrap().to_owned();
    let props = format!("/v2/product/lamp/device/{id}/property");
    a.post(&props, json!({"room": "hall"})).await.ok();
    let to_carol = a.invite(&id, "app", Some("carol@example.com")).await.ok()["invite_code"].as_str().unwrap().to_owned();
    let qr = a.invite(&id, "qrcode", None).await.ok()["invite_code"].as_str().unwrap().to_owned();
    let snapshot = || async {
        json!({
            "devices": a.devices(None).await.ok().clone(),
            "props": a.get(&props).await.ok().clone(),
            "invites": a.invites().await,
            "carol": xlink(&hub, &carol).invites().await,
            "record": format!("{:?}", hub.hub.store.device(&id).await.unwrap()),
            "audience": format!("{:?}", hub.hub.store.audience(&switchyard::ids::DeviceId::new(id.as_str())).await.unwrap()),
        })
    };
    let before = snapshot().await;

    let me = alice.apikey.as_str();
    refused_x(
        "registering as alice",
        &b.post(&format!("/v2/user/{me}/register_device"), json!({"product_id": "lamp", "mac": "aabbccddee09"})).await,
    );
    b.register("lamp", "aabbccddee01").await.fails(409, 4091);
    refused_x("listing her devices", &b.get(&format!("/v2/user/{me}/subscribe/devices")).await);
    refused_x("unsubscribing as alice", &b.post(&format!("/v2/user/{me}/unsubscribe"), json!({"device_id": id})).await);
    refused_x("unsubscribing her device", &b.unsubscribe(&id).await);
    refused_x("reading her properties", &b.get(&props).await);
    refused_x("changing her properties", &b.post(&props, json!({"room": "pwned"})).await);
    refused_x("sharing her device", &b.invite(&id, "qrcode", None).await);
    refused_x("sharing her device with himself", &b.invite(&id, "app", Some(bob.apikey.as_str())).await);
    refused_x("cancelling her invite", &b.post("/v2/share/device/cancel", json!({"invite_code": to_carol})).await);
    refused_x("accepting carol's invite", &b.accept(&to_carol).await);
    refused_x("denying carol's invite", &b.post("/v2/share/device/deny", json!({"invite_code": to_carol})).await);
    refused_x("deleting her invite", &b.delete(&format!("/v2/share/device/delete/{to_carol}")).await);
    refused_x("deleting her qrcode invite", &b.delete(&format!("/v2/share/device/delete/{qr}")).await);
    assert!(b.invites().await.is_empty(), "bob sees none of her invites");
    assert_eq!(b.devices(None).await.ok()["list"], json!([]));
    assert_eq!(snapshot().await, before, "alice's data changed");

    // Bob as Alice's sharee (he takes the qrcode invite) may read, not act as the manager.
    b.accept(&qr).await.empty();
    refused_x("a sharee changing properties", &b.post(&props, json!({"room": "pwned"})).await);
    refused_x("a sharee sharing on", &b.invite(&id, "qrcode", None).await);
    refused_x("a sharee cancelling", &b.post("/v2/share/device/cancel", json!({"invite_code": to_carol})).await);
    refused_x("a sharee accepting carol's invite", &b.accept(&to_carol).await);
    assert_eq!(b.get(&props).await.ok(), &json!({"room": "hall"}));
    // And the seed-004 door: a sharee of an invite may not act as the owner there either.
    let b4 = api(&hub, &bob);
    refused("a sharee renaming", &b4.post("/v2/device/update-info", json!({"deviceid": id, "name": "mine"})).await);
    refused(
        "a sharee resharing",
        &b4.post("/v2/device/share", json!({"deviceidList": [id], "user": {"email": "carol@example.com"}, "permit": 15})).await,
    );
    assert_eq!(a.get(&props).await.ok(), &json!({"room": "hall"}));
    hub.stop().await;
}
