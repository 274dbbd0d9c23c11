//! Giving freed memory back to the system once a burst of work has settled.
//!
//! Starting servers, listing their catalogs and rebuilding the merged catalog allocate and free
//! a lot at once, spread over the allocator's per-thread arenas; glibc keeps most freed pages
//! mapped, so the daemon's resident memory stayed at its start-up peak: about a third of what
//! each upstream cost (docs/BENCHMARKS.md, "Memory per upstream"). [`release_free`] asks
//! glibc to return the free pages of every arena. It walks the heap (well under a millisecond
//! for a daemon's few MiB), so it is called where work has settled, off the runtime's workers:
//! after the catalog cache is written (`router/cache.rs`).

/// Returns freed heap pages to the system (glibc's `malloc_trim`); nothing elsewhere.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers and may be called at any time from any thread;
    // it only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}
