//! `/v2/device/group…` through the real server: creating, listing, renaming, deleting groups,
//! saving their state and replacing their members; bad input; other users' groups.

mod common;

use common::rest::api;
use common::{TestHub, TestUser};
use serde_json::{Value, json};
use switchyard::ids::DeviceId;
use switchyard::store::{MAX_GROUPS, NewGroup, Sort};

/// A device owned by `owner` with UI type `uiid`.
async fn device(hub: &TestHub, id: &str, owner: &TestUser, uiid: i64) {
    hub.hub.store.add_device(&DeviceId::new(id), &format!("key-{id}"), "EMU", uiid, Some(&owner.apikey), "").await.unwrap();
}

async fn members(hub: &TestHub, user: &TestUser, id: &str) -> Vec<String> {
    hub.hub.store.group(&user.apikey, id).await.unwrap().expect("group exists").members
}

fn ids_of(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|i| i["itemData"]["deviceid"].as_str().unwrap_or("").to_owned()).collect()
}

#[tokio::test]
async fn a_group_is_created_listed_renamed_and_deleted() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let bob = hub.user("bob@example.com").await;
    device(&hub, "1000000001", &alice, 1).await;
    device(&hub, "1000000002", &alice, 1).await;
    device(&hub, "1000000003", &alice, 2).await;
    device(&hub, "1000000004", &bob, 1).await;
    let a = api(&hub, &alice);
    let family = hub.hub.store.current_family(&alice.apikey).await.unwrap();

    assert_eq!(a.get("/v2/device/group", "lang=en").await.ok()["groupList"], json!([]));

    let list = json!(["1000000002", "1000000003", "1000000004", "1000000009", "1000000002"]);
    let made = a.post("/v2/device/group", json!({"name":"Lights","mainDeviceId":"1000000001","deviceidList":list})).await;
    let item = made.ok().clone();
    assert_eq!(item["itemType"], 3, "{item}");
    let id = item["itemData"]["id"].as_str().unwrap().to_owned();
    assert_eq!(item["itemData"]["name"], "Lights");
    assert_eq!(item["itemData"]["mainDeviceId"], "1000000001");
    assert_eq!(item["itemData"]["params"], json!({}));
    assert_eq!(item["itemData"]["family"]["familyid"], family.as_str());
    assert_eq!(item["itemData"]["family"]["roomid"], "");
    assert_eq!(item["itemData"]["family"]["index"], item["index"]);
    // Another uiid, someone else's device and an unknown id are left out; the main device is in.
    assert_eq!(members(&hub, &alice, &id).await, ["1000000001", "1000000002"]);

    let listed = a.get("/v2/device/group", "").await.ok()["groupList"].clone();
    assert_eq!(listed, json!([item]), "the list holds the group as it was answered");
    let things = a.get("/v2/device/thing", "").await.ok()["thingList"].clone();
    let as_thing = things.as_array().unwrap().iter().find(|t| t["itemType"] == 3).cloned();
    assert_eq!(as_thing, Some(item.clone()), "the thing list shows the same item: {things}");

    a.put("/v2/device/group", json!({"id":id,"name":"Kitchen"})).await.ok();
    assert_eq!(a.get("/v2/device/group", "").await.ok()["groupList"][0]["itemData"]["name"], "Kitchen");

    a.delete("/v2/device/group", &format!("id={id}")).await.ok();
    assert_eq!(a.get("/v2/device/group", "").await.ok()["groupList"], json!([]));
    assert!(hub.hub.store.placement(&alice.apikey, &id).await.unwrap().is_none(), "its things row goes too");
    assert!(hub.hub.store.group(&alice.apikey, &id).await.unwrap().is_none());
    a.delete("/v2/device/group", &format!("id={id}")).await.fails(405);
    hub.stop().await;
}

#[tokio::test]
async fn a_group_goes_to_the_given_family_room_and_end_and_is_listed_only_in_the_current_family() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    device(&hub, "1000000001", &alice, 1).await;
    let a = api(&hub, &alice);
    let home = hub.hub.store.current_family(&alice.apikey).await.unwrap();
    let other = hub.hub.store.add_family(&alice.apikey, "Office", Sort::Last, &["Desk".to_owned()]).await.unwrap();

    let last = a.post("/v2/device/group", json!({"name":"Last","mainDeviceId":"1000000001","sort":2})).await.ok().clone();
    let device_index = hub.hub.store.placement(&alice.apikey, "1000000001").await.unwrap().unwrap().index;
    assert!(last["index"].as_i64().unwrap() > device_index, "sort 2 puts it after the device: {last}");
    let first = a.post("/v2/device/group", json!({"name":"First","mainDeviceId":"1000000001","sort":1})).await.ok().clone();
    assert!(first["index"].as_i64().unwrap() < device_index, "sort 1 puts it before the device: {first}");

    let room = &other.rooms[0].id;
    let away =
        a.post("/v2/device/group", json!({"name":"Away","mainDeviceId":"1000000001","familyid":other.id,"roomid":room})).await.ok().clone();
    assert_eq!(away["itemData"]["family"], json!({"familyid":other.id,"roomid":room,"index":away["index"]}));

    let names = |v: &Value| {
        v["groupList"].as_array().unwrap().iter().map(|g| g["itemData"]["name"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(names(a.get("/v2/device/group", "").await.ok()), ["First", "Last"], "by index, current family only");
    hub.hub.store.set_current_family(&alice.apikey, &other.id).await.unwrap();
    assert_eq!(names(a.get("/v2/device/group", "").await.ok()), ["Away"]);
    hub.hub.store.set_current_family(&alice.apikey, &home).await.unwrap();

    // A room of another family, or a family or room that does not exist: 405.
    a.post("/v2/device/group", json!({"name":"X","mainDeviceId":"1000000001","roomid":room})).await.fails(405);
    a.post("/v2/device/group", json!({"name":"X","mainDeviceId":"1000000001","familyid":"nope"})).await.fails(405);
    a.post("/v2/device/group", json!({"name":"X","mainDeviceId":"1000000001","roomid":"nope"})).await.fails(405);
    hub.stop().await;
}

#[tokio::test]
async fn creating_a_group_checks_its_input() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let bob = hub.user("bob@example.com").await;
    device(&hub, "1000000001", &alice, 1).await;
    device(&hub, "1000000004", &bob, 1).await;
    let a = api(&hub, &alice);
    let post = |body: Value| {
        let a = &a;
        async move { a.post("/v2/device/group", body).await }
    };

    post(json!({"mainDeviceId":"1000000001"})).await.fails(400);
    post(json!({"name":"G"})).await.fails(400);
    post(json!({"name":"","mainDeviceId":"1000000001"})).await.fails(400);
    post(json!({"name":"   ","mainDeviceId":"1000000001"})).await.fails(400);
    post(json!({"name":"x".repeat(51),"mainDeviceId":"1000000001"})).await.fails(400);
    post(json!({"name":5,"mainDeviceId":"1000000001"})).await.fails(400);
    post(json!({"name":"G","mainDeviceId":""})).await.fails(400);
    post(json!({"name":"G","mainDeviceId":"1000000001","sort":3})).await.fails(400);
    post(json!({"name":"G","mainDeviceId":"1000000001","sort":"1"})).await.fails(400);
    post(json!({"name":"G","mainDeviceId":"1000000001","deviceidList":"1000000001"})).await.fails(400);
    let long: Vec<String> = (0..201).map(|i| format!("{i:010}")).collect();
    post(json!({"name":"G","mainDeviceId":"1000000001","deviceidList":long})).await.fails(400);
    // Unknown main device, and another user's, look the same.
    post(json!({"name":"G","mainDeviceId":"1000000009"})).await.fails(405);
    post(json!({"name":"G","mainDeviceId":"1000000004"})).await.fails(405);
    // Fifty characters are fine, counted as characters.
    let name = "灯".repeat(50);
    assert_eq!(post(json!({"name":name,"mainDeviceId":"1000000001"})).await.ok()["itemData"]["name"], name.as_str());
    assert_eq!(hub.hub.store.family_groups(&alice.apikey, None).await.unwrap().len(), 1, "nothing else was made");
    hub.stop().await;
}

#[tokio::test]
async fn a_user_has_at_most_the_group_limit() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    device(&hub, "1000000001", &alice, 1).await;
    for i in 0..MAX_GROUPS {
        let new = NewGroup {
            name: &format!("G{i}"),
            main_deviceid: "1000000001",
            familyid: None,
            roomid: None,
            sort: Sort::Last,
            deviceids: &[],
        };
        hub.hub.store.add_group(&alice.apikey, new).await.unwrap();
    }
    let a = api(&hub, &alice);
    a.post("/v2/device/group", json!({"name":"One more","mainDeviceId":"1000000001"})).await.fails(30009);
    assert_eq!(a.get("/v2/device/group", "").await.ok()["groupList"].as_array().unwrap().len(), MAX_GROUPS as usize);
    hub.stop().await;
}

#[tokio::test]
async fn a_shared_device_may_be_a_groups_main_device() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let sam = hub.user("sam@example.com").await;
    device(&hub, "1000000001", &alice, 1).await;
    device(&hub, "1000000002", &alice, 1).await;
    device(&hub, "1000000003", &sam, 1).await;
    hub.share("1000000001", &sam).await;
    let s = api(&hub, &sam);
    let made =
        s.post("/v2/device/group", json!({"name":"Mixed","mainDeviceId":"1000000001","deviceidList":["1000000002","1000000003"]})).await;
    let id = made.ok()["itemData"]["id"].as_str().unwrap().to_owned();
    // 1000000002 is alice's and not shared with sam: left out.
    assert_eq!(members(&hub, &sam, &id).await, ["1000000001", "1000000003"]);
    hub.stop().await;
}

#[tokio::test]
async fn group_state_is_kept_and_merged() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    device(&hub, "1000000001", &alice, 1).await;
    let a = api(&hub, &alice);
    let id = a.post("/v2/device/group", json!({"name":"G","mainDeviceId":"1000000001"})).await.ok()["itemData"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    a.post("/v2/device/group/status", json!({"id":id,"params":{"switch":"on","brightness":40}})).await.ok();
    a.post("/v2/device/group/status", json!({"id":id,"params":{"switch":"off"}})).await.ok();
    let listed = a.get("/v2/device/group", "").await.ok()["groupList"][0]["itemData"]["params"].clone();
    assert_eq!(listed, json!({"switch":"off","brightness":40}));

    a.post("/v2/device/group/status", json!({"id":id,"params":"on"})).await.fails(400);
    a.post("/v2/device/group/status", json!({"id":id,"params":[1]})).await.fails(400);
    a.post("/v2/device/group/status", json!({"id":id})).await.fails(400);
    a.post("/v2/device/group/status", json!({"params":{}})).await.fails(400);
    a.post("/v2/device/group/status", json!({"id":"nope","params":{}})).await.fails(405);
    a.post("/v2/device/group/status", json!({"id":id,"params":{"big":"x".repeat(70_000)}})).await.fails(400);
    assert_eq!(a.get("/v2/device/group", "").await.ok()["groupList"][0]["itemData"]["params"], listed, "refusals change nothing");
    hub.stop().await;
}

#[tokio::test]
async fn replacing_the_members_keeps_the_main_device_and_drops_what_does_not_fit() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let bob = hub.user("bob@example.com").await;
    for id in ["1000000001", "1000000002", "1000000003"] {
        device(&hub, id, &alice, 1).await;
    }
    device(&hub, "1000000005", &alice, 5).await;
    device(&hub, "1000000004", &bob, 1).await;
    let a = api(&hub, &alice);
    let id = a.post("/v2/device/group", json!({"name":"G","mainDeviceId":"1000000001","deviceidList":["1000000002"]})).await.ok()["itemData"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let list = json!(["1000000003", "1000000001", "1000000005", "1000000004", "1000000003"]);
    let r = a.post("/v2/device/group/update", json!({"id":id,"deviceidList":list})).await;
    let things = r.ok()["updatedThingList"].clone();
    assert_eq!(members(&hub, &alice, &id).await, ["1000000001", "1000000003"]);
    // The members, then the device that left.
    assert_eq!(ids_of(&things), ["1000000001", "1000000003", "1000000002"], "{things}");
    for item in things.as_array().unwrap() {
        let in_group = item["itemData"]["devGroups"].as_array().unwrap().iter().any(|g| g["groupId"] == id.as_str());
        assert_eq!(in_group, item["itemData"]["deviceid"] != "1000000002", "{item}");
    }

    a.post("/v2/device/group/update", json!({"id":id,"deviceidList":["1000000002"]})).await.fails(400);
    a.post("/v2/device/group/update", json!({"id":id,"deviceidList":[]})).await.fails(400);
    a.post("/v2/device/group/update", json!({"id":id})).await.fails(400);
    a.post("/v2/device/group/update", json!({"id":id,"deviceidList":"1000000001"})).await.fails(400);
    a.post("/v2/device/group/update", json!({"id":"nope","deviceidList":["1000000001"]})).await.fails(405);
    assert_eq!(members(&hub, &alice, &id).await, ["1000000001", "1000000003"], "refusals change nothing");

    let r = a.post("/v2/device/group/update", json!({"id":id,"deviceidList":["1000000001"]})).await;
    assert_eq!(ids_of(&r.ok()["updatedThingList"]), ["1000000001", "1000000003"]);
    assert_eq!(members(&hub, &alice, &id).await, ["1000000001"]);
    hub.stop().await;
}

#[tokio::test]
async fn another_user_cannot_see_or_change_a_group() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let eve = hub.user("eve@example.com").await;
    device(&hub, "1000000001", &alice, 1).await;
    device(&hub, "1000000002", &eve, 1).await;
    let a = api(&hub, &alice);
    let e = api(&hub, &eve);
    let id = a.post("/v2/device/group", json!({"name":"G","mainDeviceId":"1000000001"})).await.ok()["itemData"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    assert_eq!(e.get("/v2/device/group", "").await.ok()["groupList"], json!([]));
    e.put("/v2/device/group", json!({"id":id,"name":"Mine"})).await.fails(405);
    e.post("/v2/device/group/status", json!({"id":id,"params":{"switch":"on"}})).await.fails(405);
    e.post("/v2/device/group/update", json!({"id":id,"deviceidList":["1000000001"]})).await.fails(405);
    e.post("/v2/device/group/update", json!({"id":id,"deviceidList":["1000000002"]})).await.fails(405);
    e.delete("/v2/device/group", &format!("id={id}")).await.fails(405);

    let g = hub.hub.store.group(&alice.apikey, &id).await.unwrap().unwrap();
    assert_eq!((g.name.as_str(), g.params.clone(), g.members.clone()), ("G", json!({}), vec!["1000000001".to_owned()]));
    hub.stop().await;
}

#[tokio::test]
async fn renaming_and_deleting_check_their_input() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    device(&hub, "1000000001", &alice, 1).await;
    let a = api(&hub, &alice);
    let id = a.post("/v2/device/group", json!({"name":"G","mainDeviceId":"1000000001"})).await.ok()["itemData"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    a.put("/v2/device/group", json!({"id":id})).await.fails(400);
    a.put("/v2/device/group", json!({"name":"H"})).await.fails(400);
    a.put("/v2/device/group", json!({"id":id,"name":""})).await.fails(400);
    a.put("/v2/device/group", json!({"id":id,"name":"x".repeat(51)})).await.fails(400);
    a.put("/v2/device/group", json!({"id":id,"name":["H"]})).await.fails(400);
    a.put("/v2/device/group", json!({"id":"nope","name":"H"})).await.fails(405);
    a.delete("/v2/device/group", "").await.fails(400);
    a.delete("/v2/device/group", "id=").await.fails(400);
    assert_eq!(hub.hub.store.group(&alice.apikey, &id).await.unwrap().unwrap().name, "G");

    // DELETE parameters may come as a JSON body too.
    a.call(reqwest::Method::DELETE, "/v2/device/group", "", Some(&json!({"id":id}))).await.ok();
    assert!(hub.hub.store.group(&alice.apikey, &id).await.unwrap().is_none());
    hub.stop().await;
}

#[tokio::test]
async fn the_openapi_document_lists_the_group_and_share_routes() {
    let hub = TestHub::start().await;
    let doc: Value = hub.http_client().get(format!("{}/openapi.json", hub.base())).send().await.unwrap().json().await.unwrap();
    for (path, methods) in [
        ("/v2/device/group", &["get", "post", "put", "delete"][..]),
        ("/v2/device/group/status", &["post"]),
        ("/v2/device/group/update", &["post"]),
        ("/v2/device/share", &["post", "delete"]),
        ("/v2/device/share/permit", &["post"]),
    ] {
        for m in methods {
            let op = &doc["paths"][path][m];
            assert!(op.is_object(), "{m} {path} is documented");
            assert!(op["security"].is_array(), "{m} {path} names its auth: {op}");
        }
    }
    hub.stop().await;
}
