//! `/v2/device/thing…`: thing lists, status reads and commands through a real hub to emulated
//! devices.

mod common;

use std::time::{Duration, Instant};

use common::rest::api;
use common::{TestHub, TestUser};
use serde_json::{Value, json};
use switchyard::ids::DeviceId;

async fn setup() -> (TestHub, TestUser, TestUser) {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    let bob = hub.user("bob@x.cc").await;
    (hub, alice, bob)
}

fn items(data: &Value) -> &Vec<Value> {
    data["thingList"].as_array().expect("thingList")
}

fn ids(data: &Value) -> Vec<String> {
    items(data).iter().map(|i| i["itemData"]["deviceid"].as_str().or(i["itemData"]["id"].as_str()).unwrap().to_owned()).collect()
}

#[tokio::test]
async fn own_device_item_has_every_field() {
    let (hub, alice, _) = setup().await;
    hub.device_record("a000000001", Some(&alice)).await;
    let family = hub.hub.store.current_family(&alice.apikey).await.unwrap();
    let a = api(&hub, &alice);
    let data = a.get("/v2/device/thing", "").await.ok().clone();
    assert_eq!(data["total"], 1);
    let item = &items(&data)[0];
    assert_eq!(item["itemType"], 1);
    let d = &item["itemData"];
    assert_eq!(d["deviceid"], "a000000001");
    assert_eq!(d["apikey"], alice.apikey.as_str());
    assert_eq!(d["devicekey"], "key-a000000001");
    assert_eq!(d["extra"]["model"], "EMU");
    assert_eq!(d["extra"]["uiid"], 1);
    for k in ["ui", "description", "manufacturer", "mac", "apmac", "modelInfo", "brandId"] {
        assert!(d["extra"][k].is_string(), "extra.{k} missing: {d}");
    }
    assert_eq!(d["online"], false);
    assert_eq!(d["params"], json!({}));
    assert_eq!(d["settings"], json!({"opsNotify":0,"opsHistory":1,"alarmNotify":1}));
    assert_eq!(d["family"]["familyid"], family.as_str());
    assert_eq!(d["family"]["index"], item["index"]);
    assert_eq!(d["family"]["roomid"], "");
    assert_eq!(d["devGroups"], json!([]));
    for k in ["brandName", "brandLogo", "productModel"] {
        assert!(d[k].is_string(), "{k} missing");
    }
    assert!(d["showBrand"].is_boolean());
    assert!(d.get("sharedBy").is_none() && d.get("shareTo").is_none());
    // Another user sees nothing of it.
    let b = hub.user("carol@x.cc").await;
    assert_eq!(api(&hub, &b).get("/v2/device/thing", "").await.ok()["total"], 0);
    hub.stop().await;
}

#[tokio::test]
async fn shared_device_shows_shared_by_and_share_to_without_the_factory_key() {
    let (hub, alice, bob) = setup().await;
    hub.device_record("a000000002", Some(&alice)).await;
    hub.share("a000000002", &bob).await;
    let bob_view = api(&hub, &bob).get("/v2/device/thing", "").await.ok().clone();
    let item = &items(&bob_view)[0];
    assert_eq!(item["itemType"], 2);
    let d = &item["itemData"];
    assert_eq!(d["apikey"], alice.apikey.as_str());
    assert!(d.get("devicekey").is_none(), "a sharee must not see the factory key: {d}");
    assert_eq!(d["sharedBy"]["apikey"], alice.apikey.as_str());
    assert_eq!(d["sharedBy"]["email"], "alice@x.cc");
    assert_eq!(d["sharedBy"]["permit"], 15);
    assert!(d["sharedBy"]["shareTime"].as_i64().unwrap() > 1_000_000_000_000);
    let alice_view = api(&hub, &alice).get("/v2/device/thing", "").await.ok().clone();
    let d = &items(&alice_view)[0]["itemData"];
    assert_eq!(d["shareTo"][0]["apikey"], bob.apikey.as_str());
    assert_eq!(d["shareTo"][0]["email"], "bob@x.cc");
    assert!(d.get("sharedBy").is_none());
    hub.stop().await;
}

/// The official SDK's "all pages" loop (`getAllThingsAllPages`): ask for a page, then ask again
/// with the last index it saw as `beginIndex`, until a page comes back short.
#[tokio::test]
async fn paging_with_the_sdks_rule_lists_every_thing_once() {
    let (hub, alice, _bob) = setup().await;
    let mut made: Vec<String> = (0..36).map(|i| format!("b0000000{i:02}")).collect();
    for id in &made {
        hub.device_record(id, Some(&alice)).await;
    }
    let a = api(&hub, &alice);
    for num in [30, 10, 7] {
        let mut seen: Vec<String> = Vec::new();
        let mut begin: Option<i64> = None;
        let mut pages = 0;
        loop {
            let query = match begin {
                None => format!("num={num}"),
                Some(b) => format!("num={num}&beginIndex={b}"),
            };
            let page = a.get("/v2/device/thing", &query).await.ok().clone();
            assert_eq!(page["total"], 36);
            let got = items(&page);
            seen.extend(ids(&page));
            pages += 1;
            if got.len() < num {
                break;
            }
            begin = Some(got.last().unwrap()["index"].as_i64().unwrap());
            assert!(pages < 20, "paging does not end");
        }
        assert_eq!(seen.len(), 36, "num={num}: {seen:?}");
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        made.sort();
        assert_eq!(unique, made, "num={num}: every thing exactly once");
    }
    hub.stop().await;
}

#[tokio::test]
async fn list_pages_by_index_and_checks_its_parameters() {
    let (hub, alice, bob) = setup().await;
    // Each new device goes first (sort 1): indexes -2, -1, 0 for 3, 2, 1.
    for id in ["a000000011", "a000000012", "a000000013"] {
        hub.device_record(id, Some(&alice)).await;
    }
    let a = api(&hub, &alice);
    let all = a.get("/v2/device/thing", "num=0").await.ok().clone();
    assert_eq!(ids(&all), ["a000000013", "a000000012", "a000000011"]);
    assert_eq!(all["total"], 3);
    let page = a.get("/v2/device/thing", "num=2").await.ok().clone();
    assert_eq!(ids(&page), ["a000000013", "a000000012"]);
    assert_eq!(page["total"], 3);
    // `beginIndex` is exclusive: the next page starts after the last index seen.
    let next = items(&page)[1]["index"].as_i64().unwrap();
    let rest = a.get("/v2/device/thing", &format!("num=2&beginIndex={next}")).await.ok().clone();
    assert_eq!(ids(&rest), ["a000000011"]);
    a.get("/v2/device/thing", "num=-1").await.fails(400);
    a.get("/v2/device/thing", "num=abc").await.fails(400);
    a.get("/v2/device/thing", "beginIndex=x").await.fails(400);
    // Another user's family is unknown; so is a made-up one.
    let bob_family = hub.hub.store.current_family(&bob.apikey).await.unwrap();
    a.get("/v2/device/thing", &format!("familyid={bob_family}")).await.fails(405);
    a.get("/v2/device/thing", "familyid=nope").await.fails(405);
    let mine = hub.hub.store.current_family(&alice.apikey).await.unwrap();
    assert_eq!(a.get("/v2/device/thing", &format!("familyid={mine}&lang=en")).await.ok()["total"], 3);
    hub.stop().await;
}

#[tokio::test]
async fn named_things_are_the_callers_only() {
    let (hub, alice, bob) = setup().await;
    hub.device_record("a000000021", Some(&alice)).await;
    hub.device_record("a000000022", Some(&alice)).await;
    hub.device_record("b000000021", Some(&bob)).await;
    let a = api(&hub, &alice);
    let got = a
        .post(
            "/v2/device/thing",
            json!({"thingList":[
                {"itemType":1,"id":"a000000022"},
                {"itemType":1,"id":"b000000021"},
                {"itemType":1,"id":"nope"},
                {"itemType":3,"id":"a000000021"},
                {"itemType":1,"id":"a000000021"}
            ]}),
        )
        .await
        .ok()
        .clone();
    assert_eq!(ids(&got), ["a000000022", "a000000021"]);
    a.post("/v2/device/thing", json!({"thingList":[]})).await.fails(400);
    let eleven: Vec<Value> = (0..11).map(|i| json!({"itemType":1,"id":format!("x{i}")})).collect();
    a.post("/v2/device/thing", json!({"thingList": eleven})).await.fails(400);
    a.post("/v2/device/thing", json!({"thingList":[{"itemType":5,"id":"a000000021"}]})).await.fails(400);
    a.post("/v2/device/thing", json!({"thingList":[{"itemType":"1","id":"a000000021"}]})).await.fails(400);
    a.post("/v2/device/thing", json!({})).await.fails(400);
    hub.stop().await;
}

#[tokio::test]
async fn groups_are_listed_and_shown_on_their_devices() {
    let (hub, alice, _) = setup().await;
    hub.device_record("a000000031", Some(&alice)).await;
    let a = api(&hub, &alice);
    let group = a.post("/v2/device/group", json!({"name":"Lights","mainDeviceId":"a000000031"})).await.ok().clone();
    let gid = group["itemData"]["id"].as_str().unwrap().to_owned();
    let list = a.get("/v2/device/thing", "").await.ok().clone();
    assert_eq!(list["total"], 2);
    let g = items(&list).iter().find(|i| i["itemType"] == 3).expect("group item");
    assert_eq!(g["itemData"]["id"], gid.as_str());
    assert_eq!(g["itemData"]["name"], "Lights");
    assert_eq!(g["itemData"]["mainDeviceId"], "a000000031");
    assert!(g["itemData"]["family"]["familyid"].is_string());
    assert!(g["itemData"]["params"].is_object());
    let d = items(&list).iter().find(|i| i["itemType"] == 1).unwrap();
    assert_eq!(d["itemData"]["devGroups"], json!([{"type":1,"groupId":gid}]));
    let named = a.post("/v2/device/thing", json!({"thingList":[{"itemType":3,"id":gid}]})).await.ok().clone();
    assert_eq!(items(&named).len(), 1);
    // The group's state.
    a.post("/v2/device/group/status", json!({"id":gid,"params":{"switch":"on"}})).await.ok();
    let st = a.get("/v2/device/thing/status", &format!("type=2&id={gid}")).await.ok().clone();
    assert_eq!(st["params"]["switch"], "on");
    // Another user cannot read it.
    let bob = hub.user("bob2@x.cc").await;
    api(&hub, &bob).get("/v2/device/thing/status", &format!("type=2&id={gid}")).await.fails(405);
    hub.stop().await;
}

#[tokio::test]
async fn status_reads_stored_then_live_state() {
    let (hub, alice, bob) = setup().await;
    hub.device_record("a000000041", Some(&alice)).await;
    hub.hub.store.save_params(&[(DeviceId::new("a000000041"), r#"{"switch":"off","light":1,"rssi":-40}"#.to_owned())]).await.unwrap();
    let a = api(&hub, &alice);
    let st = a.get("/v2/device/thing/status", "type=1&id=a000000041").await.ok().clone();
    assert_eq!(st["params"], json!({"switch":"off","light":1,"rssi":-40}));
    let st = a.get("/v2/device/thing/status", "type=1&id=a000000041&params=switch%7Clight").await.ok().clone();
    assert_eq!(st["params"], json!({"switch":"off","light":1}));
    // Online: the live state, in the list too.
    let mut dev = hub.device("a000000041").await;
    dev.send(
        json!({"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":"a000000041","action":"update","params":{"switch":"on"}}),
    )
    .await;
    assert_eq!(dev.recv().await["error"], 0);
    let st = a.get("/v2/device/thing/status", "type=1&id=a000000041&params=switch").await.ok().clone();
    assert_eq!(st["params"], json!({"switch":"on"}));
    let list = a.get("/v2/device/thing", "").await.ok().clone();
    assert_eq!(items(&list)[0]["itemData"]["online"], true);
    assert_eq!(items(&list)[0]["itemData"]["params"]["switch"], "on");
    // Errors.
    a.get("/v2/device/thing/status", "type=3&id=a000000041").await.fails(400);
    a.get("/v2/device/thing/status", "id=a000000041").await.fails(400);
    a.get("/v2/device/thing/status", "type=1&id=nope").await.fails(405);
    a.get("/v2/device/thing/status", "type=2&id=nope").await.fails(405);
    api(&hub, &bob).get("/v2/device/thing/status", "type=1&id=a000000041").await.fails(405);
    hub.share("a000000041", &bob).await;
    api(&hub, &bob).get("/v2/device/thing/status", "type=1&id=a000000041").await.ok();
    hub.stop().await;
}

#[tokio::test]
async fn update_reaches_the_device_and_answers_its_ack() {
    let (hub, alice, _) = setup().await;
    hub.device_record("a000000051", Some(&alice)).await;
    let mut dev = hub.device("a000000051").await;
    let mut listener = hub.app(&alice).await;
    let a = api(&hub, &alice);
    let call = a.post("/v2/device/thing/status", json!({"type":1,"id":"a000000051","params":{"switch":"on"}}));
    let device_side = async {
        let cmd = dev.recv().await;
        assert_eq!(cmd["action"], "update");
        assert_eq!(cmd["params"], json!({"switch":"on"}));
        assert_eq!(cmd["apikey"], alice.apikey.as_str());
        assert!(cmd["sequence"].is_string());
        dev.send(json!({"error":0,"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":"a000000051","sequence":cmd["sequence"]}))
            .await;
    };
    let (answer, ()) = tokio::join!(call, device_side);
    answer.ok();
    // The app sessions hear the command, as for a WebSocket command.
    let echo = listener.recv().await;
    assert_eq!((echo["action"].as_str(), &echo["params"]), (Some("update"), &json!({"switch":"on"})));
    // The acked command's params are the device's state now (firmware often sends no report).
    let st = a.get("/v2/device/thing/status", "type=1&id=a000000051").await.ok().clone();
    assert_eq!(st["params"], json!({"switch":"on"}));

    // A device error is a failed control.
    let call = a.post("/v2/device/thing/status", json!({"type":1,"id":"a000000051","params":{"switch":"off"}}));
    let device_side = async {
        let cmd = dev.recv().await;
        dev.send(json!({"error":400,"deviceid":"a000000051","sequence":cmd["sequence"]})).await;
    };
    let (answer, ()) = tokio::join!(call, device_side);
    answer.fails(4002);
    hub.stop().await;
}

#[tokio::test]
async fn update_without_ack_answers_504_at_the_ack_timeout() {
    let hub = TestHub::start_with(|s| s.set("ack_timeout_ms", "300")).await;
    let alice = hub.user("alice@x.cc").await;
    hub.device_record("a000000061", Some(&alice)).await;
    let mut dev = hub.device("a000000061").await;
    let started = Instant::now();
    let answer = api(&hub, &alice).post("/v2/device/thing/status", json!({"type":1,"id":"a000000061","params":{"switch":"on"}})).await;
    answer.fails(504);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(290) && took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(dev.recv().await["action"], "update");
    hub.stop().await;
}

#[tokio::test]
async fn update_errors() {
    let (hub, alice, bob) = setup().await;
    hub.device_record("a000000071", Some(&alice)).await;
    hub.device_record("b000000071", Some(&bob)).await;
    let a = api(&hub, &alice);
    a.post("/v2/device/thing/status", json!({"type":1,"id":"a000000071","params":{"switch":"on"}})).await.fails(4002);
    a.post("/v2/device/thing/status", json!({"type":1,"id":"b000000071","params":{"switch":"on"}})).await.fails(405);
    a.post("/v2/device/thing/status", json!({"type":1,"id":"nope","params":{"switch":"on"}})).await.fails(405);
    a.post("/v2/device/thing/status", json!({"type":1,"id":"a000000071","params":{}})).await.fails(400);
    a.post("/v2/device/thing/status", json!({"type":1,"id":"a000000071","params":"on"})).await.fails(400);
    a.post("/v2/device/thing/status", json!({"type":9,"id":"a000000071","params":{"switch":"on"}})).await.fails(400);
    a.post("/v2/device/thing/status", json!({"id":"a000000071","params":{"switch":"on"}})).await.fails(400);
    a.post("/v2/device/thing/status", json!({"type":2,"id":"nope","params":{"switch":"on"}})).await.fails(405);
    hub.stop().await;
}

#[tokio::test]
async fn group_update_goes_to_online_members() {
    let (hub, alice, _) = setup().await;
    hub.device_record("a000000081", Some(&alice)).await;
    hub.device_record("a000000082", Some(&alice)).await;
    let a = api(&hub, &alice);
    let group =
        a.post("/v2/device/group", json!({"name":"G","mainDeviceId":"a000000081","deviceidList":["a000000082"]})).await.ok().clone();
    let gid = group["itemData"]["id"].as_str().unwrap().to_owned();
    let mut dev = hub.device("a000000081").await;
    a.post("/v2/device/thing/status", json!({"type":2,"id":gid,"params":{"switch":"on"}})).await.ok();
    let cmd = dev.recv().await;
    assert_eq!((cmd["action"].as_str(), &cmd["params"]), (Some("update"), &json!({"switch":"on"})));
    hub.stop().await;
}

#[tokio::test]
async fn batch_status_answers_per_thing() {
    let (hub, alice, bob) = setup().await;
    for id in ["a000000091", "a000000092", "a000000093"] {
        hub.device_record(id, Some(&alice)).await;
    }
    hub.device_record("b000000091", Some(&bob)).await;
    let mut d1 = hub.device("a000000091").await;
    let _mute = hub.device("a000000093").await;
    let a = api(&hub, &alice);
    let on = json!({"switch":"on"});
    let call = a.post(
        "/v2/device/thing/batch-status",
        json!({"timeout":700,"thingList":[
            {"type":1,"id":"a000000091","params":on},
            {"type":1,"id":"a000000092","params":on},
            {"type":1,"id":"a000000093","params":on},
            {"type":1,"id":"b000000091","params":on},
            {"type":2,"id":"nogroup","params":on}
        ]}),
    );
    let device_side = async {
        let cmd = d1.recv().await;
        d1.send(json!({"error":0,"deviceid":"a000000091","sequence":cmd["sequence"]})).await;
    };
    let (answer, ()) = tokio::join!(call, device_side);
    let errors: Vec<(String, i64)> = answer.ok()["respList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r["error"].as_i64().unwrap()))
        .collect();
    let want: Vec<(String, i64)> = [("a000000091", 0), ("a000000092", 30022), ("a000000093", 504), ("b000000091", 405), ("nogroup", 0)]
        .iter()
        .map(|(i, e)| (i.to_string(), *e))
        .collect();
    assert_eq!(errors, want);
    // timeout 0 (the default): answered at once, error 0 for a device that is online.
    let r = a.post("/v2/device/thing/batch-status", json!({"thingList":[{"type":1,"id":"a000000091","params":on}]})).await.ok().clone();
    assert_eq!(r["respList"], json!([{"type":1,"id":"a000000091","error":0}]));
    assert_eq!(d1.recv().await["action"], "update");
    // Bad requests.
    a.post("/v2/device/thing/batch-status", json!({"thingList":[]})).await.fails(400);
    let dup = json!({"thingList":[{"type":1,"id":"a000000091","params":on},{"type":1,"id":"a000000091","params":on}]});
    a.post("/v2/device/thing/batch-status", dup).await.fails(400);
    a.post("/v2/device/thing/batch-status", json!({"timeout":8001,"thingList":[{"type":1,"id":"a000000091","params":on}]}))
        .await
        .fails(400);
    a.post("/v2/device/thing/batch-status", json!({"timeout":-1,"thingList":[{"type":1,"id":"a000000091","params":on}]})).await.fails(400);
    a.post("/v2/device/thing/batch-status", json!({"thingList":[{"type":3,"id":"a000000091","params":on}]})).await.fails(400);
    let eleven: Vec<Value> = (0..11).map(|i| json!({"type":1,"id":format!("x{i}"),"params":on})).collect();
    a.post("/v2/device/thing/batch-status", json!({"thingList": eleven})).await.fails(400);
    hub.stop().await;
}

#[tokio::test]
async fn routes_are_in_the_openapi_document() {
    let hub = TestHub::start().await;
    let doc: Value = hub.http_client().get(format!("{}/openapi.json", hub.base())).send().await.unwrap().json().await.unwrap();
    for (path, method) in [
        ("/v2/device/thing", "get"),
        ("/v2/device/thing", "post"),
        ("/v2/device/thing/status", "get"),
        ("/v2/device/thing/status", "post"),
        ("/v2/device/thing/batch-status", "post"),
        ("/v2/device/add", "post"),
        ("/v2/device/add-gsm", "post"),
        ("/v2/device/update-info", "post"),
        ("/v2/device", "delete"),
        ("/v2/device/tags", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing from the OpenAPI document");
    }
    hub.stop().await;
}
