//! What the fuzz targets share: one real hub per fuzzing process, started in-process on a
//! throwaway SQLite store (in /dev/shm when there is one; listeners on loopback port 0, nothing else reachable), seeded with an
//! app, a user with an access token and a device the user owns, and the runtime that drives it.
//! Inputs reach the hub's own code: the session handlers ([`switchyard::session::fuzzing`]), the
//! REST router ([`switchyard::http::app`]), the Sign check.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use switchyard::hub::Hub;
use switchyard::ids::{DeviceId, SessionId, UserKey};
use switchyard::mailbox::{Outbox, SessionHandle};
use switchyard::router::DeviceAttach;
use switchyard::{Config, Settings};
use tokio_util::sync::CancellationToken;

pub const APPID: &str = "fuzz-app";
pub const SECRET: &str = "fuzz-secret-0123";
pub const EMAIL: &str = "owner@example.com";
pub const PASSWORD: &str = "pass1234";
pub const DEVICE: &str = "1000000001";

/// The hub and what was seeded into it.
pub struct Fixture {
    pub rt: tokio::runtime::Runtime,
    pub hub: Arc<Hub>,
    pub user: UserKey,
    /// The user's access token for [`APPID`].
    pub at: String,
    pub device: DeviceId,
    /// The device's session as the router knows it (attached only by [`Fixture::with_device`]).
    pub device_session: SessionId,
    /// What the router queued for the device; drained after every input.
    outbox: Mutex<Option<Outbox>>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// The process's hub, without the device online: REST commands for it answer at once.
    pub fn get() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| Fixture::start(false))
    }

    /// The process's hub with the device online (attached to the router with an outbox the
    /// harness drains), so app commands are routed to it.
    pub fn with_device() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| Fixture::start(true))
    }

    fn start(online: bool) -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a runtime");
        // In memory when the machine has a tmpfs there: the store's commits need no disk.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("a temp dir");
        let settings = Settings::new()
            .set("data_dir", dir.path().join("data").to_string_lossy())
            .set("http", "127.0.0.1:0")
            .set("https", "off")
            .set("metrics", "off")
            .set("public_ws", "127.0.0.1:8080")
            .set("public_ip", "127.0.0.1")
            .set("ack_timeout_ms", "50");
        let config = Config::resolve(&settings).expect("fuzz settings are valid");
        let (hub, user, at, device, device_session, outbox) = rt.block_on(async {
            let running = switchyard::start(config, CancellationToken::new()).await.expect("the hub starts");
            let hub = running.hub.clone();
            // The node runs until the process ends; its writer and pollers live on `rt`.
            std::mem::forget(running);
            hub.store.add_app(APPID, SECRET).await.expect("seed app");
            let hash = switchyard::auth::hash_password(PASSWORD);
            let user = hub.store.add_user(Some(EMAIL), None, "+86", &hash, "cn").await.expect("seed user");
            let pair =
                hub.store.issue_tokens(&user, APPID, Duration::from_secs(86_400), Duration::from_secs(86_400)).await.expect("tokens");
            let device = DeviceId::new(DEVICE);
            hub.store.add_device(&device, "fuzz-factory-key", "FUZZ", 1, Some(&user), "").await.expect("seed device");
            let (handle, outbox, _mailbox) = SessionHandle::new(hub.config.outbox_capacity);
            let session = handle.id;
            let outbox = if online {
                let (record, audience) = hub.store.device_with_audience(DEVICE).await.expect("store").expect("the device");
                let state = switchyard::device_state::DeviceState::from_json(&record.params);
                hub.router.attach_device(DeviceAttach { deviceid: device.clone(), session: handle, audience, state, since: 0 });
                Some(outbox)
            } else {
                None
            };
            (hub, user, pair.at, device, session, outbox)
        });
        Fixture { rt, hub, user, at, device, device_session: device_session, outbox: Mutex::new(outbox), _dir: dir }
    }

    /// Drops whatever the router queued for the device, as its socket would have written it.
    pub fn drain(&self) {
        if let Some(outbox) = self.outbox.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            while outbox.try_recv().is_some() {}
        }
    }
}
