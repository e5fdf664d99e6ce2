//! Seed 003's invite-code sharing through the real server: each mode, every state transition
//! (accept, deny, cancel, expiry, delete), who may do what, the race for one `qrcode` invite,
//! and the share it makes being seed 004's share, taken back through either door.

mod common;

use common::rest::api;
use common::xlink::{Xlink, product, sql, xlink};
use common::{TestHub, TestUser};
use serde_json::{Value, json};
use switchyard::ids::{DeviceId, UserKey};
use switchyard::verify::OutboxSender;

const P: &str = "lamp";

async fn setup() -> (TestHub, TestUser, TestUser, String) {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let bob = hub.user("bob@example.com").await;
    product(&hub, P, true).await;
    let id = xlink(&hub, &alice).register(P, "aabbccddee01").await.ok()["device_id"].as_str().unwrap().to_owned();
    (hub, alice, bob, id)
}

async fn sharees(hub: &TestHub, id: &str) -> Vec<UserKey> {
    hub.hub.store.audience(&DeviceId::new(id)).await.unwrap().map(|a| a.sharees).unwrap_or_default()
}

async fn code(x: &Xlink<'_>, id: &str, mode: &str, user: Option<&str>) -> String {
    let r = x.invite(id, mode, user).await;
    let code = r.ok()["invite_code"].as_str().unwrap().to_owned();
    assert!(code.len() == 32 && code.bytes().all(|b| b.is_ascii_hexdigit()), "{r:?}");
    code
}

fn find(list: &[Value], code: &str) -> Option<Value> {
    list.iter().find(|i| i["invite_code"] == code).cloned()
}

#[tokio::test]
async fn an_accepted_app_invite_is_the_share_seed_004_makes() {
    let (hub, alice, bob, id) = setup().await;
    let (a, b) = (xlink(&hub, &alice), xlink(&hub, &bob));
    // By apikey, email or phone; unknown accounts are 404.
    a.invite(&id, "app", Some("nobody@example.com")).await.fails(404, 4044);
    a.invite(&id, "app", None).await.fails(400, 4001);
    let c = code(&a, &id, "app", Some("bob@example.com")).await;

    let sent = find(&a.invites().await, &c).expect("in the manager's list");
    let got = find(&b.invites().await, &c).expect("in the invitee's list");
    assert_eq!(sent, got);
    assert_eq!(sent["from_id"], alice.apikey.as_str());
    assert_eq!(sent["from_user"], "alice@example.com");
    assert_eq!(sent["to_id"], bob.apikey.as_str());
    assert_eq!(sent["to_user"], "bob@example.com");
    assert_eq!(
        (sent["device_id"].as_str(), sent["state"].as_str(), sent["mode"].as_str()),
        (Some(id.as_str()), Some("pending"), Some("app"))
    );
    let (created, expires) = (sent["create_date"].as_str().unwrap(), sent["expire_date"].as_str().unwrap());
    assert!(created.ends_with('Z') && expires > created, "{sent}");

    b.accept(&c).await.empty();
    assert_eq!(sharees(&hub, &id).await, vec![bob.apikey.clone()]);
    assert_eq!(find(&a.invites().await, &c).unwrap()["state"], "accept");
    // The seed-004 view: a thing of type 2 shared by alice, with the default permit, and a notice.
    let things = api(&hub, &bob).get("/v2/device/thing", "").await.ok().clone();
    let item = things["thingList"].as_array().unwrap().iter().find(|t| t["itemData"]["deviceid"] == id.as_str()).cloned().expect("listed");
    assert_eq!(item["itemType"], 2);
    assert_eq!(item["itemData"]["sharedBy"]["apikey"], alice.apikey.as_str());
    let family = hub.hub.store.current_family(&bob.apikey).await.unwrap();
    let notes = hub.hub.store.messages(&bob.apikey, &family, i64::MAX, 10).await.unwrap();
    assert_eq!(notes.iter().filter(|n| n.msg_type == "shareNotify_v2").count(), 1, "{notes:?}");
    let owner_view = api(&hub, &alice).get("/v2/device/thing", "").await.ok().clone();
    let share_to = &owner_view["thingList"][0]["itemData"]["shareTo"];
    assert_eq!((share_to[0]["apikey"].as_str(), share_to[0]["permit"].as_i64()), (Some(bob.apikey.as_str()), Some(15)), "{owner_view}");
    assert_eq!(b.devices(None).await.ok()["list"][0]["id"], id.as_str());

    // Answered once only; sharing again with a sharee, or with yourself, is refused.
    b.accept(&c).await.fails(409, 4094);
    a.post("/v2/share/device/cancel", json!({"invite_code": c})).await.fails(409, 4094);
    a.invite(&id, "app", Some(bob.apikey.as_str())).await.fails(409, 4092);
    a.invite(&id, "email", Some("BOB@example.com")).await.fails(409, 4092);
    a.invite(&id, "app", Some("alice@example.com")).await.fails(400, 4004);
    a.invite(&id, "email", Some("alice@example.com")).await.fails(400, 4004);
    // The sharee cannot share it on.
    b.invite(&id, "qrcode", None).await.fails(403, 4031);

    // Taken back through seed 004's door: gone from the sharee's lists.
    api(&hub, &alice).delete("/v2/device/share", &format!("deviceid={id}&apikey={}", bob.apikey)).await.ok();
    assert!(sharees(&hub, &id).await.is_empty());
    assert_eq!(b.devices(None).await.ok()["list"], json!([]));
    // And a new invite may be sent and accepted again.
    let again = code(&a, &id, "app", Some(bob.apikey.as_str())).await;
    b.accept(&again).await.empty();
    assert_eq!(sharees(&hub, &id).await, vec![bob.apikey.clone()]);
    hub.stop().await;
}

#[tokio::test]
async fn invites_are_denied_cancelled_expire_and_are_removed_per_party() {
    let (hub, alice, bob, id) = setup().await;
    let carol = hub.user("carol@example.com").await;
    let (a, b, c) = (xlink(&hub, &alice), xlink(&hub, &bob), xlink(&hub, &carol));

    // Deny, with a reason; then it cannot be accepted.
    let denied = code(&a, &id, "app", Some("bob@example.com")).await;
    c.post("/v2/share/device/deny", json!({"invite_code": denied})).await.fails(403, 4031);
    a.post("/v2/share/device/deny", json!({"invite_code": denied})).await.fails(403, 4031);
    b.post("/v2/share/device/deny", json!({"invite_code": denied, "reason": "x".repeat(201)})).await.fails(400, 4001);
    b.post("/v2/share/device/deny", json!({"invite_code": denied, "reason": "not now"})).await.empty();
    assert_eq!(find(&a.invites().await, &denied).unwrap()["state"], "deny");
    b.accept(&denied).await.fails(409, 4094);

    // Cancel: the manager only, while pending.
    let cancelled = code(&a, &id, "app", Some("bob@example.com")).await;
    b.post("/v2/share/device/cancel", json!({"invite_code": cancelled})).await.fails(403, 4031);
    a.post("/v2/share/device/cancel", json!({"invite_code": cancelled})).await.empty();
    a.post("/v2/share/device/cancel", json!({"invite_code": cancelled})).await.fails(409, 4094);
    b.accept(&cancelled).await.fails(409, 4094);
    assert_eq!(find(&b.invites().await, &cancelled).unwrap()["state"], "cancel");

    // Expiry: a pending invite past its time reads as overtime and cannot be answered.
    let late = code(&a, &id, "app", Some("bob@example.com")).await;
    sql(&hub, &format!("UPDATE share_invites SET expires_at = created_at WHERE code = '{late}'")).await;
    assert_eq!(find(&b.invites().await, &late).unwrap()["state"], "overtime");
    b.accept(&late).await.fails(409, 4093);
    b.post("/v2/share/device/deny", json!({"invite_code": late})).await.fails(409, 4093);
    a.post("/v2/share/device/cancel", json!({"invite_code": late})).await.fails(409, 4093);
    assert!(sharees(&hub, &id).await.is_empty());

    // Bad input and unknown codes.
    for expire in [59, 30 * 86_400 + 1] {
        a.post("/v2/share/device", json!({"device_id": id, "expire": expire, "mode": "qrcode"})).await.fails(400, 4001);
    }
    a.post("/v2/share/device", json!({"device_id": id, "expire": 60, "mode": "sms"})).await.fails(400, 4001);
    a.post("/v2/share/device", json!({"device_id": "ffffffffff", "expire": 60, "mode": "qrcode"})).await.fails(404, 4042);
    c.post("/v2/share/device", json!({"device_id": id, "expire": 60, "mode": "qrcode"})).await.fails(403, 4031);
    b.accept(&"0".repeat(32)).await.fails(404, 4043);
    b.accept("").await.fails(400, 4001);

    // Delete: each party from their own list; a pending one is cancelled; strangers refused.
    let pending = code(&a, &id, "app", Some("bob@example.com")).await;
    c.delete(&format!("/v2/share/device/delete/{pending}")).await.fails(403, 4031);
    b.delete(&format!("/v2/share/device/delete/{pending}")).await.empty();
    assert!(find(&b.invites().await, &pending).is_none());
    assert_eq!(find(&a.invites().await, &pending).unwrap()["state"], "cancel");
    b.delete(&format!("/v2/share/device/delete/{pending}")).await.fails(404, 4043);
    a.delete(&format!("/v2/share/device/delete/{pending}")).await.empty();
    assert!(find(&a.invites().await, &pending).is_none());
    a.delete(&format!("/v2/share/device/delete/{pending}")).await.fails(404, 4043);
    for gone in [&denied, &cancelled, &late] {
        a.delete(&format!("/v2/share/device/delete/{gone}")).await.empty();
    }
    assert!(a.invites().await.is_empty(), "{:?}", a.invites().await);
    assert_eq!(b.invites().await.len(), 3, "bob still lists his three");
    assert!(c.invites().await.is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn two_users_racing_for_one_qrcode_invite_make_exactly_one_share() {
    let (hub, alice, bob, id) = setup().await;
    let carol = hub.user("carol@example.com").await;
    let dave = hub.user("dave@example.com").await;
    let a = xlink(&hub, &alice);
    let c = code(&a, &id, "qrcode", None).await;
    assert_eq!(find(&a.invites().await, &c).unwrap()["to_id"], "", "nobody took it yet");
    a.accept(&c).await.fails(403, 4031);

    for round in 0..4 {
        let c = if round == 0 { c.clone() } else { code(&a, &id, "qrcode", None).await };
        let racers = [xlink(&hub, &bob), xlink(&hub, &carol), xlink(&hub, &dave)];
        let (r1, r2, r3) = tokio::join!(racers[0].accept(&c), racers[1].accept(&c), racers[2].accept(&c));
        let replies = [r1, r2, r3];
        let won: Vec<usize> = (0..3).filter(|&i| replies[i].status == 200).collect();
        assert_eq!(won.len(), 1, "round {round}: {replies:?}");
        for (i, r) in replies.iter().enumerate() {
            if i != won[0] {
                assert_eq!((r.status, r.code()), (409, Some(4094)), "round {round}: {r:?}");
            }
        }
        let winner = [&bob, &carol, &dave][won[0]];
        assert!(sharees(&hub, &id).await.contains(&winner.apikey));
        let listed = find(&a.invites().await, &c).unwrap();
        assert_eq!((listed["state"].as_str(), listed["to_id"].as_str()), (Some("accept"), Some(winner.apikey.as_str())));
        assert_eq!(listed["to_user"], winner.email.as_str());
        // Take it back so the next round starts with no sharee.
        xlink(&hub, winner).unsubscribe(&id).await.empty();
        assert!(sharees(&hub, &id).await.is_empty());
    }
    hub.stop().await;
}

#[tokio::test]
async fn an_email_invite_is_sent_and_only_the_address_holder_accepts() {
    let (hub, alice, bob, id) = setup().await;
    let a = xlink(&hub, &alice);
    a.invite(&id, "email", Some("not an address")).await.fails(400, 4001);
    let c = code(&a, &id, "email", Some("New@Example.com")).await;
    // The code went through the sender, to the outbox file.
    let outbox = std::fs::read_to_string(OutboxSender::path_in(&hub.dir.path().join("data"))).unwrap();
    let line: Value = outbox.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|v| v["purpose"] == "share-invite").unwrap();
    assert_eq!(
        (line["to"].as_str(), line["code"].as_str(), line["deviceid"].as_str()),
        (Some("new@example.com"), Some(c.as_str()), Some(id.as_str()))
    );
    assert_eq!(line["from"], "alice@example.com");
    let listed = find(&a.invites().await, &c).unwrap();
    assert_eq!((listed["to_id"].as_str(), listed["to_user"].as_str()), (Some(""), Some("new@example.com")));

    // Someone else holding the code cannot use it.
    xlink(&hub, &bob).accept(&c).await.fails(403, 4031);
    assert!(xlink(&hub, &bob).invites().await.is_empty());
    // The address gets an account: the invite is theirs to see and accept.
    let newcomer = hub.user("new@example.com").await;
    let n = xlink(&hub, &newcomer);
    let theirs = find(&n.invites().await, &c).expect("listed for the address holder");
    assert_eq!(theirs["to_id"], newcomer.apikey.as_str());
    n.accept(&c).await.empty();
    assert_eq!(sharees(&hub, &id).await, vec![newcomer.apikey.clone()]);
    hub.stop().await;
}
