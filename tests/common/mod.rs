//! Test harness: a real hub on port 0 (plain and TLS listeners) with its own data directory,
//! seeded through the real store, and WebSocket/HTTP clients that speak the real protocol.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchyard::emulate::{ClientWs, connect};
use switchyard::ids::{DeviceId, UserKey};
use switchyard::{Config, Hub, Settings};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_util::sync::CancellationToken;

pub const APPID: &str = "test-app";
pub const SECRET: &str = "test-secret-123";
pub const PASSWORD: &str = "pass1234";

pub struct TestHub {
    pub hub: Arc<Hub>,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub shutdown: CancellationToken,
    pub cert: PathBuf,
    finished: Option<tokio::task::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

/// A seeded user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub email: String,
    pub apikey: UserKey,
    pub at: String,
}

impl TestHub {
    pub async fn start() -> TestHub {
        Self::start_with(|s| s).await
    }

    /// Starts a hub; `tune` may change settings (e.g. `ack_timeout_ms`).
    pub async fn start_with(tune: impl FnOnce(Settings) -> Settings) -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        switchyard::tls::ensure_dev_cert(&cert, &key).unwrap();
        let settings = Settings::new()
            .set("data_dir", dir.path().join("data").to_string_lossy())
            .set("http", "127.0.0.1:0")
            .set("https", "127.0.0.1:0")
            .set("tls_cert", cert.to_string_lossy())
            .set("tls_key", key.to_string_lossy());
        let config = Config::resolve(&tune(settings)).unwrap();
        let shutdown = CancellationToken::new();
        let running = switchyard::start(config, shutdown.clone()).await.unwrap();
        let (hub, http, https) = (running.hub.clone(), running.http.unwrap(), running.https.unwrap());
        hub.store.add_app(APPID, SECRET).await.unwrap();
        let finished = Some(tokio::spawn(running.finished()));
        TestHub { hub, http, https, shutdown, cert, finished, dir }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/api/ws", self.http)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Creates a user with a known password and an access token for APPID.
    pub async fn user(&self, email: &str) -> TestUser {
        let hash = switchyard::auth::hash_password(PASSWORD);
        let apikey = self.hub.store.add_user(Some(email), None, "+86", &hash, "cn").await.unwrap();
        let pair = self.hub.store.issue_tokens(&apikey, APPID, Duration::from_secs(3600), Duration::from_secs(7200)).await.unwrap();
        TestUser { email: email.to_owned(), apikey, at: pair.at }
    }

    /// Adds a device with factory key `key-<id>`, owned by `owner` when given.
    pub async fn device_record(&self, id: &str, owner: Option<&TestUser>) {
        self.hub.store.add_device(&DeviceId::new(id), &format!("key-{id}"), "EMU", 1, owner.map(|u| &u.apikey), "").await.unwrap();
    }

    pub async fn share(&self, id: &str, with: &TestUser) {
        self.hub.store.share_device(&DeviceId::new(id), &with.apikey, 15).await.unwrap();
        // Make the running hub see the change now rather than at its next poll.
        for link in self.hub.router.devices() {
            if link.deviceid.as_str() == id {
                link.set_audience(self.hub.store.audience(&link.deviceid).await.unwrap());
            }
        }
    }

    /// A raw socket, no handshake sent.
    pub async fn raw(&self) -> Client {
        Client { ws: connect(&self.ws_url(), None).await.unwrap() }
    }

    /// An app session that completed `userOnline`.
    pub async fn app(&self, user: &TestUser) -> Client {
        let mut c = self.raw().await;
        c.send(json!({"action":"userOnline","version":8,"ts":1,"at":user.at,"userAgent":"app","apikey":user.apikey.as_str(),"appid":APPID,"nonce":"abcd1234","sequence":"1"})).await;
        let reply = c.recv().await;
        assert_eq!(reply["error"], 0, "userOnline failed: {reply}");
        c
    }

    /// A device session that completed `register` (factory key `key-<id>`).
    pub async fn device(&self, id: &str) -> Client {
        let mut c = self.raw().await;
        c.send(json!({"userAgent":"device","apikey":format!("key-{id}"),"deviceid":id,"action":"register","version":2,"romVersion":"1.0","model":"EMU","ts":1})).await;
        let reply = c.recv().await;
        assert_eq!(reply["error"], 0, "register failed: {reply}");
        c
    }

    /// Stops the hub and waits until it has saved state and closed the store.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(f) = self.finished.take() {
            f.await.unwrap();
        }
    }

    pub fn http_client(&self) -> reqwest::Client {
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
    }

    /// POSTs a Sign-authenticated JSON body (exact bytes given) to `path`.
    pub async fn post_signed(&self, path: &str, body: &str) -> Value {
        self.http_client()
            .post(format!("{}{path}", self.base()))
            .header("X-CK-Appid", APPID)
            .header("Authorization", format!("Sign {}", switchyard::auth::sign(SECRET, body.as_bytes())))
            .header("Content-Type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// A test's end of a WebSocket.
pub struct Client {
    pub ws: ClientWs,
}

/// How long a test waits for a frame that should come.
pub const WAIT: Duration = Duration::from_secs(10);

impl Client {
    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::Text(v.to_string().into())).await.unwrap();
    }

    pub async fn send_text(&mut self, t: &str) {
        self.ws.send(Message::Text(t.to_owned().into())).await.unwrap();
    }

    /// The next text frame, as it was sent.
    pub async fn recv_text(&mut self) -> String {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for a frame") {
                Some(Ok(Message::Text(t))) => return t.as_str().to_owned(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        let t = self.recv_text().await;
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
    }

    /// Waits for the close frame (skipping text) and returns it.
    pub async fn recv_close(&mut self) -> Option<CloseFrame> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for close") {
                Some(Ok(Message::Close(c))) => return c,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// Asserts nothing arrives for `ms` milliseconds.
    pub async fn silent_for(&mut self, ms: u64) {
        if let Ok(f) = tokio::time::timeout(Duration::from_millis(ms), self.ws.next()).await {
            panic!("expected silence, got {f:?}");
        }
    }
}
