//! The one way the binding leaves the GIL to do work: [`run`] (and [`compute`] for work that
//! holds no lock another call could want).
//!
//! Both catch a panic of the work and raise `imesde.InternalError` naming the call instead of
//! a `PanicException` (which `except Exception` does not catch); the object stays usable,
//! since every lock is released as the panic unwinds.
//!
//! [`run`] also keeps `fork()` safe. Locks taken without the GIL (shards, BM25 indexes,
//! embedder caches, event queues) are only taken inside [`run`], and a `pthread_atfork`
//! prepare handler ([`before_fork`]) waits until no thread is inside it: a forking thread holds
//! the GIL, so no new work can start, and the work in flight never needs the GIL to finish.
//! The child is then forked with every such lock free, and never waits for a parent's thread.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::exceptions::{Exc, err};

/// Threads inside [`run`] now.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Set while a fork waits for [`ACTIVE`] to drain.
static FORKING: AtomicBool = AtomicBool::new(false);
/// A fork waits at most this long for work in flight (a safety valve: work inside [`run`]
/// never waits for the GIL, so it always ends, but a hang of the parent would be worse than
/// the risk it guards against).
const FORK_WAIT: Duration = Duration::from_mins(1);

thread_local! {
    /// Nesting depth of [`run`] on this thread (only the outermost counts in [`ACTIVE`]).
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Counts the thread in [`ACTIVE`] while alive (the outermost one on a thread).
struct Inside;

impl Inside {
    fn enter() -> Self {
        if DEPTH.get() == 0 {
            loop {
                // A fork in progress: wait for it (only threads that are not Python's can get
                // here then, since the forking thread holds the GIL).
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

/// Leaves the fork gate while alive, for a moment inside [`run`] when no lock is held and the
/// GIL must be taken (checking for Ctrl-C between model calls).
pub(crate) struct Paused(usize);

impl Paused {
    pub(crate) fn new() -> Self {
        let depth = DEPTH.replace(0);
        if depth > 0 {
            ACTIVE.fetch_sub(1, SeqCst);
        }
        Paused(depth)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if self.0 > 0 {
            std::mem::forget(Inside::enter());
            DEPTH.set(self.0);
        }
    }
}

/// `pthread_atfork` prepare: waits until no thread is inside [`run`].
pub(crate) fn before_fork() {
    FORKING.store(true, SeqCst);
    let start = Instant::now();
    while ACTIVE.load(SeqCst) > 0 && start.elapsed() < FORK_WAIT {
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// `pthread_atfork` parent: work may start again.
pub(crate) fn after_fork_in_parent() {
    FORKING.store(false, SeqCst);
}

/// `pthread_atfork` child: the child's only thread is the forking one, which was outside.
pub(crate) fn after_fork_in_child() {
    ACTIVE.store(0, SeqCst);
    FORKING.store(false, SeqCst);
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message")
}

fn internal(what: &str, payload: &(dyn Any + Send)) -> PyErr {
    err(
        Exc::Internal,
        format!(
            "internal error in {what}: {} (a bug in imesde, please report it; the object is \
             still usable)",
            panic_message(payload)
        ),
    )
}

/// Runs `f` without the GIL, inside the fork gate; a panic becomes `InternalError` naming
/// `what` (as in `"Engine.search"`).
pub(crate) fn run<T: Send>(
    py: Python<'_>,
    what: &str,
    f: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    py.detach(|| {
        let _inside = Inside::enter();
        catch_unwind(AssertUnwindSafe(f))
    })
    .map_err(|payload| internal(what, &*payload))
}

/// [`run`] for work that takes no lock shared with other calls (it reads its own arguments
/// and immutable objects), so a fork need not wait for it: model training, similarity
/// helpers.
pub(crate) fn compute<T: Send>(
    py: Python<'_>,
    what: &str,
    f: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    py.detach(|| catch_unwind(AssertUnwindSafe(f)))
        .map_err(|payload| internal(what, &*payload))
}
