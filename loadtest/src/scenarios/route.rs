//! Routing scenarios: `route-rr` (one update in flight: the round-trip floor), `route-p2p` (N
//! app→device pairs at stepped open-loop rates: the highest rate with p99 < 10 ms and CPU per
//! update+ack) and `route-timeout` (mute devices: every update ends in 504 at the deadline;
//! pending-request memory stays flat). Latency is measured from the moment a command was written
//! to the socket; how late the generator was against its schedule is reported as "lag", so a
//! saturated generator shows up instead of hiding in the numbers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use tokio_util::sync::CancellationToken;

use super::{ConnStats, Pacer, RunArgs, bar, open_many, report_opened, spawn_conn, timed_bar, us};
use crate::client::{Conn, Inbound, Login};
use crate::hub::Device;
use crate::peers::{Env, Peer};
use crate::procstat::{RssSampler, slope};
use crate::report::{Rec, Report, Table};

/// Connects devices (acking unless `mute`) and returns their tasks' stop token and stats.
async fn start_devices(
    env: &Env,
    report: &mut Report,
    devices: &[Device],
    mute: bool,
    hb: Duration,
    concurrency: usize,
) -> (CancellationToken, Arc<ConnStats>) {
    let stop = CancellationToken::new();
    let stats = Arc::new(ConnStats::default());
    if env.peer == Peer::Echo {
        return (stop, stats);
    }
    let logins: Vec<Login> = devices.iter().map(|d| env.device_login(d)).collect();
    let pb = bar(env.progress, logins.len() as u64, "devices");
    let mut o = open_many(&env.device_target, logins, 0, devices.len(), 0.0, concurrency, &pb).await;
    pb.finish_and_clear();
    report_opened(report, "devices", "devices", &o);
    for c in o.conns.iter_mut().filter_map(Option::take) {
        spawn_conn(c, hb, mute, stop.clone(), stats.clone());
    }
    (stop, stats)
}

/// What one paced app session saw.
#[derive(Default)]
struct Counts {
    sent: u64,
    ok: u64,
    codes: BTreeMap<i64, u64>,
    lost: u64,
    unknown: u64,
    failed: Option<String>,
}

impl Counts {
    fn merge(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.ok += o.ok;
        for (k, v) in &o.codes {
            *self.codes.entry(*k).or_default() += v;
        }
        self.lost += o.lost;
        self.unknown += o.unknown;
        if self.failed.is_none() {
            self.failed.clone_from(&o.failed);
        }
    }

    fn code(&self, c: i64) -> u64 {
        self.codes.get(&c).copied().unwrap_or(0)
    }

    fn other_errors(&self, except: &[i64]) -> u64 {
        self.codes.iter().filter(|(k, _)| !except.contains(k)).map(|(_, v)| v).sum()
    }
}

/// Where one session's latencies go: successes, error replies, and schedule lag.
#[derive(Clone, Default)]
struct Recs {
    ok: Rec,
    err: Rec,
    lag: Rec,
    /// Subtracted from an error reply's latency before it is recorded. route-timeout sets it to
    /// the deadline less 100 ms, so 504s are recorded near 100 ms, where 3 significant digits
    /// mean 0.1 ms buckets instead of about 2 ms ones at 3 s.
    err_shift: u64,
}

/// One app session sending updates to `targets` (round-robin) at `rate` for `dur`, then waiting
/// up to `drain` for the outstanding replies.
async fn paced(
    mut conn: Conn,
    targets: Vec<(String, String)>,
    rate: f64,
    dur: Duration,
    drain: Duration,
    seq0: u64,
    recs: Recs,
) -> (Option<Conn>, Counts) {
    let mut c = Counts::default();
    let mut pacer = Pacer::new(rate);
    let end = pacer.start + dur;
    let mut inflight: HashMap<u64, Instant> = HashMap::new();
    loop {
        let now = Instant::now();
        let sending = now < end;
        if !sending && inflight.is_empty() {
            break;
        }
        let wake = if sending { pacer.due_at(pacer.sent).min(end) } else { end + drain };
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {
                if !sending {
                    c.lost += inflight.len() as u64;
                    break;
                }
                for _ in 0..pacer.due().min(256) {
                    let seq = seq0 + pacer.sent;
                    let (dev, owner) = &targets[(pacer.sent as usize) % targets.len()];
                    let due = pacer.due_at(pacer.sent);
                    // Taken before the write: a generator descheduled after its write must not
                    // make the server look faster than it is (a 504 "before" the deadline).
                    let t = Instant::now();
                    if let Err(e) = conn.send_command(dev, owner, seq).await {
                        c.failed = Some(format!("sending an update failed: {e}"));
                        return (None, c);
                    }
                    recs.lag.record(us(t.saturating_duration_since(due)));
                    inflight.insert(seq, t);
                    pacer.sent += 1;
                    c.sent += 1;
                }
            }
            r = conn.recv() => match r {
                Ok(Inbound::Reply { seq, error }) => match inflight.remove(&seq) {
                    Some(t) => {
                        if error == 0 {
                            c.ok += 1;
                            recs.ok.record(us(t.elapsed()));
                        } else {
                            *c.codes.entry(error).or_default() += 1;
                            recs.err.record(us(t.elapsed()).saturating_sub(recs.err_shift));
                        }
                    }
                    None => c.unknown += 1,
                },
                Ok(_) => {}
                Err(e) => {
                    c.failed = Some(format!("app session ended: {e}"));
                    c.lost += inflight.len() as u64;
                    return (None, c);
                }
            }
        }
    }
    (Some(conn), c)
}

/// Opens one app session per user (hearing acks).
async fn open_apps(env: &Env, report: &mut Report, users: &[crate::hub::User], concurrency: usize) -> Vec<Conn> {
    let logins: Vec<Login> = users.iter().map(|u| env.app_login(u, None)).collect();
    let pb = bar(env.progress, logins.len() as u64, "apps");
    let o = open_many(&env.target, logins, 0, users.len(), 0.0, concurrency, &pb).await;
    pb.finish_and_clear();
    report_opened(report, "apps", "app sessions", &o);
    o.conns.into_iter().flatten().collect()
}

/// `route-rr`: one update in flight at a time.
pub async fn rr(env: &Env, args: &RunArgs) -> Result<Report> {
    let dur = Duration::from_secs_f64(args.duration.unwrap_or(10.0));
    let mut report = Report::new("route-rr", env.peer.name());
    report.param("duration_s", dur.as_secs_f64());
    let users = env.users(1, true).await?;
    let devices = env.devices(&users, 1).await?;
    env.settle().await;
    let (stop, dstats) = start_devices(env, &mut report, &devices, false, args.hb(), 4).await;
    let mut app = open_apps(env, &mut report, &users, 4).await.pop().ok_or_else(|| anyhow!("the app session did not open"))?;
    env.settle_cluster().await;
    let (dev, owner) = (devices[0].id.clone(), devices[0].owner.clone());
    let wait = env.ack_timeout() + Duration::from_secs(2);
    let lat = Rec::default();
    let mut codes: BTreeMap<i64, u64> = BTreeMap::new();
    let pb = timed_bar(env.progress, dur, "round trips");
    let phase = env.phase(&[]);
    let t0 = Instant::now();
    let mut seq = 0u64;
    'outer: while t0.elapsed() < dur {
        seq += 1;
        let t = Instant::now();
        if let Err(e) = app.send_command(&dev, &owner, seq).await {
            report.fail(format!("sending failed: {e}"));
            break;
        }
        loop {
            match tokio::time::timeout(wait, app.recv()).await {
                Ok(Ok(Inbound::Reply { seq: s, error })) if s == seq => {
                    if error == 0 {
                        lat.record(us(t.elapsed()));
                    } else {
                        *codes.entry(error).or_default() += 1;
                    }
                    break;
                }
                Ok(Ok(Inbound::Reply { seq: s, .. })) => {
                    report.fail(format!("reply for sequence {s} while waiting for {seq}"));
                    break 'outer;
                }
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => {
                    report.fail(format!("app session ended: {e}"));
                    break 'outer;
                }
                Err(_) => {
                    report.fail(format!("no reply to update {seq} within {wait:?}"));
                    break 'outer;
                }
            }
        }
    }
    let p = phase.end();
    pb.finish_and_clear();
    stop.cancel();
    let h = lat.take();
    let trips = h.len();
    report.num("round_trips", "round trips", trips as f64, "");
    report.num("rate", "round trips per second", trips as f64 / p.secs, "/s");
    report.latency("rtt", "round trip", &h);
    report.num("cpu_us_per_update", "server CPU per update+ack", p.cpu_per(trips).unwrap_or(f64::NAN), "µs");
    if let (Some(n), true) = (p.nats_cpu_us, trips > 0) {
        report.num("nats_cpu_us_per_update", "NATS server CPU per update+ack", n as f64 / trips as f64, "µs");
    }
    report.phase("run", "run", &p);
    for (code, c) in &codes {
        report.fail(format!("{c} updates answered with error {code}"));
    }
    if dstats.closed.load(Ordering::Relaxed) > 0 {
        report.fail(format!("device connection ended: {:?}", dstats.first_errors()));
    }
    Ok(report)
}

/// route-p2p's warm-up before the measured steps.
const WARM_UP: Duration = Duration::from_secs(2);
const WARM_UP_PER_PAIR: f64 = 10.0;

/// `route-p2p`: N pairs, total rate stepped up until p99 passes 10 ms (`--p99-limit-ms`).
pub async fn p2p(env: &Env, args: &RunArgs) -> Result<Report> {
    let m = args.n.unwrap_or(50).max(1);
    let limit = args.p99_limit_ms.unwrap_or(10.0);
    let step = Duration::from_secs_f64(args.step_secs.unwrap_or(5.0));
    let steps: Vec<f64> = if !args.steps.is_empty() {
        args.steps.clone()
    } else {
        let (mut r, max) = (args.rate.unwrap_or(1000.0), args.max_rate.unwrap_or(64_000.0));
        let mut v = Vec::new();
        while r <= max {
            v.push(r);
            r *= 2.0;
        }
        v
    };
    let mut report = Report::new("route-p2p", env.peer.name());
    report.param("pairs", m);
    report.param("step_s", step.as_secs_f64());
    report.param("steps", steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(","));
    let users = env.users(m, true).await?;
    let devices = env.devices(&users, m).await?;
    env.settle().await;
    let (stop, dstats) = start_devices(env, &mut report, &devices, false, args.hb(), args.concurrency).await;
    let mut apps: Vec<(Conn, (String, String))> = open_apps(env, &mut report, &users, args.concurrency)
        .await
        .into_iter()
        .zip(devices.iter().map(|d| (d.id.clone(), d.owner.clone())))
        .collect();
    env.settle_cluster().await;
    let drain = env.ack_timeout() + Duration::from_secs(1);
    let mut table = Table {
        title: "steps".into(),
        columns: [
            "target/s",
            "done/s",
            "p50 ms",
            "p99 ms",
            "p999 ms",
            "max ms",
            "lag p99",
            "errors",
            "504",
            "lost",
            "cpu µs/upd",
            "srv cores",
            "gen cores",
            "other",
        ]
        .map(String::from)
        .to_vec(),
        rows: Vec::new(),
    };
    let nats = env.nats_pid().is_some();
    if nats {
        table.columns.push("nats cores".into());
        table.columns.push("nats µs".into());
    }
    // A warm-up, not measured: every pair sends for a moment first, so the first step does not
    // time first touches (a fresh store's first writes, the hub's first commits).
    report.param("warm_up", format!("{WARM_UP_PER_PAIR}/s per pair for {} s, not measured", WARM_UP.as_secs()));
    let warming: Vec<_> = apps
        .drain(..)
        .map(|(conn, t)| {
            tokio::spawn(async move {
                let (c, _) = paced(conn, vec![t.clone()], WARM_UP_PER_PAIR, WARM_UP, drain, 0xffff << 32, Recs::default()).await;
                c.map(|c| (c, t))
            })
        })
        .collect();
    for h in warming {
        if let Ok(Some(app)) = h.await {
            apps.push(app);
        }
    }
    let mut best: Option<(f64, f64, f64, f64, Option<f64>)> = None;
    for (i, &rate) in steps.iter().enumerate() {
        if apps.is_empty() {
            break;
        }
        let per = rate / apps.len() as f64;
        let recs = Recs::default();
        let pb = timed_bar(env.progress, step, &format!("{rate}/s"));
        let phase = env.phase(&[]);
        let handles: Vec<_> = apps
            .drain(..)
            .map(|(conn, t)| {
                let recs = recs.clone();
                tokio::spawn(async move {
                    let (c, counts) = paced(conn, vec![t.clone()], per, step, drain, (i as u64 + 1) << 32, recs).await;
                    (c.map(|c| (c, t)), counts)
                })
            })
            .collect();
        let mut counts = Counts::default();
        for h in handles {
            let Ok((c, n)) = h.await else { continue };
            counts.merge(&n);
            apps.extend(c);
        }
        let p = phase.end();
        pb.finish_and_clear();
        report.other_cores = report.other_cores.max(p.other_cores);
        let (h, lag) = (recs.ok.take(), recs.lag.take());
        let q = |h: &hdrhistogram::Histogram<u64>, x: f64| if h.is_empty() { f64::NAN } else { h.value_at_quantile(x) as f64 / 1000.0 };
        let done = counts.ok as f64 / step.as_secs_f64();
        let cpu = p.cpu_per(counts.ok).unwrap_or(f64::NAN);
        let errors = counts.other_errors(&[504]) + counts.unknown;
        table.rows.push(vec![
            rate,
            done,
            q(&h, 0.5),
            q(&h, 0.99),
            q(&h, 0.999),
            h.max() as f64 / 1000.0,
            q(&lag, 0.99),
            errors as f64,
            counts.code(504) as f64,
            counts.lost as f64,
            cpu,
            p.server_cores(),
            p.gen_cores(),
            p.other_cores,
        ]);
        if nats {
            let row = table.rows.last_mut().expect("pushed above");
            row.push(p.nats_cores().unwrap_or(f64::NAN));
            row.push(p.nats_cpu_us.filter(|_| counts.ok > 0).map_or(f64::NAN, |n| n as f64 / counts.ok as f64));
        }
        if i == 0 {
            report.num("first_step.cpu_us_per_update", &format!("server CPU per update+ack at {rate}/s"), cpu, "µs");
            report.num("first_step.p99", &format!("p99 at {rate}/s"), q(&h, 0.99), "ms");
        }
        if let Some(f) = &counts.failed {
            report.fail(format!("at {rate}/s: {f}"));
        }
        if counts.unknown > 0 || counts.other_errors(&[504, 429]) > 0 {
            report.fail(format!("at {rate}/s: {} replies with unknown sequences, error codes {:?}", counts.unknown, counts.codes));
        }
        let pass = q(&h, 0.99) < limit && counts.lost == 0 && errors == 0 && counts.code(504) == 0 && done >= 0.9 * rate;
        if !pass {
            report.note(format!(
                "stopped stepping at {rate}/s: p99 {:.2} ms, done {done:.0}/s, errors {errors}, 504 {}, lost {}",
                q(&h, 0.99),
                counts.code(504),
                counts.lost
            ));
            break;
        }
        best = Some((rate, cpu, q(&h, 0.99), q(&h, 0.5), p.nats_cpu_us.filter(|_| counts.ok > 0).map(|n| n as f64 / counts.ok as f64)));
    }
    stop.cancel();
    report.tables.push(table);
    match best {
        Some((rate, cpu, p99, p50, nats)) => {
            report.num("max_rate", &format!("highest total rate with p99 < {limit} ms"), rate, "/s");
            report.num("cpu_us_per_update", "server CPU per update+ack at that rate", cpu, "µs");
            if let Some(n) = nats {
                report.num("nats_cpu_us_per_update", "NATS server CPU per update+ack at that rate", n, "µs");
            }
            report.num("p99_at_max", "p99 at that rate", p99, "ms");
            report.num("p50_at_max", "p50 at that rate", p50, "ms");
        }
        None => report.num("max_rate", &format!("highest total rate with p99 < {limit} ms"), 0.0, "/s"),
    }
    if dstats.closed.load(Ordering::Relaxed) > 0 {
        report.fail(format!("device connections ended: {:?}", dstats.first_errors()));
    }
    Ok(report)
}

/// Where route-timeout records the deadline (see [`Recs::err_shift`]).
const ERR_SHIFT_BASE_US: u64 = 100_000;

/// `route-timeout`: mute devices; every update must end in 504 at the deadline.
pub async fn timeout(env: &Env, args: &RunArgs) -> Result<Report> {
    if env.peer != Peer::Switchyard {
        anyhow::bail!("route-timeout needs the hub");
    }
    let deadline = env.ack_timeout();
    let rate = args.rate.unwrap_or(200.0);
    let dur = Duration::from_secs_f64(args.duration.unwrap_or(10.0).max(deadline.as_secs_f64() * 2.0));
    // Keep every session well under the hub's --max-inflight (128).
    let apps = ((rate * deadline.as_secs_f64() * 1.5 / 100.0).ceil() as usize).max(1);
    let d = args.n.unwrap_or(20).max(apps);
    let mut report = Report::new("route-timeout", env.peer.name());
    report.param("devices", d);
    report.param("apps", apps);
    report.param("rate", rate);
    report.param("duration_s", dur.as_secs_f64());
    report.param("ack_timeout_ms", deadline.as_millis());
    let users = env.users(apps, true).await?;
    let devices = env.devices(&users, d).await?;
    env.settle().await;
    let (stop, dstats) = start_devices(env, &mut report, &devices, true, args.hb(), args.concurrency).await;
    let conns = open_apps(env, &mut report, &users, args.concurrency).await;
    env.settle_cluster().await;
    let recs = Recs { err_shift: us(deadline).saturating_sub(ERR_SHIFT_BASE_US), ..Recs::default() };
    let sampler = RssSampler::start(env.pid(), Duration::from_millis(250));
    let pb = timed_bar(env.progress, dur + deadline, "updates to mute devices");
    let phase = env.phase(&[]);
    let drain = deadline + Duration::from_secs(2);
    let handles: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(j, conn)| {
            let mine: Vec<(String, String)> =
                devices.iter().filter(|x| x.owner == users[j].uid).map(|x| (x.id.clone(), x.owner.clone())).collect();
            let recs = recs.clone();
            let per = rate / apps as f64;
            tokio::spawn(async move { paced(conn, mine, per, dur, drain, 1, recs).await })
        })
        .collect();
    let mut counts = Counts::default();
    for h in handles {
        if let Ok((_, n)) = h.await {
            counts.merge(&n);
        }
    }
    let p = phase.end();
    pb.finish_and_clear();
    let samples = sampler.finish().await;
    stop.cancel();
    let h = recs.err.take();
    let dl_ms = us(deadline) as f64 / 1000.0;
    // Recorded values are latency minus `err_shift`: the deadline sits at `dl` in them.
    let dl = (us(deadline) - recs.err_shift) as f64 / 1000.0;
    report.num("sent", "updates sent", counts.sent as f64, "");
    report.num("replies_504", "answered 504", counts.code(504) as f64, "");
    report.num("acked", "answered 0 (must be none)", counts.ok as f64, "");
    report.num("lost", "never answered", counts.lost as f64, "");
    if !h.is_empty() {
        report.num("late.min", "504 after the deadline: min", h.min() as f64 / 1000.0 - dl, "ms");
        report.num("late.p50", "504 after the deadline: p50", h.value_at_quantile(0.5) as f64 / 1000.0 - dl, "ms");
        report.num("late.p99", "504 after the deadline: p99", h.value_at_quantile(0.99) as f64 / 1000.0 - dl, "ms");
        report.num("late.max", "504 after the deadline: max", h.max() as f64 / 1000.0 - dl, "ms");
        // Only a 504 whose whole histogram bucket lies more than 1 ms before the deadline proves
        // it came early.
        if (h.highest_equivalent(h.min()) as f64 / 1000.0) < dl - 1.0 {
            report.fail(format!("a 504 came {:.1} ms before the {dl_ms} ms deadline", dl - h.min() as f64 / 1000.0));
        }
    }
    report.num("cpu_us_per_update", "server CPU per update (command + 504)", p.cpu_per(counts.sent).unwrap_or(f64::NAN), "µs");
    let base = samples.first().map_or(0, |s| s.1);
    let steady: Vec<(f64, u64)> =
        samples.iter().copied().filter(|s| s.0 > deadline.as_secs_f64() * 2.0 + 0.5 && s.0 < dur.as_secs_f64()).collect();
    let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    report.num("rss.before", "server RSS at start", base as f64 / 1048576.0, "MiB");
    report.num("rss.max", "server RSS max", max as f64 / 1048576.0, "MiB");
    report.num("rss.end", "server RSS after the last 504", samples.last().map_or(0, |s| s.1) as f64 / 1048576.0, "MiB");
    report.num("rss.steady_slope", "server RSS growth at steady state", slope(&steady) / 1024.0, "KiB/s");
    report.num("pending.steady", "pending commands at steady state (rate × deadline)", rate * deadline.as_secs_f64(), "");
    report.phase("run", "run", &p);
    if counts.ok > 0 || counts.other_errors(&[504]) > 0 || counts.unknown > 0 {
        report.fail(format!(
            "mute devices' updates answered {} × 0, codes {:?}, {} unknown sequences",
            counts.ok, counts.codes, counts.unknown
        ));
    }
    if counts.lost > 0 {
        report.fail(format!("{} updates got no answer within the deadline + 2 s", counts.lost));
    }
    if let Some(f) = counts.failed {
        report.fail(f);
    }
    if dstats.commands.load(Ordering::Relaxed) < counts.sent {
        report.note(format!("devices saw {} of {} commands", dstats.commands.load(Ordering::Relaxed), counts.sent));
    }
    Ok(report)
}
