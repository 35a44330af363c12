//! `imesde.Engine`, `imesde.Hit`, `imesde.Item`.
// PyO3 extracts arguments as owned values (PathBuf, Text); borrowing them is not an option.
#![allow(clippy::needless_pass_by_value)]

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use imesde_bm25::{AnalyzerConfig, Bm25, Fusion, Params};
use imesde_ring::{
    Attributes, Filter, Metadata, Ring, RingConfig, RingError, StandingSpec, Storage,
};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods};
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyInt, PyString, PyTuple};

use crate::convert::{self, Count, Real, Text, id_of, meta_dict};
use crate::embed::{TextEmbedder, embed_texts};
use crate::error::CoreError;
use crate::exceptions::{Exc, err};
use crate::gil;
use crate::par::install;
use crate::stream::{Subscription, py_str};

/// One search result: ``id``, ``text``, ``score``, ``ts``, ``metadata``.
///
/// Unpacks as ``(text, score)``, so ``for text, score in engine.search_vector(q)`` works.
#[pyclass(frozen, module = "imesde._imesde")]
pub(crate) struct Hit(pub(crate) imesde_ring::Hit);

#[pymethods]
impl Hit {
    /// Global id of the item (its position in the stream).
    #[getter]
    fn id(&self) -> u64 {
        self.0.id
    }
    /// The item's text, or None.
    #[getter]
    fn text(&self) -> Option<&str> {
        self.0.text.as_deref()
    }
    /// Cosine similarity to the query.
    #[getter]
    fn score(&self) -> f32 {
        self.0.score
    }
    /// Timestamp in seconds since the Unix epoch.
    #[getter]
    fn ts(&self) -> f64 {
        self.0.ts
    }
    /// The item's metadata as a new dict, or None.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        meta_dict(py, self.0.metadata.as_deref())
    }
    #[allow(clippy::unused_self)] // a protocol method: always a pair
    fn __len__(&self) -> usize {
        2
    }
    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyAny>> {
        match index {
            0 | -2 => Ok(self.0.text.as_deref().into_pyobject(py)?.into_any()),
            1 | -1 => Ok(self.0.score.into_pyobject(py)?.into_any()),
            _ => Err(pyo3::exceptions::PyIndexError::new_err(
                "Hit unpacks as (text, score)",
            )),
        }
    }
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pair = PyTuple::new(py, [self.__getitem__(py, 0)?, self.__getitem__(py, 1)?])?;
        pair.try_iter().map(Bound::into_any)
    }
    fn __repr__(&self) -> String {
        format!(
            "Hit(id={}, score={:.4}, text={}, ts={})",
            self.0.id,
            self.0.score,
            self.0
                .text
                .as_deref()
                .map_or_else(|| "None".to_owned(), py_str),
            self.0.ts
        )
    }
}

/// An item read back with ``Engine.get``: ``id``, ``vector``, ``text``, ``ts``, ``metadata``.
#[pyclass(frozen, module = "imesde._imesde")]
pub(crate) struct Item(imesde_ring::Item);

#[pymethods]
impl Item {
    /// Global id.
    #[getter]
    fn id(&self) -> u64 {
        self.0.id
    }
    /// A copy of the stored unit-length vector (dequantised for int8 storage).
    #[getter]
    fn vector<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        PyArray1::from_slice(py, &self.0.vector)
    }
    /// The item's text, or None.
    #[getter]
    fn text(&self) -> Option<&str> {
        self.0.text.as_deref()
    }
    /// Timestamp in seconds since the Unix epoch.
    #[getter]
    fn ts(&self) -> f64 {
        self.0.ts
    }
    /// The item's metadata as a new dict, or None.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        meta_dict(py, self.0.metadata.as_deref())
    }
    fn __repr__(&self) -> String {
        format!(
            "Item(id={}, text={}, ts={})",
            self.0.id,
            self.0
                .text
                .as_deref()
                .map_or_else(|| "None".to_owned(), py_str),
            self.0.ts
        )
    }
}

/// An in-memory semantic search engine over a bounded stream of texts or vectors.
///
/// ``Engine()`` embeds text with the default model; ``Engine(model)`` takes a
/// ``TextEmbedder`` or a model directory; ``Engine(384)`` makes a vectors-only engine of that
/// dimension. Holds the newest ``num_shards * shard_size`` items; older ones are overwritten.
/// Vectors are stored L2-normalised, scores are cosine similarities, search is exact.
#[pyclass(frozen, module = "imesde._imesde")]
pub(crate) struct Engine {
    ring: Arc<Ring>,
    model: Option<Py<TextEmbedder>>,
    /// The BM25 index kept in step with the ring, and the ids it holds (to evict in order).
    lexical: Option<Mutex<(Bm25, BTreeSet<u64>)>>,
    /// Called with each ingested batch's vectors; returns one semantic id per item, stored as
    /// the item's ``semantic_id`` metadata.
    semantic_ids: Mutex<Option<Py<PyAny>>>,
    /// Standing queries, in registration order (closed ones are pruned on the next change).
    subs: Mutex<Vec<Py<Subscription>>>,
}

fn storage_of(name: &str) -> PyResult<Storage> {
    match name {
        "f32" | "float32" => Ok(Storage::F32),
        "int8" => Ok(Storage::Int8),
        _ => Err(err(
            Exc::InvalidValue,
            format!("storage must be \"f32\" or \"int8\", got {name:?}"),
        )),
    }
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(
        signature = (model = None, *, num_shards = Count::from(16), shard_size = Count::from(1024), storage = Text("f32".into()), lexical = false),
        text_signature = "(model=None, *, num_shards=16, shard_size=1024, storage='f32', lexical=False)"
    )]
    fn new(
        py: Python<'_>,
        model: Option<&Bound<'_, PyAny>>,
        num_shards: Count,
        shard_size: Count,
        storage: Text,
        lexical: bool,
    ) -> PyResult<Self> {
        let cfg = (
            num_shards.positive("num_shards")?,
            shard_size.positive("shard_size")?,
            storage_of(&storage)?,
        );
        let (dim, model) = model_or_dim(py, model)?;
        let cfg = RingConfig {
            dim,
            num_shards: cfg.0,
            shard_size: cfg.1,
            storage: cfg.2,
        };
        let ring = gil::run(py, "Engine", || Ring::new(cfg))?.map_err(CoreError::from)?;
        Engine::assemble(ring, model, lexical)
    }

    /// The ``k`` items that best match the words of ``query`` (BM25 over the items' texts),
    /// best first; ``score`` is the BM25 score. Needs ``Engine(..., lexical=True)``.
    #[pyo3(signature = (query, k = Count::from(10)), text_signature = "($self, query, k=10)")]
    fn lexical_search(&self, py: Python<'_>, query: Text, k: Count) -> PyResult<Vec<Hit>> {
        let k = self.cap(k.positive("k")?);
        let ranked = self.lexical_ranked(py, &query, k)?;
        self.hits_for(py, &ranked)
    }

    /// Dense and lexical results fused into one ranking: ``method`` as in ``imesde.fuse``
    /// (``"rrf"`` by default). ``alpha`` weights the dense list (and ``1 - alpha`` the lexical
    /// one). ``score`` is the fused score. Needs a model and ``lexical=True``.
    #[pyo3(
        signature = (query, k = Count::from(10), method = Text("rrf".into()), alpha = None),
        text_signature = "($self, query, k=10, method='rrf', alpha=None)"
    )]
    fn hybrid_search(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        k: Count,
        method: Text,
        alpha: Option<Real>,
    ) -> PyResult<Vec<Hit>> {
        let k = self.cap(k.positive("k")?);
        let fusion = method.parse::<Fusion>().map_err(CoreError::from)?;
        let alpha = alpha.map(|a| a.0 as f32);
        if let Some(a) = alpha
            && !(0.0..=1.0).contains(&a)
        {
            return Err(err(
                Exc::InvalidValue,
                format!("alpha must be between 0 and 1, got {a}"),
            ));
        }
        let text = convert::one_str(query, "query")?;
        // Deeper lists than k let fusion promote what only one side ranks well.
        let depth = self.cap(k.saturating_mul(5).max(50));
        let lexical = self.lexical_ranked(py, &text, depth)?;
        let q = self.embed_queries(py, vec![text])?;
        let dense: Vec<(u64, f32)> = self
            .find(py, &q, depth, &Filter::default())?
            .into_iter()
            .map(|h| (h.0.id, h.0.score))
            .collect();
        let weights = alpha.map(|a| [a, 1.0 - a]);
        let fused = imesde_bm25::fuse(
            &[dense, lexical],
            fusion,
            k,
            weights.as_ref().map(|w| &w[..]),
        )
        .map_err(CoreError::from)?;
        self.hits_for(py, &fused)
    }

    /// From now on, every ingested batch's vectors (float32 ``[n, dim]``) are passed to
    /// ``assign`` (e.g. a fitted ``SemanticIdEngine`` or ``RQKMeans``), which returns ``n``
    /// strings; each item stores its string as metadata ``semantic_id`` (searchable with
    /// ``where={"semantic_id": ...}``). If ``assign`` raises, the batch is not ingested.
    /// ``None`` detaches.
    fn attach_semantic_ids(&self, assign: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        if let Some(f) = &assign
            && !f.is_callable()
        {
            return Err(err(
                Exc::DType,
                "assign must be callable (vectors -> list of str), e.g. a SemanticIdEngine",
            ));
        }
        *self.semantic_ids.lock() = assign.map(Bound::unbind);
        Ok(())
    }

    /// Registers a standing query: every item ingested from now on that matches becomes an
    /// event. ``query`` is a text (embedded with the engine's model) or a float32 vector.
    /// ``threshold``: a cosine score, or ``"p99"`` (``"pNN"``) for the score above which 1 %
    /// (100 - NN %) of the items now held fall; ``top_k``: fire for items that enter the k best
    /// seen since subscribing (with a threshold too, both must hold). ``where`` filters on
    /// metadata. With ``callback``, each event is passed to it; otherwise events queue on the
    /// returned ``Subscription`` (at most ``queue_size``).
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
            let v = self.embed_queries(py, vec![text.clone()])?;
            (Some(text.to_string()), v)
        } else {
            let q = convert::rows(query, "query")?;
            if q.rows != 1 {
                return Err(err(Exc::Shape, "query must be one text or one vector"));
            }
            self.check_dim(q.dim, "query")?;
            (None, q.as_slice().to_vec())
        };
        if let Some(cb) = &callback
            && !cb.is_callable()
        {
            return Err(err(Exc::DType, "callback must be callable (event -> None)"));
        }
        let top_k = top_k.map(|k| k.positive("top_k")).transpose()?;
        let capacity = queue_size.positive("queue_size")?;
        let threshold = match threshold {
            None => None,
            Some(t) if t.is_instance_of::<PyString>() => {
                let spec = convert::utf8(t.cast::<PyString>()?, "threshold")?;
                Some(self.calibrate(py, &vector, spec)?)
            }
            Some(t) => Some(
                t.extract::<Real>()
                    .map_err(|_| {
                        err(
                            Exc::DType,
                            "threshold must be a number or a string like \"p99\"",
                        )
                    })?
                    .finite_f32("threshold")?,
            ),
        };
        let filter = convert::filter(None, None, r#where)?;
        let spec = StandingSpec {
            threshold,
            top_k,
            filter,
        };
        let ring = &self.ring;
        let id = gil::run(py, "Engine.subscribe", || ring.subscribe(&vector, spec))?
            .map_err(CoreError::from)?;
        let sub = Py::new(
            py,
            Subscription::new(
                id,
                text,
                threshold,
                top_k,
                callback.map(Bound::unbind),
                Arc::clone(&self.ring),
                capacity,
            ),
        )?;
        let mut subs = self.subs.lock();
        subs.retain(|s| s.get().is_active());
        subs.push(sub.clone_ref(py));
        Ok(sub)
    }

    /// Stops a subscription (a ``Subscription`` or its id); False when it was not active.
    fn unsubscribe(&self, py: Python<'_>, subscription: &Bound<'_, PyAny>) -> PyResult<bool> {
        let id = match subscription.cast::<Subscription>() {
            Ok(s) => s.get().id,
            Err(_) if subscription.is_instance_of::<PyInt>() => {
                match id_of(subscription, "the subscription id") {
                    Ok(id) => id,
                    // No subscription has a negative or huge id.
                    Err(_) => return Ok(false),
                }
            }
            Err(_) => {
                return Err(err(
                    Exc::DType,
                    "unsubscribe takes a Subscription or its id",
                ));
            }
        };
        let found = {
            let mut subs = self.subs.lock();
            let found = subs
                .iter()
                .find(|s| s.get().id == id && s.get().is_active())
                .map(|s| s.clone_ref(py));
            subs.retain(|s| s.get().id != id);
            found
        };
        match found {
            Some(s) => {
                s.get().close();
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

    /// The newest ``n`` items still held, newest first.
    fn recent(&self, py: Python<'_>, n: Count) -> PyResult<Vec<Item>> {
        let n = self.cap(n.positive("n")?);
        let ring = &self.ring;
        Ok(gil::run(py, "Engine.recent", || ring.recent(n))?
            .into_iter()
            .map(Item)
            .collect())
    }

    /// Writes the engine to ``path``: every held item (vector, text, metadata, timestamp, id),
    /// the ring's shape, the model's identity and whether BM25 is on. Taken consistently while
    /// other threads ingest (whole batches only); written atomically (temporary file, fsync,
    /// rename) with a checksum. Standing queries and semantic-id hooks are not saved.
    /// Concurrent saves to one path each write a temporary file of their own; the last to
    /// finish wins and the file is always whole. A symbolic link is written through; a path
    /// that is a directory or a device is refused with ``StorageError``.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let tag = format!(
            "model={}\nlexical={}\n",
            self.model_identity(py)?,
            u8::from(self.lexical.is_some())
        );
        let ring = &self.ring;
        gil::run(py, "Engine.save", || {
            imesde_format::write_atomic(&path, &ring.snapshot(&tag))
        })?
        .map_err(|e| storage_error(&path, &e))
    }

    /// An engine restored from ``save``: the same items in the same slots, so searches
    /// return exactly what they did. ``model`` as in ``Engine(model)`` (default: the default
    /// model when the snapshot was made with one); a different model (dimension or identity)
    /// raises. The BM25 index, when it was on, is rebuilt from the items' texts. A truncated
    /// or modified file raises ``IndexCorruptError``.
    #[staticmethod]
    #[pyo3(signature = (path, model = None))]
    fn load(py: Python<'_>, path: PathBuf, model: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let bytes = gil::run(py, "Engine.load", || imesde_format::read_file(&path))?
            .map_err(|e| storage_error(&path, &e))?;
        let (ring, tag) = gil::run(py, "Engine.load", || Ring::from_snapshot(&bytes))?
            .map_err(CoreError::from)?;
        let field = |key: &str| {
            tag.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
                .unwrap_or("")
                .to_owned()
        };
        let (saved_model, lexical_on) = (field("model"), field("lexical") == "1");
        let dim = ring.config().dim;
        let model = if saved_model.is_empty() && model.is_none() {
            None
        } else {
            let (mdim, m) = model_or_dim(py, model)?;
            if mdim != dim {
                return Err(err(
                    Exc::Dimension,
                    format!("the snapshot holds {dim}-dim vectors, the model makes {mdim}"),
                ));
            }
            if let Some(m) = &m
                && !saved_model.is_empty()
            {
                let have = model_id(py, m.get())?;
                if !same_model(&saved_model, &have) {
                    return Err(err(
                        Exc::InvalidValue,
                        format!(
                            "the snapshot was made with model {saved_model:?}, not {have:?}; \
                             load it with that model"
                        ),
                    ));
                }
            }
            m
        };
        let engine = Engine::assemble(ring, model, lexical_on)?;
        if engine.lexical.is_some() {
            // The BM25 index is rebuilt from the held texts (read without copying vectors): the
            // same documents give the same statistics, so the same scores.
            let ring = &engine.ring;
            gil::run(py, "Engine.load", || {
                let end = ring.next_id();
                let floor = end.saturating_sub(ring.capacity() as u64);
                let texts: Vec<(u64, Arc<str>)> = (floor..end)
                    .filter_map(|id| ring.hit(id, 0.0)?.text.map(|t| (id, t)))
                    .collect();
                engine.follow_ring(texts.iter().map(|(id, t)| (*id, &**t)));
            })?;
        }
        Ok(engine)
    }

    /// Whether a BM25 index is kept with the ring.
    #[getter]
    fn lexical(&self) -> bool {
        self.lexical.is_some()
    }

    /// Embeds and adds one text; returns its id. ``ts`` is seconds or a datetime (default
    /// now); ``metadata`` a ``dict[str, str]``.
    #[pyo3(signature = (text, *, metadata = None, ts = None))]
    fn ingest(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
        ts: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let text = convert::one_str(text, "text")?;
        let attrs = Attributes {
            texts: vec![Some(text.clone())],
            timestamps: ts
                .map(|t| convert::timestamp(t, "ts"))
                .transpose()?
                .into_iter()
                .collect(),
            metadata: metadata
                .map(|m| convert::str_dict(m, "metadata").map(|d| Some(Arc::new(Metadata::new(d)))))
                .transpose()?
                .into_iter()
                .collect(),
        };
        let vectors = self.embed_documents(py, vec![text])?;
        Ok(self.write(py, &vectors, &attrs)?.start)
    }

    /// Embeds and adds a list of texts; returns their ids as a uint64 array. ``timestamps``
    /// and ``metadata`` as in ``ingest_vectors``. A bad batch (or Ctrl-C while embedding)
    /// raises and adds nothing.
    #[pyo3(signature = (texts, *, timestamps = None, metadata = None))]
    fn ingest_batch<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
        timestamps: Option<&Bound<'py, PyAny>>,
        metadata: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let texts = convert::strs(texts, "texts", false)?;
        let n = texts.len();
        let attrs = Attributes {
            texts: texts.iter().cloned().map(Some).collect(),
            timestamps: timestamps
                .map(convert::timestamps)
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
            return Ok(Vec::<u64>::new().into_pyarray(py));
        }
        let vectors = self.embed_documents(py, texts)?;
        let ids = self.write(py, &vectors, &attrs)?;
        Ok(ids.collect::<Vec<u64>>().into_pyarray(py))
    }

    /// The ``k`` stored items most similar in meaning to the text ``query``, best first.
    /// Filters as in ``search_vector``.
    #[pyo3(
        signature = (query, k = Count::from(10), *, since = None, until = None, r#where = None),
        text_signature = "($self, query, k=10, *, since=None, until=None, where=None)"
    )]
    fn search(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        k: Count,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Hit>> {
        let k = k.positive("k")?;
        let query = convert::one_str(query, "query")?;
        let filter = convert::filter(since, until, r#where)?;
        let q = self.embed_queries(py, vec![query])?;
        self.find(py, &q, k, &filter)
    }

    /// ``search`` for each text of ``queries`` (embedded in one batch): a list of hit lists.
    #[pyo3(
        signature = (queries, k = Count::from(10), *, since = None, until = None, r#where = None),
        text_signature = "($self, queries, k=10, *, since=None, until=None, where=None)"
    )]
    fn search_batch(
        &self,
        py: Python<'_>,
        queries: &Bound<'_, PyAny>,
        k: Count,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Vec<Hit>>> {
        let k = k.positive("k")?;
        let queries = convert::strs(queries, "queries", false)?;
        let filter = convert::filter(since, until, r#where)?;
        let q = self.embed_queries(py, queries)?;
        let (ring, dim) = (&self.ring, self.ring.config().dim);
        let hits = gil::run(py, "Engine.search_batch", || {
            q.chunks(dim)
                .map(|row| ring.search(row, k, &filter))
                .collect::<Result<Vec<_>, _>>()
        })?
        .map_err(CoreError::from)?;
        Ok(hits
            .into_iter()
            .map(|h| h.into_iter().map(Hit).collect())
            .collect())
    }

    /// The ``TextEmbedder`` of this engine, or None for a vectors-only engine.
    #[getter]
    fn model(&self, py: Python<'_>) -> Option<Py<TextEmbedder>> {
        self.model.as_ref().map(|m| m.clone_ref(py))
    }

    /// Adds vectors (``[n, dim]`` or ``[dim]`` float32) with optional texts, timestamps
    /// (seconds or datetimes; default now) and metadata (one ``dict[str, str]`` for all, or a
    /// list). Returns the new ids as a uint64 array. A bad batch raises and adds nothing.
    #[pyo3(signature = (vectors, texts = None, *, timestamps = None, metadata = None))]
    fn ingest_vectors<'py>(
        &self,
        py: Python<'py>,
        vectors: &Bound<'py, PyAny>,
        texts: Option<&Bound<'py, PyAny>>,
        timestamps: Option<&Bound<'py, PyAny>>,
        metadata: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let rows = convert::rows(vectors, "vectors")?;
        let attrs = Attributes {
            texts: texts
                .map(|t| convert::texts(t, "texts"))
                .transpose()?
                .unwrap_or_default(),
            timestamps: timestamps
                .map(convert::timestamps)
                .transpose()?
                .unwrap_or_default(),
            metadata: metadata
                .map(|m| convert::metadata(m, rows.rows))
                .transpose()?
                .unwrap_or_default(),
        };
        self.check_dim(rows.dim, "vectors")?;
        let ids = self.write(py, rows.as_slice(), &attrs)?;
        Ok(ids.collect::<Vec<u64>>().into_pyarray(py))
    }

    /// The ``k`` stored items most similar to ``query`` (a ``[dim]`` float32 array), best
    /// first. ``since`` / ``until`` (seconds or datetimes) keep ``since <= ts < until``;
    /// ``where`` keeps items whose metadata has every given ``key: value``.
    #[pyo3(
        signature = (query, k = Count::from(10), *, since = None, until = None, r#where = None),
        text_signature = "($self, query, k=10, *, since=None, until=None, where=None)"
    )]
    fn search_vector(
        &self,
        py: Python<'_>,
        query: &Bound<'_, PyAny>,
        k: Count,
        since: Option<&Bound<'_, PyAny>>,
        until: Option<&Bound<'_, PyAny>>,
        r#where: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Hit>> {
        let k = k.positive("k")?;
        let q = convert::rows(query, "query")?;
        if q.rows != 1 {
            return Err(err(
                Exc::Shape,
                format!(
                    "query must be one vector, got {} rows; use search_vectors for a batch",
                    q.rows
                ),
            ));
        }
        self.check_dim(q.dim, "query")?;
        let filter = convert::filter(since, until, r#where)?;
        self.find(py, q.as_slice(), k, &filter)
    }

    /// Exact top-``k`` for a batch of queries (``[nq, dim]`` float32), like faiss'
    /// ``index.search``: returns ``(scores, ids)``, float32 and int64 arrays of shape
    /// ``[nq, min(k, len(engine))]``, best first.
    #[pyo3(signature = (queries, k = Count::from(10)), text_signature = "($self, queries, k=10)")]
    #[allow(clippy::type_complexity)]
    fn search_vectors<'py>(
        &self,
        py: Python<'py>,
        queries: &Bound<'py, PyAny>,
        k: Count,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<i64>>)> {
        let k = k.positive("k")?;
        let q = convert::rows(queries, "queries")?;
        self.check_dim(q.dim, "queries")?;
        let (data, ring) = (q.as_slice(), &self.ring);
        let res = gil::run(py, "Engine.search_vectors", || ring.search_batch(data, k))?
            .map_err(CoreError::from)?;
        let shape = [res.nq, res.k];
        let ids: Vec<i64> = res.ids.into_iter().map(|i| i as i64).collect();
        Ok((
            res.scores.into_pyarray(py).reshape(shape)?,
            ids.into_pyarray(py).reshape(shape)?,
        ))
    }

    /// The item with this id; raises ``ItemNotFoundError`` (a ``KeyError``) if it was never
    /// ingested or has been overwritten.
    fn get(&self, py: Python<'_>, id: &Bound<'_, PyAny>) -> PyResult<Item> {
        if !id.is_instance_of::<PyInt>() && !id.hasattr(pyo3::intern!(py, "__index__"))? {
            return Err(err(
                Exc::DType,
                format!("id must be an int, got {}", convert::type_name(id)),
            ));
        }
        let ring = &self.ring;
        // An id outside 0..2**64 is one no item has.
        let found = match id_of(id, "id") {
            Ok(id) => gil::run(py, "Engine.get", || ring.get(id))?,
            Err(_) => None,
        };
        found.map(Item).ok_or_else(|| {
            err(
                Exc::NotFound,
                format!(
                    "no item with id {} (held: {} items)",
                    id.repr().map_or_else(|_| "?".into(), |r| r.to_string()),
                    ring.len()
                ),
            )
        })
    }

    fn __len__(&self) -> usize {
        self.ring.len()
    }

    /// Number of slots: the most items the engine holds.
    #[getter]
    fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Dimension of the stored vectors.
    #[getter]
    fn dim(&self) -> usize {
        self.ring.config().dim
    }

    /// Number of shards.
    #[getter]
    fn num_shards(&self) -> usize {
        self.ring.config().num_shards
    }

    /// Slots per shard.
    #[getter]
    fn shard_size(&self) -> usize {
        self.ring.config().shard_size
    }

    /// ``"f32"`` or ``"int8"``.
    #[getter]
    fn storage(&self) -> &'static str {
        self.ring.config().storage.name()
    }

    /// Counters and sizes: ``len``, ``capacity``, ``dim``, ``num_shards``, ``shard_size``,
    /// ``storage``, ``ingested``, ``evicted``, ``searches``, ``memory_bytes`` (fixed at
    /// construction), ``payload_bytes`` (texts and metadata), ``simd``.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let ring = &self.ring;
        let s = gil::run(py, "Engine.stats", || ring.stats())?;
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
        d.set_item("searches", s.searches)?;
        d.set_item("memory_bytes", s.fixed_bytes)?;
        d.set_item("payload_bytes", s.payload_bytes)?;
        d.set_item("simd", s.backend)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let c = self.ring.config();
        format!(
            "Engine(dim={}, num_shards={}, shard_size={}, storage='{}', len={})",
            c.dim,
            c.num_shards,
            c.shard_size,
            c.storage.name(),
            self.ring.len()
        )
    }
}

/// The engine's dimension and model from ``Engine``'s first argument: an int (a dimension,
/// no model), a ``TextEmbedder``, a path (a model directory or file), or None (the default
/// model).
fn model_or_dim(
    py: Python<'_>,
    model: Option<&Bound<'_, PyAny>>,
) -> PyResult<(usize, Option<Py<TextEmbedder>>)> {
    let embedder = match model {
        Some(m) if m.is_instance_of::<PyInt>() && !m.is_instance_of::<PyBool>() => {
            return Ok((m.extract::<Count>()?.positive("dim")?, None));
        }
        Some(m) if m.is_instance_of::<TextEmbedder>() => m.cast::<TextEmbedder>()?.clone().unbind(),
        Some(m)
            if m.is_instance_of::<PyString>() || m.hasattr(pyo3::intern!(py, "__fspath__"))? =>
        {
            default_embedder(py, Some(m))?
        }
        Some(m) => {
            return Err(err(
                Exc::DType,
                format!(
                    "model must be a TextEmbedder, a model directory, a dimension (int) or None, got {}",
                    m.get_type().name()?
                ),
            ));
        }
        None => default_embedder(py, None)?,
    };
    let dim = embedder.get().inner.dim();
    Ok((dim, Some(embedder)))
}

/// What identifies a model in snapshots: file name and size, dimension, pooling,
/// normalisation, and the SHA-256 of the file (two files of one shape can hold different
/// weights). Hashed once per embedder, without the GIL.
fn model_id(py: Python<'_>, m: &TextEmbedder) -> PyResult<String> {
    let inner = &m.inner;
    let path = inner.model_path();
    let (size, sha) = gil::run(py, "Engine.save", || {
        let size = std::fs::metadata(path).map(|md| md.len())?;
        inner.model_sha256().map(|h| (size, h.to_owned()))
    })?
    .map_err(|e| storage_error(path, &e))?;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let cfg = inner.config();
    Ok(format!(
        "{name}:{size}:dim={}:pooling={}:normalize={}:sha256={sha}",
        inner.dim(),
        cfg.pooling,
        cfg.normalize
    ))
}

/// Whether a saved model identity matches the one in use. Snapshots of imesde before the
/// hash have no `:sha256=` part: for those the rest must match.
fn same_model(saved: &str, have: &str) -> bool {
    if saved.contains(":sha256=") {
        return saved == have;
    }
    have.split(":sha256=").next() == Some(saved)
}

/// A file error as `StorageError`, naming the path.
fn storage_error(path: &std::path::Path, e: &std::io::Error) -> PyErr {
    err(Exc::Storage, format!("{}: {e}", path.display()))
}

/// ``TextEmbedder(model_path)``, every option at the defaults of its signature.
fn default_embedder(
    py: Python<'_>,
    model_path: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<TextEmbedder>> {
    let embedder = py.get_type::<TextEmbedder>().call1((model_path,))?;
    Ok(embedder.cast_into::<TextEmbedder>()?.unbind())
}

impl Engine {
    /// Writes a validated batch into the ring without the GIL; with ``lexical=True`` also
    /// indexes its texts and drops what the ring has overwritten from the BM25 index.
    fn write(&self, py: Python<'_>, vectors: &[f32], attrs: &Attributes) -> PyResult<Range<u64>> {
        let hook = self.semantic_ids.lock().as_ref().map(|f| f.clone_ref(py));
        let with_ids;
        let attrs = match hook {
            Some(f) => {
                with_ids = self.attach_ids(py, f.bind(py), vectors, attrs)?;
                &with_ids
            }
            None => attrs,
        };
        let ring = &self.ring;
        let (ids, events) = gil::run(py, "Engine.ingest", || {
            let (ids, events) = ring.ingest_matching(vectors, attrs)?;
            if self.lexical.is_some() {
                let docs = ids
                    .clone()
                    .zip(&attrs.texts)
                    .filter_map(|(id, t)| t.as_deref().map(|t| (id, t)));
                self.follow_ring(docs);
            }
            Ok::<_, RingError>((ids, events))
        })?
        .map_err(CoreError::from)?;
        if !events.is_empty() {
            // Delivered with no engine lock held: a callback may search or ingest. The batch
            // is stored whole by now, so Ctrl-C in a callback (returned by `deliver`) stops
            // the delivery and reaches the caller with nothing half-written.
            let subs: Vec<Py<Subscription>> =
                self.subs.lock().iter().map(|s| s.clone_ref(py)).collect();
            for e in events {
                if let Some(sub) = subs.iter().find(|s| s.get().id == e.subscription) {
                    Subscription::deliver(sub.bind(py), e.hit)?;
                }
            }
        }
        Ok(ids)
    }

    /// The score above which `100 - NN` % of the held items fall, for `spec` = `"pNN"`.
    fn calibrate(&self, py: Python<'_>, vector: &[f32], spec: &str) -> PyResult<f32> {
        let pct = spec
            .strip_prefix('p')
            .and_then(|p| p.parse::<f64>().ok())
            .filter(|p| (0.0..100.0).contains(p))
            .ok_or_else(|| {
                err(
                    Exc::InvalidValue,
                    format!("threshold {spec:?} is not a percentile like \"p99\" or \"p99.9\""),
                )
            })?;
        let held = self.ring.len();
        if held == 0 {
            return Err(err(
                Exc::InvalidValue,
                format!("cannot calibrate threshold {spec:?} on an empty engine: ingest first"),
            ));
        }
        let k = (((100.0 - pct) / 100.0 * held as f64).ceil() as usize).clamp(1, held);
        let ring = &self.ring;
        let hits = gil::run(py, "Engine.subscribe", || {
            ring.search(vector, k, &Filter::default())
        })?
        .map_err(CoreError::from)?;
        Ok(hits.last().map_or(f32::NEG_INFINITY, |h| h.score))
    }

    /// An engine around `ring`, with an empty BM25 index when `lexical`.
    fn assemble(ring: Ring, model: Option<Py<TextEmbedder>>, lexical: bool) -> PyResult<Self> {
        let lexical = if lexical {
            let index =
                Bm25::new(Params::default(), AnalyzerConfig::english()).map_err(CoreError::from)?;
            Some(Mutex::new((index, BTreeSet::new())))
        } else {
            None
        };
        Ok(Engine {
            ring: Arc::new(ring),
            model,
            lexical,
            semantic_ids: Mutex::new(None),
            subs: Mutex::new(Vec::new()),
        })
    }

    fn model_identity(&self, py: Python<'_>) -> PyResult<String> {
        self.model
            .as_ref()
            .map_or_else(|| Ok(String::new()), |m| model_id(py, m.get()))
    }

    /// `k` capped at the capacity: no count asks for more than the engine can hold.
    fn cap(&self, k: usize) -> usize {
        k.min(self.ring.capacity())
    }

    /// `attrs` with each item's metadata extended by ``semantic_id`` from `assign(vectors)`.
    fn attach_ids(
        &self,
        py: Python<'_>,
        assign: &Bound<'_, PyAny>,
        vectors: &[f32],
        attrs: &Attributes,
    ) -> PyResult<Attributes> {
        let dim = self.ring.config().dim;
        let n = vectors.len() / dim;
        attrs.check(n).map_err(CoreError::from)?;
        let array = vectors.to_vec().into_pyarray(py).reshape([n, dim])?;
        let ids = assign.call1((array,))?;
        let ids: Vec<String> = ids.extract().map_err(|_| {
            err(
                Exc::DType,
                "the semantic id function must return a list of str",
            )
        })?;
        if ids.len() != n {
            return Err(err(
                Exc::Shape,
                format!(
                    "the semantic id function returned {} ids for {n} items",
                    ids.len()
                ),
            ));
        }
        let metadata = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                let mut pairs: Vec<(String, String)> = attrs
                    .metadata
                    .get(i)
                    .and_then(Option::as_deref)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                pairs.push(("semantic_id".to_owned(), id));
                Some(Arc::new(Metadata::new(pairs)))
            })
            .collect();
        Ok(Attributes {
            texts: attrs.texts.clone(),
            timestamps: attrs.timestamps.clone(),
            metadata,
        })
    }

    /// Keeps the BM25 index in step with the ring: indexes `docs` (id, text) that the ring
    /// still holds and drops the documents it has overwritten.
    fn follow_ring<'t>(&self, docs: impl Iterator<Item = (u64, &'t str)>) {
        let Some(lexical) = &self.lexical else {
            return;
        };
        let ring = &self.ring;
        let mut guard = lexical.lock();
        let (index, held) = &mut *guard;
        let floor = ring.next_id().saturating_sub(ring.capacity() as u64);
        let (ids, texts): (Vec<u64>, Vec<&str>) = docs.filter(|&(id, _)| id >= floor).unzip();
        // Ids come from the ring, so they are new: the batch (analysed on all cores when
        // large) goes in whole; were one refused, the others still go in one by one.
        if install(|| index.add_batch(&ids, &texts)).is_ok() {
            held.extend(ids);
        } else {
            for (id, text) in ids.into_iter().zip(texts) {
                if index.add(id, text).is_ok() {
                    held.insert(id);
                }
            }
        }
        while let Some(&oldest) = held.first()
            && oldest < floor
        {
            held.pop_first();
            let _ = index.remove(oldest);
        }
    }

    /// BM25 ``(id, score)`` of the items still held, best first.
    fn lexical_ranked(&self, py: Python<'_>, query: &str, k: usize) -> PyResult<Vec<(u64, f32)>> {
        let Some(lexical) = &self.lexical else {
            return Err(err(
                Exc::Imesde,
                "this Engine keeps no BM25 index: create it with Engine(..., lexical=True)",
            ));
        };
        gil::run(py, "Engine.lexical_search", || {
            lexical
                .lock()
                .0
                .search(query, k, 0.0)
                .into_iter()
                .map(|h| (h.id, h.score))
                .collect()
        })
    }

    /// Hits for ranked ids, read back from the ring (ids overwritten meanwhile are skipped).
    fn hits_for(&self, py: Python<'_>, ranked: &[(u64, f32)]) -> PyResult<Vec<Hit>> {
        let ring = &self.ring;
        gil::run(py, "Engine.hybrid_search", || {
            ranked
                .iter()
                .filter_map(|&(id, score)| ring.hit(id, score).map(Hit))
                .collect()
        })
    }

    /// One exact search without the GIL.
    fn find(&self, py: Python<'_>, q: &[f32], k: usize, filter: &Filter) -> PyResult<Vec<Hit>> {
        let ring = &self.ring;
        let hits = gil::run(py, "Engine.search", || ring.search(q, k, filter))?
            .map_err(CoreError::from)?;
        Ok(hits.into_iter().map(Hit).collect())
    }

    /// Queries embedded with the model's query prompt, if it has one.
    fn embed_queries(&self, py: Python<'_>, texts: Vec<Arc<str>>) -> PyResult<Vec<f32>> {
        let m = self.text_model()?;
        embed_texts(py, &m.inner, &m.prompted(texts, m.query_prompt()))
    }

    /// Texts to store embedded with the model's document prompt, if it has one.
    fn embed_documents(&self, py: Python<'_>, texts: Vec<Arc<str>>) -> PyResult<Vec<f32>> {
        let m = self.text_model()?;
        embed_texts(py, &m.inner, &m.prompted(texts, m.document_prompt()))
    }

    fn text_model(&self) -> PyResult<&TextEmbedder> {
        match &self.model {
            Some(m) => Ok(m.get()),
            None => Err(err(
                Exc::Imesde,
                "this Engine was made with a dimension and has no model: use ingest_vectors / \
                 search_vector, or create it with Engine() or Engine(TextEmbedder(...))",
            )),
        }
    }

    fn check_dim(&self, got: usize, what: &'static str) -> PyResult<()> {
        let expected = self.ring.config().dim;
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
