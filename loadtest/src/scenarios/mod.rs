//! The named scenarios and what they share: their knobs ([`RunArgs`]), opening many connections
//! at a paced rate, connection tasks that heartbeat or answer commands, a pacer for open-loop
//! request rates, progress bars, and the hub counters read around a run. Each scenario lives in
//! a sibling file and returns a [`Report`]; `conn` (idle, TLS, storm, workers), `route`
//! (round-trip, point-to-point, timeouts), `fanout` (fan-out, slow consumer), `report` (reports
//! answered once stored) and `soak` (a long steady load with churn, watched per interval).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::client::{Conn, Dial, Inbound, Login, Target, source_for};
use crate::hub::HubOpts;
use crate::peers::Env;
use crate::report::{Rec, Report, hist};

pub mod conn;
pub mod fanout;
pub mod report;
pub mod route;
pub mod soak;

/// The scenarios `loadtest run` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// N device connections opened at --rate per second and held with heartbeats for --duration:
    /// hub memory per connection, connect latency and rate, hub CPU while idle.
    #[value(name = "conn-idle")]
    ConnIdle,
    /// conn-idle over WSS: the cost of TLS handshakes and TLS sessions.
    #[value(name = "conn-tls")]
    ConnTls,
    /// N devices connected, then every connection dropped and reconnected at once: time to full
    /// recovery, accept and handshake errors, connections replaced.
    #[value(name = "conn-storm")]
    ConnStorm,
    /// One app, one device, one update in flight at a time: the round-trip latency floor.
    #[value(name = "route-rr")]
    RouteRr,
    /// N apps driving N devices (update + ack) at stepped total rates: the highest rate with
    /// p99 < 10 ms and hub CPU per update+ack.
    #[value(name = "route-p2p")]
    RoutePp,
    /// Devices that never ack: every update must end in 504 at the ack deadline; reports the
    /// error against the deadline and whether pending-request memory stays flat.
    #[value(name = "route-timeout")]
    RouteTimeout,
    /// One device's reports fanned out to N sessions of its owner and sharees: delivery latency
    /// and hub CPU per delivery.
    #[value(name = "fanout")]
    Fanout,
    /// Like fanout, but one session stops reading: hub memory must stay bounded (the session is
    /// closed as a slow consumer) and the other sessions unaffected.
    #[value(name = "slow-consumer")]
    SlowConsumer,
    /// N devices report state (with a sequence) at --rate in total for --duration: the time to
    /// each report's answer (given once it is committed), hub CPU per report, reports per commit.
    #[value(name = "report")]
    Report,
    /// N connections (an app per 16 devices) held for --duration (30 min) with --active-pct of
    /// them active per second (commands and reports) and --churn-pct of the devices reconnecting
    /// per minute: per interval the hub's RSS, open fds, round-trip p50/p99 and errors; at the
    /// end RSS drift and whether p99 stayed flat.
    #[value(name = "soak")]
    Soak,
}

impl Scenario {
    pub const ALL: [Scenario; 10] = [
        Scenario::ConnIdle,
        Scenario::ConnTls,
        Scenario::ConnStorm,
        Scenario::RouteRr,
        Scenario::RoutePp,
        Scenario::RouteTimeout,
        Scenario::Fanout,
        Scenario::SlowConsumer,
        Scenario::Report,
        Scenario::Soak,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::ConnIdle => "conn-idle",
            Scenario::ConnTls => "conn-tls",
            Scenario::ConnStorm => "conn-storm",
            Scenario::RouteRr => "route-rr",
            Scenario::RoutePp => "route-p2p",
            Scenario::RouteTimeout => "route-timeout",
            Scenario::Fanout => "fanout",
            Scenario::SlowConsumer => "slow-consumer",
            Scenario::Report => "report",
            Scenario::Soak => "soak",
        }
    }
}

/// Knobs of `loadtest run`; each scenario picks its own defaults for what is not given.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Size: connections (conn-*, soak), app/device pairs (route-p2p), mute devices (route-timeout),
    /// listening sessions (fanout, slow-consumer)
    #[arg(long)]
    pub n: Option<usize>,
    /// Rate: connections/s (conn-*, soak's opening; 0 = as fast as possible), total updates/s (route-p2p's first
    /// step, route-timeout), reports/s (fanout, slow-consumer)
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds to hold or measure (conn-storm: the limit for full recovery)
    #[arg(long)]
    pub duration: Option<f64>,
    /// soak: percent of the connections active each second (a command or a report) [default: 1]
    #[arg(long)]
    pub active_pct: Option<f64>,
    /// soak: percent of the devices that disconnect and reconnect each minute [default: 1]
    #[arg(long)]
    pub churn_pct: Option<f64>,
    /// soak: seconds between the printed figures [default: 60]
    #[arg(long)]
    pub interval_secs: Option<f64>,
    /// Connect over WSS instead of WS
    #[arg(long)]
    pub tls: bool,
    /// route-p2p: explicit total rates per step, e.g. 1000,2000,4000
    #[arg(long, value_delimiter = ',')]
    pub steps: Vec<f64>,
    /// route-p2p: seconds per step
    #[arg(long)]
    pub step_secs: Option<f64>,
    /// route-p2p: stop doubling past this rate
    #[arg(long)]
    pub max_rate: Option<f64>,
    /// route-p2p: the p99 a step must stay under to pass, in ms (default 10; a store that syncs
    /// every commit to disk, like PostgreSQL with its defaults, may want more)
    #[arg(long)]
    pub p99_limit_ms: Option<f64>,
    /// fanout, slow-consumer: distinct users among the sessions (owner + sharees)
    #[arg(long)]
    pub users: Option<usize>,
    /// fanout, slow-consumer: filler bytes per report
    #[arg(long)]
    pub pad: Option<usize>,
    /// Seconds between heartbeats of each connection [default: 30]
    #[arg(long)]
    pub hb_secs: Option<f64>,
    /// Handshakes in flight at once while opening connections
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// conn-idle, conn-tls: generator processes [default: 1 per 15,000 connections]
    #[arg(long)]
    pub workers: Option<usize>,
    #[command(flatten)]
    pub hub: HubOpts,
}

impl RunArgs {
    pub fn hb(&self) -> Duration {
        Duration::from_secs_f64(self.hb_secs.unwrap_or(30.0).max(0.1))
    }
}

/// Runs one scenario against a started peer.
pub async fn run(env: &mut Env, scenario: Scenario, args: &RunArgs) -> anyhow::Result<Report> {
    if args.tls {
        env.target = env.tls_target.clone().ok_or_else(|| anyhow::anyhow!("--tls: {} has no TLS listener here", env.peer.name()))?;
        env.device_target = env.device_tls_target.clone().unwrap_or_else(|| env.target.clone());
    }
    let before = env.metrics().await;
    let mut report = match scenario {
        Scenario::ConnIdle => conn::idle(env, args, args.tls, "conn-idle").await?,
        Scenario::ConnTls => conn::idle(env, args, true, "conn-tls").await?,
        Scenario::ConnStorm => conn::storm(env, args).await?,
        Scenario::RouteRr => route::rr(env, args).await?,
        Scenario::RoutePp => route::p2p(env, args).await?,
        Scenario::RouteTimeout => route::timeout(env, args).await?,
        Scenario::Fanout => fanout::fanout(env, args).await?,
        Scenario::SlowConsumer => fanout::slow_consumer(env, args).await?,
        Scenario::Report => report::reports(env, args).await?,
        Scenario::Soak => soak::soak(env, args).await?,
    };
    if let Some(c) = env.hub().and_then(|h| h.cluster.clone()) {
        report.param("cluster_nodes", c.nodes);
        report.param("cluster", c.name);
        let devices_on = if c.nodes > 1 { "devices on node 1" } else { "devices on it too" };
        report.note(format!(
            "cluster of {} node(s): apps on node 0, {devices_on} (conn-idle and conn-tls: spread over every node; conn-storm: node 0); server CPU and memory are sums over the nodes",
            c.nodes
        ));
        if env.nats_pid().is_none() {
            report.note("NATS server CPU not measured: `pidof nats-server` did not name exactly one process");
        }
    }
    let after = env.metrics().await;
    if let (Some(b), Some(a)) = (before, after) {
        metric_deltas(&mut report, &b, &a);
    }
    let (exited, warnings) = env.health();
    if let Some(e) = exited {
        report.fail(e);
    }
    if !warnings.is_empty() {
        report.note(format!("{} logged {} warning/error lines; first: {}", env.peer.name(), warnings.len(), warnings[0]));
    }
    Ok(report)
}

fn metric_deltas(report: &mut Report, before: &HashMap<String, f64>, after: &HashMap<String, f64>) {
    for (name, label) in [
        ("switchyard_timeouts_504_total", "hub counted 504s"),
        ("switchyard_slow_consumers_total", "hub closed slow consumers"),
        ("switchyard_devices_replaced_total", "hub replaced device connections"),
        ("switchyard_connections_refused_total", "hub refused connections (cap)"),
        ("switchyard_frames_rejected_total", "hub rejected frames"),
        ("switchyard_acks_late_total", "hub dropped late acks"),
        ("switchyard_heartbeat_expired_total", "hub closed silent sessions"),
    ] {
        let d = after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0);
        report.num(&format!("hub.{}", name.trim_start_matches("switchyard_").trim_end_matches("_total")), label, d, "");
    }
}

/// Microseconds since this process's first call: the timestamp carried in reports.
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

pub fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// A progress bar on stderr (drawn only on a terminal).
pub fn bar(show: bool, len: u64, msg: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} {elapsed_precise}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_owned());
    pb
}

/// A bar that fills over `dur` by itself, for timed phases.
pub fn timed_bar(show: bool, dur: Duration, msg: &str) -> ProgressBar {
    let pb = bar(show, dur.as_secs().max(1), &format!("{msg} (s)"));
    if !pb.is_hidden() {
        let p = pb.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            while !p.is_finished() && t0.elapsed() < dur {
                p.set_position(t0.elapsed().as_secs());
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    }
    pb
}

/// Open-loop pacing: request `k` is due at `start + k / rate`.
pub struct Pacer {
    pub start: Instant,
    pub rate: f64,
    pub sent: u64,
}

impl Pacer {
    pub fn new(rate: f64) -> Pacer {
        Pacer { start: Instant::now(), rate: rate.max(1e-3), sent: 0 }
    }

    pub fn due_at(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// How many are due now and not sent yet.
    pub fn due(&self) -> u64 {
        ((self.start.elapsed().as_secs_f64() * self.rate) as u64 + 1).saturating_sub(self.sent)
    }
}

/// Counters shared by the connection tasks of one kind.
#[derive(Default)]
pub struct ConnStats {
    pub pings: AtomicU64,
    pub pongs: AtomicU64,
    pub missed_pongs: AtomicU64,
    pub commands: AtomicU64,
    pub closed: AtomicU64,
    pub rtt: Rec,
    pub errors: Mutex<Vec<String>>,
}

impl ConnStats {
    pub fn error(&self, e: impl std::fmt::Display) {
        self.closed.fetch_add(1, Ordering::Relaxed);
        let mut v = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < 5 {
            v.push(e.to_string());
        }
    }

    pub fn first_errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A connection that heartbeats every `hb` (first beat at a random offset so they do not
/// synchronise) and, if it is a device, acks every command unless `mute`. Ends on `stop`,
/// handing its connection back.
pub fn spawn_conn(
    mut conn: Conn,
    hb: Duration,
    mute: bool,
    stop: CancellationToken,
    st: Arc<ConnStats>,
) -> tokio::task::JoinHandle<Option<Conn>> {
    tokio::spawn(async move {
        let mut next = tokio::time::Instant::now() + hb.mul_f64(rand::random::<f64>());
        let mut ping_at: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Some(conn),
                _ = tokio::time::sleep_until(next) => {
                    if ping_at.is_some() {
                        st.missed_pongs.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Err(e) = conn.send_ping().await {
                        st.error(format!("heartbeat failed: {e}"));
                        return None;
                    }
                    st.pings.fetch_add(1, Ordering::Relaxed);
                    ping_at = Some(Instant::now());
                    next += hb;
                }
                r = conn.recv() => match r {
                    Ok(Inbound::Pong) => {
                        if let Some(t) = ping_at.take() {
                            st.rtt.record(us(t.elapsed()));
                            st.pongs.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Inbound::Command { seq }) => {
                        st.commands.fetch_add(1, Ordering::Relaxed);
                        if !mute
                            && let Err(e) = conn.send_ack(seq).await {
                                st.error(format!("ack failed: {e}"));
                                return None;
                            }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if !stop.is_cancelled() {
                            st.error(e);
                        }
                        return None;
                    }
                }
            }
        }
    })
}

/// Connections opened by [`open_many`], index-aligned with the logins.
pub struct Opened {
    pub conns: Vec<Option<Conn>>,
    pub connect: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    pub first_errors: Vec<String>,
    pub secs: f64,
    /// How many opened here (they may since have been taken out of `conns`).
    pub local_ok: usize,
    /// Opened by worker processes (not in `conns`).
    pub remote_ok: usize,
}

impl Opened {
    pub fn ok(&self) -> usize {
        self.local_ok + self.remote_ok
    }

    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Opens one connection per login, starting them at `rate` per second (0: at once) with at most
/// `concurrency` handshakes in flight. `index0`/`total` place these among all connections of the
/// run, for spreading source addresses.
pub async fn open_many(
    target: &Target,
    logins: Vec<Login>,
    index0: usize,
    total: usize,
    rate: f64,
    concurrency: usize,
    pb: &ProgressBar,
) -> Opened {
    let n = logins.len();
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();
    let target = target.clone();
    let spawner = tokio::spawn(async move {
        for (i, login) in logins.into_iter().enumerate() {
            if rate > 0.0 {
                tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
            }
            let Ok(permit) = sem.clone().acquire_owned().await else { break };
            let (tx, target) = (tx.clone(), target.clone());
            let dial = Dial { src: source_for(index0 + i, total), rcvbuf: None };
            tokio::spawn(async move {
                let t = Instant::now();
                let r = Conn::open(&target, &login, dial, Duration::from_secs(30)).await;
                drop(permit);
                let _ = tx.send((i, t.elapsed(), r));
            });
        }
    });
    let mut out = Opened {
        conns: (0..n).map(|_| None).collect(),
        connect: hist(),
        errors: BTreeMap::new(),
        first_errors: Vec::new(),
        secs: 0.0,
        local_ok: 0,
        remote_ok: 0,
    };
    while let Some((i, took, r)) = rx.recv().await {
        pb.inc(1);
        match r {
            Ok(c) => {
                out.connect.saturating_record(us(took).max(1));
                out.conns[i] = Some(c);
                out.local_ok += 1;
            }
            Err(e) => {
                *out.errors.entry(e.stage.to_owned()).or_default() += 1;
                if out.first_errors.len() < 5 {
                    out.first_errors.push(e.to_string());
                }
            }
        }
    }
    let _ = spawner.await;
    out.secs = start.elapsed().as_secs_f64();
    out
}

/// Adds the usual rows for an [`Opened`] batch and fails the report on login errors.
pub fn report_opened(report: &mut Report, key: &str, what: &str, o: &Opened) {
    report.num(&format!("{key}.opened"), &format!("{what} opened"), o.ok() as f64, "");
    report.num(&format!("{key}.failed"), &format!("{what} failed to open"), o.failed() as f64, "");
    for (stage, count) in &o.errors {
        report.num(&format!("{key}.failed.{stage}"), &format!("  of which at {stage}"), *count as f64, "");
    }
    if o.failed() > 0 {
        report.fail(format!("{} of {} {what} failed to open, e.g. {}", o.failed(), o.ok() as u64 + o.failed(), o.first_errors.join("; ")));
    }
}
