//! Concurrent writers on one store: REST changes that read before they write, racing each other
//! and the state writer, must wait for their turn rather than fail ("database is locked" on
//! SQLite answered as 500).

mod common;

use common::TestHub;
use common::rest::api;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_read_then_write_changes_all_succeed() {
    let hub = TestHub::start().await;
    let alice = hub.user("racer@example.com").await;
    hub.device_record("b000000001", Some(&alice)).await;
    let a = api(&hub, &alice);
    let home = a.get("/v2/family", "").await.ok()["currentFamilyId"].as_str().unwrap().to_owned();
    let room =
        a.post("/v2/family/room", json!({"familyid": home, "name": "Hall", "sort": 1})).await.ok()["id"].as_str().unwrap().to_owned();
    let mut device = hub.device("b000000001").await;
    let reports = async {
        for i in 0..200 {
            device
                .send(json!({"action": "update", "deviceid": "b000000001", "apikey": "x", "userAgent": "device", "params": {"n": i}}))
                .await;
            device.recv().await;
        }
    };
    let changes = futures_util::future::join_all((0..40).map(|i| {
        let (a, home, room) = (&a, home.clone(), room.clone());
        async move {
            match i % 4 {
                0 => a.put("/v2/family", json!({"id": home, "name": format!("Home {i}")})).await,
                1 => a.put("/v2/family/room", json!({"id": room, "name": format!("Hall {i}")})).await,
                2 => a.post("/v2/device/update-info", json!({"deviceid": "b000000001", "name": format!("Lamp {i}")})).await,
                _ => a.post("/v2/device/tags", json!({"deviceid": "b000000001", "type": "merge", "tags": {format!("k{i}"): i}})).await,
            }
        }
    }));
    let ((), answers) = tokio::join!(reports, changes);
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer.error, 0, "change {i} failed: {answer:?}");
    }
    hub.stop().await;
}
