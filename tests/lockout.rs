//! Failed password and code checks per account, through real sockets: after ten failures one
//! account is refused at once (HTTP 429, `Retry-After`) from any address, for login, SMS login,
//! change-password and a device's factory key, while other accounts are unaffected.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{APPID, PASSWORD, SECRET, TestHub};
use serde_json::{Value, json};

struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

async fn post(
    client: &reqwest::Client,
    hub: &TestHub,
    path: &str,
    body: Value,
    forwarded_for: Option<&str>,
    bearer: Option<&str>,
) -> Answer {
    let body = body.to_string();
    let mut req = client.post(format!("{}{path}", hub.base())).header("X-CK-Appid", APPID).header("Content-Type", "application/json");
    req = match bearer {
        Some(at) => req.header("Authorization", format!("Bearer {at}")),
        None => req.header("Authorization", format!("Sign {}", switchyard::auth::sign(SECRET, body.as_bytes()))),
    };
    if let Some(ip) = forwarded_for {
        req = req.header("X-Forwarded-For", ip);
    }
    let res = req.body(body).send().await.unwrap();
    let status = res.status().as_u16();
    let retry_after = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    Answer { status, retry_after, body: res.json().await.unwrap() }
}

fn login_body(email: &str, password: &str) -> Value {
    json!({"email": email, "password": password, "countryCode": "+86"})
}

#[track_caller]
fn assert_locked(a: &Answer, what: &str) {
    assert_eq!((a.status, a.body["error"].as_i64()), (429, Some(429)), "{what}: {}", a.body);
    assert!(a.body["msg"].as_str().is_some_and(|m| m.contains("too many failed attempts")), "{what}: {}", a.body);
    let retry = a.retry_after.unwrap_or_else(|| panic!("{what}: no Retry-After"));
    assert!((1..=30).contains(&retry), "{what}: Retry-After {retry}");
}

#[tokio::test]
async fn ten_failures_lock_one_account_from_every_address_and_no_other() {
    // Behind a trusted proxy on this host: each request names another client.
    let hub = TestHub::start_with(|s| s.set("trusted_proxies", "127.0.0.1")).await;
    let alice = hub.user("alice@example.com").await;
    hub.user("bob@example.com").await;
    let client = hub.http_client();
    for i in 0..10 {
        let a = post(&client, &hub, "/v2/user/login", login_body("alice@example.com", "wrong-pass-1"), Some(&format!("10.0.0.{i}")), None)
            .await;
        assert_eq!((a.status, a.body["error"].as_i64()), (200, Some(10001)), "failure {i}: {}", a.body);
    }
    // The right password from an address never seen: refused without being checked.
    let started = std::time::Instant::now();
    let a = post(&client, &hub, "/v2/user/login", login_body("alice@example.com", PASSWORD), Some("10.0.1.1"), None).await;
    assert_locked(&a, "alice's right password after 10 failures");
    assert!(a.body["data"]["at"].is_null());
    eprintln!("refused in {:?}", started.elapsed());
    // The same account through the other checks of a secret.
    let change = json!({"oldPassword": PASSWORD, "newPassword": "another-pass-1"});
    assert_locked(&post(&client, &hub, "/v2/user/change-pwd", change, Some("10.0.1.2"), Some(&alice.at)).await, "change-pwd");
    // Bob, from the very addresses that failed for alice, is not affected.
    for i in 0..3 {
        let a = post(&client, &hub, "/v2/user/login", login_body("bob@example.com", PASSWORD), Some(&format!("10.0.0.{i}")), None).await;
        assert_eq!(a.body["error"], 0, "{}", a.body);
    }
    hub.stop().await;
}

#[tokio::test]
async fn loopback_clients_exempt_from_the_rate_limit_still_meet_the_lockout() {
    // Default settings: loopback is exempt from the per-IP rate limit. Each attempt comes from
    // another loopback address.
    let hub = TestHub::start().await;
    hub.user("carol@example.com").await;
    let from =
        |i: u8| reqwest::Client::builder().local_address(IpAddr::from([127, 0, 0, i])).timeout(Duration::from_secs(10)).build().unwrap();
    for i in 0..10 {
        let a = post(&from(2 + i), &hub, "/v2/user/login", login_body("carol@example.com", "wrong-pass-1"), None, None).await;
        assert_eq!(a.body["error"], 10001, "failure {i}: {}", a.body);
    }
    let a = post(&from(100), &hub, "/v2/user/login", login_body("carol@example.com", PASSWORD), None, None).await;
    assert_locked(&a, "carol from a new loopback address");
    hub.stop().await;
}

#[tokio::test]
async fn sms_login_codes_lock_the_account_too() {
    let hub = TestHub::start().await;
    let hash = switchyard::auth::hash_password(PASSWORD);
    hub.hub.store.add_user(None, Some("+8613800000001"), "+86", &hash, "cn").await.unwrap();
    let client = hub.http_client();
    let sms = |code: &str| json!({"countryCode": "+86", "phoneNumber": "+8613800000001", "verificationCode": code});
    for i in 0..10 {
        let a = post(&client, &hub, "/v2/user/sms-login", sms(&format!("{:06}", i)), None, None).await;
        assert_eq!(a.body["error"], 10002, "failure {i}: {}", a.body);
    }
    assert_locked(&post(&client, &hub, "/v2/user/sms-login", sms("123456"), None, None).await, "sms-login");
    hub.stop().await;
}

#[tokio::test]
async fn wrong_factory_keys_lock_the_device_and_no_other() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record("1000000001", Some(&alice)).await;
    hub.device_record("1000000002", Some(&alice)).await;
    let register = |id: &str, key: &str| json!({"userAgent":"device","apikey":key,"deviceid":id,"action":"register","version":2,"romVersion":"1.0","model":"EMU","ts":1});
    for i in 0..10 {
        let mut c = hub.raw().await;
        c.send(register("1000000001", &format!("guess-{i}"))).await;
        assert_eq!(c.recv().await["error"], 403, "guess {i}");
    }
    let mut c = hub.raw().await;
    c.send(register("1000000001", "key-1000000001")).await;
    let refusal = c.recv().await;
    assert_eq!(refusal["error"], 429, "{refusal}");
    assert_eq!(refusal["deviceid"], "1000000001", "{refusal}");
    assert_eq!(refusal["actionName"], "register", "{refusal}");
    assert!(c.recv_close().await.is_some());
    // Another device of the same owner registers.
    hub.device("1000000002").await;
    hub.stop().await;
}
