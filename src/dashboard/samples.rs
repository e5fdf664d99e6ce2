//! The node's counters, sampled once a second into a ring of the last 15 minutes: what the
//! dashboard's tiles and charts show. Rates are the counters' differences between two samples.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::Dashboard;
use crate::clock::now_millis;
use crate::metrics::Metrics;
use crate::sync::lock;

/// Samples kept: 15 minutes at one a second.
pub const KEPT: usize = 15 * 60;
/// How often the counters are read.
pub const EVERY: Duration = Duration::from_secs(1);
/// Samples between two sweeps of the dashboard's label cache.
const PRUNE_EVERY: u64 = 60;

/// One reading of the counters; the `_ps` fields are per second since the previous reading.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Milliseconds since the epoch.
    pub t: i64,
    pub connections: i64,
    pub app_sessions: i64,
    pub device_sessions: i64,
    pub devices_online: usize,
    pub commands_ps: f64,
    pub reports_ps: f64,
    pub timeouts_ps: f64,
    pub slow_consumers_ps: f64,
    pub refused_frames_ps: f64,
    /// Totals since the node started.
    pub slow_consumers: u64,
    pub refused_frames: u64,
}

/// The ring of samples.
#[derive(Default)]
pub struct Samples {
    ring: Mutex<VecDeque<Sample>>,
}

impl Samples {
    fn push(&self, s: Sample) {
        let mut ring = lock(&self.ring);
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// Every sample kept, oldest first.
    pub fn all(&self) -> Vec<Sample> {
        lock(&self.ring).iter().copied().collect()
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<Sample> {
        lock(&self.ring).back().copied()
    }
}

/// Counter values a rate is computed from.
#[derive(Clone, Copy)]
struct Totals {
    at: tokio::time::Instant,
    commands: u64,
    reports: u64,
    timeouts: u64,
    slow: u64,
    refused: u64,
}

impl Totals {
    fn read(m: &Metrics) -> Totals {
        Totals {
            at: tokio::time::Instant::now(),
            commands: m.commands_routed.load(Ordering::Relaxed),
            reports: m.reports_received.load(Ordering::Relaxed),
            timeouts: m.timeouts_504.load(Ordering::Relaxed),
            slow: m.slow_consumers.load(Ordering::Relaxed),
            refused: m.frames_rejected.load(Ordering::Relaxed),
        }
    }
}

/// Samples until the node shuts down.
pub(super) async fn run(dashboard: Arc<Dashboard>) {
    let hub = dashboard.hub.clone();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Totals::read(&hub.metrics);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = hub.shutdown.cancelled() => return,
        }
        let m = &hub.metrics;
        let now = Totals::read(m);
        let secs = now.at.duration_since(last.at).as_secs_f64().max(0.001);
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs;
        dashboard.samples.push(Sample {
            t: now_millis(),
            connections: m.connections_open.load(Ordering::Relaxed),
            app_sessions: m.app_sessions.load(Ordering::Relaxed),
            device_sessions: m.device_sessions.load(Ordering::Relaxed),
            devices_online: hub.router.online_devices().len(),
            commands_ps: rate(now.commands, last.commands),
            reports_ps: rate(now.reports, last.reports),
            timeouts_ps: rate(now.timeouts, last.timeouts),
            slow_consumers_ps: rate(now.slow, last.slow),
            refused_frames_ps: rate(now.refused, last.refused),
            slow_consumers: now.slow,
            refused_frames: now.refused,
        });
        last = now;
        n += 1;
        if n.is_multiple_of(PRUNE_EVERY) {
            dashboard.prune_labels();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_fifteen_minutes() {
        let s = Samples::default();
        for t in 0..(KEPT as i64 + 10) {
            s.push(Sample { t, ..Default::default() });
        }
        let all = s.all();
        assert_eq!(all.len(), KEPT);
        assert_eq!((all[0].t, s.latest().unwrap().t), (10, KEPT as i64 + 9));
    }
}
