//! Failed password and code checks per account, with back-off: the bound on guessing that does
//! not depend on where the guesses come from.
//!
//! Every check of a secret (a login password, an SMS code, the old password of change-password, a
//! device's factory key) first takes an attempt for its account. The attempt counts as a failure
//! until the check succeeds, which clears the account: so parallel guesses are counted before
//! they are evaluated, not after. Once `failures` attempts have been taken without a success,
//! the account is locked for `first` (30 s by default); each further failure after a lock ends
//! locks it again for twice as long, up to `max`. While locked, attempts are refused at once,
//! from any address, without evaluating the secret. An account with no attempt for `idle` starts
//! over. Other accounts are never affected.
//!
//! In a cluster every node counts every node's attempts: each attempt and success taken here is
//! told to the other nodes ([`Peers`]), which count it as their own ([`Lockout::mirror`]), so
//! spreading guesses over nodes gains nothing.
//!
//! Only accounts that exist get an entry (an unknown account has no secret to check), so the
//! table is bounded by the number of accounts and devices; idle entries are swept as it grows.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Entries one shard holds before idle ones are swept.
const SWEEP_AT: usize = 4096;

/// When accounts are locked, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failed checks in a row that lock an account; 0 turns the lockout off.
    pub failures: u32,
    /// The first lock.
    pub first: Duration,
    /// The longest lock.
    pub max: Duration,
    /// Quiet time after which an account's failures are forgotten.
    pub idle: Duration,
}

impl Policy {
    /// `failures` in a row; locks from 30 s doubling up to `max`; forgotten after 15 quiet minutes.
    pub fn new(failures: u32, max: Duration) -> Policy {
        Policy { failures, first: Duration::from_secs(30).min(max), max, idle: Duration::from_secs(15 * 60) }
    }

    fn lock_for(&self, strikes: u32) -> Duration {
        let doubled = self.first.saturating_mul(1u32.checked_shl(strikes.saturating_sub(1)).unwrap_or(u32::MAX));
        doubled.min(self.max)
    }
}

#[derive(Debug)]
struct Entry {
    /// Attempts taken since the last success.
    attempts: u32,
    /// Locks so far; each one lasts twice as long as the last.
    strikes: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// The other nodes of a cluster, told of every attempt and success taken here.
pub trait Peers: Send + Sync {
    fn tell(&self, account: &str, event: Event);
}

/// What happened to an account's secret check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Attempt,
    Success,
}

/// Per-account failure counters, sharded by key.
pub struct Lockout {
    policy: Policy,
    shards: Vec<Mutex<HashMap<String, Entry>>>,
    hasher: RandomState,
    peers: OnceLock<Arc<dyn Peers>>,
}

impl Lockout {
    pub fn new(policy: Policy) -> Lockout {
        Lockout {
            policy,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            peers: OnceLock::new(),
        }
    }

    /// Tells `peers` of every later attempt and success (set once, by a cluster).
    pub fn share_with(&self, peers: Arc<dyn Peers>) {
        let _ = self.peers.set(peers);
    }

    /// Takes an attempt at `account`'s secret; `Err(retry after)` while the account is locked.
    pub fn attempt(&self, account: &str) -> Result<(), Duration> {
        let taken = self.attempt_at(account, Instant::now());
        if let (Ok(()), Some(peers)) = (&taken, self.peers.get()) {
            peers.tell(account, Event::Attempt);
        }
        taken
    }

    /// The check succeeded: the account's failures are forgotten.
    pub fn succeeded(&self, account: &str) {
        if self.policy.failures > 0 {
            self.forget(account);
            if let Some(peers) = self.peers.get() {
                peers.tell(account, Event::Success);
            }
        }
    }

    /// Counts what another node of the cluster saw, as if it happened here.
    pub fn mirror(&self, account: &str, event: Event) {
        match event {
            Event::Attempt => {
                let _ = self.attempt_at(account, Instant::now());
            }
            Event::Success => self.forget(account),
        }
    }

    fn forget(&self, account: &str) {
        self.shard(account).lock().unwrap_or_else(|p| p.into_inner()).remove(account);
    }

    fn shard(&self, account: &str) -> &Mutex<HashMap<String, Entry>> {
        &self.shards[self.hasher.hash_one(account) as usize % SHARDS]
    }

    fn attempt_at(&self, account: &str, now: Instant) -> Result<(), Duration> {
        let policy = self.policy;
        if policy.failures == 0 {
            return Ok(());
        }
        let mut shard = self.shard(account).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= SWEEP_AT && !shard.contains_key(account) {
            shard.retain(|_, e| e.locked_until.is_some_and(|u| u > now) || now.duration_since(e.last) < policy.idle);
        }
        let e = shard.entry(account.to_owned()).or_insert(Entry { attempts: 0, strikes: 0, last: now, locked_until: None });
        if let Some(until) = e.locked_until.filter(|u| *u > now) {
            return Err(until - now);
        }
        if now.duration_since(e.last) >= policy.idle {
            *e = Entry { attempts: 0, strikes: 0, last: now, locked_until: None };
        }
        e.attempts += 1;
        e.last = now;
        if e.attempts >= policy.failures {
            // Locked from this attempt on; a success clears it.
            e.strikes += 1;
            let lock = policy.lock_for(e.strikes);
            e.locked_until = Some(now + lock);
            tracing::warn!(account, failures = e.attempts, lock_secs = lock.as_secs(), "too many failed checks, account locked");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lockout() -> Lockout {
        Lockout::new(Policy::new(10, Duration::from_secs(300)))
    }

    #[test]
    fn ten_failures_lock_and_the_lock_grows_to_the_cap() {
        let l = lockout();
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(l.attempt_at("a", t0), Ok(()), "attempt {i}");
        }
        assert_eq!(l.attempt_at("a", t0), Err(Duration::from_secs(30)));
        assert_eq!(l.attempt_at("b", t0), Ok(()), "other accounts are unaffected");
        // Each failure after a lock ends locks again, twice as long, capped at 300 s.
        let mut now = t0 + Duration::from_secs(30);
        for lock in [60, 120, 240, 300, 300] {
            assert_eq!(l.attempt_at("a", now), Ok(()));
            assert_eq!(l.attempt_at("a", now), Err(Duration::from_secs(lock)));
            now += Duration::from_secs(lock);
        }
    }

    #[test]
    fn a_success_clears_and_quiet_time_forgets() {
        let l = lockout();
        let t0 = Instant::now();
        for _ in 0..10 {
            l.attempt_at("a", t0).unwrap();
        }
        l.succeeded("a");
        assert_eq!(l.attempt_at("a", t0), Ok(()));
        for _ in 0..8 {
            l.attempt_at("a", t0).unwrap();
        }
        // Nine failures, then 15 quiet minutes: counting starts over.
        let later = t0 + Duration::from_secs(15 * 60);
        for _ in 0..9 {
            assert_eq!(l.attempt_at("a", later), Ok(()));
        }
    }

    #[test]
    fn attempts_mirrored_from_other_nodes_count_here() {
        let l = lockout();
        for _ in 0..10 {
            l.mirror("a", Event::Attempt);
        }
        assert!(l.attempt("a").is_err(), "ten attempts on other nodes lock the account here");
        l.mirror("a", Event::Success);
        assert_eq!(l.attempt("a"), Ok(()));
    }

    #[test]
    fn zero_turns_it_off() {
        let l = Lockout::new(Policy::new(0, Duration::from_secs(300)));
        for _ in 0..100 {
            assert_eq!(l.attempt("a"), Ok(()));
        }
    }
}
