//! The TLS listener: a full device register + app userOnline + update + ack round trip over wss,
//! dispatch over https, and no plain HTTP on the TLS port.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{APPID, Client, TestHub};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

const DEV: &str = "1000000001";

/// A client config that trusts exactly the hub's certificate.
fn trust_hub(hub: &TestHub) -> Arc<rustls::ClientConfig> {
    switchyard::tls::install_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&hub.cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
}

async fn wss(hub: &TestHub, tls: &Arc<rustls::ClientConfig>) -> Client {
    let url = format!("wss://localhost:{}/api/ws", hub.https.port());
    Client { ws: switchyard::emulate::connect(&url, Some(tls.clone())).await.unwrap() }
}

#[tokio::test]
async fn a_full_round_trip_over_wss_and_dispatch_over_https() {
    let hub = TestHub::start().await;
    let alice = hub.user("alice@example.com").await;
    hub.device_record(DEV, Some(&alice)).await;
    let tls = trust_hub(&hub);

    let mut dev = wss(&hub, &tls).await;
    dev.send(json!({"userAgent":"device","apikey":format!("key-{DEV}"),"deviceid":DEV,"action":"register","version":2,"romVersion":"1.0","model":"EMU","ts":1}))
        .await;
    let r = dev.recv().await;
    assert_eq!(r["error"], 0, "{r}");
    assert_eq!(r["apikey"], alice.apikey.as_str(), "{r}");
    assert!(r["config"]["hbInterval"].as_u64().is_some(), "{r}");

    let mut app = wss(&hub, &tls).await;
    app.send(json!({"action":"userOnline","version":8,"ts":1,"at":alice.at,"userAgent":"app","apikey":alice.apikey.as_str(),"appid":APPID,"nonce":"abcd1234","sequence":"1"}))
        .await;
    let r = app.recv().await;
    assert_eq!(r["error"], 0, "{r}");
    assert_eq!(r["sequence"], "1", "{r}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while hub.hub.metrics.app_sessions.load(std::sync::atomic::Ordering::Relaxed) < 1 {
        assert!(std::time::Instant::now() < deadline, "the app session never attached");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    app.send(json!({"action":"update","deviceid":DEV,"apikey":alice.apikey.as_str(),"userAgent":"app","sequence":1585297259553u64,"params":{"switch":"on"}}))
        .await;
    let cmd = dev.recv().await;
    assert_eq!(cmd["action"], "update", "{cmd}");
    assert_eq!(cmd["params"], json!({"switch":"on"}), "{cmd}");
    dev.send(json!({"error":0,"userAgent":"device","apikey":alice.apikey.as_str(),"deviceid":DEV,"sequence":cmd["sequence"]})).await;
    let reply = app.recv_text().await;
    assert!(reply.contains(r#""sequence":1585297259553"#), "{reply}");
    assert!(!reply.contains("action"), "{reply}");
    assert_eq!(serde_json::from_str::<Value>(&reply).unwrap()["error"], 0, "{reply}");

    // Dispatch over https, trusting only the hub's certificate.
    let pem = std::fs::read(&hub.cert).unwrap();
    let https = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap();
    let d: Value = https.get(format!("https://localhost:{}/dispatch/app", hub.https.port())).send().await.unwrap().json().await.unwrap();
    assert_eq!(d["error"], 0, "{d}");
    assert_eq!(d["reason"], "ok", "{d}");
    assert!(d["IP"].as_str().is_some_and(|ip| !ip.is_empty()), "{d}");
    assert!(d["domain"].as_str().is_some_and(|h| !h.is_empty()), "{d}");
    assert_eq!(d["port"], hub.https.port(), "dispatch advertises the TLS listener: {d}");

    // Plain HTTP to the TLS port is not served, and a client that does not trust the
    // certificate cannot talk to it either.
    let plain = hub.http_client().get(format!("http://{}/dispatch/app", hub.https)).send().await;
    assert!(plain.is_err(), "plain HTTP on the TLS port answered: {plain:?}");
    let untrusting =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).tls_certs_only(Vec::<reqwest::Certificate>::new()).build().unwrap();
    let r = untrusting.get(format!("https://localhost:{}/dispatch/app", hub.https.port())).send().await;
    assert!(r.is_err(), "an untrusted certificate was accepted: {r:?}");

    // The TLS sessions are the hub's real sessions: the device's close reaches the owner.
    dev.ws.close(None).await.unwrap();
    let sysmsg = app.recv().await;
    assert_eq!(sysmsg["action"], "sysmsg", "{sysmsg}");
    assert_eq!(sysmsg["params"], json!({"online": false}), "{sysmsg}");
    hub.stop().await;
}
