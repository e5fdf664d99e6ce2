//! Fan-out scenarios: `fanout` (one device's reports delivered to N sessions of its owner and
//! sharees: delivery latency and server CPU per delivery) and `slow-consumer` (the same while one
//! session stops reading: server memory must stay bounded, the session is closed as a slow
//! consumer, and the others' latency and deliveries are unaffected). Each report carries the
//! generator's clock (`lt`, µs), so every delivery's latency is measured where it lands.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{Pacer, RunArgs, bar, now_us, open_many, report_opened, timed_bar};
use crate::client::{Conn, Dial, Inbound, Login};
use crate::peers::{Env, Peer};
use crate::procstat::RssSampler;
use crate::report::{Rec, Report};

/// What the listening sessions share: which phase's histogram to record into, and counts.
#[derive(Default)]
struct Listening {
    recs: [Rec; 2],
    phase: AtomicUsize,
    delivered: AtomicU64,
    closed: AtomicU64,
    /// Echo peer only: frames the listeners sent themselves.
    self_sent: AtomicU64,
}

/// A listening session: records each delivery's latency. On the echo peer, which cannot fan
/// out, each listener sends its own reports at `echo.0` per second for `echo.1` and hears them
/// back.
fn spawn_listener(
    mut conn: Conn,
    l: Arc<Listening>,
    stop: CancellationToken,
    echo: Option<(f64, Duration)>,
    pad: String,
    hb: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pacer = echo.map(|(rate, _)| Pacer::new(rate));
        let end = Instant::now() + echo.map_or(Duration::ZERO, |e| e.1);
        // Heartbeats keep long runs under the server's silence limit (echo needs none).
        let mut ping = tokio::time::Instant::now() + hb.mul_f64(rand::random::<f64>());
        loop {
            let sending = pacer.is_some() && Instant::now() < end;
            let wake = pacer.as_ref().map_or_else(|| Instant::now() + Duration::from_secs(3600), |p| p.due_at(p.sent));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(ping), if echo.is_none() => {
                    if conn.send_ping().await.is_err() {
                        l.closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    ping += hb;
                }
                _ = tokio::time::sleep_until(wake.into()), if sending => {
                    let p = pacer.as_mut().expect("checked");
                    for _ in 0..p.due().min(64) {
                        if conn.send_report(now_us(), &pad).await.is_err() {
                            l.closed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        p.sent += 1;
                        l.self_sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                r = conn.recv() => match r {
                    Ok(Inbound::Event { lt: Some(lt) }) => {
                        l.recs[l.phase.load(Ordering::Relaxed).min(1)].record(now_us().saturating_sub(lt));
                        l.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        l.closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        }
    })
}

/// The device: sends `rate` reports per second for `dur`, reading its report acks meanwhile.
async fn publish(dev: &mut Conn, rate: f64, dur: Duration, pad: &str) -> Result<u64> {
    let mut pacer = Pacer::new(rate);
    let end = pacer.start + dur;
    while Instant::now() < end {
        tokio::select! {
            _ = tokio::time::sleep_until(pacer.due_at(pacer.sent).min(end).into()) => {
                for _ in 0..pacer.due().min(64) {
                    if Instant::now() >= end {
                        break;
                    }
                    dev.send_report(now_us(), pad).await?;
                    pacer.sent += 1;
                }
            }
            r = dev.recv() => { r?; }
        }
    }
    Ok(pacer.sent)
}

/// Waits until `delivered` reaches `want` or `limit` passes, reading the device's acks.
async fn drain(l: &Listening, want: u64, limit: Duration, dev: Option<&mut Conn>) {
    let t0 = Instant::now();
    let mut dev = dev;
    while l.delivered.load(Ordering::Relaxed) < want && t0.elapsed() < limit {
        match dev.as_deref_mut() {
            Some(d) => {
                let _ = tokio::time::timeout(Duration::from_millis(20), d.recv()).await;
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

struct Setup {
    owner: String,
    logins: Vec<Login>,
    device: Option<Login>,
}

async fn setup(env: &Env, k: usize, u: usize, extra: usize) -> Result<Setup> {
    let users = env.users(u.max(1), true).await?;
    let devices = env.devices(&users[..1], 1).await?;
    env.share(&devices[0], &users[1..]).await?;
    env.settle().await;
    let owner = users[0].uid.clone();
    let logins = (0..k + extra).map(|s| env.app_login(&users[s % users.len()], Some(&owner))).collect();
    let device = (env.peer != Peer::Echo).then(|| env.device_login(&devices[0]));
    Ok(Setup { owner, logins, device })
}

/// `fanout`.
pub async fn fanout(env: &Env, args: &RunArgs) -> Result<Report> {
    let k = args.n.unwrap_or(100).max(1);
    let u = args.users.unwrap_or(k.min(10)).clamp(1, k);
    let rate = args.rate.unwrap_or(200.0);
    let dur = Duration::from_secs_f64(args.duration.unwrap_or(10.0));
    let pad = "x".repeat(args.pad.unwrap_or(0));
    let mut report = Report::new("fanout", env.peer.name());
    report.param("sessions", k);
    report.param("users", u);
    report.param("rate", rate);
    report.param("duration_s", dur.as_secs_f64());
    report.param("pad", pad.len());
    let s = setup(env, k, u, 0).await?;
    report.param("owner", &s.owner);
    let pb = bar(env.progress, k as u64, "sessions");
    let mut o = open_many(&env.target, s.logins, 0, k, 0.0, args.concurrency, &pb).await;
    pb.finish_and_clear();
    report_opened(&mut report, "sessions", "sessions", &o);
    let mut dev = match &s.device {
        Some(login) => Some(
            Conn::open(&env.device_target, login, Dial::default(), Duration::from_secs(10))
                .await
                .map_err(|e| anyhow::anyhow!("device: {e}"))?,
        ),
        None => None,
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // let the online sysmsg pass
    let l = Arc::new(Listening::default());
    let stop = CancellationToken::new();
    let echo = (env.peer == Peer::Echo).then_some((rate, dur));
    let sessions = o.ok() as u64;
    let tasks: Vec<_> = o
        .conns
        .iter_mut()
        .filter_map(Option::take)
        .map(|c| spawn_listener(c, l.clone(), stop.clone(), echo, pad.clone(), args.hb()))
        .collect();
    let pb = timed_bar(env.progress, dur, "reports");
    let phase = env.phase(&[]);
    let reports = match dev.as_mut() {
        Some(d) => publish(d, rate, dur, &pad).await?,
        None => {
            tokio::time::sleep(dur).await;
            0
        }
    };
    let want = if env.peer == Peer::Echo { l.self_sent.load(Ordering::Relaxed) } else { reports * sessions };
    drain(&l, want, Duration::from_secs(3), dev.as_mut()).await;
    let p = phase.end();
    pb.finish_and_clear();
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let delivered = l.delivered.load(Ordering::Relaxed);
    let h = l.recs[0].take();
    report.num("reports", "reports sent", if env.peer == Peer::Echo { want as f64 / sessions.max(1) as f64 } else { reports as f64 }, "");
    report.num("deliveries", "deliveries received", delivered as f64, "");
    report.num("missing", "deliveries missing", want.saturating_sub(delivered) as f64, "");
    report.num("delivery_rate", "deliveries per second", delivered as f64 / dur.as_secs_f64(), "/s");
    report.latency("delivery", "delivery latency", &h);
    report.num("cpu_us_per_delivery", "server CPU per delivery", p.cpu_per(delivered).unwrap_or(f64::NAN), "µs");
    report.phase("run", "run", &p);
    if env.peer == Peer::Echo {
        report.note(
            "the echo server cannot fan out: each session sends its own frames at the rate and hears them back (1 in + 1 out per delivery)",
        );
    }
    let closed = l.closed.load(Ordering::Relaxed);
    if closed > 0 {
        report.note(format!("{closed} sessions were closed by the server during the run"));
    }
    if delivered < want && closed == 0 {
        report.fail(format!("{} of {want} deliveries never arrived and no session was closed", want - delivered));
    }
    Ok(report)
}

/// `slow-consumer`.
pub async fn slow_consumer(env: &Env, args: &RunArgs) -> Result<Report> {
    if env.peer == Peer::Echo {
        bail!("slow-consumer needs a server that fans out");
    }
    let k = args.n.unwrap_or(20).max(1);
    let rate = args.rate.unwrap_or(500.0);
    let dur = Duration::from_secs_f64(args.duration.unwrap_or(12.0));
    let pad = "x".repeat(args.pad.unwrap_or(1024));
    let u = args.users.unwrap_or(1).clamp(1, k);
    let mut report = Report::new("slow-consumer", env.peer.name());
    report.param("sessions", k);
    report.param("rate", rate);
    report.param("duration_s", dur.as_secs_f64());
    report.param("pad", pad.len());
    let mut s = setup(env, k, u, 1).await?;
    let slow_login = s.logins.pop().expect("one extra login");
    let pb = bar(env.progress, k as u64, "sessions");
    let mut o = open_many(&env.target, s.logins, 0, k, 0.0, args.concurrency, &pb).await;
    pb.finish_and_clear();
    report_opened(&mut report, "sessions", "sessions", &o);
    let slow = Conn::open(&env.target, &slow_login, Dial { src: None, rcvbuf: Some(4096) }, Duration::from_secs(10))
        .await
        .map_err(|e| anyhow::anyhow!("slow session: {e}"))?;
    let login = s.device.as_ref().expect("not echo");
    let mut dev = Conn::open(&env.device_target, login, Dial::default(), Duration::from_secs(10))
        .await
        .map_err(|e| anyhow::anyhow!("device: {e}"))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let l = Arc::new(Listening::default());
    let stop = CancellationToken::new();
    let sessions = o.ok() as u64;
    let tasks: Vec<_> = o
        .conns
        .iter_mut()
        .filter_map(Option::take)
        .map(|c| spawn_listener(c, l.clone(), stop.clone(), None, pad.clone(), args.hb()))
        .collect();
    // The slow session reads during the first third, then stops reading until the end.
    let stall = CancellationToken::new();
    let resume = CancellationToken::new();
    let slow_task = {
        let (stall, resume) = (stall.clone(), resume.clone());
        tokio::spawn(async move {
            let mut slow = slow;
            let mut before = 0u64;
            loop {
                tokio::select! {
                    _ = stall.cancelled() => break,
                    r = slow.recv() => match r { Ok(_) => before += 1, Err(e) => return (before, 0, format!("ended before stalling: {e}")) },
                }
            }
            resume.cancelled().await;
            let mut after = 0u64;
            let end = loop {
                match tokio::time::timeout(Duration::from_millis(1500), slow.ws.next()).await {
                    Ok(Some(Ok(Message::Close(c)))) => {
                        break format!("closed by the server: {}", c.map(|c| format!("{} {}", c.code, c.reason)).unwrap_or_default());
                    }
                    Ok(Some(Ok(_))) => after += 1,
                    Ok(Some(Err(e))) => break format!("connection error: {e}"),
                    Ok(None) => break "connection ended".to_owned(),
                    Err(_) => break "still open, nothing more to read".to_owned(),
                }
            };
            (before, after, end)
        })
    };
    let sampler = RssSampler::start(env.pid(), Duration::from_millis(200));
    let slow0 = env.metrics().await.and_then(|m| m.get("switchyard_slow_consumers_total").copied());
    let pb = timed_bar(env.progress, dur, "reports");
    let first = dur / 3;
    let phase = env.phase(&[]);
    let mut reports = publish(&mut dev, rate, first, &pad).await?;
    stall.cancel();
    l.phase.store(1, Ordering::Relaxed);
    let t_stall = Instant::now();
    let watch = {
        let env_metrics = env.hub().map(|h| h.metrics_addr);
        tokio::spawn(async move {
            let (Some(addr), Some(s0)) = (env_metrics, slow0) else { return None };
            loop {
                if let Ok((200, body)) = crate::hub::http_get(addr, "/metrics").await
                    && crate::hub::parse_metrics(&body).get("switchyard_slow_consumers_total").copied().unwrap_or(0.0) > s0
                {
                    return Some(t_stall.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    reports += publish(&mut dev, rate, dur - first, &pad).await?;
    drain(&l, reports * sessions, Duration::from_secs(3), Some(&mut dev)).await;
    let p = phase.end();
    pb.finish_and_clear();
    let samples = sampler.finish().await;
    let closed_after = if watch.is_finished() {
        watch.await.ok().flatten()
    } else {
        watch.abort();
        None
    };
    resume.cancel();
    let (before, after, end) = slow_task.await.unwrap_or((0, 0, "slow task failed".into()));
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let delivered = l.delivered.load(Ordering::Relaxed);
    let want = reports * sessions;
    let (h0, h1) = (l.recs[0].take(), l.recs[1].take());
    report.num("reports", "reports sent", reports as f64, "");
    report.num("missing", "deliveries missing at the other sessions", want.saturating_sub(delivered) as f64, "");
    report.latency("before", "others' latency before the stall", &h0);
    report.latency("during", "others' latency during the stall", &h1);
    let base = samples.first().map_or(0, |s| s.1);
    let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    report.num("rss.before", "server RSS at start", base as f64 / 1048576.0, "MiB");
    report.num("rss.max", "server RSS max", max as f64 / 1048576.0, "MiB");
    report.num("rss.growth", "server RSS max growth", max.saturating_sub(base) as f64 / 1048576.0, "MiB");
    report.num("rss.end", "server RSS at the end", samples.last().map_or(0, |s| s.1) as f64 / 1048576.0, "MiB");
    report.num("slow.read_before", "frames the slow session read before stalling", before as f64, "");
    report.num("slow.read_after", "frames it read after resuming", after as f64, "");
    report.text("slow.end", "how the slow session ended", end);
    report.num(
        "slow.closed_after_s",
        "slow consumer closed after the stall began",
        closed_after.map_or(f64::NAN, |d| d.as_secs_f64()),
        "s",
    );
    report.num("cpu_us_per_delivery", "server CPU per delivery", p.cpu_per(delivered).unwrap_or(f64::NAN), "µs");
    report.phase("run", "run", &p);
    let closed = l.closed.load(Ordering::Relaxed);
    if closed > 0 {
        report.fail(format!("{closed} of the reading sessions were closed"));
    } else if delivered < want {
        report.fail(format!("{} of {want} deliveries to reading sessions never arrived", want - delivered));
    }
    if closed_after.is_none() {
        report.note("the hub did not close the slow session during the run (its socket buffers may not have filled: raise --rate, --pad or --duration)");
    }
    Ok(report)
}
