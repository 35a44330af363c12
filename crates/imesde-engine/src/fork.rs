//! The fork gate: work that takes locks another thread could want enters it ([`Inside`]), and
//! a `pthread_atfork` prepare handler ([`before_fork`]) waits until no thread is inside, so
//! a child is forked with every such lock free and never waits for a thread it does not have.
//!
//! The Python binding enters it around every call that leaves the GIL, and the engine around
//! the index trainings it runs on threads of its own. A forking Python thread holds the GIL,
//! so no new call starts meanwhile; the engine's threads wait at the gate until the fork is
//! done.
//!
//! A forked child also has none of the parent's rayon threads: work handed to the global pool
//! there would wait forever. In a child, [`install`] runs parallel work in a pool made by that
//! process (once per process), so fitting, encoding or indexing in a `multiprocessing` worker
//! started with `fork` completes as it does in the parent.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering, Ordering::SeqCst};
use std::time::Duration;

/// Threads inside the gate now.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Set while a fork waits for [`ACTIVE`] to drain.
static FORKING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Nesting depth of the gate on this thread (only the outermost counts in [`ACTIVE`]).
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Counts the thread as inside the gate while alive (the outermost one on a thread).
#[derive(Debug)]
pub struct Inside;

impl Inside {
    /// Enters the gate, first waiting for a fork in progress.
    #[must_use]
    pub fn enter() -> Self {
        if DEPTH.get() == 0 {
            loop {
                while FORKING.load(SeqCst) {
                    std::thread::yield_now();
                }
                ACTIVE.fetch_add(1, SeqCst);
                if !FORKING.load(SeqCst) {
                    break;
                }
                ACTIVE.fetch_sub(1, SeqCst);
            }
        }
        DEPTH.set(DEPTH.get() + 1);
        Inside
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let depth = DEPTH.get() - 1;
        DEPTH.set(depth);
        if depth == 0 {
            ACTIVE.fetch_sub(1, SeqCst);
        }
    }
}

/// `pthread_atfork` prepare: waits until no other thread is inside the gate, however long
/// their work takes (it never waits for the forking thread, which holds the GIL, so it
/// ends). A wait cut short would fork a child that blocks forever on a lock held by a thread
/// it does not have. The forking thread itself is outside, unless it forks from inside (then
/// its own entry is not waited for).
pub fn before_fork() {
    FORKING.store(true, SeqCst);
    let own = usize::from(DEPTH.get() > 0);
    while ACTIVE.load(SeqCst) > own {
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// `pthread_atfork` parent: work may start again.
pub fn after_fork_in_parent() {
    FORKING.store(false, SeqCst);
}

/// `pthread_atfork` child: the forking thread, the child's only one, was outside the gate.
/// From now on searches and tokenization run on the calling thread, other parallel work on a
/// pool of the child's own ([`install`]), and embedders made before the fork refuse to run
/// (instead of waiting forever for pools that do not exist). Only stores to atomics:
/// async-signal-safe.
pub fn after_fork_in_child() {
    // The forking thread's own entry, when it forked from inside (see `before_fork`).
    ACTIVE.store(usize::from(DEPTH.get() > 0), SeqCst);
    FORKING.store(false, SeqCst);
    FORKED.store(true, Ordering::Relaxed);
    imesde_ring::set_parallel(false);
    imesde_embed::after_fork_in_child();
}

/// Set in the child by the `pthread_atfork` handler.
static FORKED: AtomicBool = AtomicBool::new(false);

/// A pool and the process that made it.
struct ChildPool {
    pid: u32,
    pool: rayon::ThreadPool,
}

/// The pool of the process that made it, published once and never freed (a process makes at
/// most one; a grandchild makes its own). An atomic pointer, not a lock: a lock held by a
/// thread of the parent at `fork()` would stay held in the child forever.
static CHILD_POOL: AtomicPtr<ChildPool> = AtomicPtr::new(std::ptr::null_mut());

/// Runs `f`, which may use rayon, on the global pool; in a forked child, on a pool of this
/// process instead.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
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

fn child_pool() -> Option<&'static rayon::ThreadPool> {
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
