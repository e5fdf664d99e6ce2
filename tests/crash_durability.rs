//! No acknowledged report is lost on a crash, through the real binary: a device streams reports
//! (bursts of eight every 2 ms), the hub is killed with SIGKILL while some are unanswered, and
//! after a restart on the same store every report the hub answered `{"error":0}` is in the
//! device's history, and the device's stored state is at least as new as the last acknowledged
//! report.
//! Runs on SQLite, and on PostgreSQL with `SWITCHYARD_TEST_DATABASE_URL`.

mod procs;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use procs::{Proc, WAIT, admin_ok, command, free_port, open_test_store};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const DEVICEID: &str = "100000dead";
const FACTORY_KEY: &str = "factory-key-dead";
const EMAIL: &str = "crash@example.com";
/// Reports acknowledged before the kill.
const ACKED_BEFORE_KILL: usize = 300;
/// Reports sent back to back before a 2 ms pause.
const BURST: u64 = 8;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn serve(data: &std::path::Path, http: &str) -> Proc {
    let cmd = command(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--http",
        http,
        "--https",
        "off",
        "--metrics",
        "off",
        "--history-rows-per-device",
        "100000",
    ]);
    let mut hub = Proc::spawn("serve", cmd);
    let deadline = Instant::now() + WAIT;
    while !hub.stderr().contains("hub started") {
        assert!(hub.try_status().is_none() && Instant::now() < deadline, "the hub did not start\n{}", hub.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    hub
}

/// A registered device session.
async fn device(http: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/api/ws")).await.expect("connecting the device");
    let register = json!({"action":"register","userAgent":"device","apikey":FACTORY_KEY,"deviceid":DEVICEID,"version":2,"romVersion":"1.0","model":"EMU","ts":1});
    ws.send(Message::Text(register.to_string().into())).await.unwrap();
    let reply = next_json(&mut ws).await.expect("a register reply");
    assert_eq!(reply["error"], 0, "{reply}");
    ws
}

async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_report_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    admin_ok(&data, &["user", "add", "--email", EMAIL, "--password", "pass1234"]);
    admin_ok(&data, &["device", "add", "--deviceid", DEVICEID, "--factory-apikey", FACTORY_KEY, "--owner", EMAIL]);
    let http = format!("127.0.0.1:{}", free_port());
    let hub = serve(&data, &http);

    let (mut tx, mut rx) = device(&http).await.split();
    // Reports in bursts of `BURST` every 2 ms, each with its number as params and sequence, until
    // the socket breaks. A burst keeps reports in flight behind each answer, so the kill below
    // lands while some are unanswered (a report every 2 ms alone is often answered before the next).
    let sent = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn({
        let sent = sent.clone();
        async move {
            loop {
                for _ in 0..BURST {
                    let n = sent.load(Ordering::Relaxed);
                    let report = json!({"action":"update","deviceid":DEVICEID,"apikey":"x","userAgent":"device","sequence":n.to_string(),"params":{"n":n}});
                    if tx.send(Message::Text(report.to_string().into())).await.is_err() {
                        return;
                    }
                    sent.store(n + 1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let mut acked = BTreeSet::new();
    let mut in_flight_at_kill = None;
    loop {
        let frame = match tokio::time::timeout(WAIT, rx.next()).await.expect("a frame or the end in time") {
            Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(t.as_str()).unwrap(),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break,
        };
        if frame["error"] == 0 {
            acked.insert(frame["sequence"].as_str().expect("the report's sequence").parse::<u64>().unwrap());
        }
        if in_flight_at_kill.is_none() && acked.len() >= ACKED_BEFORE_KILL {
            // Mid-stream: reports are in flight, some of them gathered for a commit.
            let in_flight = sent.load(Ordering::Relaxed).saturating_sub(acked.len() as u64);
            if in_flight > 0 {
                hub.signal("KILL");
                in_flight_at_kill = Some(in_flight);
            }
            assert!(acked.len() < 10 * ACKED_BEFORE_KILL, "no report was ever in flight behind an answer");
        }
    }
    let in_flight = in_flight_at_kill.unwrap_or_else(|| panic!("the stream ended before the kill\n{}", hub.stderr()));
    sender.await.unwrap();
    let sent = sent.load(Ordering::Relaxed);
    let last = *acked.last().unwrap();
    drop(hub);

    // Restarted on the same store: the device's state as the hub reads it back.
    let hub = serve(&data, &http);
    let mut ws = device(&http).await;
    ws.send(Message::Text(json!({"action":"query","deviceid":DEVICEID,"apikey":"x","userAgent":"device","params":[]}).to_string().into()))
        .await
        .unwrap();
    let state = next_json(&mut ws).await.expect("the query's answer");
    let stored = state["params"]["n"].as_u64().unwrap_or_else(|| panic!("no stored state: {state}"));
    assert!(stored >= last, "the stored state ({stored}) is older than the last acknowledged report ({last})");

    // And every acknowledged report is in the history.
    let store = open_test_store(&data).await;
    let rows = store.history(DEVICEID, i64::MAX, 1_000_000).await.unwrap();
    let recorded: BTreeSet<u64> =
        rows.iter().filter_map(|h| serde_json::from_str::<Value>(&h.request).ok()?["params"]["n"].as_u64()).collect();
    let lost: Vec<u64> = acked.difference(&recorded).copied().collect();
    assert!(lost.is_empty(), "{} acknowledged reports missing from history (of {}): {lost:?}", lost.len(), acked.len());
    eprintln!(
        "sent {sent}, acknowledged {}, {in_flight} in flight at the kill, recorded {}, stored state n = {stored}",
        acked.len(),
        recorded.len()
    );
    store.close().await;
    drop(ws);
    hub.terminate();
}
