//! `POST /v2/homepage` (each part only when asked, the same data its own route gives) and the
//! message centre `GET /v2/message/read`, through the real server.

mod common;

use std::time::Duration;

use common::rest::{Api, api};
use common::{TestHub, TestUser};
use serde_json::{Value, json};

async fn current(a: &Api<'_>) -> String {
    a.get("/v2/family", "").await.ok()["currentFamilyId"].as_str().unwrap().to_owned()
}

async fn add_family(a: &Api<'_>, name: &str) -> String {
    a.post("/v2/family", json!({"name": name, "sort": 2})).await.ok()["id"].as_str().unwrap().to_owned()
}

/// Files a message for `user` and waits a few milliseconds so the next one is newer.
async fn file(hub: &TestHub, user: &TestUser, familyid: Option<&str>, n: i64) {
    hub.hub.store.add_message(&user.apikey, familyid, "shareNotify_v2", &json!({"n": n})).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
}

fn ns(data: &Value) -> Vec<i64> {
    data["messageList"].as_array().unwrap().iter().map(|m| m["message"]["n"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn homepage_answers_only_the_parts_asked_for() {
    let hub = TestHub::start().await;
    let user = hub.user("alice@example.com").await;
    let a = api(&hub, &user);
    assert_eq!(a.post("/v2/homepage", json!({})).await.ok(), &json!({}));
    assert_eq!(a.post("/v2/homepage", json!({"lang": "cn", "clientInfo": {"model": "M6 Note"}, "getUser": null})).await.ok(), &json!({}));

    let data = a.post("/v2/homepage", json!({"getUser": {}})).await.ok().clone();
    assert_eq!(data.as_object().unwrap().keys().collect::<Vec<_>>(), ["userInfo"]);
    let profile = a.get("/v2/user/profile", "").await.ok().clone();
    assert_eq!(data["userInfo"], profile["user"]);
    assert_eq!(data["userInfo"]["apikey"], user.apikey.as_str());

    add_family(&a, "Office").await;
    let data = a.post("/v2/homepage", json!({"getFamily": {}})).await.ok().clone();
    assert_eq!(data.as_object().unwrap().keys().collect::<Vec<_>>(), ["familyInfo"]);
    assert_eq!(data["familyInfo"], *a.get("/v2/family", "").await.ok());

    let data = a.post("/v2/homepage", json!({"getScene": {}})).await.ok().clone();
    assert_eq!(data, json!({"sceneInfo": {"sceneList": []}}));

    hub.device_record("1000000001", Some(&user)).await;
    let data = a.post("/v2/homepage", json!({"getThing": {}})).await.ok().clone();
    assert_eq!(data.as_object().unwrap().keys().collect::<Vec<_>>(), ["thingInfo"]);
    assert_eq!(data["thingInfo"]["total"], 1, "{data}");
    assert_eq!(data["thingInfo"]["thingList"][0]["itemData"]["deviceid"], "1000000001", "{data}");

    let data = a.post("/v2/homepage", json!({"getMessage": {}})).await.ok().clone();
    assert_eq!(data, json!({"messageInfo": {"messageList": []}}));

    let all = a
        .post("/v2/homepage", json!({"getUser": {}, "getFamily": {}, "getThing": {"num": 0}, "getScene": {}, "getMessage": {"num": 5}}))
        .await
        .ok()
        .clone();
    let mut keys: Vec<_> = all.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["familyInfo", "messageInfo", "sceneInfo", "thingInfo", "userInfo"]);
    hub.stop().await;
}

fn device_ids(data: &Value) -> Vec<&str> {
    data["thingInfo"]["thingList"].as_array().unwrap().iter().map(|t| t["itemData"]["deviceid"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn homepage_things_are_the_current_familys_in_order() {
    let hub = TestHub::start().await;
    let user = hub.user("alice@example.com").await;
    let a = api(&hub, &user);
    let home = current(&a).await;
    let office = add_family(&a, "Office").await;
    a.post("/v2/family/current", json!({"id": office})).await.ok();
    hub.device_record("1000000009", Some(&user)).await;
    a.post("/v2/family/current", json!({"id": home})).await.ok();
    for id in ["1000000001", "1000000002", "1000000003"] {
        hub.device_record(id, Some(&user)).await;
    }
    let thing = |id: &str| json!({"itemType": 1, "id": id});
    a.post("/v2/family/thing/sort", json!({"thingList": [thing("1000000002"), thing("1000000003"), thing("1000000001")]})).await.ok();
    let data = a.post("/v2/homepage", json!({"getThing": {}})).await.ok().clone();
    assert_eq!(data["thingInfo"]["total"], 3);
    assert_eq!(device_ids(&data), ["1000000002", "1000000003", "1000000001"]);
    let data = a.post("/v2/homepage", json!({"getThing": {"num": 1}})).await.ok().clone();
    assert_eq!((device_ids(&data), data["thingInfo"]["total"].as_i64()), (vec!["1000000002"], Some(3)));
    let data = a.post("/v2/homepage", json!({"getThing": {"num": 0, "beginIndex": 0}})).await.ok().clone();
    assert_eq!(device_ids(&data), ["1000000003", "1000000001"]);
    a.post("/v2/family/current", json!({"id": office})).await.ok();
    let data = a.post("/v2/homepage", json!({"getThing": {}})).await.ok().clone();
    assert_eq!(device_ids(&data), ["1000000009"]);
    hub.stop().await;
}

#[tokio::test]
async fn homepage_checks_its_input() {
    let hub = TestHub::start().await;
    let user = hub.user("alice@example.com").await;
    let a = api(&hub, &user);
    for bad in [
        json!({"getUser": "yes"}),
        json!({"getFamily": 1}),
        json!({"getScene": []}),
        json!({"getThing": {"num": "ten"}}),
        json!({"getThing": {"num": -1}}),
        json!({"getThing": {"beginIndex": 1.5}}),
        json!({"getMessage": {"num": 0}}),
        json!({"getMessage": {"num": 31}}),
        json!({"getMessage": {"from": "yesterday"}}),
        json!({"clientInfo": "phone"}),
        json!({"lang": 1}),
        json!([]),
    ] {
        a.post("/v2/homepage", bad).await.fails(400);
    }
    let anon = Api { hub: &hub, at: "0".repeat(40) };
    anon.post("/v2/homepage", json!({"getUser": {}})).await.fails(401);
    hub.stop().await;
}

#[tokio::test]
async fn homepage_messages_are_the_current_familys() {
    let hub = TestHub::start().await;
    let user = hub.user("alice@example.com").await;
    let a = api(&hub, &user);
    let home = current(&a).await;
    let office = add_family(&a, "Office").await;
    file(&hub, &user, Some(&home), 1).await;
    file(&hub, &user, Some(&office), 2).await;
    file(&hub, &user, None, 3).await;
    let data = a.post("/v2/homepage", json!({"getMessage": {}})).await.ok().clone();
    assert_eq!(ns(&data["messageInfo"]), [3, 1]);
    a.post("/v2/family/current", json!({"id": office})).await.ok();
    let data = a.post("/v2/homepage", json!({"getMessage": {"num": 1}})).await.ok().clone();
    assert_eq!(ns(&data["messageInfo"]), [3]);
    let item = &data["messageInfo"]["messageList"][0];
    let date = item["date"].as_i64().unwrap();
    let data = a.post("/v2/homepage", json!({"getMessage": {"from": date}})).await.ok().clone();
    assert_eq!(ns(&data["messageInfo"]), [2]);
    hub.stop().await;
}

#[tokio::test]
async fn messages_are_read_newest_first_by_family() {
    let hub = TestHub::start().await;
    let (alice, bob) = (hub.user("alice@example.com").await, hub.user("bob@example.com").await);
    let (a, b) = (api(&hub, &alice), api(&hub, &bob));
    let home = current(&a).await;
    let office = add_family(&a, "Office").await;
    file(&hub, &alice, Some(&home), 1).await;
    file(&hub, &alice, None, 2).await;
    file(&hub, &alice, Some(&office), 3).await;
    file(&hub, &alice, Some(&home), 4).await;
    file(&hub, &bob, None, 99).await;

    let data = a.get("/v2/message/read", "").await.ok().clone();
    assert_eq!(ns(&data), [4, 2, 1], "the current family and messages of no family");
    let first = &data["messageList"][0];
    assert_eq!(first["msgType"], "shareNotify_v2");
    assert!(first["msgid"].as_str().is_some_and(|m| !m.is_empty()), "{first}");
    assert_eq!(first["message"], json!({"n": 4}));
    assert_eq!(ns(a.get("/v2/message/read", &format!("familyid={office}")).await.ok()), [3, 2]);
    assert_eq!(ns(a.get("/v2/message/read", "familyid=").await.ok()), [4, 2, 1]);

    // Paging: `num` newest, then older than the last one's date.
    let page = a.get("/v2/message/read", "num=2").await.ok().clone();
    assert_eq!(ns(&page), [4, 2]);
    let last = page["messageList"][1]["date"].as_i64().unwrap();
    assert_eq!(ns(a.get("/v2/message/read", &format!("num=2&from={last}")).await.ok()), [1]);
    assert_eq!(ns(a.get("/v2/message/read", "from=1").await.ok()), Vec::<i64>::new());
    assert_eq!(ns(a.get("/v2/message/read", "num=30").await.ok()).len(), 3);

    for bad in ["num=0", "num=31", "num=-1", "num=ten", "from=now", "num=1.5"] {
        a.get("/v2/message/read", bad).await.fails(400);
    }
    a.get("/v2/message/read", "familyid=nope").await.fails(405);
    // Bob sees only his own, and not through Alice's family id.
    assert_eq!(ns(b.get("/v2/message/read", "").await.ok()), [99]);
    b.get("/v2/message/read", &format!("familyid={home}")).await.fails(405);
    hub.stop().await;
}

#[tokio::test]
async fn at_most_thirty_messages_by_default() {
    let hub = TestHub::start().await;
    let user = hub.user("alice@example.com").await;
    for n in 0..32 {
        hub.hub.store.add_message(&user.apikey, None, "opsNotify_v2", &json!({"n": n})).await.unwrap();
    }
    let a = api(&hub, &user);
    assert_eq!(ns(a.get("/v2/message/read", "").await.ok()).len(), 30);
    hub.stop().await;
}
