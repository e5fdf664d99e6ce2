//! A device's capacity is fair between the users who may command it: a sharee flooding a slow
//! device from many sessions cannot lock its owner out. The sharee is held to a quota of
//! waiting commands (504 "device is busy" beyond it, for them only) and the owner's commands go
//! through at the device's pace.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Client, TestHub};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const DEV: &str = "1000000001";

fn update(owner: &str, me: &str, seq: &str) -> Value {
    json!({"action":"update","deviceid":DEV,"apikey":owner,"selfApikey":me,"userAgent":"app","sequence":seq,"ts":0,"params":{"switch":"on"}})
}

/// The next answer to a command on `c` (not an echo or report).
async fn answer(c: &mut Client) -> Value {
    loop {
        let v = c.recv().await;
        if v.get("action").is_none() {
            return v;
        }
    }
}

#[tokio::test]
async fn a_sharee_flooding_a_slow_device_cannot_lock_its_owner_out() {
    // A long ack timeout: on a loaded test machine the device's pace, not the deadline, is what
    // the owner waits for.
    let hub = TestHub::start_with(|s| s.set("ack_timeout_ms", "10000")).await;
    let alice = hub.user("alice@example.com").await;
    let sam = hub.user("sam@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    hub.share(DEV, &sam).await;
    let owner_key = alice.apikey.as_str().to_owned();

    // The device acks one command every 20 ms, in arrival order.
    let dev = hub.device(DEV).await;
    let (mut dev_tx, mut dev_rx) = dev.ws.split();
    let device = tokio::spawn(async move {
        while let Some(Ok(m)) = dev_rx.next().await {
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["action"] != "update" {
                continue;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let ack = json!({"error":0,"deviceid":DEV,"apikey":v["apikey"],"sequence":v["sequence"]});
            if dev_tx.send(Message::Text(ack.to_string().into())).await.is_err() {
                break;
            }
        }
    });

    // Ten sessions of the sharee send as fast as they can: each keeps 100 commands in flight.
    let stop = Arc::new(AtomicBool::new(false));
    let (busy, acked) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut flood = Vec::new();
    for s in 0..10 {
        let c = hub.app(&sam).await;
        let (stop, busy, acked, owner, me) = (stop.clone(), busy.clone(), acked.clone(), owner_key.clone(), sam.apikey.as_str().to_owned());
        flood.push(tokio::spawn(async move {
            let (mut tx, mut rx) = c.ws.split();
            let mut n = 0u64;
            for _ in 0..100 {
                n += 1;
                tx.send(Message::Text(update(&owner, &me, &format!("s{s}-{n}")).to_string().into())).await.unwrap();
            }
            while !stop.load(Ordering::Relaxed) {
                let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(Duration::from_millis(200), rx.next()).await else { continue };
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v.get("action").is_some() {
                    continue;
                }
                match v["error"].as_i64() {
                    Some(0) => acked.fetch_add(1, Ordering::Relaxed),
                    _ => busy.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
                if tx.send(Message::Text(update(&owner, &me, &format!("s{s}-{n}")).to_string().into())).await.is_err() {
                    break;
                }
            }
        }));
    }
    // Let the flood fill whatever it can.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The owner's commands, one after another, all succeed.
    let mut owner_app = hub.app(&alice).await;
    let started = Instant::now();
    for i in 0..4 {
        let seq = format!("o{i}");
        owner_app.send(update(&owner_key, &owner_key, &seq)).await;
        let r = answer(&mut owner_app).await;
        assert_eq!((r["error"].as_i64(), r["sequence"].as_str()), (Some(0), Some(seq.as_str())), "owner command {i}: {r}");
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        let _ = f.await;
    }
    device.abort();
    let (busy, acked) = (busy.load(Ordering::Relaxed), acked.load(Ordering::Relaxed));
    eprintln!("owner: 4 commands in {took:?}; sharee: {acked} acked, {busy} refused");
    assert!(busy > 0, "the sharee was held to a quota");
    assert!(acked > 0, "the sharee's commands still go through at the device's pace");
    hub.stop().await;
}
