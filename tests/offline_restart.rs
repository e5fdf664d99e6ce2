//! Commands kept for an offline device survive a restart of the real binary on the same store:
//! queued before the restart, delivered in order after it when the device registers, and never
//! delivered again once acked (a third start delivers nothing). The session that sent them is
//! gone with the first process, and no session of the new process is taken for it.

mod common;
mod procs;

use std::time::{Duration, Instant};

use common::{APPID, Client, PASSWORD, SECRET};
use procs::{Proc, command, free_port, open_test_store};
use serde_json::{Value, json};
use switchyard::emulate::connect;
use switchyard::ids::DeviceId;

const DEV: &str = "10000000aa";

/// Starts `serve` on the data directory and waits until its WebSocket answers.
async fn serve(data: &str) -> (Proc, String) {
    let http = format!("127.0.0.1:{}", free_port());
    let hub = Proc::spawn("serve", command(&["serve", "--data-dir", data, "--http", &http, "--https", "off", "--metrics", "off"]));
    let url = format!("ws://{http}/api/ws");
    let started = Instant::now();
    while connect(&url, None).await.is_err() {
        assert!(started.elapsed() < procs::WAIT, "the hub did not listen within {:?}\n{}", procs::WAIT, hub.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (hub, url)
}

fn stop(mut hub: Proc) {
    hub.terminate();
    let status = tokio::task::block_in_place(|| hub.wait_exit());
    assert!(status.success(), "{status}\n{}", hub.stderr());
}

async fn app(url: &str, at: &str, apikey: &str) -> Client {
    let mut c = Client { ws: connect(url, None).await.unwrap() };
    c.send(json!({"action":"userOnline","version":8,"ts":1,"at":at,"userAgent":"app","apikey":apikey,"appid":APPID,"nonce":"abcd1234","sequence":"1"})).await;
    assert_eq!(c.recv().await["error"], 0);
    c
}

async fn device(url: &str) -> Client {
    let mut c = Client { ws: connect(url, None).await.unwrap() };
    c.send(json!({"userAgent":"device","apikey":format!("key-{DEV}"),"deviceid":DEV,"action":"register","version":2,"model":"EMU","ts":1}))
        .await;
    assert_eq!(c.recv().await["error"], 0, "the register answer comes first");
    c
}

async fn next(c: &mut Client) -> Value {
    loop {
        let f = c.recv().await;
        if f["action"] != "sysmsg" {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_commands_survive_a_restart_and_are_delivered_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap().to_owned();
    let (apikey, at) = {
        let store = open_test_store(&data).await;
        store.add_app(APPID, SECRET).await.unwrap();
        let hash = switchyard::auth::hash_password(PASSWORD);
        let apikey = store.add_user(Some("restart@example.com"), None, "+86", &hash, "cn").await.unwrap();
        let pair = store.issue_tokens(&apikey, APPID, Duration::from_secs(3600), Duration::from_secs(7200)).await.unwrap();
        store.add_device(&DeviceId::new(DEV), &format!("key-{DEV}"), "EMU", 1, Some(&apikey), "").await.unwrap();
        store.close().await;
        (apikey.as_str().to_owned(), pair.at)
    };

    let (first, url) = serve(&data_s).await;
    let mut sender = app(&url, &at, &apikey).await;
    for (seq, params) in [("r1", json!({"switch":"on"})), ("r2", json!({"color":"blue"}))] {
        sender
            .send(
                json!({"action":"update","deviceid":DEV,"apikey":apikey,"userAgent":"app","sequence":seq,"ts":0,"params":params,"ttl":600}),
            )
            .await;
        let reply = sender.recv().await;
        assert_eq!((reply["error"].as_i64(), reply["queued"].as_bool()), (Some(0), Some(true)), "{reply}");
    }
    drop(sender);
    stop(first);

    let (second, url) = serve(&data_s).await;
    let mut listener = app(&url, &at, &apikey).await;
    let mut dev = device(&url).await;
    for (seq, params) in [("r1", json!({"switch":"on"})), ("r2", json!({"color":"blue"}))] {
        let cmd = dev.recv().await;
        assert_eq!((cmd["sequence"].as_str(), &cmd["params"]), (Some(seq), &params), "{cmd}");
        dev.send(json!({"error":0,"userAgent":"device","apikey":apikey,"deviceid":DEV,"sequence":seq})).await;
        // A session of the new process is not the sender: it hears the echo, not the ack.
        let echo = next(&mut listener).await;
        assert_eq!((echo["action"].as_str(), &echo["params"]), (Some("update"), &params), "{echo}");
    }
    dev.silent_for(300).await;
    drop(dev);
    drop(listener);
    stop(second);

    let (third, url) = serve(&data_s).await;
    let mut dev = device(&url).await;
    dev.silent_for(500).await;
    drop(dev);
    stop(third);
    let store = open_test_store(&data).await;
    assert!(store.queued_commands(&DeviceId::new(DEV), 0).await.unwrap().is_empty());
    store.close().await;
}
