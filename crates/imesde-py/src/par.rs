//! Rayon after `fork()`. A forked child has none of the parent's pool threads: work handed to
//! the global pool there would wait forever. In a child, [`install`] runs parallel work in a
//! pool made by that process (once per process), so fitting, encoding or indexing in a
//! `multiprocessing` worker started with `fork` completes as it does in the parent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use rayon::ThreadPool;

/// Set in the child by the `pthread_atfork` handler.
static FORKED: AtomicBool = AtomicBool::new(false);
/// The pool of the process that made it (its pid first): a grandchild makes its own.
static CHILD_POOL: Mutex<Option<(u32, Arc<ThreadPool>)>> = Mutex::new(None);

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

fn child_pool() -> Option<Arc<ThreadPool>> {
    let pid = std::process::id();
    let mut slot = CHILD_POOL.lock();
    if let Some((owner, pool)) = slot.as_ref()
        && *owner == pid
    {
        return Some(Arc::clone(pool));
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .ok()?,
    );
    *slot = Some((pid, Arc::clone(&pool)));
    Some(pool)
}
