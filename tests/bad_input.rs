//! Bad input through real sockets: every bad frame, handshake or peer is answered as the protocol
//! says, and a second, healthy app + device pair on the same hub keeps working throughout.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{APPID, Client, TestHub, TestUser, wait_until};
use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const DEV: &str = "1000000001";
const HEALTHY_DEV: &str = "2000000002";

// --- helpers ---------------------------------------------------------------------------------

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Bob with his own device and one app session: the pair that must not be disturbed.
struct Healthy {
    bob: TestUser,
    app: Client,
    dev: Client,
    n: u32,
}

impl Healthy {
    async fn start(hub: &TestHub) -> Healthy {
        let bob = hub.user("bob@example.com").await;
        hub.device_record(HEALTHY_DEV, Some(&bob)).await;
        let dev = hub.device(HEALTHY_DEV).await;
        let app = hub.app(&bob).await;
        let m = hub.hub.metrics.clone();
        wait_until("the healthy pair is attached", || {
            m.app_sessions.load(Ordering::Relaxed) >= 1 && hub.hub.router.online_devices().iter().any(|d| d.as_str() == HEALTHY_DEV)
        })
        .await;
        Healthy { bob, app, dev, n: 0 }
    }

    /// An update and its ack, end to end; nothing else arrived on either socket meanwhile.
    async fn round_trip(&mut self) {
        self.n += 1;
        let seq = format!("healthy-{}", self.n);
        self.app
            .send(json!({"action":"update","deviceid":HEALTHY_DEV,"apikey":self.bob.apikey.as_str(),"userAgent":"app","sequence":seq,"params":{"switch":"on"}}))
            .await;
        let f = self.dev.recv().await;
        assert_eq!(f["action"], "update", "healthy device got {f}");
        assert_eq!(f["sequence"], seq.as_str(), "healthy device got {f}");
        self.dev
            .send(json!({"error":0,"userAgent":"device","apikey":self.bob.apikey.as_str(),"deviceid":HEALTHY_DEV,"sequence":seq}))
            .await;
        let r = self.app.recv().await;
        assert_eq!(r["error"], 0, "healthy app got {r}");
        assert_eq!(r["sequence"], seq.as_str(), "healthy app got {r}");
        assert!(r.get("action").is_none(), "healthy app got {r}");
    }
}

async fn assert_alive(c: &mut Client, what: &str) {
    c.send_text("ping").await;
    assert_eq!(c.recv_text().await, "pong", "{what}: the session should still be up");
}

/// An error frame with `code`, and the sequence echoed as `raw` (or absent).
fn assert_error(text: &str, code: i64, sequence: Option<&str>, what: &str) {
    let v = parse(text);
    assert_eq!(v["error"], code, "{what}: {text}");
    assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{what}: no reason in {text}");
    assert!(v.get("action").is_none(), "{what}: {text}");
    match sequence {
        Some(raw) => assert!(text.contains(&format!(r#""sequence":{raw}"#)), "{what}: sequence {raw} not echoed in {text}"),
        None => assert!(v.get("sequence").is_none(), "{what}: {text}"),
    }
}

async fn expect_close(c: &mut Client, code: CloseCode, what: &str) {
    let close = c.recv_close().await.unwrap_or_else(|| panic!("{what}: the stream ended without a close frame"));
    assert_eq!(close.code, code, "{what}: {close:?}");
}

/// Alice owning DEV (registered) with an app session, plus the healthy pair.
async fn hub_with_alice() -> (TestHub, TestUser, Client, Client, Healthy) {
    let hub = TestHub::start().await;
    let healthy = Healthy::start(&hub).await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let dev = hub.device(DEV).await;
    let app = hub.app(&alice).await;
    let m = hub.hub.metrics.clone();
    wait_until("alice's sessions are attached", || {
        m.app_sessions.load(Ordering::Relaxed) == 2 && m.device_sessions.load(Ordering::Relaxed) == 2
    })
    .await;
    (hub, alice, app, dev, healthy)
}

const BIG: usize = 70 * 1024;

// --- bad frames in a session -----------------------------------------------------------------

#[tokio::test]
async fn bad_app_frames_get_400_and_the_session_stays_up() {
    let (hub, alice, mut app, mut dev, mut healthy) = hub_with_alice().await;
    let key = alice.apikey.as_str();
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("malformed JSON", r#"{"action":"update","deviceid":"#.to_owned(), None),
        ("not an object", "[1,2,3]".to_owned(), None),
        ("deviceid a number", json!({"action":"update","deviceid":5,"apikey":key,"sequence":"1","params":{}}).to_string(), None),
        ("sequence an object", json!({"action":"update","deviceid":DEV,"apikey":key,"sequence":{},"params":{}}).to_string(), None),
        ("sequence a bool", json!({"action":"update","deviceid":DEV,"apikey":key,"sequence":true,"params":{}}).to_string(), None),
        ("action a number", json!({"action":1,"deviceid":DEV,"sequence":"2","params":{}}).to_string(), None),
        (
            "update without deviceid",
            json!({"action":"update","apikey":key,"sequence":"3","params":{"switch":"on"}}).to_string(),
            Some(r#""3""#),
        ),
        (
            "update with empty deviceid",
            json!({"action":"update","deviceid":"","sequence":"4","params":{"switch":"on"}}).to_string(),
            Some(r#""4""#),
        ),
        ("update without sequence", json!({"action":"update","deviceid":DEV,"apikey":key,"params":{"switch":"on"}}).to_string(), None),
        ("update without params", json!({"action":"update","deviceid":DEV,"apikey":key,"sequence":5}).to_string(), Some("5")),
        ("update with string params", json!({"action":"update","deviceid":DEV,"sequence":6,"params":"on"}).to_string(), Some("6")),
        ("query with object params", json!({"action":"query","deviceid":DEV,"sequence":7,"params":{"a":1}}).to_string(), Some("7")),
        ("unknown action", json!({"action":"explode","deviceid":DEV,"sequence":"8","params":{}}).to_string(), Some(r#""8""#)),
        ("no action", json!({"deviceid":DEV,"sequence":"9","params":{}}).to_string(), Some(r#""9""#)),
    ];
    let before = hub.hub.metrics.frames_rejected.load(Ordering::Relaxed);
    for (what, text, seq) in &cases {
        app.send_text(text).await;
        assert_error(&app.recv_text().await, 400, *seq, what);
        assert_alive(&mut app, what).await;
    }
    app.ws.send(Message::Binary(vec![1u8, 2, 3].into())).await.unwrap();
    assert_error(&app.recv_text().await, 400, None, "binary frame");
    assert_alive(&mut app, "binary frame").await;

    assert_eq!(hub.hub.metrics.frames_rejected.load(Ordering::Relaxed) - before, cases.len() as u64 + 1);
    dev.silent_for(200).await;
    assert_eq!(hub.hub.metrics.commands_routed.load(Ordering::Relaxed), 0);
    healthy.round_trip().await;
    healthy.app.silent_for(100).await;
    hub.stop().await;
}

#[tokio::test]
async fn bad_device_frames_get_400_and_the_session_stays_up() {
    let (hub, alice, mut app, mut dev, mut healthy) = hub_with_alice().await;
    let key = alice.apikey.as_str();
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        ("malformed JSON", "{\"action\":".to_owned(), None),
        ("deviceid a number", json!({"action":"update","deviceid":5,"params":{"switch":"on"}}).to_string(), None),
        ("sequence an object", json!({"action":"update","deviceid":DEV,"sequence":{},"params":{"switch":"on"}}).to_string(), None),
        ("update without params", json!({"action":"update","deviceid":DEV,"apikey":key,"sequence":"1"}).to_string(), Some(r#""1""#)),
        ("update with list params", json!({"action":"update","deviceid":DEV,"apikey":key,"params":[1]}).to_string(), None),
        (
            "query with object params",
            json!({"action":"query","deviceid":DEV,"apikey":key,"sequence":2,"params":{"a":1}}).to_string(),
            Some("2"),
        ),
        ("unknown action", json!({"action":"explode","deviceid":DEV,"apikey":key,"sequence":3}).to_string(), Some("3")),
        ("neither action nor error", json!({"deviceid":DEV,"apikey":key,"sequence":4}).to_string(), Some("4")),
    ];
    for (what, text, seq) in &cases {
        dev.send_text(text).await;
        assert_error(&dev.recv_text().await, 400, *seq, what);
        assert_alive(&mut dev, what).await;
    }
    dev.ws.send(Message::Binary(vec![0u8; 16].into())).await.unwrap();
    assert_error(&dev.recv_text().await, 400, None, "binary frame");
    assert_alive(&mut dev, "binary frame").await;

    // No bad report was fanned out; the device still routes.
    app.silent_for(200).await;
    app.send(json!({"action":"update","deviceid":DEV,"apikey":key,"sequence":"ok","params":{"switch":"on"}})).await;
    assert_eq!(dev.recv().await["sequence"], "ok");
    healthy.round_trip().await;
    hub.stop().await;
}

#[tokio::test]
async fn a_frame_over_the_size_limit_closes_with_1009() {
    let (hub, alice, mut app, mut dev, mut healthy) = hub_with_alice().await;
    let big = |c: char| {
        json!({"action":"update","deviceid":DEV,"apikey":alice.apikey.as_str(),"sequence":"big","params":{"blob":c.to_string().repeat(BIG)}}).to_string()
    };

    // Just under the limit is fine.
    let fits = json!({"action":"update","deviceid":DEV,"sequence":"fits","params":{"blob":"x".repeat(60 * 1024)}}).to_string();
    dev.send_text(&fits).await;
    assert_eq!(dev.recv().await["error"], 0);
    assert!(app.recv().await["params"]["blob"].as_str().is_some_and(|b| b.len() == 60 * 1024));

    app.send_text(&big('a')).await;
    expect_close(&mut app, CloseCode::Size, "app").await;
    dev.send_text(&big('d')).await;
    expect_close(&mut dev, CloseCode::Size, "device").await;
    let mut raw = hub.raw().await;
    raw.send_text(&big('r')).await;
    expect_close(&mut raw, CloseCode::Size, "before the handshake").await;

    healthy.round_trip().await;
    hub.stop().await;
}

// --- handshakes ------------------------------------------------------------------------------

#[tokio::test]
async fn a_first_frame_that_is_not_a_handshake_gets_an_error_and_a_close() {
    let hub = TestHub::start().await;
    let mut healthy = Healthy::start(&hub).await;
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        (
            "update",
            json!({"action":"update","deviceid":HEALTHY_DEV,"apikey":healthy.bob.apikey.as_str(),"sequence":"1","params":{"switch":"off"}})
                .to_string(),
            Some(r#""1""#),
        ),
        ("query", json!({"action":"query","deviceid":HEALTHY_DEV,"sequence":2}).to_string(), Some("2")),
        ("no action", json!({"deviceid":HEALTHY_DEV}).to_string(), None),
        ("ping", "ping".to_owned(), None),
        ("garbage", "hello {".to_owned(), None),
    ];
    for (what, text, seq) in &cases {
        let mut c = hub.raw().await;
        c.send_text(text).await;
        assert_error(&c.recv_text().await, 400, *seq, what);
        expect_close(&mut c, CloseCode::Policy, what).await;
    }
    let mut c = hub.raw().await;
    c.ws.send(Message::Binary(b"{\"action\":\"userOnline\"}".to_vec().into())).await.unwrap();
    assert_error(&c.recv_text().await, 400, None, "binary first frame");
    expect_close(&mut c, CloseCode::Policy, "binary first frame").await;

    healthy.dev.silent_for(200).await;
    assert_eq!(hub.hub.metrics.app_sessions.load(Ordering::Relaxed), 1);
    healthy.round_trip().await;
    hub.stop().await;
}

fn user_online(at: &str, apikey: &str, appid: &str) -> Value {
    json!({"action":"userOnline","version":8,"ts":1,"at":at,"userAgent":"app","apikey":apikey,"appid":appid,"nonce":"abcd1234","sequence":"1"})
}

#[tokio::test]
async fn user_online_refusals() {
    let hub = TestHub::start().await;
    let mut healthy = Healthy::start(&hub).await;
    let alice = hub.user("alice@example.com").await;
    let bob = healthy.bob.clone();
    let expired = hub.hub.store.issue_tokens(&alice.apikey, APPID, Duration::ZERO, Duration::from_secs(60)).await.unwrap();
    let issued = std::time::Instant::now();

    let mut missing_at = user_online("", alice.apikey.as_str(), APPID);
    missing_at.as_object_mut().unwrap().remove("at");
    let cases = [
        ("unknown token", user_online("0123456789abcdef0123456789abcdef01234567", alice.apikey.as_str(), APPID), 401),
        ("apikey of another user", user_online(&alice.at, bob.apikey.as_str(), APPID), 401),
        ("token of another app", user_online(&alice.at, alice.apikey.as_str(), "another-app"), 407),
        ("no at", missing_at, 400),
    ];
    for (what, frame, code) in cases {
        let mut c = hub.raw().await;
        c.send(frame).await;
        assert_error(&c.recv_text().await, code, Some(r#""1""#), what);
        expect_close(&mut c, CloseCode::Policy, what).await;
    }

    // Expiry has a one-second resolution: wait until the token is certainly past it.
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(issued.elapsed())).await;
    let mut c = hub.raw().await;
    c.send(user_online(&expired.at, alice.apikey.as_str(), APPID)).await;
    assert_error(&c.recv_text().await, 402, Some(r#""1""#), "expired token");
    expect_close(&mut c, CloseCode::Policy, "expired token").await;

    assert_eq!(hub.hub.metrics.app_sessions.load(Ordering::Relaxed), 1, "no refused session was attached");
    healthy.round_trip().await;
    hub.stop().await;
}

fn register(action: &str, id: &str, key: &str) -> Value {
    json!({"userAgent":"device","apikey":key,"deviceid":id,"action":action,"version":2,"romVersion":"1.0","model":"EMU","ts":1})
}

#[tokio::test]
async fn register_refusals_and_tmp_reg() {
    let hub = TestHub::start().await;
    let mut healthy = Healthy::start(&hub).await;
    hub.device_record(DEV, None).await; // no owner

    let mut c = hub.raw().await;
    c.send(register("register", "9999999999", "key-9999999999")).await;
    let t = c.recv_text().await;
    assert_eq!(t, r#"{"error":404,"reason":"Not Found","deviceid":"9999999999","config":{"regInterval":15},"actionName":"register"}"#);
    expect_close(&mut c, CloseCode::Policy, "unknown device").await;

    // Wrong factory key, for the unowned device and for bob's device.
    for id in [DEV, HEALTHY_DEV] {
        let mut c = hub.raw().await;
        c.send(register("register", id, "key-wrong")).await;
        let v = parse(&c.recv_text().await);
        assert_eq!(v["error"], 403, "{v}");
        assert_eq!(v["deviceid"], id, "{v}");
        assert_eq!(v["config"], json!({"regInterval":15}), "{v}");
        assert_eq!(v["actionName"], "register", "{v}");
        expect_close(&mut c, CloseCode::Policy, "wrong factory key").await;
    }

    // Not bound to anyone: register is refused, tmpReg is accepted.
    let mut c = hub.raw().await;
    c.send(register("register", DEV, &format!("key-{DEV}"))).await;
    let v = parse(&c.recv_text().await);
    assert_eq!(v["error"], 403, "{v}");
    assert_eq!(v["actionName"], "register", "{v}");
    expect_close(&mut c, CloseCode::Policy, "unowned register").await;

    let mut c = hub.raw().await;
    c.send(register("tmpReg", DEV, &format!("key-{DEV}"))).await;
    let v = parse(&c.recv_text().await);
    assert_eq!(v["error"], 0, "{v}");
    assert_eq!(v["deviceid"], DEV, "{v}");
    assert_eq!(v["config"]["hb"], 1, "{v}");
    assert!(v["config"]["hbInterval"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert_alive(&mut c, "tmpReg").await;

    // A register without a deviceid is a bad frame.
    let mut r = hub.raw().await;
    let mut frame = register("register", DEV, "k");
    frame.as_object_mut().unwrap().remove("deviceid");
    r.send(frame).await;
    assert_error(&r.recv_text().await, 400, None, "register without deviceid");
    expect_close(&mut r, CloseCode::Policy, "register without deviceid").await;

    // The refused attempt on bob's device did not disturb its live connection.
    healthy.round_trip().await;
    healthy.app.silent_for(100).await;
    hub.stop().await;
}

#[tokio::test]
async fn a_device_speaking_for_another_deviceid_gets_406_and_stays_up() {
    let (hub, alice, mut app, mut dev, mut healthy) = hub_with_alice().await;
    let bob_key = healthy.bob.apikey.as_str().to_owned();
    dev.send(
        json!({"userAgent":"device","apikey":bob_key,"deviceid":HEALTHY_DEV,"action":"update","sequence":"s","params":{"switch":"off"}}),
    )
    .await;
    assert_error(&dev.recv_text().await, 406, Some(r#""s""#), "update for another device");
    // An ack in another device's name does not complete that device's pending command.
    healthy.app.send(json!({"action":"update","deviceid":HEALTHY_DEV,"apikey":bob_key,"sequence":"b1","params":{"switch":"on"}})).await;
    assert_eq!(healthy.dev.recv().await["sequence"], "b1");
    dev.send(json!({"error":0,"deviceid":HEALTHY_DEV,"apikey":bob_key,"sequence":"b1"})).await;
    assert_error(&dev.recv_text().await, 406, Some(r#""b1""#), "ack for another device");
    assert_alive(&mut dev, "after 406").await;
    healthy.app.silent_for(200).await;
    app.silent_for(50).await;
    let bob_link = hub.hub.router.device_view(&switchyard::ids::DeviceId::new(HEALTHY_DEV)).unwrap();
    assert_eq!(bob_link.state_bytes, 0, "bob's device state was not touched");
    assert_eq!(bob_link.pending, 1, "bob's command still waits for bob's device");
    healthy.dev.send(json!({"error":0,"deviceid":HEALTHY_DEV,"apikey":bob_key,"sequence":"b1"})).await;
    let r = healthy.app.recv().await;
    assert_eq!((r["error"].as_i64(), r["sequence"].as_str()), (Some(0), Some("b1")), "{r}");
    healthy.round_trip().await;

    // Alice's device still works for its own id.
    dev.send(json!({"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"action":"update","params":{"switch":"on"}})).await;
    assert_eq!(dev.recv().await["error"], 0);
    assert_eq!(app.recv().await["params"], json!({"switch":"on"}));
    hub.stop().await;
}

#[tokio::test]
async fn a_socket_that_sends_no_handshake_is_closed_at_the_deadline() {
    let hub = TestHub::start_with(|s| s.set("handshake_timeout_ms", "300")).await;
    let mut healthy = Healthy::start(&hub).await;
    let mut c = hub.raw().await;
    let started = std::time::Instant::now();
    expect_close(&mut c, CloseCode::Policy, "no handshake").await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(3), "closed after {waited:?}");
    healthy.round_trip().await;
    hub.stop().await;
}

// --- slow consumers --------------------------------------------------------------------------

#[tokio::test]
async fn a_slow_consumer_is_closed_without_holding_up_anyone_else() {
    let hub = TestHub::start_with(|s| s.set("outbox_capacity", "4")).await;
    let mut healthy = Healthy::start(&hub).await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let mut dev = hub.device(DEV).await;
    let mut slow = hub.app(&alice).await;
    let mut reader = hub.app(&alice).await;
    let m = hub.hub.metrics.clone();
    wait_until("alice's sessions are attached", || m.app_sessions.load(Ordering::Relaxed) == 3).await;

    // About 16 MB of reports: far more than loopback socket buffers hold for a reader that
    // never reads. The device and the reading app keep up, one report at a time.
    let blob = "x".repeat(8 * 1024);
    let mut closed_at = None;
    for i in 0..2000 {
        dev.send(
            json!({"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"action":"update","params":{"n":i,"blob":blob}}),
        )
        .await;
        assert_eq!(dev.recv().await["error"], 0, "report {i}");
        let r = reader.recv().await;
        assert_eq!(r["params"]["n"], i, "the reading session got every report in order");
        if m.app_sessions.load(Ordering::Relaxed) == 2 {
            closed_at = Some(i);
            break;
        }
    }
    // The hub gave up on the slow session without waiting for it to read.
    let closed_at = closed_at.unwrap_or_else(|| {
        panic!("the slow session was not closed (slow consumers counted: {})", m.slow_consumers.load(Ordering::Relaxed))
    });
    assert_eq!(m.slow_consumers.load(Ordering::Relaxed), 1, "closed after report {closed_at}");

    // Later reports reach the reader; the slow session, when it finally reads, ends.
    for i in 0..3 {
        dev.send(json!({"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"action":"update","params":{"after":i}})).await;
        assert_eq!(dev.recv().await["error"], 0);
        assert_eq!(reader.recv().await["params"], json!({ "after": i }));
    }
    let _ = slow.recv_close().await;
    assert_alive(&mut reader, "the reading session").await;
    healthy.round_trip().await;
    hub.stop().await;
}

// --- numbers out of range ---------------------------------------------------------------------

/// A number JSON can write but `f64` cannot hold (`1e400`) is refused at the socket, from a device
/// report or an app command, and the state the device has stays visible over REST, online and
/// offline.
#[tokio::test]
async fn a_number_out_of_range_is_refused_and_rest_keeps_showing_the_state() {
    let (hub, alice, mut app, mut dev, mut healthy) = hub_with_alice().await;
    let key = alice.apikey.as_str();
    let rest = common::rest::api(&hub, &alice);
    dev.send(json!({"action":"update","deviceid":DEV,"apikey":key,"sequence":"s1","params":{"switch":"on","power":12.5}})).await;
    assert_eq!(dev.recv().await["error"], 0);
    assert_eq!(app.recv().await["params"]["switch"], "on");

    let bad = [
        r#"{"temperature":1e400}"#,
        r#"{"temperature":-1e400}"#,
        r#"{"nested":{"list":[1,2,1e999]}}"#,
        r#"{"ok":1,"later":[{"x":-2e308}]}"#,
    ];
    for (i, params) in bad.iter().enumerate() {
        let report = format!(r#"{{"action":"update","deviceid":"{DEV}","apikey":"{key}","sequence":"bad{i}","params":{params}}}"#);
        dev.send_text(&report).await;
        assert_error(&dev.recv_text().await, 400, Some(&format!(r#""bad{i}""#)), params);
        let command = format!(r#"{{"action":"update","deviceid":"{DEV}","apikey":"{key}","sequence":"cmd{i}","params":{params}}}"#);
        app.send_text(&command).await;
        assert_error(&app.recv_text().await, 400, Some(&format!(r#""cmd{i}""#)), params);
    }
    assert_alive(&mut dev, "after the refused reports").await;
    dev.silent_for(100).await;
    app.silent_for(100).await;

    let status = rest.get("/v2/device/thing/status", &format!("type=1&id={DEV}")).await;
    assert_eq!(status.ok()["params"], json!({"switch":"on","power":12.5}), "online: {status:?}");
    // Large numbers that fit are kept as they are.
    dev.send_text(&format!(r#"{{"action":"update","deviceid":"{DEV}","apikey":"{key}","sequence":"s2","params":{{"big":1e300}}}}"#)).await;
    assert_eq!(dev.recv().await["error"], 0);
    drop(dev);
    wait_until("the device is offline", || hub.hub.router.online_devices().iter().all(|d| d.as_str() != DEV)).await;
    let status = rest.get("/v2/device/thing/status", &format!("type=1&id={DEV}")).await;
    assert_eq!(status.ok()["params"], json!({"switch":"on","power":12.5,"big":1e300}), "offline: {status:?}");
    healthy.round_trip().await;
    hub.stop().await;
}

/// State stored before out-of-range numbers were refused still shows over REST: only the value
/// that cannot be read is left out.
#[tokio::test]
async fn stored_state_with_a_number_out_of_range_shows_everything_else() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let id = switchyard::ids::DeviceId::new(DEV);
    hub.hub.store.save_params(&[(id, r#"{"switch":"on","temperature":1e400}"#.to_owned())]).await.unwrap();
    let rest = common::rest::api(&hub, &alice);
    let status = rest.get("/v2/device/thing/status", &format!("type=1&id={DEV}")).await;
    assert_eq!(status.ok()["params"], json!({"switch":"on"}), "{status:?}");
    hub.stop().await;
}

// --- found by fuzzing ---------------------------------------------------------------------------

/// Found by fuzzing (`fuzz/`, target `frame`): JSON syntax that JSON parsers refuse to read back
/// (a lone surrogate escape, a number no `f64` holds) was echoed or forwarded as received, so a
/// client got an answer it could not parse. The sequence and `d_seq` of any frame, the list params
/// of an app's command and the params of a device's ack are checked now.
#[tokio::test]
async fn values_clients_could_not_read_back_are_never_echoed_or_forwarded() {
    let (hub, alice, mut app, mut dev, mut healthy) = hub_with_alice().await;
    let key = alice.apikey.as_str();
    // The fuzzer's input, as it found it.
    app.send_text(r#"{"action":"qpdate","deviceid":"1000000001","apikey":"x","userAgent":"app","sequence":"1\ud800505608036955555555555555555553$","ts":0,"params":{"switch":"on"},"from":"app"}"#).await;
    assert_error(&app.recv_text().await, 400, None, "a lone surrogate in an app's sequence");
    dev.send_text(&format!(r#"{{"action":"update","deviceid":"{DEV}","apikey":"{key}","sequence":"\udc00","params":{{"switch":"on"}}}}"#))
        .await;
    assert_error(&dev.recv_text().await, 400, None, "a lone surrogate in a device's sequence");
    dev.send_text(&format!(r#"{{"action":"date","deviceid":"{DEV}","apikey":"{key}","d_seq":"\ud800"}}"#)).await;
    assert_error(&dev.recv_text().await, 400, None, "a lone surrogate in d_seq");
    app.send_text(&format!(r#"{{"action":"update","deviceid":"{DEV}","apikey":"{key}","sequence":"l1","params":[{{"x":1e400}}]}}"#)).await;
    assert_error(&app.recv_text().await, 400, Some(r#""l1""#), "list params with a number out of range");
    app.send_text(&format!(r#"{{"action":"query","deviceid":"{DEV}","apikey":"{key}","sequence":"q1","params":["\udfff"]}}"#)).await;
    assert_error(&app.recv_text().await, 400, Some(r#""q1""#), "query params with a lone surrogate");
    dev.silent_for(100).await;

    // An ack whose params the app could not read: the app gets the ack without them.
    app.send(json!({"action":"update","deviceid":DEV,"apikey":key,"sequence":"c1","params":{"switch":"off"}})).await;
    let command = dev.recv().await;
    assert_eq!(command["sequence"], "c1", "{command}");
    dev.send_text(&format!(r#"{{"error":0,"deviceid":"{DEV}","apikey":"{key}","sequence":"c1","params":{{"t":1e400,"s":"\ud800"}}}}"#))
        .await;
    let answer = loop {
        let text = app.recv_text().await;
        let v = parse(&text);
        if v["sequence"] == "c1" && v.get("action").is_none() {
            break v;
        }
    };
    assert_eq!(answer["error"], 0, "{answer}");
    assert!(answer.get("params").is_none(), "{answer}");
    assert_alive(&mut app, "the app").await;
    assert_alive(&mut dev, "the device").await;
    healthy.round_trip().await;
    hub.stop().await;
}
