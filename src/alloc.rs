//! The heap allocator. With the `jemalloc` feature (on by default) every binary that links the
//! hub uses jemalloc: a hub that holds tens of thousands of connections for weeks, each with
//! buffers that come and go, keeps its resident memory close to what it has allocated, where
//! glibc's per-thread arenas keep freed memory resident. Without the feature the system allocator
//! is used and `/metrics` has no heap figures.

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What the allocator holds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heap {
    /// Allocated by the hub and not freed yet.
    pub allocated: u64,
    /// Resident pages the allocator holds: the allocated bytes plus what it keeps for reuse or
    /// has not returned to the system yet (their difference is fragmentation and cache).
    pub resident: u64,
}

/// The allocator's figures now; `None` without jemalloc.
pub fn heap() -> Option<Heap> {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        // The statistics are a snapshot taken at the last epoch.
        epoch::advance().ok()?;
        Some(Heap { allocated: stats::allocated::read().ok()? as u64, resident: stats::resident::read().ok()? as u64 })
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        None
    }
}
