//! Standing queries on the Python side: `Subscription`, a bounded event queue (the engine's
//! [`Inbox`]) or a callback. Matching happens in the engine; the binding delivers the events
//! after its locks are released.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use imesde_engine::Inbox;
use imesde_ring::Ring;
use parking_lot::Mutex;
use pyo3::PyTraverseError;
use pyo3::exceptions::{PyException, PyStopIteration, PyTypeError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{Real, inspect_is, py_str};
use crate::exceptions::py_err;
use crate::gil;
use crate::hits::Event;

/// A standing query registered with ``Engine.subscribe``.
///
/// Without a callback, events queue here (at most ``queue_size``; when full the oldest is
/// dropped and counted in ``dropped``): iterate (``for event in sub:`` blocks until the next
/// event and ends after ``close()``, or once its engine is gone), ``get(timeout)`` or
/// ``drain()``; ``async for event in sub:`` waits without holding a thread. With a callback,
/// each event is passed to it (and none queue: ``get`` and iteration are refused) right after
/// the ingest call that
/// produced it; an exception in the callback is logged (logger ``"imesde"``) and counted in
/// ``errors``, and never stops ingestion, except ``KeyboardInterrupt`` and ``SystemExit`` (any
/// ``BaseException`` that is not an ``Exception``): those reach the caller of the ingest, after
/// its batch was stored; the batch's later events still reach the queues, and those of
/// callbacks are dropped (counted in ``dropped``). A callback runs on the thread of the ingest
/// call that produced its event: with several threads ingesting, it may run on several at
/// once, and their events interleave.
#[pyclass(frozen, weakref, module = "imesde._imesde")]
pub(crate) struct Subscription {
    pub(crate) id: u64,
    query: Option<String>,
    threshold: Option<f32>,
    top_k: Option<usize>,
    /// Cleared by the garbage collector only (a cycle through the callback's closure).
    callback: Mutex<Option<Py<PyAny>>>,
    has_callback: bool,
    /// Weak: an event or subscription kept after its engine is gone does not keep its items.
    ring: Weak<Ring>,
    inbox: Inbox<Py<Event>>,
    /// Callables of ``async for`` waits, called (and removed) when an event queues or the
    /// subscription closes.
    waiters: Mutex<Vec<Py<PyAny>>>,
    delivered: AtomicU64,
    errors: AtomicU64,
    /// Events a callback did not get because an earlier one stopped the delivery (Ctrl-C).
    skipped: AtomicU64,
}

impl Subscription {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        query: Option<String>,
        threshold: Option<f32>,
        top_k: Option<usize>,
        callback: Option<Py<PyAny>>,
        ring: &Arc<Ring>,
        capacity: usize,
    ) -> Self {
        Subscription {
            id,
            query,
            threshold,
            top_k,
            has_callback: callback.is_some(),
            callback: Mutex::new(callback),
            ring: Arc::downgrade(ring),
            inbox: Inbox::new(capacity),
            waiters: Mutex::new(Vec::new()),
            delivered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        !self.inbox.is_closed()
    }

    /// Whether this is a subscription of the engine whose ring is `ring` (ids are unique
    /// within one engine only).
    pub(crate) fn belongs_to(&self, ring: &Arc<Ring>) -> bool {
        std::ptr::eq(self.ring.as_ptr(), Arc::as_ptr(ring))
    }

    /// Calls the ``async for`` waits registered, outside the lock (a wait's callable may run
    /// Python code that reaches this subscription again). An ``Exception`` of one (its loop
    /// closed) is dropped; a ``BaseException`` that is not one (Ctrl-C) is returned once the
    /// others are woken.
    fn wake(&self, py: Python<'_>) -> PyResult<()> {
        if gil::skips_events() {
            // The program is ending (see `gil::skips_events`); its event loops end with it.
            return Ok(());
        }
        let waiters = std::mem::take(&mut *self.waiters.lock());
        let _passage = (!waiters.is_empty()).then(|| gil::Passage::attached(py));
        let mut stopped = Ok(());
        for w in waiters {
            if let Err(e) = w.call0(py)
                && !e.is_instance_of::<PyException>(py)
                && stopped.is_ok()
            {
                stopped = Err(e);
            }
        }
        stopped
    }

    /// [`Subscription::close`] where nothing can raise (the engine's end, the garbage
    /// collector): an error of a wake-up is reported as unraisable.
    pub(crate) fn shut(&self, py: Python<'_>) {
        if let Err(e) = self.close(py) {
            e.write_unraisable(py, None);
        }
    }

    /// Refuses to wait on a subscription whose events go to its callback.
    fn check_queued(&self) -> PyResult<()> {
        if self.has_callback {
            return Err(py_err!(
                InvalidValue,
                "this subscription passes its events to its callback; none queue here to get"
            ));
        }
        Ok(())
    }

    /// Whether events run Python code (a callback) when delivered.
    pub(crate) fn has_callback(&self) -> bool {
        self.has_callback
    }

    /// Counts an event not delivered because the delivery of its batch was stopped.
    pub(crate) fn skip(&self) {
        if self.is_active() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hands one event to the callback or the queue. Called with the GIL and no engine lock.
    /// A `BaseException` of the callback that is not an `Exception` (Ctrl-C, `sys.exit`) is
    /// returned, to be raised by the ingest call; other exceptions are logged and counted.
    pub(crate) fn deliver(slf: &Bound<'_, Self>, hit: imesde_ring::Hit) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        if !me.is_active() {
            return Ok(());
        }
        if me.has_callback && gil::skips_events() {
            // The program is ending (see `gil::skips_events`): dropped, and counted.
            me.skip();
            return Ok(());
        }
        let event = match Py::new(
            py,
            Event {
                subscription: Some(slf.clone().unbind()),
                query: None,
                hit,
            },
        ) {
            Ok(e) => e,
            Err(e) => {
                me.errors.fetch_add(1, Ordering::Relaxed);
                log_error(py, "imesde: could not build an event", &e);
                return Ok(());
            }
        };
        me.delivered.fetch_add(1, Ordering::Relaxed);
        if me.has_callback {
            // Cleared only when the subscription is unreachable (the garbage collector).
            let Some(cb) = me.callback.lock().as_ref().map(|c| c.clone_ref(py)) else {
                return Ok(());
            };
            // A callback is Python code that may let the GIL go (a passage each: a thread
            // held back at each is seldom inside one when the interpreter finalizes).
            let _passage = gil::Passage::attached(py);
            let failed = match cb.call1(py, (event,)) {
                Ok(out) => unawaited(py, out.bind(py))?,
                Err(e) => Some(e),
            };
            if let Some(e) = failed {
                if !e.is_instance_of::<PyException>(py) {
                    return Err(e);
                }
                me.errors.fetch_add(1, Ordering::Relaxed);
                log_error(py, "imesde: a subscription callback raised", &e);
            }
            return Ok(());
        }
        me.inbox.push(event);
        me.wake(py)
    }

    fn wait(&self, py: Python<'_>, timeout: Option<Real>) -> PyResult<Option<Py<Event>>> {
        self.check_queued()?;
        let deadline = match timeout {
            None => None,
            Some(Real(t)) if t.is_nan() || t < 0.0 => {
                return Err(py_err!(
                    InvalidValue,
                    "timeout must be a number of seconds >= 0 or None, got {t}"
                ));
            }
            // Beyond what a clock can add (inf, 1e30): no deadline.
            Some(Real(t)) => Duration::try_from_secs_f64(t)
                .ok()
                .and_then(|d| Instant::now().checked_add(d)),
        };
        loop {
            if let Some(e) = self.inbox.pop() {
                return Ok(Some(e));
            }
            if !self.is_active() {
                return Ok(None);
            }
            let step = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(None);
                    }
                    (d - now).min(Duration::from_millis(100))
                }
                None => Duration::from_millis(100),
            };
            if let Some(e) = gil::run(py, "Subscription.get", || self.inbox.wait_pop(step))? {
                return Ok(Some(e));
            }
            // Ctrl-C while waiting.
            py.check_signals()?;
        }
    }
}

/// A callback's result that is a coroutine or an async generator (a callback made with
/// ``async def`` through a wrapper ``subscribe`` could not tell): nothing runs it here, so a
/// coroutine is closed, and a `TypeError` (or the error its closing raised) is returned to
/// count and log as the callback's error. None for any other result.
fn unawaited(py: Python<'_>, out: &Bound<'_, PyAny>) -> PyResult<Option<PyErr>> {
    if out.is_none() {
        return Ok(None);
    }
    let coroutine = inspect_is(out, pyo3::intern!(py, "iscoroutine"))?;
    if !coroutine && !inspect_is(out, pyo3::intern!(py, "isasyncgen"))? {
        return Ok(None);
    }
    if coroutine && let Err(e) = out.call_method0(pyo3::intern!(py, "close")) {
        return Ok(Some(e));
    }
    Ok(Some(PyTypeError::new_err(
        "the callback returned a coroutine or async generator, which nothing runs on the \
         ingesting thread: use a plain function (one that hands the event to a loop with \
         asyncio.run_coroutine_threadsafe), or `async for event in sub` without a callback",
    )))
}

fn log_error(py: Python<'_>, msg: &str, e: &PyErr) {
    if gil::skips_events() {
        return;
    }
    // Logging writes (and lets the GIL go).
    let _passage = gil::Passage::attached(py);
    let logged = (|| -> PyResult<()> {
        let logger = py
            .import("logging")?
            .call_method1("getLogger", ("imesde",))?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("exc_info", (e.get_type(py), e.value(py), e.traceback(py)))?;
        logger.call_method("error", (msg,), Some(&kwargs))?;
        Ok(())
    })();
    if logged.is_err() {
        e.clone_ref(py).write_unraisable(py, None);
    }
}

#[pymethods]
impl Subscription {
    /// The subscription's id (unique within its engine).
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }
    /// The query text, or None for a vector query.
    #[getter]
    pub(crate) fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }
    /// The score threshold (after calibration for ``"p99"``-style thresholds), or None. It is
    /// held as a float32, as scores are, and read back as that float32 (``0.3`` reads back as
    /// ``0.30000001192092896``): exactly what scores are compared with, so an event's
    /// ``score >= sub.threshold`` always holds.
    #[getter]
    fn threshold(&self) -> Option<f32> {
        self.threshold
    }
    /// The running top-k size, or None.
    #[getter]
    fn top_k(&self) -> Option<usize> {
        self.top_k
    }
    /// Events produced so far (queued or passed to the callback).
    #[getter]
    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
    /// Events dropped: the queue was full, or (with a callback) a ``KeyboardInterrupt`` or
    /// ``SystemExit`` stopped the delivery of the batch they came from.
    #[getter]
    fn dropped(&self) -> u64 {
        self.inbox.dropped() + self.skipped.load(Ordering::Relaxed)
    }
    /// Exceptions raised by the callback.
    #[getter]
    fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    /// Events waiting in the queue.
    #[getter]
    fn pending(&self) -> usize {
        self.inbox.len()
    }
    /// False after ``close()`` / ``Engine.unsubscribe``.
    #[getter]
    fn active(&self) -> bool {
        self.is_active()
    }
    /// The next event, waiting at most ``timeout`` seconds (None: until one arrives or the
    /// subscription is closed); None when there is none.
    #[pyo3(signature = (timeout = None))]
    fn get(&self, py: Python<'_>, timeout: Option<Real>) -> PyResult<Option<Py<Event>>> {
        self.wait(py, timeout)
    }
    /// Registers ``wake`` (no arguments) to be called once, when an event queues or the
    /// subscription closes; False (nothing registered) when an event is queued already or the
    /// subscription is closed.
    /// ``async for`` waits with this, taking the event itself, so a cancelled wait loses none.
    fn _add_waiter(&self, wake: Py<PyAny>) -> PyResult<bool> {
        self.check_queued()?;
        let mut waiters = self.waiters.lock();
        if !self.inbox.is_empty() || !self.is_active() {
            drop(waiters);
            drop(wake);
            return Ok(false);
        }
        waiters.push(wake);
        Ok(true)
    }
    /// Removes a callable ``_add_waiter`` registered (a wait that was cancelled).
    fn _remove_waiter(&self, wake: &Bound<'_, PyAny>) {
        let removed: Vec<Py<PyAny>> = {
            let mut waiters = self.waiters.lock();
            let (gone, kept) = std::mem::take(&mut *waiters)
                .into_iter()
                .partition(|w| w.is(wake));
            *waiters = kept;
            gone
        };
        drop(removed);
    }
    /// Every queued event, without waiting.
    fn drain(&self) -> Vec<Py<Event>> {
        self.inbox.drain()
    }
    /// Stops the subscription: no new events; queued ones can still be read.
    pub(crate) fn close(&self, py: Python<'_>) -> PyResult<()> {
        if let Some(ring) = self.ring.upgrade() {
            ring.unsubscribe(self.id);
        }
        self.inbox.close();
        self.wake(py)
    }
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    // Queued events refer back to their subscription, and a callback's closure often to the
    // engine: both are cycles that only the garbage collector can free.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(cb) = self.callback.try_lock() {
            visit.call(cb.as_ref())?;
        }
        if let Some(waiters) = self.waiters.try_lock() {
            for w in waiters.iter() {
                visit.call(w)?;
            }
        }
        self.inbox.try_for_each(|e| visit.call(e))
    }
    fn __clear__(&self, py: Python<'_>) {
        self.shut(py);
        let callback = self.callback.try_lock().and_then(|mut cb| cb.take());
        drop(callback);
        drop(self.inbox.drain());
    }
    fn __next__(&self, py: Python<'_>) -> PyResult<Py<Event>> {
        self.wait(py, None)?
            .ok_or_else(|| PyStopIteration::new_err(()))
    }
    /// ``async for event in sub``: each step waits on the event loop, holding no thread.
    fn __aiter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __anext__(slf: PyRef<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
        let py = slf.py();
        py.import(pyo3::intern!(py, "imesde._aio"))?
            .getattr(pyo3::intern!(py, "next_event"))?
            .call1((slf,))
    }
    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __exit__(
        &self,
        py: Python<'_>,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.close(py)
    }
    fn __repr__(&self, py: Python<'_>) -> String {
        let none = || "None".to_owned();
        format!(
            "Subscription(id={}, query={}, threshold={}, top_k={}, active={}, pending={})",
            self.id,
            self.query
                .as_deref()
                .map_or_else(|| "<vector>".to_owned(), |q| py_str(py, q)),
            self.threshold.map_or_else(none, |t| t.to_string()),
            self.top_k.map_or_else(none, |k| k.to_string()),
            if self.is_active() { "True" } else { "False" },
            self.pending()
        )
    }
}
