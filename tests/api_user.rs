//! The user routes behind Sign and verification codes, through real sockets: get-region,
//! verification-code (limits, types, regions), register, SMS login, reset-pwd, change-pwd,
//! profile updates and close-account. Codes are read where the hub's default sender puts them:
//! `<data dir>/outbox/verification-codes.jsonl`.

mod common;

use common::rest::{Answer, api};
use common::{APPID, PASSWORD, SECRET, TestHub, TestUser};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchyard::ids::{DeviceId, UserKey};
use switchyard::store::now_millis;
use switchyard::verify::{OutboxSender, Purpose};

/// Takes an envelope apart like the REST client does.
async fn answer(res: reqwest::Response) -> Answer {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
    assert!(v["data"].is_object(), "data must be an object: {text}");
    Answer {
        status,
        error: v["error"].as_i64().unwrap_or(-1),
        msg: v["msg"].as_str().unwrap_or("").to_owned(),
        data: v["data"].clone(),
        headers,
    }
}

/// POSTs the exact `body` with a Sign over it.
async fn signed_raw(hub: &TestHub, path: &str, body: &str) -> Answer {
    let res = hub
        .http_client()
        .post(format!("{}{path}", hub.base()))
        .header("X-CK-Appid", APPID)
        .header("Authorization", format!("Sign {}", switchyard::auth::sign(SECRET, body.as_bytes())))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    answer(res).await
}

async fn signed(hub: &TestHub, path: &str, body: Value) -> Answer {
    signed_raw(hub, path, &body.to_string()).await
}

async fn signed_get(hub: &TestHub, path: &str, query: &str) -> Answer {
    let res = hub
        .http_client()
        .get(format!("{}{path}?{query}", hub.base()))
        .header("X-CK-Appid", APPID)
        .header("Authorization", format!("Sign {}", switchyard::auth::sign(SECRET, query.as_bytes())))
        .send()
        .await
        .unwrap();
    answer(res).await
}

/// The last code the hub sent to `to` for `purpose`.
fn last_code(hub: &TestHub, to: &str, purpose: Purpose) -> String {
    let path = OutboxSender::path_in(&hub.dir.path().join("data"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .rfind(|v| v["to"] == to && v["purpose"] == purpose.name())
        .unwrap_or_else(|| panic!("no {} code for {to} in {text}", purpose.name()))["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Asks for a code; `field` is `email` or `phoneNumber`.
async fn send_code(hub: &TestHub, kind: i64, field: &str, to: &str) -> Answer {
    signed(hub, "/v2/user/verification-code", json!({ "type": kind, field: to })).await
}

/// A code that is not `code`.
fn other_than(code: &str) -> String {
    if code == "000000" { "111111".into() } else { "000000".into() }
}

/// Registers `email` through the API; returns the login data.
async fn register_email(hub: &TestHub, email: &str) -> Value {
    send_code(hub, 0, "email", email).await.ok();
    let code = last_code(hub, &email.to_ascii_lowercase(), Purpose::Register);
    let r = signed(hub, "/v2/user/register", json!({"countryCode":"+86","email":email,"verificationCode":code,"password":PASSWORD})).await;
    r.ok().clone()
}

fn as_user(data: &Value) -> TestUser {
    TestUser {
        email: data["user"]["email"].as_str().unwrap_or("").to_owned(),
        apikey: UserKey::new(data["user"]["apikey"].as_str().unwrap()),
        at: data["at"].as_str().unwrap().to_owned(),
    }
}

async fn login(hub: &TestHub, email: &str, password: &str) -> Answer {
    signed(hub, "/v2/user/login", json!({"countryCode":"+86","email":email,"password":password})).await
}

// --- get-region ----------------------------------------------------------------------------

#[tokio::test]
async fn get_region_maps_country_codes() {
    let hub = TestHub::start().await;
    for (code, region) in [
        ("86", "cn"),
        ("63", "as"),
        ("886", "as"),
        ("81", "as"),
        ("61", "as"),
        ("1", "us"),
        ("1876", "us"),
        ("55", "us"),
        ("44", "eu"),
        ("49", "eu"),
        ("7", "eu"),
        ("971", "eu"),
        ("27", "eu"),
        ("%2B86", "cn"),
    ] {
        let r = signed_get(&hub, "/v2/utils/get-region", &format!("countryCode={code}")).await;
        assert_eq!(r.ok()["region"], region, "{code}");
    }
    for bad in ["countryCode=999", "countryCode=abc", "countryCode=", "countryCode=12345", "other=86", ""] {
        signed_get(&hub, "/v2/utils/get-region", bad).await.fails(400);
    }
    // The signature is over the raw query; another query's Sign does not fit.
    let res = hub
        .http_client()
        .get(format!("{}/v2/utils/get-region?countryCode=86", hub.base()))
        .header("X-CK-Appid", APPID)
        .header("Authorization", format!("Sign {}", switchyard::auth::sign(SECRET, b"countryCode=1")))
        .send()
        .await
        .unwrap();
    answer(res).await.fails(401);
    let url = format!("{}/v2/utils/get-region?countryCode=86", hub.base());
    answer(hub.http_client().get(&url).header("X-CK-Appid", APPID).send().await.unwrap()).await.fails(401);
    answer(hub.http_client().get(&url).send().await.unwrap()).await.fails(407);
    hub.stop().await;
}

// --- register ------------------------------------------------------------------------------

#[tokio::test]
async fn register_by_email_with_a_code() {
    let hub = TestHub::start().await;
    send_code(&hub, 0, "email", "New.User@Example.com").await.ok();
    let code = last_code(&hub, "new.user@example.com", Purpose::Register);
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    let body = |code: &str| json!({"countryCode":"+86","email":"New.User@Example.com","verificationCode":code,"password":"secret-pw"});
    signed(&hub, "/v2/user/register", body(&other_than(&code))).await.fails(10002);
    let r = signed(&hub, "/v2/user/register", body(&code)).await;
    let data = r.ok();
    assert_eq!(data["user"]["email"], "new.user@example.com");
    assert_eq!(data["user"]["countryCode"], "+86");
    assert_eq!(data["user"]["accountLevel"], 10);
    assert_eq!(data["region"], "cn");
    assert!(data["user"].get("phoneNumber").is_none());
    let user = as_user(data);
    let p = api(&hub, &user).get("/v2/user/profile", "").await;
    assert_eq!(p.ok()["user"]["apikey"], user.apikey.as_str());
    // The account has its first family, and its password works.
    assert!(!hub.hub.store.current_family(&user.apikey).await.unwrap().is_empty());
    login(&hub, "new.user@example.com", "secret-pw").await.ok();
    // Twice: the account exists (with the same code or a new one).
    signed(&hub, "/v2/user/register", body(&code)).await.fails(10009);
    send_code(&hub, 0, "email", "new.user@example.com").await.fails(10009);
    hub.stop().await;
}

#[tokio::test]
async fn register_refuses_bad_parameters() {
    let hub = TestHub::start().await;
    send_code(&hub, 0, "email", "v@example.com").await.ok();
    let code = last_code(&hub, "v@example.com", Purpose::Register);
    let cases = [
        json!({"countryCode":"86","email":"v@example.com","verificationCode":code,"password":PASSWORD}),
        json!({"email":"v@example.com","verificationCode":code,"password":PASSWORD}),
        json!({"countryCode":"+86","verificationCode":code,"password":PASSWORD}),
        json!({"countryCode":"+86","email":"not-an-email","verificationCode":code,"password":PASSWORD}),
        json!({"countryCode":"+86","email":"v@example.com","verificationCode":"","password":PASSWORD}),
        json!({"countryCode":"+86","email":"v@example.com","password":PASSWORD}),
        json!({"countryCode":"+86","email":"v@example.com","verificationCode":code,"password":"short1"}),
        json!({"countryCode":"+86","email":"v@example.com","verificationCode":code,"password":"onlyletters"}),
        json!({"countryCode":"+86","email":"v@example.com","verificationCode":code}),
        json!({"countryCode":"+86","email":"v@example.com","verificationCode":123456,"password":PASSWORD}),
        json!({"countryCode":"+86","phoneNumber":"+6591234567","verificationCode":code,"password":PASSWORD}),
        json!({"countryCode":"+86","phoneNumber":"8613800000000","verificationCode":code,"password":PASSWORD}),
    ];
    for body in cases {
        let r = signed(&hub, "/v2/user/register", body.clone()).await;
        assert_eq!(r.error, 400, "{body}: {r:?}");
    }
    signed_raw(&hub, "/v2/user/register", "not json").await.fails(400);
    // Nothing was used up: the code still registers.
    let r =
        signed(&hub, "/v2/user/register", json!({"countryCode":"+86","email":"v@example.com","verificationCode":code,"password":PASSWORD}))
            .await;
    r.ok();
    hub.stop().await;
}

#[tokio::test]
async fn register_by_phone_then_sms_login() {
    let hub = TestHub::start().await;
    let phone = "+8613800000001";
    send_code(&hub, 0, "phoneNumber", phone).await.ok();
    let code = last_code(&hub, phone, Purpose::Register);
    let r = signed(&hub, "/v2/user/register", json!({"countryCode":"+86","phoneNumber":phone,"verificationCode":code,"password":PASSWORD}))
        .await;
    let data = r.ok().clone();
    assert_eq!(data["user"]["phoneNumber"], phone);
    assert!(data["user"].get("email").is_none());

    // SMS login: type 4 code, +86 only, known numbers only.
    send_code(&hub, 4, "phoneNumber", phone).await.ok();
    let code = last_code(&hub, phone, Purpose::SmsLogin);
    let body = |code: &str| json!({"countryCode":"+86","phoneNumber":phone,"verificationCode":code,"lang":"cn"});
    signed(&hub, "/v2/user/sms-login", body(&other_than(&code))).await.fails(10002);
    let r = signed(&hub, "/v2/user/sms-login", body(&code)).await;
    let logged = r.ok();
    assert_eq!(logged["user"]["apikey"], data["user"]["apikey"]);
    assert_eq!(logged["user"]["lang"], "cn");
    assert_ne!(logged["at"], data["at"]);
    // A code is used once.
    signed(&hub, "/v2/user/sms-login", body(&code)).await.fails(10002);

    send_code(&hub, 4, "phoneNumber", "+8613800000999").await.fails(10003);
    signed(&hub, "/v2/user/sms-login", json!({"countryCode":"+86","phoneNumber":"+8613800000999","verificationCode":"123456"}))
        .await
        .fails(10003);
    send_code(&hub, 4, "phoneNumber", "+6591234567").await.fails(400);
    send_code(&hub, 4, "email", "x@example.com").await.fails(400);
    signed(&hub, "/v2/user/sms-login", json!({"countryCode":"+65","phoneNumber":"+6591234567","verificationCode":"123456"}))
        .await
        .fails(400);
    signed(&hub, "/v2/user/sms-login", json!({"countryCode":"+86","phoneNumber":"+6591234567","verificationCode":"123456"}))
        .await
        .fails(400);
    signed(&hub, "/v2/user/sms-login", json!({"countryCode":"+86","phoneNumber":phone})).await.fails(400);
    hub.stop().await;
}

// --- codes ---------------------------------------------------------------------------------

#[tokio::test]
async fn verification_code_checks_type_address_account_and_region() {
    let hub = TestHub::start().await;
    hub.user("known@example.com").await;
    let hash = switchyard::auth::hash_password(PASSWORD);
    hub.hub.store.add_user(Some("far@example.com"), None, "+44", &hash, "eu").await.unwrap();

    for kind in [1, 3] {
        send_code(&hub, kind, "email", "known@example.com").await.ok();
        send_code(&hub, kind, "email", "nobody@example.com").await.fails(10003);
        let r = send_code(&hub, kind, "email", "far@example.com").await;
        r.fails(10004);
        assert_eq!(r.data, json!({"region":"eu"}));
    }
    send_code(&hub, 0, "email", "known@example.com").await.fails(10009);
    send_code(&hub, 0, "email", "KNOWN@example.com").await.fails(10009);
    for kind in [2, 5, -1] {
        send_code(&hub, kind, "email", "fresh@example.com").await.fails(400);
    }
    signed(&hub, "/v2/user/verification-code", json!({"type":0})).await.fails(400);
    signed(&hub, "/v2/user/verification-code", json!({"email":"fresh@example.com"})).await.fails(400);
    signed(&hub, "/v2/user/verification-code", json!({"type":"0","email":"fresh@example.com"})).await.fails(400);
    send_code(&hub, 0, "email", "two@@example.com").await.fails(400);
    send_code(&hub, 0, "phoneNumber", "13800000000").await.fails(400);
    send_code(&hub, 0, "phoneNumber", "+86abc").await.fails(400);
    // Sign is required.
    let res = hub
        .http_client()
        .post(format!("{}/v2/user/verification-code", hub.base()))
        .header("X-CK-Appid", APPID)
        .body(r#"{"type":0,"email":"a@b.cc"}"#)
        .send()
        .await
        .unwrap();
    answer(res).await.fails(401);
    hub.stop().await;
}

#[tokio::test]
async fn send_limits_per_address() {
    let hub = TestHub::start().await;
    for _ in 0..3 {
        send_code(&hub, 0, "email", "limit@example.com").await.ok();
    }
    send_code(&hub, 0, "email", "limit@example.com").await.fails(10010);
    send_code(&hub, 0, "email", "LIMIT@example.com").await.fails(10010);
    // Another address is not affected.
    send_code(&hub, 0, "email", "other@example.com").await.ok();

    // 20 an hour: sends spread over the last 40 minutes (never 3 in a minute).
    let store = &hub.hub.store;
    let now = now_millis();
    for i in 0..20 {
        store.record_code("hourly@example.com", Purpose::Register, "123456", now - 40 * 60_000 + i * 2 * 60_000).await.unwrap();
    }
    send_code(&hub, 0, "email", "hourly@example.com").await.fails(10010);
    // 100 a day: spread over the last 23 hours (never 20 in an hour).
    for i in 0..100 {
        store.record_code("daily@example.com", Purpose::Register, "123456", now - 23 * 3_600_000 + i * 13 * 60_000).await.unwrap();
    }
    send_code(&hub, 0, "email", "daily@example.com").await.fails(10010);
    // Sends older than a day do not count.
    for i in 0..100 {
        store.record_code("old@example.com", Purpose::Register, "123456", now - 48 * 3_600_000 + i * 13 * 60_000).await.unwrap();
    }
    send_code(&hub, 0, "email", "old@example.com").await.ok();
    hub.stop().await;
}

#[tokio::test]
async fn codes_expire_are_bound_to_their_purpose_and_die_after_five_wrong_guesses() {
    let hub = TestHub::start().await;
    hub.user("codes@example.com").await;
    let reset = |code: &str| json!({"email":"codes@example.com","verificationCode":code,"password":"new-pass-1"});

    // Five wrong guesses void the code, even for the right one after them.
    send_code(&hub, 1, "email", "codes@example.com").await.ok();
    let code = last_code(&hub, "codes@example.com", Purpose::ResetPassword);
    for _ in 0..5 {
        signed(&hub, "/v2/user/reset-pwd", reset(&other_than(&code))).await.fails(10002);
    }
    signed(&hub, "/v2/user/reset-pwd", reset(&code)).await.fails(10002);

    // Four wrong guesses leave it usable.
    send_code(&hub, 1, "email", "codes@example.com").await.ok();
    let code = last_code(&hub, "codes@example.com", Purpose::ResetPassword);
    for _ in 0..4 {
        signed(&hub, "/v2/user/reset-pwd", reset(&other_than(&code))).await.fails(10002);
    }
    signed(&hub, "/v2/user/reset-pwd", reset(&code)).await.ok();

    // A code of another purpose does not fit.
    send_code(&hub, 3, "email", "codes@example.com").await.ok();
    let close_code = last_code(&hub, "codes@example.com", Purpose::CloseAccount);
    signed(&hub, "/v2/user/reset-pwd", reset(&close_code)).await.fails(10002);

    // An expired code (sent 11 minutes ago) does not work; a newer code replaces an older one.
    hub.user("exp@example.com").await;
    let reset = |code: &str| json!({"email":"exp@example.com","verificationCode":code,"password":"new-pass-1"});
    let store = &hub.hub.store;
    store.record_code("exp@example.com", Purpose::ResetPassword, "424242", now_millis() - 11 * 60_000).await.unwrap();
    signed(&hub, "/v2/user/reset-pwd", reset("424242")).await.fails(10002);
    store.record_code("exp@example.com", Purpose::ResetPassword, "424242", now_millis() - 9 * 60_000).await.unwrap();
    store.record_code("exp@example.com", Purpose::ResetPassword, "434343", now_millis()).await.unwrap();
    signed(&hub, "/v2/user/reset-pwd", reset("424242")).await.fails(10002);
    signed(&hub, "/v2/user/reset-pwd", reset("434343")).await.ok();
    hub.stop().await;
}

// --- passwords -----------------------------------------------------------------------------

#[tokio::test]
async fn reset_password_revokes_every_token_and_session() {
    let hub = TestHub::start().await;
    let user = hub.user("reset@example.com").await;
    let mut app = hub.app(&user).await;
    send_code(&hub, 1, "email", "reset@example.com").await.ok();
    let code = last_code(&hub, "reset@example.com", Purpose::ResetPassword);
    signed(&hub, "/v2/user/reset-pwd", json!({"email":"reset@example.com","verificationCode":code,"password":"weak"})).await.fails(400);
    signed(&hub, "/v2/user/reset-pwd", json!({"email":"nobody@example.com","verificationCode":code,"password":"new-pass-1"}))
        .await
        .fails(10003);
    signed(&hub, "/v2/user/reset-pwd", json!({"verificationCode":code,"password":"new-pass-1"})).await.fails(400);
    let r = signed(&hub, "/v2/user/reset-pwd", json!({"email":"RESET@example.com","verificationCode":code,"password":"new-pass-1"})).await;
    let data = r.ok().clone();
    assert_eq!(data["user"]["apikey"], user.apikey.as_str());
    assert_eq!(data["region"], "cn");
    api(&hub, &user).get("/v2/user/profile", "").await.fails(401);
    api(&hub, &as_user(&data)).get("/v2/user/profile", "").await.ok();
    let close = app.recv_close().await.expect("a close frame");
    assert_eq!(close.reason.as_str(), "logged out");
    login(&hub, "reset@example.com", PASSWORD).await.fails(10001);
    login(&hub, "reset@example.com", "new-pass-1").await.ok();
    hub.stop().await;
}

#[tokio::test]
async fn change_password_keeps_only_the_callers_session() {
    let hub = TestHub::start().await;
    let user = hub.user("change@example.com").await;
    let other = as_user(login(&hub, "change@example.com", PASSWORD).await.ok());
    let mut mine = hub.app(&user).await;
    let mut theirs = hub.app(&other).await;
    let me = api(&hub, &user);
    me.post("/v2/user/change-pwd", json!({"oldPassword":"wrong-pass-1","newPassword":"new-pass-1"})).await.fails(10001);
    me.post("/v2/user/change-pwd", json!({"oldPassword":PASSWORD,"newPassword":"weakweak"})).await.fails(400);
    me.post("/v2/user/change-pwd", json!({"oldPassword":PASSWORD})).await.fails(400);
    me.post("/v2/user/change-pwd", json!({"oldPassword":PASSWORD,"newPassword":12345678})).await.fails(400);
    me.post("/v2/user/change-pwd", json!({"oldPassword":PASSWORD,"newPassword":"new-pass-1"})).await.ok();
    me.get("/v2/user/profile", "").await.ok();
    api(&hub, &other).get("/v2/user/profile", "").await.fails(401);
    assert_eq!(theirs.recv_close().await.expect("a close frame").reason.as_str(), "logged out");
    mine.send_text("ping").await;
    assert_eq!(mine.recv_text().await, "pong");
    login(&hub, "change@example.com", PASSWORD).await.fails(10001);
    login(&hub, "change@example.com", "new-pass-1").await.ok();
    hub.stop().await;
}

// --- profile -------------------------------------------------------------------------------

#[tokio::test]
async fn profile_update_changes_only_what_is_given() {
    let hub = TestHub::start().await;
    let user = hub.user("prof@example.com").await;
    let me = api(&hub, &user);
    let before = me.get("/v2/user/profile", "").await.ok()["user"].clone();
    assert_eq!((&before["acceptEmailAd"], &before["accountConsult"], &before["lang"]), (&json!(false), &json!(false), &json!("en")));
    me.post("/v2/user/profile", json!({"nickname":"Alice","acceptEmailAd":true})).await.ok();
    let u = me.get("/v2/user/profile", "").await.ok()["user"].clone();
    assert_eq!((&u["nickname"], &u["acceptEmailAd"], &u["accountConsult"]), (&json!("Alice"), &json!(true), &json!(false)));
    me.post("/v2/user/profile", json!({"nickname":null,"accountConsult":true})).await.ok();
    me.post("/v2/user/profile", json!({"nickname":""})).await.ok();
    me.post("/v2/user/profile", json!({})).await.ok();
    let u = me.get("/v2/user/profile", "").await.ok()["user"].clone();
    assert_eq!((&u["nickname"], &u["acceptEmailAd"], &u["accountConsult"]), (&json!("Alice"), &json!(true), &json!(true)));
    me.post("/v2/user/profile", json!({"acceptEmailAd":false})).await.ok();
    assert_eq!(me.get("/v2/user/profile", "").await.ok()["user"]["acceptEmailAd"], false);

    me.post("/v2/user/profile", json!({"accountConsult":false})).await.fails(400);
    me.post("/v2/user/profile", json!({"accountConsult":"true"})).await.fails(400);
    me.post("/v2/user/profile", json!({"acceptEmailAd":"yes"})).await.fails(400);
    me.post("/v2/user/profile", json!({"nickname":5})).await.fails(400);
    me.post("/v2/user/profile", json!({"nickname":"x".repeat(65)})).await.fails(400);
    // Another user's profile is untouched, and a login's lang is remembered.
    let bob = hub.user("bob@example.com").await;
    let b = api(&hub, &bob).get("/v2/user/profile", "").await.ok()["user"].clone();
    assert_eq!((&b["nickname"], &b["acceptEmailAd"]), (&json!(""), &json!(false)));
    signed(&hub, "/v2/user/login", json!({"email":"bob@example.com","password":PASSWORD,"lang":"cn"})).await.ok();
    assert_eq!(api(&hub, &bob).get("/v2/user/profile", "").await.ok()["user"]["lang"], "cn");
    signed(&hub, "/v2/user/login", json!({"email":"bob@example.com","password":PASSWORD,"lang":"c n"})).await.fails(400);
    hub.stop().await;
}

// --- close account -------------------------------------------------------------------------

#[tokio::test]
async fn close_account_releases_devices_and_shares() {
    let hub = TestHub::start().await;
    let alice = as_user(&register_email(&hub, "alice@example.com").await);
    let bob = hub.user("bob@example.com").await;
    let carol = hub.user("carol@example.com").await;
    hub.device_record("a1a1a1a1a1", Some(&alice)).await;
    hub.device_record("b2b2b2b2b2", Some(&bob)).await;
    hub.share("a1a1a1a1a1", &bob).await;
    hub.share("b2b2b2b2b2", &alice).await;
    let mut device = hub.device("a1a1a1a1a1").await;
    let mut app = hub.app(&alice).await;
    let me = api(&hub, &alice);

    me.post("/v2/user/close-account", json!({})).await.fails(400);
    me.post("/v2/user/close-account", json!({"verificationCode":"123456"})).await.fails(10002);
    send_code(&hub, 3, "email", "alice@example.com").await.ok();
    let code = last_code(&hub, "alice@example.com", Purpose::CloseAccount);
    // Bob cannot use Alice's code on his account.
    api(&hub, &bob).post("/v2/user/close-account", json!({"verificationCode":code})).await.fails(10002);
    me.post("/v2/user/close-account", json!({"verificationCode":code})).await.ok();

    // Her tokens, sessions and account are gone.
    me.get("/v2/user/profile", "").await.fails(401);
    assert_eq!(app.recv_close().await.expect("a close frame").reason.as_str(), "logged out");
    login(&hub, "alice@example.com", PASSWORD).await.fails(10003);
    let store = &hub.hub.store;
    assert!(store.user(&alice.apikey).await.unwrap().is_none());
    // Her device is a factory record again; the device hears deleteNotify.
    let frame = device.recv().await;
    assert_eq!((&frame["action"], &frame["cmd"]), (&json!("notify"), &json!("deleteNotify")), "{frame}");
    let record = store.device("a1a1a1a1a1").await.unwrap().unwrap();
    assert_eq!(record.owner, None);
    assert!(!store.reachable(&bob.apikey).await.unwrap().contains(&DeviceId::new("a1a1a1a1a1")));
    assert!(store.placement(&bob.apikey, "a1a1a1a1a1").await.unwrap().is_none());
    // Bob's device is no longer shared with her.
    let audience = store.audience(&DeviceId::new("b2b2b2b2b2")).await.unwrap().unwrap();
    assert_eq!((audience.owner, audience.sharees), (bob.apikey.clone(), vec![]));
    // Someone else can add her device now.
    let digest = hex::encode(Sha256::digest(b"a1a1a1a1a1key-a1a1a1a1a1"));
    let r = api(&hub, &carol).post("/v2/device/add", json!({"name":"Lamp","deviceid":"a1a1a1a1a1","digest":digest,"chipid":""})).await;
    r.ok();
    assert_eq!(store.device("a1a1a1a1a1").await.unwrap().unwrap().owner, Some(carol.apikey.clone()));
    // And the address may register again.
    send_code(&hub, 0, "email", "alice@example.com").await.ok();
    hub.stop().await;
}

#[tokio::test]
async fn close_account_with_a_phone_code() {
    let hub = TestHub::start().await;
    let phone = "+8613800000077";
    send_code(&hub, 0, "phoneNumber", phone).await.ok();
    let code = last_code(&hub, phone, Purpose::Register);
    let data =
        signed(&hub, "/v2/user/register", json!({"countryCode":"+86","phoneNumber":phone,"verificationCode":code,"password":PASSWORD}))
            .await;
    let user = as_user(data.ok());
    send_code(&hub, 3, "phoneNumber", phone).await.ok();
    let code = last_code(&hub, phone, Purpose::CloseAccount);
    api(&hub, &user).post("/v2/user/close-account", json!({"verificationCode":code})).await.ok();
    send_code(&hub, 4, "phoneNumber", phone).await.fails(10003);
    hub.stop().await;
}

// --- the OpenAPI document ------------------------------------------------------------------

#[tokio::test]
async fn user_and_dispatch_routes_are_documented() {
    let hub = TestHub::start().await;
    let doc: Value = hub.http_client().get(format!("{}/openapi.json", hub.base())).send().await.unwrap().json().await.unwrap();
    let paths = &doc["paths"];
    for (path, methods) in [
        ("/v2/utils/get-region", &["get"][..]),
        ("/v2/user/register", &["post"]),
        ("/v2/user/login", &["post"]),
        ("/v2/user/sms-login", &["post"]),
        ("/v2/user/verification-code", &["post"]),
        ("/v2/user/reset-pwd", &["post"]),
        ("/v2/user/change-pwd", &["post"]),
        ("/v2/user/profile", &["get", "post"]),
        ("/v2/user/refresh", &["post"]),
        ("/v2/user/logout", &["delete"]),
        ("/v2/user/close-account", &["post"]),
        ("/dispatch/app", &["get", "post"]),
        ("/dispatch/device", &["get", "post"]),
    ] {
        for m in methods {
            assert!(paths[path][m].is_object(), "{m} {path} missing from the document");
        }
    }
    hub.stop().await;
}

/// Closing an account takes everyone's groups built on its devices with it, as deleting the
/// device does: a sharee's group around one of them is not left behind, empty, in their lists.
#[tokio::test]
async fn close_account_removes_sharees_groups_built_on_its_devices() {
    let hub = TestHub::start().await;
    let alice = as_user(&register_email(&hub, "alice@example.com").await);
    let bob = hub.user("bob@example.com").await;
    hub.device_record("a1a1a1a1a1", Some(&alice)).await;
    hub.device_record("b2b2b2b2b2", Some(&bob)).await;
    hub.share("a1a1a1a1a1", &bob).await;
    let b = api(&hub, &bob);
    let around_hers = b.post("/v2/device/group", json!({"name":"Hers","mainDeviceId":"a1a1a1a1a1"})).await.ok()["itemData"]["id"].clone();
    let around_his = b.post("/v2/device/group", json!({"name":"His","mainDeviceId":"b2b2b2b2b2"})).await.ok()["itemData"]["id"].clone();
    send_code(&hub, 3, "email", "alice@example.com").await.ok();
    let code = last_code(&hub, "alice@example.com", Purpose::CloseAccount);
    api(&hub, &alice).post("/v2/user/close-account", json!({"verificationCode":code})).await.ok();

    let groups = b.get("/v2/device/group", "").await.ok()["groupList"].clone();
    let ids: Vec<&Value> = groups.as_array().unwrap().iter().map(|g| &g["itemData"]["id"]).collect();
    assert_eq!(ids, [&around_his], "{groups}");
    assert!(hub.hub.store.placement(&bob.apikey, around_hers.as_str().unwrap()).await.unwrap().is_none());
    let things = b.get("/v2/device/thing", "").await.ok().clone();
    assert!(!things.to_string().contains(around_hers.as_str().unwrap()), "{things}");
    hub.stop().await;
}
