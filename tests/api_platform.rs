//! What every REST route shares: the OpenAPI document and its offline docs page, the per-IP
//! rate limit (with trusted proxies), and the envelope for unknown routes.

mod common;

use common::TestHub;
use common::rest::api;
use serde_json::Value;

/// Every REST route of the seed, as (method, path).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/v2/utils/get-region"),
    ("post", "/v2/user/register"),
    ("post", "/v2/user/login"),
    ("post", "/v2/user/sms-login"),
    ("post", "/v2/user/verification-code"),
    ("post", "/v2/user/reset-pwd"),
    ("post", "/v2/user/change-pwd"),
    ("get", "/v2/user/profile"),
    ("post", "/v2/user/profile"),
    ("post", "/v2/user/refresh"),
    ("delete", "/v2/user/logout"),
    ("post", "/v2/user/close-account"),
    ("post", "/v2/homepage"),
    ("get", "/v2/device/thing"),
    ("post", "/v2/device/thing"),
    ("get", "/v2/device/thing/status"),
    ("post", "/v2/device/thing/status"),
    ("post", "/v2/device/thing/batch-status"),
    ("post", "/v2/device/add"),
    ("post", "/v2/device/add-gsm"),
    ("post", "/v2/device/update-info"),
    ("delete", "/v2/device"),
    ("post", "/v2/device/tags"),
    ("get", "/v2/device/group"),
    ("post", "/v2/device/group"),
    ("put", "/v2/device/group"),
    ("delete", "/v2/device/group"),
    ("post", "/v2/device/group/status"),
    ("post", "/v2/device/group/update"),
    ("post", "/v2/device/share"),
    ("post", "/v2/device/share/permit"),
    ("delete", "/v2/device/share"),
    ("get", "/v2/device/history"),
    ("delete", "/v2/device/history"),
    ("post", "/v2/device/ota/query"),
    ("get", "/v2/family"),
    ("post", "/v2/family"),
    ("put", "/v2/family"),
    ("delete", "/v2/family"),
    ("post", "/v2/family/room"),
    ("put", "/v2/family/room"),
    ("delete", "/v2/family/room"),
    ("post", "/v2/family/room/index"),
    ("post", "/v2/family/thing/sort"),
    ("post", "/v2/family/room/thing"),
    ("post", "/v2/family/current"),
    ("get", "/v2/message/read"),
];

#[tokio::test]
async fn openapi_document_lists_every_rest_route() {
    let hub = TestHub::start().await;
    let res = hub.http_client().get(format!("{}/openapi.json", hub.base())).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let doc: Value = res.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let missing: Vec<String> = ROUTES
        .iter()
        .filter(|(method, path)| doc["paths"][path][method].is_null())
        .map(|(method, path)| format!("{} {path}", method.to_uppercase()))
        .collect();
    assert!(missing.is_empty(), "routes missing from /openapi.json: {missing:?}");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    hub.stop().await;
}

#[tokio::test]
async fn every_documented_route_is_served() {
    // A route in the document that the router does not serve would answer 403 "api not found";
    // unauthenticated calls to real routes answer 401 (or 400/407 for signed ones).
    let hub = TestHub::start().await;
    let client = hub.http_client();
    for (method, path) in ROUTES {
        let req = client.request(method.to_uppercase().parse().unwrap(), format!("{}{path}", hub.base()));
        let v: Value = req.header("content-type", "application/json").body("{}").send().await.unwrap().json().await.unwrap();
        assert_ne!(v["error"], 403, "{method} {path} is not served: {v}");
        assert_ne!(v["error"], 0, "{method} {path} answered without credentials: {v}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn docs_page_is_served_from_the_binary() {
    let hub = TestHub::start().await;
    let client = hub.http_client();
    let page = client.get(format!("{}/docs/", hub.base())).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(!html.contains("cdn."), "the docs page must not load from a CDN: {html}");
    let css = client.get(format!("{}/docs/swagger-ui.css", hub.base())).send().await.unwrap();
    assert_eq!(css.status(), 200);
    let init = client.get(format!("{}/docs/swagger-initializer.js", hub.base())).send().await.unwrap().text().await.unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    hub.stop().await;
}

#[tokio::test]
async fn rate_limit_answers_412_with_retry_after_per_route() {
    let hub =
        TestHub::start_with(|s| s.set("rate_limit", "3").set("rate_limit_window_secs", "300").set("rate_limit_loopback", "true")).await;
    let user = hub.user("limited@example.com").await;
    let a = api(&hub, &user);
    for _ in 0..3 {
        a.get("/v2/user/profile", "").await.ok();
    }
    let refused = a.get("/v2/user/profile", "").await;
    assert_eq!(refused.status, 429);
    refused.fails(412);
    let retry: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    // Another route has its own counter.
    a.get("/v2/family", "").await.ok();
    // Non-REST paths are never limited.
    for _ in 0..5 {
        assert_eq!(hub.http_client().get(format!("{}/healthz", hub.base())).send().await.unwrap().status(), 200);
    }
    let m = hub.http_client().get(format!("http://{}/metrics", hub.metrics)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("switchyard_rate_limited_total 1"), "{m}");
    hub.stop().await;
}

#[tokio::test]
async fn loopback_is_exempt_unless_asked() {
    let hub = TestHub::start_with(|s| s.set("rate_limit", "2")).await;
    let user = hub.user("local@example.com").await;
    for _ in 0..5 {
        api(&hub, &user).get("/v2/user/profile", "").await.ok();
    }
    hub.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_counted() {
    let hub = TestHub::start_with(|s| s.set("rate_limit", "2").set("trusted_proxies", "127.0.0.1")).await;
    let user = hub.user("proxied@example.com").await;
    let call = |client_ip: &'static str| {
        let req = hub
            .http_client()
            .get(format!("{}/v2/user/profile", hub.base()))
            .header("authorization", format!("Bearer {}", user.at))
            .header("x-forwarded-for", format!("{client_ip}, 127.0.0.1"));
        async move {
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let v: Value = res.json().await.unwrap();
            (status, v["error"].as_i64().unwrap())
        }
    };
    assert_eq!(call("203.0.113.5").await, (200, 0));
    assert_eq!(call("203.0.113.5").await, (200, 0));
    assert_eq!(call("203.0.113.5").await, (429, 412));
    assert_eq!(call("203.0.113.6").await, (200, 0), "another client behind the same proxy has its own budget");
    hub.stop().await;
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    // Without trusted proxies the loopback peer is the client (exempt), whatever the header says.
    let hub = TestHub::start_with(|s| s.set("rate_limit", "1")).await;
    let user = hub.user("spoof@example.com").await;
    for _ in 0..3 {
        let res = hub
            .http_client()
            .get(format!("{}/v2/user/profile", hub.base()))
            .header("authorization", format!("Bearer {}", user.at))
            .header("x-forwarded-for", "198.51.100.7")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    hub.stop().await;
}
