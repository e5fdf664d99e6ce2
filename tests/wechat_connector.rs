//! The WeChat connector against the fake WeChat backend over real loopback HTTP: the request
//! shapes, the access-token cache and its refresh, retries, the 45002 pre-check, deadlines; and
//! the hub's own connector with an application from its store.

mod common;
mod wechat_fake;

use std::time::{Duration, Instant};

use serde_json::json;
use switchyard::wechat::{AppCredentials, CreateProduct, MAX_PUSH_BYTES, Options, WeChat, WeChatError};
use wechat_fake::{FakeWeChat, Fault};

const APPID: &str = "wx0123456789abcdef";
const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn app() -> AppCredentials {
    AppCredentials { appid: APPID.to_owned(), secret: SECRET.to_owned() }
}

fn fake() -> FakeWeChat {
    let fake = FakeWeChat::start();
    fake.add_app(APPID, SECRET);
    fake
}

fn connector(fake: &FakeWeChat) -> WeChat {
    WeChat::new(&fake.base(), Options::default()).unwrap()
}

#[tokio::test]
async fn every_call_sends_the_documented_shape() {
    let fake = fake();
    let wechat = connector(&fake);
    let product =
        CreateProduct { english_product_name: "Lamp".into(), chinese_product_name: "台灯".into(), device_default_name: "My lamp".into() };
    let product_id = wechat.create_product(&app(), &product).await.unwrap();
    assert_eq!(product_id, 1000);
    assert_eq!(wechat.register_pubkey(&app(), product_id, "PUBKEY").await.unwrap(), 1);
    assert_eq!(wechat.register_pubkey(&app(), product_id, "PUBKEY2").await.unwrap(), 2);
    wechat.add_devices(&app(), product_id, &["1000000001".to_owned(), "1000000002".to_owned()]).await.unwrap();
    wechat.bind_wxa_app(&app(), product_id, "wxfedcba9876543210").await.unwrap();
    wechat.push_app_msg(&app(), "push-token-1", "{\"switch\":\"on\"}").await.unwrap();

    assert_eq!(fake.names(), ["token", "createproduct", "registerpubkey", "registerpubkey", "adddevice", "bindwxaapp", "pushappmsg"]);
    let calls = fake.calls();
    let token = &calls[0];
    assert_eq!(token.method, "GET");
    assert_eq!(token.path, "/cgi-bin/token");
    assert_eq!(token.query["grant_type"], "client_credential");
    assert_eq!(token.query["appid"], APPID);
    assert_eq!(token.query["secret"], SECRET);
    for call in &calls[1..] {
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, format!("/wxa/business/runtime/{}", call.name));
        assert_eq!(call.query["access_token"], "fake-token-1", "every call uses the one cached token");
    }
    assert_eq!(calls[1].body, json!({"english_product_name":"Lamp","chinese_product_name":"台灯","device_default_name":"My lamp"}));
    assert_eq!(calls[2].body, json!({"product_id":1000,"pubkey":"PUBKEY"}));
    assert_eq!(calls[4].body, json!({"product_id":1000,"device_id_list":["1000000001","1000000002"]}));
    assert_eq!(calls[5].body, json!({"product_id":1000,"appid":"wxfedcba9876543210"}));
    assert_eq!(calls[6].body, json!({"msg":"{\"switch\":\"on\"}","push_token":"push-token-1"}));
}

#[tokio::test]
async fn concurrent_calls_share_one_token_fetch() {
    let fake = fake();
    let wechat = connector(&fake);
    let pushes = (0..10).map(|i| {
        let wechat = wechat.clone();
        tokio::spawn(async move { wechat.push_app_msg(&app(), &format!("pt-{i}"), "hello").await })
    });
    for p in pushes.collect::<Vec<_>>() {
        p.await.unwrap().unwrap();
    }
    assert_eq!(fake.calls_to("token").len(), 1);
    assert_eq!(fake.calls_to("pushappmsg").len(), 10);
}

#[tokio::test]
async fn token_is_fetched_again_shortly_before_it_expires() {
    let fake = fake();
    // Usable for 1.8 s of its 2 s (a tenth is given up as the margin).
    fake.set_expires_in(2);
    let wechat = connector(&fake);
    wechat.push_app_msg(&app(), "pt", "a").await.unwrap();
    wechat.push_app_msg(&app(), "pt", "b").await.unwrap();
    assert_eq!(fake.calls_to("token").len(), 1);
    tokio::time::sleep(Duration::from_millis(1850)).await;
    wechat.push_app_msg(&app(), "pt", "c").await.unwrap();
    assert_eq!(fake.names(), ["token", "pushappmsg", "pushappmsg", "token", "pushappmsg"]);
    assert_eq!(fake.calls_to("pushappmsg")[2].query["access_token"], "fake-token-2");
}

#[tokio::test]
async fn token_errcode_refreshes_once_and_repeats_the_call() {
    let fake = fake();
    let wechat = connector(&fake);
    wechat.push_app_msg(&app(), "pt", "first").await.unwrap();

    // WeChat revokes the token: the next call gets 48012, fetches a new token and succeeds.
    fake.revoke_tokens();
    fake.clear_calls();
    wechat.push_app_msg(&app(), "pt", "second").await.unwrap();
    assert_eq!(fake.names(), ["pushappmsg", "token", "pushappmsg"]);
    let pushes = fake.calls_to("pushappmsg");
    assert_eq!(pushes[0].query["access_token"], "fake-token-1");
    assert_eq!(pushes[1].query["access_token"], "fake-token-2");
    assert_eq!(pushes[0].body, pushes[1].body, "the same call is repeated");

    // The other token errcodes do the same.
    for code in [40001, 40014, 42001, 48012] {
        fake.fail("bindwxaapp", Fault::Errcode(code), 1);
        fake.clear_calls();
        wechat.bind_wxa_app(&app(), 1000, "wxfedcba9876543210").await.unwrap();
        assert_eq!(fake.names(), ["bindwxaapp", "token", "bindwxaapp"], "errcode {code}");
    }

    // Refreshed once only: a token errcode that persists is the answer.
    fake.fail("pushappmsg", Fault::Errcode(48012), 5);
    fake.clear_calls();
    let err = wechat.push_app_msg(&app(), "pt", "third").await.unwrap_err();
    assert_eq!(err.errcode(), Some(48012), "{err}");
    assert_eq!(fake.names(), ["pushappmsg", "token", "pushappmsg"]);
}

#[tokio::test]
async fn errcode_40101_is_a_parameter_error_and_not_retried() {
    let fake = fake();
    let wechat = connector(&fake);
    // The fake answers 40101 itself for an empty push_token.
    let err = wechat.push_app_msg(&app(), "", "hello").await.unwrap_err();
    assert!(matches!(err, WeChatError::InvalidParameter { .. }), "{err:?}");
    assert_eq!(err.errcode(), Some(40101));
    fake.fail("createproduct", Fault::Errcode(40101), 1);
    let product = CreateProduct { english_product_name: "a".into(), chinese_product_name: "b".into(), device_default_name: "c".into() };
    let err = wechat.create_product(&app(), &product).await.unwrap_err();
    assert!(matches!(err, WeChatError::InvalidParameter { .. }), "{err:?}");
    assert_eq!(fake.calls_to("createproduct").len(), 1);
    assert_eq!(fake.calls_to("pushappmsg").len(), 1);
}

#[tokio::test]
async fn oversized_push_is_refused_with_45002_before_anything_is_sent() {
    let fake = fake();
    let wechat = connector(&fake);
    let err = wechat.push_app_msg(&app(), "pt", &"x".repeat(MAX_PUSH_BYTES + 1)).await.unwrap_err();
    assert_eq!(err.errcode(), Some(45002), "{err}");
    assert!(fake.calls().is_empty(), "nothing reached WeChat, not even a token request: {:?}", fake.names());
    // Exactly 5 KB is allowed.
    wechat.push_app_msg(&app(), "pt", &"x".repeat(MAX_PUSH_BYTES)).await.unwrap();
    // WeChat's own 45002 comes back as its errcode too.
    fake.fail("pushappmsg", Fault::Errcode(45002), 1);
    let err = wechat.push_app_msg(&app(), "pt", "short").await.unwrap_err();
    assert!(matches!(err, WeChatError::Api { errcode: 45002, .. }), "{err:?}");
}

#[tokio::test]
async fn server_errors_are_retried_client_errors_are_not() {
    let fake = fake();
    let wechat = connector(&fake);
    // Two 503s, then success on the third try.
    fake.fail("pushappmsg", Fault::Status(503), 2);
    wechat.push_app_msg(&app(), "pt", "m").await.unwrap();
    assert_eq!(fake.calls_to("pushappmsg").len(), 3);

    // 5xx past the tries: the status is the answer.
    fake.clear_calls();
    fake.fail("pushappmsg", Fault::Status(502), 3);
    let err = wechat.push_app_msg(&app(), "pt", "m").await.unwrap_err();
    assert_eq!(err, WeChatError::Status(502));
    assert_eq!(fake.calls_to("pushappmsg").len(), 3);

    // A 4xx is final at once (had it been retried, the second try would succeed).
    for status in [400, 404, 429] {
        fake.clear_calls();
        fake.fail("pushappmsg", Fault::Status(status), 1);
        let err = wechat.push_app_msg(&app(), "pt", "m").await.unwrap_err();
        assert_eq!(err, WeChatError::Status(status));
        assert_eq!(fake.calls_to("pushappmsg").len(), 1, "HTTP {status} was retried");
    }

    // The token endpoint is retried the same way.
    let fresh = connector(&fake);
    fake.clear_calls();
    fake.fail("token", Fault::Status(500), 2);
    fresh.push_app_msg(&app(), "pt", "m").await.unwrap();
    assert_eq!(fake.names(), ["token", "token", "token", "pushappmsg"]);
}

#[tokio::test]
async fn wrong_secret_is_a_token_error_and_not_retried() {
    let fake = fake();
    let wechat = connector(&fake);
    let bad = AppCredentials { appid: APPID.to_owned(), secret: "not-the-secret".to_owned() };
    let err = wechat.push_app_msg(&bad, "pt", "m").await.unwrap_err();
    assert!(matches!(&err, WeChatError::Token { errcode: 40125, .. }), "{err:?}");
    assert!(!err.to_string().contains("not-the-secret"), "the secret leaked into: {err}");
    assert_eq!(fake.names(), ["token"]);
}

#[tokio::test]
async fn a_stalled_backend_times_out_at_the_deadline() {
    let fake = fake();
    let wechat = WeChat::new(&fake.base(), Options { timeout: Duration::from_millis(400), ..Options::default() }).unwrap();
    fake.fail("pushappmsg", Fault::Stall(Duration::from_secs(6)), 1);
    let started = Instant::now();
    let err = wechat.push_app_msg(&app(), "pt", "m").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, WeChatError::Timeout(Duration::from_millis(400)));
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(2), "{took:?}");
    // A stalled token endpoint counts against the same deadline.
    fake.fail("token", Fault::Stall(Duration::from_secs(6)), 1);
    let other = AppCredentials { appid: "wx1111111111111111".into(), secret: SECRET.into() };
    fake.add_app(&other.appid, SECRET);
    let err = wechat.push_app_msg(&other, "pt", "m").await.unwrap_err();
    assert!(matches!(err, WeChatError::Timeout(_)), "{err:?}");
}

#[tokio::test]
async fn the_default_deadline_is_five_seconds() {
    let fake = fake();
    let wechat = connector(&fake);
    fake.fail("adddevice", Fault::Stall(Duration::from_secs(7)), 1);
    let started = Instant::now();
    let err = wechat.add_devices(&app(), 1000, &["d1".to_owned()]).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, WeChatError::Timeout(Duration::from_secs(5)));
    assert!(took >= Duration::from_secs(5) && took < Duration::from_millis(6500), "{took:?}");
}

#[tokio::test]
async fn network_errors_are_retried_with_backoff() {
    // A server that accepts and at once closes every connection, counting them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let server = tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    let wechat = WeChat::new(&format!("http://{addr}"), Options::default()).unwrap();
    let started = Instant::now();
    let err = wechat.push_app_msg(&app(), "pt", "m").await.unwrap_err();
    assert!(matches!(err, WeChatError::Network(_)), "{err:?}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3, "three tries");
    // Backoff of 100 ms, then 200 ms (plus up to a quarter).
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    server.abort();
}

#[tokio::test]
async fn the_hub_holds_a_connector_for_the_configured_base() {
    let fake = fake();
    let base = fake.base();
    let hub = common::TestHub::start_with(|s| s.set("wechat_api_base", format!("{base}/"))).await;
    assert_eq!(hub.hub.wechat.base(), base);
    hub.hub.store.add_wechat_app(APPID, SECRET).await.unwrap();
    let creds = hub.hub.store.wechat_app(APPID).await.unwrap().expect("the application is stored");
    assert_eq!(creds, app());
    assert!(hub.hub.store.wechat_app("wx9999999999999999").await.unwrap().is_none());
    let listed = hub.hub.store.wechat_apps().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].appid, APPID);

    hub.hub.wechat.push_app_msg(&creds, "pt-hub", "from the hub").await.unwrap();
    let pushes = fake.calls_to("pushappmsg");
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].body, json!({"msg":"from the hub","push_token":"pt-hub"}));
    hub.stop().await;
}
