//! How the daemon's allocator hands memory back to the OS. mimalloc is the
//! global allocator of the daemon (`src/main.rs`) and of the compare bench;
//! both call [`release_freed_memory_promptly`] first thing in `main`, and
//! the tree calls [`start_up_done`] once it is up.
//!
//! With mimalloc's defaults an idle daemon with 100,000 jobs held 120-130
//! MB where about 74 MB were needed (BENCHMARKS.md): loading the jobs makes
//! and frees about as much memory as it keeps, and mimalloc purges freed
//! pages (a second after they were freed) only from a thread that
//! allocates, which an idle daemon's threads do not; and on a kernel whose
//! transparent huge pages are `always`, its eagerly committed arenas fault
//! in 2 MiB at a time.
//!
//! So start-up, which loads the jobs, purges at once (a delay of 0: the
//! idle daemon then holds 61-64 MB, BENCHMARKS.md). Purging at once while running
//! puts an `madvise` on the run path, though: pages a tick's runs freed
//! were handed back and faulted in again by the next tick, and an
//! `madvise` waits for the other CPUs to flush their TLBs, which on a VM
//! stalled a tick's starts for up to 5 ms. Once started, the delay is
//! mimalloc's second again, and a thread of its own purges what has
//! waited past it, idle or not.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// mimalloc v3's `mi_option_purge_delay` (its place in the `mi_option_e`
/// enum of `mimalloc.h`; `libmimalloc-sys` names no constant for it). The
/// option is only changed while it reads as this module left it, so
/// another version, or a `MIMALLOC_PURGE_DELAY` set by the operator, is
/// left alone.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// mimalloc's default, kept while running: a page reused within a second
/// (by a per-second tick) is never handed back.
const PURGE_DELAY_DEFAULT_MS: std::ffi::c_long = 1_000;
/// How often the purging thread runs: freed pages go back to the OS at
/// most this long after their delay.
const PURGE_EVERY: Duration = Duration::from_millis(250);

/// Set when start-up purges at once (this process asked, and the delay
/// was mimalloc's default).
static PURGING_AT_ONCE: AtomicBool = AtomicBool::new(false);
/// The process asked for prompt purging: the purging thread may start.
static ASKED: AtomicBool = AtomicBool::new(false);

/// Until [`start_up_done`], freed pages go back to the OS at once; and
/// this process gets no transparent huge pages.
pub fn release_freed_memory_promptly() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes no pointers; it sets a
    // flag on this process's memory map.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    ASKED.store(true, Ordering::SeqCst);
    // SAFETY: reading and setting a mimalloc option by its enum value; an
    // option mimalloc does not know is ignored by it.
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY) == PURGE_DELAY_DEFAULT_MS {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
            PURGING_AT_ONCE.store(true, Ordering::SeqCst);
        }
    }
}

/// The jobs are loaded: freed pages now wait mimalloc's delay, and the
/// purging thread starts (once). Nothing unless the process called
/// [`release_freed_memory_promptly`].
pub fn start_up_done() {
    if !ASKED.load(Ordering::SeqCst) {
        return;
    }
    if PURGING_AT_ONCE.swap(false, Ordering::SeqCst) {
        // SAFETY: as above.
        unsafe {
            if libmimalloc_sys::mi_option_get(PURGE_DELAY) == 0 {
                libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_DEFAULT_MS);
            }
        }
    }
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("herald-purge".to_string())
            .spawn(|| {
                // mi_collect works through the calling thread's heap,
                // which exists once the thread has allocated.
                drop(std::hint::black_box(vec![0u8; 64]));
                loop {
                    std::thread::sleep(PURGE_EVERY);
                    // SAFETY: takes no pointers; purges what is due.
                    unsafe { libmimalloc_sys::mi_collect(false) };
                }
            });
        if let Err(e) = spawned {
            // Memory still goes back, from the threads that allocate.
            tracing::warn!(error = %e, "could not start the memory purging thread");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge_delay() -> std::ffi::c_long {
        // SAFETY: as above.
        unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }
    }

    fn purging_threads() -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|t| t.ok())
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .filter(|name| name.trim() == "herald-purge")
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn start_up_purges_at_once_then_a_thread_purges_after_the_delay() {
        let operator_set = std::env::var_os("MIMALLOC_PURGE_DELAY").is_some();
        release_freed_memory_promptly();
        // SAFETY: as above.
        let thp_disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(thp_disabled, 1, "PR_GET_THP_DISABLE");
        if !operator_set {
            assert_eq!(purge_delay(), 0, "mimalloc's purge delay during start-up");
        }
        start_up_done();
        start_up_done();
        if !operator_set {
            assert_eq!(
                purge_delay(),
                PURGE_DELAY_DEFAULT_MS,
                "purge delay once started"
            );
        }
        // A thread names itself once it runs.
        for _ in 0..100 {
            if purging_threads() > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            purging_threads(),
            1,
            "one purging thread, however often asked"
        );
    }
}
