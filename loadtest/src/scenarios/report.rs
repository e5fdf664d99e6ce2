//! `report`: N devices report state at a total rate, each report with a sequence, and measure
//! the time from sending a report to its answer. The hub answers a report once the transaction
//! holding it is committed, so this is the cost of a durable report: its latency, the hub's CPU
//! per report and how many reports one transaction carried.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{Pacer, RunArgs, bar, open_many, report_opened, timed_bar, us};
use crate::client::{Conn, Inbound, Login};
use crate::peers::{Env, Peer};
use crate::report::{Rec, Report};

#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    unanswered: AtomicU64,
}

/// One device: reports at `rate` until `end`, then waits up to `grace` for the last answers.
async fn drive(mut conn: Conn, rate: f64, end: Instant, grace: Duration, pad: String, lat: Rec, tally: Arc<Tally>) -> Option<String> {
    let mut pacer = Pacer::new(rate);
    // Spread the devices' first reports over one period.
    pacer.start += Duration::from_secs_f64(rand::random::<f64>() / rate);
    let mut waiting: HashMap<u64, Instant> = HashMap::new();
    loop {
        let sending = Instant::now() < end;
        if !sending && (waiting.is_empty() || Instant::now() > end + grace) {
            break;
        }
        let next = if sending { pacer.due_at(pacer.sent) } else { end + grace };
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {
                if sending {
                    let seq = pacer.sent;
                    if let Err(e) = conn.send_report_seq(seq, &pad).await {
                        return Some(format!("sending a report failed: {e}"));
                    }
                    waiting.insert(seq, Instant::now());
                    pacer.sent += 1;
                    tally.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            r = conn.recv() => match r {
                Ok(Inbound::Reply { seq, error }) => {
                    if let Some(t) = waiting.remove(&seq) {
                        if error == 0 {
                            lat.record(us(t.elapsed()));
                            tally.acked.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => return Some(format!("device connection ended: {e}")),
            }
        }
    }
    tally.unanswered.fetch_add(waiting.len() as u64, Ordering::Relaxed);
    None
}

pub async fn reports(env: &Env, args: &RunArgs) -> Result<Report> {
    if env.peer != Peer::Switchyard {
        bail!("report runs against Switchyard only (it measures the hub's durable answer to a report)");
    }
    let n = args.n.unwrap_or(50).max(1);
    let rate = args.rate.unwrap_or(2000.0);
    let dur = Duration::from_secs_f64(args.duration.unwrap_or(10.0));
    let pad = "x".repeat(args.pad.unwrap_or(0));
    let mut report = Report::new("report", env.peer.name());
    report.param("devices", n);
    report.param("rate", rate);
    report.param("duration_s", dur.as_secs_f64());
    let users = env.users(n, false).await?;
    let devices = env.devices(&users, n).await?;
    env.settle().await;
    let logins: Vec<Login> = devices.iter().map(|d| env.device_login(d)).collect();
    let pb = bar(env.progress, n as u64, "devices");
    let mut o = open_many(&env.target, logins, 0, n, 0.0, args.concurrency, &pb).await;
    pb.finish_and_clear();
    report_opened(&mut report, "devices", "devices", &o);
    let before = env.metrics().await;

    let lat = Rec::default();
    let tally = Arc::new(Tally::default());
    let pb = timed_bar(env.progress, dur, "reports");
    let phase = env.phase(&[]);
    let end = Instant::now() + dur;
    let per_device = rate / n as f64;
    let tasks: Vec<_> = o
        .conns
        .iter_mut()
        .filter_map(Option::take)
        .map(|c| tokio::spawn(drive(c, per_device, end, Duration::from_secs(5), pad.clone(), lat.clone(), tally.clone())))
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        if let Ok(Some(e)) = t.await {
            failures.push(e);
        }
    }
    let p = phase.end();
    pb.finish_and_clear();
    let after = env.metrics().await;

    let h = lat.take();
    let acked = tally.acked.load(Ordering::Relaxed);
    report.num("sent", "reports sent", tally.sent.load(Ordering::Relaxed) as f64, "");
    report.num("acked", "reports answered error 0", acked as f64, "");
    report.num("rate", "reports answered per second", acked as f64 / p.secs, "/s");
    report.latency("ack", "report → answer", &h);
    report.num("cpu_us_per_report", "hub CPU per report", p.cpu_per(acked).unwrap_or(f64::NAN), "µs");
    if let (Some(b), Some(a)) = (before, after) {
        let delta = |k: &str| a.get(k).copied().unwrap_or(0.0) - b.get(k).copied().unwrap_or(0.0);
        let groups = delta("switchyard_commit_groups_total");
        if groups > 0.0 {
            report.num("commit_groups", "hub transactions (commit groups)", groups, "");
            report.num("reports_per_commit", "reports per transaction", acked as f64 / groups, "");
        }
        report.num("history_recorded", "history rows recorded", delta("switchyard_history_recorded_total"), "");
    }
    report.phase("run", "run", &p);
    let failed = tally.failed.load(Ordering::Relaxed);
    if failed > 0 {
        report.fail(format!("{failed} reports answered with an error"));
    }
    let unanswered = tally.unanswered.load(Ordering::Relaxed);
    if unanswered > 0 {
        report.fail(format!("{unanswered} reports unanswered 5 s after the run"));
    }
    if let Some(e) = failures.first() {
        report.fail(format!("{} device(s) failed; first: {e}", failures.len()));
    }
    Ok(report)
}
