//! `soak`: a long steady load on many connections, watched interval by interval. N connections
//! (one app session per owner, about 16 devices each, the rest devices) heartbeat; every second
//! a share of them is active (an app commands one of its devices and waits for the ack, or a
//! device reports state with a sequence and waits for the hub's answer, given once stored), and
//! every minute a share of the devices disconnects and connects again. A warm-up first has every
//! device report once and be commanded once (not measured). Each interval prints the hub's RSS
//! and open fds, the round trips' p50/p99, the errors and the disk's slowest sync (see
//! [`DiskProbe`]); at the end, the RSS drift (last interval against the first steady one) and
//! whether p99 stayed flat.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{RunArgs, bar, open_many, report_opened, us};
use crate::client::{Conn, Dial, Inbound, Login, Target, source_for};
use crate::peers::{Env, Peer};
use crate::procstat::rss_bytes;
use crate::report::{Rec, Report, Table};

/// How often the driver hands out the activations and churn due.
const TICK: Duration = Duration::from_millis(10);

/// Devices per owner (each owner has one app session).
const DEVICES_PER_OWNER: usize = 16;

/// Columns of the per-interval table.
/// `heap_MiB` is what the hub's allocator has allocated (`switchyard_heap_allocated_bytes`; blank
/// when the hub runs without jemalloc): RSS growing with it is memory kept, RSS growing alone is
/// the allocator's. `commits`, `commit_ms` and `over_10ms` are the recorder's transactions in the
/// interval, their mean duration and those of them that took over 10 ms (from
/// `switchyard_commit_seconds`): every answer waiting for a slow commit waited that long. `disk_ms` is the worst write-and-sync of the
/// [`DiskProbe`] in the interval: a p99 that rises with it is the disk's stall, not the hub's.
const COLUMNS: [&str; 15] = [
    "t_s",
    "rss_MiB",
    "heap_MiB",
    "fds",
    "devices",
    "apps",
    "rtts",
    "p50_ms",
    "p99_ms",
    "errors",
    "churned",
    "commits",
    "commit_ms",
    "over_10ms",
    "disk_ms",
];
const RSS: usize = 1;
const HEAP: usize = 2;
const FDS: usize = 3;
const RTTS: usize = 6;
const P99: usize = 8;
const ERRORS: usize = 9;
const CHURNED: usize = 10;
const DISK: usize = 14;

/// How often the [`DiskProbe`] writes and syncs.
const DISK_PROBE_EVERY: Duration = Duration::from_millis(50);

/// A thread that writes 4 KiB into a file in the temp directory (where a hub started here keeps
/// its store) and syncs it (`fdatasync`) every [`DISK_PROBE_EVERY`], keeping the slowest. The
/// store's checkpoints sync the same disk, so when the disk stalls the hub's answers wait too;
/// the probe tells those stalls from the hub's own.
struct DiskProbe {
    worst_us: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl DiskProbe {
    fn start() -> Result<DiskProbe> {
        use std::os::unix::fs::FileExt;
        let file = tempfile::tempfile()?;
        let probe = DiskProbe { worst_us: Arc::default(), stop: Arc::default() };
        let (worst, stop) = (probe.worst_us.clone(), probe.stop.clone());
        std::thread::Builder::new().name("disk-probe".into()).spawn(move || {
            let page = [0x5au8; 4096];
            for i in 0u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                if file.write_all_at(&page, (i % 64) * 4096).and_then(|()| file.sync_data()).is_err() {
                    worst.store(u64::MAX, Ordering::Relaxed);
                    break;
                }
                worst.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                std::thread::sleep(DISK_PROBE_EVERY);
            }
        })?;
        Ok(probe)
    }

    /// The slowest write-and-sync since the last take, in milliseconds (NaN once it failed).
    fn take(&self) -> f64 {
        match self.worst_us.swap(0, Ordering::Relaxed) {
            u64::MAX => f64::NAN,
            us => us as f64 / 1000.0,
        }
    }
}

impl Drop for DiskProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What one interval saw, shared by every connection task and taken by the driver.
#[derive(Default)]
struct Interval {
    rtt: Rec,
    /// Error answers, commands or reports left unanswered, failed sends and reconnects.
    errors: AtomicU64,
    churned: AtomicU64,
}

/// What the driver asks a device task to do.
enum DeviceOrder {
    /// Report state with this sequence and time the answer.
    Report(u64),
    /// Close the connection and open it again.
    Churn,
}

/// Sequences unique across the run, so no answer is taken for another's.
static SEQ: AtomicU64 = AtomicU64::new(1);

pub async fn soak(env: &Env, args: &RunArgs) -> Result<Report> {
    if env.peer != Peer::Switchyard {
        bail!("soak runs against Switchyard only");
    }
    let n = args.n.unwrap_or(19_000).max(DEVICES_PER_OWNER + 1);
    let active_pct = args.active_pct.unwrap_or(1.0);
    let churn_pct = args.churn_pct.unwrap_or(1.0);
    let dur = Duration::from_secs_f64(args.duration.unwrap_or(1800.0));
    let every = Duration::from_secs_f64(args.interval_secs.unwrap_or(60.0).max(0.2));
    let open_rate = args.rate.unwrap_or(2000.0);
    let hb = args.hb();
    // One process holds every connection (the hub, started here, inherits the same limit).
    let (fd_limit, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if n as u64 + 64 > fd_limit {
        bail!("soak holds all {n} connections in this process, whose open-file limit is {fd_limit}: lower --n or raise the hard limit");
    }
    let owners_n = n.div_ceil(DEVICES_PER_OWNER + 1);
    let devices_n = n - owners_n;
    let mut report = Report::new("soak", env.peer.name());
    report.param("n", n);
    report.param("apps", owners_n);
    report.param("devices", devices_n);
    report.param("active_pct_per_s", active_pct);
    report.param("churn_pct_per_min", churn_pct);
    report.param("duration_s", dur.as_secs_f64());
    report.param("interval_s", every.as_secs_f64());
    report.param("hb_s", hb.as_secs_f64());

    let owners = env.users(owners_n, true).await?;
    let devices = env.devices(&owners, devices_n).await?;
    env.settle().await;
    let pid = env.pid();
    let (rss0, fds0) = (rss_bytes(pid).unwrap_or(0), open_fds(pid).unwrap_or(0));

    let pb = bar(env.progress, devices_n as u64, "devices");
    let logins: Vec<Login> = devices.iter().map(|d| env.device_login(d)).collect();
    let mut dev_open = open_many(&env.device_target, logins.clone(), 0, n, open_rate, args.concurrency, &pb).await;
    pb.finish_and_clear();
    report_opened(&mut report, "devices", "devices", &dev_open);
    let pb = bar(env.progress, owners_n as u64, "apps");
    let app_logins: Vec<Login> = owners.iter().map(|u| env.app_login(u, None)).collect();
    let mut app_open = open_many(&env.target, app_logins, devices_n, n, open_rate, args.concurrency, &pb).await;
    pb.finish_and_clear();
    report_opened(&mut report, "apps", "app sessions", &app_open);
    if !report.failures.is_empty() {
        return Ok(report);
    }

    let stop = CancellationToken::new();
    let cur = Arc::new(std::sync::Mutex::new(Arc::new(Interval::default())));
    let ack_wait = env.ack_timeout() + Duration::from_secs(2);
    let mut dev_tx = Vec::with_capacity(devices_n);
    let mut tasks = Vec::new();
    for (i, conn) in dev_open.conns.iter_mut().enumerate() {
        let (tx, rx) = mpsc::channel(8);
        dev_tx.push(tx);
        let conn = conn.take().expect("every device opened");
        let d = DeviceTask {
            login: logins[i].clone(),
            target: env.device_target.clone(),
            src: source_for(i, n),
            hb,
            ack_wait,
            cur: cur.clone(),
            stop: stop.clone(),
        };
        tasks.push(tokio::spawn(d.run(conn, rx)));
    }
    let mut app_tx = Vec::with_capacity(owners_n);
    for conn in app_open.conns.iter_mut() {
        let (tx, rx) = mpsc::channel(64);
        app_tx.push(tx);
        let conn = conn.take().expect("every app opened");
        tasks.push(tokio::spawn(app_task(conn, rx, hb, ack_wait, cur.clone(), stop.clone())));
    }

    // Warm-up, not measured: every device reports once and is commanded once by its owner, so
    // what the hub keeps per device it has heard from (its live state, its history count, the
    // owner's list of reachable devices) is all there before the first interval. Without it the
    // first intervals' growth is this state filling in (about 0.5 KB per device), which a drift
    // figure cannot tell from a leak.
    let warm = Instant::now();
    let mut paced = tokio::time::interval(TICK);
    let per_tick = (open_rate * TICK.as_secs_f64()).max(1.0) as usize;
    for chunk in devices.iter().enumerate().collect::<Vec<_>>().chunks(per_tick) {
        paced.tick().await;
        for (d, dev) in chunk {
            let _ = dev_tx[*d].try_send(DeviceOrder::Report(SEQ.fetch_add(1, Ordering::Relaxed)));
            let _ = app_tx[*d % owners_n].send((dev.id.clone(), dev.owner.clone())).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let warmed = std::mem::take(&mut *cur.lock().unwrap_or_else(|p| p.into_inner()));
    report.num("warmup.s", "warm-up: every device reported and was commanded once (not measured)", warm.elapsed().as_secs_f64(), "s");
    report.num("warmup.rtts", "warm-up round trips answered", warmed.rtt.take().len() as f64, "");

    let mut table = Table {
        title: format!("per interval of {} s", every.as_secs_f64()),
        columns: COLUMNS.map(String::from).to_vec(),
        rows: Vec::new(),
    };
    println!("   {}", table.columns.iter().map(|c| format!("{c:>11}")).collect::<String>());
    let active_per_s = n as f64 * active_pct / 100.0;
    let churn_per_s = devices_n as f64 * churn_pct / 100.0 / 60.0;
    let (mut active_due, mut churn_due) = (0.0, 0.0);
    let m0 = env.metrics().await.unwrap_or_default();
    let commit_counts = |m: &HashMap<String, f64>| {
        let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        (get("switchyard_commit_seconds_count"), get("switchyard_commit_seconds_bucket{le=\"0.01\"}"), get("switchyard_commit_seconds_sum"))
    };
    let mut last_commits = commit_counts(&m0);
    let disk = DiskProbe::start()?;
    let t0 = Instant::now();
    // Activations and churn are spread over each second in 10 ms steps: a whole second's share
    // sent at once measured how long the hub takes to drain that burst, not a round trip.
    let mut tick = tokio::time::interval(TICK.min(every));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What is due follows the time that passed, so a late tick does not lower the rate.
    let mut last_tick = Instant::now();
    let mut next_report = t0 + every;
    let mut full_queues = 0u64;
    // Server, generator and other processes' CPU over the load: the machine verdict.
    let phase = env.phase(&[]);
    while t0.elapsed() < dur {
        tick.tick().await;
        let tick_s = last_tick.elapsed().as_secs_f64();
        last_tick = Instant::now();
        active_due += active_per_s * tick_s;
        churn_due += churn_per_s * tick_s;
        while active_due >= 1.0 {
            active_due -= 1.0;
            let d = rand::random_range(0..devices_n);
            let sent = if rand::random::<bool>() {
                let dev = &devices[d];
                app_tx[d % owners_n].try_send((dev.id.clone(), dev.owner.clone())).is_ok()
            } else {
                dev_tx[d].try_send(DeviceOrder::Report(SEQ.fetch_add(1, Ordering::Relaxed))).is_ok()
            };
            if !sent {
                full_queues += 1;
            }
        }
        while churn_due >= 1.0 {
            churn_due -= 1.0;
            let _ = dev_tx[rand::random_range(0..devices_n)].try_send(DeviceOrder::Churn);
        }
        if Instant::now() >= next_report || t0.elapsed() >= dur {
            next_report += every;
            let done = std::mem::take(&mut *cur.lock().unwrap_or_else(|p| p.into_inner()));
            let h = done.rtt.take();
            let m = env.metrics().await.unwrap_or_default();
            let online = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
            let commits = commit_counts(&m);
            let (done_commits, slow_commits) = (commits.0 - last_commits.0, (commits.0 - commits.1) - (last_commits.0 - last_commits.1));
            let commit_mean_ms = (commits.2 - last_commits.2) / done_commits * 1000.0;
            last_commits = commits;
            let q = |p: f64| if h.is_empty() { f64::NAN } else { h.value_at_quantile(p) as f64 / 1000.0 };
            let row = vec![
                t0.elapsed().as_secs_f64().round(),
                rss_bytes(pid).unwrap_or(0) as f64 / 1048576.0,
                online("switchyard_heap_allocated_bytes") / 1048576.0,
                open_fds(pid).unwrap_or(0) as f64,
                online("switchyard_device_sessions"),
                online("switchyard_app_sessions"),
                h.len() as f64,
                q(0.5),
                q(0.99),
                done.errors.load(Ordering::Relaxed) as f64,
                done.churned.load(Ordering::Relaxed) as f64,
                done_commits,
                commit_mean_ms,
                slow_commits,
                disk.take(),
            ];
            println!("   {}", row.iter().map(|v| format!("{:>11}", crate::report::fmt_num(*v))).collect::<String>());
            table.rows.push(row);
        }
    }
    let load = phase.end();
    // Every connection is back once the churn stops (a device reconnects within milliseconds).
    let mut online = f64::NAN;
    for _ in 0..100 {
        let m = env.metrics().await.unwrap_or_default();
        online = ["switchyard_device_sessions", "switchyard_app_sessions"].iter().map(|k| m.get(*k).copied().unwrap_or(0.0)).sum();
        if online >= n as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    report.num("sessions.end", "hub's sessions at the end", online, "");
    if online < n as f64 {
        report.fail(format!("the hub holds {online} sessions 10 s after the load stopped, {n} were opened"));
    }
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }

    report.num("rss.before_open", "hub RSS before connecting", rss0 as f64 / 1048576.0, "MiB");
    report.num("fds.before_open", "hub open fds before connecting", fds0 as f64, "");
    summarise(&mut report, &table);
    report.phase("load", "under load", &load);
    if full_queues > 0 {
        report.note(format!("{full_queues} activations skipped: the connection's task had ended (an app session that failed) or its queue of orders was full"));
    }
    report.tables.push(table);
    Ok(report)
}

/// The end figures: RSS drift, p99 flatness, fds, totals.
fn summarise(report: &mut Report, table: &Table) {
    let rows = &table.rows;
    let Some(last) = rows.last() else { return };
    // The first interval holds the allocator's warm-up; steady starts with the second when
    // there are at least three.
    let steady = if rows.len() >= 3 { &rows[1..] } else { &rows[..] };
    let first = &steady[0];
    let drift = (last[RSS] - first[RSS]) / first[RSS] * 100.0;
    report.num("rss.first_steady", "hub RSS, first steady interval", first[RSS], "MiB");
    report.num("rss.last", "hub RSS, last interval", last[RSS], "MiB");
    report.num("rss.drift_pct", "RSS drift (last vs first steady)", drift, "%");
    if first[HEAP].is_finite() && last[HEAP].is_finite() {
        report.num("heap.first_steady", "hub heap allocated, first steady interval", first[HEAP], "MiB");
        report.num("heap.last", "hub heap allocated, last interval", last[HEAP], "MiB");
        report.num("heap.drift_pct", "heap drift (last vs first steady)", (last[HEAP] - first[HEAP]) / first[HEAP] * 100.0, "%");
    }
    report.num("fds.first_steady", "hub open fds, first steady interval", first[FDS], "");
    report.num("fds.last", "hub open fds, last interval", last[FDS], "");
    report.num("fds.max", "hub open fds, highest", rows.iter().map(|r| r[FDS]).fold(0.0, f64::max), "");
    let mut p99: Vec<f64> = steady.iter().map(|r| r[P99]).filter(|v| v.is_finite()).collect();
    p99.sort_by(f64::total_cmp);
    if let (Some(&lo), Some(&hi)) = (p99.first(), p99.last()) {
        let median = p99[p99.len() / 2];
        report.num("p99.median", "round-trip p99, median of the intervals", median, "ms");
        report.num("p99.min", "round-trip p99, lowest interval", lo, "ms");
        report.num("p99.max", "round-trip p99, highest interval", hi, "ms");
        // Flat: no steady interval's p99 above twice the median one.
        let flat = hi <= 2.0 * median;
        report.text("p99.flat", "p99 stayed flat (every interval within 2x the median)", if flat { "yes" } else { "no" });
        // The intervals over the bound whose disk stalled as long as their p99 was.
        let over: Vec<&Vec<f64>> = steady.iter().filter(|r| r[P99] > 2.0 * median).collect();
        let disk_bound = over.iter().filter(|r| r[DISK] >= r[P99]).count();
        if !over.is_empty() {
            report.note(format!(
                "{} of the {} intervals over twice the median p99 had a disk stall (disk_ms) at least as long as their p99",
                disk_bound,
                over.len()
            ));
        }
    }
    report.num("disk.max", "slowest 4 KiB write-and-sync of the disk probe", rows.iter().map(|r| r[DISK]).fold(0.0, f64::max), "ms");
    let total = |i: usize| rows.iter().map(|r| r[i]).sum::<f64>();
    report.num("round_trips", "round trips (commands and reports)", total(RTTS), "");
    report.num("errors", "errors (error answers, no answer, failed sends or reconnects)", total(ERRORS), "");
    report.num("churned", "devices disconnected and reconnected", total(CHURNED), "");
    if drift.is_finite() && drift >= 5.0 {
        report.note(format!("RSS drift {drift:.1}% is above the 5% goal"));
    }
}

/// A device connection: heartbeats, acks commands, reports on order (timing the hub's answer),
/// and reconnects on order or when its connection fails.
struct DeviceTask {
    login: Login,
    target: Target,
    /// The source address it connects from (spread as when it first opened).
    src: Option<std::net::Ipv4Addr>,
    hb: Duration,
    ack_wait: Duration,
    cur: Arc<std::sync::Mutex<Arc<Interval>>>,
    stop: CancellationToken,
}

impl DeviceTask {
    fn now(&self) -> Arc<Interval> {
        self.cur.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn run(self, mut conn: Conn, mut orders: mpsc::Receiver<DeviceOrder>) {
        let mut next_hb = tokio::time::Instant::now() + self.hb.mul_f64(rand::random::<f64>());
        let mut pending: HashMap<u64, Instant> = HashMap::new();
        loop {
            let oldest = pending.values().min().map(|t| (*t + self.ack_wait).into());
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep_until(next_hb) => {
                    next_hb += self.hb;
                    if conn.send_ping().await.is_err() {
                        conn = self.reconnect(&mut pending).await;
                    }
                }
                _ = tokio::time::sleep_until(oldest.unwrap_or(next_hb)), if oldest.is_some() => {
                    let late = pending.len();
                    pending.retain(|_, t| t.elapsed() < self.ack_wait);
                    self.now().errors.fetch_add((late - pending.len()) as u64, Ordering::Relaxed);
                }
                order = orders.recv() => match order {
                    None => return,
                    Some(DeviceOrder::Report(seq)) => {
                        let t = Instant::now();
                        if conn.send_report_seq(seq, "").await.is_err() {
                            self.now().errors.fetch_add(1, Ordering::Relaxed);
                            conn = self.reconnect(&mut pending).await;
                        } else {
                            pending.insert(seq, t);
                        }
                    }
                    Some(DeviceOrder::Churn) => {
                        let _ = conn.ws.close(None).await;
                        drop(conn);
                        self.now().churned.fetch_add(1, Ordering::Relaxed);
                        conn = self.reconnect(&mut pending).await;
                    }
                },
                r = conn.recv() => match r {
                    Ok(Inbound::Command { seq }) => {
                        if conn.send_ack(seq).await.is_err() {
                            conn = self.reconnect(&mut pending).await;
                        }
                    }
                    Ok(Inbound::Reply { seq, error }) => {
                        if let Some(t) = pending.remove(&seq) {
                            let i = self.now();
                            if error == 0 {
                                i.rtt.record(us(t.elapsed()));
                            } else {
                                i.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if self.stop.is_cancelled() {
                            return;
                        }
                        self.now().errors.fetch_add(1, Ordering::Relaxed);
                        conn = self.reconnect(&mut pending).await;
                    }
                }
            }
        }
    }

    /// Opens the connection again, retrying with back-off; what was pending is lost (counted).
    async fn reconnect(&self, pending: &mut HashMap<u64, Instant>) -> Conn {
        self.now().errors.fetch_add(pending.len() as u64, Ordering::Relaxed);
        pending.clear();
        let mut backoff = Duration::from_millis(50);
        loop {
            match Conn::open(&self.target, &self.login, Dial { src: self.src, rcvbuf: None }, Duration::from_secs(20)).await {
                Ok(c) => return c,
                Err(_) => {
                    self.now().errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff.mul_f64(0.5 + rand::random::<f64>())).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// An app session: heartbeats, sends the commands it is given and times their acks.
async fn app_task(
    mut conn: Conn,
    mut orders: mpsc::Receiver<(String, String)>,
    hb: Duration,
    ack_wait: Duration,
    cur: Arc<std::sync::Mutex<Arc<Interval>>>,
    stop: CancellationToken,
) {
    let now = || cur.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut next_hb = tokio::time::Instant::now() + hb.mul_f64(rand::random::<f64>());
    let mut pending: HashMap<u64, Instant> = HashMap::new();
    loop {
        let oldest = pending.values().min().map(|t| (*t + ack_wait).into());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next_hb) => {
                next_hb += hb;
                if conn.send_ping().await.is_err() {
                    now().errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            _ = tokio::time::sleep_until(oldest.unwrap_or(next_hb)), if oldest.is_some() => {
                let late = pending.len();
                pending.retain(|_, t| t.elapsed() < ack_wait);
                now().errors.fetch_add((late - pending.len()) as u64, Ordering::Relaxed);
            }
            order = orders.recv() => {
                let Some((deviceid, owner)) = order else { return };
                let seq = SEQ.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                if conn.send_command(&deviceid, &owner, seq).await.is_err() {
                    now().errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                pending.insert(seq, t);
            }
            r = conn.recv() => match r {
                Ok(Inbound::Reply { seq, error }) => {
                    if let Some(t) = pending.remove(&seq) {
                        let i = now();
                        // 504 "device went offline" is what a command to a device in the middle of
                        // its churn gets: counted as an error like any other.
                        if error == 0 {
                            i.rtt.record(us(t.elapsed()));
                        } else {
                            i.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    if !stop.is_cancelled() {
                        now().errors.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
            }
        }
    }
}

/// How many file descriptors a process holds open.
fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}
