//! Closing a node's sessions at shutdown. Without a drain rate (a single node without
//! `--drain-rate`) every session closes with 1001 the moment shutdown starts, as before. With one
//! (`--drain-rate`, or [`crate::config::CLUSTER_DRAIN_RATE`] in a cluster, whose nodes stop being
//! handed out by `/dispatch` as shutdown starts) the sessions open at that moment are closed with
//! 1001 a few at a time, `rate` per second, so their clients reconnect to the other nodes
//! gradually instead of all at once; when they are all closed, or `--drain-timeout-secs` has
//! passed, whatever is still open closes at once ([`Hub::sessions_end`]).
//!
//! The listeners stop accepting when shutdown starts either way; a handshake that was under way
//! then is refused, and one that completes during the drain closes at its end.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::hub::Hub;
use crate::mailbox::CloseReason;

/// How often the drain closes its next batch (and how finely it keeps to its rate).
const TICK: Duration = Duration::from_millis(100);
/// How often it logs its progress.
const REPORT: Duration = Duration::from_secs(1);

/// Waits for shutdown, then closes the sessions (see the module's documentation).
pub async fn run(hub: Arc<Hub>) {
    hub.shutdown.cancelled().await;
    let Some(rate) = hub.config.drain_rate() else {
        hub.sessions_end.cancel();
        return;
    };
    let sessions = hub.router.sessions();
    let total = sessions.len();
    let deadline = Instant::now() + hub.config.drain_timeout;
    tracing::info!(
        sessions = total,
        per_sec = rate,
        timeout_secs = hub.config.drain_timeout.as_secs(),
        "draining: closing sessions gradually"
    );
    let started = Instant::now();
    // The first batch one tick in: the other nodes hear first that this one is not handed out.
    let mut tick = tokio::time::interval_at(started + TICK, TICK);
    let mut reported = started;
    let mut closed = 0usize;
    while closed < total {
        tick.tick().await;
        let now = Instant::now();
        if now >= deadline {
            tracing::warn!(closed, left = total - closed, "drain timeout: closing the remaining sessions at once");
            break;
        }
        // As many as the rate allows since the start, so a late tick catches up.
        let due = (((now - started).as_secs_f64() * f64::from(rate)).ceil() as usize).min(total);
        if due > closed {
            sessions[closed..due].iter().for_each(|s| s.close(CloseReason::Draining));
            closed = due;
        }
        if now.duration_since(reported) >= REPORT {
            reported = now;
            tracing::info!(closed, left = total - closed, "draining");
        }
    }
    tracing::info!(closed, secs = format!("{:.1}", started.elapsed().as_secs_f64()), "drain done");
    hub.sessions_end.cancel();
}
