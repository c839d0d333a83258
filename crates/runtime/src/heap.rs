//! glibc's heap settings while a graph loads and while graphs run (Linux with glibc; elsewhere
//! nothing changes).
//!
//! glibc serves allocations below its mmap threshold from its heaps and, by default, raises that
//! threshold (up to 32 MB) each time a larger block is freed. Loading a graph allocates and frees
//! many large temporaries (tract reads, declutters and packs gigabytes of UNet weights); with the
//! raised threshold they stay in the heap once freed and raise the process's peak well above the
//! weights. While loading, a fixed 1 MB threshold (and glibc's default 128 KB trim threshold)
//! returns them to the system.
//!
//! Running is the opposite case: each forward allocates and frees the same activations over and
//! over, and served by mmap, or trimmed from the heap's top, each would be mapped and zero-filled
//! again, which slows every forward. After loading, the mmap threshold is fixed at 32 MB (where
//! glibc's own adjustment ends) and the heap is not trimmed, so activations are reused and the
//! peak stays that of loading plus one forward's activations. BENCHMARKS.md has the measurements.

/// Holds the loading settings; dropping it sets the running ones.
pub(crate) struct Loading(());

impl Loading {
    pub(crate) fn begin() -> Self {
        set(1 << 20, 128 << 10);
        Loading(())
    }
}

impl Drop for Loading {
    fn drop(&mut self) {
        set(32 << 20, i32::MAX);
    }
}

#[allow(unused_variables)]
fn set(mmap_threshold: i32, trim_threshold: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters, under glibc's arena lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap_threshold);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim_threshold);
    }
}
