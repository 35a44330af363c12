//! Rayon after `fork()`. A forked child has none of the parent's pool threads: work handed to
//! the global pool there would wait forever. In a child, [`install`] runs parallel work in a
//! pool made by that process (once per process), so fitting, encoding or indexing in a
//! `multiprocessing` worker started with `fork` completes as it does in the parent.

use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use rayon::ThreadPool;

/// Set in the child by the `pthread_atfork` handler.
static FORKED: AtomicBool = AtomicBool::new(false);

/// A pool and the process that made it.
struct ChildPool {
    pid: u32,
    pool: ThreadPool,
}

/// The pool of the process that made it, published once and never freed (a process makes at
/// most one; a grandchild makes its own). An atomic pointer, not a lock: a lock held by a
/// thread of the parent at `fork()` would stay held in the child forever.
static CHILD_POOL: AtomicPtr<ChildPool> = AtomicPtr::new(std::ptr::null_mut());

/// Call in the child after `fork()` (only stores to an atomic: async-signal-safe).
pub(crate) fn after_fork_in_child() {
    FORKED.store(true, Ordering::Relaxed);
}

/// Runs `f`, which may use rayon, on the global pool; in a forked child, on a pool of this
/// process instead.
pub(crate) fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if !FORKED.load(Ordering::Relaxed) {
        return f();
    }
    match child_pool() {
        Some(pool) => pool.install(f),
        // No thread could be started (the process is out of resources): the global pool is
        // all there is, and work handed to it waits for threads that may never come.
        None => f(),
    }
}

fn child_pool() -> Option<&'static ThreadPool> {
    let pid = std::process::id();
    let current = CHILD_POOL.load(Ordering::Acquire);
    // SAFETY: a published pointer comes from `Box::into_raw` below and is never freed.
    if let Some(p) = unsafe { current.as_ref() }
        && p.pid == pid
    {
        return Some(&p.pool);
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .ok()?;
    let mine = Box::into_raw(Box::new(ChildPool { pid, pool }));
    match CHILD_POOL.compare_exchange(current, mine, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: just published, never freed.
        Ok(_) => Some(unsafe { &(*mine).pool }),
        Err(winner) => {
            // Another thread of this process published first: use its pool.
            // SAFETY: `mine` came from `Box::into_raw` above and was never shared.
            drop(unsafe { Box::from_raw(mine) });
            // SAFETY: `winner` is a published pointer, never freed.
            unsafe { winner.as_ref() }
                .filter(|p| p.pid == pid)
                .map(|p| &p.pool)
        }
    }
}
