//! The REST rate limit's counters: a fixed window per key (client network, method, route),
//! sharded so concurrent requests rarely meet on a lock. The middleware that applies them is
//! [`crate::http::ratelimit`].
//!
//! In a cluster every node counts every node's calls. Each call counted here is also kept as
//! "unsent"; the cluster takes those every [`crate::cluster`] limits interval (100 ms), publishes
//! them, and the other nodes add them to their own windows ([`RateLimiter::mirror`]). Windows are
//! aligned on the wall clock (`now / window`), so nodes with synchronised clocks share them. A
//! client spreading calls over nodes therefore gets the configured total, plus at most what the
//! other nodes let through in the last interval before they heard of it. On a single node
//! nothing is kept unsent.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::Method;

use crate::sync::lock;

const SHARDS: usize = 16;
/// Keys kept per shard before stale windows are swept.
const SWEEP_AT: usize = 8192;
/// Keys one shard may hold within a window; beyond it new keys pass uncounted (memory stays
/// bounded: at most 16 × 65,536 counters) and a warning is logged.
const SHARD_CAP: usize = 65_536;

/// What a call is counted by: the client's address (or IPv6 /64), the method and the route.
pub type Key = (IpAddr, Method, String);

/// Calls counted on one node for one key in one window, not yet told to the other nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsent {
    pub key: Key,
    pub window: u64,
    pub calls: u32,
}

#[derive(Default)]
struct Shard {
    /// Key → (window, calls in it), this node's and the other nodes' together.
    counts: HashMap<Key, (u64, u32)>,
    /// Key → (window, calls counted here since the last [`RateLimiter::take_unsent`]).
    unsent: HashMap<Key, (u64, u32)>,
}

/// Fixed-window counters, one per key.
pub struct RateLimiter {
    shards: Vec<Mutex<Shard>>,
    hasher: std::collections::hash_map::RandomState,
    /// Set by a cluster: calls are kept as unsent for the other nodes.
    shared: AtomicBool,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: Default::default(),
            shared: AtomicBool::new(false),
        }
    }
}

impl RateLimiter {
    /// Counts one call at `now_secs`; `Err(seconds until the window ends)` when over `limit`.
    pub fn hit(&self, key: Key, limit: u32, window_secs: u64, now_secs: u64) -> Result<(), u64> {
        let window = now_secs / window_secs;
        let mut shard = lock(&self.shards[self.hasher.hash_one(&key) as usize % SHARDS]);
        if shard.counts.len() >= SWEEP_AT {
            shard.counts.retain(|_, (w, _)| *w == window);
            if shard.counts.len() >= SHARD_CAP && !shard.counts.contains_key(&key) {
                tracing::warn!(keys = shard.counts.len(), "rate-limit table full for this window; a new client passes uncounted");
                return Ok(());
            }
        }
        let shard = &mut *shard;
        // Only a cluster needs the key twice (a single node does not pay for the copy).
        let (entry, for_peers) = if self.shared.load(Ordering::Relaxed) {
            (shard.counts.entry(key.clone()).or_insert((window, 0)), Some(key))
        } else {
            (shard.counts.entry(key).or_insert((window, 0)), None)
        };
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= limit {
            return Err((window + 1) * window_secs - now_secs);
        }
        entry.1 += 1;
        if let Some(key) = for_peers {
            let unsent = shard.unsent.entry(key).or_insert((window, 0));
            if unsent.0 != window {
                *unsent = (window, 0);
            }
            unsent.1 += 1;
        }
        Ok(())
    }

    /// From now on, keeps every call counted here for [`RateLimiter::take_unsent`] (a cluster).
    pub fn share(&self) {
        self.shared.store(true, Ordering::Relaxed);
    }

    /// The calls counted here since the last take, for the other nodes.
    pub fn take_unsent(&self) -> Vec<Unsent> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let unsent = std::mem::take(&mut lock(shard).unsent);
            out.extend(unsent.into_iter().map(|(key, (window, calls))| Unsent { key, window, calls }));
        }
        out
    }

    /// Adds calls another node counted to this node's window for the key. Calls of an older
    /// window than the one counted here are ignored.
    pub fn mirror(&self, hit: Unsent) {
        let mut shard = lock(&self.shards[self.hasher.hash_one(&hit.key) as usize % SHARDS]);
        if shard.counts.len() >= SHARD_CAP && !shard.counts.contains_key(&hit.key) {
            return;
        }
        let entry = shard.counts.entry(hit.key).or_insert((hit.window, 0));
        if entry.0 < hit.window {
            *entry = (hit.window, 0);
        }
        if entry.0 == hit.window {
            entry.1 = entry.1.saturating_add(hit.calls);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> Key {
        (ip.parse().unwrap(), Method::GET, "/v2/family".to_owned())
    }

    #[test]
    fn a_single_node_keeps_nothing_unsent() {
        let l = RateLimiter::default();
        l.hit(key("10.0.0.1"), 3, 300, 600).unwrap();
        assert!(l.take_unsent().is_empty());
    }

    #[test]
    fn shared_counts_go_out_once_and_mirrored_ones_count_here() {
        let (a, b) = (RateLimiter::default(), RateLimiter::default());
        a.share();
        b.share();
        for _ in 0..2 {
            a.hit(key("10.0.0.1"), 3, 300, 600).unwrap();
        }
        let sent = a.take_unsent();
        assert_eq!(sent, vec![Unsent { key: key("10.0.0.1"), window: 2, calls: 2 }]);
        assert!(a.take_unsent().is_empty(), "taken once");
        sent.into_iter().for_each(|h| b.mirror(h));
        // B saw none itself, but the two of A leave it one call of the three.
        assert_eq!(b.hit(key("10.0.0.1"), 3, 300, 601), Ok(()));
        assert_eq!(b.hit(key("10.0.0.1"), 3, 300, 601), Err(299));
        // Calls of a window that is over count for nothing.
        b.mirror(Unsent { key: key("10.0.0.2"), window: 2, calls: 5 });
        assert_eq!(b.hit(key("10.0.0.2"), 3, 300, 900), Ok(()));
        b.mirror(Unsent { key: key("10.0.0.2"), window: 2, calls: 5 });
        assert_eq!(b.hit(key("10.0.0.2"), 3, 300, 900), Ok(()));
    }
}
