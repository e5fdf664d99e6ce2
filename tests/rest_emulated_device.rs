//! The REST status route driving the real device emulator (`switchyard emulate device`, the
//! binary) through a running hub: a command reaches the device, the device applies and reports
//! it, the REST answer carries its ack; a device that never acks gives 504 at the ack deadline;
//! deleting the device sends it `deleteNotify`.

mod common;
mod procs;

use common::TestHub;
use common::rest::api;
use procs::{Proc, command};
use serde_json::{Value, json};

fn is_event(line: &str, event: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| v["event"] == event)
}

/// Starts the emulator for `id` (factory key `key-<id>`, as `TestHub::device_record` makes it)
/// and waits until it has registered.
fn emulator(hub: &TestHub, id: &str, extra: &[&str]) -> Proc {
    let server = hub.base();
    let key = format!("key-{id}");
    let mut args = vec!["emulate", "device", "--deviceid", id, "--factory-apikey", key.as_str(), "--server", server.as_str()];
    args.extend_from_slice(extra);
    let mut device = Proc::spawn("device", command(&args));
    tokio::task::block_in_place(|| device.wait_line("a registered event", |l| is_event(l, "registered")));
    device
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_status_commands_the_emulated_device() {
    let hub = TestHub::start_with(|s| s.set("ack_timeout_ms", "1500")).await;
    let alice = hub.user("rest-driver@example.com").await;
    hub.device_record("e000000001", Some(&alice)).await;
    hub.device_record("e000000002", Some(&alice)).await;
    let a = api(&hub, &alice);
    let mut lamp = emulator(&hub, "e000000001", &[]);

    a.post("/v2/device/thing/status", json!({"type": 1, "id": "e000000001", "params": {"switch": "on"}})).await.ok();
    tokio::task::block_in_place(|| {
        lamp.wait_line("the device applying switch on", |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v["event"] == "state" && v["params"]["switch"] == "on")
        })
    });
    // The device's own report is what changes the state the API shows.
    let mut seen = Value::Null;
    for _ in 0..50 {
        seen = a.get("/v2/device/thing/status", "type=1&id=e000000001&params=switch").await.ok().clone();
        if seen["params"]["switch"] == "on" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen["params"], json!({"switch": "on"}));

    let batch = a
        .post("/v2/device/thing/batch-status", json!({"thingList": [{"type": 1, "id": "e000000001", "params": {"switch": "off"}}, {"type": 1, "id": "e000000002", "params": {"switch": "off"}}], "timeout": 3000}))
        .await;
    let resp = &batch.ok()["respList"];
    assert_eq!(resp[0]["error"], 0, "{resp}");
    assert_eq!(resp[1]["error"], 30022, "an offline device: {resp}");

    // A device that never acks: 504 once the ack deadline has passed.
    let _mute = emulator(&hub, "e000000002", &["--mute"]);
    let started = std::time::Instant::now();
    a.post("/v2/device/thing/status", json!({"type": 1, "id": "e000000002", "params": {"switch": "on"}})).await.fails(504);
    assert!(started.elapsed() >= std::time::Duration::from_millis(1400), "answered before the deadline: {:?}", started.elapsed());

    // Deleting the device tells it.
    a.delete("/v2/device", "deviceid=e000000001").await.ok();
    tokio::task::block_in_place(|| lamp.wait_line("deleteNotify", |l| l.contains("deleteNotify")));
    hub.stop().await;
}
