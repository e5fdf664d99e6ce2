//! A connection's place under the node's connection cap. The accept loop takes one per accepted
//! connection; the HTTP connection and, after an upgrade, its WebSocket session hold clones, and
//! the place is given back when the last of them ends.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::OwnedSemaphorePermit;

use crate::metrics::Metrics;

/// One connection's place in the cap; released when the last holder drops it.
#[derive(Clone)]
pub struct ConnSlot(#[allow(dead_code)] Arc<SlotInner>);

struct SlotInner {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl ConnSlot {
    /// Counts the connection as open until the slot is released.
    pub fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        ConnSlot(Arc::new(SlotInner { _permit: permit, metrics }))
    }
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}
