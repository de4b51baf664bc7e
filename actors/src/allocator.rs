//! How the daemon's allocator hands memory back to the OS. mimalloc is the
//! global allocator of the daemon (`src/main.rs`) and of the compare bench;
//! both call [`release_freed_memory_promptly`] first thing in `main`.
//!
//! With mimalloc's defaults an idle daemon with 100,000 jobs held 120-130
//! MB where about 74 MB were needed (BENCHMARKS.md): loading the jobs makes
//! and frees about as much memory as it keeps, and mimalloc purges freed
//! pages only a second later *and* only when the thread that freed them
//! allocates again, which an idle daemon's threads do not; and on a kernel
//! whose transparent huge pages are `always`, its eagerly committed arenas
//! fault in 2 MiB at a time.

use std::ffi::c_long;

/// mimalloc v3's `mi_option_purge_delay` (its place in the `mi_option_e`
/// enum of `mimalloc.h`; `libmimalloc-sys` names no constant for it). The
/// option is only changed while it reads as v3's default, so another
/// version, or a `MIMALLOC_PURGE_DELAY` set by the operator, is left alone.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const PURGE_DELAY_DEFAULT_MS: c_long = 1_000;

/// Freed pages go back to the OS at once, and this process gets no
/// transparent huge pages. The run path's allocations barely notice
/// (drain throughput unchanged within noise, BENCHMARKS.md).
pub fn release_freed_memory_promptly() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes no pointers; it sets a
    // flag on this process's memory map.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    // SAFETY: reading and setting a mimalloc option by its enum value; an
    // option mimalloc does not know is ignored by it.
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY) == PURGE_DELAY_DEFAULT_MS {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purging_is_immediate_and_huge_pages_are_off() {
        release_freed_memory_promptly();
        // SAFETY: as above.
        let (delay, thp_disabled) = unsafe {
            (
                libmimalloc_sys::mi_option_get(PURGE_DELAY),
                libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0),
            )
        };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(delay, 0, "mimalloc's purge delay");
        }
        assert_eq!(thp_disabled, 1, "PR_GET_THP_DISABLE");
    }
}
