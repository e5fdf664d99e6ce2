mod common;

use common::TestHub;
use serde_json::json;

#[tokio::test]
async fn app_switches_a_device() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record("1000000001", Some(&alice)).await;
    let mut dev = hub.device("1000000001").await;
    let mut app = hub.app(&alice).await;
    app.send(json!({"action":"update","deviceid":"1000000001","apikey":alice.apikey.as_str(),"userAgent":"app","sequence":"42","params":{"switch":"on"}})).await;
    let cmd = dev.recv().await;
    assert_eq!(cmd["action"], "update");
    assert_eq!(cmd["sequence"], "42");
    dev.send(json!({"error":0,"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":"1000000001","sequence":"42"})).await;
    let reply = app.recv_text().await;
    assert!(reply.contains(r#""sequence":"42""#), "{reply}");
    assert!(!reply.contains("action"), "{reply}");
    hub.stop().await;
}
