//! The heap allocator. By default the system allocator. With the `jemalloc` feature every binary
//! that links the hub uses jemalloc, and `/metrics` shows what the heap holds
//! (`switchyard_heap_allocated_bytes`) beside what the allocator keeps resident for it: whether a
//! growing RSS is memory the hub keeps or the allocator's. Its profiler can be built in too
//! (`--features jemalloc,tikv-jemallocator/profiling`, then `_RJEM_MALLOC_CONF=prof:true,…`).
//! Measured on the 30-minute soak, jemalloc did not change the resident memory much (README,
//! "Soak"), so it is not the default.

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
