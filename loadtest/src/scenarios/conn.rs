//! Connection scenarios: `conn-idle` / `conn-tls` (open N at a rate, hold with heartbeats: memory
//! per connection, connect latency, idle CPU) and `conn-storm` (drop every connection at once and
//! reconnect: time to full recovery). Past one process's file limit the connections are spread
//! over worker processes (`loadtest worker`, re-executing this binary), which report back over
//! stdin/stdout as JSON lines.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::{ConnStats, RunArgs, bar, open_many, report_opened, spawn_conn, timed_bar, us};
use crate::client::{Conn, Dial, Login, Proto, Target, source_for};
use crate::peers::Env;
use crate::procstat::{listen_drops, rss_bytes};
use crate::report::{Rec, Report, hist, hist_from_hex, hist_to_hex};

/// Connections one generator process opens at most (its file limit is 20,000 here).
const PER_PROCESS: usize = 15_000;

/// `conn-idle` (and `conn-tls` with `tls`).
pub async fn idle(env: &Env, args: &RunArgs, tls: bool, name: &str) -> Result<Report> {
    let n = args.n.unwrap_or(1000);
    let rate = args.rate.unwrap_or(1000.0);
    let hold = Duration::from_secs_f64(args.duration.unwrap_or(10.0));
    let hb = args.hb();
    let target =
        if tls { env.tls_target.clone().ok_or_else(|| anyhow!("{} has no TLS listener", env.peer.name()))? } else { env.target.clone() };
    // A cluster's connections are spread over its nodes, by worker process: as many workers as
    // needed, rounded up to a multiple of the nodes.
    let targets = node_targets(env, &target, tls);
    let workers = args.workers.unwrap_or(n.div_ceil(PER_PROCESS)).max(1);
    let workers = if targets.len() > 1 { workers.div_ceil(targets.len()).max(1) * targets.len() } else { workers };
    let mut report = Report::new(name, env.peer.name());
    report.param("n", n);
    report.param("rate", rate);
    report.param("hold_s", hold.as_secs_f64());
    report.param("hb_s", hb.as_secs_f64());
    report.param("tls", tls);
    report.param("workers", workers);
    report.param("nodes", targets.len());

    let owners = env.users(n.div_ceil(16).max(1), false).await?;
    let devices = env.devices(&owners, n).await?;
    let logins: Vec<Login> = devices.iter().map(|d| env.device_login(d)).collect();
    env.settle().await;

    let stats = Arc::new(ConnStats::default());
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut pool = WorkerPool::default();
    // The servers' memory before any worker starts (workers begin connecting as they start).
    let server_pids: Vec<u32> = env.hub().map_or_else(|| vec![env.pid()], |h| h.pids.clone());
    let rss_idle: u64 = server_pids.iter().filter_map(|p| rss_bytes(*p)).sum();
    let pb = bar(env.progress, n as u64, "connecting");
    let (opened, open_phase) = if workers == 1 {
        let phase = env.phase(&[]);
        let mut o = open_many(&target, logins, 0, n, rate, args.concurrency, &pb).await;
        let p = phase.end();
        for c in o.conns.iter_mut().filter_map(Option::take) {
            tasks.push(spawn_conn(c, hb, false, stop.clone(), stats.clone()));
        }
        (o, p)
    } else {
        pool = WorkerPool::spawn(env, &targets, tls, &logins, workers, rate, args.concurrency, hb).await?;
        let phase = env.phase(&pool.pids());
        let o = pool.opened(&pb).await?;
        (o, phase.end())
    };
    pb.finish_and_clear();
    let ok = opened.ok() as u64;
    report_opened(&mut report, "open", "connections", &opened);
    report.latency("connect", "connect+login latency", &opened.connect);
    report.num("open.rate", "connections opened per second", ok as f64 / open_phase.secs.max(1e-9), "/s");
    report.num("open.cpu_us_per_conn", "server CPU per connection opened", open_phase.cpu_per(ok).unwrap_or(f64::NAN), "µs");
    report.num("rss.before", "server RSS before", rss_idle.min(open_phase.server_rss_before) as f64 / 1048576.0, "MiB");
    report.num("rss.after_open", "server RSS after opening", open_phase.server_rss_after as f64 / 1048576.0, "MiB");
    report.phase("open", "opening", &open_phase);

    let hold_phase = env.phase(&pool.pids());
    let pings0 = stats.pings.load(Ordering::Relaxed);
    let pb = timed_bar(env.progress, hold, "holding");
    tokio::time::sleep(hold).await;
    pb.finish_and_clear();
    let held = hold_phase.end();
    let mut pings = stats.pings.load(Ordering::Relaxed) - pings0;
    if let Some(m) = env.metrics_all().await {
        let online = m.get("switchyard_device_sessions").copied().unwrap_or(0.0);
        report.num("hub.device_sessions", "hub's device sessions at the end of the hold", online, "");
        if online < ok as f64 {
            report.fail(format!("hub reports {online} device sessions, {ok} were opened"));
        }
    }
    let closed_during = stats.closed.load(Ordering::Relaxed);
    stop.cancel();
    let mut rtt = stats.rtt.take();
    let mut missed = stats.missed_pongs.load(Ordering::Relaxed);
    if workers > 1 {
        let (w_pings, w_missed, w_closed, w_rtt) = pool.finish().await?;
        pings += w_pings;
        missed += w_missed;
        let _ = rtt.add(&w_rtt);
        if w_closed > 0 {
            report.fail(format!("{w_closed} connections of the workers closed while idle"));
        }
    }
    let bytes_per_conn =
        if ok > 0 { held.server_rss_after.saturating_sub(rss_idle.min(open_phase.server_rss_before)) as f64 / ok as f64 } else { f64::NAN };
    report.num("bytes_per_conn", "server memory per connection (after hold)", bytes_per_conn, "B");
    report.num("rss.after_hold", "server RSS after holding", held.server_rss_after as f64 / 1048576.0, "MiB");
    if let Some(h) = env.hub().filter(|h| h.pids.len() > 1) {
        for (i, pid) in h.pids.iter().enumerate() {
            if let Some(rss) = rss_bytes(*pid) {
                report.num(&format!("rss.node{i}"), &format!("node {i} RSS after holding"), rss as f64 / 1048576.0, "MiB");
            }
        }
    }
    report.num("hold.server_cores", "server CPU while idle", held.server_cores(), "cores");
    report.num("hold.pings", "heartbeats sent while holding", pings as f64, "");
    report.num("hold.cpu_us_per_ping", "server CPU per heartbeat while idle", held.cpu_per(pings).unwrap_or(f64::NAN), "µs");
    report.latency("pong", "heartbeat round trip", &rtt);
    report.phase("hold", "holding", &held);
    if closed_during > 0 {
        report.fail(format!("{closed_during} idle connections were closed while holding, e.g. {:?}", stats.first_errors()));
    }
    if missed > 0 {
        report.note(format!("{missed} heartbeats got no pong before the next one was due"));
    }
    for t in tasks {
        drop(t.await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(r) = rss_bytes(env.pid()) {
        report.num("rss.after_close", "server RSS 1 s after closing all", r as f64 / 1048576.0, "MiB");
    }
    if env.hub().is_some() {
        let mut left = f64::NAN;
        for _ in 0..100 {
            left = env.metrics().await.and_then(|m| m.get("switchyard_device_sessions").copied()).unwrap_or(f64::NAN);
            if left == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        report.num("hub.device_sessions_after_close", "hub's device sessions after closing all", left, "");
        if left != 0.0 {
            report.fail(format!("hub still shows {left} device sessions 10 s after every connection closed"));
        }
    }
    if env.hub().is_some_and(|h| h.attached()) {
        report.note(
            "the hub was started elsewhere: memory per connection is only meaningful on a fresh hub (a warm allocator reuses freed memory)",
        );
    }
    Ok(report)
}

/// `conn-storm`: connect N devices, drop them all at once, reconnect them all at once.
pub async fn storm(env: &Env, args: &RunArgs) -> Result<Report> {
    let n = args.n.unwrap_or(1000);
    let rate = args.rate.unwrap_or(2000.0);
    let hb = args.hb();
    let limit = Duration::from_secs_f64(args.duration.unwrap_or(60.0));
    let target = if args.tls { env.tls_target.clone().ok_or_else(|| anyhow!("no TLS listener"))? } else { env.target.clone() };
    let mut report = Report::new("conn-storm", env.peer.name());
    report.param("n", n);
    report.param("initial_rate", rate);
    report.param("recovery_limit_s", limit.as_secs_f64());
    report.param("tls", args.tls);
    if n > PER_PROCESS {
        bail!("conn-storm runs in one generator process: --n at most {PER_PROCESS}");
    }
    let owners = env.users(n.div_ceil(16).max(1), false).await?;
    let devices = env.devices(&owners, n).await?;
    let logins: Vec<Login> = devices.iter().map(|d| env.device_login(d)).collect();
    env.settle().await;
    let pb = bar(env.progress, n as u64, "connecting");
    let mut opened = open_many(&target, logins.clone(), 0, n, rate, args.concurrency, &pb).await;
    pb.finish_and_clear();
    report_opened(&mut report, "open", "initial connections", &opened);
    let stats = Arc::new(ConnStats::default());
    let stop = CancellationToken::new();
    let tasks: Vec<_> =
        opened.conns.iter_mut().filter_map(Option::take).map(|c| spawn_conn(c, hb, false, stop.clone(), stats.clone())).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let phase = env.phase(&[]);
    let drops0 = listen_drops();
    stop.cancel();
    let mut dropped = 0;
    for t in tasks {
        if let Ok(Some(c)) = t.await {
            drop(c); // abrupt: no close frame, as when a network path dies
            dropped += 1;
        }
    }
    let t0 = Instant::now();
    let recovered = Rec::default();
    let errors = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let pb = bar(env.progress, n as u64, "reconnecting");
    let mut handles = Vec::new();
    for (i, login) in logins.into_iter().enumerate() {
        let (target, recovered, errors, pb) = (target.clone(), recovered.clone(), errors.clone(), pb.clone());
        handles.push(tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            while t0.elapsed() < limit {
                match Conn::open(&target, &login, Dial { src: source_for(i, n), rcvbuf: None }, Duration::from_secs(20)).await {
                    Ok(c) => {
                        recovered.record(us(t0.elapsed()));
                        pb.inc(1);
                        return Some(c);
                    }
                    Err(e) => {
                        *errors.lock().unwrap_or_else(|p| p.into_inner()).entry(e.stage.to_owned()).or_default() += 1;
                        tokio::time::sleep(backoff.mul_f64(0.5 + rand::random::<f64>())).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
            None
        }));
    }
    let mut conns = Vec::new();
    for h in handles {
        if let Ok(Some(c)) = h.await {
            conns.push(c);
        }
    }
    pb.finish_and_clear();
    let storm = phase.end();
    let rec = recovered.take();
    report.num("storm.dropped", "connections dropped at once", dropped as f64, "");
    report.num("storm.recovered", "connections re-established", conns.len() as f64, "");
    report.num("storm.recovery_s", "time to full recovery", if conns.len() == n { rec.max() as f64 / 1e6 } else { f64::NAN }, "s");
    report.latency("storm.reconnect", "time from the drop to each reconnect", &rec);
    let errors = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    report.num("storm.errors", "failed attempts (retried)", errors.values().sum::<u64>() as f64, "");
    for (stage, c) in &errors {
        report.num(&format!("storm.errors.{stage}"), &format!("  of which at {stage}"), *c as f64, "");
    }
    let drops1 = listen_drops();
    report.num("storm.listen_overflows", "accept-queue overflows (kernel, machine-wide)", drops1.0.saturating_sub(drops0.0) as f64, "");
    report.num("storm.listen_drops", "SYNs dropped at listen (kernel, machine-wide)", drops1.1.saturating_sub(drops0.1) as f64, "");
    report.num("storm.cpu_us_per_conn", "server CPU per reconnection", storm.cpu_per(conns.len() as u64).unwrap_or(f64::NAN), "µs");
    report.phase("storm", "storm", &storm);
    if conns.len() < n {
        report.fail(format!("only {} of {n} connections came back within {limit:?}", conns.len()));
    }
    if env.peer == crate::peers::Peer::Switchyard {
        let mut online = 0.0;
        for _ in 0..50 {
            online = env.metrics().await.and_then(|m| m.get("switchyard_device_sessions").copied()).unwrap_or(0.0);
            if online == conns.len() as f64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        report.num("hub.device_sessions", "hub's device sessions after recovery", online, "");
        if online != conns.len() as f64 {
            report.fail(format!("hub shows {online} device sessions after recovery, {} are connected", conns.len()));
        }
    }
    drop(conns);
    Ok(report)
}

// --- worker processes -------------------------------------------------------------------------

/// Arguments of the hidden `loadtest worker` subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    #[arg(long)]
    pub addr: std::net::SocketAddr,
    #[arg(long, default_value = "hub")]
    pub proto: String,
    #[arg(long, default_value = "/api/ws")]
    pub path: String,
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// File with one login per line: `D id key`, `M id owner` or `E`
    #[arg(long)]
    pub logins: PathBuf,
    #[arg(long)]
    pub from: usize,
    #[arg(long)]
    pub to: usize,
    #[arg(long)]
    pub total: usize,
    #[arg(long)]
    pub rate: f64,
    #[arg(long)]
    pub concurrency: usize,
    #[arg(long)]
    pub hb_secs: f64,
}

fn login_line(l: &Login) -> String {
    match l {
        Login::Device { deviceid, factory_key } => format!("D {deviceid} {factory_key}"),
        Login::MqttDevice { deviceid, owner } => format!("M {deviceid} {owner}"),
        _ => "E".to_owned(),
    }
}

fn parse_login(line: &str) -> Option<Login> {
    let mut it = line.split_whitespace();
    match it.next()? {
        "D" => Some(Login::Device { deviceid: it.next()?.to_owned(), factory_key: it.next()?.to_owned() }),
        "M" => Some(Login::MqttDevice { deviceid: it.next()?.to_owned(), owner: it.next()?.to_owned() }),
        _ => Some(Login::Echo),
    }
}

/// A worker: open the share of connections, say so, hold them until told to stop, report.
pub async fn worker(a: WorkerArgs) -> Result<()> {
    let proto = match a.proto.as_str() {
        "mqtt" => Proto::Mqtt,
        "echo" => Proto::Echo,
        _ => Proto::Hub,
    };
    let tls = a.ca.as_deref().map(crate::hub::client_tls).transpose()?;
    let target = Target { proto, addr: a.addr, path: a.path.clone(), tls };
    let text = std::fs::read_to_string(&a.logins)?;
    let logins: Vec<Login> = text.lines().skip(a.from).take(a.to - a.from).filter_map(parse_login).collect();
    let mut o = open_many(&target, logins, a.from, a.total, a.rate, a.concurrency, &indicatif::ProgressBar::hidden()).await;
    let stats = Arc::new(ConnStats::default());
    let stop = CancellationToken::new();
    let hb = Duration::from_secs_f64(a.hb_secs.max(0.1));
    let tasks: Vec<_> =
        o.conns.iter_mut().filter_map(Option::take).map(|c| spawn_conn(c, hb, false, stop.clone(), stats.clone())).collect();
    println!("{}", json!({"opened": tasks.len(), "errors": o.errors, "first_errors": o.first_errors, "connect": hist_to_hex(&o.connect)}));
    let mut line = String::new();
    let _ = BufReader::new(tokio::io::stdin()).read_line(&mut line).await;
    let closed = stats.closed.load(Ordering::Relaxed);
    stop.cancel();
    for t in tasks {
        drop(t.await);
    }
    println!(
        "{}",
        json!({"pings": stats.pings.load(Ordering::Relaxed), "missed": stats.missed_pongs.load(Ordering::Relaxed), "closed": closed, "rtt": hist_to_hex(&stats.rtt.take())})
    );
    Ok(())
}

/// The worker processes of one run.
#[derive(Default)]
struct WorkerPool {
    children: Vec<(tokio::process::Child, tokio::io::Lines<BufReader<tokio::process::ChildStdout>>)>,
    _dir: Option<tempfile::TempDir>,
}

impl WorkerPool {
    #[allow(clippy::too_many_arguments)]
    /// Worker `w` connects to `targets[w % len]`.
    async fn spawn(
        env: &Env,
        targets: &[Target],
        tls: bool,
        logins: &[Login],
        workers: usize,
        rate: f64,
        concurrency: usize,
        hb: Duration,
    ) -> Result<WorkerPool> {
        let dir = tempfile::Builder::new().prefix("loadtest-workers-").tempdir()?;
        let file = dir.path().join("logins.txt");
        std::fs::write(&file, logins.iter().map(login_line).collect::<Vec<_>>().join("\n"))?;
        let ca = if tls { env.hub().and_then(|h| h.ca.clone()) } else { None };
        let exe = std::env::current_exe()?;
        let n = logins.len();
        let per = n.div_ceil(workers);
        let mut pool = WorkerPool { _dir: None, ..Default::default() };
        for w in 0..workers {
            let (from, to) = (w * per, ((w + 1) * per).min(n));
            let target = &targets[w % targets.len()];
            let mut cmd = tokio::process::Command::new(&exe);
            cmd.arg("worker")
                .arg("--addr")
                .arg(target.addr.to_string())
                .arg("--proto")
                .arg(match target.proto {
                    Proto::Hub => "hub",
                    Proto::Mqtt => "mqtt",
                    Proto::Echo => "echo",
                })
                .arg("--path")
                .arg(&target.path)
                .arg("--logins")
                .arg(&file)
                .args(["--from", &from.to_string(), "--to", &to.to_string(), "--total", &n.to_string()])
                .args(["--rate", &(rate / workers as f64).to_string(), "--concurrency", &concurrency.to_string()])
                .args(["--hb-secs", &hb.as_secs_f64().to_string()]);
            if let Some(ca) = &ca {
                cmd.arg("--ca").arg(ca);
            }
            let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true).spawn()?;
            let out = child.stdout.take().ok_or_else(|| anyhow!("worker without stdout"))?;
            pool.children.push((child, BufReader::new(out).lines()));
        }
        pool._dir = Some(dir);
        Ok(pool)
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|(c, _)| c.id()).collect()
    }

    /// Waits for every worker's "opened" line and merges them.
    async fn opened(&mut self, pb: &indicatif::ProgressBar) -> Result<super::Opened> {
        let t0 = Instant::now();
        let mut o = super::Opened {
            conns: Vec::new(),
            connect: hist(),
            errors: BTreeMap::new(),
            first_errors: Vec::new(),
            secs: 0.0,
            local_ok: 0,
            remote_ok: 0,
        };
        for (_, lines) in &mut self.children {
            let line = lines.next_line().await?.ok_or_else(|| anyhow!("a worker exited before opening its connections"))?;
            let v: serde_json::Value = serde_json::from_str(&line).context("worker output")?;
            let opened = v["opened"].as_u64().unwrap_or(0) as usize;
            o.remote_ok += opened;
            pb.inc(opened as u64);
            if let Some(h) = v["connect"].as_str().and_then(hist_from_hex) {
                let _ = o.connect.add(&h);
            }
            for (stage, c) in v["errors"].as_object().into_iter().flatten() {
                *o.errors.entry(stage.clone()).or_default() += c.as_u64().unwrap_or(0);
            }
            o.first_errors.extend(v["first_errors"].as_array().into_iter().flatten().filter_map(|e| e.as_str().map(str::to_owned)));
        }
        o.secs = t0.elapsed().as_secs_f64();
        Ok(o)
    }

    /// Tells every worker to stop; returns (pings, missed pongs, closed, rtt).
    async fn finish(&mut self) -> Result<(u64, u64, u64, hdrhistogram::Histogram<u64>)> {
        let (mut pings, mut missed, mut closed, mut rtt) = (0, 0, 0, hist());
        for (child, _) in &mut self.children {
            if let Some(stdin) = child.stdin.as_mut() {
                let _ = stdin.write_all(b"stop\n").await;
            }
        }
        for (child, lines) in &mut self.children {
            if let Some(line) = lines.next_line().await? {
                let v: serde_json::Value = serde_json::from_str(&line)?;
                pings += v["pings"].as_u64().unwrap_or(0);
                missed += v["missed"].as_u64().unwrap_or(0);
                closed += v["closed"].as_u64().unwrap_or(0);
                if let Some(h) = v["rtt"].as_str().and_then(hist_from_hex) {
                    let _ = rtt.add(&h);
                }
            }
            let _ = child.wait().await;
        }
        Ok((pings, missed, closed, rtt))
    }
}

/// Where a connection scenario connects: every node of a `--cluster-nodes` run, else `target`.
fn node_targets(env: &Env, target: &Target, tls: bool) -> Vec<Target> {
    match env.hub().filter(|h| h.nodes.len() > 1) {
        Some(h) => h
            .nodes
            .iter()
            .filter_map(|(plain, secure, _)| {
                let addr = if tls { (*secure)? } else { *plain };
                Some(Target { addr, ..target.clone() })
            })
            .collect(),
        None => vec![target.clone()],
    }
}
