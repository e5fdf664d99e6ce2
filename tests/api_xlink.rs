//! Seed 003's device routes through the real server: registering devices of a product, the
//! versioned device list, extension properties, `unsubscribe`, the `Access-Token` header, and
//! the code table in the README and `/openapi.json`.

mod common;

use std::time::{Duration, Instant};

use common::rest::api;
use common::xlink::{product, xlink};
use common::{TestHub, TestUser};
use serde_json::{Value, json};
use switchyard::ids::DeviceId;
use switchyard::store::device::FactoryDetails;

const OPEN: &str = "lamp-open";
const CLOSED: &str = "lamp-closed";

async fn setup() -> (TestHub, TestUser, TestUser) {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let bob = hub.user("bob@example.com").await;
    product(&hub, OPEN, true).await;
    product(&hub, CLOSED, false).await;
    (hub, alice, bob)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Polls `check` until it holds, or fails after 5 s.
async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn registering_makes_a_device_with_a_key_once_per_product_and_mac() {
    let (hub, alice, bob) = setup().await;
    let a = xlink(&hub, &alice);
    let body = json!({"product_id": OPEN, "mac": "AA:BB:CC:DD:EE:01", "name": "Desk", "access_key": "1234",
        "mcu_mod": "m1", "mcu_version": "1", "firmware_mod": "f1", "firmware_version": "2.0"});
    let made = a.post(&format!("/v2/user/{}/register_device", alice.apikey), body).await.ok().clone();
    let id = made["device_id"].as_str().unwrap().to_owned();
    assert!(is_hex(&id, 10), "{made}");
    assert_eq!(made["mac"], "aabbccddee01");
    assert_eq!(made["product_id"], OPEN);
    for (k, v) in [
        ("name", "Desk"),
        ("access_key", "1234"),
        ("mcu_mod", "m1"),
        ("mcu_version", "1"),
        ("firmware_mod", "f1"),
        ("firmware_version", "2.0"),
    ] {
        assert_eq!(made[k], v, "{k}: {made}");
    }
    let key = made["device_key"].as_str().unwrap();
    assert_eq!(key.len(), 36, "{made}");
    let record = hub.hub.store.device(&id).await.unwrap().unwrap();
    assert_eq!(record.factory_apikey, key);
    assert_eq!(record.owner.as_ref(), Some(&alice.apikey));
    assert_eq!(hub.hub.store.device_product(&id).await.unwrap().as_deref(), Some(OPEN));

    // One device per product and MAC, whatever the MAC's spelling and whoever asks.
    a.register(OPEN, "aabbccddee01").await.fails(409, 4091);
    xlink(&hub, &bob).register(OPEN, "aa-bb-cc-dd-ee-01").await.fails(409, 4091);
    // The same MAC under another product is another device; a closed product refuses.
    xlink(&hub, &bob).register(CLOSED, "aabbccddee01").await.fails(403, 4032);
    a.register("nope", "aabbccddee02").await.fails(404, 4041);
    for bad in ["", "aabbccddee0", "aabbccddee0g", "aabbccddee011"] {
        a.register(OPEN, bad).await.fails(400, 4001);
    }
    a.post(&format!("/v2/user/{}/register_device", alice.apikey), json!({"mac": "aabbccddee02"})).await.fails(400, 4001);
    a.post(
        &format!("/v2/user/{}/register_device", alice.apikey),
        json!({"product_id": OPEN, "mac": "aabbccddee02", "name": "x".repeat(65)}),
    )
    .await
    .fails(400, 4001);
    // The path names the caller, no one else.
    a.post(&format!("/v2/user/{}/register_device", bob.apikey), json!({"product_id": OPEN, "mac": "aabbccddee03"})).await.fails(403, 4031);

    // Seed 004's thing list shows it as the caller's own device.
    let things = api(&hub, &alice).get("/v2/device/thing", "").await.ok().clone();
    let item = things["thingList"].as_array().unwrap().iter().find(|t| t["itemData"]["deviceid"] == id.as_str()).cloned();
    assert_eq!(item.expect("listed")["itemType"], 1);
    hub.stop().await;
}

#[tokio::test]
async fn registering_binds_an_unowned_factory_record_of_the_product() {
    let (hub, alice, _) = setup().await;
    let details = FactoryDetails { mac: Some("AA:BB:CC:00:00:01".into()), product_id: Some(OPEN.into()), ..Default::default() };
    hub.hub.store.add_factory_device(&DeviceId::new("f000000001"), "factory-key", "EMU", 1, None, "", &details).await.unwrap();
    let bound = xlink(&hub, &alice).register(OPEN, "aabbcc000001").await.ok().clone();
    assert_eq!(bound["device_id"], "f000000001");
    assert!(bound.get("device_key").is_none(), "a factory record keeps its key, unshown: {bound}");
    assert_eq!(bound["name"], "lamp-open lamp", "the product's name by default");
    let record = hub.hub.store.device("f000000001").await.unwrap().unwrap();
    assert_eq!((record.owner.as_ref(), record.factory_apikey.as_str()), (Some(&alice.apikey), "factory-key"));
    hub.stop().await;
}

#[tokio::test]
async fn access_token_works_on_every_rest_route_without_an_app_id() {
    let (hub, alice, _) = setup().await;
    let res = hub.http_client().get(format!("{}/v2/device/thing", hub.base())).header("Access-Token", &alice.at).send().await.unwrap();
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], 0, "{v}");
    // A bad or missing token on a seed-003 route: 401 in this door's form.
    let mut x = xlink(&hub, &alice);
    x.token = Some("0".repeat(40));
    x.get("/v2/share/device/list").await.fails(401, 4011);
    x.token = None;
    x.get("/v2/share/device/list").await.fails(401, 4011);
    // An expired one.
    let pair = hub.hub.store.issue_tokens(&alice.apikey, common::APPID, Duration::ZERO, Duration::from_secs(60)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    x.token = Some(pair.at);
    x.get("/v2/share/device/list").await.fails(401, 4012);
    hub.stop().await;
}

#[tokio::test]
async fn the_device_list_has_a_version_that_rises_on_changes_only() {
    let (hub, alice, _) = setup().await;
    let a = xlink(&hub, &alice);
    let first = a.devices(None).await.ok().clone();
    assert_eq!(first, json!({"version": "1", "list": []}));
    assert_eq!(a.devices(Some("1")).await.ok(), &json!({"version": "1"}), "the current version: no list");
    a.devices(Some("x1")).await.fails(400, 4001);

    let made = a.register(OPEN, "aabbccddee01").await.ok().clone();
    let id = made["device_id"].as_str().unwrap().to_owned();
    let key = made["device_key"].as_str().unwrap().to_owned();
    let listed = a.devices(Some("1")).await.ok().clone();
    assert_eq!(listed["version"], "2", "{listed}");
    let d = listed["list"][0].clone();
    let mut fields: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "access_key",
            "active_code",
            "active_date",
            "authorize_code",
            "firmware_mod",
            "firmware_version",
            "id",
            "is_active",
            "is_online",
            "last_login",
            "mac",
            "mcu_mod",
            "mcu_version",
            "name",
            "product_id"
        ]
    );
    assert_eq!((d["id"].as_str(), d["mac"].as_str(), d["product_id"].as_str()), (Some(id.as_str()), Some("aabbccddee01"), Some(OPEN)));
    assert_eq!((d["is_active"].as_bool(), d["is_online"].as_bool(), d["active_date"].as_str()), (Some(false), Some(false), Some("")));
    assert_eq!(a.devices(Some("2")).await.ok(), &json!({"version": "2"}));

    // The device's first registration activates it (a change); being online is not one.
    let mut device = hub.raw().await;
    device.send(json!({"userAgent":"device","apikey":key,"deviceid":id,"action":"register","version":2,"romVersion":"1.0","model":"EMU","ts":1})).await;
    assert_eq!(device.recv().await["error"], 0);
    wait_until("the device is active", || async { a.devices(Some("2")).await.ok()["version"] != "2" }).await;
    let active = a.devices(None).await.ok().clone();
    assert_eq!(active["version"], "3");
    let d = &active["list"][0];
    assert_eq!((d["is_active"].as_bool(), d["is_online"].as_bool()), (Some(true), Some(true)), "{d}");
    let date = d["active_date"].as_str().unwrap();
    assert!(date.len() == 24 && date.ends_with('Z') && date.as_bytes()[10] == b'T', "{date}");
    assert_eq!(d["last_login"], d["active_date"]);
    drop(device);
    wait_until("the device is offline", || async { a.devices(None).await.ok()["list"][0]["is_online"] == false }).await;
    assert_eq!(a.devices(Some("3")).await.ok(), &json!({"version": "3"}), "going offline is not a change");

    // A rename through seed 004 is a change.
    api(&hub, &alice).post("/v2/device/update-info", json!({"deviceid": id, "name": "Hall"})).await.ok();
    let renamed = a.devices(Some("3")).await.ok().clone();
    assert_eq!((renamed["version"].as_str(), renamed["list"][0]["name"].as_str()), (Some("4"), Some("Hall")));
    // So is a firmware version the device reports.
    hub.hub.store.save_params(&[(DeviceId::new(id.as_str()), r#"{"fwVersion":"2.1"}"#.into())]).await.unwrap();
    let updated = a.devices(Some("4")).await.ok().clone();
    assert_eq!((updated["version"].as_str(), updated["list"][0]["firmware_version"].as_str()), (Some("5"), Some("2.1")));
    // Releasing the device empties the list.
    a.unsubscribe(&id).await.empty();
    assert_eq!(a.devices(Some("5")).await.ok(), &json!({"version": "6", "list": []}));
    // A second reader of the same change sees the same number.
    assert_eq!(a.devices(None).await.ok()["version"], "6");
    hub.stop().await;
}

#[tokio::test]
async fn properties_merge_up_to_ten_keys_for_the_manager_and_read_for_sharees() {
    let (hub, alice, bob) = setup().await;
    let carol = hub.user("carol@example.com").await;
    let a = xlink(&hub, &alice);
    let id = a.register(OPEN, "aabbccddee01").await.ok()["device_id"].as_str().unwrap().to_owned();
    let path = format!("/v2/product/{OPEN}/device/{id}/property");
    assert_eq!(a.get(&path).await.ok(), &json!({}));
    let set = a.post(&path, json!({"room": "hall", "floor": 2, "lit": true})).await.ok().clone();
    assert_eq!(set, json!({"floor": 2, "lit": true, "room": "hall"}));
    let merged = a.post(&path, json!({"room": "kitchen", "lit": null, "note": "x"})).await.ok().clone();
    assert_eq!(merged, json!({"floor": 2, "note": "x", "room": "kitchen"}));
    assert_eq!(a.get(&path).await.ok(), &merged);

    // Bad keys and values change nothing and are named.
    for key in ["", "a.b", "$set", "nul\u{0}"] {
        let r = a.post(&path, json!({"ok": 1, key: 1})).await;
        r.fails(400, 4002);
    }
    let r = a.post(&path, json!({"deep": {"x": 1}})).await;
    assert!(r.fails(400, 4002).body["error"]["msg"].as_str().unwrap().contains("deep"), "{r:?}");
    a.post(&path, json!({"big": "x".repeat(1100)})).await.fails(400, 4002);
    a.post(&path, json!({"list": [1]})).await.fails(400, 4002);
    a.post(&path, json!([1, 2])).await.fails(400, 4001);
    // Ten keys fit; the eleventh does not, and the error names it.
    let seven: serde_json::Map<String, Value> = (1..=7).map(|i| (format!("k{i}"), json!(i))).collect();
    assert_eq!(a.post(&path, Value::Object(seven)).await.ok().as_object().unwrap().len(), 10);
    let r = a.post(&path, json!({"k1": 0, "eleventh": 1})).await;
    assert!(r.fails(400, 4003).body["error"]["msg"].as_str().unwrap().contains("eleventh"), "{r:?}");
    // Removing one while adding one stays at ten.
    assert_eq!(a.post(&path, json!({"k7": null, "eleventh": 1})).await.ok().as_object().unwrap().len(), 10);
    let before = a.get(&path).await.ok().clone();

    // The product in the path must be the device's; unknown devices are 404.
    a.get(&format!("/v2/product/{CLOSED}/device/{id}/property")).await.fails(404, 4042);
    a.post(&format!("/v2/product/{CLOSED}/device/{id}/property"), json!({"x": 1})).await.fails(404, 4042);
    a.get(&format!("/v2/product/{OPEN}/device/ffffffffff/property")).await.fails(404, 4042);

    // A sharee reads but may not write; a stranger may do neither.
    let code = a.invite(&id, "app", Some("bob@example.com")).await.ok()["invite_code"].as_str().unwrap().to_owned();
    xlink(&hub, &bob).accept(&code).await.empty();
    assert_eq!(xlink(&hub, &bob).get(&path).await.ok(), &before);
    xlink(&hub, &bob).post(&path, json!({"x": 1})).await.fails(403, 4031);
    xlink(&hub, &carol).get(&path).await.fails(403, 4031);
    xlink(&hub, &carol).post(&path, json!({"x": 1})).await.fails(403, 4031);
    assert_eq!(a.get(&path).await.ok(), &before);

    // Releasing the device drops its properties: the next manager starts empty.
    a.unsubscribe(&id).await.empty();
    let again = xlink(&hub, &carol).register(OPEN, "aabbccddee01").await.ok().clone();
    assert_eq!(again["device_id"], id.as_str(), "the released record is bound again");
    assert_eq!(xlink(&hub, &carol).get(&path).await.ok(), &json!({}));
    hub.stop().await;
}

#[tokio::test]
async fn unsubscribe_leaves_a_share_or_releases_the_device() {
    let (hub, alice, bob) = setup().await;
    let carol = hub.user("carol@example.com").await;
    let a = xlink(&hub, &alice);
    let b = xlink(&hub, &bob);
    let id = a.register(OPEN, "aabbccddee01").await.ok()["device_id"].as_str().unwrap().to_owned();
    let code = a.invite(&id, "app", Some(bob.apikey.as_str())).await.ok()["invite_code"].as_str().unwrap().to_owned();
    b.accept(&code).await.empty();
    let pending = a.invite(&id, "qrcode", None).await.ok()["invite_code"].as_str().unwrap().to_owned();
    assert_eq!(b.devices(None).await.ok()["list"].as_array().unwrap().len(), 1);

    // Strangers, other paths and unknown devices.
    xlink(&hub, &carol).unsubscribe(&id).await.fails(403, 4031);
    xlink(&hub, &carol).unsubscribe("ffffffffff").await.fails(404, 4042);
    a.post(&format!("/v2/user/{}/unsubscribe", bob.apikey), json!({"device_id": id})).await.fails(403, 4031);
    a.post(&format!("/v2/user/{}/unsubscribe", alice.apikey), json!({})).await.fails(400, 4001);

    // The sharee leaves: the manager keeps the device.
    b.unsubscribe(&id).await.empty();
    assert!(hub.hub.store.audience(&DeviceId::new(id.as_str())).await.unwrap().unwrap().sharees.is_empty());
    assert_eq!(b.devices(None).await.ok()["list"], json!([]));
    b.unsubscribe(&id).await.fails(403, 4031);
    // Shared again, then the manager releases: shares and pending invites end.
    let code = a.invite(&id, "app", Some("bob@example.com")).await.ok()["invite_code"].as_str().unwrap().to_owned();
    b.accept(&code).await.empty();
    a.unsubscribe(&id).await.empty();
    let record = hub.hub.store.device(&id).await.unwrap().unwrap();
    assert_eq!(record.owner, None);
    assert_eq!(hub.hub.store.audience(&DeviceId::new(id.as_str())).await.unwrap(), None);
    assert_eq!(b.devices(None).await.ok()["list"], json!([]));
    let states: Vec<(String, String)> = a
        .invites()
        .await
        .iter()
        .map(|i| (i["invite_code"].as_str().unwrap().to_owned(), i["state"].as_str().unwrap().to_owned()))
        .collect();
    assert!(states.contains(&(pending.clone(), "cancel".into())), "{states:?}");
    xlink(&hub, &carol).accept(&pending).await.fails(409, 4094);
    let things = api(&hub, &bob).get("/v2/device/thing", "").await.ok().clone();
    assert_eq!(things["thingList"], json!([]), "the sharee's thing list lost it too");
    hub.stop().await;
}

#[tokio::test]
async fn the_code_table_is_in_the_readme_and_the_openapi_document() {
    let hub = TestHub::start().await;
    let doc: Value = hub.http_client().get(format!("{}/openapi.json", hub.base())).send().await.unwrap().json().await.unwrap();
    for (path, methods) in [
        ("/v2/user/{user_id}/register_device", &["post"][..]),
        ("/v2/user/{user_id}/subscribe/devices", &["get"]),
        ("/v2/product/{product_id}/device/{device_id}/property", &["get", "post"]),
        ("/v2/user/{user_id}/unsubscribe", &["post"]),
        ("/v2/share/device", &["post"]),
        ("/v2/share/device/cancel", &["post"]),
        ("/v2/share/device/accept", &["post"]),
        ("/v2/share/device/deny", &["post"]),
        ("/v2/share/device/list", &["get"]),
        ("/v2/share/device/delete/{invite_code}", &["delete"]),
    ] {
        for m in methods {
            assert!(doc["paths"][path][m].is_object(), "{m} {path} is not documented");
        }
    }
    let tag = doc["tags"].as_array().unwrap().iter().find(|t| t["name"] == "xlink").expect("the xlink tag");
    let described = tag["description"].as_str().unwrap();
    let readme = include_str!("../README.md");
    for f in switchyard::http::xlink::FAULTS {
        let (status, code, _) = f.entry();
        let row = format!("| {} | {code} |", status.as_u16());
        assert!(described.contains(&row), "OpenAPI lacks {row}");
        assert!(readme.contains(&row), "README lacks {row}");
    }
    assert!(doc["components"]["securitySchemes"]["access_token"].is_object());
    hub.stop().await;
}
