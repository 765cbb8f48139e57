//! How the process's allocator keeps memory between batches.
//!
//! A 10,000-record invocation allocates a few megabytes (the event body, the decoded data, the
//! `[N, F]` features, the prediction events) and frees them when it ends. By default glibc's
//! `malloc` serves blocks of that size with fresh `mmap`s and gives them back to the kernel on
//! `free`, so every invocation page-faults its buffers in again (docs/PERFORMANCE.md has the
//! figures, under "Allocator"). [`keep_freed_memory`] makes
//! `malloc` serve them from the heap and keep freed heap memory for the next invocation instead.
//! Peak memory does not grow: the next batch reuses what the last one freed.

/// Blocks up to this size come from the heap, not from their own `mmap`: glibc's largest allowed
/// value (32 MiB on 64-bit), above the 6 MB Lambda allows for an event.
const MMAP_THRESHOLD: i32 = 32 * 1024 * 1024;

/// Free memory at the top of the heap kept for reuse rather than returned to the kernel.
const TRIM_THRESHOLD: i32 = 64 * 1024 * 1024;

/// Keeps freed memory in the process for the next invocation (see the module documentation).
/// Call once at start, before the first large allocation. Returns whether the allocator took
/// the settings; where it is not glibc's `malloc`, nothing changes and it returns `false`.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes the allocator's thresholds; it is thread-safe and
        // valid at any time, and glibc rejects out-of-range values by returning 0.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_thresholds() {
        assert!(keep_freed_memory());
    }
}
