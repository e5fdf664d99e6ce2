//! Routing through real sockets against the real server: app commands to devices and acks back
//! to exactly the sending session, 504s, fan-out of reports, sysmsg, sharing and access control,
//! device replacement, the device-side `date`/`query`, persisted state and heartbeats.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Client, TestHub, TestUser, wait_until};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchyard::Settings;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const DEV: &str = "1000000001";

// --- helpers ---------------------------------------------------------------------------------

/// Waits until the hub has attached exactly `apps` app sessions and `devices` device sessions
/// (the handshake reply is written before the session is attached).
async fn settle(hub: &TestHub, apps: i64, devices: i64) {
    let m = hub.hub.metrics.clone();
    wait_until(&format!("{apps} app and {devices} device sessions are attached"), || {
        m.app_sessions.load(Ordering::Relaxed) == apps
            && m.device_sessions.load(Ordering::Relaxed) == devices
            && hub.hub.router.online_devices().len() as i64 == devices
    })
    .await;
}

/// An app command for DEV.
fn command(action: &str, apikey: &str, sequence: Value, params: Value) -> Value {
    json!({"action":action,"deviceid":DEV,"apikey":apikey,"userAgent":"app","sequence":sequence,"ts":0,"params":params})
}

/// A device ack for DEV.
fn ack(owner: &TestUser, sequence: &Value) -> Value {
    json!({"error":0,"userAgent":"device","apikey":owner.apikey.as_str(),"deviceid":DEV,"sequence":sequence})
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The next frame that has no `action` (a reply), with the frames that had one.
async fn next_reply(c: &mut Client) -> (String, Vec<Value>) {
    let mut others = Vec::new();
    loop {
        let t = c.recv_text().await;
        let v = parse(&t);
        if v.get("action").is_none() {
            return (t, others);
        }
        others.push(v);
    }
}

fn assert_sysmsg(v: &Value, owner: &TestUser, online: bool) {
    assert_eq!(v["action"], "sysmsg", "{v}");
    assert_eq!(v["deviceid"], DEV, "{v}");
    assert_eq!(v["apikey"], owner.apikey.as_str(), "{v}");
    assert_eq!(v["params"], json!({ "online": online }), "{v}");
}

/// A hub with alice owning DEV, the device registered and one app session of alice's.
async fn owned(tune: impl FnOnce(Settings) -> Settings) -> (TestHub, TestUser, Client, Client) {
    let hub = TestHub::start_with(tune).await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let dev = hub.device(DEV).await;
    let app = hub.app(&alice).await;
    settle(&hub, 1, 1).await;
    (hub, alice, dev, app)
}

// --- app commands and acks -------------------------------------------------------------------

#[tokio::test]
async fn ack_returns_to_the_sending_session_with_the_sequence_verbatim() {
    let (hub, alice, mut dev, mut app) = owned(|s| s).await;
    let mut other = hub.app(&alice).await;
    settle(&hub, 2, 1).await;

    for (seq, raw) in [(json!("0042"), r#""sequence":"0042""#), (json!(1585297259553u64), r#""sequence":1585297259553"#)] {
        app.send(command("update", alice.apikey.as_str(), seq.clone(), json!({"switch":"on"}))).await;

        let forwarded = dev.recv_text().await;
        assert!(forwarded.contains(raw), "device got {forwarded}");
        assert!(forwarded.contains(r#""params":{"switch":"on"}"#), "device got {forwarded}");
        let f = parse(&forwarded);
        assert_eq!(f["action"], "update");
        assert_eq!(f["deviceid"], DEV);
        assert_eq!(f["apikey"], alice.apikey.as_str());
        assert_eq!(f["userAgent"], "app");
        assert_eq!(f["from"], "app");
        assert_eq!(f["sequence"], seq);

        dev.send(ack(&alice, &seq)).await;
        let reply = app.recv_text().await;
        assert!(reply.contains(raw), "app got {reply}");
        assert!(!reply.contains("action"), "a reply has no action: {reply}");
        let r = parse(&reply);
        assert_eq!(r["error"], 0, "{reply}");
        assert_eq!(r["deviceid"], DEV, "{reply}");
        assert_eq!(r["sequence"], seq, "{reply}");

        // The owner's other session hears the echo of the new params, never the ack.
        let echo = other.recv().await;
        assert_eq!(echo["action"], "update", "{echo}");
        assert_eq!(echo["userAgent"], "app", "{echo}");
    }
    other.silent_for(200).await;
    app.silent_for(100).await;

    // A number sequence acked by the device as a string still reaches the app as the app sent it.
    app.send(command("update", alice.apikey.as_str(), json!(17), json!({"switch":"off"}))).await;
    dev.recv().await;
    dev.send(ack(&alice, &json!("17"))).await;
    let reply = app.recv_text().await;
    assert!(reply.contains(r#""sequence":17"#) && !reply.contains(r#""17""#), "{reply}");
    assert_eq!(hub.hub.metrics.acks_delivered.load(Ordering::Relaxed), 3);
    hub.stop().await;
}

#[tokio::test]
async fn query_is_routed_and_the_devices_params_come_back() {
    let (hub, alice, mut dev, mut app) = owned(|s| s).await;
    app.send(command("query", alice.apikey.as_str(), json!("q1"), json!(["switch", "rssi"]))).await;
    let forwarded = dev.recv_text().await;
    assert!(forwarded.contains(r#""params":["switch","rssi"]"#), "{forwarded}");
    let f = parse(&forwarded);
    assert_eq!(f["action"], "query");
    assert_eq!(f["sequence"], "q1");

    let mut a = ack(&alice, &json!("q1"));
    a["params"] = json!({"switch":"on","rssi":-31});
    dev.send(a).await;
    let reply = app.recv_text().await;
    assert!(!reply.contains("action"), "{reply}");
    let r = parse(&reply);
    assert_eq!(r["error"], 0, "{reply}");
    assert_eq!(r["sequence"], "q1", "{reply}");
    assert_eq!(r["params"], json!({"switch":"on","rssi":-31}), "{reply}");
    hub.stop().await;
}

#[tokio::test]
async fn upgrade_is_routed_to_the_device() {
    let (hub, alice, mut dev, mut app) = owned(|s| s).await;
    let params = json!({"model":"EMU","version":"2.0.0","binList":[{"downloadUrl":"http://example.com/user1.bin","digest":"abc","name":"user1.bin"}]});
    app.send(command("upgrade", alice.apikey.as_str(), json!("u1"), params.clone())).await;
    let f = dev.recv().await;
    assert_eq!(f["action"], "upgrade", "{f}");
    assert_eq!(f["params"], params, "{f}");
    assert_eq!(f["sequence"], "u1", "{f}");
    dev.send(ack(&alice, &json!("u1"))).await;
    let r = app.recv().await;
    assert_eq!(r["error"], 0, "{r}");
    assert_eq!(r["sequence"], "u1", "{r}");
    assert!(r.get("action").is_none(), "{r}");
    hub.stop().await;
}

#[tokio::test]
async fn a_device_that_is_not_connected_answers_504_at_once() {
    let hub = TestHub::start().await; // ack timeout 3 s: a 504 well before it is not a timeout
    let alice = hub.user("alice@example.com").await;
    let sam = hub.user("sam@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    hub.share(DEV, &sam).await;
    let mut app = hub.app(&alice).await;
    let mut shared = hub.app(&sam).await;
    settle(&hub, 2, 0).await;

    let started = std::time::Instant::now();
    app.send(command("update", alice.apikey.as_str(), json!("0007"), json!({"switch":"on"}))).await;
    let reply = app.recv_text().await;
    assert!(started.elapsed() < Duration::from_secs(2), "504 took {:?}", started.elapsed());
    assert!(reply.contains(r#""sequence":"0007""#), "{reply}");
    let r = parse(&reply);
    assert_eq!(r["error"], 504, "{reply}");
    assert!(r.get("action").is_none(), "{reply}");

    // A sharee is a member too: 504, not a denial.
    let mut cmd = command("query", alice.apikey.as_str(), json!(8), json!([]));
    cmd["selfApikey"] = json!(sam.apikey.as_str());
    shared.send(cmd).await;
    let r = shared.recv().await;
    assert_eq!(r["error"], 504, "{r}");
    assert_eq!(r["sequence"], 8, "{r}");
    hub.stop().await;
}

#[tokio::test]
async fn an_unanswered_command_gets_504_after_the_ack_timeout_and_a_late_ack_is_dropped() {
    let (hub, alice, mut dev, mut app) = owned(|s| s.set("ack_timeout_ms", "500")).await;
    app.send(command("update", alice.apikey.as_str(), json!("late-1"), json!({"switch":"on"}))).await;
    let f = dev.recv().await;
    assert_eq!(f["sequence"], "late-1");
    assert_eq!(hub.hub.router.device_view(&hub.hub.router.online_devices()[0]).unwrap().pending, 1);

    tokio::time::pause();
    let started = tokio::time::Instant::now();
    let reply = app.recv_text().await;
    let waited = started.elapsed();
    tokio::time::resume();
    // Paused time jumps from timer to timer, so only bounds are meaningful: not before the
    // deadline (less what passed in real time before the pause), and not at the client's WAIT.
    assert!(waited >= Duration::from_millis(400), "504 came after only {waited:?} of paused time");
    assert!(waited < Duration::from_secs(5), "504 came after {waited:?} of paused time");
    let r = parse(&reply);
    assert_eq!(r["error"], 504, "{reply}");
    assert!(reply.contains(r#""sequence":"late-1""#), "{reply}");
    assert!(r.get("action").is_none(), "{reply}");
    assert_eq!(hub.hub.router.device_view(&hub.hub.router.online_devices()[0]).unwrap().pending, 0, "the waiter is gone after the timeout");

    dev.send(ack(&alice, &json!("late-1"))).await;
    app.silent_for(300).await;
    assert_eq!(hub.hub.router.device_view(&hub.hub.router.online_devices()[0]).unwrap().pending, 0);
    assert_eq!(hub.hub.metrics.acks_late.load(Ordering::Relaxed), 1, "the late ack was seen and dropped");
    assert_eq!(hub.hub.metrics.acks_delivered.load(Ordering::Relaxed), 0);
    hub.stop().await;
}

#[tokio::test]
async fn a_device_leaving_while_a_command_waits_answers_504_promptly() {
    let (hub, alice, mut dev, mut app) = owned(|s| s).await; // ack timeout 3 s
    app.send(command("update", alice.apikey.as_str(), json!("gone"), json!({"switch":"on"}))).await;
    assert_eq!(dev.recv().await["sequence"], "gone");

    let started = std::time::Instant::now();
    drop(dev);
    let (reply, others) = next_reply(&mut app).await;
    assert!(started.elapsed() < Duration::from_secs(2), "504 took {:?}", started.elapsed());
    let r = parse(&reply);
    assert_eq!(r["error"], 504, "{reply}");
    assert_eq!(r["sequence"], "gone", "{reply}");
    // Besides the reply the owner hears only that the device went offline.
    let mut sysmsgs = others;
    if sysmsgs.is_empty() {
        sysmsgs.push(app.recv().await);
    }
    assert_eq!(sysmsgs.len(), 1, "{sysmsgs:?}");
    assert_sysmsg(&sysmsgs[0], &alice, false);
    app.silent_for(200).await;
    hub.stop().await;
}

// --- fan-out and sysmsg ----------------------------------------------------------------------

#[tokio::test]
async fn a_device_report_reaches_every_session_of_owner_and_sharee_and_no_stranger() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let sam = hub.user("sam@example.com").await;
    let eve = hub.user("eve@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    hub.share(DEV, &sam).await;
    let mut dev = hub.device(DEV).await;
    let mut listeners = vec![hub.app(&alice).await, hub.app(&alice).await, hub.app(&alice).await, hub.app(&sam).await];
    let mut stranger = hub.app(&eve).await;
    settle(&hub, 5, 1).await;

    dev.send(json!({"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"action":"update","params":{"switch":"off","fwVersion":"1.5.5","rssi":-31}}))
        .await;
    let r = dev.recv().await;
    assert_eq!(r["error"], 0, "{r}");
    assert_eq!(r["deviceid"], DEV, "{r}");
    assert_eq!(r["apikey"], alice.apikey.as_str(), "{r}");
    assert!(r.get("action").is_none(), "{r}");

    for (i, l) in listeners.iter_mut().enumerate() {
        let t = l.recv_text().await;
        let v = parse(&t);
        assert_eq!(v["action"], "update", "listener {i}: {t}");
        assert_eq!(v["userAgent"], "device", "listener {i}: {t}");
        assert_eq!(v["deviceid"], DEV, "listener {i}: {t}");
        assert_eq!(v["apikey"], alice.apikey.as_str(), "listener {i}: {t}");
        assert_eq!(v["params"], json!({"switch":"off","fwVersion":"1.5.5","rssi":-31}), "listener {i}: {t}");
    }
    stranger.silent_for(300).await;
    for l in &mut listeners {
        l.silent_for(50).await;
    }
    hub.stop().await;
}

#[tokio::test]
async fn a_successful_update_is_echoed_to_the_other_sessions_but_not_the_sender() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let sam = hub.user("sam@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    hub.share(DEV, &sam).await;
    let mut dev = hub.device(DEV).await;
    let mut sender = hub.app(&alice).await;
    let mut other = hub.app(&alice).await;
    let mut sharee = hub.app(&sam).await;
    settle(&hub, 3, 1).await;

    sender.send(command("update", alice.apikey.as_str(), json!("e1"), json!({"switch":"on"}))).await;
    dev.recv().await;
    dev.send(ack(&alice, &json!("e1"))).await;
    let reply = sender.recv_text().await;
    assert!(!reply.contains("action"), "{reply}");
    assert_eq!(parse(&reply)["error"], 0);
    for l in [&mut other, &mut sharee] {
        let t = l.recv_text().await;
        assert!(t.contains(r#""params":{"switch":"on"}"#), "{t}");
        let v = parse(&t);
        assert_eq!(v["action"], "update", "{t}");
        assert_eq!(v["userAgent"], "app", "{t}");
        assert_eq!(v["deviceid"], DEV, "{t}");
    }
    sender.silent_for(300).await;

    // A refused update (device acks with an error) is not echoed.
    sender.send(command("update", alice.apikey.as_str(), json!("e2"), json!({"switch":"off"}))).await;
    dev.recv().await;
    let mut refused = ack(&alice, &json!("e2"));
    refused["error"] = json!(409);
    dev.send(refused).await;
    assert_eq!(sender.recv().await["error"], 409);
    other.silent_for(200).await;
    sharee.silent_for(50).await;
    hub.stop().await;
}

#[tokio::test]
async fn the_owner_hears_sysmsg_when_the_device_comes_and_goes() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let mut app = hub.app(&alice).await;
    settle(&hub, 1, 0).await;

    let mut dev = hub.device(DEV).await;
    assert_sysmsg(&app.recv().await, &alice, true);
    dev.ws.close(None).await.unwrap();
    assert_sysmsg(&app.recv().await, &alice, false);
    app.silent_for(200).await;
    hub.stop().await;
}

// --- sharing and access control --------------------------------------------------------------

#[tokio::test]
async fn a_sharee_controls_the_shared_device_with_the_owners_apikey_and_self_apikey() {
    let (hub, alice, mut dev, _app) = owned(|s| s).await;
    let sam = hub.user("sam@example.com").await;
    hub.share(DEV, &sam).await;
    let mut shared = hub.app(&sam).await;
    settle(&hub, 2, 1).await;

    let mut cmd = command("update", alice.apikey.as_str(), json!("s1"), json!({"switch":"on"}));
    cmd["selfApikey"] = json!(sam.apikey.as_str());
    shared.send(cmd).await;
    let f = dev.recv().await;
    assert_eq!(f["action"], "update", "{f}");
    assert_eq!(f["apikey"], alice.apikey.as_str(), "the device hears its owner's apikey: {f}");
    dev.send(ack(&alice, &json!("s1"))).await;
    let r = shared.recv().await;
    assert_eq!(r["error"], 0, "{r}");
    assert_eq!(r["sequence"], "s1", "{r}");

    let mut q = command("query", alice.apikey.as_str(), json!("s2"), json!(["switch"]));
    q["selfApikey"] = json!(sam.apikey.as_str());
    shared.send(q).await;
    assert_eq!(dev.recv().await["action"], "query");
    let mut a = ack(&alice, &json!("s2"));
    a["params"] = json!({"switch":"on"});
    dev.send(a).await;
    let r = shared.recv().await;
    assert_eq!(r["error"], 0, "{r}");
    assert_eq!(r["params"], json!({"switch":"on"}), "{r}");
    hub.stop().await;
}

#[tokio::test]
async fn a_stranger_is_refused_with_406_whatever_apikey_it_claims() {
    let (hub, alice, mut dev, mut owner_app) = owned(|s| s).await;
    let eve = hub.user("eve@example.com").await;
    let mut stranger = hub.app(&eve).await;
    settle(&hub, 2, 1).await;

    let claims = [Some(alice.apikey.as_str()), Some(eve.apikey.as_str()), Some(""), None];
    let mut n = 0;
    for action in ["update", "query"] {
        for claim in claims {
            n += 1;
            let params = if action == "update" { json!({"switch":"on"}) } else { json!(["switch"]) };
            let mut cmd = command(action, claim.unwrap_or(""), json!(format!("x{n}")), params);
            if claim.is_none() {
                cmd.as_object_mut().unwrap().remove("apikey");
            }
            stranger.send(cmd).await;
            let reply = stranger.recv_text().await;
            assert!(reply.contains(&format!(r#""sequence":"x{n}""#)), "{action} {claim:?}: {reply}");
            assert_eq!(parse(&reply)["error"], 406, "{action} {claim:?}: {reply}");
        }
    }
    dev.silent_for(300).await;
    owner_app.silent_for(50).await;
    assert_eq!(hub.hub.metrics.commands_routed.load(Ordering::Relaxed), 0);

    // Offline: still a denial, not a 504 that would tell the stranger the device exists.
    drop(dev);
    assert_sysmsg(&owner_app.recv().await, &alice, false);
    settle(&hub, 2, 0).await;
    stranger.send(command("update", alice.apikey.as_str(), json!(99), json!({"switch":"on"}))).await;
    let reply = stranger.recv_text().await;
    assert!(reply.contains(r#""sequence":99"#), "{reply}");
    assert_eq!(parse(&reply)["error"], 406, "{reply}");
    hub.stop().await;
}

#[tokio::test]
async fn a_self_apikey_that_is_not_the_sessions_user_is_refused() {
    let (hub, alice, mut dev, mut app) = owned(|s| s).await;
    let sam = hub.user("sam@example.com").await;
    hub.share(DEV, &sam).await;
    let mut shared = hub.app(&sam).await;
    settle(&hub, 2, 1).await;

    // The owner's session claiming to be the sharee, and the sharee claiming to be the owner.
    let mut cmd = command("update", alice.apikey.as_str(), json!("p1"), json!({"switch":"on"}));
    cmd["selfApikey"] = json!(sam.apikey.as_str());
    app.send(cmd).await;
    let r = app.recv().await;
    assert_eq!(r["error"], 406, "{r}");
    assert_eq!(r["sequence"], "p1", "{r}");

    let mut cmd = command("query", alice.apikey.as_str(), json!("p2"), json!([]));
    cmd["selfApikey"] = json!(alice.apikey.as_str());
    shared.send(cmd).await;
    let r = shared.recv().await;
    assert_eq!(r["error"], 406, "{r}");
    assert_eq!(r["sequence"], "p2", "{r}");
    dev.silent_for(300).await;
    hub.stop().await;
}

#[tokio::test]
async fn two_apps_using_the_same_sequence_each_get_their_own_ack() {
    let (hub, alice, mut dev, mut first) = owned(|s| s).await;
    let sam = hub.user("sam@example.com").await;
    hub.share(DEV, &sam).await;
    let mut second = hub.app(&sam).await;
    settle(&hub, 2, 1).await;

    first.send(command("update", alice.apikey.as_str(), json!("7"), json!({"from":"first"}))).await;
    assert_eq!(dev.recv().await["params"], json!({"from":"first"}));
    let mut cmd = command("update", alice.apikey.as_str(), json!("7"), json!({"from":"second"}));
    cmd["selfApikey"] = json!(sam.apikey.as_str());
    second.send(cmd).await;
    assert_eq!(dev.recv().await["params"], json!({"from":"second"}));
    assert_eq!(hub.hub.router.device_view(&hub.hub.router.online_devices()[0]).unwrap().pending, 2);

    for n in [1, 2] {
        let mut a = ack(&alice, &json!("7"));
        a["params"] = json!({ "ack": n });
        dev.send(a).await;
    }
    // Each app: exactly one ack (first in, first acked) and the echo of the other's update.
    for (app, mine, theirs, other) in [(&mut first, 1, "second", "first"), (&mut second, 2, "first", "second")] {
        let mut frames = vec![app.recv().await, app.recv().await];
        frames.sort_by_key(|f| f.get("action").is_some());
        let (reply, echo) = (&frames[0], &frames[1]);
        assert!(reply.get("action").is_none(), "{other}: {frames:?}");
        assert_eq!(reply["error"], 0, "{other}: {reply}");
        assert_eq!(reply["sequence"], "7", "{other}: {reply}");
        assert_eq!(reply["params"], json!({ "ack": mine }), "{other}: {reply}");
        assert_eq!(echo["action"], "update", "{other}: {echo}");
        assert_eq!(echo["params"], json!({ "from": theirs }), "{other}: {echo}");
    }
    first.silent_for(200).await;
    second.silent_for(50).await;
    assert_eq!(hub.hub.router.device_view(&hub.hub.router.online_devices()[0]).unwrap().pending, 0);
    hub.stop().await;
}

// --- device replacement ----------------------------------------------------------------------

#[tokio::test]
async fn a_second_registration_replaces_the_device_connection_without_an_offline_notice() {
    let (hub, alice, mut old, mut app) = owned(|s| s).await;
    let mut new = hub.device(DEV).await;

    let close = old.recv_close().await.expect("the replaced connection gets a close frame");
    assert_eq!(close.code, CloseCode::Normal, "{close:?}");
    assert_sysmsg(&app.recv().await, &alice, true);
    // The old session has ended and only the new link is left.
    settle(&hub, 1, 1).await;
    assert_eq!(hub.hub.metrics.devices_replaced.load(Ordering::Relaxed), 1);

    app.send(command("update", alice.apikey.as_str(), json!("r1"), json!({"switch":"on"}))).await;
    assert_eq!(new.recv().await["sequence"], "r1");
    new.send(ack(&alice, &json!("r1"))).await;
    let r = app.recv().await;
    assert_eq!(r["error"], 0, "{r}");
    assert_eq!(r["sequence"], "r1", "{r}");
    app.silent_for(300).await;
    hub.stop().await;
}

// --- device-side requests --------------------------------------------------------------------

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, checked by hand (`regex` is not a dependency).
fn is_iso_utc_millis(s: &str) -> bool {
    let shape = "0000-00-00T00:00:00.000Z";
    s.len() == shape.len() && s.bytes().zip(shape.bytes()).all(|(c, p)| if p == b'0' { c.is_ascii_digit() } else { c == p })
}

fn now_iso() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    time::OffsetDateTime::now_utc().format(&format).unwrap()
}

#[tokio::test]
async fn date_is_answered_in_iso8601_utc_with_milliseconds() {
    let (hub, alice, mut dev, _app) = owned(|s| s).await;
    let before = now_iso();
    dev.send(json!({"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"action":"date"})).await;
    let r = dev.recv().await;
    let after = now_iso();
    assert_eq!(r["error"], 0, "{r}");
    assert_eq!(r["deviceid"], DEV, "{r}");
    assert_eq!(r["apikey"], alice.apikey.as_str(), "{r}");
    let date = r["date"].as_str().unwrap_or_else(|| panic!("no date: {r}"));
    assert!(is_iso_utc_millis(date), "{date}");
    assert!(before.as_str() <= &date[..19] && &date[..19] <= after.as_str(), "{before} <= {date} <= {after}");
    hub.stop().await;
}

#[tokio::test]
async fn a_device_query_is_answered_from_stored_params() {
    let (hub, alice, mut dev, _app) = owned(|s| s).await;
    let q = |params: Option<Value>| {
        let mut f = json!({"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"action":"query"});
        if let Some(p) = params {
            f["params"] = p;
        }
        f
    };
    // Fresh device: nothing stored, the answer is the number 0.
    dev.send(q(Some(json!(["timers", "pulses"])))).await;
    let t = dev.recv_text().await;
    assert!(t.contains(r#""params":0"#), "{t}");
    assert_eq!(parse(&t)["error"], 0, "{t}");

    dev.send(
        json!({"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"action":"update","params":{"switch":"on","rssi":-31}}),
    )
    .await;
    assert_eq!(dev.recv().await["error"], 0);
    dev.send(json!({"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"action":"update","params":{"switch":"off"}})).await;
    assert_eq!(dev.recv().await["error"], 0);

    dev.send(q(Some(json!(["switch", "timers"])))).await;
    let r = dev.recv().await;
    assert_eq!(r["params"], json!({"switch":"off"}), "{r}");
    dev.send(q(Some(json!([])))).await;
    assert_eq!(dev.recv().await["params"], json!({"switch":"off","rssi":-31}));
    dev.send(q(None)).await;
    assert_eq!(dev.recv().await["params"], json!({"switch":"off","rssi":-31}));
    dev.send(q(Some(json!(["timers"])))).await;
    let t = dev.recv_text().await;
    assert!(t.contains(r#""params":0"#), "{t}");
    hub.stop().await;
}

#[tokio::test]
async fn reported_state_is_saved_and_survives_a_stop() {
    let (mut hub, alice, mut dev, app) = owned(|s| s).await;
    dev.send(
        json!({"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"action":"update","params":{"switch":"on","rssi":-40}}),
    )
    .await;
    assert_eq!(dev.recv().await["error"], 0);
    drop((dev, app));

    // `stop` removes the hub's data directory and database; keep them to reopen the store.
    let kept = hub.keep_store();
    hub.stop().await;
    let store = kept.open().await;
    let record = store.device(DEV).await.unwrap().expect("device record");
    let params: Value = serde_json::from_str(&record.params).unwrap();
    assert_eq!(params, json!({"switch":"on","rssi":-40}));
    store.close().await;
}

// --- heartbeats ------------------------------------------------------------------------------

#[tokio::test]
async fn ping_is_answered_with_pong_for_apps_and_devices() {
    let (hub, _alice, mut dev, mut app) = owned(|s| s).await;
    for c in [&mut app, &mut dev] {
        c.send_text("ping").await;
        assert_eq!(c.recv_text().await, "pong");
        // Older firmware: a WebSocket Ping control frame gets a Pong.
        c.ws.send(Message::Ping(b"hb".to_vec().into())).await.unwrap();
        match tokio::time::timeout(common::WAIT, c.ws.next()).await.unwrap() {
            Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"hb"),
            other => panic!("expected a Pong, got {other:?}"),
        }
    }
    hub.stop().await;
}

#[tokio::test]
async fn a_silent_device_is_dropped_after_its_heartbeat_grace_while_a_pinging_app_stays() {
    let (hub, alice, mut dev, app) = owned(|s| s.set("hb_interval_secs", "5").set("hb_grace_secs", "1")).await;
    let (mut tx, mut rx) = app.ws.split();

    tokio::time::pause();
    let started = tokio::time::Instant::now();
    // Pings on a fixed 2 s grid of paused time, whatever else the clock jumps to.
    let mut tick = tokio::time::interval_at(started + Duration::from_secs(2), Duration::from_secs(2));
    let mut pongs = 0;
    let offline_after = loop {
        tokio::select! {
            _ = tick.tick() => {
                assert!(started.elapsed() < Duration::from_secs(30), "no offline notice after {:?}", started.elapsed());
                tx.send(Message::Text("ping".into())).await.unwrap();
            }
            frame = rx.next() => match frame {
                Some(Ok(Message::Text(t))) if t.as_str() == "pong" => pongs += 1,
                Some(Ok(Message::Text(t))) => {
                    let v = parse(t.as_str());
                    assert_sysmsg(&v, &alice, false);
                    break started.elapsed();
                }
                other => panic!("the app session ended or misbehaved: {other:?}"),
            },
        }
    };
    // Still alive: one more ping after the device is gone.
    tx.send(Message::Text("ping".into())).await.unwrap();
    let frame = tokio::time::timeout(common::WAIT, rx.next()).await.expect("pong");
    assert!(matches!(&frame, Some(Ok(Message::Text(t))) if t.as_str() == "pong"), "{frame:?}");
    tokio::time::resume();

    assert!(offline_after >= Duration::from_secs(6), "closed after {offline_after:?}, before hbInterval + grace");
    assert!(offline_after < Duration::from_secs(10), "closed only after {offline_after:?}");
    assert!(pongs >= 2, "the app kept pinging: {pongs} pongs");
    let close = dev.recv_close().await.expect("the hub closes the silent device");
    assert_eq!(close.code, CloseCode::Normal, "{close:?}");
    assert_eq!(hub.hub.metrics.heartbeat_expired.load(Ordering::Relaxed), 1, "only the device expired");
    assert_eq!(hub.hub.metrics.app_sessions.load(Ordering::Relaxed), 1);
    assert!(hub.hub.router.online_devices().is_empty());
    hub.stop().await;
}
