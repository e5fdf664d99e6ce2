//! `/v2/device/share…` through the real server: sharing by email or phone, permits, taking a
//! device back (with the sharee's groups built on it), bad input, who may do what, and the live
//! hub following each change over real WebSockets.

mod common;

use std::time::{Duration, Instant};

use common::rest::{Answer, api};
use common::{Client, PASSWORD, TestHub, TestUser, wait_until_async};
use serde_json::{Value, json};
use switchyard::ids::{DeviceId, UserKey};
use switchyard::store::Message;

const DEV: &str = "1000000001";
const DEV2: &str = "1000000002";

async fn setup() -> (TestHub, TestUser, TestUser) {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let sam = hub.user("sam@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    hub.device_record(DEV2, Some(&alice)).await;
    (hub, alice, sam)
}

async fn sharees(hub: &TestHub, id: &str) -> Vec<UserKey> {
    hub.hub.store.audience(&DeviceId::new(id)).await.unwrap().map(|a| a.sharees).unwrap_or_default()
}

/// The sharee list that holds just `user`.
fn only(user: &TestUser) -> Vec<UserKey> {
    vec![user.apikey.clone()]
}

async fn messages(hub: &TestHub, user: &TestUser) -> Vec<Message> {
    let family = hub.hub.store.current_family(&user.apikey).await.unwrap();
    hub.hub.store.messages(&user.apikey, &family, i64::MAX, 50).await.unwrap()
}

fn share_to(item: &Value) -> Vec<(String, i64, String)> {
    item["itemData"]["shareTo"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|s| {
                    (
                        s["apikey"].as_str().unwrap().to_owned(),
                        s["permit"].as_i64().unwrap(),
                        s["comment"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn share(hub: &TestHub, owner: &TestUser, body: Value) -> Answer {
    api(hub, owner).post("/v2/device/share", body).await
}

#[tokio::test]
async fn sharing_by_email_places_the_device_for_the_sharee_and_tells_them() {
    let (hub, alice, sam) = setup().await;
    let r =
        share(&hub, &alice, json!({"deviceidList":[DEV, DEV2, DEV],"user":{"email":"SAM@example.com"},"permit":3,"comment":"hall lamp"}))
            .await;
    let list = r.ok()["updatedThingList"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "each device once: {list:?}");
    for (item, id) in list.iter().zip([DEV, DEV2]) {
        assert_eq!(item["itemType"], 1, "as the owner sees it: {item}");
        assert_eq!(item["itemData"]["deviceid"], id);
        assert_eq!(share_to(item), [(sam.apikey.as_str().to_owned(), 3, "hall lamp".to_owned())], "{item}");
    }
    for id in [DEV, DEV2] {
        assert_eq!(sharees(&hub, id).await, only(&sam));
        let placed = hub.hub.store.placement(&sam.apikey, id).await.unwrap().expect("placed for the sharee");
        assert_eq!(placed.kind.code(), 2);
        assert_eq!(placed.familyid, hub.hub.store.current_family(&sam.apikey).await.unwrap());
    }
    let notes = messages(&hub, &sam).await;
    assert_eq!(notes.len(), 2, "{notes:?}");
    for n in &notes {
        assert_eq!(n.msg_type, "shareNotify_v2");
        assert_eq!(n.message["permit"], 3);
        assert_eq!(n.message["comment"], "hall lamp");
        assert_eq!(n.message["sharedBy"]["apikey"], alice.apikey.as_str());
        assert_eq!(n.message["sharedBy"]["email"], "alice@example.com");
        assert!(n.message["deviceName"].is_string(), "{:?}", n.message);
    }
    let mut ids: Vec<&str> = notes.iter().map(|n| n.message["deviceid"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [DEV, DEV2]);
    assert!(messages(&hub, &alice).await.is_empty());

    // The sharee sees the device as shared with them, by its owner.
    let item = api(&hub, &sam).get("/v2/device/thing", "").await.ok()["thingList"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["itemData"]["deviceid"] == DEV)
        .cloned();
    let item = item.expect("the sharee's thing list holds the device");
    assert_eq!(item["itemType"], 2, "{item}");
    assert_eq!(item["itemData"]["sharedBy"]["apikey"], alice.apikey.as_str(), "{item}");
    hub.stop().await;
}

#[tokio::test]
async fn sharing_again_updates_permit_and_comment_without_a_second_notice() {
    let (hub, alice, sam) = setup().await;
    share(&hub, &alice, json!({"deviceidList":[DEV],"user":{"email":"sam@example.com"},"permit":1})).await.ok();
    let r =
        share(&hub, &alice, json!({"deviceidList":[DEV],"user":{"email":"sam@example.com"},"permit":12,"comment":"now with timers"})).await;
    assert_eq!(share_to(&r.ok()["updatedThingList"][0]), [(sam.apikey.as_str().to_owned(), 12, "now with timers".to_owned())]);
    assert_eq!(messages(&hub, &sam).await.len(), 1);
    assert_eq!(sharees(&hub, DEV).await, only(&sam));
    hub.stop().await;
}

#[tokio::test]
async fn sharing_by_phone_needs_the_country_code_and_an_existing_account() {
    let (hub, alice, _sam) = setup().await;
    let hash = switchyard::auth::hash_password(PASSWORD);
    let pat = hub.hub.store.add_user(None, Some("+8613800000000"), "+86", &hash, "cn").await.unwrap();

    share(&hub, &alice, json!({"deviceidList":[DEV],"user":{"phoneNumber":"+8613800000000"},"permit":0})).await.fails(400);
    share(&hub, &alice, json!({"deviceidList":[DEV],"user":{"countryCode":"+86","phoneNumber":"+8613900000000"},"permit":0}))
        .await
        .fails(30008);
    // The phone number is looked up first, even with a known email beside it.
    share(
        &hub,
        &alice,
        json!({"deviceidList":[DEV],"user":{"countryCode":"+86","phoneNumber":"+8613900000000","email":"sam@example.com"},"permit":0}),
    )
    .await
    .fails(30008);
    share(&hub, &alice, json!({"deviceidList":[DEV],"user":{"email":"nobody@example.com"},"permit":0})).await.fails(30008);
    share(&hub, &alice, json!({"deviceidList":[DEV],"user":{},"permit":0})).await.fails(400);
    share(&hub, &alice, json!({"deviceidList":[DEV],"user":{"email":"","phoneNumber":""},"permit":0})).await.fails(400);
    assert!(sharees(&hub, DEV).await.is_empty());

    let r = share(
        &hub,
        &alice,
        json!({"deviceidList":[DEV],"user":{"countryCode":"+86","phoneNumber":"+8613800000000","email":"sam@example.com"},"permit":0}),
    )
    .await;
    assert_eq!(share_to(&r.ok()["updatedThingList"][0])[0].0, pat.as_str());
    assert_eq!(sharees(&hub, DEV).await, [pat]);
    hub.stop().await;
}

#[tokio::test]
async fn sharing_checks_its_input() {
    let (hub, alice, sam) = setup().await;
    let user = json!({"email":"sam@example.com"});
    for body in [
        json!({"user":user,"permit":1}),
        json!({"deviceidList":[],"user":user,"permit":1}),
        json!({"deviceidList":[""],"user":user,"permit":1}),
        json!({"deviceidList":DEV,"user":user,"permit":1}),
        json!({"deviceidList":(0..51).map(|i| format!("{i:010}")).collect::<Vec<_>>(),"user":user,"permit":1}),
        json!({"deviceidList":[DEV],"permit":1}),
        json!({"deviceidList":[DEV],"user":"sam@example.com","permit":1}),
        json!({"deviceidList":[DEV],"user":user}),
        json!({"deviceidList":[DEV],"user":user,"permit":16}),
        json!({"deviceidList":[DEV],"user":user,"permit":-1}),
        json!({"deviceidList":[DEV],"user":user,"permit":"15"}),
        json!({"deviceidList":[DEV],"user":user,"permit":1.5}),
        json!({"deviceidList":[DEV],"user":user,"permit":1,"shareType":2}),
        json!({"deviceidList":[DEV],"user":user,"permit":1,"comment":"x".repeat(201)}),
        json!({"deviceidList":[DEV],"user":user,"permit":1,"comment":7}),
        // Sharing with yourself.
        json!({"deviceidList":[DEV],"user":{"email":"alice@example.com"},"permit":1}),
    ] {
        share(&hub, &alice, body.clone()).await.fails(400);
    }
    assert!(sharees(&hub, DEV).await.is_empty());
    assert!(messages(&hub, &sam).await.is_empty());
    share(&hub, &alice, json!({"deviceidList":[DEV],"user":user,"permit":15,"shareType":1})).await.ok();
    hub.stop().await;
}

#[tokio::test]
async fn only_the_owner_shares_and_a_refused_list_shares_nothing() {
    let (hub, alice, sam) = setup().await;
    let eve = hub.user("eve@example.com").await;
    hub.device_record("1000000009", Some(&eve)).await;
    hub.share(DEV, &sam).await;
    let to_eve = json!({"email":"eve@example.com"});

    // The sharee may not pass the device on.
    share(&hub, &sam, json!({"deviceidList":[DEV],"user":to_eve,"permit":15})).await.fails(406);
    // Unknown devices and other users' devices look the same.
    share(&hub, &alice, json!({"deviceidList":["1000000099"],"user":to_eve,"permit":15})).await.fails(405);
    share(&hub, &alice, json!({"deviceidList":["1000000009"],"user":{"email":"sam@example.com"},"permit":15})).await.fails(405);
    // One bad device refuses the whole list.
    share(&hub, &alice, json!({"deviceidList":[DEV2, "1000000009"],"user":to_eve,"permit":15})).await.fails(405);
    assert!(sharees(&hub, DEV2).await.is_empty());
    assert_eq!(sharees(&hub, DEV).await, only(&sam));
    assert!(sharees(&hub, "1000000009").await.is_empty());
    assert!(hub.hub.store.placement(&eve.apikey, DEV2).await.unwrap().is_none());
    assert!(messages(&hub, &eve).await.is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn the_owner_changes_a_sharees_permit() {
    let (hub, alice, sam) = setup().await;
    let eve = hub.user("eve@example.com").await;
    share(&hub, &alice, json!({"deviceidList":[DEV],"user":{"email":"sam@example.com"},"permit":1,"comment":"c"})).await.ok();
    let a = api(&hub, &alice);
    let sam_key = sam.apikey.as_str();

    let r = a.post("/v2/device/share/permit", json!({"deviceid":DEV,"apikey":sam_key,"permit":9})).await;
    let item = r.ok()["updatedThing"].clone();
    assert_eq!(item["itemData"]["deviceid"], DEV, "{item}");
    assert_eq!(share_to(&item), [(sam_key.to_owned(), 9, "c".to_owned())]);

    a.post("/v2/device/share/permit", json!({"deviceid":DEV,"apikey":sam_key,"permit":16})).await.fails(400);
    a.post("/v2/device/share/permit", json!({"deviceid":DEV,"apikey":sam_key,"permit":-1})).await.fails(400);
    a.post("/v2/device/share/permit", json!({"deviceid":DEV,"apikey":sam_key})).await.fails(400);
    a.post("/v2/device/share/permit", json!({"deviceid":DEV,"permit":1})).await.fails(400);
    a.post("/v2/device/share/permit", json!({"apikey":sam_key,"permit":1})).await.fails(400);
    a.post("/v2/device/share/permit", json!({"deviceid":DEV,"apikey":sam_key,"permit":"1"})).await.fails(400);
    // No such share, no such device.
    a.post("/v2/device/share/permit", json!({"deviceid":DEV,"apikey":eve.apikey.as_str(),"permit":1})).await.fails(405);
    a.post("/v2/device/share/permit", json!({"deviceid":DEV2,"apikey":sam_key,"permit":1})).await.fails(405);
    a.post("/v2/device/share/permit", json!({"deviceid":"1000000099","apikey":sam_key,"permit":1})).await.fails(405);
    // The sharee may not raise their own permit; a stranger does not learn the device exists.
    api(&hub, &sam).post("/v2/device/share/permit", json!({"deviceid":DEV,"apikey":sam_key,"permit":15})).await.fails(406);
    api(&hub, &eve).post("/v2/device/share/permit", json!({"deviceid":DEV,"apikey":sam_key,"permit":15})).await.fails(405);

    let item = api(&hub, &alice).get("/v2/device/thing", "").await.ok()["thingList"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["itemData"]["deviceid"] == DEV)
        .cloned()
        .unwrap();
    assert_eq!(share_to(&item), [(sam_key.to_owned(), 9, "c".to_owned())], "refusals change nothing");
    hub.stop().await;
}

#[tokio::test]
async fn taking_a_device_back_removes_it_and_the_sharees_groups_built_on_it() {
    let (hub, alice, sam) = setup().await;
    let eve = hub.user("eve@example.com").await;
    share(&hub, &alice, json!({"deviceidList":[DEV, DEV2],"user":{"email":"sam@example.com"},"permit":15})).await.ok();
    let s = api(&hub, &sam);
    let on_dev = s.post("/v2/device/group", json!({"name":"A","mainDeviceId":DEV,"deviceidList":[DEV2]})).await.ok()["itemData"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let on_dev2 = s.post("/v2/device/group", json!({"name":"B","mainDeviceId":DEV2,"deviceidList":[DEV]})).await.ok()["itemData"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Alice's own group with the device is hers and stays.
    let mine = api(&hub, &alice).post("/v2/device/group", json!({"name":"C","mainDeviceId":DEV})).await.ok()["itemData"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = api(&hub, &alice);
    let sam_key = sam.apikey.as_str();

    // Only the owner takes it back; unknown shares and devices are 405.
    s.delete("/v2/device/share", &format!("deviceid={DEV}&apikey={sam_key}")).await.fails(406);
    api(&hub, &eve).delete("/v2/device/share", &format!("deviceid={DEV}&apikey={sam_key}")).await.fails(405);
    a.delete("/v2/device/share", &format!("deviceid={DEV}&apikey={}", eve.apikey.as_str())).await.fails(405);
    a.delete("/v2/device/share", &format!("deviceid=1000000099&apikey={sam_key}")).await.fails(405);
    a.delete("/v2/device/share", &format!("deviceid={DEV}")).await.fails(400);
    a.delete("/v2/device/share", &format!("apikey={sam_key}")).await.fails(400);
    a.delete("/v2/device/share", &format!("deviceid=&apikey={sam_key}")).await.fails(400);
    assert_eq!(sharees(&hub, DEV).await, only(&sam));

    let r = a.delete("/v2/device/share", &format!("deviceid={DEV}&apikey={sam_key}")).await;
    let item = r.ok()["updatedThing"].clone();
    assert_eq!(item["itemData"]["deviceid"], DEV, "{item}");
    assert!(share_to(&item).is_empty(), "{item}");

    assert!(sharees(&hub, DEV).await.is_empty());
    assert_eq!(sharees(&hub, DEV2).await, only(&sam));
    assert!(hub.hub.store.placement(&sam.apikey, DEV).await.unwrap().is_none());
    assert!(hub.hub.store.group(&sam.apikey, &on_dev).await.unwrap().is_none(), "the group built on it is gone");
    assert!(hub.hub.store.placement(&sam.apikey, &on_dev).await.unwrap().is_none());
    assert_eq!(hub.hub.store.group(&sam.apikey, &on_dev2).await.unwrap().unwrap().members, [DEV2], "and it left the other group");
    assert_eq!(hub.hub.store.group(&alice.apikey, &mine).await.unwrap().unwrap().members, [DEV]);
    let listed: Vec<String> = s.get("/v2/device/group", "").await.ok()["groupList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["itemData"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, [on_dev2]);

    let notes = messages(&hub, &sam).await;
    assert_eq!(notes[0].msg_type, "cancelShareNotify_v2", "{notes:?}");
    assert_eq!(notes[0].message["deviceid"], DEV);
    assert_eq!(notes[0].message["sharedBy"]["apikey"], alice.apikey.as_str());

    a.delete("/v2/device/share", &format!("deviceid={DEV}&apikey={sam_key}")).await.fails(405);
    // DELETE parameters may come as a JSON body too.
    a.call(reqwest::Method::DELETE, "/v2/device/share", "", Some(&json!({"deviceid":DEV2,"apikey":sam_key}))).await.ok();
    assert!(sharees(&hub, DEV2).await.is_empty());
    hub.stop().await;
}

// --- the live hub ------------------------------------------------------------------------------

async fn in_audience(hub: &TestHub, user: &TestUser) -> bool {
    hub.hub.router.audience(&DeviceId::new(DEV)).is_some_and(|a| a.contains(&user.apikey))
}

fn permit_in_hub(hub: &TestHub, user: &TestUser) -> Option<i64> {
    hub.hub.router.audience(&DeviceId::new(DEV)).and_then(|a| a.permit_of(&user.apikey))
}

fn report(owner: &TestUser, params: Value) -> Value {
    json!({"userAgent":"device","apikey":owner.apikey.as_str(),"deviceid":DEV,"action":"update","params":params})
}

fn command(owner: &TestUser, sharee: &TestUser, sequence: &str) -> Value {
    json!({"action":"update","deviceid":DEV,"apikey":owner.apikey.as_str(),"selfApikey":sharee.apikey.as_str(),"userAgent":"app","sequence":sequence,"ts":0,"params":{"switch":"on"}})
}

/// The next frame on `c` that is not a device report.
async fn next_reply(c: &mut Client) -> Value {
    loop {
        let v = c.recv().await;
        if v.get("action").is_none() {
            return v;
        }
    }
}

#[tokio::test]
async fn the_live_hub_follows_sharing_and_unsharing_at_once() {
    let (hub, alice, sam) = setup().await;
    let mut dev = hub.device(DEV).await;
    let mut owner_app = hub.app(&alice).await;
    let mut sam_app = hub.app(&sam).await;
    let a = api(&hub, &alice);

    let started = Instant::now();
    share(&hub, &alice, json!({"deviceidList":[DEV],"user":{"email":"sam@example.com"},"permit":15})).await.ok();
    wait_until_async("the sharee is in the device's audience", || in_audience(&hub, &sam)).await;
    assert!(started.elapsed() < Duration::from_secs(4), "the hub follows within its poll: {:?}", started.elapsed());

    dev.send(report(&alice, json!({"switch":"off"}))).await;
    assert_eq!(dev.recv().await["error"], 0);
    for app in [&mut owner_app, &mut sam_app] {
        let f = app.recv().await;
        assert_eq!(
            (f["action"].as_str(), f["deviceid"].as_str(), f["params"].clone()),
            (Some("update"), Some(DEV), json!({"switch":"off"})),
            "{f}"
        );
    }

    sam_app.send(command(&alice, &sam, "s1")).await;
    let f = dev.recv().await;
    assert_eq!((f["action"].as_str(), f["params"].clone()), (Some("update"), json!({"switch":"on"})), "{f}");
    dev.send(json!({"error":0,"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"sequence":"s1"})).await;
    let r = next_reply(&mut sam_app).await;
    assert_eq!((r["error"].as_i64(), r["sequence"].as_str()), (Some(0), Some("s1")), "{r}");
    // The owner hears the command's params.
    assert_eq!(owner_app.recv().await["params"], json!({"switch":"on"}));

    // A new permit reaches the hub too (it judges a sharee's timer changes by it).
    a.post("/v2/device/share/permit", json!({"deviceid":DEV,"apikey":sam.apikey.as_str(),"permit":1})).await.ok();
    wait_until_async("the hub knows the new permit", || async { permit_in_hub(&hub, &sam) == Some(1) }).await;
    share(&hub, &alice, json!({"deviceidList":[DEV],"user":{"email":"sam@example.com"},"permit":6})).await.ok();
    wait_until_async("the hub knows the permit shared again", || async { permit_in_hub(&hub, &sam) == Some(6) }).await;

    a.delete("/v2/device/share", &format!("deviceid={DEV}&apikey={}", sam.apikey.as_str())).await.ok();
    wait_until_async("the sharee left the device's audience", || async { !in_audience(&hub, &sam).await }).await;

    dev.send(report(&alice, json!({"switch":"on"}))).await;
    assert_eq!(dev.recv().await["error"], 0);
    assert_eq!(owner_app.recv().await["params"], json!({"switch":"on"}));
    sam_app.silent_for(300).await;
    sam_app.send(command(&alice, &sam, "s2")).await;
    let r = sam_app.recv().await;
    assert_eq!((r["error"].as_i64(), r["sequence"].as_str()), (Some(406), Some("s2")), "{r}");
    dev.silent_for(100).await;
    hub.stop().await;
}

/// A share made over REST reaches the socket before the REST call answers: the sharee's very next
/// command goes through (no wait for a poll), and taking it back is just as immediate.
#[tokio::test]
async fn a_share_reaches_the_socket_before_the_rest_answer() {
    let (hub, alice, sam) = setup().await;
    let mut dev = hub.device(DEV).await;
    let mut sam_app = hub.app(&sam).await;
    let a = api(&hub, &alice);
    for round in 0..3 {
        share(&hub, &alice, json!({"deviceidList":[DEV],"user":{"email":"sam@example.com"},"permit":15})).await.ok();
        let seq = format!("now{round}");
        sam_app.send(command(&alice, &sam, &seq)).await;
        let f = dev.recv().await;
        assert_eq!((f["action"].as_str(), f["sequence"].as_str()), (Some("update"), Some(seq.as_str())), "round {round}: {f}");
        dev.send(json!({"error":0,"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"sequence":seq})).await;
        let r = next_reply(&mut sam_app).await;
        assert_eq!((r["error"].as_i64(), r["sequence"].as_str()), (Some(0), Some(seq.as_str())), "round {round}: {r}");

        a.delete("/v2/device/share", &format!("deviceid={DEV}&apikey={}", sam.apikey.as_str())).await.ok();
        let seq = format!("gone{round}");
        sam_app.send(command(&alice, &sam, &seq)).await;
        let r = next_reply(&mut sam_app).await;
        assert_eq!((r["error"].as_i64(), r["sequence"].as_str()), (Some(406), Some(seq.as_str())), "round {round}: {r}");
    }
    // With the device offline, the sharee is told 504 (a member), not 406, right after sharing.
    drop(dev);
    wait_until_async("the device is offline", || async { hub.hub.router.device_view(&DeviceId::new(DEV)).is_none() }).await;
    sam_app.send(command(&alice, &sam, "off1")).await;
    assert_eq!(next_reply(&mut sam_app).await["error"], 406);
    share(&hub, &alice, json!({"deviceidList":[DEV],"user":{"email":"sam@example.com"},"permit":15})).await.ok();
    sam_app.send(command(&alice, &sam, "off2")).await;
    let r = next_reply(&mut sam_app).await;
    assert_eq!((r["error"].as_i64(), r["sequence"].as_str()), (Some(504), Some("off2")), "{r}");
    hub.stop().await;
}
