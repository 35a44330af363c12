//! `imesde.Engine`: converts arguments, calls [`imesde_engine::Engine`] without the GIL, and
//! converts back. What only Python has stays here: semantic-id functions written in Python,
//! and subscriptions that hand events to Python callbacks.
// PyO3 extracts arguments as owned values (PathBuf, Text); borrowing them is not an option.
#![allow(clippy::needless_pass_by_value)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use imesde_engine::{Fusion, Ingested, LexicalConfig, Threshold};
use imesde_ring::{Attributes, IvfConfig, RingConfig, RingError, Storage, check_timestamp};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods};
use parking_lot::Mutex;
use pyo3::PyTraverseError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyList, PyString, PyTuple};

use crate::bm25::PyBm25;
use crate::convert::{self, Count, Flag, FsPath, LexicalQuery, Real, Text, id_of, reduce_to_bytes};
use crate::embed::TextEmbedder;
use crate::error::{CoreError, Raise};
use crate::exceptions::py_err;
use crate::gil;
use crate::hits::{Hit, Item};
use crate::rq::Labeler;
use crate::stream::Subscription;
use imesde_engine::fork::install;

/// An in-memory semantic search engine over a bounded stream of texts or vectors.
///
/// ``Engine()`` embeds text with the default model; ``Engine(model)`` takes a
/// ``TextEmbedder`` or a model directory; ``Engine(384)`` makes a vectors-only engine of that
/// dimension. Holds the newest ``num_shards * shard_size`` items; older ones are overwritten.
/// Vectors are stored L2-normalised, scores are cosine similarities, search is exact
/// (``storage="f32"``), rescored from int8 codes (``"int8"``) or from candidates that sign
/// bits pick (``"binary"``). ``index="ivf"`` keeps an inverted-file index that follows the
/// window (``nlist`` lists, ``nprobe`` scanned per query; by default ``~sqrt(capacity)`` and
/// an eighth of it): searches then read a fraction of the items. ``exact=True`` on a search
/// scans every item with the exact kernels (a binary engine: its int8 copy). ``lexical=True``
/// keeps a BM25 index of the items' texts (English stemming); ``lexical=BM25(stemmer=...,
/// stopwords=...)`` one with that index's settings (its documents are not taken).
#[pyclass(frozen, weakref, module = "imesde._imesde")]
pub(crate) struct Engine {
    core: imesde_engine::Engine,
    model: Option<Py<TextEmbedder>>,
    /// Gives each ingested batch its semantic ids (see `attach_semantic_ids`).
    semantic_ids: Mutex<Option<Py<PyAny>>>,
    /// Standing queries, in registration order (closed ones are pruned on the next change).
    subs: Mutex<Vec<Py<Subscription>>>,
}

/// A property's new value as a count of at least 1 (a type error named as an argument's is:
/// `nprobe: expected an int, got NoneType`).
fn positive_value(value: &Bound<'_, PyAny>, what: &str) -> PyResult<usize> {
    value
        .extract::<Count>()
        .map_err(|e| py_err!(DType, "{what}: {}", e.value(value.py())))?
        .positive(what)
}

/// The index of ``Engine(index=..., nlist=..., nprobe=...)`` for a ring of `capacity` slots.
fn index_of(
    index: Option<Text>,
    nlist: Option<Count>,
    nprobe: Option<Count>,
    capacity: usize,
) -> PyResult<Option<IvfConfig>> {
    let (nlist, nprobe) = (
        nlist.map(|n| n.positive("nlist")).transpose()?,
        nprobe.map(|n| n.positive("nprobe")).transpose()?,
    );
    match index.as_deref() {
        None if nlist.is_some() || nprobe.is_some() => Err(py_err!(
            InvalidValue,
            "nlist and nprobe shape an index: give index=\"ivf\" with them"
        )),
        None => Ok(None),
        // Checked when the engine sets it (`Engine::set_index`).
        Some("ivf") => Ok(Some(IvfConfig::with(capacity, nlist, nprobe))),
        Some(other) => Err(py_err!(
            InvalidValue,
            "index must be None or \"ivf\", got {other:?}"
        )),
    }
}

/// ``Engine(lexical=...)``: True for BM25 with the defaults, a ``BM25`` for an index with its
/// settings (parameters, stemmer, stop words; its documents are not taken), False or None
/// for none.
fn lexical_of(lexical: Option<&Bound<'_, PyAny>>) -> PyResult<Option<LexicalConfig>> {
    let Some(value) = lexical else {
        return Ok(None);
    };
    if let Ok(index) = value.cast::<PyBm25>() {
        return Ok(Some(index.get().lexical_config()));
    }
    match value.extract::<Flag>() {
        Ok(Flag(on)) => Ok(on.then(LexicalConfig::default)),
        Err(_) => Err(py_err!(
            DType,
            "lexical must be a bool or an imesde.BM25 (its settings), got {}",
            convert::type_name(value)
        )),
    }
}

/// Hits as Python objects.
fn hits(hits: Vec<imesde_ring::Hit>) -> Vec<Hit> {
    hits.into_iter().map(Hit).collect()
}

/// Ids as an int64 array: the one dtype of ids in imesde, as in faiss (ids stay below 2^63).
fn id_array(py: Python<'_>, ids: std::ops::Range<u64>) -> Bound<'_, PyArray1<i64>> {
    ids.map(|i| i as i64).collect::<Vec<i64>>().into_pyarray(py)
}

fn stopped(stop: &AtomicBool) -> impl FnMut() -> bool + '_ {
    || stop.load(Relaxed)
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(
        signature = (model = None, *, num_shards = Count::from(16), shard_size = Count::from(1024), storage = Text("f32".into()), lexical = None, index = None, nlist = None, nprobe = None),
        text_signature = "(model=None, *, num_shards=16, shard_size=1024, storage='f32', lexical=False, index=None, nlist=None, nprobe=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: Option<&Bound<'_, PyAny>>,
        num_shards: Count,
        shard_size: Count,
        storage: Text,
        lexical: Option<&Bound<'_, PyAny>>,
        index: Option<Text>,
        nlist: Option<Count>,
        nprobe: Option<Count>,
    ) -> PyResult<Self> {
        let (num_shards, shard_size, storage) = (
            num_shards.positive("num_shards")?,
            shard_size.positive("shard_size")?,
            storage.parse::<Storage>().map_err(CoreError::from)?,
        );
        let (dim, model) = model_or_dim(py, model)?;
        let cfg = RingConfig {
            dim,
            num_shards,
            shard_size,
            storage,
        };
        let ivf = index_of(index, nlist, nprobe, num_shards.saturating_mul(shard_size))?;
        let text_model = model.as_ref().map(|m| Arc::clone(&m.get().model));
        let lexical = lexical_of(lexical)?;
        let core = gil::run(py, "Engine", || {
            let core = imesde_engine::Engine::with_lexical(cfg, text_model, lexical)?;
            core.set_index(ivf)?;
            Ok::<_, imesde_engine::EngineError>(core)
        })
        .raise()?;
        Ok(Engine::around(core, model))
    }

    /// The ``k`` items that best match the words of ``query`` (BM25 over the items' texts),
    /// best first; ``score`` is the BM25 score. ``query`` is a text, or its terms already
    /// analyzed (a list of str, as ``BM25.search`` takes). ``since``, ``until`` and ``where``
    /// as in ``search``. Needs ``Engine(..., lexical=True)``.
    #[pyo3(
        signature = (query, k = Count::from(10), *, since = None, until = None, r#where = None),
        text_signature = "($self, query, k=10, *, since=None, until=None, where=None)"
    )]
    fn lexical_search(
        &self,
        py: Python<'_>,
        query: LexicalQuery,
        k: Count,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Hit>> {
        let k = k.positive("k")?;
        let filter = convert::filter(since, until, r#where, false)?;
        Ok(hits(
            gil::run(py, "Engine.lexical_search", || {
                self.core.lexical_search(query.get(), k, &filter)
            })
            .raise()?,
        ))
    }

    /// For engines searched as one (``imesde.distributed``): this engine's BM25 statistics for
    /// ``query``, ``(documents, total_length, [(term, documents_with_term), ...])``.
    fn _lexical_corpus_terms(
        &self,
        py: Python<'_>,
        query: LexicalQuery,
    ) -> PyResult<imesde_engine::CorpusPart> {
        gil::run(py, "Engine._lexical_corpus_terms", || {
            self.core.lexical_corpus_terms(query.get())
        })
        .raise()
    }

    /// For engines searched as one: the largest BM25 impact of each of ``terms`` here, in a
    /// corpus of ``documents`` documents of ``total_length`` terms.
    fn _lexical_max_impacts(
        &self,
        py: Python<'_>,
        terms: Vec<String>,
        documents: u32,
        total_length: u64,
    ) -> PyResult<Vec<f32>> {
        gil::run(py, "Engine._lexical_max_impacts", || {
            self.core
                .lexical_max_impacts(&terms, documents, total_length)
        })
        .raise()
    }

    /// For engines searched as one: ``lexical_search`` scored with the corpus's statistics
    /// (``terms`` maps each query term to its document count and largest impact over all
    /// the engines), so that the engines' answers merge into one engine's.
    #[pyo3(signature = (query, k, documents, total_length, terms, *, since = None, until = None, r#where = None))]
    #[allow(clippy::too_many_arguments)]
    fn _lexical_search_corpus(
        &self,
        py: Python<'_>,
        query: LexicalQuery,
        k: Count,
        documents: u32,
        total_length: u64,
        terms: HashMap<String, (u32, f32)>,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Hit>> {
        let k = k.positive("k")?;
        let filter = convert::filter(since, until, r#where, false)?;
        let corpus = imesde_engine::Corpus {
            documents,
            total_len: total_length,
            terms,
        };
        Ok(hits(
            gil::run(py, "Engine._lexical_search_corpus", || {
                self.core
                    .lexical_search_corpus(query.get(), k, &filter, &corpus)
            })
            .raise()?,
        ))
    }

    /// Dense and lexical results fused into one ranking: ``method`` as in ``imesde.fuse``
    /// (``"weighted"`` by default: min-max scaled scores, the best fusion across the retrieval
    /// sets in README; ``"rrf"``, ``"combsum"``, ``"combmnz"`` and ``"borda"`` too). ``alpha``
    /// weights the dense list (and ``1 - alpha`` the lexical one; 0 gives the lexical ranking,
    /// 1 the dense one). Left out, it is 0.5 for ``"weighted"``, and the other methods weight
    /// both lists 1 (the ranking 0.5 gives, each score twice as large). ``score`` is the fused
    /// score. ``vector``: the query's embedding (float32, the engine's dimension) for the
    /// dense side instead of the model's, as a vectors-only engine needs; ``query`` stays
    /// what the lexical side searches (with ``vector``, a text or its analyzed terms).
    /// ``since``, ``until`` and ``where`` filter both sides, as in ``search``. Needs
    /// ``lexical=True``, and a model unless ``vector`` is given.
    #[pyo3(
        signature = (query, k = Count::from(10), method = Text("weighted".into()), alpha = None, *,
                     vector = None, since = None, until = None, r#where = None, exact = Flag(false)),
        text_signature = "($self, query, k=10, method='weighted', alpha=None, *, vector=None, since=None, until=None, where=None, exact=False)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn hybrid_search(
        &self,
        py: Python<'_>,
        query: LexicalQuery,
        k: Count,
        method: Text,
        alpha: Option<Real>,
        vector: Option<&Bound<'_, PyAny>>,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
        exact: Flag,
    ) -> PyResult<Vec<Hit>> {
        let k = k.positive("k")?;
        let filter = convert::filter(since, until, r#where, exact.0)?;
        let fusion = method.parse::<Fusion>().map_err(CoreError::from)?;
        let alpha = alpha.map(|a| a.0 as f32);
        if let Some(vector) = vector {
            let q = self.one_vector(vector, "vector")?;
            let q = q.as_slice();
            return Ok(hits(
                gil::run(py, "Engine.hybrid_search", || {
                    self.core
                        .hybrid_search_vector(query.get(), q, k, fusion, alpha, &filter)
                })
                .raise()?,
            ));
        }
        let LexicalQuery::Text(text) = query else {
            return Err(py_err!(
                DType,
                "query must be a str without vector= (the model embeds a text, not terms)"
            ));
        };
        Ok(hits(
            gil::run_interruptible(py, "Engine.hybrid_search", |stop| {
                self.core
                    .hybrid_search(&text, k, fusion, alpha, &filter, &mut stopped(stop))
            })
            .raise()?,
        ))
    }

    /// From now on, every ingested batch's vectors (float32 ``[n, dim]``) are passed to
    /// ``assign`` (e.g. a fitted ``SemanticIdEngine`` or ``RQKMeans``), which returns ``n``
    /// strings; each item stores its string as metadata ``semantic_id`` (searchable with
    /// ``where={"semantic_id": ...}``). If ``assign`` raises, the batch is not ingested.
    /// ``None`` detaches. imesde's own ``SemanticIdEngine`` and ``RQKMeans`` (with the
    /// in-memory store) label in Rust, without a call into Python per batch; one not fitted
    /// yet, or fitted on vectors of another dimension, is refused here.
    fn attach_semantic_ids(
        &self,
        py: Python<'_>,
        assign: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if let Some(f) = &assign
            && !f.is_callable()
        {
            return Err(py_err!(
                DType,
                "assign must be callable (vectors -> list of str), e.g. a SemanticIdEngine"
            ));
        }
        if let Some(f) = &assign
            && let Labels::Native(l) = native_labeler(f)?
        {
            gil::run(py, "Engine.attach_semantic_ids", || {
                self.core.check_labeler(l.as_ref())
            })
            .raise()?;
        }
        // The function replaced is freed after the lock is released: freeing it may run Python
        // code (a `__del__`) that calls this engine.
        let replaced = std::mem::replace(&mut *self.semantic_ids.lock(), assign.map(Bound::unbind));
        drop(replaced);
        Ok(())
    }

    /// Registers a standing query: every item ingested from now on that matches becomes an
    /// event. ``query`` is a text (embedded with the engine's model) or a float32 vector.
    /// ``threshold``: a cosine score, or ``"p99"`` (``"pNN"``) for the score above which 1 %
    /// (100 - NN %) of the items now held (that pass ``where``) fall; ``top_k``: fire for items
    /// that enter the k best seen since subscribing (with a threshold too, both must hold).
    /// ``where`` filters on metadata (and the text). With ``callback`` (a plain function, not
    /// ``async def``), each event is passed to it on the ingesting thread; otherwise events
    /// queue on the returned ``Subscription`` (at most ``queue_size``).
    #[pyo3(
        signature = (query, *, threshold = None, top_k = None, r#where = None, callback = None,
                     queue_size = Count::from(10_000)),
        text_signature = "($self, query, *, threshold=None, top_k=None, where=None, callback=None, queue_size=10000)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        threshold: Option<&Bound<'_, PyAny>>,
        top_k: Option<Count>,
        r#where: Option<&Bound<'_, PyAny>>,
        callback: Option<Bound<'_, PyAny>>,
        queue_size: Count,
    ) -> PyResult<Py<Subscription>> {
        let (text, vector) = if query.is_instance_of::<PyString>() {
            let text = convert::one_str(query, "query")?;
            (Some(text.to_string()), self.embed_queries(py, &[text])?)
        } else {
            let q = convert::rows(query, "query")?;
            if q.rows != 1 {
                return Err(py_err!(Shape, "query must be one text or one vector"));
            }
            self.check_dim(q.dim, "query")?;
            (None, q.as_slice().to_vec())
        };
        if let Some(cb) = &callback {
            if !cb.is_callable() {
                return Err(py_err!(DType, "callback must be callable (event -> None)"));
            }
            // It runs on the ingesting thread, where nothing would await its coroutines.
            if convert::inspect_is(cb, pyo3::intern!(py, "iscoroutinefunction"))?
                || convert::inspect_is(cb, pyo3::intern!(py, "isasyncgenfunction"))?
            {
                return Err(py_err!(
                    DType,
                    "callback is an async def function: it runs on the ingesting thread, where \
                     nothing awaits it; read events with `async for event in sub` (no \
                     callback), or pass a plain function that hands each event to your loop \
                     (asyncio.run_coroutine_threadsafe(handle(event), loop))"
                ));
            }
        }
        let top_k = top_k.map(|k| k.positive("top_k")).transpose()?;
        let capacity = queue_size.positive("queue_size")?;
        let threshold = threshold.map(threshold_of).transpose()?;
        let filter = convert::filter(None, None, r#where, false)?;
        let threshold = gil::run(py, "Engine.subscribe", || {
            self.core.threshold_score(&vector, threshold, &filter)
        })
        .raise()?;
        // The subscription is listed before its query can match: an ingest on another thread
        // finds it for every event of the new query.
        let id = self.core.reserve_subscription();
        let sub = Py::new(
            py,
            Subscription::new(
                id,
                text,
                threshold,
                top_k,
                callback.map(Bound::unbind),
                self.core.ring(),
                capacity,
            ),
        )?;
        let closed = self.update_subs(|subs| {
            let closed = take_where(subs, |s| !s.get().is_active());
            subs.push(sub.clone_ref(py));
            closed
        });
        drop(closed);
        let registered = gil::run(py, "Engine.subscribe", || {
            self.core
                .subscribe_as(id, &vector, threshold, top_k, filter)
        })
        .raise();
        if let Err(e) = registered {
            sub.get().shut(py);
            drop(self.update_subs(|subs| take_where(subs, |s| s.get().id == id)));
            return Err(e);
        }
        if !sub.get().is_active() {
            // Unsubscribed by another thread before its query was registered: not left behind.
            self.core.unsubscribe(id);
        }
        Ok(sub)
    }

    /// Stops a subscription (a ``Subscription`` or its id); False when it was not active.
    fn unsubscribe(&self, py: Python<'_>, subscription: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = match subscription.cast::<Subscription>() {
            // Ids are unique within one engine only.
            Ok(s) if !s.get().belongs_to(self.core.ring()) => return Ok(false),
            Ok(s) => s.get().id,
            Err(_) => match id_of(subscription, "the subscription id") {
                Ok(id) => id,
                // No subscription has a negative or huge id.
                Err(e) if crate::exceptions::is(py, &e, crate::exceptions::Exc::OutOfRange) => {
                    return Ok(false);
                }
                Err(_) => {
                    return Err(py_err!(DType, "unsubscribe takes a Subscription or its id"));
                }
            },
        };
        // Removed ones are freed after the lock is released (a callback's `__del__` may call
        // this engine).
        let removed = self.update_subs(|subs| take_where(subs, |s| s.get().id == id));
        let found = removed
            .iter()
            .find(|s| s.get().is_active())
            .map(|s| s.clone_ref(py));
        drop(removed);
        match found {
            Some(s) => {
                s.get().close(py)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The active subscriptions, oldest first.
    fn subscriptions(&self, py: Python<'_>) -> Vec<Py<Subscription>> {
        self.subs
            .lock()
            .iter()
            .filter(|s| s.get().is_active())
            .map(|s| s.clone_ref(py))
            .collect()
    }

    /// The ``n`` items ingested last that are still held, newest first (by arrival, not by
    /// their times); ``since``, ``until`` and ``where`` as in ``search`` keep only the items
    /// that pass.
    #[pyo3(
        signature = (n, *, since = None, until = None, r#where = None),
        text_signature = "($self, n, *, since=None, until=None, where=None)"
    )]
    fn recent(
        &self,
        py: Python<'_>,
        n: Count,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Item>> {
        let n = n.positive("n")?;
        let filter = convert::filter(since, until, r#where, false)?;
        let items = gil::run(py, "Engine.recent", || self.core.recent(n, &filter)).raise()?;
        Ok(items.into_iter().map(Item).collect())
    }

    /// How many items held pass ``since``, ``until`` and ``where`` (all of them: ``len``).
    #[pyo3(
        signature = (*, since = None, until = None, r#where = None),
        text_signature = "($self, *, since=None, until=None, where=None)"
    )]
    fn count(
        &self,
        py: Python<'_>,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let filter = convert::filter(since, until, r#where, false)?;
        gil::run(py, "Engine.count", || self.core.count(&filter)).raise()
    }

    /// Writes the engine to ``path``: every held item (vector, text, metadata, timestamp, id),
    /// the ring's shape, the model's identity and whether BM25 is on. Taken consistently while
    /// other threads ingest (whole batches only); written atomically (temporary file, fsync,
    /// rename) with a checksum. Standing queries and semantic-id hooks are not saved.
    /// Concurrent saves to one path each write a temporary file of their own; the last to
    /// finish wins and the file is always whole. A symbolic link is written through; a path
    /// that is a directory or a device is refused with ``StorageError``.
    fn save(&self, py: Python<'_>, path: FsPath) -> PyResult<()> {
        gil::run(py, "Engine.save", || self.core.save(&path)).raise()
    }

    /// An engine restored from ``save``: the same items in the same slots, so exact searches
    /// return exactly what they did (an ``index="ivf"`` engine's lists are trained again on
    /// them, and its approximate answers may differ). ``model`` as in ``Engine(model)``
    /// (default: when the snapshot was made with a model, the default model with the
    /// ``max_length``, ``pooling`` and ``normalize`` the snapshot recorded); a different model
    /// (dimension or identity) raises. The BM25 index, when it was on, is rebuilt from the
    /// items' texts. A truncated or modified file raises ``IndexCorruptError``.
    #[staticmethod]
    #[pyo3(signature = (path, model = None))]
    fn load(py: Python<'_>, path: FsPath, model: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let bytes =
            gil::run(py, "Engine.load", || imesde_format::read_file(&path))?.map_err(|source| {
                CoreError::from(imesde_engine::EngineError::Io {
                    path: path.clone(),
                    source,
                })
            })?;
        Self::restore(py, &bytes, model)
    }

    /// The engine as the bytes ``save`` writes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let data = gil::run(py, "Engine.to_bytes", || self.core.snapshot()).raise()?;
        Ok(PyBytes::new(py, &data))
    }

    /// An engine from ``to_bytes`` (or a saved file's) bytes, checked as ``load`` checks a
    /// file; ``model`` as in ``load``.
    #[staticmethod]
    #[pyo3(signature = (data, model = None))]
    fn from_bytes(
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        model: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let data = convert::byte_data(data)?;
        Self::restore(py, &data, model)
    }

    /// Pickles as ``to_bytes`` and its model (a ``TextEmbedder`` pickles as its files and
    /// options): standing queries and semantic-id hooks are not pickled, as they are not
    /// saved.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let data = slf.get().to_bytes(py)?;
        let model = slf.get().model(py).map(|m| m.into_bound(py).into_any());
        reduce_to_bytes(
            slf.as_any(),
            data.as_bytes(),
            Some(model.unwrap_or_else(|| py.None().into_bound(py))),
        )
    }

    /// Deletes items by id (one int, or a list or array of them), or those that pass
    /// ``since``, ``until`` and ``where`` (as in ``search``; with ``ids``, the ones of them
    /// that pass), as chromadb's ``delete(ids=..., where=...)``. Searches of every kind,
    /// ``get``, ``recent``, snapshots and the BM25 index no longer see them; standing queries
    /// are not told. Ids not held (never ingested, overwritten or already deleted) are
    /// skipped. Returns how many items were deleted. Neither ids nor a filter (or a filter
    /// that keeps everything, ``where={}``) deletes nothing and raises.
    #[pyo3(
        signature = (ids = None, *, since = None, until = None, r#where = None),
        text_signature = "($self, ids=None, *, since=None, until=None, where=None)"
    )]
    fn delete(
        &self,
        py: Python<'_>,
        ids: Option<&Bound<'_, PyAny>>,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let ids = match ids.filter(|ids| !ids.is_none()) {
            Some(ids) => Some(one_or_more_ids(ids)?),
            None => None,
        };
        // `where={}` keeps every item, as does `{"$and": [{}]}`: no filter here
        // (`Filter::is_empty`), so never "delete everything".
        let filter = convert::filter(since, until, r#where, false)?;
        let deleted = match ids {
            Some(ids) if filter.is_empty() => {
                gil::run(py, "Engine.delete", || self.core.delete(&ids))?
            }
            None if filter.is_empty() => {
                return Err(py_err!(
                    InvalidValue,
                    "delete needs ids or a filter (where, since, until); an empty one would \
                     delete every item"
                ));
            }
            ids => gil::run(py, "Engine.delete", || {
                self.core.delete_passing(ids.as_deref(), &filter)
            })
            .raise()?,
        };
        Ok(deleted.len())
    }

    /// Changes the metadata of the items ``ids`` (one id, or a list or array of them), or of
    /// those that pass ``since``, ``until`` and ``where`` (of ``ids`` when given), in place,
    /// as chromadb's ``update(ids, metadatas=...)`` or qdrant's ``set_payload``: each keeps
    /// its id, vector, text, timestamp and place in the window, and filters see the new
    /// metadata from the next search on (standing queries are not told, as for ``delete``).
    /// ``metadata``: one dict for every item, or one dict (or None) per id. With ``merge``
    /// (the default) a dict's keys are set and the others kept, and a key given None is
    /// removed; with ``merge=False`` the dict replaces the metadata (None or ``{}``: none).
    /// Ids not held (or not passing) are skipped; returns how many items were updated (an id
    /// given twice is one item, updated twice in turn, each time only if it still passes the
    /// filter). Bad metadata raises before any item changes; neither ids nor a filter (nor
    /// one that keeps every item as written: ``where={}``, ``{"$and": [{}]}``) raises.
    #[pyo3(
        signature = (ids = None, metadata = None, *, merge = Flag(true), since = None,
                     until = None, r#where = None),
        text_signature = "($self, ids=None, metadata=None, *, merge=True, since=None, until=None, where=None)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn update_metadata(
        &self,
        py: Python<'_>,
        ids: Option<&Bound<'_, PyAny>>,
        metadata: Option<&Bound<'_, PyAny>>,
        merge: Flag,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let Some(metadata) = metadata.filter(|m| !m.is_none()) else {
            return Err(py_err!(
                DType,
                "update_metadata needs metadata: a dict (or one per id)"
            ));
        };
        let ids = ids
            .filter(|ids| !ids.is_none())
            .map(one_or_more_ids)
            .transpose()?;
        let filter = convert::filter(since, until, r#where, false)?;
        let updates = convert::metadata_updates(metadata, ids.as_ref().map(Vec::len), merge.0)?;
        let updated = match &ids {
            Some(ids) => {
                let update = |i: usize| &updates[if updates.len() == 1 { 0 } else { i }];
                gil::run(py, "Engine.update_metadata", || {
                    self.core.update_metadata(ids, &filter, update)
                })
            }
            None if filter.is_empty() => {
                return Err(py_err!(
                    InvalidValue,
                    "update_metadata needs ids or a filter (where, since, until); an empty one \
                     would change every item"
                ));
            }
            None => gil::run(py, "Engine.update_metadata", || {
                self.core.update_metadata_passing(&filter, &updates[0])
            }),
        }
        .raise()?;
        Ok(updated.len())
    }

    /// Replaces the item ``id`` by a new version and returns the new version's id: ``item``
    /// is a text (embedded as ``ingest`` embeds) or a ``[dim]`` float32 vector. ``metadata``
    /// and ``ts`` as in ``ingest``; by default the new version keeps the old item's metadata
    /// (and, for a vector, its text) and is stamped now. The new version is a new item at the
    /// head of the stream (labelled and matched by standing queries as any new item), then
    /// ``id`` is deleted (two writes: a read or snapshot on another thread between them may see
    /// both versions, a search neither); an ``id`` not held just adds the item. A bad item
    /// raises and leaves ``id`` as it was.
    #[pyo3(signature = (id, item, *, metadata = None, ts = None))]
    fn upsert(
        &self,
        py: Python<'_>,
        id: &Bound<'_, PyAny>,
        item: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
        ts: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let id = id_of(id, "id")?;
        let text = if item.is_instance_of::<PyString>() {
            Some(convert::one_str(item, "item")?)
        } else {
            None
        };
        // What is not given, the new version keeps from the old one (the engine's rule).
        let attrs = one_item(text.clone(), metadata, ts)?;
        let vector = if let Some(t) = text {
            self.embed_documents(py, &[t])?
        } else {
            let q = convert::rows(item, "item")?;
            if q.rows != 1 {
                return Err(py_err!(
                    Shape,
                    "item must be one text or one vector, got {} rows",
                    q.rows
                ));
            }
            self.check_dim(q.dim, "item")?;
            q.as_slice().to_vec()
        };
        Ok(self.write(py, &vector, attrs, Some(id), None)?.start)
    }

    /// Whether a BM25 index is kept with the ring.
    #[getter]
    fn lexical(&self) -> bool {
        self.core.is_lexical()
    }

    /// The settings of the engine's BM25 index as an empty ``imesde.BM25`` (``k1``, ``b``,
    /// ``method``, ``delta``, ``stemmer``, ``stopwords``; ``Engine(lexical=it)`` makes an
    /// index like it); None without one. A loaded engine reports what its snapshot kept.
    #[getter]
    fn lexical_settings(&self) -> PyResult<Option<PyBm25>> {
        self.core
            .lexical_config()
            .map(|c| PyBm25::from_config(&c))
            .transpose()
    }

    /// Embeds and adds one text; returns its id. ``ts`` is seconds or a datetime (default
    /// now); ``metadata`` a dict (str keys; str, int, float, bool or list values).
    #[pyo3(signature = (text, *, metadata = None, ts = None))]
    fn ingest(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
        ts: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let text = convert::one_str(text, "text")?;
        let attrs = one_item(Some(text.clone()), metadata, ts)?;
        let vectors = self.embed_documents(py, &[text])?;
        Ok(self.write(py, &vectors, attrs, None, None)?.start)
    }

    /// Embeds and adds texts; returns their ids as an int64 array. ``timestamps`` and
    /// ``metadata`` as in ``ingest_vectors``. A list is one batch: a bad one (or Ctrl-C while
    /// embedding) raises and adds nothing. A generator (or any iterable without a length), or
    /// any input with ``batch_size``, is read ``batch_size`` texts at a time (default 1024),
    /// each chunk ingested as one batch, so one chunk's texts are held (timestamps and
    /// metadata lists or iterables are read in step; the ids returned, 8 bytes an item, grow
    /// with the input: an endless stream goes to ``imesde.ingest_stream``); a bad chunk raises
    /// with the chunks before it ingested, their ids in the error's ``ingested_ids``.
    /// ``show_progress_bar``: a tqdm bar (None: when stderr is a terminal and there are at
    /// least 10,000 texts or an unknown number).
    #[pyo3(signature = (texts, *, timestamps = None, metadata = None, batch_size = None, show_progress_bar = None))]
    fn ingest_batch<'py>(
        slf: &Bound<'py, Self>,
        texts: &Bound<'py, PyAny>,
        timestamps: Option<&Bound<'py, PyAny>>,
        metadata: Option<&Bound<'py, PyAny>>,
        batch_size: Option<&Bound<'py, PyAny>>,
        show_progress_bar: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let py = slf.py();
        // The texts' (and other columns') iterators are the user's Python code, which may
        // let the GIL go.
        let _passage = gil::Passage::attached(py);
        if convert::in_chunks(texts, batch_size, show_progress_bar)? {
            let done = convert::bulk(py, "ingest_in_chunks")?.call1((
                slf,
                texts,
                timestamps,
                metadata,
                batch_size,
                show_progress_bar,
            ))?;
            return Ok(done.cast_into::<PyArray1<i64>>()?);
        }
        Self::ingest_texts(slf, texts, timestamps, metadata, None)
    }

    /// ``ingest_batch`` of one chunk for ``imesde._bulk``, its ids appended to ``out`` once it
    /// is written: a Ctrl-C raised as it returns, or by a subscription's callback, finds them
    /// there.
    #[pyo3(name = "_ingest_into")]
    fn ingest_into<'py>(
        slf: &Bound<'py, Self>,
        out: &Bound<'py, PyList>,
        texts: &Bound<'py, PyAny>,
        timestamps: Option<&Bound<'py, PyAny>>,
        metadata: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<()> {
        let _passage = gil::Passage::attached(slf.py());
        Self::ingest_texts(slf, texts, timestamps, metadata, Some(out)).map(drop)
    }

    /// The ``k`` stored items most similar in meaning to the text ``query``, best first.
    /// Filters as in ``search_vector``.
    #[pyo3(
        signature = (query, k = Count::from(10), *, since = None, until = None, r#where = None, exact = Flag(false)),
        text_signature = "($self, query, k=10, *, since=None, until=None, where=None, exact=False)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        k: Count,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
        exact: Flag,
    ) -> PyResult<Vec<Hit>> {
        let k = k.positive("k")?;
        let query = convert::one_str(query, "query")?;
        let filter = convert::filter(since, until, r#where, exact.0)?;
        let q = self.embed_queries(py, &[query])?;
        Ok(hits(
            gil::run(py, "Engine.search", || {
                self.core.search_vector(&q, k, &filter)
            })
            .raise()?,
        ))
    }

    /// ``search`` for each text of ``queries`` (embedded in one batch): a list of hit lists.
    #[pyo3(
        signature = (queries, k = Count::from(10), *, since = None, until = None, r#where = None, exact = Flag(false)),
        text_signature = "($self, queries, k=10, *, since=None, until=None, where=None, exact=False)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn search_batch(
        &self,
        py: Python<'_>,
        queries: &Bound<'_, PyAny>,
        k: Count,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
        exact: Flag,
    ) -> PyResult<Vec<Vec<Hit>>> {
        let k = k.positive("k")?;
        let queries = convert::strs(queries, "queries", false)?;
        let filter = convert::filter(since, until, r#where, exact.0)?;
        let found = gil::run_interruptible(py, "Engine.search_batch", |stop| {
            self.core
                .search_texts(&queries, k, &filter, &mut stopped(stop))
        })?;
        Ok(found
            .map_err(CoreError::from)?
            .into_iter()
            .map(hits)
            .collect())
    }

    /// The ``TextEmbedder`` of this engine, or None for a vectors-only engine.
    #[getter]
    fn model(&self, py: Python<'_>) -> Option<Py<TextEmbedder>> {
        self.model.as_ref().map(|m| m.clone_ref(py))
    }

    /// Adds vectors (``[n, dim]`` or ``[dim]`` float32) with optional texts, timestamps
    /// (seconds or datetimes; default now) and metadata (one dict for all, or a list of dicts
    /// or None; str keys, str / int / float / bool or list values). Returns the new ids as an
    /// int64 array. A bad batch raises and adds nothing.
    #[pyo3(signature = (vectors, texts = None, *, timestamps = None, metadata = None))]
    fn ingest_vectors<'py>(
        &self,
        py: Python<'py>,
        vectors: &Bound<'py, PyAny>,
        texts: Option<&Bound<'py, PyAny>>,
        timestamps: Option<&Bound<'py, PyAny>>,
        metadata: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        // The columns' iterators are the user's Python code, which may let the GIL go.
        let _passage = gil::Passage::attached(py);
        let rows = convert::batch_rows(vectors, "vectors")?;
        let attrs = Attributes {
            texts: texts
                .map(|t| convert::texts(t, "texts", rows.rows))
                .transpose()?
                .unwrap_or_default(),
            timestamps: timestamps
                .map(|t| convert::timestamps(t, rows.rows))
                .transpose()?
                .unwrap_or_default(),
            metadata: metadata
                .map(|m| convert::metadata(m, rows.rows))
                .transpose()?
                .unwrap_or_default(),
        };
        self.check_dim(rows.dim, "vectors")?;
        if rows.rows == 0 {
            // An empty micro-batch adds nothing, as `ingest_batch([])` and faiss' `add` (its
            // columns are checked all the same).
            Ok(attrs.check(0)).raise()?;
            return Ok(id_array(py, 0..0));
        }
        Ok(id_array(
            py,
            self.write(py, rows.as_slice(), attrs, None, None)?,
        ))
    }

    /// The ``k`` stored items most similar to ``query`` (a ``[dim]`` float32 array), best
    /// first. ``since`` / ``until`` (seconds or datetimes) keep ``since <= ts < until``;
    /// ``where`` keeps items whose metadata passes it (``{"key": value}``, ``$gt``, ``$in``,
    /// ``$and``, ...: see README, Filters). ``exact=True`` scans every item with the exact
    /// kernels even where the engine has a faster approximate one (``storage="binary"``,
    /// ``index="ivf"``).
    #[pyo3(
        signature = (query, k = Count::from(10), *, since = None, until = None, r#where = None, exact = Flag(false)),
        text_signature = "($self, query, k=10, *, since=None, until=None, where=None, exact=False)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn search_vector(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        k: Count,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
        exact: Flag,
    ) -> PyResult<Vec<Hit>> {
        let k = k.positive("k")?;
        let q = self.one_vector(query, "query")?;
        let filter = convert::filter(since, until, r#where, exact.0)?;
        let q = q.as_slice();
        Ok(hits(
            gil::run(py, "Engine.search", || {
                self.core.search_vector(q, k, &filter)
            })
            .raise()?,
        ))
    }

    /// Top-``k`` for a batch of queries (``[nq, dim]`` float32), like faiss' ``index.search``:
    /// returns ``(scores, ids)``, float32 and int64 arrays of shape ``[nq, min(k,
    /// len(engine))]``, best first (no queries, ``[0, dim]``: no rows). ``since``, ``until`` and
    /// ``where`` as in ``search`` (fewer matching items: fewer columns). A row with fewer hits
    /// than another is padded with id ``-1`` (as faiss pads) and score ``-inf``; with an
    /// index, a query whose probed lists hold fewer passing items than it rescores
    /// (``k_factor * max(k, 10)``) is answered by a scan of every item, as without the index.
    #[pyo3(
        signature = (queries, k = Count::from(10), *, since = None, until = None, r#where = None, exact = Flag(false)),
        text_signature = "($self, queries, k=10, *, since=None, until=None, where=None, exact=False)"
    )]
    #[allow(clippy::type_complexity)]
    #[allow(clippy::too_many_arguments)]
    fn search_vectors<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        k: Count,
        since: Option<&Bound<'py, PyAny>>,
        until: Option<&Bound<'py, PyAny>>,
        r#where: Option<&Bound<'py, PyAny>>,
        exact: Flag,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<i64>>)> {
        let k = k.positive("k")?;
        let filter = convert::filter(since, until, r#where, exact.0)?;
        let q = convert::batch_rows(queries, "queries")?;
        self.check_dim(q.dim, "queries")?;
        let data = q.as_slice();
        let res = gil::run(py, "Engine.search_vectors", || {
            self.core.search_vectors(data, k, &filter)
        })
        .raise()?;
        let shape = [res.nq, res.k];
        let ids: Vec<i64> = res.ids.into_iter().map(|i| i as i64).collect();
        Ok((
            res.scores.into_pyarray(py).reshape(shape)?,
            ids.into_pyarray(py).reshape(shape)?,
        ))
    }

    /// The item with this id; raises ``ItemNotFoundError`` (a ``KeyError``) if it was never
    /// ingested, has been overwritten or was deleted.
    fn get(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<Item> {
        let found = match convert::lookup_id(id, "id")? {
            Some(id) => gil::run(py, "Engine.get", || self.core.get(id))?,
            None => None,
        };
        found.map(Item).ok_or_else(|| {
            py_err!(
                NotFound,
                "no item with id {} (held: {} items)",
                id.repr().map_or_else(|_| "?".into(), |r| r.to_string()),
                self.core.ring().len()
            )
        })
    }

    /// The items with these ids (a list, or an integer array such as a row of
    /// ``search_vectors``' ids), in order: None for an id not held (never ingested,
    /// overwritten, deleted, or no id at all, as the ``-1`` padding). Items read in one call,
    /// as ``faiss``' ``reconstruct_batch`` or chromadb's ``get(ids=...)``.
    fn get_batch(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<Vec<Option<Item>>> {
        let ids = convert::lookup_ids_of(ids)?;
        let found = gil::run(py, "Engine.get_batch", || {
            ids.iter()
                .map(|id| id.and_then(|id| self.core.get(id)))
                .collect::<Vec<_>>()
        })?;
        Ok(found.into_iter().map(|item| item.map(Item)).collect())
    }

    fn __len__(&self) -> usize {
        self.core.ring().len()
    }

    /// Whether an item with this id is held (``id in engine``); anything that is not a valid
    /// id is not.
    fn __contains__(&self, id: &Bound<'_, PyAny>) -> bool {
        id_of(id, "id").is_ok_and(|id| self.core.ring().contains(id))
    }

    /// Number of slots: the most items the engine holds.
    #[getter]
    fn capacity(&self) -> usize {
        self.core.ring().capacity()
    }

    /// Dimension of the stored vectors.
    #[getter]
    fn dim(&self) -> usize {
        self.config().dim
    }

    /// Number of shards.
    #[getter]
    fn num_shards(&self) -> usize {
        self.config().num_shards
    }

    /// Slots per shard.
    #[getter]
    fn shard_size(&self) -> usize {
        self.config().shard_size
    }

    /// ``"f32"``, ``"int8"`` or ``"binary"``.
    #[getter]
    fn storage(&self) -> &'static str {
        self.config().storage.name()
    }

    /// Lists of the index (``index="ivf"``); None without one.
    #[getter]
    fn nlist(&self) -> Option<usize> {
        self.core.ring().index().map(|c| c.nlist)
    }

    /// Lists of the index scanned per query; None without an index. Set it at any time to
    /// trade speed for recall, as faiss' ``index.nprobe = n`` (``1 <= nprobe <= nlist``; the
    /// lists are kept, snapshots and pickles keep the number).
    #[getter]
    fn nprobe(&self) -> Option<usize> {
        self.core.ring().index().map(|c| c.nprobe)
    }

    #[setter]
    fn set_nprobe(&self, py: Python<'_>, nprobe: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = positive_value(nprobe, "nprobe")?;
        gil::run(py, "Engine.nprobe", || self.core.ring().set_nprobe(n)).raise()
    }

    /// Candidates per hit that a ranking by sign bits keeps to rescore (``storage="binary"``
    /// and the index): ``k_factor * max(k, 10)``, by default 20 (200 for 10 hits). Set it at
    /// any time, as faiss' ``IndexRefine.k_factor``: more candidates rescored, a higher
    /// recall for a slower search (snapshots and pickles keep it). An engine that ranks no
    /// sign bits (f32 or int8 storage without an index) refuses it.
    #[getter]
    fn k_factor(&self) -> usize {
        self.core.ring().k_factor()
    }

    #[setter]
    fn set_k_factor(&self, k_factor: &Bound<'_, PyAny>) -> PyResult<()> {
        let f = positive_value(k_factor, "k_factor")?;
        let ring = self.core.ring();
        if ring.config().storage != Storage::Binary && ring.index().is_none() {
            return Err(py_err!(
                InvalidValue,
                "k_factor applies to candidates ranked by sign bits, and this engine ranks none: \
                 storage=\"binary\" or index=\"ivf\" does"
            ));
        }
        ring.set_k_factor(f).map_err(|e| CoreError::from(e).into())
    }

    /// Trains the index (``Engine(..., index="ivf")``) on the items held now and waits for
    /// it (when a training is running, waits for that one first, and trains again only if
    /// items arrived since it began); returns whether the index is trained. With fewer than
    /// ``nlist`` items held it trains nothing. Without it the engine trains on a thread of its
    /// own once it holds ``max(16 * nlist, 1024)`` items (or is full; again then if an earlier
    /// training had fewer) and each time the window has turned over; searches scan every item
    /// until the first training ends.
    fn train_index(&self, py: Python<'_>) -> PyResult<bool> {
        gil::run(py, "Engine.train_index", || self.core.train_index())
    }

    /// Counters and sizes: ``len``, ``capacity``, ``dim``, ``num_shards``, ``shard_size``,
    /// ``storage``, ``ingested``, ``evicted``, ``deleted`` (read while no write runs, so that
    /// ``evicted`` only grows), ``searches`` (queries answered, a lexical or hybrid one too; a
    /// hybrid one read again under concurrent writes, per try; the scan that calibrates a
    /// percentile threshold), ``memory_bytes`` (fixed at construction), ``payload_bytes``
    /// (texts and metadata, each item's in full: metadata shared by a batch counted per item),
    /// ``lexical_bytes`` (the BM25 index, None without one), ``simd``; ``index`` (``"ivf"`` or
    /// None), ``nlist``, ``nprobe``, ``index_trained``, ``index_bytes`` (held by the index now);
    /// ``total_bytes``: the four byte counts together (the model and its cache not counted).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let ring = self.core.ring();
        let (s, lexical_bytes) = gil::run(py, "Engine.stats", || {
            (ring.stats(), self.core.lexical_bytes())
        })?;
        let cfg = ring.config();
        let d = PyDict::new(py);
        d.set_item("len", s.len)?;
        d.set_item("capacity", ring.capacity())?;
        d.set_item("dim", cfg.dim)?;
        d.set_item("num_shards", cfg.num_shards)?;
        d.set_item("shard_size", cfg.shard_size)?;
        d.set_item("storage", cfg.storage.name())?;
        d.set_item("ingested", s.ingested)?;
        d.set_item("evicted", s.evicted)?;
        d.set_item("deleted", s.deleted)?;
        d.set_item("searches", s.searches)?;
        d.set_item("memory_bytes", s.fixed_bytes)?;
        d.set_item("payload_bytes", s.payload_bytes)?;
        d.set_item("lexical_bytes", lexical_bytes)?;
        d.set_item("simd", s.backend)?;
        let index = ring.index();
        d.set_item("index", index.map(|_| "ivf"))?;
        d.set_item("nlist", index.map(|c| c.nlist))?;
        d.set_item("nprobe", index.map(|c| c.nprobe))?;
        d.set_item("index_trained", ring.index_trained())?;
        d.set_item("index_bytes", s.index_bytes)?;
        let total = s.fixed_bytes + s.payload_bytes + lexical_bytes.unwrap_or(0) + s.index_bytes;
        d.set_item("total_bytes", total)?;
        Ok(d)
    }

    // A callback or semantic-id function that refers to its engine (a closure, a bound method
    // of an object holding it) is a cycle that only the garbage collector can free.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.model)?;
        if let Some(f) = self.semantic_ids.try_lock() {
            visit.call(f.as_ref())?;
        }
        if let Some(subs) = self.subs.try_lock() {
            for s in subs.iter() {
                visit.call(s)?;
            }
        }
        Ok(())
    }
    fn __clear__(&self) {
        if let Some(mut f) = self.semantic_ids.try_lock() {
            f.take();
        }
        let subs = self.subs.try_lock().map(|mut s| std::mem::take(&mut *s));
        Python::attach(|py| {
            for s in subs.into_iter().flatten() {
                s.get().shut(py);
            }
        });
    }
    fn __repr__(&self) -> String {
        let c = self.config();
        // What tells two engines of one shape apart: an index, a BM25 index.
        let index = if self.core.ring().index().is_some() {
            ", index='ivf'"
        } else {
            ""
        };
        let lexical = if self.core.is_lexical() {
            ", lexical=True"
        } else {
            ""
        };
        format!(
            "Engine(dim={}, num_shards={}, shard_size={}, storage='{}'{index}{lexical}, len={})",
            c.dim,
            c.num_shards,
            c.shard_size,
            c.storage.name(),
            self.core.ring().len()
        )
    }
}

/// The attributes of one item: its text, and the ``metadata`` and ``ts`` given (if any).
fn one_item(
    text: Option<Arc<str>>,
    metadata: Option<&Bound<'_, PyAny>>,
    ts: Option<&Bound<'_, PyAny>>,
) -> PyResult<Attributes> {
    let metadata = metadata.map(|m| convert::meta_map(m, "metadata"));
    let ts = ts.map(|t| convert::timestamp(t, "ts")).transpose()?;
    if let Some(t) = ts {
        // Named as the argument it is, not as `timestamps[0]` of the batch it becomes.
        check_timestamp(t, || "ts".to_owned()).map_err(CoreError::from)?;
    }
    Ok(Attributes {
        texts: text.into_iter().map(Some).collect(),
        timestamps: ts.into_iter().collect(),
        metadata: metadata.transpose()?.into_iter().map(Some).collect(),
    })
}

/// Ids as ``delete`` and ``update_metadata`` take them: one id (an int, a numpy integer or a
/// 0-d array of one, none of which iterates), or a list or array of them.
fn one_or_more_ids(ids: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    if ids.try_iter().is_err() && ids.hasattr(pyo3::intern!(ids.py(), "__index__"))? {
        return Ok(vec![id_of(ids, "id")?]);
    }
    convert::ids_of(ids)
}

/// A threshold argument: a number (a cosine score) or ``"pNN"`` (a percentile).
fn threshold_of(t: &Bound<'_, PyAny>) -> PyResult<Threshold> {
    if let Ok(spec) = t.cast::<PyString>() {
        let spec = convert::utf8(spec, "threshold")?;
        return Ok(spec.parse::<Threshold>().map_err(CoreError::from)?);
    }
    if t.is_instance_of::<PyBool>() {
        return Err(py_err!(
            DType,
            "threshold must be a number or a string like \"p99\", got bool"
        ));
    }
    let score = t
        .extract::<Real>()
        .map_err(|_| py_err!(DType, "threshold must be a number or a string like \"p99\""))?
        .finite_f32("threshold")?;
    if score > 1.0 {
        return Err(py_err!(
            OutOfRange,
            "threshold {score} is above 1, the highest cosine score: it would never fire"
        ));
    }
    Ok(Threshold::Score(score))
}

/// The engine's dimension and model from ``Engine``'s first argument: an int (a dimension,
/// no model), a ``TextEmbedder``, a path (a model directory or file), or None (the default
/// model).
fn model_or_dim(
    py: Python<'_>,
    model: Option<&Bound<'_, PyAny>>,
) -> PyResult<(usize, Option<Py<TextEmbedder>>)> {
    let embedder = match model {
        // An int, numpy's too (anything with `__index__`), but not a bool.
        Some(m)
            if !m.is_instance_of::<PyBool>()
                && (m.is_instance_of::<PyInt>()
                    || m.get_type().hasattr(pyo3::intern!(py, "__index__"))?) =>
        {
            let dim = m.extract::<Count>()?.positive("dim")?;
            if u32::try_from(dim).is_err() {
                return Err(py_err!(
                    OutOfRange,
                    "dim must be at most 2**32 - 1, got {m}"
                ));
            }
            return Ok((dim, None));
        }
        Some(m) if m.is_instance_of::<TextEmbedder>() => m.cast::<TextEmbedder>()?.clone().unbind(),
        Some(m)
            if m.is_instance_of::<PyString>() || m.hasattr(pyo3::intern!(py, "__fspath__"))? =>
        {
            default_embedder(py, Some(m))?
        }
        Some(m) => {
            return Err(py_err!(
                DType,
                "model must be a TextEmbedder, a model directory, a dimension (int) or None, got {}",
                m.get_type().name()?
            ));
        }
        None => default_embedder(py, None)?,
    };
    let dim = embedder.get().inner().dim();
    Ok((dim, Some(embedder)))
}

/// ``TextEmbedder(model_path)``, every option at the defaults of its signature.
fn default_embedder(
    py: Python<'_>,
    model_path: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<TextEmbedder>> {
    let embedder = py.get_type::<TextEmbedder>().call1((model_path,))?;
    Ok(embedder.cast_into::<TextEmbedder>()?.unbind())
}

/// The default model with the settings a snapshot's model `identity` records (``max_length``,
/// ``pooling``, ``normalize``), as unpickling makes a pickled engine's embedder again; the
/// default model as it comes where those cannot be applied to it (loading then names the
/// model the snapshot wants).
fn recorded_embedder(py: Python<'_>, identity: &str) -> PyResult<Py<TextEmbedder>> {
    let recorded = imesde_engine::RecordedSettings::of(identity);
    let kwargs = PyDict::new(py);
    if let Some(pooling) = recorded.pooling {
        kwargs.set_item("pooling", pooling)?;
    }
    if let Some(normalize) = recorded.normalize {
        kwargs.set_item("normalize", normalize)?;
    }
    if let Some(max_length) = recorded.max_length {
        kwargs.set_item("max_length", max_length)?;
    }
    match py
        .get_type::<TextEmbedder>()
        .call((py.None(),), Some(&kwargs))
    {
        Ok(embedder) => Ok(embedder.cast_into::<TextEmbedder>()?.unbind()),
        Err(_) => default_embedder(py, None),
    }
}

impl Engine {
    /// An engine from snapshot bytes: a vectors-only snapshot loads without a model unless
    /// one is given; a dimension given for one made with a model loads it for vectors only.
    fn restore(py: Python<'_>, bytes: &[u8], model: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let model = model.filter(|m| !m.is_none());
        let recorded = gil::run(py, "Engine.load", || {
            imesde_engine::Engine::snapshot_model(bytes)
        })
        .raise()?;
        let (dim, model) = match (model, recorded) {
            (None, None) => (None, None),
            (None, Some(identity)) => {
                let m = recorded_embedder(py, &identity)?;
                (Some(m.get().inner().dim()), Some(m))
            }
            (Some(m), _) => {
                let (dim, m) = model_or_dim(py, Some(m))?;
                (Some(dim), m)
            }
        };
        let text_model = model.as_ref().map(|m| Arc::clone(&m.get().model));
        let core = gil::run(py, "Engine.load", || {
            install(|| imesde_engine::Engine::from_snapshot(bytes, text_model))
        })
        .raise()?;
        let held = core.ring().config().dim;
        if let Some(dim) = dim
            && dim != held
        {
            return Err(
                CoreError::from(imesde_engine::EngineError::DimensionMismatch {
                    engine: held,
                    model: dim,
                })
                .into(),
            );
        }
        Ok(Engine::around(core, model))
    }
}

/// The Rust labeler of a semantic-id function (``_native_labeler()``), if it has one (as
/// ``Labels::Native``); raises what that raises (a model not fitted yet).
fn native_labeler(assign: &Bound<'_, PyAny>) -> PyResult<Labels> {
    let native = pyo3::intern!(assign.py(), "_native_labeler");
    if assign.hasattr(native)?
        && let Ok(l) = assign.call_method0(native)?.cast::<Labeler>()
    {
        return Ok(Labels::Native(Arc::clone(&l.get().0)));
    }
    Ok(Labels::None)
}

/// What labels a batch: a labeler that runs in Rust, or ids a Python function returned.
enum Labels {
    None,
    Native(Arc<dyn imesde_engine::Labeler>),
    Given(Vec<String>),
}

impl Drop for Engine {
    /// Its standing queries end with it: an iterator over one stops once its queue is read,
    /// instead of waiting for events that can no longer come.
    fn drop(&mut self) {
        let subs = std::mem::take(self.subs.get_mut());
        if !subs.is_empty() {
            Python::attach(|py| {
                for s in subs {
                    s.get().shut(py);
                }
            });
        }
    }
}

/// Takes the entries `pick` selects out of `items`, keeping the others in order.
fn take_where<T>(items: &mut Vec<T>, mut pick: impl FnMut(&T) -> bool) -> Vec<T> {
    let (taken, kept) = std::mem::take(items).into_iter().partition(|x| pick(x));
    *items = kept;
    taken
}

impl Engine {
    /// Embeds and writes the texts of one batch (``ingest_batch`` without chunks); see
    /// [`Engine::write`] for `stored`.
    fn ingest_texts<'py>(
        slf: &Bound<'py, Self>,
        texts: &Bound<'py, PyAny>,
        timestamps: Option<&Bound<'py, PyAny>>,
        metadata: Option<&Bound<'py, PyAny>>,
        stored: Option<&Bound<'py, PyList>>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let py = slf.py();
        let this = slf.get();
        let texts = convert::strs(texts, "texts", false)?;
        let n = texts.len();
        let attrs = Attributes {
            texts: texts.iter().cloned().map(Some).collect(),
            timestamps: timestamps
                .map(|t| convert::timestamps(t, n))
                .transpose()?
                .unwrap_or_default(),
            metadata: metadata
                .map(|m| convert::metadata(m, n))
                .transpose()?
                .unwrap_or_default(),
        };
        // Checked before the expensive part; the ring checks again when it writes.
        attrs.check(n).map_err(CoreError::from)?;
        if n == 0 {
            return Ok(id_array(py, 0..0));
        }
        let vectors = this.embed_documents(py, &texts)?;
        Ok(id_array(py, this.write(py, &vectors, attrs, None, stored)?))
    }

    /// Changes the subscription list under its lock; what `f` returns (subscriptions taken
    /// out) is dropped by the caller after the lock is released, since freeing one may run
    /// Python code that calls this engine.
    fn update_subs<R>(&self, f: impl FnOnce(&mut Vec<Py<Subscription>>) -> R) -> R {
        f(&mut self.subs.lock())
    }

    fn around(core: imesde_engine::Engine, model: Option<Py<TextEmbedder>>) -> Self {
        Engine {
            core,
            model,
            semantic_ids: Mutex::new(None),
            subs: Mutex::new(Vec::new()),
        }
    }

    /// `obj` as one vector of the engine's dimension (named `what` in errors).
    fn one_vector<'py>(
        &self,
        obj: &Bound<'py, PyAny>,
        what: &'static str,
    ) -> PyResult<convert::Rows<'py>> {
        let q = convert::rows(obj, what)?;
        if q.rows != 1 {
            return Err(py_err!(
                Shape,
                "{what} must be one vector, got {} rows; use search_vectors for a batch",
                q.rows
            ));
        }
        self.check_dim(q.dim, what)?;
        Ok(q)
    }

    fn config(&self) -> RingConfig {
        self.core.ring().config()
    }

    /// Stores a batch without the GIL (labelled, matched against the standing queries,
    /// indexed by BM25 when on), then hands its events to the subscriptions; with `stored`,
    /// the batch's ids are appended to it in between (a callback's exception leaves them).
    fn write(
        &self,
        py: Python<'_>,
        vectors: &[f32],
        attrs: Attributes,
        replacing: Option<u64>,
        stored: Option<&Bound<'_, PyList>>,
    ) -> PyResult<std::ops::Range<u64>> {
        // A new version keeps what it does not set before a Python labeller's label joins it.
        let attrs = match replacing {
            Some(id) => self.core.carry_over(id, attrs),
            None => attrs,
        };
        let labels = self.labels(py, vectors, &attrs)?;
        let Ingested { ids, events } = gil::run(py, "Engine.ingest", || {
            let (attrs, labeler) = match labels {
                Labels::None => (attrs, None),
                Labels::Native(l) => (attrs, Some(l)),
                Labels::Given(ids) => (imesde_engine::with_labels(attrs, ids), None),
            };
            let labeler = labeler.as_deref();
            install(|| match replacing {
                Some(id) => self.core.replace(id, vectors, attrs, labeler),
                None => self.core.ingest_labelled(vectors, attrs, labeler),
            })
        })
        .raise()?;
        if let Some(stored) = stored {
            // The ids of a batch stored, before a callback can raise.
            stored.append(id_array(py, ids.clone()))?;
        }
        if !events.is_empty() {
            // Delivered with no engine lock held: a callback may search or ingest. The batch
            // is stored whole by now, so Ctrl-C in a callback or an `async for` wake-up
            // (returned by `deliver`) reaches the caller with nothing half-written; after it the
            // queues still get their events and the callbacks' are dropped.
            let subs: HashMap<u64, Py<Subscription>> = self
                .subs
                .lock()
                .iter()
                .map(|s| (s.get().id, s.clone_ref(py)))
                .collect();
            let mut stopped = None;
            for e in events {
                // Unsubscribed since the batch was matched.
                let Some(sub) = subs.get(&e.subscription) else {
                    continue;
                };
                if stopped.is_some() && sub.get().has_callback() {
                    sub.get().skip();
                } else if let Err(err) = Subscription::deliver(sub.bind(py), e.hit) {
                    stopped = Some(err);
                }
            }
            if let Some(err) = stopped {
                return Err(err);
            }
        }
        Ok(ids)
    }

    /// The batch's semantic ids, if a function is attached: its Rust labeler when it has one
    /// (``_native_labeler()``), else its return value for the vectors as a numpy array.
    fn labels(&self, py: Python<'_>, vectors: &[f32], attrs: &Attributes) -> PyResult<Labels> {
        let Some(assign) = self.semantic_ids.lock().as_ref().map(|f| f.clone_ref(py)) else {
            return Ok(Labels::None);
        };
        let assign = assign.bind(py);
        if let native @ Labels::Native(_) = native_labeler(assign)? {
            return Ok(native);
        }
        let dim = self.config().dim;
        // A batch the engine refuses labels nothing: its ids would be handed out for good.
        let n = self
            .core
            .check_batch(vectors, attrs)
            .map_err(CoreError::from)?;
        let array = vectors.to_vec().into_pyarray(py).reshape([n, dim])?;
        let _passage = gil::Passage::attached(py);
        let ids: Vec<String> = assign
            .call1((array,))?
            .extract()
            .map_err(|_| py_err!(DType, "the semantic id function must return a list of str"))?;
        if ids.len() != n {
            return Err(py_err!(
                Shape,
                "the semantic id function returned {} ids for {n} items",
                ids.len()
            ));
        }
        Ok(Labels::Given(ids))
    }

    /// Queries embedded with the model's query prompt, if it has one.
    fn embed_queries(&self, py: Python<'_>, texts: &[Arc<str>]) -> PyResult<Vec<f32>> {
        gil::run_interruptible(py, "Engine.embed", |stop| {
            self.core.embed_queries(texts, &mut stopped(stop))
        })
        .raise()
    }

    /// Texts to store embedded with the model's document prompt, if it has one.
    fn embed_documents(&self, py: Python<'_>, texts: &[Arc<str>]) -> PyResult<Vec<f32>> {
        gil::run_interruptible(py, "Engine.embed", |stop| {
            self.core.embed_documents(texts, &mut stopped(stop))
        })
        .raise()
    }

    fn check_dim(&self, got: usize, what: &'static str) -> PyResult<()> {
        let expected = self.config().dim;
        if got == expected {
            Ok(())
        } else {
            Err(CoreError::Ring(RingError::Dimension {
                what,
                got,
                expected,
            })
            .into())
        }
    }
}
