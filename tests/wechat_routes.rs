//! Seeds 000 and 002 through the real server against the fake WeChat backend: the product's
//! WeChat binding, device authorisation (synchronous, as a job, past the 5 s deadline), WeChat
//! users bound by QR code, the alarm-rule routes, and a stranger (or a wrong signature) on each.

mod common;
mod wechat_fake;
mod wechat_setup;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::ids::DeviceId;
use wechat_fake::Fault;
use wechat_setup::{PRODUCT, WXAPP, WXSECRET, binding, eventually, qrcode, world};

#[tokio::test]
async fn the_product_binding_is_the_owners_to_set_read_replace_and_remove() {
    let w = world().await;
    let path = format!("/v2/wechat/{PRODUCT}/bind");
    w.owner().get(&path).await.fails(404, 4045);
    w.owner().get("/v2/wechat/nosuch/bind").await.fails(404, 4041);
    let mut anonymous = w.owner();
    anonymous.token = None;
    anonymous.get(&path).await.fails(401, 4011);

    // Every field is required; connect_protocol is 3 or 4; app_id must be on the platform.
    for field in wechat_setup_fields() {
        let mut b = binding();
        b["wechat_iot"].as_object_mut().unwrap().remove(field);
        w.owner().post(&path, b).await.fails(400, 4001);
    }
    let mut b = binding();
    b["wechat_iot"]["connect_protocol"] = json!("1");
    w.owner().post(&path, b).await.fails(400, 4001);
    let mut b = binding();
    b["app_id"] = json!("wxnotonplatform0000");
    w.owner().post(&path, b).await.fails(400, 4005);
    w.owner().post(&path, json!({"app_id": WXAPP})).await.fails(400, 4001);

    // A stranger may do nothing with it.
    w.stranger().post(&path, binding()).await.fails(403, 4031);
    w.owner().post(&path, binding()).await.empty();
    assert_eq!(w.owner().get(&path).await.ok(), &binding());
    w.stranger().get(&path).await.fails(403, 4031);
    w.stranger().delete(&path).await.fails(403, 4031);

    // Posting again replaces it (a number is answered as the seed's string).
    let mut b = binding();
    b["wechat_iot"]["connect_protocol"] = json!(3);
    w.owner().post(&path, b).await.empty();
    assert_eq!(w.owner().get(&path).await.ok()["wechat_iot"]["connect_protocol"], "3");

    w.owner().delete(&path).await.empty();
    w.owner().delete(&path).await.fails(404, 4045);
    w.owner().get(&path).await.fails(404, 4045);
    w.hub.stop().await;
}

fn wechat_setup_fields() -> [&'static str; 10] {
    switchyard::http::wechat::product::IOT_FIELDS
}

#[tokio::test]
async fn device_auth_forwards_to_wechat_and_records_the_state() {
    let w = world().await;
    w.device("a100000001", "a4:cf:12:00:00:01", true).await;
    w.device("a100000002", "a4:cf:12:00:00:02", true).await;
    w.hub.hub.store.add_device(&DeviceId::new("b100000001"), "key-b100000001", "EMU", 1, None, "").await.unwrap();
    let auth = |d: &str| format!("/v2/wechat/{PRODUCT}/device_auth/{d}");
    let state = |d: &str| format!("/v2/wechat/{PRODUCT}/device_auth_state/{d}");

    // No binding yet.
    w.owner().post(&auth("a100000001"), Value::Null).await.fails(404, 4045);
    w.owner().get(&format!("/v2/wechat/{PRODUCT}/auth_state")).await.fails(404, 4045);
    w.bind_product().await;
    assert_eq!(w.owner().get(&state("a100000001")).await.ok(), &json!({"state":"none","err_code":0,"msg":""}));

    let r = w.owner().post(&auth("a100000001"), Value::Null).await;
    assert_eq!(r.ok(), &json!({"resp":[{"base_info":{"device_type":"458","device_id":"a100000001"},"errcode":0,"errmsg":"ok"}]}), "{r:?}");
    let calls = w.fake.calls_to("adddevice");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].body, json!({"product_id": 458, "device_id_list": ["a100000001"]}));
    assert_eq!(w.owner().get(&state("a100000001")).await.ok(), &json!({"state":"passed","err_code":0,"msg":"ok"}));

    // WeChat's own errcodes come back inside resp with 200.
    w.fake.fail("adddevice", Fault::Errcode(40101), 1);
    let r = w.owner().post(&auth("a100000002"), Value::Null).await;
    assert_eq!(r.ok()["resp"][0]["errcode"], 40101, "{r:?}");
    let s = w.owner().get(&state("a100000002")).await.ok().clone();
    assert_eq!((s["state"].as_str(), s["err_code"].as_i64()), (Some("failed"), Some(40101)), "{s}");
    let counts = w.owner().get(&format!("/v2/wechat/{PRODUCT}/auth_state")).await.ok().clone();
    assert_eq!(
        (counts["passed"].as_i64(), counts["failed"]["count"].as_i64(), counts["failed"]["errcode"].as_i64()),
        (Some(1), Some(1), Some(40101))
    );

    // A device outside the product, an unknown one, a stranger.
    w.owner().post(&auth("b100000001"), Value::Null).await.fails(404, 4042);
    w.owner().post(&auth("ffffffffff"), Value::Null).await.fails(404, 4042);
    w.owner().get(&state("b100000001")).await.fails(404, 4042);
    w.stranger().post(&auth("a100000001"), Value::Null).await.fails(403, 4031);
    w.stranger().get(&state("a100000001")).await.fails(403, 4031);
    w.stranger().get(&format!("/v2/wechat/{PRODUCT}/auth_state")).await.fails(403, 4031);

    // Past 5 s: 504 in the error form, and the device recorded failed.
    w.fake.fail("adddevice", Fault::Stall(Duration::from_secs(7)), 1);
    let started = Instant::now();
    w.owner().post(&auth("a100000002"), Value::Null).await.fails(504, 5041);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(4900) && took < Duration::from_millis(6500), "answered after {took:?}");
    let s = w.owner().get(&state("a100000002")).await.ok().clone();
    assert_eq!((s["state"].as_str(), s["err_code"].as_i64()), (Some("failed"), Some(-1)), "{s}");

    // WeChat down: 502, failed.
    w.fake.fail("adddevice", Fault::Status(404), 1);
    w.owner().post(&auth("a100000002"), Value::Null).await.fails(502, 5021);
    w.hub.stop().await;
}

#[tokio::test]
async fn the_auth_job_runs_once_per_product_and_stops_at_the_first_failure() {
    let w = world().await;
    for i in 1..=4 {
        w.device(&format!("a10000000{i}"), &format!("a4:cf:12:00:00:0{i}"), true).await;
    }
    let path = format!("/v2/wechat/{PRODUCT}/auth");
    let state_path = format!("/v2/wechat/{PRODUCT}/auth_state");
    w.owner().post(&path, Value::Null).await.fails(404, 4045);
    w.bind_product().await;
    w.stranger().post(&path, Value::Null).await.fails(403, 4031);

    // The first call stalls a moment, so the job is still running for the second request.
    w.fake.fail("adddevice", Fault::Stall(Duration::from_millis(800)), 1);
    let started = Instant::now();
    w.owner().post(&path, Value::Null).await.empty();
    assert!(started.elapsed() < Duration::from_millis(500), "auth answers at once");
    w.owner().post(&path, Value::Null).await.fails(409, 4096);
    let running = w.owner().get(&state_path).await.ok().clone();
    assert_eq!(running["job"]["running"], true, "{running}");
    assert!(running["processing"].as_i64().unwrap() >= 1, "{running}");
    eventually(|| async { w.owner().get(&state_path).await.ok()["job"]["running"] == false }).await;
    let done = w.owner().get(&state_path).await.ok().clone();
    assert_eq!(
        done,
        json!({"processing":0,"passed":4,"failed":{"count":0,"errcode":0,"errmsg":"ok"},"job":{"running":false,"total":4,"done":4}})
    );
    let ids: Vec<Value> = w.fake.calls_to("adddevice").iter().map(|c| c.body["device_id_list"][0].clone()).collect();
    assert_eq!(ids, vec![json!("a100000001"), json!("a100000002"), json!("a100000003"), json!("a100000004")]);

    // Authorised devices are not sent again; the job stops at the first failure.
    w.device("a100000005", "a4:cf:12:00:00:05", true).await;
    w.device("a100000006", "a4:cf:12:00:00:06", false).await;
    w.fake.clear_calls();
    w.fake.fail("adddevice", Fault::Errcode(40101), 1);
    w.owner().post(&path, Value::Null).await.empty();
    eventually(|| async { w.owner().get(&state_path).await.ok()["job"]["running"] == false }).await;
    let stopped = w.owner().get(&state_path).await.ok().clone();
    assert_eq!(stopped["failed"], json!({"count":1,"errcode":40101,"errmsg":"fault injected by the test"}), "{stopped}");
    assert_eq!((stopped["passed"].as_i64(), stopped["processing"].as_i64()), (Some(4), Some(0)), "{stopped}");
    assert_eq!(w.fake.calls_to("adddevice").len(), 1, "stopped at the first error");
    let s6 = w.owner().get(&format!("/v2/wechat/{PRODUCT}/device_auth_state/a100000006")).await.ok().clone();
    assert_eq!(s6["state"], "none", "not tried: {s6}");

    // The next job takes both.
    w.owner().post(&path, Value::Null).await.empty();
    eventually(|| async { w.owner().get(&state_path).await.ok()["passed"] == 6 }).await;
    w.hub.stop().await;
}

#[tokio::test]
async fn wechat_users_bind_by_qr_code_under_the_applications_signature() {
    let w = world().await;
    w.device("a100000001", "a4:cf:12:00:00:01", true).await;
    w.hub.hub.store.add_device(&DeviceId::new("b100000001"), "key-b100000001", "EMU", 1, None, "").await.unwrap();
    let bind = |openid: &str, qr: Value| json!({"openid": openid, "push_token": "pt", "qrcode": qr});

    // The product is not bound to WeChat yet.
    w.wx("/v2/wechat/user/bind", bind("o1", json!(qrcode("a100000001")))).await.fails(404, 4045);
    w.bind_product().await;

    // Signatures: a wrong secret, an unknown application, a platform app id, no Sign at all.
    let body = bind("o1", json!(qrcode("a100000001")));
    w.signed_as(WXAPP, "wrong-secret-wrong-secret", "/v2/wechat/user/bind", &body).await.fails(401, 4013);
    w.signed_as("wxunknownunknown00", WXSECRET, "/v2/wechat/user/bind", &body).await.fails(401, 4013);
    w.signed_as(common::APPID, common::SECRET, "/v2/wechat/user/bind", &body).await.fails(401, 4013);
    let res = w
        .hub
        .http_client()
        .post(format!("{}/v2/wechat/user/bind", w.hub.base()))
        .header("X-CK-Appid", WXAPP)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    // The Bearer token of a platform user is not a WeChat application.
    w.owner().post("/v2/wechat/user/bind", body.clone()).await.fails(401, 4013);

    // QR codes: garbage, a wrong digest, an unknown device, a device outside any bound product.
    w.wx("/v2/wechat/user/bind", bind("o1", json!("not json"))).await.fails(400, 4006);
    w.wx("/v2/wechat/user/bind", bind("o1", json!({"deviceid":"a100000001","digest":"00"}))).await.fails(400, 4006);
    w.wx("/v2/wechat/user/bind", bind("o1", json!(qrcode("ffffffffff")))).await.fails(404, 4042);
    w.wx("/v2/wechat/user/bind", bind("o1", json!(qrcode("b100000001")))).await.fails(404, 4045);
    w.wx("/v2/wechat/user/bind", json!({"openid":"","push_token":"pt","qrcode":qrcode("a100000001")})).await.fails(400, 4001);

    // Another WeChat application cannot bind devices of a product bound to this one.
    w.hub.hub.store.add_wechat_app("wxother0000000000", "other-secret-other-secret").await.unwrap();
    w.signed_as("wxother0000000000", "other-secret-other-secret", "/v2/wechat/user/bind", &body).await.fails(404, 4045);

    let r = w.wx("/v2/wechat/user/bind", body.clone()).await;
    assert_eq!(r.ok(), &json!({"deviceid":"a100000001","product_id":PRODUCT,"wechat_product_id":"458"}));
    // The QR code may come as the object too; binding again only updates the push token.
    let again = json!({"openid":"o1","push_token":"pt2","qrcode":serde_json::from_str::<Value>(&qrcode("a100000001")).unwrap()});
    w.wx("/v2/wechat/user/bind", again).await.ok();
    let listeners = w.hub.hub.store.wechat_listeners("a100000001").await.unwrap();
    assert_eq!(listeners.len(), 1);
    assert_eq!((listeners[0].openid.as_str(), listeners[0].push_token.as_str()), ("o1", "pt2"));

    // Control: the device is offline, answered at once; a user not bound; bad params.
    let started = Instant::now();
    w.wx("/v2/wechat/user/control", json!({"openid":"o1","deviceid":"a100000001","params":{"switch":"on"}})).await.fails(409, 4097);
    assert!(started.elapsed() < Duration::from_millis(500), "offline is answered at once");
    w.wx("/v2/wechat/user/control", json!({"openid":"o2","deviceid":"a100000001","params":{"switch":"on"}})).await.fails(404, 4045);
    w.wx("/v2/wechat/user/control", json!({"openid":"o1","deviceid":"a100000001","params":{}})).await.fails(400, 4001);
    w.wx("/v2/wechat/user/control", json!({"openid":"o1","deviceid":"a100000001","params":"on"})).await.fails(400, 4001);
    w.signed_as(
        WXAPP,
        "wrong-secret-wrong-secret",
        "/v2/wechat/user/control",
        &json!({"openid":"o1","deviceid":"a100000001","params":{"switch":"on"}}),
    )
    .await
    .fails(401, 4013);

    // Unbind.
    w.signed_as(WXAPP, "wrong-secret-wrong-secret", "/v2/wechat/user/unbind", &json!({"openid":"o1","deviceid":"a100000001"}))
        .await
        .fails(401, 4013);
    w.wx("/v2/wechat/user/unbind", json!({"openid":"o2","deviceid":"a100000001"})).await.fails(404, 4045);
    w.wx("/v2/wechat/user/unbind", json!({"openid":"o1","deviceid":"a100000001"})).await.empty();
    w.wx("/v2/wechat/user/unbind", json!({"openid":"o1","deviceid":"a100000001"})).await.fails(404, 4045);
    w.wx("/v2/wechat/user/control", json!({"openid":"o1","deviceid":"a100000001","params":{"switch":"on"}})).await.fails(404, 4045);
    assert!(w.fake.calls_to("pushappmsg").is_empty(), "nothing was pushed");
    w.hub.stop().await;
}

#[tokio::test]
async fn alarm_rules_are_the_owners() {
    let w = world().await;
    w.device("a100000001", "a4:cf:12:00:00:01", true).await;
    let sharee = w.hub.user("sharee@example.com").await;
    w.hub.share("a100000001", &sharee).await;
    let rules = json!({"deviceid":"a100000001","rules":[
        {"param":"temperature","op":">","threshold":30,"clear":28,"cooldownSecs":60},
        {"param":"humidity","op":"<=","threshold":20.5}]});

    let get = "/v2/device/alarm-rule?deviceid=a100000001";
    assert_eq!(w.owner().get(get).await.ok(), &json!({"deviceid":"a100000001","rules":[]}));
    assert_eq!(
        w.owner().post("/v2/device/alarm-rule", rules.clone()).await.ok(),
        &json!({"deviceid":"a100000001","rules":[
        {"param":"temperature","op":">","threshold":30,"clear":28,"cooldownSecs":60},
        {"param":"humidity","op":"<=","threshold":20.5,"cooldownSecs":0}]})
    );
    assert_eq!(w.owner().get(get).await.ok()["rules"].as_array().unwrap().len(), 2);
    assert_eq!(w.hub.hub.alarms.rules_of(&DeviceId::new("a100000001")).unwrap().len(), 2, "the evaluator has them");

    // A sharee and a stranger may not read, set or remove them.
    for other in [common::xlink::xlink(&w.hub, &sharee), w.stranger()] {
        other.get(get).await.fails(403, 4031);
        other.post("/v2/device/alarm-rule", rules.clone()).await.fails(403, 4031);
        other.delete(get).await.fails(403, 4031);
    }
    let mut anonymous = w.owner();
    anonymous.token = None;
    anonymous.get(get).await.fails(401, 4011);
    w.owner().get("/v2/device/alarm-rule?deviceid=ffffffffff").await.fails(404, 4042);
    w.owner().get("/v2/device/alarm-rule").await.fails(400, 4001);

    // Bad rules.
    for bad in [
        json!({"param":"t","op":"!=","threshold":1}),
        json!({"param":"t","op":">","threshold":"30"}),
        json!({"param":"t","op":">","threshold":30,"clear":31}),
        json!({"param":"t","op":"<","threshold":30,"clear":29}),
        json!({"param":"","op":">","threshold":30}),
    ] {
        w.owner().post("/v2/device/alarm-rule", json!({"deviceid":"a100000001","rules":[bad]})).await.fails(400, 4001);
    }
    let many: Vec<Value> = (0..17).map(|i| json!({"param":format!("p{i}"),"op":">","threshold":1})).collect();
    w.owner().post("/v2/device/alarm-rule", json!({"deviceid":"a100000001","rules":many})).await.fails(400, 4001);

    w.owner().delete(get).await.empty();
    assert_eq!(w.owner().get(get).await.ok()["rules"], json!([]));
    assert!(w.hub.hub.alarms.rules_of(&DeviceId::new("a100000001")).is_none());
    w.hub.stop().await;
}

#[tokio::test]
async fn the_openapi_document_has_every_route() {
    let w = world().await;
    let doc: Value = w.hub.http_client().get(format!("{}/openapi.json", w.hub.base())).send().await.unwrap().json().await.unwrap();
    for (path, methods) in [
        ("/v2/wechat/{product_id}/bind", &["get", "post", "delete"][..]),
        ("/v2/wechat/{product_id}/auth", &["post"]),
        ("/v2/wechat/{product_id}/device_auth/{device_id}", &["post"]),
        ("/v2/wechat/{product_id}/auth_state", &["get"]),
        ("/v2/wechat/{product_id}/device_auth_state/{device_id}", &["get"]),
        ("/v2/wechat/user/bind", &["post"]),
        ("/v2/wechat/user/unbind", &["post"]),
        ("/v2/wechat/user/control", &["post"]),
        ("/v2/device/alarm-rule", &["get", "post", "delete"]),
    ] {
        for m in methods {
            assert!(doc["paths"][path][m].is_object(), "{m} {path} is not documented");
        }
    }
    let tags: Vec<&str> = doc["tags"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(tags.contains(&"wechat") && tags.contains(&"alarm"), "{tags:?}");
    w.hub.stop().await;
}
