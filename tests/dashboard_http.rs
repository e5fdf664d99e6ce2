//! The operator dashboard over plain HTTP (no browser): no login without an operator made by
//! `switchyard admin operator add`, the login form and its cookie, logout, the redirect and 401
//! for visitors without a login, the account lockout, and commands sent as the operator and
//! filed in history as theirs.

mod common;

use std::time::Duration;

use common::{TestHub, wait_until_async};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

const OPERATOR: &str = "ops@example.com";
const OPERATOR_PASSWORD: &str = "ops-secret-42";
const DEVICE: &str = "d0000000a1";

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(10)).build().unwrap()
}

fn url(hub: &TestHub, path: &str) -> String {
    format!("http://{}{path}", hub.metrics)
}

async fn login(hub: &TestHub, email: &str, password: &str) -> reqwest::Response {
    let form = format!("email={}&password={}", urlencode(email), urlencode(password));
    client().post(url(hub, "/dashboard/login")).header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(form).send().await.unwrap()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Logs in and returns the `Cookie` header value.
async fn cookie(hub: &TestHub) -> String {
    let r = login(hub, OPERATOR, OPERATOR_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    set.split(';').next().unwrap().to_owned()
}

async fn command(hub: &TestHub, cookie: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = client().post(url(hub, &format!("/dashboard/api/devices/{DEVICE}/command"))).json(&body);
    if let Some(c) = cookie {
        req = req.header(COOKIE, c);
    }
    req.send().await.unwrap()
}

async fn hub_with_operator() -> TestHub {
    let hub = TestHub::start().await;
    let out = hub.admin(&["operator", "add", "--email", OPERATOR, "--password", OPERATOR_PASSWORD]);
    assert!(out.contains("operator ops@example.com added"), "{out}");
    hub
}

#[tokio::test]
async fn nobody_logs_in_before_an_operator_is_made() {
    let hub = TestHub::start().await;
    for (email, password) in [("admin", "admin"), ("admin@example.com", "admin"), (OPERATOR, OPERATOR_PASSWORD), ("", "")] {
        let r = login(&hub, email, password).await;
        assert_eq!(r.status(), StatusCode::OK, "the form again");
        assert!(r.headers().get(SET_COOKIE).is_none());
        assert!(r.text().await.unwrap().contains("Wrong email or password."));
    }
    // The public listeners do not serve the dashboard at all.
    let r = client().get(format!("{}/dashboard", hub.base())).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("api not found"));
    hub.stop().await;
}

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_logout_ends_it() {
    let hub = hub_with_operator().await;

    // Without a login: pages redirect to the form, the API answers 401.
    for path in ["/dashboard", "/dashboard/device/d1"] {
        let r = client().get(url(&hub, path)).send().await.unwrap();
        assert_eq!((r.status(), r.headers()[LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, "/dashboard/login"), "{path}");
    }
    for path in ["/dashboard/api/events", &format!("/dashboard/api/devices/{DEVICE}")] {
        assert_eq!(client().get(url(&hub, path)).send().await.unwrap().status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let form = client().get(url(&hub, "/dashboard/login")).send().await.unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    let csp = form.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = form.text().await.unwrap();
    assert!(html.contains(r#"action="/dashboard/login""#) && html.contains(r#"name="email""#) && html.contains(r#"name="password""#));

    // A wrong password: the form again, with the message and the email kept.
    let r = login(&hub, OPERATOR, "wrong-password-1").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().get(SET_COOKIE).is_none());
    let html = r.text().await.unwrap();
    assert!(html.contains("Wrong email or password.") && html.contains(r#"value="ops@example.com""#), "{html}");

    // The right one (email in any case): a cookie and a redirect to the dashboard.
    let r = login(&hub, "OPS@Example.com", OPERATOR_PASSWORD).await;
    assert_eq!((r.status(), r.headers()[LOCATION].to_str().unwrap()), (StatusCode::SEE_OTHER, "/dashboard"));
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let attrs: Vec<&str> = set.split(';').map(str::trim).collect();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/dashboard", "Max-Age=43200"] {
        assert!(attrs.contains(&attr), "{attr} missing from {set}");
    }
    let pair = attrs[0];
    let token = pair.strip_prefix("switchyard_operator=").unwrap();
    assert!(token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()), "{pair}");

    // With it: the app, which names the operator and loads only its own assets.
    let page = client().get(url(&hub, "/dashboard")).header(COOKIE, pair).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("ops@example.com") && html.contains(r#"src="/dashboard/assets/app.js""#));
    assert!(!html.contains("http://") && !html.contains("https://"), "no asset from elsewhere");
    let js = client().get(url(&hub, "/dashboard/assets/app.js")).send().await.unwrap();
    assert_eq!(js.headers()[CONTENT_TYPE], "text/javascript; charset=utf-8");
    assert!(js.text().await.unwrap().contains("EventSource"));
    // The login form sends a logged-in operator on to the dashboard.
    let r = client().get(url(&hub, "/dashboard/login")).header(COOKIE, pair).send().await.unwrap();
    assert_eq!(r.headers()[LOCATION], "/dashboard");
    // A made-up token of the right shape is nobody.
    let fake = format!("switchyard_operator={}", "ab".repeat(32));
    assert_eq!(client().get(url(&hub, "/dashboard")).header(COOKIE, fake).send().await.unwrap().status(), StatusCode::SEE_OTHER);

    // The event stream starts with the kept samples and the device listing.
    let mut events = client().get(url(&hub, "/dashboard/api/events")).header(COOKIE, pair).send().await.unwrap();
    assert_eq!(events.headers()[CONTENT_TYPE], "text/event-stream");
    let mut text = String::new();
    while !text.contains("event: devices") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), events.chunk()).await.unwrap().unwrap().unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.starts_with("event: history\n"), "{text}");
    drop(events);

    // Logout: the cookie is cleared and the login is gone on the server too.
    let r = client().post(url(&hub, "/dashboard/logout")).header(COOKIE, pair).send().await.unwrap();
    assert_eq!(r.headers()[LOCATION], "/dashboard/login");
    assert!(r.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(client().get(url(&hub, "/dashboard")).header(COOKIE, pair).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    assert_eq!(
        client().get(url(&hub, "/dashboard/api/events")).header(COOKIE, pair).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // Removing the operator ends their logins.
    let pair = cookie(&hub).await;
    assert_eq!(client().get(url(&hub, "/dashboard")).header(COOKIE, &pair).send().await.unwrap().status(), StatusCode::OK);
    hub.admin(&["operator", "remove", "--email", OPERATOR]);
    assert_eq!(client().get(url(&hub, "/dashboard")).header(COOKIE, &pair).send().await.unwrap().status(), StatusCode::SEE_OTHER);
    hub.stop().await;
}

#[tokio::test]
async fn failed_logins_lock_the_operator_account() {
    let hub = hub_with_operator().await;
    for _ in 0..10 {
        assert!(login(&hub, OPERATOR, "not-the-password-1").await.text().await.unwrap().contains("Wrong email or password."));
    }
    // Locked: even the right password is refused, without being checked.
    let r = login(&hub, OPERATOR, OPERATOR_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_some());
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert!(r.text().await.unwrap().contains("Too many failed attempts"));
    hub.stop().await;
}

#[tokio::test]
async fn commands_need_a_login_and_are_filed_as_the_operators() {
    let hub = hub_with_operator().await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEVICE, Some(&alice)).await;
    let mut device = hub.device(DEVICE).await;

    // No login, or a form-encoded body (what a cross-site form could send), or another origin:
    // refused, and the device hears nothing.
    assert_eq!(command(&hub, None, json!({"action":"update","params":{"switch":"on"}})).await.status(), StatusCode::UNAUTHORIZED);
    let pair = cookie(&hub).await;
    let r = client()
        .post(url(&hub, &format!("/dashboard/api/devices/{DEVICE}/command")))
        .header(COOKIE, &pair)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("action=update")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = client()
        .post(url(&hub, &format!("/dashboard/api/devices/{DEVICE}/command")))
        .header(COOKIE, &pair)
        .header(ORIGIN, "http://evil.example")
        .json(&json!({"action":"update","params":{"switch":"on"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    for bad in [json!({"action":"upgrade","params":{}}), json!({"action":"update","params":{}}), json!({"action":"query","params":{"a":1}})]
    {
        assert_eq!(command(&hub, Some(&pair), bad.clone()).await.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    device.silent_for(200).await;

    // With the login: routed to the device as its owner's command would be, answered with the ack.
    let answered = tokio::spawn({
        let pair = pair.clone();
        let metrics = hub.metrics;
        async move {
            let r = client()
                .post(format!("http://{metrics}/dashboard/api/devices/{DEVICE}/command"))
                .header(COOKIE, pair)
                .header(ORIGIN, format!("http://{metrics}"))
                .json(&json!({"action":"update","params":{"switch":"on"}}))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    });
    let frame = device.recv().await;
    assert_eq!((frame["action"].as_str(), &frame["params"]), (Some("update"), &json!({"switch":"on"})), "{frame}");
    assert_eq!(frame["apikey"], alice.apikey.as_str(), "sent with the owner's rights");
    device.send(json!({"error":0,"deviceid":DEVICE,"sequence":frame["sequence"]})).await;
    let (status, answer) = answered.await.unwrap();
    assert_eq!((status, &answer["error"]), (StatusCode::OK, &json!(0)), "{answer}");
    assert_eq!(hub.hub.router.live_params(&switchyard::ids::DeviceId::new(DEVICE), &[]).as_deref(), Some(r#"{"switch":"on"}"#));

    // A query, answered with the device's params.
    let asked = tokio::spawn({
        let pair = pair.clone();
        let metrics = hub.metrics;
        async move {
            let r = client()
                .post(format!("http://{metrics}/dashboard/api/devices/{DEVICE}/command"))
                .header(COOKIE, pair)
                .json(&json!({"action":"query","params":["switch"]}))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        }
    });
    let frame = device.recv().await;
    assert_eq!((frame["action"].as_str(), &frame["params"]), (Some("query"), &json!(["switch"])), "{frame}");
    device.send(json!({"error":0,"deviceid":DEVICE,"sequence":frame["sequence"],"params":{"switch":"on"}})).await;
    assert_eq!(asked.await.unwrap()["params"], json!({"switch":"on"}));

    // History files both as the operator's, not as the owner's.
    wait_until_async("the operator's commands are in history", || async {
        hub.hub.store.history(DEVICE, i64::MAX, 10).await.unwrap().iter().filter(|h| h.user_agent == "operator").count() == 2
    })
    .await;
    let history = hub.hub.store.history(DEVICE, i64::MAX, 10).await.unwrap();
    let update = history.iter().find(|h| h.request.contains(r#""action":"update""#)).unwrap();
    assert_eq!((update.user_agent.as_str(), update.ops_account.as_str()), ("operator", "operator:ops@example.com"));
    assert_eq!(update.request, r#"{"action":"update","userAgent":"operator","params":{"switch":"on"}}"#);
    // The device page shows them.
    let page: Value = client()
        .get(url(&hub, &format!("/dashboard/api/devices/{DEVICE}")))
        .header(COOKIE, &pair)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((page["owner"].as_str(), page["live"]["online"].as_bool()), (Some("alice@example.com"), Some(true)), "{page}");
    assert_eq!(page["live"]["state"], json!({"switch":"on"}));
    assert!(page["history"].as_array().unwrap().iter().any(|h| h["opsAccount"] == "operator:ops@example.com"), "{page}");

    // An offline device: 409 at once.
    drop(device);
    wait_until_async("the device is offline", || async { hub.hub.router.device_view(&switchyard::ids::DeviceId::new(DEVICE)).is_none() })
        .await;
    assert_eq!(command(&hub, Some(&pair), json!({"action":"update","params":{"switch":"off"}})).await.status(), StatusCode::CONFLICT);
    hub.stop().await;
}

#[tokio::test]
async fn operator_cli_refuses_weak_passwords_and_duplicates() {
    let hub = hub_with_operator().await;
    let weak = hub.admin_run(&["operator", "add", "--email", "b@example.com", "--password", "short"]);
    assert!(!weak.status.success() && String::from_utf8_lossy(&weak.stderr).contains("--password"), "{weak:?}");
    let dup = hub.admin_run(&["operator", "add", "--email", OPERATOR, "--password", OPERATOR_PASSWORD]);
    assert!(!dup.status.success() && String::from_utf8_lossy(&dup.stderr).contains("already exists"), "{dup:?}");
    let list = hub.admin(&["operator", "list"]);
    assert!(list.contains(OPERATOR), "{list}");
    // Stored hashed, with the accounts' argon2id parameters.
    let hash = hub.hub.store.operator_password(OPERATOR).await.unwrap().unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$") && !hash.contains(OPERATOR_PASSWORD));
    hub.stop().await;
}

#[tokio::test]
async fn event_streams_are_capped() {
    let hub = hub_with_operator().await;
    let pair = cookie(&hub).await;
    let open = || client().get(url(&hub, "/dashboard/api/events")).header(COOKIE, &pair).send();
    let mut streams = Vec::new();
    for _ in 0..switchyard::dashboard::MAX_STREAMS {
        let r = open().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        streams.push(r);
    }
    assert_eq!(open().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    // A page that goes away gives its place back (noticed at the stream's next write: samples
    // come every second).
    streams.pop();
    let mut tries = 0;
    loop {
        let r = open().await.unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        tries += 1;
        assert!(tries < 100, "the closed stream's place never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.stop().await;
}
