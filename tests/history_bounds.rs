//! History stays within its bounds on disk, through real sockets and the REST API: a device
//! reporting many large reports keeps at most `history_rows_per_device` rows and
//! `history_bytes_per_device` bytes, large params are recorded as a size marker, and the history
//! route shows the marker.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::rest::api;
use common::{Client, TestHub, wait_until_async};
use serde_json::{Value, json};
use switchyard::ids::DeviceId;

const ROWS: u64 = 40;
const BYTES: u64 = 16_384;

/// Sends `n` reports of a `blob` of `size` bytes (and a counter) and reads their acks.
async fn reports(device: &mut Client, id: &str, n: usize, size: usize) {
    for i in 0..n {
        let blob = "x".repeat(size);
        device.send(json!({"action":"update","deviceid":id,"apikey":"x","userAgent":"device","params":{"n":i,"blob":blob}})).await;
        let ack = device.recv().await;
        assert_eq!(ack["error"], 0, "{ack}");
    }
}

#[tokio::test]
async fn a_device_reporting_large_params_stays_within_its_rows_and_bytes() {
    let hub =
        TestHub::start_with(|s| s.set("history_rows_per_device", ROWS.to_string()).set("history_bytes_per_device", BYTES.to_string()))
            .await;
    let alice = hub.user("alice@x.cc").await;
    hub.device_record("1000000001", Some(&alice)).await;
    hub.device_record("1000000002", Some(&alice)).await;
    let mut big = hub.device("1000000001").await;
    let mut medium = hub.device("1000000002").await;

    // 60 KB params, 200 times: recorded as markers, bounded by rows.
    reports(&mut big, "1000000001", 200, 60_000).await;
    // Just under the 2 KiB marker threshold, 100 times: kept in full, bounded by bytes.
    reports(&mut medium, "1000000002", 100, 1_900).await;

    let recorded = || hub.hub.metrics.history_recorded.load(Ordering::Relaxed);
    let store = hub.hub.store.clone();
    wait_until_async("every report is recorded and both devices are trimmed", || {
        let store = store.clone();
        let done = recorded() >= 300;
        async move {
            let big = store.history_usage(&DeviceId::new("1000000001")).await.unwrap();
            let medium = store.history_usage(&DeviceId::new("1000000002")).await.unwrap();
            done && big.rows <= ROWS && medium.bytes <= BYTES
        }
    })
    .await;
    // The writer has finished: nothing grows past the bounds afterwards either.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let big_usage = store.history_usage(&DeviceId::new("1000000001")).await.unwrap();
    let medium_usage = store.history_usage(&DeviceId::new("1000000002")).await.unwrap();
    assert!(big_usage.rows <= ROWS && big_usage.bytes <= BYTES, "{big_usage:?}");
    assert!(big_usage.rows >= ROWS * 9 / 10 - 1, "trimmed only down to nine tenths: {big_usage:?}");
    assert!(medium_usage.bytes <= BYTES && medium_usage.rows <= ROWS, "{medium_usage:?}");
    assert!(medium_usage.rows >= 5, "{medium_usage:?}");
    assert!(hub.hub.metrics.history_trimmed.load(Ordering::Relaxed) >= 200 + 100 - ROWS - 10);
    assert_eq!(hub.hub.metrics.history_truncated.load(Ordering::Relaxed), 200);

    // The newest entry is there, truncated, with the original size and keys.
    let a = api(&hub, &alice).get("/v2/device/history", "deviceid=1000000001&num=30").await;
    let list = a.ok()["histories"].as_array().cloned().unwrap();
    assert_eq!(list.len(), 30);
    let request: Value = serde_json::from_str(list[0]["request"].as_str().unwrap()).unwrap();
    let sent = json!({"n":199,"blob":"x".repeat(60_000)}).to_string().len();
    assert_eq!(request["params"], json!({"_truncated":{"bytes":sent,"keys":["blob","n"]}}), "{request}");
    // The oldest kept is recent: the first reports went first.
    let oldest: Value = {
        let all = hub.hub.store.history("1000000001", i64::MAX, 1000).await.unwrap();
        serde_json::from_str(&all.last().unwrap().request).unwrap()
    };
    assert!(oldest["params"]["_truncated"].is_object());

    // A report under the threshold is kept as sent.
    let a = api(&hub, &alice).get("/v2/device/history", "deviceid=1000000002&num=1").await;
    let request: Value = serde_json::from_str(a.ok()["histories"][0]["request"].as_str().unwrap()).unwrap();
    assert_eq!(request["params"]["n"], 99);
    assert_eq!(request["params"]["blob"].as_str().unwrap().len(), 1_900);
    hub.stop().await;
}

/// Devices fed alike cross their bound in the same commits; the writer trims a few per commit,
/// and keeps trimming once the traffic stops, so every one of them ends within its bound.
#[tokio::test]
async fn devices_crossing_their_bound_together_are_all_trimmed_after_the_burst() {
    let hub = TestHub::start_with(|s| s.set("history_rows_per_device", ROWS.to_string())).await;
    let alice = hub.user("alice@x.cc").await;
    let ids: Vec<String> = (1..=8).map(|i| format!("10000001{i:02}")).collect();
    let mut devices = Vec::new();
    for id in &ids {
        hub.device_record(id, Some(&alice)).await;
        devices.push(hub.device(id).await);
    }
    // Round after round, one report per device, all sent before any answer is read: the devices
    // pass ROWS in the same groups.
    for round in 0..ROWS + 1 {
        for (d, id) in devices.iter_mut().zip(&ids) {
            d.send(json!({"action":"update","deviceid":id,"apikey":"x","userAgent":"device","params":{"n":round}})).await;
        }
        for d in devices.iter_mut() {
            let ack = d.recv().await;
            assert_eq!(ack["error"], 0, "{ack}");
        }
    }
    // Nothing more is sent: the trims that waited must still happen.
    let store = hub.hub.store.clone();
    let ids2 = ids.clone();
    wait_until_async("every device is back within its bound", || {
        let (store, ids) = (store.clone(), ids2.clone());
        async move {
            for id in &ids {
                if store.history_usage(&DeviceId::new(id.as_str())).await.unwrap().rows > ROWS {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(hub.hub.metrics.history_trimmed.load(Ordering::Relaxed) >= 8);
}
