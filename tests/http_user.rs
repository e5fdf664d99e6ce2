//! The HTTP side through real sockets: the user routes (login, profile, refresh, logout), the
//! envelope, dispatch, `/metrics`, `/healthz`, the WebSocket route without an upgrade and the
//! body limit. Every request goes over TCP to a running hub.

mod common;

use std::time::Duration;

use common::{APPID, PASSWORD, SECRET, TestHub};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A response as the test sees it: HTTP status and the body parsed as JSON (Null when it is not).
struct Reply {
    status: StatusCode,
    text: String,
    json: Value,
}

impl Reply {
    async fn from(r: reqwest::Response) -> Reply {
        let status = r.status();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, text, json }
    }

    fn error(&self) -> &Value {
        &self.json["error"]
    }
}

fn sign(body: &str) -> String {
    format!("Sign {}", switchyard::auth::sign(SECRET, body.as_bytes()))
}

/// POSTs `body` to `path` with the given appid header and Authorization (None: header absent).
async fn post(hub: &TestHub, path: &str, appid: Option<&str>, auth: Option<String>, body: &str) -> Reply {
    let mut req = hub.http_client().post(format!("{}{path}", hub.base())).header("Content-Type", "application/json").body(body.to_owned());
    if let Some(a) = appid {
        req = req.header("X-CK-Appid", a);
    }
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    Reply::from(req.send().await.unwrap()).await
}

async fn get(hub: &TestHub, path: &str, appid: Option<&str>, auth: Option<String>) -> Reply {
    let mut req = hub.http_client().get(format!("{}{path}", hub.base()));
    if let Some(a) = appid {
        req = req.header("X-CK-Appid", a);
    }
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    Reply::from(req.send().await.unwrap()).await
}

async fn login(hub: &TestHub, body: &str) -> Reply {
    post(hub, "/v2/user/login", Some(APPID), Some(sign(body)), body).await
}

async fn profile(hub: &TestHub, at: &str) -> Reply {
    get(hub, "/v2/user/profile", Some(APPID), Some(format!("Bearer {at}"))).await
}

fn is_token(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Asserts the seed's error envelope: HTTP 200, exactly `error`, `msg`, `data`, with `error == code`.
#[track_caller]
fn assert_api_error(r: &Reply, code: i64) {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["error"], code, "{}", r.text);
    let obj = r.json.as_object().unwrap_or_else(|| panic!("not a JSON object: {}", r.text));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["data", "error", "msg"], "{}", r.text);
    assert!(r.json["msg"].is_string(), "{}", r.text);
    assert!(r.json["data"].is_object(), "{}", r.text);
}

/// Asserts a success envelope and returns its data.
#[track_caller]
fn assert_ok(r: &Reply) -> Value {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["error"], 0, "{}", r.text);
    assert_eq!(r.json["msg"], "", "{}", r.text);
    assert!(r.json["data"].is_object(), "{}", r.text);
    r.json["data"].clone()
}

fn login_body(email: &str, password: &str) -> String {
    json!({"email": email, "password": password, "countryCode": "+86"}).to_string()
}

// --- login ---------------------------------------------------------------------------------

#[tokio::test]
async fn login_returns_user_and_tokens() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    let r = login(&hub, &login_body("alice@example.com", PASSWORD)).await;
    let data = assert_ok(&r);
    assert_eq!(data["user"]["apikey"], alice.apikey.as_str(), "{}", r.text);
    assert_eq!(data["user"]["email"], "alice@example.com", "{}", r.text);
    assert_eq!(data["user"]["countryCode"], "+86", "{}", r.text);
    assert!(data["user"].get("password").is_none() && !r.text.contains("argon2"), "password leaked: {}", r.text);
    assert!(is_token(&data["at"]), "at: {}", r.text);
    assert!(is_token(&data["rt"]), "rt: {}", r.text);
    assert_ne!(data["at"], data["rt"]);
    assert_eq!(data["region"], "cn", "{}", r.text);
    // The new access token works.
    let p = profile(&hub, data["at"].as_str().unwrap()).await;
    assert_eq!(assert_ok(&p)["user"]["apikey"], alice.apikey.as_str());
    // Two logins give two different pairs.
    let again = assert_ok(&login(&hub, &login_body("alice@example.com", PASSWORD)).await);
    assert_ne!(again["at"], data["at"]);
    hub.stop().await;
}

#[tokio::test]
async fn login_signature_is_over_the_raw_body_bytes() {
    let hub = TestHub::start().await;
    hub.user("spaces@example.com").await;
    let spaced = format!(r#"{{"email": "spaces@example.com", "password": "{PASSWORD}", "countryCode": "+86", "lang": "en"}}"#);
    let r = login(&hub, &spaced).await;
    let data = assert_ok(&r);
    assert_eq!(data["user"]["email"], "spaces@example.com");
    assert!(is_token(&data["at"]));

    // A signature over the compact re-serialisation does not fit the spaced bytes.
    let compact = serde_json::from_str::<Value>(&spaced).unwrap().to_string();
    assert_ne!(compact, spaced);
    let r = post(&hub, "/v2/user/login", Some(APPID), Some(sign(&compact)), &spaced).await;
    assert_api_error(&r, 401);
    // Nor does a signature made with another secret, or garbage.
    let other = format!("Sign {}", switchyard::auth::sign("not-the-secret", spaced.as_bytes()));
    assert_api_error(&post(&hub, "/v2/user/login", Some(APPID), Some(other), &spaced).await, 401);
    assert_api_error(&post(&hub, "/v2/user/login", Some(APPID), Some("Sign !!!".into()), &spaced).await, 401);
    // A Bearer token is not a Sign.
    let alice = hub.user("bearer@example.com").await;
    assert_api_error(&post(&hub, "/v2/user/login", Some(APPID), Some(format!("Bearer {}", alice.at)), &spaced).await, 401);
    // No Authorization at all.
    assert_api_error(&post(&hub, "/v2/user/login", Some(APPID), None, &spaced).await, 401);
    hub.stop().await;
}

#[tokio::test]
async fn login_email_is_case_insensitive() {
    let hub = TestHub::start().await;
    let u = hub.user("MixedCase@Example.com").await;
    let data = assert_ok(&login(&hub, &login_body("mixedcase@EXAMPLE.COM", PASSWORD)).await);
    assert_eq!(data["user"]["apikey"], u.apikey.as_str());
    hub.stop().await;
}

#[tokio::test]
async fn login_errors() {
    let hub = TestHub::start().await;
    hub.user("bob@example.com").await;

    // Wrong password, unknown user.
    assert_api_error(&login(&hub, &login_body("bob@example.com", "wrong-pass1")).await, 10001);
    assert_api_error(&login(&hub, &login_body("nobody@example.com", PASSWORD)).await, 10003);

    // Neither email nor phoneNumber (also: both empty strings).
    assert_api_error(&login(&hub, &json!({"password": PASSWORD, "countryCode": "+86"}).to_string()).await, 400);
    assert_api_error(&login(&hub, &json!({"email": "", "phoneNumber": "", "password": PASSWORD}).to_string()).await, 400);
    // Wrong types.
    assert_api_error(&login(&hub, &json!({"email": "bob@example.com", "password": 5}).to_string()).await, 400);
    assert_api_error(&login(&hub, &json!({"email": 7, "password": PASSWORD}).to_string()).await, 400);
    // Missing password.
    assert_api_error(&login(&hub, &json!({"email": "bob@example.com"}).to_string()).await, 400);
    // Malformed JSON, correctly signed.
    assert_api_error(&login(&hub, r#"{"email": "bob@example.com", "password": "#).await, 400);
    assert_api_error(&login(&hub, "").await, 400);
    // countryCode must start with +.
    assert_api_error(&login(&hub, &json!({"email": "bob@example.com", "password": PASSWORD, "countryCode": "86"}).to_string()).await, 400);

    // Appid: missing, empty, unknown.
    let body = login_body("bob@example.com", PASSWORD);
    assert_api_error(&post(&hub, "/v2/user/login", None, Some(sign(&body)), &body).await, 407);
    assert_api_error(&post(&hub, "/v2/user/login", Some(""), Some(sign(&body)), &body).await, 407);
    assert_api_error(&post(&hub, "/v2/user/login", Some("unknown-app"), Some(sign(&body)), &body).await, 407);

    // None of the failures stopped the right credentials from working.
    assert_ok(&login(&hub, &body).await);
    hub.stop().await;
}

#[tokio::test]
async fn login_in_another_region_redirects() {
    let hub = TestHub::start().await;
    let hash = switchyard::auth::hash_password(PASSWORD);
    hub.hub.store.add_user(Some("eve@example.com"), None, "+86", &hash, "eu").await.unwrap();
    let r = login(&hub, &login_body("eve@example.com", PASSWORD)).await;
    assert_api_error(&r, 10004);
    assert_eq!(r.json["data"]["region"], "eu", "{}", r.text);
    assert!(r.json["data"].get("at").is_none(), "{}", r.text);
    hub.stop().await;
}

#[tokio::test]
async fn login_by_phone_number() {
    let hub = TestHub::start().await;
    let hash = switchyard::auth::hash_password(PASSWORD);
    let key = hub.hub.store.add_user(None, Some("+8618023456789"), "+86", &hash, "cn").await.unwrap();
    let r = login(&hub, &json!({"countryCode": "+86", "phoneNumber": "+8618023456789", "password": PASSWORD}).to_string()).await;
    let data = assert_ok(&r);
    assert_eq!(data["user"]["apikey"], key.as_str(), "{}", r.text);
    assert_eq!(data["user"]["phoneNumber"], "+8618023456789", "{}", r.text);
    assert!(is_token(&data["at"]));
    // Phone is checked first: a wrong email next to the right phone still logs in.
    let both = json!({"countryCode": "+86", "phoneNumber": "+8618023456789", "email": "someone-else@example.com", "password": PASSWORD});
    assert_eq!(assert_ok(&login(&hub, &both.to_string()).await)["user"]["apikey"], key.as_str());
    // Wrong password and unknown phone.
    let wrong = json!({"countryCode": "+86", "phoneNumber": "+8618023456789", "password": "nope12345"});
    assert_api_error(&login(&hub, &wrong.to_string()).await, 10001);
    let unknown = json!({"countryCode": "+86", "phoneNumber": "+8618000000000", "password": PASSWORD});
    assert_api_error(&login(&hub, &unknown.to_string()).await, 10003);
    hub.stop().await;
}

#[tokio::test]
async fn login_body_over_one_mib_is_rejected() {
    let hub = TestHub::start().await;
    hub.user("big@example.com").await;
    let body_of = |pad: usize| json!({"email": "big@example.com", "password": PASSWORD, "pad": "x".repeat(pad)}).to_string();

    // Just under the limit: a valid, signed login succeeds (the limit is not lower than 1 MiB).
    let small = body_of(switchyard::http::MAX_BODY_BYTES - 200);
    assert!(small.len() <= switchyard::http::MAX_BODY_BYTES);
    assert_ok(&login(&hub, &small).await);

    // Over it: the same valid, signed login is refused.
    let big = body_of(switchyard::http::MAX_BODY_BYTES + 1024);
    assert!(big.len() > 1 << 20);
    let sent = hub
        .http_client()
        .post(format!("{}/v2/user/login", hub.base()))
        .header("X-CK-Appid", APPID)
        .header("Authorization", sign(&big))
        .header("Content-Type", "application/json")
        .body(big.clone())
        .send()
        .await;
    match sent {
        // The server may close the connection before reading everything: that is a refusal too.
        Err(e) => eprintln!("oversized request failed at transport level: {e}"),
        Ok(resp) => {
            let r = Reply::from(resp).await;
            let refused = r.status == StatusCode::PAYLOAD_TOO_LARGE || (r.json.is_object() && r.error() != 0);
            assert!(refused, "oversized login accepted: {} {}", r.status, &r.text[..r.text.len().min(300)]);
            assert!(r.json["data"]["at"].is_null());
        }
    }
    // The hub still serves.
    assert_ok(&login(&hub, &login_body("big@example.com", PASSWORD)).await);
    hub.stop().await;
}

// --- profile -------------------------------------------------------------------------------

#[tokio::test]
async fn profile_with_access_token() {
    let hub = TestHub::start().await;
    let carol = hub.user("carol@example.com").await;
    let r = profile(&hub, &carol.at).await;
    let data = assert_ok(&r);
    assert_eq!(data["user"]["apikey"], carol.apikey.as_str(), "{}", r.text);
    assert_eq!(data["user"]["email"], "carol@example.com", "{}", r.text);
    assert_eq!(data["region"], "cn", "{}", r.text);
    // Without X-CK-Appid (allowed for non-user routes, and the token names the app) it still works.
    assert_ok(&get(&hub, "/v2/user/profile", None, Some(format!("Bearer {}", carol.at))).await);
    hub.stop().await;
}

#[tokio::test]
async fn profile_refuses_bad_tokens() {
    let hub = TestHub::start().await;
    let dave = hub.user("dave@example.com").await;
    // No Authorization, garbage tokens, a Sign instead of a Bearer.
    assert_api_error(&get(&hub, "/v2/user/profile", Some(APPID), None).await, 401);
    assert_api_error(&profile(&hub, "garbage").await, 401);
    assert_api_error(&profile(&hub, &"0".repeat(40)).await, 401);
    assert_api_error(&get(&hub, "/v2/user/profile", Some(APPID), Some("Bearer".into())).await, 401);
    assert_api_error(&get(&hub, "/v2/user/profile", Some(APPID), Some(sign(""))).await, 401);
    // A refresh token is not an access token.
    let pair = hub.hub.store.issue_tokens(&dave.apikey, APPID, Duration::from_secs(60), Duration::from_secs(60)).await.unwrap();
    assert_api_error(&profile(&hub, &pair.rt).await, 401);
    assert_ok(&profile(&hub, &pair.at).await);
    // An appid header that is not the token's.
    assert_api_error(&get(&hub, "/v2/user/profile", Some("other-app"), Some(format!("Bearer {}", dave.at))).await, 407);
    hub.stop().await;
}

#[tokio::test]
async fn profile_with_expired_token_is_402() {
    let hub = TestHub::start().await;
    let erin = hub.user("erin@example.com").await;
    let pair = hub.hub.store.issue_tokens(&erin.apikey, APPID, Duration::ZERO, Duration::from_secs(60)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = profile(&hub, &pair.at).await;
    assert_api_error(&r, 402);
    // The expired access token still identifies its pair: refreshing with it as Bearer works.
    let r = post(&hub, "/v2/user/refresh", Some(APPID), Some(format!("Bearer {}", pair.at)), &json!({"rt": pair.rt}).to_string()).await;
    let data = assert_ok(&r);
    assert_ok(&profile(&hub, data["at"].as_str().unwrap()).await);
    hub.stop().await;
}

// --- refresh -------------------------------------------------------------------------------

async fn fresh_login(hub: &TestHub, email: &str) -> (String, String) {
    hub.user(email).await;
    let data = assert_ok(&login(hub, &login_body(email, PASSWORD)).await);
    (data["at"].as_str().unwrap().to_owned(), data["rt"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn refresh_with_sign_rotates_the_pair() {
    let hub = TestHub::start().await;
    let (at, rt) = fresh_login(&hub, "frank@example.com").await;
    let body = json!({"rt": rt}).to_string();
    let r = post(&hub, "/v2/user/refresh", Some(APPID), Some(sign(&body)), &body).await;
    let data = assert_ok(&r);
    assert!(is_token(&data["at"]) && is_token(&data["rt"]), "{}", r.text);
    assert_ne!(data["at"], at.as_str());
    assert_ne!(data["rt"], rt.as_str());
    // The old refresh token is spent, the old access token is dead, the new one works.
    assert_api_error(&post(&hub, "/v2/user/refresh", Some(APPID), Some(sign(&body)), &body).await, 401);
    assert_api_error(&profile(&hub, &at).await, 401);
    let p = assert_ok(&profile(&hub, data["at"].as_str().unwrap()).await);
    assert_eq!(p["user"]["email"], "frank@example.com");
    // The new refresh token rotates again.
    let body2 = json!({"rt": data["rt"]}).to_string();
    assert_ok(&post(&hub, "/v2/user/refresh", Some(APPID), Some(sign(&body2)), &body2).await);
    hub.stop().await;
}

#[tokio::test]
async fn refresh_with_bearer_rotates_the_pair() {
    let hub = TestHub::start().await;
    let (at, rt) = fresh_login(&hub, "gina@example.com").await;
    let body = json!({"rt": rt}).to_string();
    let r = post(&hub, "/v2/user/refresh", Some(APPID), Some(format!("Bearer {at}")), &body).await;
    let data = assert_ok(&r);
    assert!(is_token(&data["at"]) && is_token(&data["rt"]), "{}", r.text);
    let new_at = data["at"].as_str().unwrap();
    assert_ok(&profile(&hub, new_at).await);
    assert_api_error(&profile(&hub, &at).await, 401);
    // The old rt, with the new at as Bearer, is refused.
    assert_api_error(&post(&hub, "/v2/user/refresh", Some(APPID), Some(format!("Bearer {new_at}")), &body).await, 401);
    // And with the old (now unknown) at as Bearer.
    let body2 = json!({"rt": data["rt"]}).to_string();
    assert_api_error(&post(&hub, "/v2/user/refresh", Some(APPID), Some(format!("Bearer {at}")), &body2).await, 401);
    hub.stop().await;
}

#[tokio::test]
async fn refresh_errors() {
    let hub = TestHub::start().await;
    let (at, rt) = fresh_login(&hub, "hank@example.com").await;
    // Unknown rt, an access token given as rt, missing rt, wrong type, malformed JSON.
    for body in [json!({"rt": "0".repeat(40)}).to_string(), json!({"rt": at}).to_string()] {
        assert_api_error(&post(&hub, "/v2/user/refresh", Some(APPID), Some(sign(&body)), &body).await, 401);
    }
    for body in ["{}".to_owned(), json!({"rt": 5}).to_string(), "{\"rt\":".to_owned()] {
        assert_api_error(&post(&hub, "/v2/user/refresh", Some(APPID), Some(sign(&body)), &body).await, 400);
    }
    // A bad Sign and no Authorization at all.
    let body = json!({"rt": rt}).to_string();
    assert_api_error(&post(&hub, "/v2/user/refresh", Some(APPID), Some(sign("{}")), &body).await, 401);
    assert_api_error(&post(&hub, "/v2/user/refresh", Some(APPID), None, &body).await, 401);
    // A Sign needs a known appid.
    assert_api_error(&post(&hub, "/v2/user/refresh", Some("unknown-app"), Some(sign(&body)), &body).await, 407);
    // An expired refresh token is 402.
    let ivy = hub.user("ivy@example.com").await;
    let pair = hub.hub.store.issue_tokens(&ivy.apikey, APPID, Duration::from_secs(60), Duration::ZERO).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = json!({"rt": pair.rt}).to_string();
    assert_api_error(&post(&hub, "/v2/user/refresh", Some(APPID), Some(sign(&expired)), &expired).await, 402);
    // None of that spent the valid rt.
    assert_ok(&post(&hub, "/v2/user/refresh", Some(APPID), Some(sign(&body)), &body).await);
    hub.stop().await;
}

// --- logout --------------------------------------------------------------------------------

#[tokio::test]
async fn logout_revokes_the_token_for_http_and_websocket() {
    let hub = TestHub::start().await;
    let (at, rt) = fresh_login(&hub, "jane@example.com").await;
    let other = assert_ok(&login(&hub, &login_body("jane@example.com", PASSWORD)).await);
    let apikey = other["user"]["apikey"].as_str().unwrap().to_owned();

    let resp = hub
        .http_client()
        .delete(format!("{}/v2/user/logout", hub.base()))
        .header("X-CK-Appid", APPID)
        .header("Authorization", format!("Bearer {at}"))
        .send()
        .await
        .unwrap();
    assert_ok(&Reply::from(resp).await);

    assert_api_error(&profile(&hub, &at).await, 401);
    let body = json!({"rt": rt}).to_string();
    assert_api_error(&post(&hub, "/v2/user/refresh", Some(APPID), Some(sign(&body)), &body).await, 401);

    // userOnline with the revoked token is refused...
    let mut ws = hub.raw().await;
    ws.send(json!({"action":"userOnline","version":8,"ts":1,"at":at,"userAgent":"app","apikey":apikey,"appid":APPID,"nonce":"abcd1234","sequence":"7"})).await;
    let reply = ws.recv().await;
    assert_eq!(reply["error"], 401, "{reply}");
    assert_eq!(reply["sequence"], "7", "{reply}");
    ws.recv_close().await;

    // ...while the other session's token still works, over HTTP and WebSocket.
    let other_at = other["at"].as_str().unwrap();
    assert_ok(&profile(&hub, other_at).await);
    let mut ws = hub.raw().await;
    ws.send(json!({"action":"userOnline","version":8,"ts":1,"at":other_at,"userAgent":"app","apikey":apikey,"appid":APPID,"nonce":"abcd1234","sequence":"8"})).await;
    let reply = ws.recv().await;
    assert_eq!(reply["error"], 0, "{reply}");

    // Logging out twice with the same token, or without one, is 401.
    let again = hub
        .http_client()
        .delete(format!("{}/v2/user/logout", hub.base()))
        .header("Authorization", format!("Bearer {at}"))
        .send()
        .await
        .unwrap();
    assert_api_error(&Reply::from(again).await, 401);
    let none = hub.http_client().delete(format!("{}/v2/user/logout", hub.base())).send().await.unwrap();
    assert_api_error(&Reply::from(none).await, 401);
    hub.stop().await;
}

// --- the rest of the HTTP side -------------------------------------------------------------

#[tokio::test]
async fn unknown_route_is_api_not_found() {
    let hub = TestHub::start().await;
    for path in ["/v2/nope", "/", "/v2/user/loginx"] {
        let r = get(&hub, path, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert_eq!(r.json, json!({"error":403,"msg":"api not found","data":{}}), "{path}: {}", r.text);
    }
    let r = post(&hub, "/v2/nope", Some(APPID), Some(sign("{}")), "{}").await;
    assert_eq!(r.json, json!({"error":403,"msg":"api not found","data":{}}), "{}", r.text);
    hub.stop().await;
}

#[tokio::test]
async fn wrong_method_on_a_known_path_is_api_not_found() {
    let hub = TestHub::start().await;
    let client = hub.http_client();
    let base = hub.base();
    let requests = [
        client.get(format!("{base}/v2/user/login")),
        client.get(format!("{base}/v2/user/refresh")),
        client.get(format!("{base}/v2/user/logout")),
        client.put(format!("{base}/v2/user/profile")).body("{}"),
        client.put(format!("{base}/dispatch/app")),
        client.delete(format!("{base}/dispatch/device")),
        client.post(format!("{base}/healthz")),
    ];
    for req in requests {
        let req = req.build().unwrap();
        let what = format!("{} {}", req.method(), req.url().path());
        let r = Reply::from(client.execute(req).await.unwrap()).await;
        assert_eq!(r.status, StatusCode::OK, "{what}: {} {}", r.status, r.text);
        assert_eq!(r.json, json!({"error":403,"msg":"api not found","data":{}}), "{what}: {}", r.text);
    }
    hub.stop().await;
}

fn dispatch_keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect();
    k.sort();
    k
}

async fn dispatch_replies(hub: &TestHub) -> Vec<(String, Reply)> {
    let mut out = Vec::new();
    for path in ["/dispatch/app", "/dispatch/device"] {
        out.push((format!("GET {path}"), get(hub, path, None, None).await));
        let device_body = json!({"accept":"ws;2","version":2,"ts":933,"deviceid":"100008db11","apikey":"factory","model":"ITA-GZ1-GL","romVersion":"1.5.5"});
        let r = hub.http_client().post(format!("{}{path}", hub.base())).json(&device_body).send().await.unwrap();
        out.push((format!("POST {path}"), Reply::from(r).await));
        // A POST with no body at all, as some clients send.
        let r = hub.http_client().post(format!("{}{path}", hub.base())).send().await.unwrap();
        out.push((format!("POST {path} (empty)"), Reply::from(r).await));
    }
    out
}

#[tokio::test]
async fn dispatch_advertises_the_tls_listener() {
    let hub = TestHub::start().await;
    assert_ne!(hub.https.port(), hub.http.port());
    for (what, r) in dispatch_replies(&hub).await {
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.text);
        assert_eq!(dispatch_keys(&r.json), ["IP", "domain", "error", "port", "reason"], "{what}: {}", r.text);
        assert_eq!(r.json["error"], 0, "{what}: {}", r.text);
        assert_eq!(r.json["reason"], "ok", "{what}: {}", r.text);
        assert_eq!(r.json["port"], hub.https.port(), "{what}: {}", r.text);
        assert_eq!(r.json["domain"], hub.https.ip().to_string(), "{what}: {}", r.text);
        assert_eq!(r.json["IP"], hub.https.ip().to_string(), "{what}: {}", r.text);
    }
    hub.stop().await;
}

#[tokio::test]
async fn dispatch_advertises_the_configured_public_address() {
    let hub = TestHub::start_with(|s| s.set("public_ws", "hub.example.com:443").set("public_ip", "203.0.113.7")).await;
    for (what, r) in dispatch_replies(&hub).await {
        assert_eq!(dispatch_keys(&r.json), ["IP", "domain", "error", "port", "reason"], "{what}: {}", r.text);
        assert_eq!(r.json["error"], 0, "{what}: {}", r.text);
        assert_eq!(r.json["reason"], "ok", "{what}: {}", r.text);
        assert_eq!(r.json["port"], 443, "{what}: {}", r.text);
        assert!(r.json["port"].is_u64(), "port must be a number: {}", r.text);
        assert_eq!(r.json["domain"], "hub.example.com", "{what}: {}", r.text);
        assert_eq!(r.json["IP"], "203.0.113.7", "{what}: {}", r.text);
    }
    hub.stop().await;
}

#[tokio::test]
async fn dispatch_is_served_on_the_tls_listener_too() {
    let hub = TestHub::start().await;
    let pem = std::fs::read(&hub.cert).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = Reply::from(client.get(format!("https://localhost:{}/dispatch/app", hub.https.port())).send().await.unwrap()).await;
    assert_eq!(r.json["error"], 0, "{}", r.text);
    assert_eq!(r.json["port"], hub.https.port(), "{}", r.text);
    hub.stop().await;
}

#[tokio::test]
async fn metrics_and_healthz() {
    let hub = TestHub::start().await;
    let alice = hub.user("metrics@example.com").await;
    let _app = hub.app(&alice).await;
    // A report, answered after its commit: the commit histogram has an observation.
    hub.device_record("1000000m01", Some(&alice)).await;
    let mut dev = hub.device("1000000m01").await;
    dev.send(json!({"action":"update","deviceid":"1000000m01","apikey":alice.apikey.as_str(),"userAgent":"device","params":{"switch":"on"},"sequence":"r1"})).await;
    assert_eq!(dev.recv().await["error"], 0);
    let scrape = || async {
        let resp = hub.http_client().get(format!("http://{}/metrics", hub.metrics)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.text().await.unwrap()
    };
    // The session counts itself just after its userOnline reply, so poll briefly for it.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let text = loop {
        let text = scrape().await;
        assert!(text.contains("# TYPE switchyard_app_sessions gauge"), "{text}");
        let line = text.lines().find(|l| l.starts_with("switchyard_app_sessions ")).unwrap_or_else(|| panic!("{text}")).to_owned();
        if line == "switchyard_app_sessions 1" {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "app session never counted: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Every sample line is `name value` with a numeric value.
    for l in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, value) = l.split_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
        assert!(name.starts_with("switchyard_"), "{l}");
        assert!(value.parse::<f64>().is_ok(), "{l}");
    }
    // The commit histogram: cumulative buckets, the last (+Inf) equal to the count, at least the
    // report's commit counted.
    let samples: Vec<(&str, f64)> = text
        .lines()
        .filter(|l| l.starts_with("switchyard_commit_seconds"))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name, value.parse().unwrap())
        })
        .collect();
    let buckets: Vec<f64> = samples.iter().filter(|(n, _)| n.starts_with("switchyard_commit_seconds_bucket{")).map(|(_, v)| *v).collect();
    let count = samples.iter().find(|(n, _)| *n == "switchyard_commit_seconds_count").map(|(_, v)| *v).unwrap_or_else(|| panic!("{text}"));
    assert!(count >= 1.0, "{text}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{text}");
    assert_eq!(buckets.last(), Some(&count), "{text}");
    assert!(text.contains("switchyard_commit_seconds_bucket{le=\"0.001\"}"), "{text}");
    // The allocator's figures, with the `jemalloc` feature (CI runs this test with it too): a live
    // hub has allocated something, and the allocator holds at least that much resident. Without
    // it there are none.
    let gauge = |name: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} ")))?;
        Some(line.split_once(' ').unwrap().1.parse().unwrap())
    };
    let (allocated, resident) = (gauge("switchyard_heap_allocated_bytes"), gauge("switchyard_heap_resident_bytes"));
    if cfg!(feature = "jemalloc") {
        let (allocated, resident) = (allocated.expect("heap allocated"), resident.expect("heap resident"));
        assert!(allocated > 1e5 && resident >= allocated, "allocated {allocated}, resident {resident}");
    } else {
        assert_eq!((allocated, resident), (None, None), "{text}");
    }

    let resp = hub.http_client().get(format!("{}/healthz", hub.base())).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap().trim(), "ok");
    hub.stop().await;
}

/// The counters are for the operator: the public listeners do not serve them, and the operator
/// listener serves nothing else.
#[tokio::test]
async fn metrics_are_only_on_the_operator_listener() {
    let hub = TestHub::start().await;
    for base in [hub.base(), format!("https://{}", hub.https)] {
        let client = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build().unwrap();
        let resp = client.get(format!("{base}/metrics")).send().await.unwrap();
        let text = resp.text().await.unwrap();
        assert!(!text.contains("switchyard_"), "{base}/metrics served the counters: {text}");
        assert!(text.contains("api not found"), "{base}: {text}");
    }
    let resp = hub.http_client().get(format!("http://{}/v2/user/profile", hub.metrics)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = hub.http_client().get(format!("http://{}/api/ws", hub.metrics)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    hub.stop().await;
}

#[tokio::test]
async fn websocket_route_without_upgrade_is_400() {
    let hub = TestHub::start().await;
    let resp = hub.http_client().get(format!("{}/api/ws", hub.base())).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = hub.http_client().post(format!("{}/api/ws", hub.base())).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Upgrade headers with the wrong version are refused too.
    let resp = hub
        .http_client()
        .get(format!("{}/api/ws", hub.base()))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "8")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // And a real WebSocket client still gets in.
    let alice = hub.user("ws@example.com").await;
    let _app = hub.app(&alice).await;
    hub.stop().await;
}
