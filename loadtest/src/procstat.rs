//! What the kernel says about a process and the machine: CPU time (utime + stime from
//! `/proc/PID/stat`), resident memory (VmRSS from `/proc/PID/status`) and the whole machine's busy
//! time (`/proc/stat`). A [`Phase`] takes these before and after a piece of work so a scenario can
//! report server CPU per message, memory per connection, and whether other processes were using
//! the CPU meanwhile (loopback latency on a busy 2-core machine is not the same number).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Clock ticks per second for `/proc` CPU times (`getconf CLK_TCK`, 100 if that fails).
pub fn clk_tck() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(100)
    })
}

/// CPU time of a process in microseconds (user + system), or `None` if it is gone.
pub fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 1_000_000 / clk_tck())
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// (busy, total) CPU time of the whole machine in microseconds, summed over all cores.
pub fn machine_us() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return (0, 0) };
    let Some(line) = stat.lines().next() else { return (0, 0) };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    let total = busy + get(3) + get(4);
    let tck = clk_tck();
    (busy * 1_000_000 / tck, total * 1_000_000 / tck)
}

/// The kernel's machine-wide (ListenOverflows, ListenDrops) counters from /proc/net/netstat:
/// SYNs or completed handshakes dropped because an accept queue was full.
pub fn listen_drops() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let (Some(names), Some(values)) = (lines.first(), lines.get(1)) else { return (0, 0) };
    let get = |key: &str| {
        names
            .split_whitespace()
            .position(|n| n == key)
            .and_then(|i| values.split_whitespace().nth(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("ListenOverflows"), get("ListenDrops"))
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

/// A snapshot taken at the start of a phase.
pub struct Phase {
    servers: Vec<u32>,
    nats: Option<u32>,
    nats_cpu: u64,
    others: Vec<u32>,
    t0: Instant,
    server_cpu: u64,
    server_rss: u64,
    gen_cpu: u64,
    machine_busy: u64,
}

/// What happened during a phase.
#[derive(Clone, Debug, Default)]
pub struct PhaseStats {
    pub secs: f64,
    pub server_cpu_us: u64,
    pub server_rss_before: u64,
    pub server_rss_after: u64,
    /// This process plus any worker processes named at the start.
    pub gen_cpu_us: u64,
    /// The NATS server of a cluster run, when its process was found.
    pub nats_cpu_us: Option<u64>,
    /// Everything else on the machine, in core-seconds per second.
    pub other_cores: f64,
}

impl PhaseStats {
    /// Server CPU in microseconds per unit of work (`None` for no work).
    pub fn cpu_per(&self, n: u64) -> Option<f64> {
        (n > 0).then(|| self.server_cpu_us as f64 / n as f64)
    }

    /// Server CPU as a fraction of one core.
    pub fn server_cores(&self) -> f64 {
        if self.secs > 0.0 { self.server_cpu_us as f64 / 1e6 / self.secs } else { 0.0 }
    }

    pub fn gen_cores(&self) -> f64 {
        if self.secs > 0.0 { self.gen_cpu_us as f64 / 1e6 / self.secs } else { 0.0 }
    }

    /// NATS server CPU as a fraction of one core (`None` when not measured).
    pub fn nats_cores(&self) -> Option<f64> {
        self.nats_cpu_us.map(|c| if self.secs > 0.0 { c as f64 / 1e6 / self.secs } else { 0.0 })
    }
}

/// A /proc figure summed over processes (a process gone counts 0).
fn sum(pids: &[u32], f: fn(u32) -> Option<u64>) -> u64 {
    pids.iter().filter_map(|&p| f(p)).sum()
}

fn gen_cpu(others: &[u32]) -> u64 {
    cpu_us(std::process::id()).unwrap_or(0) + others.iter().filter_map(|&p| cpu_us(p)).sum::<u64>()
}

impl Phase {
    /// Starts measuring the server processes `servers` as one server (the nodes of a cluster: CPU
    /// and RSS summed) and, apart, the NATS server `nats`; `others` are generator worker processes
    /// to count as generator.
    pub fn start_many(servers: &[u32], nats: Option<u32>, others: &[u32]) -> Phase {
        Phase {
            servers: servers.to_vec(),
            nats,
            nats_cpu: nats.and_then(cpu_us).unwrap_or(0),
            others: others.to_vec(),
            t0: Instant::now(),
            server_cpu: sum(servers, cpu_us),
            server_rss: sum(servers, rss_bytes),
            gen_cpu: gen_cpu(others),
            machine_busy: machine_us().0,
        }
    }

    pub fn end(&self) -> PhaseStats {
        let secs = self.t0.elapsed().as_secs_f64();
        let server_cpu_us = sum(&self.servers, cpu_us).saturating_sub(self.server_cpu);
        let gen_cpu_us = gen_cpu(&self.others).saturating_sub(self.gen_cpu);
        let nats_cpu_us = self.nats.and_then(cpu_us).map(|c| c.saturating_sub(self.nats_cpu));
        let busy = machine_us().0.saturating_sub(self.machine_busy);
        let other = busy.saturating_sub(server_cpu_us + gen_cpu_us + nats_cpu_us.unwrap_or(0));
        PhaseStats {
            secs,
            server_cpu_us,
            server_rss_before: self.server_rss,
            server_rss_after: sum(&self.servers, rss_bytes),
            gen_cpu_us,
            nats_cpu_us,
            other_cores: if secs > 0.0 { other as f64 / 1e6 / secs } else { 0.0 },
        }
    }
}

/// Samples a process's RSS every `every` until told to stop; returns (seconds since start, bytes).
pub struct RssSampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<(f64, u64)>>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let (stop, mut rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            let mut out = Vec::new();
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Some(r) = rss_bytes(pid) {
                            out.push((t0.elapsed().as_secs_f64(), r));
                        }
                    }
                    _ = rx.changed() => break,
                }
            }
            out
        });
        RssSampler { stop, task }
    }

    pub async fn finish(self) -> Vec<(f64, u64)> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

/// Least-squares slope of (x, y) points, in y units per x unit.
pub fn slope(points: &[(f64, u64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1 as f64).sum::<f64>() / n;
    let num: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 as f64 - my)).sum();
    let den: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if den == 0.0 { 0.0 } else { num / den }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(cpu_us(me).is_some());
        let (busy, total) = machine_us();
        assert!(total >= busy && total > 0);
    }

    #[test]
    fn slope_of_a_line() {
        let pts = [(0.0, 10), (1.0, 20), (2.0, 30)];
        assert!((slope(&pts) - 10.0).abs() < 1e-9);
    }
}
