//! Fork-join over a handful of large tasks (shards, or parts of them) in which the calling
//! thread works too.
//!
//! `rayon`'s `par_iter` called from a thread outside its pool (every Python thread) queues
//! the whole job, blocks the caller and wakes the pool; the caller then sleeps until the
//! last task ends and must be woken in turn. On a VM, waking a halted vCPU costs tens of
//! microseconds each way, as much as scanning thousands of rows. Here the caller starts
//! scanning at once and helpers from rayon's pool join in as they wake, taking tasks from a
//! shared counter; the caller never waits for a helper that has not started, only for the
//! tasks already taken, so a scan costs at most the wake-up calls more than running it alone.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Hands out the task indices to a worker body.
type Next<'a> = dyn FnMut() -> Option<usize> + 'a;
/// A worker body: runs tasks while `next` yields their indices.
type BodyFn<'a> = dyn Fn(&mut Next<'_>) + Sync + 'a;
/// A worker body with its borrow erased; see [`run`] for why it is never called after the
/// borrow ends.
type Body = *const BodyFn<'static>;

struct Shared {
    /// The next task index to take; `>= n` once all are taken (or the caller gave up).
    next: AtomicUsize,
    /// Threads between registering and finishing their tasks.
    active: AtomicUsize,
    /// The first panic of a worker body (its part of the result is missing).
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    n: usize,
    body: Body,
}

// SAFETY: `body` points to a `Sync` closure and is only called while it is alive (see `run`).
unsafe impl Send for Shared {}
// SAFETY: as above; every other field is atomic or immutable.
unsafe impl Sync for Shared {}

impl Shared {
    /// Runs the body over tasks taken from the counter, if any is left.
    fn work(&self) {
        // A helper that wakes after the last task was taken leaves without registering (the
        // owner need not wait for it).
        if self.next.load(SeqCst) >= self.n {
            return;
        }
        // Register before taking a task: the owner waits for `active == 0` after the counter
        // passed `n`, so whoever took a task below `n` is waited for.
        self.active.fetch_add(1, SeqCst);
        let first = self.next.fetch_add(1, SeqCst);
        if first < self.n {
            let mut pending = Some(first);
            let mut next = || {
                pending.take().or_else(|| {
                    let i = self.next.fetch_add(1, SeqCst);
                    (i < self.n).then_some(i)
                })
            };
            // SAFETY: a task below `n` was taken while registered, so the owner is still
            // inside `run` (it returns only after `active` drops to 0 with the counter past
            // `n`) and the closure behind `body` is alive.
            let result = catch_unwind(AssertUnwindSafe(|| unsafe { (*self.body)(&mut next) }));
            if let Err(payload) = result {
                let mut first = self.panic.lock().unwrap_or_else(PoisonError::into_inner);
                first.get_or_insert(payload);
            }
        }
        self.active.fetch_sub(1, SeqCst);
    }
}

/// Closes the counter and waits for tasks in flight, also while the owner unwinds.
struct Close<'a>(&'a Shared);

impl Drop for Close<'_> {
    fn drop(&mut self) {
        self.0.next.fetch_max(self.0.n, SeqCst);
        let mut spins = 0u32;
        while self.0.active.load(SeqCst) != 0 {
            if spins < 1 << 12 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// How long a helper waits for the next scan after its last one: a scan repeated from a
/// loop then finds it awake (as BLAS libraries keep their threads spinning) instead of
/// paying a vCPU wake-up, worth most of a small scan.
const LINGER: Duration = Duration::from_micros(200);

/// Helpers waiting for a scan.
static LINGERING: AtomicUsize = AtomicUsize::new(0);
/// The latest scan posted for lingering helpers.
static POSTED: Mutex<Option<Arc<Shared>>> = Mutex::new(None);
/// Scans posted so far (bumped under `POSTED`'s lock), read without the lock while lingering.
static POSTINGS: AtomicU64 = AtomicU64::new(0);

/// A helper's job: work on `first`, then take scans posted while it lingers. The same
/// protocol as any helper (`Shared::work`), so a scan that ended is never touched.
fn helper(first: &Arc<Shared>) {
    first.work();
    let mut seen = POSTINGS.load(SeqCst);
    LINGERING.fetch_add(1, SeqCst);
    let mut since = Instant::now();
    while since.elapsed() < LINGER {
        let postings = POSTINGS.load(SeqCst);
        let next = if postings == seen {
            None
        } else {
            // (A scan posted after that load is taken now and looked at once more later,
            // which finds its tasks taken or joins it: harmless either way.)
            seen = postings;
            POSTED
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        };
        match next {
            Some(scan) => {
                scan.work();
                since = Instant::now();
            }
            None => std::hint::spin_loop(),
        }
    }
    LINGERING.fetch_sub(1, SeqCst);
}

/// Runs `body(next)` on the calling thread and on up to `helpers` pool threads; across all
/// of them, `next()` yields each index of `0..n` once.
fn run(n: usize, helpers: usize, body: &BodyFn<'_>) {
    // SAFETY: only the lifetime is erased. Helpers call `body` only after taking an index
    // below `n` while registered in `active`; `Close` (run on return and on unwind) pushes
    // the counter past `n` and waits until no helper is registered, so no call starts or is
    // in flight once this function returns, and later helpers find the counter past `n`.
    let body: Body = unsafe { std::mem::transmute::<&BodyFn<'_>, Body>(body) };
    let shared = Arc::new(Shared {
        next: AtomicUsize::new(0),
        active: AtomicUsize::new(0),
        panic: Mutex::new(None),
        n,
        body,
    });
    {
        // Armed before any helper exists, so whatever unwinds from here waits for them.
        let _close = Close(&shared);
        // Helpers still lingering after the last scan join this one at once; new ones are
        // spawned for the rest (a lingering helper that leaves just now only costs speed).
        let lingering = LINGERING.load(SeqCst);
        if lingering > 0 {
            let mut posted = POSTED.lock().unwrap_or_else(PoisonError::into_inner);
            *posted = Some(Arc::clone(&shared));
            POSTINGS.fetch_add(1, SeqCst);
        }
        for _ in lingering.min(helpers)..helpers {
            let s = Arc::clone(&shared);
            rayon::spawn(move || helper(&s));
        }
        shared.work();
    }
    {
        let mut posted = POSTED.lock().unwrap_or_else(PoisonError::into_inner);
        if posted.as_ref().is_some_and(|p| Arc::ptr_eq(p, &shared)) {
            *posted = None;
        }
    }
    let panic = shared
        .panic
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(payload) = panic {
        resume_unwind(payload);
    }
}

/// Folds `step(acc, i)` over `i` in `0..n`, computed by the calling thread and by up to
/// `max_helpers` threads of rayon's pool as they wake (never more than it has besides one
/// core for the caller, nor more than tasks): one accumulator (from `init`) per thread that
/// took part, so state such as a top-k floor carries from one task to the next.
pub(crate) fn fold<A: Send>(
    n: usize,
    max_helpers: usize,
    init: impl Fn() -> A + Sync,
    step: impl Fn(&mut A, usize) + Sync,
) -> Vec<A> {
    // The pool is looked at only when helpers are wanted: not in a forked child (where the
    // parent's threads do not exist), nor for a small scan. One core is the caller's.
    let helpers = if max_helpers > 0 && n > 1 {
        max_helpers
            .min(rayon::current_num_threads().saturating_sub(1))
            .min(n - 1)
    } else {
        0
    };
    if helpers == 0 {
        let mut acc = init();
        for i in 0..n {
            step(&mut acc, i);
        }
        return vec![acc];
    }
    let done = Mutex::new(Vec::with_capacity(helpers + 1));
    run(n, helpers, &|next| {
        let mut acc = init();
        while let Some(i) = next() {
            step(&mut acc, i);
        }
        done.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(acc);
    });
    done.into_inner().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::fold;

    fn squares(n: usize, helpers: usize) -> Vec<usize> {
        let parts = fold(n, helpers, Vec::new, |acc: &mut Vec<(usize, usize)>, i| {
            acc.push((i, i * i));
        });
        let mut all: Vec<(usize, usize)> = parts.into_iter().flatten().collect();
        all.sort_unstable();
        all.into_iter().map(|(_, v)| v).collect()
    }

    #[test]
    fn every_index_once() {
        for n in [0, 1, 2, 3, 16, 257] {
            for helpers in [0, 1, usize::MAX] {
                assert_eq!(
                    squares(n, helpers),
                    (0..n).map(|i| i * i).collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn borrowed_state_outlives_helpers() {
        // Many short folds over borrowed data: a helper that wakes late must find nothing.
        for round in 0..2000usize {
            let data: Vec<usize> = (0..8).map(|i| i + round).collect();
            let sums = fold(data.len(), usize::MAX, || 0, |acc, i| *acc += data[i]);
            assert_eq!(sums.iter().sum::<usize>(), data.iter().sum::<usize>());
        }
    }

    #[test]
    fn a_panicking_task_reaches_the_caller() {
        let r = std::panic::catch_unwind(|| {
            fold(64, usize::MAX, || (), |(), i| assert!(i != 40, "task 40"));
        });
        let payload = r.expect_err("the panic reaches the caller");
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        assert_eq!(message, Some("task 40"));
    }
}
