//! `/v2/device/add`, `add-gsm`, `update-info`, `DELETE /v2/device` and `tags` against a real hub.

mod common;
mod procs;

use common::rest::api;
use common::{TestHub, TestUser};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchyard::ids::DeviceId;
use switchyard::store::Sort;
use switchyard::store::device::FactoryDetails;

fn digest(id: &str) -> String {
    hex::encode(Sha256::digest(format!("{id}key-{id}").as_bytes()))
}

/// An unowned factory record with key `key-<id>` and the given details.
async fn factory(hub: &TestHub, id: &str, details: FactoryDetails) {
    hub.hub.store.add_factory_device(&DeviceId::new(id), &format!("key-{id}"), "EMU", 1, None, "", &details).await.unwrap();
}

fn add_body(id: &str) -> Value {
    json!({"name":"Lamp","deviceid":id,"digest":digest(id),"chipid":"chip-1"})
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

async fn setup() -> (TestHub, TestUser, TestUser) {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    let bob = hub.user("bob@x.cc").await;
    (hub, alice, bob)
}

fn total(data: &Value) -> i64 {
    data["total"].as_i64().unwrap()
}

#[tokio::test]
async fn add_claims_the_device_and_it_can_be_commanded_at_once() {
    let (hub, alice, _) = setup().await;
    factory(&hub, "c000000001", FactoryDetails { chipid: Some("CHIP-1".into()), mac: Some("aa:bb".into()), ..Default::default() }).await;
    let a = api(&hub, &alice);
    let body = json!({"name":" Lamp ","deviceid":"c000000001","digest":digest("c000000001"),"chipid":"chip-1",
        "settings":{"opsNotify":1},"sort":2});
    let item = a.post("/v2/device/add", body).await.ok().clone();
    assert_eq!(item["itemType"], 1);
    assert_eq!(item["itemData"]["name"], "Lamp");
    assert_eq!(item["itemData"]["apikey"], alice.apikey.as_str());
    assert_eq!(item["itemData"]["extra"]["mac"], "aa:bb");
    assert_eq!(item["itemData"]["settings"], json!({"opsNotify":1,"opsHistory":1,"alarmNotify":1}));
    assert!(item["index"].is_i64());
    assert_eq!(total(a.get("/v2/device/thing", "").await.ok()), 1);
    // The device registers now and the new owner commands it.
    let mut dev = hub.device("c000000001").await;
    let call = a.post("/v2/device/thing/status", json!({"type":1,"id":"c000000001","params":{"switch":"on"}}));
    let device_side = async {
        let cmd = dev.recv().await;
        dev.send(json!({"error":0,"deviceid":"c000000001","sequence":cmd["sequence"]})).await;
    };
    let (answer, ()) = tokio::join!(call, device_side);
    answer.ok();
    // Adding it again to the same account is fine (renamed, re-placed).
    let again = a.post("/v2/device/add", with(add_body("c000000001"), "name", json!("Lamp 2"))).await.ok().clone();
    assert_eq!(again["itemData"]["name"], "Lamp 2");
    assert_eq!(total(a.get("/v2/device/thing", "").await.ok()), 1);
    hub.stop().await;
}

#[tokio::test]
async fn add_refuses_bad_ids_digests_chipids_and_other_owners() {
    let (hub, alice, bob) = setup().await;
    factory(&hub, "c000000011", FactoryDetails { chipid: Some("chip-1".into()), ..Default::default() }).await;
    let a = api(&hub, &alice);
    a.post("/v2/device/add", add_body("c00000001")).await.fails(30010);
    a.post("/v2/device/add", add_body("c00000001z")).await.fails(30010);
    a.post("/v2/device/add", add_body("c000000099")).await.fails(30011);
    a.post("/v2/device/add", with(add_body("c000000011"), "digest", json!(digest("c000000012")))).await.fails(30015);
    a.post("/v2/device/add", with(add_body("c000000011"), "chipid", json!("chip-2"))).await.fails(30014);
    a.post("/v2/device/add", with(add_body("c000000011"), "name", json!(""))).await.fails(400);
    a.post("/v2/device/add", with(add_body("c000000011"), "name", json!(7))).await.fails(400);
    a.post("/v2/device/add", with(add_body("c000000011"), "settings", json!({"opsNotify":2}))).await.fails(400);
    a.post("/v2/device/add", with(add_body("c000000011"), "settings", json!({"opsNotify":"1"}))).await.fails(400);
    a.post("/v2/device/add", with(add_body("c000000011"), "sort", json!(3))).await.fails(400);
    a.post("/v2/device/add", json!({"name":"Lamp","deviceid":"c000000011","digest":digest("c000000011")})).await.fails(400);
    // Another user's family or an unknown room: refused, and nothing is written.
    let bob_family = hub.hub.store.current_family(&bob.apikey).await.unwrap();
    a.post("/v2/device/add", with(add_body("c000000011"), "familyid", json!(bob_family))).await.fails(405);
    a.post("/v2/device/add", with(add_body("c000000011"), "roomid", json!("nope"))).await.fails(405);
    assert!(hub.hub.store.device_record("c000000011").await.unwrap().unwrap().owner.is_none());
    // Owned by someone else.
    api(&hub, &bob).post("/v2/device/add", add_body("c000000011")).await.ok();
    a.post("/v2/device/add", add_body("c000000011")).await.fails(406);
    assert_eq!(total(a.get("/v2/device/thing", "").await.ok()), 0);
    hub.stop().await;
}

#[tokio::test]
async fn add_into_a_family_and_room() {
    let (hub, alice, _) = setup().await;
    factory(&hub, "c000000021", FactoryDetails::default()).await;
    let family = hub.hub.store.add_family(&alice.apikey, "Office", Sort::Last, &["Desk".to_owned()]).await.unwrap();
    let body = with(with(add_body("c000000021"), "familyid", json!(family.id)), "roomid", json!(family.rooms[0].id));
    let item = api(&hub, &alice).post("/v2/device/add", body).await.ok().clone();
    assert_eq!(item["itemData"]["family"]["familyid"], family.id.as_str());
    assert_eq!(item["itemData"]["family"]["roomid"], family.rooms[0].id.as_str());
    hub.stop().await;
}

#[tokio::test]
async fn add_gsm_by_its_qr_id() {
    let (hub, alice, bob) = setup().await;
    factory(&hub, "c000000031", FactoryDetails { gsm_id: Some("348512d49379bb0acace4598e14fc450".into()), ..Default::default() }).await;
    let a = api(&hub, &alice);
    let got = a.post("/v2/device/add-gsm", json!({"id":"348512d49379bb0acace4598e14fc450","name":"Tracker"})).await.ok().clone();
    assert_eq!(got["thingList"][0]["itemType"], 1);
    assert_eq!(got["thingList"][0]["itemData"]["deviceid"], "c000000031");
    assert_eq!(got["thingList"][0]["itemData"]["name"], "Tracker");
    a.post("/v2/device/add-gsm", json!({"id":"348512d49379bb0acace4598e14fc450","name":"Tracker"})).await.ok();
    api(&hub, &bob).post("/v2/device/add-gsm", json!({"id":"348512d49379bb0acace4598e14fc450","name":"Mine"})).await.fails(30007);
    a.post("/v2/device/add-gsm", json!({"id":"unknown","name":"Tracker"})).await.fails(30018);
    a.post("/v2/device/add-gsm", json!({"id":"","name":"Tracker"})).await.fails(400);
    a.post("/v2/device/add-gsm", json!({"name":"Tracker"})).await.fails(400);
    hub.stop().await;
}

#[tokio::test]
async fn update_info_renames_and_moves() {
    let (hub, alice, bob) = setup().await;
    hub.device_record("c000000041", Some(&alice)).await;
    hub.share("c000000041", &bob).await;
    let alice_family = hub.hub.store.current_family(&alice.apikey).await.unwrap();
    let room = hub.hub.store.add_room(&alice.apikey, &alice_family, "Kitchen", Sort::Last).await.unwrap();
    let bob_family = hub.hub.store.current_family(&bob.apikey).await.unwrap();
    let bob_room = hub.hub.store.add_room(&bob.apikey, &bob_family, "Den", Sort::Last).await.unwrap();
    let (a, b) = (api(&hub, &alice), api(&hub, &bob));
    a.post("/v2/device/update-info", json!({"deviceid":"c000000041","name":"Kettle","roomid":room.id})).await.ok();
    let d = a.get("/v2/device/thing", "").await.ok()["thingList"][0]["itemData"].clone();
    assert_eq!((d["name"].as_str(), d["family"]["roomid"].as_str()), (Some("Kettle"), Some(room.id.as_str())));
    a.post("/v2/device/update-info", json!({"deviceid":"c000000041","roomid":""})).await.ok();
    assert_eq!(a.get("/v2/device/thing", "").await.ok()["thingList"][0]["itemData"]["family"]["roomid"], "");
    // The sharee places it in their own room, but may not rename it nor use the owner's rooms.
    b.post("/v2/device/update-info", json!({"deviceid":"c000000041","roomid":bob_room.id})).await.ok();
    assert_eq!(b.get("/v2/device/thing", "").await.ok()["thingList"][0]["itemData"]["family"]["roomid"], bob_room.id.as_str());
    b.post("/v2/device/update-info", json!({"deviceid":"c000000041","name":"Mine"})).await.fails(406);
    b.post("/v2/device/update-info", json!({"deviceid":"c000000041","roomid":room.id})).await.fails(405);
    a.post("/v2/device/update-info", json!({"deviceid":"c000000041","roomid":"nope"})).await.fails(405);
    a.post("/v2/device/update-info", json!({"deviceid":"c000000041","name":""})).await.fails(400);
    a.post("/v2/device/update-info", json!({"deviceid":"nope","name":"X"})).await.fails(405);
    a.post("/v2/device/update-info", json!({"name":"X"})).await.fails(400);
    let carol = hub.user("carol@x.cc").await;
    api(&hub, &carol).post("/v2/device/update-info", json!({"deviceid":"c000000041","name":"X"})).await.fails(405);
    assert_eq!(a.get("/v2/device/thing", "").await.ok()["thingList"][0]["itemData"]["name"], "Kettle");
    hub.stop().await;
}

#[tokio::test]
async fn owner_delete_releases_the_device_and_tells_it() {
    let (hub, alice, bob) = setup().await;
    hub.device_record("c000000051", Some(&alice)).await;
    hub.share("c000000051", &bob).await;
    let a = api(&hub, &alice);
    let b = api(&hub, &bob);
    b.post("/v2/device/group", json!({"name":"Bob's","mainDeviceId":"c000000051"})).await.ok();
    assert_eq!(total(b.get("/v2/device/thing", "").await.ok()), 2);
    let mut dev = hub.device("c000000051").await;
    api(&hub, &carol_of(&hub).await).delete("/v2/device", "deviceid=c000000051").await.fails(405);
    a.delete("/v2/device", "deviceid=c000000051").await.ok();
    let note = dev.recv().await;
    assert_eq!((note["action"].as_str(), note["cmd"].as_str()), (Some("notify"), Some("deleteNotify")));
    assert_eq!(note["apikey"], alice.apikey.as_str());
    assert_eq!(note["deviceid"], "c000000051");
    assert_eq!(total(a.get("/v2/device/thing", "").await.ok()), 0);
    // The sharee lost the device and the group built on it.
    assert_eq!(total(b.get("/v2/device/thing", "").await.ok()), 0);
    let rec = hub.hub.store.device_record("c000000051").await.unwrap().unwrap();
    assert!(rec.owner.is_none() && rec.name.is_empty() && rec.tags.is_none());
    // Nobody may command it any more.
    a.post("/v2/device/thing/status", json!({"type":1,"id":"c000000051","params":{"switch":"on"}})).await.fails(405);
    a.delete("/v2/device", "deviceid=c000000051").await.fails(405);
    // Someone else may add it now.
    b.post("/v2/device/add", add_body("c000000051")).await.ok();
    hub.stop().await;
}

async fn carol_of(hub: &TestHub) -> TestUser {
    hub.user("carol@x.cc").await
}

#[tokio::test]
async fn sharee_delete_leaves_only_their_share() {
    let (hub, alice, bob) = setup().await;
    hub.device_record("c000000061", Some(&alice)).await;
    hub.share("c000000061", &bob).await;
    let b = api(&hub, &bob);
    b.call(reqwest::Method::DELETE, "/v2/device", "", Some(&json!({"deviceid":"c000000061"}))).await.ok();
    assert_eq!(total(b.get("/v2/device/thing", "").await.ok()), 0);
    b.get("/v2/device/thing/status", "type=1&id=c000000061").await.fails(405);
    let d = api(&hub, &alice).get("/v2/device/thing", "").await.ok()["thingList"][0]["itemData"].clone();
    assert_eq!(d["deviceid"], "c000000061");
    assert!(d.get("shareTo").is_none());
    b.delete("/v2/device", "").await.fails(400);
    hub.stop().await;
}

#[tokio::test]
async fn tags_replace_and_merge_for_the_owner_only() {
    let (hub, alice, bob) = setup().await;
    hub.device_record("c000000071", Some(&alice)).await;
    hub.share("c000000071", &bob).await;
    let a = api(&hub, &alice);
    let got = a.post("/v2/device/tags", json!({"deviceid":"c000000071","tags":{"key1":"value1","key2":"value2"}})).await.ok().clone();
    assert_eq!(got["updatedThing"]["itemData"]["tags"], json!({"key1":"value1","key2":"value2"}));
    let got = a.post("/v2/device/tags", json!({"deviceid":"c000000071","type":"merge","tags":{"key3":"value3"}})).await.ok().clone();
    assert_eq!(got["updatedThing"]["itemData"]["tags"], json!({"key1":"value1","key2":"value2","key3":"value3"}));
    let got = a.post("/v2/device/tags", json!({"deviceid":"c000000071","type":"replace","tags":{"key3":"value3"}})).await.ok().clone();
    assert_eq!(got["updatedThing"]["itemData"]["tags"], json!({"key3":"value3"}));
    a.post("/v2/device/tags", json!({"deviceid":"c000000071","type":"other","tags":{}})).await.fails(400);
    a.post("/v2/device/tags", json!({"deviceid":"c000000071","tags":"x"})).await.fails(400);
    a.post("/v2/device/tags", json!({"deviceid":"c000000071"})).await.fails(400);
    a.post("/v2/device/tags", json!({"deviceid":"c000000071","tags":{"big":"x".repeat(20_000)}})).await.fails(400);
    a.post("/v2/device/tags", json!({"deviceid":"nope","tags":{}})).await.fails(405);
    api(&hub, &bob).post("/v2/device/tags", json!({"deviceid":"c000000071","tags":{}})).await.fails(406);
    let carol = hub.user("carol@x.cc").await;
    api(&hub, &carol).post("/v2/device/tags", json!({"deviceid":"c000000071","tags":{}})).await.fails(405);
    // The sharee sees the owner's tags.
    let d = api(&hub, &bob).get("/v2/device/thing", "").await.ok()["thingList"][0]["itemData"].clone();
    assert_eq!(d["tags"], json!({"key3":"value3"}));
    hub.stop().await;
}

#[tokio::test]
async fn admin_device_add_keeps_the_factory_details() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "device",
        "add",
        "--deviceid",
        "c000000081",
        "--factory-apikey",
        "fkey",
        "--model",
        "GSM1",
        "--chipid",
        "CHIP9",
        "--gsm-id",
        "qr-81",
        "--brand",
        "Acme",
        "--product-model",
        "A-1",
        "--mac",
        "aa:bb:cc",
    ];
    procs::admin_ok(dir.path(), &args);
    let out = procs::admin(dir.path(), &["device", "add", "--deviceid", "c000000082", "--factory-apikey", "k", "--gsm-id", "qr-81"]);
    assert!(!out.success() && out.stderr.contains("already exists"), "{out}");
    let out = procs::admin(dir.path(), &["device", "add", "--deviceid", "c000000083", "--factory-apikey", "k", "--gsm-id", ""]);
    assert!(!out.success() && out.stderr.contains("--gsm-id"), "{out}");
    let store = procs::open_test_store(dir.path()).await;
    let rec = store.device_record_by_gsm("qr-81").await.unwrap().expect("found by its GSM id");
    assert_eq!(rec.deviceid, "c000000081");
    assert_eq!(rec.chipid.as_deref(), Some("CHIP9"));
    assert_eq!((rec.brand_name.as_str(), rec.product_model.as_str()), ("Acme", "A-1"));
    let extra: Value = serde_json::from_str(&rec.extra).unwrap();
    assert_eq!((&extra["mac"], &extra["model"], &extra["uiid"]), (&json!("aa:bb:cc"), &json!("GSM1"), &json!(1)));
    assert!(store.device_record("c000000082").await.unwrap().is_none());
    store.close().await;
}
