//! The real binary's WeChat commands: `admin wechat-app add|list` on the store, and
//! `admin wechat create-product|register-pubkey|bind-wxa-app|push` against the fake WeChat
//! backend; `--wechat-api-base` as a setting of `serve`.

mod procs;
mod wechat_fake;

use std::time::Duration;

use procs::{admin, admin_ok, sy};
use serde_json::json;
use wechat_fake::{FakeWeChat, Fault};

const APPID: &str = "wx0123456789abcdef";
const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A store with the application added, and a fake backend that knows it.
fn setup() -> (tempfile::TempDir, FakeWeChat) {
    let dir = tempfile::tempdir().unwrap();
    admin_ok(dir.path(), &["wechat-app", "add", "--appid", APPID, "--secret", SECRET]);
    let fake = FakeWeChat::start();
    fake.add_app(APPID, SECRET);
    (dir, fake)
}

#[test]
fn wechat_app_add_and_list_never_print_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let empty = admin_ok(dir.path(), &["wechat-app", "list"]);
    assert_eq!(empty.lines().count(), 1, "only the header: {empty}");

    let out = admin(dir.path(), &["wechat-app", "add", "--appid", APPID, "--secret", SECRET]);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains(APPID), "{out}");
    admin_ok(dir.path(), &["wechat-app", "add", "--appid", "wxfedcba9876543210", "--secret", "another-secret-1"]);

    let list = admin(dir.path(), &["wechat-app", "list"]);
    assert!(list.success(), "{list}");
    let rows: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(rows.len(), 3, "{list}");
    assert!(rows[0].contains("APPID") && rows[0].contains("ADDED"), "{list}");
    assert!(rows[1].starts_with(APPID) && rows[2].starts_with("wxfedcba9876543210"), "{list}");
    // An RFC 3339 time of this century.
    assert!(rows[1].split_whitespace().nth(1).is_some_and(|t| t.starts_with("20") && t.contains('T')), "{list}");

    // Refusals: a second add of the same appid, a bad appid, a short secret.
    let dup = admin(dir.path(), &["wechat-app", "add", "--appid", APPID, "--secret", "different-secret"]);
    assert!(!dup.success() && dup.stderr.contains("already exists"), "{dup}");
    let bad = admin(dir.path(), &["wechat-app", "add", "--appid", "not-wechat", "--secret", SECRET]);
    assert!(!bad.success() && bad.stderr.contains("--appid"), "{bad}");
    let short = admin(dir.path(), &["wechat-app", "add", "--appid", "wx1111111111111111", "--secret", "short"]);
    assert!(!short.success() && short.stderr.contains("--secret"), "{short}");

    for out in [&out, &list, &dup] {
        assert!(!out.stdout.contains(SECRET) && !out.stderr.contains(SECRET), "the secret was printed\n{out}");
    }
    // The store kept the first secret (the refused add changed nothing).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = procs::open_test_store(dir.path()).await;
        let app = store.wechat_app(APPID).await.unwrap().expect("stored");
        assert_eq!(app.secret, SECRET);
        store.close().await;
    });
}

#[test]
fn product_calls_go_through_the_connector() {
    let (dir, fake) = setup();
    let base = fake.base();
    let out = admin_ok(
        dir.path(),
        &[
            "wechat",
            "create-product",
            "--appid",
            APPID,
            "--english-product-name",
            "Lamp",
            "--chinese-product-name",
            "台灯",
            "--device-default-name",
            "My lamp",
            "--wechat-api-base",
            &base,
        ],
    );
    assert_eq!(out.trim(), "product_id 1000");

    let key_file = dir.path().join("pub.pem");
    std::fs::write(&key_file, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap();
    let out = admin_ok(
        dir.path(),
        &[
            "wechat",
            "register-pubkey",
            "--appid",
            APPID,
            "--product-id",
            "1000",
            "--pubkey-file",
            key_file.to_str().unwrap(),
            "--wechat-api-base",
            &base,
        ],
    );
    assert_eq!(out.trim(), "key_version 1");
    let out = admin_ok(
        dir.path(),
        &[
            "wechat",
            "bind-wxa-app",
            "--appid",
            APPID,
            "--product-id",
            "1000",
            "--wxa-appid",
            "wxfedcba9876543210",
            "--wechat-api-base",
            &base,
        ],
    );
    assert!(out.contains("1000") && out.contains("wxfedcba9876543210"), "{out}");

    // Each run is its own process, so each fetched its own token with the stored secret.
    assert_eq!(fake.names(), ["token", "createproduct", "token", "registerpubkey", "token", "bindwxaapp"]);
    for token in fake.calls_to("token") {
        assert_eq!((token.query["appid"].as_str(), token.query["secret"].as_str()), (APPID, SECRET));
    }
    assert_eq!(
        fake.calls_to("createproduct")[0].body,
        json!({"english_product_name":"Lamp","chinese_product_name":"台灯","device_default_name":"My lamp"})
    );
    assert_eq!(
        fake.calls_to("registerpubkey")[0].body,
        json!({"product_id":1000,"pubkey":"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"})
    );
    assert_eq!(fake.calls_to("bindwxaapp")[0].body, json!({"product_id":1000,"appid":"wxfedcba9876543210"}));
}

#[test]
fn push_sends_one_message_and_refuses_over_5_kb_before_sending() {
    let (dir, fake) = setup();
    // The base URL from the environment this time.
    let push = |msg: &str| {
        let d = dir.path().to_string_lossy().into_owned();
        let mut cmd =
            procs::command(&["admin", "--data-dir", &d, "wechat", "push", "--appid", APPID, "--push-token", "pt-1", "--msg", msg]);
        cmd.env("SWITCHYARD_WECHAT_API_BASE", fake.base());
        procs::run(cmd)
    };
    let out = push("{\"switch\":\"on\"}");
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("pushed"), "{out}");
    assert_eq!(fake.calls_to("pushappmsg")[0].body, json!({"msg":"{\"switch\":\"on\"}","push_token":"pt-1"}));

    fake.clear_calls();
    let out = push(&"x".repeat(5 * 1024 + 1));
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("45002"), "{out}");
    assert!(fake.calls().is_empty(), "nothing may reach WeChat: {:?}", fake.names());
    let out = push(&"x".repeat(5 * 1024));
    assert!(out.success(), "exactly 5 KB is allowed\n{out}");
}

#[test]
fn wechat_errors_are_reported_clearly() {
    let (dir, fake) = setup();
    let base = fake.base();
    let push = |appid: &str| {
        admin(dir.path(), &["wechat", "push", "--appid", appid, "--push-token", "pt", "--msg", "m", "--wechat-api-base", &base])
    };

    // 40101 is a parameter error.
    fake.fail("pushappmsg", Fault::Errcode(40101), 1);
    let out = push(APPID);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("40101") && out.stderr.contains("parameters"), "{out}");

    // An application that was never added.
    let out = push("wx9999999999999999");
    assert!(!out.success() && out.stderr.contains("wechat-app add"), "{out}");

    // 5xx past the retries.
    fake.fail("pushappmsg", Fault::Status(503), 3);
    let out = push(APPID);
    assert!(!out.success() && out.stderr.contains("HTTP 503"), "{out}");

    // The secret WeChat knows differs from the stored one.
    fake.add_app(APPID, "rotated-secret-000");
    let out = push(APPID);
    assert!(!out.success() && out.stderr.contains("40125"), "{out}");
    assert!(!out.stderr.contains(SECRET), "{out}");

    // Nothing listening at the base URL.
    let closed = format!("http://127.0.0.1:{}", procs::free_port());
    let out = admin(dir.path(), &["wechat", "push", "--appid", APPID, "--push-token", "pt", "--msg", "m", "--wechat-api-base", &closed]);
    assert!(!out.success() && out.stderr.contains("cannot reach WeChat"), "{out}");
    assert!(!out.stderr.contains(SECRET), "{out}");

    // A bad base URL.
    let out = admin(dir.path(), &["wechat", "push", "--appid", APPID, "--push-token", "pt", "--msg", "m", "--wechat-api-base", "ftp://x"]);
    assert!(!out.success() && out.stderr.contains("--wechat-api-base"), "{out}");
}

#[test]
fn a_stalled_backend_fails_the_command_after_five_seconds() {
    let (dir, fake) = setup();
    fake.fail("token", Fault::Stall(Duration::from_secs(8)), 1);
    let started = std::time::Instant::now();
    let out = admin(
        dir.path(),
        &[
            "wechat",
            "bind-wxa-app",
            "--appid",
            APPID,
            "--product-id",
            "7",
            "--wxa-appid",
            "wxfedcba9876543210",
            "--wechat-api-base",
            &fake.base(),
        ],
    );
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("did not answer within 5s"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
}

#[test]
fn serve_checks_the_wechat_api_base() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out =
        sy(&["serve", "--data-dir", data.to_str().unwrap(), "--https", "off", "--http", "127.0.0.1:0", "--wechat-api-base", "ftp://x"]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(out.stderr.contains("wechat_api_base"), "{out}");
    // The TOML key is known too.
    let file = dir.path().join("switchyard.toml");
    std::fs::write(&file, "https = \"off\"\nhttp = \"127.0.0.1:0\"\nwechat_api_base = \"not a url\"\n").unwrap();
    let out = sy(&["serve", "--config", file.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(out.stderr.contains("wechat_api_base") && !out.stderr.contains("unknown key"), "{out}");
    assert!(!data.exists());
    let help = sy(&["serve", "--help"]);
    assert!(help.stdout.contains("--wechat-api-base"), "{help}");
}
