//! The Switchyard hub under test. Either started here (a child `switchyard serve` with a temp
//! data dir, free loopback ports, a generated TLS certificate, a connection cap above this
//! machine's file limit and `RUST_LOG=warn`, killed when dropped) or one someone else started
//! (`--hub-url`, `--hub-pid`, `--data-dir`). Seeding opens the same SQLite store from this
//! process while the hub runs (WAL mode allows it): app id, users with access tokens, devices
//! with factory keys, shares. `/healthz` and `/metrics` (on the operator listener) are read over a raw HTTP/1.1 request.
//! With `--cluster-nodes N`, N `switchyard serve --cluster` nodes are started instead, each with
//! its own ports, on one fresh PostgreSQL database created here (seeding goes there) and dropped
//! at the end, under a cluster name of this run's own; apps connect to node 0, devices to node 1
//! (to node 0 too when N is 1).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{StreamExt, TryStreamExt};
use rustls::ClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sqlx::Connection;
use switchyard::ids::{DeviceId, UserKey};
use switchyard::store::{Store, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub const APPID: &str = "loadtest-app";
pub const SECRET: &str = "loadtest-secret-0123";

/// Whether seeded devices keep history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum History {
    #[default]
    On,
    Off,
}

/// Where the hub is, or how to start it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HubOpts {
    /// Whether the seeded devices keep history (their `opsHistory` setting): `off` measures
    /// the hub without recording operations
    #[arg(long, value_enum, default_value_t = History::On)]
    pub history: History,
    /// The switchyard binary to start [default: `switchyard` next to this binary]
    #[arg(long, value_name = "PATH")]
    pub hub_bin: Option<PathBuf>,
    /// Target a running hub instead of starting one: its plain WebSocket URL (ws://HOST:PORT/api/ws)
    #[arg(long, value_name = "URL", requires_all = ["hub_pid", "data_dir"])]
    pub hub_url: Option<String>,
    /// With --hub-url: the hub's WSS URL, for --tls and conn-tls
    #[arg(long, value_name = "URL")]
    pub hub_tls_url: Option<String>,
    /// With --hub-url: the hub's process id (its CPU and memory are read from /proc)
    #[arg(long, value_name = "PID")]
    pub hub_pid: Option<u32>,
    /// With --hub-url: the hub's operator listener (--metrics), for its counters [default: 127.0.0.1:9090]
    #[arg(long, value_name = "ADDR")]
    pub hub_metrics: Option<SocketAddr>,
    /// With --hub-url: the hub's --data-dir, to seed users and devices into its store
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// With --hub-tls-url: the PEM certificate to trust
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The hub's ack deadline (passed to a hub started here; must match a running hub's)
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    pub ack_timeout_ms: u64,
    /// Extra argument for a hub started here (repeatable), e.g. --hub-arg=--outbox-capacity=64
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub hub_arg: Vec<String>,
    /// Start a cluster of N nodes instead of one hub: every app connects to node 0 and every
    /// device to node 1, so commands and acks cross NATS (with 1 node both connect to it: the
    /// same-node baseline on the same store). Needs --nats-url and --pg-url.
    #[arg(long, value_name = "N", conflicts_with = "hub_url")]
    pub cluster_nodes: Option<usize>,
    /// With --cluster-nodes: the NATS server the nodes share
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// With --cluster-nodes: a PostgreSQL database to connect to; the run creates a fresh
    /// database on that server for the nodes and drops it at the end
    #[arg(long, value_name = "URL", default_value = "postgres://postgres@127.0.0.1:5432/test")]
    pub pg_url: String,
}

/// A seeded user; `at` is empty when no token was issued.
#[derive(Clone, Debug)]
pub struct User {
    pub uid: String,
    pub at: String,
}

/// A seeded device.
#[derive(Clone, Debug)]
pub struct Device {
    pub id: String,
    pub key: String,
    pub owner: String,
}

pub struct Hub {
    /// The processes started here (node 0 first); empty for an attached hub.
    children: Vec<Child>,
    /// Node 0's process id (the only node without --cluster-nodes).
    pub pid: u32,
    /// Every node's process id.
    pub pids: Vec<u32>,
    /// Node 0's plain listener, where apps connect.
    pub plain: SocketAddr,
    /// Where devices connect: node 1's plain listener in a cluster, else `plain`.
    pub device_plain: SocketAddr,
    pub device_tls_addr: Option<SocketAddr>,
    /// The NATS server's process id, when `pidof nats-server` names exactly one.
    pub nats_pid: Option<u32>,
    /// The cluster's nodes and the database made for them (dropped by [`Hub::stop`]).
    pub cluster: Option<ClusterRun>,
    /// The operator listener, where `/metrics` is.
    pub metrics_addr: SocketAddr,
    /// Every node's (plain listener, TLS listener, operator listener), node 0 first: conn-idle
    /// spreads its connections over them.
    pub nodes: Vec<(SocketAddr, Option<SocketAddr>, SocketAddr)>,
    pub tls_addr: Option<SocketAddr>,
    pub tls: Option<Arc<ClientConfig>>,
    /// The certificate to trust for the TLS listener.
    pub ca: Option<PathBuf>,
    pub store: Store,
    pub ack_timeout: Duration,
    /// Whether seeded devices keep history.
    pub history: History,
    /// The nodes' logs (node 0 first).
    logs: Vec<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

/// What a `--cluster-nodes` run made: the database (on `server`) and the cluster name.
#[derive(Clone, Debug)]
pub struct ClusterRun {
    pub nodes: usize,
    pub name: String,
    server: String,
    db: String,
}

/// One started `switchyard serve`.
struct Node {
    child: Child,
    pid: u32,
    http: u16,
    https: u16,
    metrics: u16,
    log: PathBuf,
}

/// How a node joins a cluster.
struct Join<'a> {
    database_url: &'a str,
    nats: &'a str,
    node_id: String,
    name: &'a str,
}

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn default_bin(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or_else(|| anyhow!("no directory for {}", exe.display()))?;
    Ok(dir.join(name))
}

pub fn client_tls(ca: &Path) -> Result<Arc<ClientConfig>> {
    switchyard::tls::install_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
        roots.add(cert?)?;
    }
    Ok(Arc::new(ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()))
}

fn addr_of(url: &str) -> Result<SocketAddr> {
    let rest = url.split_once("://").map(|x| x.1).ok_or_else(|| anyhow!("`{url}` is not a URL"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport.parse().with_context(|| format!("`{url}`: expected ws://IP:PORT/..."))
}

/// One HTTP/1.1 GET over plain TCP; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|x| x.1.to_owned()).unwrap_or_default();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), fut).await.map_err(|_| anyhow!("GET {path}: timed out"))?
}

/// Prometheus text → name → value (no labels in the hub's output).
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
        })
        .collect()
}

impl Hub {
    pub async fn start(opts: &HubOpts) -> Result<Hub> {
        switchyard::tls::install_provider();
        match (&opts.hub_url, opts.cluster_nodes) {
            (Some(url), _) => Self::attach(opts, url).await,
            (None, Some(n)) => Self::spawn_cluster(opts, n).await,
            (None, None) => Self::spawn(opts).await,
        }
    }

    async fn attach(opts: &HubOpts, url: &str) -> Result<Hub> {
        let plain = addr_of(url)?;
        let pid = opts.hub_pid.ok_or_else(|| anyhow!("--hub-url needs --hub-pid"))?;
        let dir = opts.data_dir.clone().ok_or_else(|| anyhow!("--hub-url needs --data-dir"))?;
        let tls_addr = opts.hub_tls_url.as_deref().map(addr_of).transpose()?;
        let tls = match (&tls_addr, &opts.ca) {
            (Some(_), Some(ca)) => Some(client_tls(ca)?),
            (Some(_), None) => bail!("--hub-tls-url needs --ca"),
            _ => None,
        };
        let store = Store::open(&dir, None).await.with_context(|| format!("opening the store in {}", dir.display()))?;
        add_app(&store).await?;
        Ok(Hub {
            children: Vec::new(),
            pid,
            pids: vec![pid],
            plain,
            device_plain: plain,
            device_tls_addr: tls_addr,
            nats_pid: None,
            cluster: None,
            metrics_addr: opts.hub_metrics.unwrap_or_else(|| ([127, 0, 0, 1], 9090).into()),
            nodes: vec![(plain, tls_addr, opts.hub_metrics.unwrap_or_else(|| ([127, 0, 0, 1], 9090).into()))],
            tls_addr,
            tls,
            ca: opts.ca.clone(),
            store,
            ack_timeout: Duration::from_millis(opts.ack_timeout_ms),
            history: opts.history,
            logs: Vec::new(),
            _dir: None,
        })
    }

    async fn spawn(opts: &HubOpts) -> Result<Hub> {
        let bin = hub_bin(opts)?;
        let dir = tempfile::Builder::new().prefix("loadtest-hub-").tempdir()?;
        let (cert, key, data) = (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("data"));
        switchyard::tls::ensure_dev_cert(&cert, &key)?;
        let node = spawn_node(opts, &bin, dir.path(), &data, "hub", None).await?;
        let store = Store::open(&data, None).await.context("opening the hub's store")?;
        add_app(&store).await?;
        let plain: SocketAddr = ([127, 0, 0, 1], node.http).into();
        Ok(Hub {
            pid: node.pid,
            pids: vec![node.pid],
            plain,
            device_plain: plain,
            device_tls_addr: Some(([127, 0, 0, 1], node.https).into()),
            nats_pid: None,
            cluster: None,
            metrics_addr: ([127, 0, 0, 1], node.metrics).into(),
            nodes: vec![(plain, Some(([127, 0, 0, 1], node.https).into()), ([127, 0, 0, 1], node.metrics).into())],
            tls_addr: Some(([127, 0, 0, 1], node.https).into()),
            tls: Some(client_tls(&cert)?),
            ca: Some(cert.clone()),
            store,
            ack_timeout: Duration::from_millis(opts.ack_timeout_ms),
            history: opts.history,
            logs: vec![node.log],
            children: vec![node.child],
            _dir: Some(dir),
        })
    }

    /// `n` nodes on one fresh PostgreSQL database and the NATS server, with a cluster name of
    /// this run's own. The database is created (and migrated, by opening the store) before the
    /// nodes start one after the other; on any failure it is dropped again.
    async fn spawn_cluster(opts: &HubOpts, n: usize) -> Result<Hub> {
        if n == 0 {
            bail!("--cluster-nodes needs at least 1 node");
        }
        let bin = hub_bin(opts)?;
        let tag: u32 = rand::random();
        let run = ClusterRun {
            nodes: n,
            name: format!("lt{tag:08x}"),
            server: opts.pg_url.clone(),
            db: format!("loadtest_{}_{tag:08x}", std::process::id()),
        };
        let base = run.server.split('?').next().unwrap_or(&run.server);
        let slash = base.rfind('/').filter(|&i| i > base.find("://").map_or(0, |j| j + 2)).unwrap_or(base.len());
        let url = format!("{}/{}", &base[..slash], run.db);
        let mut admin = sqlx::PgConnection::connect(&run.server)
            .await
            .with_context(|| format!("--cluster-nodes needs PostgreSQL at {} (--pg-url)", run.server))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{}\"", run.db))).execute(&mut admin).await?;
        let _ = admin.close().await;
        let started = async {
            let dir = tempfile::Builder::new().prefix("loadtest-cluster-").tempdir()?;
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            switchyard::tls::ensure_dev_cert(&cert, &key)?;
            let store = Store::open(&dir.path().join("seed"), Some(&url)).await.context("opening the cluster's database")?;
            add_app(&store).await?;
            let mut nodes = Vec::new();
            for i in 0..n {
                let join = Join { database_url: &url, nats: &opts.nats_url, node_id: format!("lt-n{i}"), name: &run.name };
                let node = spawn_node(opts, &bin, dir.path(), &dir.path().join(format!("node{i}")), &format!("node{i}"), Some(join)).await;
                match node {
                    Ok(node) => nodes.push(node),
                    Err(e) => {
                        for mut n in nodes {
                            let _ = n.child.kill().await;
                        }
                        store.close().await;
                        return Err(e);
                    }
                }
            }
            anyhow::Ok((dir, cert, store, nodes))
        }
        .await;
        let (dir, cert, store, nodes) = match started {
            Ok(x) => x,
            Err(e) => {
                drop_database(&run).await;
                return Err(e);
            }
        };
        let addr = |port: u16| -> SocketAddr { ([127, 0, 0, 1], port).into() };
        // One node: apps and devices both on it (the same store and cluster machinery, nothing
        // crosses NATS): the baseline a cross-node run compares with.
        let dev = 1.min(n - 1);
        Ok(Hub {
            pid: nodes[0].pid,
            pids: nodes.iter().map(|x| x.pid).collect(),
            plain: addr(nodes[0].http),
            device_plain: addr(nodes[dev].http),
            device_tls_addr: Some(addr(nodes[dev].https)),
            nats_pid: nats_pid(),
            cluster: Some(run),
            metrics_addr: addr(nodes[0].metrics),
            nodes: nodes.iter().map(|x| (addr(x.http), Some(addr(x.https)), addr(x.metrics))).collect(),
            tls_addr: Some(addr(nodes[0].https)),
            tls: Some(client_tls(&cert)?),
            ca: Some(cert.clone()),
            store,
            ack_timeout: Duration::from_millis(opts.ack_timeout_ms),
            history: opts.history,
            logs: nodes.iter().map(|x| x.log.clone()).collect(),
            children: nodes.into_iter().map(|x| x.child).collect(),
            _dir: Some(dir),
        })
    }

    /// True for a hub someone else started (`--hub-url`).
    pub fn attached(&self) -> bool {
        self.children.is_empty()
    }

    /// The hub's counters, if it answers.
    pub async fn metrics(&self) -> Option<HashMap<String, f64>> {
        match http_get(self.metrics_addr, "/metrics").await {
            Ok((200, body)) => Some(parse_metrics(&body)),
            _ => None,
        }
    }

    /// The counters summed over every node (a cluster's), if they all answer.
    pub async fn metrics_all(&self) -> Option<HashMap<String, f64>> {
        let mut sum = HashMap::new();
        for (_, _, at) in &self.nodes {
            let Ok((200, body)) = http_get(*at, "/metrics").await else { return None };
            for (k, v) in parse_metrics(&body) {
                *sum.entry(k).or_insert(0.0) += v;
            }
        }
        Some(sum)
    }

    /// `Some(reason)` if a hub started here has exited.
    pub fn exited(&mut self) -> Option<String> {
        let nodes = self.children.len();
        for (i, (child, log)) in self.children.iter_mut().zip(&self.logs).enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                let who = if nodes > 1 { format!("node {i}") } else { "hub".to_owned() };
                return Some(format!("{who} exited with {status}:\n{}", tail(log, 20)));
            }
        }
        None
    }

    /// Warnings the hub logged (a hub started here logs at warn level).
    pub fn warnings(&self) -> Vec<String> {
        self.logs
            .iter()
            .flat_map(|log| {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub async fn stop(mut self) {
        self.store.close().await;
        for c in &mut self.children {
            let _ = c.kill().await;
        }
        if let Some(run) = &self.cluster {
            drop_database(run).await;
        }
    }

    pub async fn users(&self, prefix: &str, n: usize, tokens: bool) -> Result<Vec<User>> {
        let store = &self.store;
        futures_util::stream::iter(0..n)
            .map(|i| async move {
                let email = format!("{prefix}-u{i}@loadtest.invalid");
                let apikey = store.add_user(Some(&email), None, "+86", "loadtest-no-login", "cn").await?;
                let at = if tokens {
                    store.issue_tokens(&apikey, APPID, Duration::from_secs(86_400), Duration::from_secs(2 * 86_400)).await?.at
                } else {
                    String::new()
                };
                anyhow::Ok(User { uid: apikey.as_str().to_owned(), at })
            })
            .buffered(4)
            .try_collect()
            .await
    }

    /// `n` devices; device `i` is owned by `owners[i % len]`. With `--history off` their
    /// `opsHistory` setting is off.
    pub async fn devices(&self, prefix: &str, owners: &[User], n: usize) -> Result<Vec<Device>> {
        let store = &self.store;
        let settings = (self.history == History::Off).then_some(r#"{"opsNotify":0,"opsHistory":0,"alarmNotify":1}"#);
        futures_util::stream::iter(0..n)
            .map(|i| async move {
                let owner = &owners[i % owners.len()];
                let d = Device { id: format!("{prefix}d{i:06}"), key: format!("fk-{prefix}-{i}"), owner: owner.uid.clone() };
                store
                    .add_device(&DeviceId::new(d.id.as_str()), &d.key, "LOADTEST", 1, Some(&UserKey::new(owner.uid.as_str())), "load")
                    .await?;
                if let Some(settings) = settings {
                    store.set_device_settings(&DeviceId::new(d.id.as_str()), settings).await?;
                }
                anyhow::Ok(d)
            })
            .buffered(4)
            .try_collect()
            .await
    }

    pub async fn share(&self, device: &Device, with: &[User]) -> Result<()> {
        for u in with {
            self.store.share_device(&DeviceId::new(device.id.as_str()), &UserKey::new(u.uid.as_str()), 15).await?;
        }
        Ok(())
    }
}

fn hub_bin(opts: &HubOpts) -> Result<PathBuf> {
    let bin = match &opts.hub_bin {
        Some(b) => b.clone(),
        None => default_bin("switchyard")?,
    };
    if !bin.exists() {
        bail!("hub binary {} not found: build it (cargo build --release -p switchyard) or pass --hub-bin", bin.display());
    }
    Ok(bin)
}

/// Starts one `switchyard serve` with its data in `data` and its log in `dir/LOG.log` and waits
/// for `/healthz`. A port found free can be refused a moment later (thousands of TIME-WAIT
/// sockets after a large run): a few fresh sets of ports are tried before giving up.
async fn spawn_node(opts: &HubOpts, bin: &Path, dir: &Path, data: &Path, log_name: &str, join: Option<Join<'_>>) -> Result<Node> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut attempt = 0;
    let (child, pid, http, https, metrics, log) = loop {
        attempt += 1;
        let (http_port, https_port, metrics_port) = (free_port()?, free_port()?, free_port()?);
        let log = dir.join(format!("{log_name}.log"));
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data)
            .arg("--http")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--https")
            .arg(format!("127.0.0.1:{https_port}"))
            .arg("--metrics")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--max-connections")
            .arg("1000000")
            // fanout and slow-consumer put hundreds of sessions on one user.
            .arg("--max-sessions-per-user")
            .arg("1000000")
            .arg("--ack-timeout-ms")
            .arg(opts.ack_timeout_ms.to_string());
        if let Some(j) = &join {
            cmd.arg("--database-url")
                .arg(j.database_url)
                .arg("--cluster")
                .arg(j.nats)
                .arg("--node-id")
                .arg(&j.node_id)
                .arg("--cluster-name")
                .arg(j.name)
                .arg("--public-ws")
                .arg(format!("127.0.0.1:{http_port}"));
        }
        cmd.args(&opts.hub_arg).env("RUST_LOG", "warn").stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out).kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("hub exited at once"))?;
        let plain: SocketAddr = ([127, 0, 0, 1], http_port).into();
        let t0 = Instant::now();
        let healthy = loop {
            if let Some(status) = child.try_wait()? {
                break Err(status);
            }
            if matches!(http_get(plain, "/healthz").await, Ok((200, _))) {
                break Ok(());
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("{log_name} not healthy after 30 s:\n{}", tail(&log, 20));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        match healthy {
            Ok(()) => break (child, pid, http_port, https_port, metrics_port, log),
            // A port found free was taken before the hub bound it (other runs' connections hold
            // many loopback ports): fresh ports.
            Err(_) if attempt < 5 && tail(&log, 20).contains("Address already in use") => continue,
            Err(status) => bail!("{log_name} exited with {status} before it was healthy:\n{}", tail(&log, 20)),
        }
    };
    Ok(Node { child, pid, http, https, metrics, log })
}

/// Drops a cluster run's database (forcing out any connection left).
async fn drop_database(run: &ClusterRun) {
    match sqlx::PgConnection::connect(&run.server).await {
        Ok(mut c) => {
            let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", run.db);
            if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await {
                eprintln!("warning: could not drop database {}: {e}", run.db);
            }
            let _ = c.close().await;
        }
        Err(e) => eprintln!("warning: could not drop database {}: {e}", run.db),
    }
}

/// The NATS server's process id, if `pidof nats-server` names exactly one.
fn nats_pid() -> Option<u32> {
    let out = std::process::Command::new("pidof").arg("nats-server").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let pids: Vec<u32> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
    (pids.len() == 1).then(|| pids[0])
}

async fn add_app(store: &Store) -> Result<()> {
    match store.add_app(APPID, SECRET).await {
        Ok(()) | Err(StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
