//! OTA: the operator's firmware catalogue (`switchyard admin firmware add|list`, through the real
//! binary), `POST /v2/device/ota/query` against it, and the socket `upgrade` that follows.

mod common;
mod procs;

use common::TestHub;
use common::rest::api;
use serde_json::{Value, json};
use switchyard::store::FirmwareBin;

const DIGEST: &str = "a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3";

fn bin(name: &str, digest: Option<&str>) -> FirmwareBin {
    FirmwareBin { name: name.into(), download_url: format!("https://fw.example.com/{name}"), digest: digest.map(Into::into) }
}

async fn seeded() -> (TestHub, common::TestUser, common::TestUser, common::TestUser) {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    let bob = hub.user("bob@x.cc").await;
    let carol = hub.user("carol@x.cc").await;
    for id in ["1000000001", "1000000002", "1000000003"] {
        hub.device_record(id, Some(&alice)).await;
    }
    hub.device_record("2000000001", Some(&carol)).await;
    hub.share("1000000001", &bob).await;
    let store = &hub.hub.store;
    store.add_firmware("PSF-B01-GL", "3.5.1", &[bin("user1.bin", Some(DIGEST))]).await.unwrap();
    store.add_firmware("PSF-B01-GL", "3.10.0", &[bin("user1.bin", Some(DIGEST)), bin("user2.bin", None)]).await.unwrap();
    store.add_firmware("PSF-B01-GL", "3.9.9", &[bin("user1.bin", None)]).await.unwrap();
    store.add_firmware("ESP-01", "1.0", &[bin("image.bin", None)]).await.unwrap();
    (hub, alice, bob, carol)
}

fn info(id: &str, model: &str, version: &str) -> Value {
    json!({"deviceid": id, "model": model, "version": version})
}

#[tokio::test]
async fn newer_versions_are_offered_for_the_callers_devices() {
    let (hub, alice, bob, carol) = seeded().await;
    let list = json!({"deviceInfoList": [
        info("1000000001", "PSF-B01-GL", "3.5.0"),
        info("1000000002", "PSF-B01-GL", "3.10.0"),
        info("1000000003", "UNKNOWN", "1.0.0"),
        info("2000000001", "PSF-B01-GL", "1.0.0"),
        info("9999999999", "PSF-B01-GL", "1.0.0"),
    ]});
    let a = api(&hub, &alice).post("/v2/device/ota/query", list.clone()).await;
    let offers = a.ok()["otaInfoList"].as_array().cloned().unwrap();
    assert_eq!(offers.len(), 1, "{offers:?}");
    assert_eq!(
        offers[0],
        json!({"deviceid": "1000000001", "version": "3.10.0", "type": "", "forceTime": "", "binList": [
            {"name": "user1.bin", "downloadUrl": "https://fw.example.com/user1.bin", "digest": DIGEST},
            {"name": "user2.bin", "downloadUrl": "https://fw.example.com/user2.bin"},
        ]})
    );
    // The sharee is offered the shared device only; the stranger nothing of Alice's.
    let b = api(&hub, &bob).post("/v2/device/ota/query", list.clone()).await;
    let ids: Vec<Value> = b.ok()["otaInfoList"].as_array().unwrap().iter().map(|o| o["deviceid"].clone()).collect();
    assert_eq!(ids, [json!("1000000001")]);
    let c = api(&hub, &carol).post("/v2/device/ota/query", list).await;
    let ids: Vec<Value> = c.ok()["otaInfoList"].as_array().unwrap().iter().map(|o| o["deviceid"].clone()).collect();
    assert_eq!(ids, [json!("2000000001")]);
    // Versions compare as numbers, not text.
    let a = api(&hub, &alice).post("/v2/device/ota/query", json!({"deviceInfoList": [info("1000000002", "PSF-B01-GL", "3.9.10")]})).await;
    assert_eq!(a.ok()["otaInfoList"][0]["version"], "3.10.0");
    let a = api(&hub, &alice).post("/v2/device/ota/query", json!({"deviceInfoList": [info("1000000002", "PSF-B01-GL", "10.0")]})).await;
    assert_eq!(a.ok()["otaInfoList"], json!([]));
    hub.stop().await;
}

#[tokio::test]
async fn bad_queries_are_400() {
    let (hub, alice, _, _) = seeded().await;
    let rest = api(&hub, &alice);
    let many: Vec<Value> = (0..31).map(|_| info("1000000001", "PSF-B01-GL", "1.0")).collect();
    for body in [
        json!({}),
        json!({"deviceInfoList": []}),
        json!({"deviceInfoList": many}),
        json!({"deviceInfoList": "1000000001"}),
        json!({"deviceInfoList": [{"deviceid": "1000000001", "model": "PSF-B01-GL"}]}),
        json!({"deviceInfoList": [{"deviceid": 1000000001, "model": "PSF-B01-GL", "version": "1.0"}]}),
        json!({"deviceInfoList": [{"deviceid": "1000000001", "model": "PSF-B01-GL", "version": 3.5}]}),
    ] {
        rest.post("/v2/device/ota/query", body).await.fails(400);
    }
    let thirty: Vec<Value> = (0..30).map(|_| info("1000000001", "PSF-B01-GL", "1.0")).collect();
    let a = rest.post("/v2/device/ota/query", json!({"deviceInfoList": thirty})).await;
    assert_eq!(a.ok()["otaInfoList"].as_array().unwrap().len(), 30);
    hub.stop().await;
}

#[tokio::test]
async fn the_upgrade_command_reaches_the_device_and_is_recorded() {
    let (hub, alice, _, _) = seeded().await;
    let mut device = hub.device("1000000001").await;
    let mut app = hub.app(&alice).await;
    let offer =
        api(&hub, &alice).post("/v2/device/ota/query", json!({"deviceInfoList": [info("1000000001", "PSF-B01-GL", "3.5.0")]})).await;
    let offer = offer.ok()["otaInfoList"][0].clone();
    let params = json!({"model": "PSF-B01-GL", "version": offer["version"], "binList": offer["binList"]});
    app.send(
        json!({"action":"upgrade","deviceid":"1000000001","apikey":alice.apikey.as_str(),"userAgent":"app","sequence":"7","params":params}),
    )
    .await;
    let cmd = device.recv().await;
    assert_eq!(cmd["action"], "upgrade");
    assert_eq!(cmd["params"], params);
    device.send(json!({"error":0,"deviceid":"1000000001","userAgent":"device","sequence":"7"})).await;
    assert_eq!(app.recv().await["error"], 0);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let h = api(&hub, &alice).get("/v2/device/history", "deviceid=1000000001").await;
        if let Some(entry) = h.ok()["histories"].as_array().unwrap().first() {
            let request: Value = serde_json::from_str(entry["request"].as_str().unwrap()).unwrap();
            assert_eq!(request["action"], "upgrade");
            assert_eq!(request["params"], params);
            break;
        }
        assert!(std::time::Instant::now() < until, "the upgrade was not recorded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    hub.stop().await;
}

// --- the catalogue through the real binary ---------------------------------------------------

#[tokio::test]
async fn admin_firmware_add_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let out = procs::admin_ok(
        dir.path(),
        &[
            "firmware",
            "add",
            "--model",
            "PSF-B01-GL",
            "--version",
            "3.5.1",
            "--bin",
            &format!("user1.bin=https://fw.example.com/a/user1.bin,{}", DIGEST.to_uppercase()),
            "--bin",
            "user2.bin=http://10.0.0.5:8000/user2.bin",
        ],
    );
    assert!(out.contains("PSF-B01-GL 3.5.1 added (2 files)"), "{out}");
    procs::admin_ok(dir.path(), &["firmware", "add", "--model", "PSF-B01-GL", "--version", "3.10", "--bin", "u.bin=https://h/u.bin"]);
    let list = procs::admin_ok(dir.path(), &["firmware", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[1].contains("3.10") && lines[2].contains("3.5.1"), "newest first:\n{list}");
    assert!(lines[2].contains(&format!("user1.bin=https://fw.example.com/a/user1.bin,{DIGEST}")), "{list}");

    let store = procs::open_test_store(dir.path()).await;
    let latest = store.latest_firmware(&["PSF-B01-GL".to_owned()]).await.unwrap();
    assert_eq!(latest[0].version, "3.10");
    let all = store.firmware().await.unwrap();
    assert_eq!(
        all[1].bins,
        [
            FirmwareBin {
                name: "user1.bin".into(),
                download_url: "https://fw.example.com/a/user1.bin".into(),
                digest: Some(DIGEST.into())
            },
            FirmwareBin { name: "user2.bin".into(), download_url: "http://10.0.0.5:8000/user2.bin".into(), digest: None },
        ]
    );
    store.close().await;
}

#[test]
fn admin_firmware_add_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let ok_bin = "u.bin=https://fw.example.com/u.bin";
    for (args, needle) in [
        (vec!["--model", "M", "--version", "1.0", "--bin", "u.bin=ftp://fw.example.com/u.bin"], "http"),
        (vec!["--model", "M", "--version", "1.0", "--bin", "u.bin=not a url"], "URL"),
        (vec!["--model", "M", "--version", "1.0", "--bin", "https://fw.example.com/u.bin"], "NAME=URL"),
        (vec!["--model", "M", "--version", "1.0", "--bin", "u.bin=https://fw.example.com/u.bin,abc123"], "64 hex"),
        (vec!["--model", "M", "--version", "1.0", "--bin", &format!("u.bin=https://fw.example.com/u.bin,{}", "g".repeat(64))], "64 hex"),
        (vec!["--model", "M", "--version", "v1.0", "--bin", ok_bin], "--version"),
        (vec!["--model", "M", "--version", "1..0", "--bin", ok_bin], "--version"),
        (vec!["--model", "", "--version", "1.0", "--bin", ok_bin], "--model"),
        (vec!["--model", "M", "--version", "1.0", "--bin", ok_bin, "--bin", ok_bin], "twice"),
        (vec!["--model", "M", "--version", "1.0"], "--bin"),
    ] {
        let mut all = vec!["firmware", "add"];
        all.extend(args.iter().map(|s| &**s));
        let out = procs::admin(dir.path(), &all);
        assert!(!out.success(), "{all:?} was accepted\n{out}");
        assert!(out.stderr.contains(needle), "{all:?}: stderr does not mention `{needle}`\n{out}");
    }
    procs::admin_ok(dir.path(), &["firmware", "add", "--model", "M", "--version", "1.0", "--bin", ok_bin]);
    let out = procs::admin(dir.path(), &["firmware", "add", "--model", "M", "--version", "1.0", "--bin", ok_bin]);
    assert!(!out.success() && out.stderr.contains("already exists"), "{out}");
}
