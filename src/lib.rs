//! Switchyard: a self-hostable realtime device-control hub speaking the eWeLink/CoolKit v2
//! protocol.
//!
//! Apps and devices hold WebSocket sessions at `/api/ws`; an app's command is routed to its
//! device's socket and the device's ack back to exactly that app session (or `504`); device
//! reports fan out to every session of the owner and the users it is shared with. Beside the
//! sockets, the HTTP side serves dispatch and the REST API.
//!
//! # Layout
//!
//! - [`config`]: settings from flags, environment and TOML, validated in one pass.
//! - [`ids`], [`protocol`]: identifiers and the wire frames (no I/O).
//! - [`server`]: accept loops, TLS, connection cap; [`drain`] closes the sessions at shutdown, at
//!   once or at a bounded rate; [`tls`] loads or generates certificates.
//! - [`http`]: the axum router: dispatch, user routes, the WebSocket upgrade.
//! - [`session`]: one task per socket: handshake, app and device sessions, heartbeats.
//! - [`registry`], [`router`]: who is online where; routing, pending acks and fan-out.
//! - [`store`]: the SQLite store; [`state`]: batched state saves and sharing reloads.
//! - [`permit`]: what a sharee's share permit lets them change.
//! - [`wechat`]: the WeChat connector (seed 001) and its background work, beside the sessions.
//! - [`alarm`]: threshold alarm rules and their evaluator, fed by device reports without blocking.
//! - [`offline`]: commands kept (in the store) for devices that are offline, with a `ttl`;
//!   [`command`] delivers them when the device registers.
//! - [`auth`]: Sign, password hashing, per-account lockout; [`metrics`]: counters, served at
//!   `/metrics` by the [`operator`] listener, beside the operator [`dashboard`] (login, live
//!   counters and devices over Server-Sent Events, operators' commands).
//! - [`verify`]: verification codes and the [`verify::CodeSender`] seam; [`mail`] sends them (and
//!   share invites) by SMTP with retries, in the background.
//! - [`cli`], [`emulate`]: the `switchyard` command line and the device/app emulators.
//!
//! See `ARCHITECTURE.md` for how a frame travels from an app to a device and back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod acl;
pub mod alarm;
pub mod alloc;
pub mod audience;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod command;
pub mod config;
pub mod conn;
pub mod dashboard;
pub mod device_state;
pub mod drain;
pub mod emulate;
pub mod http;
pub mod hub;
pub mod ids;
pub mod mail;
pub mod mailbox;
pub mod metrics;
pub mod offline;
pub mod operator;
pub mod permit;
pub mod protocol;
pub mod rate;
pub mod recorder;
pub mod router;
pub mod server;
pub mod session;
pub mod store;
pub mod sync;
pub mod tls;
pub mod verify;
pub mod wechat;

pub use config::{Config, Settings};
pub use hub::Hub;

use crate::metrics::Metrics;
use crate::recorder::Recorder;
use crate::router::{LocalRouter, Quota, Router};
use crate::store::Store;

/// The IP `/dispatch` gives alongside the domain: the host itself when it is an IP, else what it
/// resolves to now. Warns when clients could not use the answer.
/// How the recorder writes, from the settings.
fn recorder_options(config: &Config) -> recorder::Options {
    let bounds = recorder::HistoryBounds {
        rows_per_device: config.history_rows_per_device,
        bytes_per_device: config.history_bytes_per_device,
        bytes_total: config.history_bytes_total,
        params_max: config.history_params_max_bytes,
    };
    recorder::Options { bounds, commit_window: config.commit_window }
}

async fn advertised_ip((host, port): &(String, u16)) -> String {
    let ip = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => tokio::time::timeout(Duration::from_secs(2), tokio::net::lookup_host((host.as_str(), *port)))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|mut a| a.next())
            .map(|a| a.ip()),
    };
    match ip {
        Some(ip) if ip.is_unspecified() => {
            tracing::warn!(%ip, "dispatch would advertise an unspecified address; set --public-ws (and --public-ip)");
            ip.to_string()
        }
        Some(ip) => ip.to_string(),
        None => {
            tracing::warn!(%host, "cannot resolve the public host; dispatch advertises it as IP too (set --public-ip)");
            host.clone()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    WeChat(#[from] wechat::WeChatError),
    #[error(transparent)]
    Mail(#[from] mail::MailSetupError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A started node.
pub struct Running {
    pub hub: Arc<Hub>,
    /// Bound addresses (useful when the configuration asked for port 0).
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    /// The operator listener's address, when it is on.
    pub metrics: Option<SocketAddr>,
    writer_stop: CancellationToken,
    writer: tokio::task::JoinHandle<()>,
    acl: tokio::task::JoinHandle<()>,
}

/// Opens the store, binds the listeners and starts serving. Stop it by cancelling `shutdown`,
/// then await [`Running::finished`].
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    tls::install_provider();
    let store = Store::open(&config.data_dir, config.database_url.as_deref()).await?;
    let tls_config = match config.https {
        None => None,
        Some(_) => {
            if config.tls_generate && tls::ensure_dev_cert(&config.tls_cert, &config.tls_key)? {
                tracing::warn!(cert = %config.tls_cert.display(), "generated a self-signed development certificate; configure tls_cert/tls_key for real use");
            }
            Some(tls::server_config(&config.tls_cert, &config.tls_key)?)
        }
    };
    let bind = |addr: SocketAddr| async move { server::bind(addr).await.map_err(|source| StartError::Bind { addr, source }) };
    let http = match config.http {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let https = match config.https {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let operator = match config.metrics {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
    let metrics_addr = operator.as_ref().and_then(|l| l.local_addr().ok());
    let https_addr = https.as_ref().and_then(|l| l.local_addr().ok());
    let public_ws = config.public_ws.clone().unwrap_or_else(|| {
        let a = https_addr.or(http_addr).expect("at least one listener is configured");
        (a.ip().to_string(), a.port())
    });
    let public_ip = match &config.public_ip {
        Some(ip) => ip.clone(),
        None => advertised_ip(&public_ws).await,
    };

    let metrics = Arc::new(Metrics::default());
    let writer_stop = CancellationToken::new();
    let (recorder, dirty, writer) = Recorder::start(store.clone(), metrics.clone(), recorder_options(&config), writer_stop.clone());
    let local = LocalRouter::new(metrics.clone(), dirty, config.max_frame_bytes, Quota { per_user: config.max_device_queue_per_user });
    let (router, cluster): (Arc<dyn Router>, _) = match &config.cluster {
        Some(url) => {
            let node = if config.node_id.is_empty() { cluster::default_node_id() } else { config.node_id.clone() };
            let settings = cluster::Settings { url: url.clone(), name: config.cluster_name.clone(), node, ack_timeout: config.ack_timeout };
            let advert = cluster::nodes::Advert { host: public_ws.0.clone(), port: public_ws.1, ip: public_ip.clone() };
            let c =
                cluster::ClusterRouter::start(settings, local, store.clone(), recorder.clone(), metrics.clone(), advert, shutdown.clone())
                    .await?;
            (c.clone(), Some(c))
        }
        None => (Arc::new(local), None),
    };
    let acl_sync = Arc::new(acl::Acl::new(store.clone(), router.clone()).await?);
    if let Some(c) = &cluster {
        c.set_acl(acl_sync.clone());
    }
    let acl = tokio::spawn(acl_sync.clone().watch(Duration::from_secs(2), shutdown.clone()));
    let tasks = TaskTracker::new();
    let codes: Arc<dyn verify::CodeSender> = match (&config.smtp_url, &config.mail_from) {
        (Some(url), Some(from)) => {
            tracing::info!(relay = %config::redact_url(url), from = %from, "mail goes out by SMTP");
            Arc::new(mail::SmtpSender::new(url, from, &config.data_dir, tasks.clone(), shutdown.clone())?)
        }
        _ => Arc::new(verify::OutboxSender::new(&config.data_dir)),
    };
    let wechat = wechat::WeChat::new(&config.wechat_api_base, wechat::Options::default())?;
    let lockout = Arc::new(auth::lockout::Lockout::new(auth::lockout::Policy::new(config.auth_failures, config.auth_lockout_max)));
    let rate_counts = Arc::new(rate::RateLimiter::default());
    if let Some(c) = &cluster {
        c.share_lockout(lockout.clone());
        c.share_rate_limit(rate_counts.clone());
    }
    http::ratelimit::warn_if_exempt_behind_a_proxy(&config);
    let wechat_work = wechat::Work::new(store.clone(), wechat.clone(), tasks.clone(), shutdown.clone());
    let (alarms, alarm_queue) = alarm::Alarms::new();
    alarms.load(&store).await?;
    let alarms = Arc::new(alarms);
    let evaluator = Arc::new(alarm::Evaluator {
        alarms: alarms.clone(),
        router: router.clone(),
        store: store.clone(),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
        wechat_work: wechat_work.clone(),
    });
    let (offline, delivery_requests) = offline::Offline::new(config.offline_queue_per_device, config.offline_ttl_max);
    offline.load(&store).await?;
    let offline = Arc::new(offline);
    let hub = Arc::new(Hub {
        config,
        store,
        router,
        metrics,
        hasher: auth::Hasher::new(2),
        recorder,
        shutdown,
        sessions_end: CancellationToken::new(),
        tasks,
        acl: acl_sync,
        lockout,
        rate_counts,
        codes,
        wechat,
        wechat_work,
        alarms,
        offline,
        public_ws,
        public_ip,
        cluster,
    });
    tokio::spawn(drain::run(hub.clone()));
    hub.tasks.spawn(alarm::run(evaluator, alarm_queue));
    hub.tasks.spawn(command::run_deliveries(hub.clone(), delivery_requests));
    hub.tasks.spawn(hub.offline.clone().expire(hub.store.clone(), hub.router.clone(), hub.recorder.clone(), hub.shutdown.clone()));
    let limit = Arc::new(Semaphore::new(hub.config.max_connections));
    let app = http::app(hub.clone());
    if let Some(l) = http {
        tracing::info!(addr = ?http_addr, "listening for HTTP and WS");
        tokio::spawn(server::serve(hub.clone(), app.clone(), l, None, limit.clone()));
    }
    if let (Some(l), Some(tls)) = (https, tls_config) {
        tracing::info!(addr = ?https_addr, "listening for HTTPS and WSS");
        tokio::spawn(server::serve(hub.clone(), app, l, Some(tls.into()), limit));
    }
    if let Some(l) = operator {
        tracing::info!(addr = ?metrics_addr, "listening for operators (/metrics)");
        if metrics_addr.is_some_and(|a| !a.ip().is_loopback()) {
            tracing::warn!(addr = ?metrics_addr, "the operator listener is not on loopback: keep it behind a firewall");
        }
        let limit = Arc::new(Semaphore::new(operator::MAX_CONNECTIONS));
        tokio::spawn(server::serve(hub.clone(), operator::app(hub.clone()), l, None, limit));
    }
    let store_at = match &hub.config.database_url {
        Some(url) => config::redact_url(url),
        None => hub.config.data_dir.join("switchyard.db").display().to_string(),
    };
    tracing::info!(public = ?hub.public_ws, region = %hub.config.region, store = %store_at, "hub started");
    Ok(Running { hub, http: http_addr, https: https_addr, metrics: metrics_addr, writer_stop, writer, acl })
}

impl Running {
    /// Waits for shutdown to be requested, then for sessions to close, then saves state.
    pub async fn finished(self) {
        self.hub.shutdown.cancelled().await;
        // Sessions close at once or as the node drains (at most `drain_timeout`).
        self.hub.sessions_end.cancelled().await;
        self.hub.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.hub.tasks.wait()).await.is_err() {
            tracing::warn!(left = self.hub.tasks.len(), "some connections did not finish in time");
        }
        if let Some(cluster) = &self.hub.cluster {
            cluster.flush().await;
        }
        self.writer_stop.cancel();
        let _ = self.writer.await;
        let _ = self.acl.await;
        self.hub.store.close().await;
        tracing::info!("hub stopped");
    }
}
