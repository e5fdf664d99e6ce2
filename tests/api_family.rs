//! `/v2/family…`: families, rooms, the order of things in a family and which room they are in,
//! through the real server; and that nobody reaches another user's families, rooms or things.

mod common;

use common::rest::{Answer, Api, api};
use common::{TestHub, TestUser};
use serde_json::{Value, json};
use switchyard::ids::UserKey;

async fn families(a: &Api<'_>) -> Value {
    a.get("/v2/family", "").await.ok().clone()
}

/// The id of the caller's current family.
async fn current(a: &Api<'_>) -> String {
    families(a).await["currentFamilyId"].as_str().unwrap().to_owned()
}

async fn add_family(a: &Api<'_>, name: &str, sort: i64) -> Value {
    a.post("/v2/family", json!({"name": name, "sort": sort})).await.ok().clone()
}

async fn add_room(a: &Api<'_>, familyid: &str, name: &str) -> String {
    a.post("/v2/family/room", json!({"familyid": familyid, "name": name, "sort": 2})).await.ok()["id"].as_str().unwrap().to_owned()
}

/// Where `user` keeps a thing: (familyid, roomid, index).
async fn placed(hub: &TestHub, user: &UserKey, id: &str) -> (String, Option<String>, i64) {
    let p = hub.hub.store.placement(user, id).await.unwrap().unwrap_or_else(|| panic!("{id} is not placed"));
    (p.familyid, p.roomid, p.index)
}

async fn room_of(hub: &TestHub, user: &UserKey, id: &str) -> Option<String> {
    placed(hub, user, id).await.1
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect()
}

fn indexes(list: &Value) -> Vec<i64> {
    list.as_array().unwrap().iter().map(|f| f["index"].as_i64().unwrap()).collect()
}

async fn two_users(hub: &TestHub) -> (TestUser, TestUser) {
    (hub.user("alice@example.com").await, hub.user("bob@example.com").await)
}

#[tokio::test]
async fn a_new_user_has_one_family_which_is_current() {
    let hub = TestHub::start().await;
    let user = hub.user("alice@example.com").await;
    let data = families(&api(&hub, &user)).await;
    let list = data["familyList"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{data}");
    assert_eq!(list[0]["name"], "My Home");
    assert_eq!(list[0]["apikey"], user.apikey.as_str());
    assert_eq!(list[0]["index"], 0);
    assert_eq!(list[0]["roomList"], json!([]));
    assert_eq!(data["currentFamilyId"], list[0]["id"]);
    // `lang` is accepted.
    api(&hub, &user).get("/v2/family", "lang=cn").await.ok();
    hub.stop().await;
}

#[tokio::test]
async fn families_are_created_at_either_end_with_rooms_in_list_order() {
    let hub = TestHub::start().await;
    let user = hub.user("alice@example.com").await;
    let a = api(&hub, &user);
    let home = current(&a).await;
    let office = a.post("/v2/family", json!({"name": "Office", "sort": 2, "roomNameList": ["Desk", "Lab", "Hall"]})).await.ok().clone();
    assert_eq!(office["name"], "Office");
    assert_eq!(office["index"], 1);
    assert_eq!(names(&office["roomList"]), ["Desk", "Lab", "Hall"]);
    assert_eq!(indexes(&office["roomList"]), [0, 1, 2]);
    assert!(office.get("apikey").is_none(), "{office}");
    let cabin = add_family(&a, "  Cabin  ", 1).await;
    assert_eq!(cabin["index"], -1);
    assert_eq!(cabin["name"], "Cabin", "names are trimmed");
    assert_eq!(cabin["roomList"], json!([]));
    let data = families(&a).await;
    assert_eq!(names(&data["familyList"]), ["Cabin", "My Home", "Office"]);
    assert_eq!(indexes(&data["familyList"]), [-1, 0, 1]);
    assert_eq!(data["familyList"][2]["roomList"], office["roomList"]);
    // Creating families does not change the current one.
    assert_eq!(data["currentFamilyId"], home.as_str());
    // A 50-character name (characters, not bytes) is allowed.
    let long: String = "家".repeat(50);
    assert_eq!(add_family(&a, &long, 2).await["name"], long.as_str());
    hub.stop().await;
}

#[tokio::test]
async fn adding_a_family_checks_its_input() {
    let hub = TestHub::start().await;
    let user = hub.user("alice@example.com").await;
    let a = api(&hub, &user);
    for bad in [
        json!({"sort": 1}),
        json!({"name": "X"}),
        json!({"name": "X", "sort": 3}),
        json!({"name": "X", "sort": 0}),
        json!({"name": "X", "sort": "1"}),
        json!({"name": 5, "sort": 1}),
        json!({"name": "", "sort": 1}),
        json!({"name": "   ", "sort": 1}),
        json!({"name": "x".repeat(51), "sort": 1}),
        json!({"name": "X", "sort": 1, "roomNameList": "Desk"}),
        json!({"name": "X", "sort": 1, "roomNameList": ["Desk", ""]}),
        json!({"name": "X", "sort": 1, "roomNameList": [7]}),
    ] {
        a.post("/v2/family", bad.clone()).await.fails(400);
    }
    let rooms: Vec<String> = (0..101).map(|i| format!("R{i}")).collect();
    a.post("/v2/family", json!({"name": "X", "sort": 1, "roomNameList": rooms})).await.fails(20002);
    assert_eq!(families(&a).await["familyList"].as_array().unwrap().len(), 1, "nothing was created");
    // Without a token.
    let anon = Api { hub: &hub, at: "0".repeat(40) };
    anon.post("/v2/family", json!({"name": "X", "sort": 1})).await.fails(401);
    hub.stop().await;
}

#[tokio::test]
async fn a_user_has_at_most_ten_families() {
    let hub = TestHub::start().await;
    let user = hub.user("alice@example.com").await;
    let a = api(&hub, &user);
    for i in 1..10 {
        add_family(&a, &format!("F{i}"), 2).await;
    }
    a.post("/v2/family", json!({"name": "F10", "sort": 2})).await.fails(20002);
    assert_eq!(families(&a).await["familyList"].as_array().unwrap().len(), 10);
    hub.stop().await;
}

#[tokio::test]
async fn renaming_a_family() {
    let hub = TestHub::start().await;
    let (alice, bob) = two_users(&hub).await;
    let (a, b) = (api(&hub, &alice), api(&hub, &bob));
    let home = current(&a).await;
    a.put("/v2/family", json!({"name": "Flat"})).await.ok();
    let office = add_family(&a, "Office", 2).await["id"].as_str().unwrap().to_owned();
    a.put("/v2/family", json!({"id": office, "name": "Works"})).await.ok();
    assert_eq!(names(&families(&a).await["familyList"]), ["Flat", "Works"]);
    a.put("/v2/family", json!({"id": "", "name": "Home"})).await.ok();
    assert_eq!(families(&a).await["familyList"][0]["name"], "Home", "an empty id is the current family");
    // Input errors.
    a.put("/v2/family", json!({"id": home})).await.fails(400);
    a.put("/v2/family", json!({"id": home, "name": ""})).await.fails(400);
    a.put("/v2/family", json!({"id": 12, "name": "N"})).await.fails(400);
    a.put("/v2/family", json!({"id": "nope", "name": "N"})).await.fails(405);
    // Bob cannot rename Alice's family, and is answered as for an unknown id.
    let refused = b.put("/v2/family", json!({"id": home, "name": "Mine"})).await;
    refused.fails(405);
    assert!(!refused.msg.contains(alice.apikey.as_str()));
    assert_eq!(families(&a).await["familyList"][0]["name"], "Home");
    hub.stop().await;
}

#[tokio::test]
async fn rooms_are_added_renamed_and_deleted() {
    let hub = TestHub::start().await;
    let (alice, bob) = two_users(&hub).await;
    let (a, b) = (api(&hub, &alice), api(&hub, &bob));
    let home = current(&a).await;
    let kitchen = a.post("/v2/family/room", json!({"familyid": home, "name": "Kitchen", "sort": 2})).await.ok().clone();
    assert_eq!((kitchen["name"].as_str(), kitchen["index"].as_i64()), (Some("Kitchen"), Some(0)));
    let bath = a.post("/v2/family/room", json!({"familyid": home, "name": "Bath", "sort": 2})).await.ok().clone();
    assert_eq!(bath["index"], 1);
    let hall = a.post("/v2/family/room", json!({"familyid": home, "name": "Hall", "sort": 1})).await.ok().clone();
    assert_eq!(hall["index"], -1);
    let rooms = families(&a).await["familyList"][0]["roomList"].clone();
    assert_eq!(names(&rooms), ["Hall", "Kitchen", "Bath"]);

    for bad in [
        json!({"familyid": home, "name": "X"}),
        json!({"familyid": home, "sort": 1}),
        json!({"name": "X", "sort": 1}),
        json!({"familyid": home, "name": "X", "sort": 5}),
        json!({"familyid": home, "name": "", "sort": 1}),
        json!({"familyid": home, "name": "x".repeat(51), "sort": 1}),
    ] {
        a.post("/v2/family/room", bad).await.fails(400);
    }
    a.post("/v2/family/room", json!({"familyid": "nope", "name": "X", "sort": 1})).await.fails(405);
    b.post("/v2/family/room", json!({"familyid": home, "name": "X", "sort": 1})).await.fails(405);

    let kid = kitchen["id"].as_str().unwrap();
    a.put("/v2/family/room", json!({"id": kid, "name": "Galley"})).await.ok();
    a.put("/v2/family/room", json!({"id": kid, "name": " "})).await.fails(400);
    a.put("/v2/family/room", json!({"id": kid})).await.fails(400);
    a.put("/v2/family/room", json!({"id": "nope", "name": "X"})).await.fails(405);
    b.put("/v2/family/room", json!({"id": kid, "name": "Bob's"})).await.fails(405);
    assert_eq!(families(&a).await["familyList"][0]["roomList"][1]["name"], "Galley");

    b.delete("/v2/family/room", &format!("id={kid}")).await.fails(405);
    a.delete("/v2/family/room", "").await.fails(400);
    a.delete("/v2/family/room", "id=nope").await.fails(405);
    a.delete("/v2/family/room", &format!("id={kid}")).await.ok();
    a.delete("/v2/family/room", &format!("id={kid}")).await.fails(405);
    assert_eq!(names(&families(&a).await["familyList"][0]["roomList"]), ["Hall", "Bath"]);
    // A JSON body works for DELETE too.
    let bid = bath["id"].as_str().unwrap();
    a.call(reqwest::Method::DELETE, "/v2/family/room", "", Some(&json!({"id": bid}))).await.ok();
    assert_eq!(names(&families(&a).await["familyList"][0]["roomList"]), ["Hall"]);
    hub.stop().await;
}

#[tokio::test]
async fn a_family_has_at_most_a_hundred_rooms() {
    let hub = TestHub::start().await;
    let user = hub.user("alice@example.com").await;
    let a = api(&hub, &user);
    let rooms: Vec<String> = (0..100).map(|i| format!("R{i}")).collect();
    let big = a.post("/v2/family", json!({"name": "Big", "sort": 2, "roomNameList": rooms})).await.ok()["id"].as_str().unwrap().to_owned();
    a.post("/v2/family/room", json!({"familyid": big, "name": "One more", "sort": 2})).await.fails(20002);
    let listed = families(&a).await;
    assert_eq!(listed["familyList"][1]["roomList"].as_array().unwrap().len(), 100);
    assert_eq!(listed["familyList"][1]["roomList"][99]["name"], "R99");
    hub.stop().await;
}

#[tokio::test]
async fn rooms_are_sorted_by_the_whole_list() {
    let hub = TestHub::start().await;
    let (alice, bob) = two_users(&hub).await;
    let (a, b) = (api(&hub, &alice), api(&hub, &bob));
    let home = current(&a).await;
    let r1 = add_room(&a, &home, "One").await;
    let r2 = add_room(&a, &home, "Two").await;
    let r3 = add_room(&a, &home, "Three").await;
    a.post("/v2/family/room/index", json!({"familyid": home, "idList": [r3, r1, r2]})).await.ok();
    let rooms = families(&a).await["familyList"][0]["roomList"].clone();
    assert_eq!(names(&rooms), ["Three", "One", "Two"]);
    assert_eq!(indexes(&rooms), [0, 1, 2]);
    // Without familyid: the current family.
    a.post("/v2/family/room/index", json!({"idList": [r2, r3, r1]})).await.ok();
    assert_eq!(names(&families(&a).await["familyList"][0]["roomList"]), ["Two", "Three", "One"]);

    let other = add_family(&a, "Office", 2).await["id"].as_str().unwrap().to_owned();
    let r4 = add_room(&a, &other, "Desk").await;
    for bad in [
        json!({"idList": [r1, r2]}),
        json!({"idList": [r1, r2, r3, r4]}),
        json!({"idList": [r1, r2, r3, "nope"]}),
        json!({"idList": [r1, r2, r3, r3]}),
        json!({"idList": [r1, r2, r2]}),
        json!({"familyid": home}),
        json!({"idList": r1}),
    ] {
        a.post("/v2/family/room/index", bad).await.fails(400);
    }
    a.post("/v2/family/room/index", json!({"familyid": "nope", "idList": []})).await.fails(405);
    b.post("/v2/family/room/index", json!({"familyid": home, "idList": [r1, r2, r3]})).await.fails(405);
    assert_eq!(names(&families(&a).await["familyList"][0]["roomList"]), ["Two", "Three", "One"], "refused sorts change nothing");
    // The other family's single room.
    a.post("/v2/family/room/index", json!({"familyid": other, "idList": [r4]})).await.ok();
    hub.stop().await;
}

#[tokio::test]
async fn deleting_a_room_leaves_its_things_unassigned() {
    let hub = TestHub::start().await;
    let user = hub.user("alice@example.com").await;
    let a = api(&hub, &user);
    let home = current(&a).await;
    hub.device_record("1000000001", Some(&user)).await;
    let room = add_room(&a, &home, "Kitchen").await;
    a.post("/v2/family/room/thing", json!({"roomid": room, "oldThingList": [], "newThingList": [{"itemType": 1, "id": "1000000001"}]}))
        .await
        .ok();
    assert_eq!(placed(&hub, &user.apikey, "1000000001").await.1.as_deref(), Some(room.as_str()));
    a.delete("/v2/family/room", &format!("id={room}")).await.ok();
    let (family, roomid, _) = placed(&hub, &user.apikey, "1000000001").await;
    assert_eq!((family.as_str(), roomid), (home.as_str(), None));
    hub.stop().await;
}

#[tokio::test]
async fn switching_the_current_family() {
    let hub = TestHub::start().await;
    let (alice, bob) = two_users(&hub).await;
    let (a, b) = (api(&hub, &alice), api(&hub, &bob));
    let home = current(&a).await;
    let office = add_family(&a, "Office", 2).await["id"].as_str().unwrap().to_owned();
    a.post("/v2/family/current", json!({"id": office})).await.ok();
    assert_eq!(current(&a).await, office);
    // New devices land in the current family.
    hub.device_record("1000000001", Some(&alice)).await;
    assert_eq!(placed(&hub, &alice.apikey, "1000000001").await.0, office);
    a.post("/v2/family/current", json!({})).await.fails(400);
    a.post("/v2/family/current", json!({"id": 1})).await.fails(400);
    a.post("/v2/family/current", json!({"id": "nope"})).await.fails(405);
    b.post("/v2/family/current", json!({"id": home})).await.fails(405);
    assert_ne!(current(&b).await, home);
    a.post("/v2/family/current", json!({"id": home})).await.ok();
    assert_eq!(current(&a).await, home);
    hub.stop().await;
}

#[tokio::test]
async fn the_only_family_cannot_be_deleted() {
    let hub = TestHub::start().await;
    let user = hub.user("alice@example.com").await;
    let a = api(&hub, &user);
    let home = current(&a).await;
    a.delete("/v2/family", &format!("id={home}&deviceFamily={home}&switchFamily={home}")).await.fails(20003);
    assert_eq!(current(&a).await, home);
    hub.stop().await;
}

#[tokio::test]
async fn deleting_the_current_family_moves_its_things_and_switches() {
    let hub = TestHub::start().await;
    let (alice, bob) = two_users(&hub).await;
    let a = api(&hub, &alice);
    let home = current(&a).await;
    let office = add_family(&a, "Office", 2).await["id"].as_str().unwrap().to_owned();
    let cabin = add_family(&a, "Cabin", 2).await["id"].as_str().unwrap().to_owned();
    // Office holds one device; home holds two own devices (one in a room) and a shared one.
    a.post("/v2/family/current", json!({"id": office})).await.ok();
    hub.device_record("1000000009", Some(&alice)).await;
    a.post("/v2/family/current", json!({"id": home})).await.ok();
    for id in ["1000000001", "1000000002"] {
        hub.device_record(id, Some(&alice)).await;
    }
    hub.device_record("2000000001", Some(&bob)).await;
    hub.share("2000000001", &alice).await;
    let kitchen = add_room(&a, &home, "Kitchen").await;
    a.post("/v2/family/room/thing", json!({"roomid": kitchen, "oldThingList": [], "newThingList": [{"itemType": 1, "id": "1000000001"}]}))
        .await
        .ok();
    a.post(
        "/v2/family/thing/sort",
        json!({"thingList": [{"itemType": 2, "id": "2000000001"}, {"itemType": 1, "id": "1000000001"}, {"itemType": 1, "id": "1000000002"}]}),
    )
    .await
    .ok();
    hub.hub.store.add_message(&alice.apikey, Some(&home), "shareNotify_v2", &json!({"n": 1})).await.unwrap();

    a.delete("/v2/family", &format!("id={home}&deviceFamily={office}&switchFamily={cabin}")).await.ok();
    let data = families(&a).await;
    assert_eq!(names(&data["familyList"]), ["Office", "Cabin"]);
    assert_eq!(data["currentFamilyId"], cabin.as_str());
    // Moved after office's own device, unassigned, in their old order.
    let before = placed(&hub, &alice.apikey, "1000000009").await.2;
    let mut moved = Vec::new();
    for id in ["2000000001", "1000000001", "1000000002"] {
        let (family, room, index) = placed(&hub, &alice.apikey, id).await;
        assert_eq!((family.as_str(), room), (office.as_str(), None), "{id}");
        moved.push(index);
    }
    assert!(before < moved[0] && moved[0] < moved[1] && moved[1] < moved[2], "{before} {moved:?}");
    // The messages filed under the deleted family went along: the one filed above and Bob's
    // share notice (sharing files one whichever door it comes through).
    let read = a.get("/v2/message/read", &format!("familyid={office}")).await;
    assert_eq!(read.ok()["messageList"].as_array().unwrap().len(), 2);
    // The device stays the owner's and shared as before: Bob keeps his placement.
    assert!(hub.hub.store.placement(&bob.apikey, "2000000001").await.unwrap().is_some());
    // The deleted family and its rooms are gone.
    a.post("/v2/family/current", json!({"id": home})).await.fails(405);
    a.put("/v2/family/room", json!({"id": kitchen, "name": "X"})).await.fails(405);
    hub.stop().await;
}

#[tokio::test]
async fn deleting_another_family_keeps_the_current_one() {
    let hub = TestHub::start().await;
    let user = hub.user("alice@example.com").await;
    let a = api(&hub, &user);
    let home = current(&a).await;
    let office = add_family(&a, "Office", 2).await["id"].as_str().unwrap().to_owned();
    let cabin = add_family(&a, "Cabin", 2).await["id"].as_str().unwrap().to_owned();
    a.delete("/v2/family", &format!("id={cabin}&deviceFamily={home}&switchFamily={office}")).await.ok();
    let data = families(&a).await;
    assert_eq!(names(&data["familyList"]), ["My Home", "Office"]);
    assert_eq!(data["currentFamilyId"], home.as_str());
    // Parameters in a JSON body.
    a.call(reqwest::Method::DELETE, "/v2/family", "", Some(&json!({"id": office, "deviceFamily": home, "switchFamily": home}))).await.ok();
    assert_eq!(names(&families(&a).await["familyList"]), ["My Home"]);
    hub.stop().await;
}

#[tokio::test]
async fn deleting_a_family_checks_every_id() {
    let hub = TestHub::start().await;
    let (alice, bob) = two_users(&hub).await;
    let (a, b) = (api(&hub, &alice), api(&hub, &bob));
    let home = current(&a).await;
    let office = add_family(&a, "Office", 2).await["id"].as_str().unwrap().to_owned();
    let bobs = current(&b).await;
    add_family(&b, "Bob's office", 2).await;
    let cases: Vec<(String, i64)> = vec![
        (format!("id={home}&deviceFamily={office}"), 400),
        (format!("id={home}&switchFamily={office}"), 400),
        (format!("deviceFamily={office}&switchFamily={office}"), 400),
        (format!("id={home}&deviceFamily={home}&switchFamily={office}"), 400),
        (format!("id={home}&deviceFamily={office}&switchFamily={home}"), 400),
        (format!("id=nope&deviceFamily={office}&switchFamily={office}"), 405),
        (format!("id={home}&deviceFamily=nope&switchFamily={office}"), 405),
        (format!("id={home}&deviceFamily={office}&switchFamily=nope"), 405),
        (format!("id={home}&deviceFamily={bobs}&switchFamily={office}"), 405),
        (format!("id={home}&deviceFamily={office}&switchFamily={bobs}"), 405),
    ];
    for (query, code) in cases {
        a.delete("/v2/family", &query).await.fails(code);
    }
    // Bob cannot delete Alice's family.
    b.delete("/v2/family", &format!("id={home}&deviceFamily={bobs}&switchFamily={bobs}")).await.fails(405);
    assert_eq!(families(&a).await["familyList"].as_array().unwrap().len(), 2, "nothing was deleted");
    assert_eq!(families(&b).await["familyList"].as_array().unwrap().len(), 2);
    hub.stop().await;
}

/// Alice with devices 1000000001..3 in her current family (newest first) and Bob's 2000000001
/// shared with her; Bob also owns 2000000002, not shared.
async fn alice_with_things(hub: &TestHub) -> (TestUser, TestUser, String) {
    let (alice, bob) = two_users(hub).await;
    for id in ["1000000001", "1000000002", "1000000003"] {
        hub.device_record(id, Some(&alice)).await;
    }
    hub.device_record("2000000001", Some(&bob)).await;
    hub.device_record("2000000002", Some(&bob)).await;
    hub.share("2000000001", &alice).await;
    let home = current(&api(hub, &alice)).await;
    (alice, bob, home)
}

async fn order(hub: &TestHub, user: &UserKey, ids: &[&str]) -> Vec<String> {
    let mut with_index = Vec::new();
    for id in ids {
        with_index.push((placed(hub, user, id).await.2, id.to_string()));
    }
    with_index.sort();
    with_index.into_iter().map(|(_, id)| id).collect()
}

#[tokio::test]
async fn things_of_a_family_are_sorted() {
    let hub = TestHub::start().await;
    let (alice, bob, home) = alice_with_things(&hub).await;
    let (a, b) = (api(&hub, &alice), api(&hub, &bob));
    let all = ["1000000001", "1000000002", "1000000003", "2000000001"];
    let list = json!([
        {"itemType": 1, "id": "1000000002"},
        {"itemType": 2, "id": "2000000001"},
        {"itemType": 1, "id": "1000000003"},
        {"itemType": 1, "id": "1000000001"},
    ]);
    a.post("/v2/family/thing/sort", json!({"familyid": home, "thingList": list})).await.ok();
    assert_eq!(order(&hub, &alice.apikey, &all).await, ["1000000002", "2000000001", "1000000003", "1000000001"]);
    for (i, id) in ["1000000002", "2000000001", "1000000003", "1000000001"].iter().enumerate() {
        assert_eq!(placed(&hub, &alice.apikey, id).await.2, i as i64);
    }
    // A partial list (current family by default): the rest follow in their old order.
    a.post("/v2/family/thing/sort", json!({"thingList": [{"itemType": 1, "id": "1000000001"}]})).await.ok();
    assert_eq!(order(&hub, &alice.apikey, &all).await, ["1000000001", "1000000002", "2000000001", "1000000003"]);

    let refused: Vec<(Value, i64)> = vec![
        (json!({"thingList": [{"itemType": 4, "id": "1000000001"}]}), 400),
        (json!({"thingList": [{"itemType": "1", "id": "1000000001"}]}), 400),
        (json!({"thingList": [{"id": "1000000001"}]}), 400),
        (json!({"thingList": [{"itemType": 1}]}), 400),
        (json!({"familyid": home}), 400),
        (json!({"thingList": [{"itemType": 1, "id": "1000000001"}, {"itemType": 1, "id": "1000000001"}]}), 400),
        // Wrong itemType for a thing she keeps.
        (json!({"thingList": [{"itemType": 1, "id": "2000000001"}]}), 405),
        (json!({"thingList": [{"itemType": 3, "id": "1000000001"}]}), 405),
        // Someone else's device, not shared with her; an unknown one.
        (json!({"thingList": [{"itemType": 1, "id": "2000000002"}]}), 405),
        (json!({"thingList": [{"itemType": 2, "id": "2000000002"}]}), 405),
        (json!({"thingList": [{"itemType": 1, "id": "9999999999"}]}), 405),
        (json!({"familyid": "nope", "thingList": []}), 405),
    ];
    for (body, code) in refused {
        a.post("/v2/family/thing/sort", body).await.fails(code);
    }
    // A thing she keeps in another family is not in this one.
    let office = add_family(&a, "Office", 2).await["id"].as_str().unwrap().to_owned();
    a.post("/v2/family/thing/sort", json!({"familyid": office, "thingList": [{"itemType": 1, "id": "1000000001"}]})).await.fails(405);
    // Bob cannot sort Alice's family, nor Alice's things in his own.
    b.post("/v2/family/thing/sort", json!({"familyid": home, "thingList": []})).await.fails(405);
    b.post("/v2/family/thing/sort", json!({"thingList": [{"itemType": 1, "id": "1000000001"}]})).await.fails(405);
    assert_eq!(order(&hub, &alice.apikey, &all).await, ["1000000001", "1000000002", "2000000001", "1000000003"], "refusals change nothing");
    hub.stop().await;
}

#[tokio::test]
async fn things_join_and_leave_a_room() {
    let hub = TestHub::start().await;
    let (alice, bob, home) = alice_with_things(&hub).await;
    let (a, b) = (api(&hub, &alice), api(&hub, &bob));
    let room = add_room(&a, &home, "Kitchen").await;
    let other_room = add_room(&a, &home, "Bath").await;
    let d = |t: i64, id: &str| json!({"itemType": t, "id": id});
    a.post("/v2/family/room/thing", json!({"roomid": room, "oldThingList": [], "newThingList": [d(1, "1000000001"), d(2, "2000000001")]}))
        .await
        .ok();
    let room_of = |id: &'static str| room_of(&hub, &alice.apikey, id);
    assert_eq!(room_of("1000000001").await.as_deref(), Some(room.as_str()));
    assert_eq!(room_of("2000000001").await.as_deref(), Some(room.as_str()));
    assert_eq!(room_of("1000000002").await, None);
    // 1000000001 leaves, 2000000001 stays, 1000000002 joins.
    a.post(
        "/v2/family/room/thing",
        json!({"roomid": room, "oldThingList": [d(1, "1000000001"), d(2, "2000000001")], "newThingList": [d(2, "2000000001"), d(1, "1000000002")]}),
    )
    .await
    .ok();
    assert_eq!(room_of("1000000001").await, None);
    assert_eq!(room_of("2000000001").await.as_deref(), Some(room.as_str()));
    assert_eq!(room_of("1000000002").await.as_deref(), Some(room.as_str()));
    // A thing in another room moves over.
    a.post("/v2/family/room/thing", json!({"roomid": other_room, "oldThingList": [], "newThingList": [d(1, "1000000003")]})).await.ok();
    a.post("/v2/family/room/thing", json!({"roomid": room, "oldThingList": [], "newThingList": [d(1, "1000000003")]})).await.ok();
    assert_eq!(room_of("1000000003").await.as_deref(), Some(room.as_str()));

    let office = add_family(&a, "Office", 2).await["id"].as_str().unwrap().to_owned();
    let desk = add_room(&a, &office, "Desk").await;
    let refused: Vec<(Value, i64)> = vec![
        // An item of the old list that is not in the room.
        (json!({"roomid": room, "oldThingList": [d(1, "1000000001")], "newThingList": []}), 400),
        (json!({"roomid": room, "oldThingList": [d(1, "2000000002")], "newThingList": []}), 400),
        (json!({"roomid": room, "oldThingList": [d(1, "2000000001")], "newThingList": []}), 400),
        // Bad input.
        (json!({"roomid": room, "oldThingList": [d(5, "1000000002")], "newThingList": []}), 400),
        (json!({"roomid": room, "newThingList": []}), 400),
        (json!({"roomid": room, "oldThingList": []}), 400),
        (json!({"oldThingList": [], "newThingList": []}), 400),
        // New items she does not keep in the room's family; unknown rooms.
        (json!({"roomid": room, "oldThingList": [], "newThingList": [d(1, "2000000002")]}), 405),
        (json!({"roomid": room, "oldThingList": [], "newThingList": [d(1, "9999999999")]}), 405),
        (json!({"roomid": desk, "oldThingList": [], "newThingList": [d(1, "1000000001")]}), 405),
        (json!({"roomid": "nope", "oldThingList": [], "newThingList": []}), 405),
    ];
    for (body, code) in refused {
        a.post("/v2/family/room/thing", body).await.fails(code);
    }
    // Bob cannot use Alice's room, even for his own device.
    b.post("/v2/family/room/thing", json!({"roomid": room, "oldThingList": [], "newThingList": [d(1, "2000000002")]})).await.fails(405);
    assert_eq!(room_of("1000000001").await, None, "refusals change nothing");
    assert_eq!(room_of("1000000002").await.as_deref(), Some(room.as_str()));
    assert_eq!(hub.hub.store.placement(&bob.apikey, "2000000002").await.unwrap().unwrap().roomid, None);
    hub.stop().await;
}

/// Bob's own answers never mention Alice's ids.
#[tokio::test]
async fn refusals_do_not_reveal_other_users_ids() {
    let hub = TestHub::start().await;
    let (alice, bob) = two_users(&hub).await;
    let (a, b) = (api(&hub, &alice), api(&hub, &bob));
    let home = current(&a).await;
    let room = add_room(&a, &home, "Kitchen").await;
    let theirs: Answer = b.put("/v2/family/room", json!({"id": room, "name": "X"})).await;
    let unknown: Answer = b.put("/v2/family/room", json!({"id": "000000000000000000000000", "name": "X"})).await;
    assert_eq!((theirs.error, unknown.error), (405, 405));
    let mine = families(&b).await;
    assert!(!mine.to_string().contains(&home), "{mine}");
    hub.stop().await;
}

/// A thing named twice in either list of `room/thing` is refused: each listed thing must be a
/// distinct thing of the family, so a request's work is bounded by what the caller keeps, not by
/// how often a 1 MiB body can repeat one id (every repeat used to cost a list scan and an UPDATE).
#[tokio::test]
async fn room_things_refuse_a_thing_listed_twice() {
    let hub = TestHub::start().await;
    let (alice, _bob, home) = alice_with_things(&hub).await;
    let a = api(&hub, &alice);
    let room = add_room(&a, &home, "Kitchen").await;
    let d = |t: i64, id: &str| json!({"itemType": t, "id": id});
    a.post("/v2/family/room/thing", json!({"roomid": room, "oldThingList": [], "newThingList": [d(1, "1000000001")]})).await.ok();
    let twice = json!({"roomid": room, "oldThingList": [], "newThingList": [d(1, "1000000002"), d(1, "1000000002")]});
    a.post("/v2/family/room/thing", twice).await.fails(400);
    let many = vec![d(1, "1000000001"); 5000];
    a.post("/v2/family/room/thing", json!({"roomid": room, "oldThingList": many, "newThingList": [d(1, "1000000003")]})).await.fails(400);
    let many = vec![d(1, "1000000003"); 5000];
    a.post("/v2/family/room/thing", json!({"roomid": room, "oldThingList": [d(1, "1000000001")], "newThingList": many})).await.fails(400);
    assert_eq!(room_of(&hub, &alice.apikey, "1000000001").await.as_deref(), Some(room.as_str()), "refusals change nothing");
    assert_eq!(room_of(&hub, &alice.apikey, "1000000002").await, None);
    assert_eq!(room_of(&hub, &alice.apikey, "1000000003").await, None);
    hub.stop().await;
}
