//! The one way the binding leaves the GIL to do work: [`run`] (and [`compute`] for work that
//! holds no lock another call could want), and for long work [`run_interruptible`] (and
//! [`compute_interruptible`]), which also stop it when Ctrl-C arrives.
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
//! The gate itself is `imesde_engine::fork`, which the engine's index trainings (run on
//! threads of its own) enter too.

use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::exceptions::py_err;

use imesde_engine::fork::{self, Inside};

/// `pthread_atfork` prepare: waits until no thread is inside [`run`] (or the engine's gate).
#[cfg(unix)]
pub(crate) fn before_fork() {
    fork::before_fork();
}

/// `pthread_atfork` parent: work may start again.
#[cfg(unix)]
pub(crate) fn after_fork_in_parent() {
    fork::after_fork_in_parent();
}

/// `pthread_atfork` child: the child's only thread is the forking one, which was outside (and
/// is the child's main thread).
#[cfg(unix)]
pub(crate) fn after_fork_in_child() {
    set_main_thread();
    // The parent's other threads are not in the child, nor are their passages; a child
    // forked by an exit handler is not exiting.
    PASSING.store(HELD.with(Cell::get), SeqCst);
    EXITING.store(false, SeqCst);
    HELD_BACK.with(|h| h.set(Duration::ZERO));
    // The kept thread is the parent's (`Kept::start` starts the child's own): its handle is
    // forgotten, not dropped, since dropping it touches a channel whose lock that thread may
    // have held at the fork; so is a lock on the handle held by a thread the child lacks.
    if KEPT.is_locked() {
        // SAFETY: the child's only thread, this one, does not hold it (it forked outside
        // `Kept::start`); its holder is not in the child.
        unsafe { KEPT.force_unlock() };
    }
    std::mem::forget(KEPT.lock().take());
    KEPT_BUSY.store(false, SeqCst);
    fork::after_fork_in_child();
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message")
}

fn internal(what: &str, payload: &(dyn Any + Send)) -> PyErr {
    py_err!(
        Internal,
        "internal error in {what}: {} (a bug in imesde, please report it; the object is \
             still usable)",
        panic_message(payload)
    )
}

/// Runs `f` without the GIL, inside the fork gate; a panic becomes `InternalError` naming
/// `what` (as in `"Engine.search"`).
pub(crate) fn run<T: Send>(
    py: Python<'_>,
    what: &str,
    f: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    let (result, _back) = py.detach(|| {
        let result = {
            let _inside = Inside::enter();
            catch_unwind(AssertUnwindSafe(f))
        };
        (result, Passage::detached())
    });
    result.map_err(|payload| internal(what, &*payload))
}

/// [`run`] for work that takes no lock shared with other calls (it reads its own arguments
/// and immutable objects), so a fork need not wait for it: model training, similarity
/// helpers. In a forked child it runs on a rayon pool of the child's own
/// (`imesde_engine::fork::install`); work that takes locks installs itself only around its
/// parallel part, with the locks taken on the calling thread.
pub(crate) fn compute<T: Send>(
    py: Python<'_>,
    what: &str,
    f: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    let (result, _back) = py.detach(|| {
        let result = catch_unwind(AssertUnwindSafe(|| fork::install(f)));
        (result, Passage::detached())
    });
    result.map_err(|payload| internal(what, &*payload))
}

/// [`run`] for long work that can stop early: `f` gets a flag to check between its steps,
/// set when Ctrl-C (or any exception a Python signal handler raises) arrives meanwhile. Then
/// that exception is raised, whatever the work returned (it either finished or stopped without
/// a trace, as every core call given such a flag does).
///
/// Only Python's main thread runs signal handlers, and it is the one running this: the work
/// moves to a thread of its own (inside the fork gate) while this thread waits for it, and
/// every few milliseconds takes the GIL to run the handlers. On any other thread the work runs
/// here, and the flag stays unset.
pub(crate) fn run_interruptible<T: Send>(
    py: Python<'_>,
    what: &str,
    f: impl FnOnce(&AtomicBool) -> T + Send,
) -> PyResult<T> {
    interruptible(py, what, true, true, &mut |_| {}, f)
}

/// [`run_interruptible`] for work that changes what it is given as it ends (a batch added to
/// an index): a signal is looked for while it runs, not once it has returned, when it would
/// be raised for work done.
pub(crate) fn write_interruptible<T: Send>(
    py: Python<'_>,
    what: &str,
    f: impl FnOnce(&AtomicBool) -> T + Send,
) -> PyResult<T> {
    interruptible(py, what, true, false, &mut |_| {}, f)
}

/// [`run_interruptible`] for work that, as [`compute`]'s, takes no lock shared with other
/// calls (model training), running `poll` (with the GIL) each time it checks for signals: a
/// progress bar's update.
pub(crate) fn compute_interruptible<T: Send>(
    py: Python<'_>,
    what: &str,
    poll: &mut (dyn FnMut(Python<'_>) + Send),
    f: impl FnOnce(&AtomicBool) -> T + Send,
) -> PyResult<T> {
    interruptible(py, what, false, true, poll, f)
}

fn interruptible<T: Send>(
    py: Python<'_>,
    what: &str,
    gated: bool,
    reads: bool,
    poll: &mut (dyn FnMut(Python<'_>) + Send),
    f: impl FnOnce(&AtomicBool) -> T + Send,
) -> PyResult<T> {
    let stop = AtomicBool::new(false);
    if !on_main_thread() {
        return if gated {
            run(py, what, || f(&stop))
        } else {
            compute(py, what, || f(&stop))
        };
    }
    let task = parking_lot::Mutex::new(Some(f));
    let work = || {
        let _inside = gated.then(Inside::enter);
        let f = task.lock().take().expect("the work runs once");
        // Work that takes no shared lock may run on a pool of a forked child's own (see
        // `compute`); gated work may take locks, and runs on this thread.
        catch_unwind(AssertUnwindSafe(|| {
            if gated {
                f(&stop)
            } else {
                fork::install(|| f(&stop))
            }
        }))
    };
    let mut pending: Option<PyErr> = None;
    let result = py
        .detach(|| {
            let (tx, rx) = mpsc::channel();
            let work = &work;
            // The result is the job's last act; the thread that runs it waits for more.
            let job: Job<'_> = Box::new(move || {
                let _ = tx.send(work());
            });
            let mut wait = || loop {
                match rx.recv_timeout(SIGNAL_POLL) {
                    Ok(result) => {
                        // A signal that came since the last look (the work took less than a
                        // poll, or it came at its end) is the call's too: work that changes
                        // nothing it returns (`reads`) is not kept, so that what the caller
                        // does with it next (write a batch) is not done.
                        if reads
                            && pending.is_none()
                            && let Err(e) = Python::attach(check_signals)
                        {
                            pending = Some(e);
                        }
                        return result;
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        if pending.is_none()
                            && let Err(e) = Python::attach(check_signals)
                        {
                            pending = Some(e);
                            stop.store(true, SeqCst);
                        }
                        Python::attach(&mut *poll);
                    }
                    // The worker ended without sending: it panicked outside the catch.
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(
                            Box::new("the work's thread ended early") as Box<dyn Any + Send>
                        );
                    }
                }
            };
            match Kept::start(job) {
                Ok(_finished) => wait(),
                // The kept thread is busy (a signal handler's call inside this one's wait) or
                // cannot be had: a thread of this call's own.
                Err(job) => std::thread::scope(|s| {
                    if std::thread::Builder::new().spawn_scoped(s, job).is_ok() {
                        wait()
                    } else {
                        // No thread to be had: the work runs here, and cannot be interrupted.
                        work()
                    }
                }),
            }
        })
        .map_err(|payload| internal(what, &*payload))?;
    match pending {
        Some(signal) => Err(signal),
        None => Ok(result),
    }
}

fn check_signals(py: Python<'_>) -> PyResult<()> {
    py.check_signals()
}

/// Work for [`Kept`]'s thread, borrowing what the call that waits for it holds.
type Job<'a> = Box<dyn FnOnce() + Send + 'a>;

/// A thread kept for the work of interruptible calls made on the main thread: starting a
/// thread for each cost 50-130 µs, most of a text search whose query vector is cached.
struct Kept {
    /// The process that started the thread (a forked child has none: it starts its own).
    pid: u32,
    jobs: mpsc::Sender<Job<'static>>,
}

static KEPT: parking_lot::Mutex<Option<Kept>> = parking_lot::Mutex::new(None);

/// Whether a job of the main thread's is on [`Kept`]'s thread (a signal handler's call made
/// while it waits gets a thread of its own).
static KEPT_BUSY: AtomicBool = AtomicBool::new(false);

/// Returned by [`Kept::start`]: dropped, waits until the job has run to its end, however the
/// wait for its result ended.
struct Finished(mpsc::Receiver<()>);

impl Drop for Finished {
    fn drop(&mut self) {
        // The job's end drops the sender: `recv` then fails.
        let _ = self.0.recv();
        KEPT_BUSY.store(false, SeqCst);
    }
}

impl Kept {
    /// Hands `job` to the kept thread (started on first use); the job back when the thread
    /// is busy or cannot be had.
    fn start(job: Job<'_>) -> Result<Finished, Job<'_>> {
        if KEPT_BUSY.swap(true, SeqCst) {
            return Err(job);
        }
        let (done, finished) = mpsc::channel::<()>();
        let job: Job<'_> = Box::new(move || {
            job();
            drop(done);
        });
        // SAFETY: only the lifetime changes. What the job borrows outlives it: the caller
        // holds the returned `Finished` while it waits, and its drop (also when the caller
        // unwinds) returns only once the job has run to its end and dropped `done`. A job
        // that is not sent comes back to the caller and never runs here.
        let job: Job<'static> = unsafe { std::mem::transmute::<Job<'_>, Job<'static>>(job) };
        let mut kept = KEPT.lock();
        let pid = std::process::id();
        if kept.as_ref().is_none_or(|k| k.pid != pid) {
            // A parent's (a fork that skipped `after_fork_in_child`): see there.
            std::mem::forget(kept.take());
            let (jobs, queue) = mpsc::channel::<Job<'static>>();
            let thread = std::thread::Builder::new()
                .name("imesde-work".into())
                .spawn(move || {
                    for job in queue {
                        let _ = catch_unwind(AssertUnwindSafe(job));
                    }
                });
            *kept = thread.is_ok().then_some(Kept { pid, jobs });
        }
        let sent = match kept.as_ref() {
            Some(k) => k.jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        };
        drop(kept);
        match sent {
            Ok(()) => Ok(Finished(finished)),
            Err(job) => {
                KEPT_BUSY.store(false, SeqCst);
                // SAFETY: back to the caller's lifetime, unrun.
                Err(unsafe { std::mem::transmute::<Job<'static>, Job<'_>>(job) })
            }
        }
    }
}

/// How often a thread waiting for interruptible work runs Python's signal handlers.
const SIGNAL_POLL: Duration = Duration::from_millis(20);

/// The Python thread ident of the thread that runs Python's signal handlers (set at import
/// and in a forked child).
static MAIN_THREAD: AtomicUsize = AtomicUsize::new(0);

/// Notes `ident` (``threading.main_thread().ident``) as the thread that runs Python's signal
/// handlers.
pub(crate) fn set_main_thread_ident(ident: usize) {
    MAIN_THREAD.store(ident, SeqCst);
}

/// The calling thread's Python ident, as ``threading.get_ident()`` gives it on every OS
/// (`pthread_self` on Unix, `GetCurrentThreadId` on Windows).
fn thread_ident() -> usize {
    // SAFETY: reads the calling thread's id; needs neither the GIL nor a live interpreter
    // (on Unix it is `pthread_self`, async-signal-safe, so a forked child may call it).
    unsafe { pyo3::ffi::PyThread_get_thread_ident() as usize }
}

/// Notes the calling thread as the one that runs Python's signal handlers.
#[cfg(unix)]
fn set_main_thread() {
    MAIN_THREAD.store(thread_ident(), SeqCst);
}

/// Interpreter exit. Python 3.13 and older end a thread (other than the main one) that takes
/// the GIL once the interpreter finalizes with `pthread_exit`, and its unwinding through Rust
/// frames aborts the process: a daemon thread inside an ingest when the program ends, taking
/// the GIL back after its work or running a callback that sleeps or prints. (Python 3.14
/// hangs such a thread instead.) So a thread other than the main one holds a [`Passage`]
/// from where it would take the GIL back, or call Python code that may let it go, until it
/// is safe; and:
/// - once the interpreter finalizes, a thread reaching a passage is parked for good (without
///   the GIL, until the process ends), as Python 3.14 does;
/// - imesde's `atexit` hook ([`at_exit`]) marks the exit and waits a while for the threads
///   inside a passage (a callback running);
/// - after it, a thread reaching a passage is held back a while (the other exit handlers run
///   meanwhile), so that it is most likely parked, not inside Python code, when finalization
///   begins; a few seconds in all at most per thread, since an exit handler may need it (a
///   logging handler's lock it holds, a pool joining it, an event it is to deliver).
static EXITING: AtomicBool = AtomicBool::new(false);

/// [`Passage`]s alive, over all threads.
static PASSING: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// [`Passage`]s alive on this thread.
    static HELD: Cell<usize> = const { Cell::new(0) };
    /// How long this thread was held back during the exit.
    static HELD_BACK: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// How long the exit waits for threads inside a passage (a callback running).
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// How long a thread reaching a passage during the exit waits for finalization, and how long
/// in all.
const HOLD_BACK: Duration = Duration::from_secs(1);
const HOLD_BACK_IN_ALL: Duration = Duration::from_secs(3);

/// Held by a thread other than the main one from where it takes the GIL back, or calls
/// Python code that may let the GIL go (a callback, a user's function or iterator), until it
/// holds the GIL again or the call has returned (see [`EXITING`]). Dropped on the thread
/// that took it (the count is per thread; it is `Send` only to leave `detach` with it).
pub(crate) struct Passage {
    counted: bool,
}

impl Passage {
    /// Taken without the GIL, before taking it back.
    fn detached() -> Self {
        Self::enter(None)
    }

    /// Taken with the GIL, before calling Python code that may let it go.
    pub(crate) fn attached(py: Python<'_>) -> Self {
        Self::enter(Some(py))
    }

    fn enter(py: Option<Python<'_>>) -> Self {
        if on_main_thread() {
            return Self { counted: false };
        }
        // Counted before the exit is read (the hook marks it, then reads the count): one of
        // the two sees the other.
        PASSING.fetch_add(1, SeqCst);
        HELD.with(|h| h.set(h.get() + 1));
        let passage = Self { counted: true };
        if finalizing() || (EXITING.load(SeqCst) && !held_back_in_all()) {
            match py {
                Some(py) => py.detach(hold_back),
                None => hold_back(),
            }
        }
        passage
    }
}

impl Drop for Passage {
    fn drop(&mut self) {
        if self.counted {
            HELD.with(|h| h.set(h.get() - 1));
            PASSING.fetch_sub(1, SeqCst);
        }
    }
}

/// During the exit, without the GIL: parks this thread for good once the interpreter
/// finalizes, waiting [`HOLD_BACK`] at most for that; the exit does not wait for it meanwhile.
fn hold_back() {
    let held = HELD.with(Cell::get);
    PASSING.fetch_sub(held, SeqCst);
    let start = Instant::now();
    let spent = HELD_BACK.with(Cell::get);
    let deadline = start + HOLD_BACK.min(HOLD_BACK_IN_ALL.saturating_sub(spent));
    if !wait_until(deadline, finalizing) {
        HELD_BACK.with(|h| h.set(spent + start.elapsed()));
        // Counted again before finalization is read once more (as in `Passage::enter`).
        PASSING.fetch_add(held, SeqCst);
        if !finalizing() {
            return;
        }
        PASSING.fetch_sub(held, SeqCst);
    }
    HELD.with(|h| h.set(0));
    loop {
        std::thread::park();
    }
}

/// Whether Python code imesde would call on this thread for events (callbacks, `async for`
/// wake-ups, error logging) is skipped: the program is ending and this thread, not the main
/// one, was held back all it may be (or the interpreter finalizes), so that it is not inside
/// such code when finalization begins.
pub(crate) fn skips_events() -> bool {
    !on_main_thread() && (finalizing() || (EXITING.load(SeqCst) && held_back_in_all()))
}

/// Whether this thread was held back all it may be during the exit.
fn held_back_in_all() -> bool {
    HELD_BACK.with(Cell::get) >= HOLD_BACK_IN_ALL
}

/// Polls `done` every millisecond until it holds (true) or `deadline` passes (false).
fn wait_until(deadline: Instant, done: impl Fn() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether the interpreter finalizes (`Py_IsFinalizing`, `_Py_IsFinalizing` before Python
/// 3.13: an atomic read, safe without the GIL; outside the limited API, so looked up).
fn finalizing() -> bool {
    FINALIZING.get().copied().flatten().is_some_and(|f| {
        // SAFETY: a function of the running interpreter, taking nothing; see above.
        unsafe { f() != 0 }
    })
}

static FINALIZING: std::sync::OnceLock<Option<unsafe extern "C" fn() -> std::ffi::c_int>> =
    std::sync::OnceLock::new();

/// Looks up [`finalizing`]'s function (at import). Only on Unix, where the process's symbols
/// are searched by name: on Windows it would have to be found in the `python3X.dll` that
/// `python3.dll` forwards to, so `finalizing()` is false there (a thread taking the GIL after
/// finalization is ended by `ExitThread`, which unwinds nothing, rather than by the
/// unwinding `pthread_exit` that aborts the process).
pub(crate) fn find_finalizing() {
    FINALIZING.get_or_init(|| {
        #[cfg(unix)]
        for name in [c"Py_IsFinalizing", c"_Py_IsFinalizing"] {
            // SAFETY: a lookup in the process's own symbols, by a NUL-terminated name.
            let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            if !f.is_null() {
                // SAFETY: a non-null result is that function, whose signature is
                // `int (void)` in every Python that has it.
                return Some(unsafe {
                    std::mem::transmute::<
                        *mut libc::c_void,
                        unsafe extern "C" fn() -> std::ffi::c_int,
                    >(f)
                });
            }
        }
        None
    });
}

/// imesde's `atexit` hook (see [`EXITING`]): marks the exit, then waits (without the GIL, for
/// [`EXIT_WAIT`] at most) until no other thread is inside a passage.
#[pyfunction]
#[pyo3(name = "_at_exit")]
pub(crate) fn at_exit(py: Python<'_>) {
    EXITING.store(true, SeqCst);
    if CLOSE_IN_HOOK.load(SeqCst) {
        py.detach(|| close_sessions());
    }
    if PASSING.load(SeqCst) == 0 {
        return;
    }
    let deadline = Instant::now() + EXIT_WAIT;
    py.detach(|| wait_until(deadline, || PASSING.load(SeqCst) == 0));
}

/// Called by the interpreter once it has finalized (`Py_AtExit`: every `atexit` handler has
/// run, and no Python code runs again), before the C exit handlers: model runs in flight on
/// threads still going (daemon threads) are waited for ([`EXIT_WAIT`] at most) and none
/// starts after, so that none overlaps ONNX Runtime's static destructors, which free state it
/// registered on first use (its type registry) before any handler registered when it loaded
/// could wait.
pub(crate) extern "C" fn close_sessions() {
    imesde_embed::close_sessions(EXIT_WAIT);
}

/// Whether [`at_exit`] closes the model runs (`Py_AtExit` had no place left for
/// [`close_sessions`]): earlier, so exit handlers that run after it cannot embed.
static CLOSE_IN_HOOK: AtomicBool = AtomicBool::new(false);

pub(crate) fn close_sessions_in_hook() {
    CLOSE_IN_HOOK.store(true, SeqCst);
}

fn on_main_thread() -> bool {
    MAIN_THREAD.load(SeqCst) == thread_ident()
}
