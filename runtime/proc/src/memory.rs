//! Giving freed heap back to the kernel.
//!
//! Hazard: a PID 1 that lives as long as its bottle keeps, for its whole life, the heap
//! its start-up allocated and freed (argument and configuration parsing, the first
//! spawns): glibc's allocator holds freed memory for reuse. [`release_free_heap`] asks it
//! to return what is free now; nothing in use is touched.

/// Returns free heap memory to the kernel (glibc `malloc_trim(0)`). True when some was
/// released.
pub fn release_free_heap() -> bool {
    // SAFETY: malloc_trim only walks the allocator's own free lists under its lock; it
    // takes no pointers from us and is safe to call at any time outside a signal handler.
    unsafe { libc::malloc_trim(0) == 1 }
}
