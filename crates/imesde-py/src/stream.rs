//! Standing queries on the Python side: `Subscription` (a bounded event queue or a callback)
//! and `Event`. Matching happens in the ring (`imesde_ring::Ring::ingest_matching`); this
//! module delivers the events after the ring's locks are released.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use imesde_ring::Ring;
use parking_lot::{Condvar, Mutex};
use pyo3::exceptions::{PyException, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::convert::{Real, meta_dict};
use crate::engine::Hit;
use crate::exceptions::{Exc, err};
use crate::gil;

/// A standing query registered with ``Engine.subscribe``.
///
/// Without a callback, events queue here (at most ``queue_size``; when full the oldest is
/// dropped and counted in ``dropped``): iterate (``for event in sub:`` blocks until the next
/// event and ends after ``close()``), ``get(timeout)`` or ``drain()``. With a callback, each
/// event is passed to it right after the ingest call that produced it; an exception in the
/// callback is logged (logger ``"imesde"``) and counted in ``errors``, and never stops
/// ingestion, except ``KeyboardInterrupt`` and ``SystemExit`` (any ``BaseException`` that is not
/// an ``Exception``): those reach the caller of the ingest, after its batch was stored.
#[pyclass(frozen, module = "imesde._imesde")]
pub(crate) struct Subscription {
    pub(crate) id: u64,
    query: Option<String>,
    threshold: Option<f32>,
    top_k: Option<usize>,
    callback: Option<Py<PyAny>>,
    ring: Arc<Ring>,
    queue: Mutex<VecDeque<Py<Event>>>,
    ready: Condvar,
    capacity: usize,
    delivered: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    closed: AtomicBool,
}

impl Subscription {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        query: Option<String>,
        threshold: Option<f32>,
        top_k: Option<usize>,
        callback: Option<Py<PyAny>>,
        ring: Arc<Ring>,
        capacity: usize,
    ) -> Self {
        Subscription {
            id,
            query,
            threshold,
            top_k,
            callback,
            ring,
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            capacity,
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
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
        let event = match Py::new(
            py,
            Event {
                subscription: slf.clone().unbind(),
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
        if let Some(cb) = &me.callback {
            if let Err(e) = cb.call1(py, (event,)) {
                if !e.is_instance_of::<PyException>(py) {
                    return Err(e);
                }
                me.errors.fetch_add(1, Ordering::Relaxed);
                log_error(py, "imesde: a subscription callback raised", &e);
            }
            return Ok(());
        }
        let mut q = me.queue.lock();
        if q.len() >= me.capacity {
            q.pop_front();
            me.dropped.fetch_add(1, Ordering::Relaxed);
        }
        q.push_back(event);
        drop(q);
        me.ready.notify_all();
        Ok(())
    }

    fn wait(&self, py: Python<'_>, timeout: Option<Real>) -> PyResult<Option<Py<Event>>> {
        let deadline = match timeout {
            None => None,
            Some(Real(t)) if t.is_nan() || t < 0.0 => {
                return Err(err(
                    Exc::InvalidValue,
                    format!("timeout must be a number of seconds >= 0 or None, got {t}"),
                ));
            }
            // Beyond what a clock can add (inf, 1e30): no deadline.
            Some(Real(t)) => Duration::try_from_secs_f64(t)
                .ok()
                .and_then(|d| Instant::now().checked_add(d)),
        };
        loop {
            if let Some(e) = self.queue.lock().pop_front() {
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
            gil::run(py, "Subscription.get", || {
                let mut q = self.queue.lock();
                if q.is_empty() && self.is_active() {
                    self.ready.wait_for(&mut q, step);
                }
            })?;
            // Ctrl-C while waiting.
            py.check_signals()?;
        }
    }
}

fn log_error(py: Python<'_>, msg: &str, e: &PyErr) {
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
    fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }
    /// The score threshold (after calibration for ``"p99"``-style thresholds), or None.
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
    /// Events dropped because the queue was full.
    #[getter]
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// Exceptions raised by the callback.
    #[getter]
    fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    /// Events waiting in the queue.
    #[getter]
    fn pending(&self) -> usize {
        self.queue.lock().len()
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
    /// Every queued event, without waiting.
    fn drain(&self) -> Vec<Py<Event>> {
        self.queue.lock().drain(..).collect()
    }
    /// Stops the subscription: no new events; queued ones can still be read.
    pub(crate) fn close(&self) {
        self.ring.unsubscribe(self.id);
        self.closed.store(true, Ordering::Release);
        self.ready.notify_all();
    }
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __next__(&self, py: Python<'_>) -> PyResult<Py<Event>> {
        self.wait(py, None)?
            .ok_or_else(|| PyStopIteration::new_err(()))
    }
    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __exit__(
        &self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) {
        self.close();
    }
    fn __repr__(&self) -> String {
        let none = || "None".to_owned();
        format!(
            "Subscription(id={}, query={}, threshold={}, top_k={}, active={}, pending={})",
            self.id,
            self.query
                .as_deref()
                .map_or_else(|| "<vector>".to_owned(), py_str),
            self.threshold.map_or_else(none, |t| t.to_string()),
            self.top_k.map_or_else(none, |k| k.to_string()),
            if self.is_active() { "True" } else { "False" },
            self.pending()
        )
    }
}

/// A new item that matched a standing query: ``subscription``, ``hit`` and the hit's fields
/// (``id``, ``text``, ``score``, ``ts``, ``metadata``), plus ``query``.
#[pyclass(frozen, module = "imesde._imesde")]
pub(crate) struct Event {
    subscription: Py<Subscription>,
    hit: imesde_ring::Hit,
}

#[pymethods]
impl Event {
    /// The subscription that fired.
    #[getter]
    fn subscription(&self, py: Python<'_>) -> Py<Subscription> {
        self.subscription.clone_ref(py)
    }
    /// The subscription's query text (None for a vector query).
    #[getter]
    fn query(&self) -> Option<String> {
        self.subscription.get().query.clone()
    }
    /// The matching item as a ``Hit``.
    #[getter]
    fn hit(&self) -> Hit {
        Hit(self.hit.clone())
    }
    /// The item's id.
    #[getter]
    fn id(&self) -> u64 {
        self.hit.id
    }
    /// The item's text, or None.
    #[getter]
    fn text(&self) -> Option<&str> {
        self.hit.text.as_deref()
    }
    /// Cosine similarity of the item to the query.
    #[getter]
    fn score(&self) -> f32 {
        self.hit.score
    }
    /// The item's timestamp (seconds since the Unix epoch).
    #[getter]
    fn ts(&self) -> f64 {
        self.hit.ts
    }
    /// The item's metadata as a new dict, or None.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        meta_dict(py, self.hit.metadata.as_deref())
    }
    fn __repr__(&self) -> String {
        format!(
            "Event(subscription={}, id={}, score={:.4}, text={})",
            self.subscription.get().id,
            self.hit.id,
            self.hit.score,
            self.hit
                .text
                .as_deref()
                .map_or_else(|| "None".to_owned(), py_str)
        )
    }
}

/// `s` quoted as Python's `repr` would (single quotes unless it holds one).
pub(crate) fn py_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}
