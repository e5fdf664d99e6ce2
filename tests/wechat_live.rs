//! A WeChat user and a socket app on one device, end to end over real sockets and the fake WeChat
//! backend: a QR-bound WeChat user switches the device through `/v2/wechat/user/control` and hears
//! the result by push; an over-threshold report then reaches the WeChat user (the fake's record),
//! the owner's WebSocket session and the message centre within 100 ms. A slow or failing WeChat
//! backend slows neither reports nor commands, and failed pushes are retried a bounded number of
//! times.

mod common;
mod wechat_fake;
mod wechat_setup;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::rest::api;
use common::{Client, TestUser};
use serde_json::{Value, json};
use switchyard::clock::now_millis;
use wechat_fake::Fault;
use wechat_setup::{World, eventually, world};

const DEVICE: &str = "a100000001";
const ALARM_BUDGET: Duration = Duration::from_millis(100);

fn report(owner: &TestUser, params: Value) -> Value {
    json!({"userAgent":"device","apikey":owner.apikey.as_str(),"deviceid":DEVICE,"action":"update","params":params})
}

/// The next frame on an app session whose action is `action`, and when it arrived.
async fn next_action(app: &mut Client, action: &str) -> (Value, Instant) {
    loop {
        let f = app.recv().await;
        if f["action"] == action {
            return (f, Instant::now());
        }
    }
}

/// The owner's `alarmNotify_v2` messages, newest first.
async fn alarm_messages(w: &World) -> Vec<Value> {
    let data = api(&w.hub, &w.owner).get("/v2/message/read", "").await.ok().clone();
    data["messageList"].as_array().unwrap().iter().filter(|m| m["msgType"] == "alarmNotify_v2").cloned().collect()
}

/// A bound product, its device online, the owner's app session, WeChat user `o1` bound by QR code
/// and a rule `temperature > 30` (clear at 28).
async fn live() -> (World, Client, Client) {
    let w = world().await;
    w.device(DEVICE, "a4:cf:12:00:00:01", true).await;
    w.bind_product().await;
    let dev = w.hub.device(DEVICE).await;
    let app = w.hub.app(&w.owner).await;
    w.bind_user("o1", DEVICE).await.ok();
    let rule = json!({"deviceid":DEVICE,"rules":[{"param":"temperature","op":">","threshold":30,"clear":28}]});
    w.owner().post("/v2/device/alarm-rule", rule).await.ok();
    (w, dev, app)
}

#[tokio::test]
async fn a_wechat_user_switches_the_device_then_hears_its_alarm_with_the_owners_app_and_the_message_centre() {
    let (w, mut dev, mut app) = live().await;

    // The WeChat user's command takes the socket's path to the device.
    let control = tokio::spawn({
        let (base, client) = (w.hub.base(), w.hub.http_client());
        let body = json!({"openid":"o1","deviceid":DEVICE,"params":{"switch":"on"}}).to_string();
        let sign = switchyard::auth::sign(wechat_setup::WXSECRET, body.as_bytes());
        async move {
            let res = client
                .post(format!("{base}/v2/wechat/user/control"))
                .header("X-CK-Appid", wechat_setup::WXAPP)
                .header("Authorization", format!("Sign {sign}"))
                .body(body)
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    });
    let cmd = dev.recv().await;
    assert_eq!((cmd["action"].as_str(), cmd["params"].clone()), (Some("update"), json!({"switch":"on"})), "{cmd}");
    dev.send(json!({"error":0,"userAgent":"device","apikey":w.owner.apikey.as_str(),"deviceid":DEVICE,"sequence":cmd["sequence"]})).await;
    let (status, answer) = control.await.unwrap();
    assert_eq!((status, answer.clone()), (200, json!({"deviceid":DEVICE,"error":0,"params":{"switch":"on"}})), "{answer}");
    // The owner's app hears the change, as for any command.
    let (echo, _) = next_action(&mut app, "update").await;
    assert_eq!(echo["params"], json!({"switch":"on"}));
    // The result reached the WeChat user by push.
    let pushes = w.fake.wait_for("pushappmsg", 1, Duration::from_secs(5)).await;
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].body["push_token"], "pt-o1");
    let msg: Value = serde_json::from_str(pushes[0].body["msg"].as_str().unwrap()).unwrap();
    assert_eq!((msg["type"].as_str(), msg["error"].as_i64(), msg["params"].clone()), (Some("control"), Some(0), json!({"switch":"on"})));

    // Under the threshold: nothing.
    w.fake.clear_calls();
    dev.send(report(&w.owner, json!({"temperature": 25}))).await;
    assert_eq!(dev.recv().await["error"], 0);
    next_action(&mut app, "update").await;

    // Over it: within 100 ms the WeChat user, the owner's app session and the message centre.
    let (t0, t0_ms) = (Instant::now(), now_millis());
    dev.send(report(&w.owner, json!({"temperature": 31.5}))).await;
    let (alarm, app_at) = next_action(&mut app, "alarm").await;
    assert_eq!(
        (alarm["deviceid"].as_str(), alarm["apikey"].as_str(), alarm["params"].clone()),
        (Some(DEVICE), Some(w.owner.apikey.as_str()), json!({"param":"temperature","value":31.5,"op":">","threshold":30})),
        "{alarm}"
    );
    assert!(alarm["ts"].as_u64().is_some(), "{alarm}");
    let pushes = w.fake.wait_for("pushappmsg", 1, Duration::from_secs(2)).await;
    assert_eq!(pushes.len(), 1, "one push to the one WeChat user");
    let msg: Value = serde_json::from_str(pushes[0].body["msg"].as_str().unwrap()).unwrap();
    assert_eq!((msg["type"].as_str(), msg["params"].clone()), (Some("alarm"), alarm["params"].clone()), "{msg}");
    let filed = loop {
        let filed = alarm_messages(&w).await;
        if !filed.is_empty() {
            break filed;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no alarm in the message centre");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(filed[0]["message"]["params"], alarm["params"], "{filed:?}");
    let (to_app, to_wechat, to_centre) = (
        app_at - t0,
        pushes[0].at.saturating_duration_since(t0),
        Duration::from_millis((filed[0]["date"].as_i64().unwrap() - t0_ms).max(0) as u64),
    );
    eprintln!("alarm latency: app session {to_app:?}, WeChat push {to_wechat:?}, message centre {to_centre:?}");
    for (what, took) in [("the app session", to_app), ("the WeChat user", to_wechat), ("the message centre", to_centre)] {
        assert!(took <= ALARM_BUDGET, "{what} had the alarm after {took:?}");
    }

    // Still over, and back under the threshold but above clear: no new alarm. Cleared, then over: one more.
    for t in [35, 29, 31, 27] {
        dev.send(report(&w.owner, json!({"temperature": t}))).await;
        assert_eq!(dev.recv().await["error"], 0);
        let (f, _) = next_action(&mut app, "update").await;
        assert_eq!(f["params"]["temperature"], t);
    }
    dev.send(report(&w.owner, json!({"temperature": "30.5"}))).await;
    let (again, _) = next_action(&mut app, "alarm").await;
    assert_eq!(again["params"]["value"], "30.5");
    assert_eq!(w.fake.wait_for("pushappmsg", 2, Duration::from_secs(2)).await.len(), 2);
    assert_eq!(w.hub.hub.alarms.raised.load(Ordering::Relaxed), 2);
    w.hub.stop().await;
}

#[tokio::test]
async fn a_slow_or_failing_wechat_backend_slows_neither_reports_nor_commands() {
    let (w, mut dev, mut app) = live().await;
    // Warm the token cache, then WeChat stalls every push for 3 s.
    w.fake.fail("pushappmsg", Fault::Stall(Duration::from_secs(3)), 50);

    for round in 0..5 {
        // An alarm whose push stalls…
        let started = Instant::now();
        dev.send(report(&w.owner, json!({"temperature": 40}))).await;
        assert_eq!(dev.recv().await["error"], 0);
        next_action(&mut app, "alarm").await;
        assert!(started.elapsed() < Duration::from_millis(500), "round {round}: the alarm waited for WeChat");
        dev.send(report(&w.owner, json!({"temperature": 20}))).await;
        assert_eq!(dev.recv().await["error"], 0);
        next_action(&mut app, "update").await;

        // …and the owner's command and the WeChat user's command still go straight through.
        let started = Instant::now();
        let seq = format!("s{round}");
        app.send(json!({"action":"update","deviceid":DEVICE,"apikey":w.owner.apikey.as_str(),"selfApikey":w.owner.apikey.as_str(),
            "userAgent":"app","sequence":seq,"ts":0,"params":{"switch":"off"}}))
            .await;
        let cmd = dev.recv().await;
        dev.send(json!({"error":0,"userAgent":"device","apikey":w.owner.apikey.as_str(),"deviceid":DEVICE,"sequence":cmd["sequence"]}))
            .await;
        loop {
            let f = app.recv().await;
            if f["sequence"] == seq.as_str() && f.get("action").is_none() {
                assert_eq!(f["error"], 0);
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_millis(500), "round {round}: the command took {:?}", started.elapsed());

        let started = Instant::now();
        let control = tokio::spawn({
            let client = w.hub.http_client();
            let (base, body) = (w.hub.base(), json!({"openid":"o1","deviceid":DEVICE,"params":{"switch":"on"}}).to_string());
            let sign = switchyard::auth::sign(wechat_setup::WXSECRET, body.as_bytes());
            async move {
                client
                    .post(format!("{base}/v2/wechat/user/control"))
                    .header("X-CK-Appid", wechat_setup::WXAPP)
                    .header("Authorization", format!("Sign {sign}"))
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        });
        let cmd = dev.recv().await;
        dev.send(json!({"error":0,"userAgent":"device","apikey":w.owner.apikey.as_str(),"deviceid":DEVICE,"sequence":cmd["sequence"]}))
            .await;
        assert_eq!(control.await.unwrap(), 200);
        assert!(started.elapsed() < Duration::from_millis(500), "round {round}: WeChat control waited for its push");
    }
    // The stalled pushes still arrive (answered late, within the connector's deadline).
    let stats = w.hub.hub.wechat_work.stats.clone();
    eventually(|| async { stats.sent.load(Ordering::Relaxed) >= 10 }).await;
    w.hub.stop().await;
}

#[tokio::test]
async fn failed_pushes_are_retried_a_bounded_number_of_times() {
    let (w, mut dev, mut app) = live().await;
    // WeChat answers 503 for a while: the connector tries each call 3 times, the push makes 3 calls.
    w.fake.fail("pushappmsg", Fault::Status(503), 9);
    dev.send(report(&w.owner, json!({"temperature": 40}))).await;
    next_action(&mut app, "alarm").await;
    let stats = w.hub.hub.wechat_work.stats.clone();
    eventually(|| async { stats.failed.load(Ordering::Relaxed) == 1 }).await;
    assert_eq!(w.fake.calls_to("pushappmsg").len(), 9, "3 pushes of 3 requests each");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.fake.calls_to("pushappmsg").len(), 9, "and no more");

    // A WeChat that recovers gets the next alarm's push on a retry.
    w.fake.clear_calls();
    w.fake.fail("pushappmsg", Fault::Status(503), 4);
    dev.send(report(&w.owner, json!({"temperature": 20}))).await;
    dev.send(report(&w.owner, json!({"temperature": 40}))).await;
    next_action(&mut app, "alarm").await;
    eventually(|| async { stats.sent.load(Ordering::Relaxed) == 1 }).await;
    assert_eq!(w.fake.calls_to("pushappmsg").len(), 5, "4 failures, then the push");
    w.hub.stop().await;
}
