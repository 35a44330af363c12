//! The fork gate: work that takes locks another thread could want enters it ([`Inside`]), and
//! a `pthread_atfork` prepare handler ([`before_fork`]) waits until no thread is inside, so
//! a child is forked with every such lock free and never waits for a thread it does not have.
//!
//! The Python binding enters it around every call that leaves the GIL, and the engine around
//! the index trainings it runs on threads of its own. A forking Python thread holds the GIL,
//! so no new call starts meanwhile; the engine's threads wait at the gate until the fork is
//! done.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// Threads inside the gate now.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// Set while a fork waits for [`ACTIVE`] to drain.
static FORKING: AtomicBool = AtomicBool::new(false);
/// A fork waits at most this long for work in flight (a safety valve: work inside the gate
/// never waits for the GIL, so it always ends, but a hang of the parent would be worse than
/// the risk it guards against).
const FORK_WAIT: Duration = Duration::from_mins(1);

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

/// `pthread_atfork` prepare: waits until no thread is inside the gate (at most a minute).
pub fn before_fork() {
    FORKING.store(true, SeqCst);
    let start = Instant::now();
    while ACTIVE.load(SeqCst) > 0 && start.elapsed() < FORK_WAIT {
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// `pthread_atfork` parent: work may start again.
pub fn after_fork_in_parent() {
    FORKING.store(false, SeqCst);
}

/// `pthread_atfork` child: the forking thread, the child's only one, was outside the gate.
pub fn after_fork_in_child() {
    ACTIVE.store(0, SeqCst);
    FORKING.store(false, SeqCst);
}
