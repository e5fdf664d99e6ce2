//! The nodes of a cluster as this node sees them: heartbeats every [`BEAT`], who is alive and
//! how loaded, which node `/dispatch` hands out, and what happens when a node goes silent.
//!
//! A node silent for [`DEAD_AFTER`] is dead. Every survivor then clears the dead node's rows in
//! `cluster_devices`; each row is cleared once, so exactly one survivor sends each device's
//! offline sysmsg. A node that has been cut off from NATS for as long closes its own device
//! sessions, so two nodes never serve one device: the devices reconnect through dispatch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use rand::seq::IndexedRandom;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Inner;
use super::wire::Heartbeat;
use crate::mailbox::CloseReason;
use crate::sync::lock;

/// How often each node says it is alive.
pub const BEAT: Duration = Duration::from_secs(1);
/// Silence after which a node is dead (and a node cut off from NATS gives up its devices).
pub const DEAD_AFTER: Duration = Duration::from_secs(3);

/// Where clients reach this node, as `/dispatch` tells them.
#[derive(Clone, Debug)]
pub struct Advert {
    pub host: String,
    pub port: u16,
    pub ip: String,
}

/// The live nodes and their last heartbeats.
pub struct Nodes {
    me: String,
    advert: Advert,
    draining: AtomicBool,
    seen: Mutex<HashMap<String, (Instant, Heartbeat)>>,
}

impl Nodes {
    pub fn new(me: String, advert: Advert) -> Self {
        Nodes { me, advert, draining: AtomicBool::new(false), seen: Mutex::new(HashMap::new()) }
    }

    pub fn node(&self) -> &str {
        &self.me
    }

    /// The other nodes alive now, by name.
    pub fn alive(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.seen).keys().cloned().collect();
        names.sort();
        names
    }

    /// Where a new client should connect: the less loaded of two live, not draining, nodes picked
    /// at random (this one included, with `connections` open), as (ip, host, port).
    pub fn dispatch(&self, connections: i64) -> (String, String, u16) {
        let mut choices: Vec<(i64, Advert)> = lock(&self.seen)
            .values()
            .filter(|(_, hb)| !hb.draining)
            .map(|(_, hb)| (hb.connections, Advert { host: hb.host.clone(), port: hb.port, ip: hb.ip.clone() }))
            .collect();
        if !self.draining.load(Ordering::Relaxed) || choices.is_empty() {
            choices.push((connections, self.advert.clone()));
        }
        let picked: Vec<&(i64, Advert)> = choices.choose_multiple(&mut rand::rng(), 2).collect();
        let best = picked.into_iter().min_by_key(|(c, _)| *c).map(|(_, a)| a.clone()).unwrap_or_else(|| self.advert.clone());
        (best.ip, best.host, best.port)
    }

    fn heartbeat(&self, connections: i64) -> Heartbeat {
        Heartbeat {
            node: self.me.clone(),
            connections,
            host: self.advert.host.clone(),
            port: self.advert.port,
            ip: self.advert.ip.clone(),
            draining: self.draining.load(Ordering::Relaxed),
        }
    }

    /// Removes and returns the nodes silent for [`DEAD_AFTER`].
    fn take_dead(&self, now: Instant) -> Vec<String> {
        let mut seen = lock(&self.seen);
        let dead: Vec<String> = seen.iter().filter(|(_, (at, _))| now.duration_since(*at) >= DEAD_AFTER).map(|(n, _)| n.clone()).collect();
        for n in &dead {
            seen.remove(n);
        }
        dead
    }
}

/// Heartbeats out and in, dead nodes reaped, and the node's own link to NATS watched.
pub(super) async fn run(nodes: Arc<Nodes>, inner: Arc<Inner>, mut heartbeats: async_nats::Subscriber, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cut_off_since: Option<Instant> = None;
    let subject = inner.subjects.heartbeat();
    let beat = |nodes: &Nodes| {
        let hb = nodes.heartbeat(inner.metrics.connections_open.load(Ordering::Relaxed));
        if let Ok(payload) = serde_json::to_vec(&hb) {
            inner.forwarder.publish(subject.clone(), payload);
        }
    };
    let mut draining = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled(), if !draining => {
                // Stop being handed out at once; the sessions close as the node drains.
                draining = true;
                nodes.draining.store(true, Ordering::Relaxed);
                beat(&nodes);
                tracing::info!("draining: other nodes stop handing this one out");
            }
            m = heartbeats.next() => {
                let Some(m) = m else { return };
                let Ok(hb) = serde_json::from_slice::<Heartbeat>(&m.payload) else { continue };
                if hb.node != nodes.me {
                    let new = lock(&nodes.seen).insert(hb.node.clone(), (Instant::now(), hb.clone())).is_none();
                    if new {
                        tracing::info!(node = %hb.node, "node joined");
                    }
                }
            }
            _ = tick.tick() => {
                beat(&nodes);
                let now = Instant::now();
                for dead in nodes.take_dead(now) {
                    inner.forget_node(&dead);
                    match inner.store.reap_node(&inner.settings.name, &dead).await {
                        Ok(devices) => {
                            tracing::warn!(node = %dead, devices = devices.len(), "node is silent: its devices are offline");
                            inner.announce_offline(devices).await;
                        }
                        Err(e) => tracing::warn!(node = %dead, error = %e, "could not mark a dead node's devices offline"),
                    }
                }
                let connected = inner.client.connection_state() == async_nats::connection::State::Connected;
                match (connected, cut_off_since) {
                    (true, _) => cut_off_since = None,
                    (false, None) => cut_off_since = Some(now),
                    (false, Some(since)) if now.duration_since(since) >= DEAD_AFTER => {
                        let closed = inner.local.close_devices(CloseReason::Replaced);
                        if closed > 0 {
                            tracing::warn!(devices = closed, "cut off from NATS: closing this node's device sessions so they reconnect elsewhere");
                        }
                    }
                    (false, Some(_)) => {}
                }
            }
        }
    }
}
