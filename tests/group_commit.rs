//! Group commit, through real sockets: a device's report is answered `{"error":0}` only once it
//! is committed, and `{"error":500}` when the store cannot take it (never a false ack); an app's
//! `update` the device acked is answered after its state is committed, with 500 when that failed.
//! Answers keep the order of the frames they answer.

mod common;

use common::{TestHub, WAIT};
use serde_json::json;
use sqlx::AssertSqlSafe;

/// Makes a table unwritable (or writable again) behind the hub's back.
async fn rename_table(hub: &TestHub, from: &str, to: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&hub.store_url()).await.unwrap();
    sqlx::query(AssertSqlSafe(format!("ALTER TABLE {from} RENAME TO {to}"))).execute(&pool).await.unwrap();
    pool.close().await;
}

#[tokio::test]
async fn a_report_the_store_cannot_take_is_answered_with_an_error() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@x.cc").await;
    hub.device_record("1000000001", Some(&alice)).await;
    let mut device = hub.device("1000000001").await;
    let mut app = hub.app(&alice).await;
    let report = |n: u64| json!({"action":"update","deviceid":"1000000001","apikey":"x","userAgent":"device","sequence":format!("r{n}"),"params":{"n":n}});

    // Committed: stored before the answer came.
    device.send(report(1)).await;
    let ack = device.recv().await;
    assert_eq!((ack["error"].as_i64(), ack["sequence"].as_str()), (Some(0), Some("r1")), "{ack}");
    let stored = hub.hub.store.device_record("1000000001").await.unwrap().unwrap().params;
    assert!(stored.contains("\"n\":1"), "{stored}");
    let _ = app.recv().await; // the report's fan-out

    // The store fails (neither history rows nor device states can be written): three reports and
    // a date in a row are all answered, in order, and no report is acked.
    rename_table(&hub, "history", "history_away").await;
    rename_table(&hub, "devices", "devices_away").await;
    for n in 2..=4 {
        device.send(report(n)).await;
    }
    device.send(json!({"action":"date","deviceid":"1000000001","apikey":"x","userAgent":"device","sequence":"d"})).await;
    for n in 2..=4 {
        let answer = device.recv().await;
        assert_eq!(answer["sequence"], format!("r{n}"), "{answer}");
        assert_eq!(answer["error"], 500, "{answer}");
    }
    let date = device.recv().await;
    assert_eq!((date["error"].as_i64(), date["sequence"].as_str()), (Some(0), Some("d")), "{date}");
    assert!(hub.hub.metrics.commit_failures.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    // An app's update the device acks: its state cannot be committed, so the app hears 500.
    app.send(json!({"action":"update","deviceid":"1000000001","apikey":"","userAgent":"app","sequence":"u1","params":{"switch":"on"}}))
        .await;
    let cmd = loop {
        let f = device.recv().await;
        if f["action"] == "update" {
            break f;
        }
    };
    device.send(json!({"error":0,"deviceid":"1000000001","userAgent":"device","sequence":cmd["sequence"].clone()})).await;
    let answer = loop {
        let f = app.recv().await;
        if f["sequence"] == "u1" {
            break f;
        }
    };
    assert_eq!(answer["error"], 500, "{answer}");

    // The store recovers: reports are acked again, and the state the failed groups could not
    // save is saved with them.
    rename_table(&hub, "devices_away", "devices").await;
    rename_table(&hub, "history_away", "history").await;
    device.send(report(5)).await;
    let ack = tokio::time::timeout(WAIT, device.recv()).await.unwrap();
    assert_eq!((ack["error"].as_i64(), ack["sequence"].as_str()), (Some(0), Some("r5")), "{ack}");
    let stored = hub.hub.store.device_record("1000000001").await.unwrap().unwrap().params;
    assert!(stored.contains("\"n\":5") && stored.contains("\"switch\":\"on\""), "{stored}");
    hub.stop().await;
}
