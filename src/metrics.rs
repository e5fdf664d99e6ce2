//! Counters of one node, served in the Prometheus text format at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_open: AtomicI64,
    pub connections_refused: AtomicU64,
    pub app_sessions: AtomicI64,
    pub device_sessions: AtomicI64,
    pub commands_routed: AtomicU64,
    pub acks_delivered: AtomicU64,
    pub acks_late: AtomicU64,
    pub timeouts_504: AtomicU64,
    pub reports_fanned_out: AtomicU64,
    pub reports_received: AtomicU64,
    pub deliveries: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub frames_rejected: AtomicU64,
    pub heartbeat_expired: AtomicU64,
    pub devices_replaced: AtomicU64,
    pub rate_limited: AtomicU64,
    pub history_recorded: AtomicU64,
    pub history_dropped: AtomicU64,
    pub cluster_requests: AtomicU64,
    pub cluster_dropped: AtomicU64,
    pub cluster_slow_consumers: AtomicU64,
    pub cluster_devices_reaped: AtomicU64,
    pub history_trimmed: AtomicU64,
    pub history_truncated: AtomicU64,
    pub commit_groups: AtomicU64,
    pub commit_failures: AtomicU64,
    /// How long the recorder's transactions took, from the start of the statement to its commit.
    pub commit_seconds: Histogram,
}

/// Upper bounds (seconds) of [`Histogram`]'s buckets.
const BUCKETS: [f64; 11] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// A Prometheus histogram of durations with fixed buckets ([`BUCKETS`]).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or under each bound (not cumulative; summed when rendered).
    buckets: [AtomicU64; BUCKETS.len()],
    /// Observations above the last bound. Each observation adds to one counter only, so one
    /// render's buckets and count agree (a count kept apart could be read one observation ahead
    /// of the buckets, and a reader taking differences saw -1 slow commits).
    over: AtomicU64,
    micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        match BUCKETS.iter().position(|b| secs <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut seen = 0;
        for (bound, n) in BUCKETS.iter().zip(&self.buckets) {
            seen += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {seen}");
        }
        let count = seen + self.over.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let gauges: [(&str, &AtomicI64, &str); 3] = [
            ("switchyard_connections_open", &self.connections_open, "open TCP connections"),
            ("switchyard_app_sessions", &self.app_sessions, "app WebSocket sessions online"),
            ("switchyard_device_sessions", &self.device_sessions, "device WebSocket sessions online"),
        ];
        let counters: [(&str, &AtomicU64, &str); 23] = [
            ("switchyard_connections_refused_total", &self.connections_refused, "connections refused at the connection cap"),
            ("switchyard_commands_routed_total", &self.commands_routed, "app commands forwarded to a device"),
            ("switchyard_acks_delivered_total", &self.acks_delivered, "device acks returned to the waiting app"),
            ("switchyard_acks_late_total", &self.acks_late, "device acks nobody waited for any more"),
            ("switchyard_timeouts_504_total", &self.timeouts_504, "commands answered 504"),
            ("switchyard_reports_fanned_out_total", &self.reports_fanned_out, "device reports and notices fanned out"),
            ("switchyard_reports_received_total", &self.reports_received, "device state reports accepted"),
            ("switchyard_deliveries_total", &self.deliveries, "frames queued to sessions by fan-out"),
            ("switchyard_slow_consumers_total", &self.slow_consumers, "sessions closed because their queue stayed full"),
            ("switchyard_frames_rejected_total", &self.frames_rejected, "inbound frames answered with an error"),
            ("switchyard_heartbeat_expired_total", &self.heartbeat_expired, "sessions closed for silence"),
            ("switchyard_devices_replaced_total", &self.devices_replaced, "device connections replaced by a newer one"),
            ("switchyard_rate_limited_total", &self.rate_limited, "REST calls refused by the rate limit"),
            ("switchyard_history_recorded_total", &self.history_recorded, "operation history entries written"),
            ("switchyard_history_dropped_total", &self.history_dropped, "operation history entries dropped (queue full or write failed)"),
            ("switchyard_cluster_requests_total", &self.cluster_requests, "commands sent to a device on another node"),
            (
                "switchyard_cluster_dropped_total",
                &self.cluster_dropped,
                "messages to other nodes dropped because the forwarder queue was full",
            ),
            (
                "switchyard_cluster_slow_consumers_total",
                &self.cluster_slow_consumers,
                "NATS subscriptions that fell behind and lost messages",
            ),
            ("switchyard_cluster_devices_reaped_total", &self.cluster_devices_reaped, "devices marked offline because their node died"),
            (
                "switchyard_history_trimmed_total",
                &self.history_trimmed,
                "history entries removed to keep a device or all history within its bound",
            ),
            (
                "switchyard_history_truncated_total",
                &self.history_truncated,
                "operations recorded with their params replaced by a size marker",
            ),
            (
                "switchyard_commit_groups_total",
                &self.commit_groups,
                "recorder transactions committed (states, history and notices of one group)",
            ),
            (
                "switchyard_commit_failures_total",
                &self.commit_failures,
                "recorder transactions that failed; their reports were answered with an error",
            ),
        ];
        let mut out = String::new();
        for (name, v, help) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}", v.load(Ordering::Relaxed));
        }
        for (name, v, help) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        }
        self.commit_seconds.render(
            &mut out,
            "switchyard_commit_seconds",
            "how long the recorder's transactions took (reports and acked updates are answered after theirs)",
        );
        if let Some(heap) = crate::alloc::heap() {
            let heap = [
                ("switchyard_heap_allocated_bytes", heap.allocated, "heap bytes allocated and not freed"),
                (
                    "switchyard_heap_resident_bytes",
                    heap.resident,
                    "resident bytes the heap allocator holds (allocated, cached and not yet returned)",
                ),
            ];
            for (name, v, help) in heap {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Histogram;

    #[test]
    fn a_histogram_renders_cumulative_buckets_and_a_count_that_agrees() {
        let h = Histogram::default();
        for ms in [0.3, 0.4, 20.0, 3000.0] {
            h.observe(Duration::from_secs_f64(ms / 1000.0));
        }
        let mut out = String::new();
        h.render(&mut out, "x", "test");
        let value = |series: &str| -> f64 {
            let line = out.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series} in\n{out}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert_eq!(value("x_bucket{le=\"0.0005\"}"), 2.0);
        assert_eq!(value("x_bucket{le=\"0.01\"}"), 2.0);
        assert_eq!(value("x_bucket{le=\"0.025\"}"), 3.0);
        assert_eq!(value("x_bucket{le=\"1\"}"), 3.0);
        assert_eq!(value("x_bucket{le=\"+Inf\"}"), 4.0);
        assert_eq!(value("x_count"), 4.0);
        assert!((value("x_sum") - 3.0207).abs() < 1e-3, "{out}");
    }
}
