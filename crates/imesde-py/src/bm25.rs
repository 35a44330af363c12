//! `imesde.BM25`, `imesde.BM25Hit`, `imesde.fuse`.
// PyO3 extracts arguments as owned values (Vec, PathBuf); borrowing them is not an option.
#![allow(clippy::needless_pass_by_value)]

use std::path::Path;
use std::sync::atomic::Ordering;

use imesde_bm25::{AnalyzerConfig, Bm25, Fusion, Method, Params};
use parking_lot::RwLock;
use pyo3::exceptions::{PyAttributeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyByteArray, PyBytes, PyFrozenSet, PyList, PyMapping, PySet, PyString, PyTuple};
use rayon::prelude::*;

use crate::convert::{
    self, Count, FsPath, Id, Real, Text, as_str, id_of, ids_of, str_items, type_name, utf8,
};
use crate::convert::{LexicalQuery, py_str, reduce_to_bytes};
use crate::error::{CoreError, Raise};
use crate::exceptions::py_err;
use crate::gil;
use imesde_engine::fork::install;

/// What a pickled `BM25Hit` holds: id, score, terms.
type Bm25HitFields = (u64, f32, Vec<String>);

/// One lexical result: ``id``, ``score`` (BM25) and the query ``terms`` it matched. Unpacks as
/// ``(id, score)``.
#[pyclass(frozen, module = "imesde._imesde", name = "BM25Hit")]
pub(crate) struct Bm25Hit(pub(crate) imesde_bm25::Bm25Hit);

#[pymethods]
impl Bm25Hit {
    /// The document id.
    #[getter]
    fn id(&self) -> u64 {
        self.0.id
    }
    /// The BM25 score.
    #[getter]
    fn score(&self) -> f32 {
        self.0.score
    }
    /// The analyzed query terms found in the document.
    #[getter]
    fn terms(&self) -> Vec<String> {
        self.0.terms.clone()
    }
    #[allow(clippy::unused_self)] // a protocol method: always a pair
    fn __len__(&self) -> usize {
        2
    }
    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyAny>> {
        match index {
            0 | -2 => Ok(self.0.id.into_pyobject(py)?.into_any()),
            1 | -1 => Ok(self.0.score.into_pyobject(py)?.into_any()),
            _ => Err(pyo3::exceptions::PyIndexError::new_err(
                "BM25Hit unpacks as (id, score)",
            )),
        }
    }
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pair = PyTuple::new(py, [self.__getitem__(py, 0)?, self.__getitem__(py, 1)?])?;
        pair.try_iter().map(Bound::into_any)
    }
    /// Pickles as its fields (``multiprocessing``, Ray and ``copy`` carry hits).
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bm25HitFields)> {
        let h = &slf.get().0;
        let from = slf
            .get_type()
            .getattr(pyo3::intern!(slf.py(), "_from_fields"))?;
        Ok((from, (h.id, h.score, h.terms.clone())))
    }
    #[staticmethod]
    fn _from_fields(id: u64, score: f32, terms: Vec<String>) -> Self {
        Bm25Hit(imesde_bm25::Bm25Hit { id, score, terms })
    }
    /// Equal to a ``BM25Hit`` of the same id, score and terms (as a dataclass compares).
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let equal = other
            .cast::<Bm25Hit>()
            .ok()
            .map(|o| Ok(self.0 == o.get().0));
        crate::hits::eq_answer(other.py(), equal)
    }
    fn __hash__(&self) -> u64 {
        crate::hits::hash_of(self.0.id, self.0.score)
    }
    fn __repr__(&self, py: Python<'_>) -> String {
        let terms: Vec<String> = self.0.terms.iter().map(|t| py_str(py, t)).collect();
        format!(
            "BM25Hit(id={}, score={:.4}, terms=[{}])",
            self.0.id,
            self.0.score,
            terms.join(", ")
        )
    }
}

/// The analyzer options from Python: ``stemmer`` a Snowball language or None, ``stopwords``
/// None, ``"english"`` or a list of words.
pub(crate) fn analyzer_config(
    stemmer: Option<&str>,
    stopwords: Option<&Bound<'_, PyAny>>,
) -> PyResult<AnalyzerConfig> {
    let stopwords = match stopwords {
        None => Vec::new(),
        Some(s) if s.is_instance_of::<PyString>() => match utf8(s.cast()?, "stopwords")? {
            "english" | "en" => AnalyzerConfig::english_stopwords(),
            other => {
                return Err(py_err!(
                    InvalidValue,
                    "stopwords must be None, \"english\" or a list of words, got {other:?}"
                ));
            }
        },
        Some(s) => str_items(s, "stopwords", false)?
            .into_iter()
            .flatten()
            .map(|w| w.to_string())
            .collect(),
    };
    Ok(AnalyzerConfig {
        stemmer: stemmer.map(str::to_owned),
        stopwords,
        ..AnalyzerConfig::default()
    })
}

/// A parameter held as f32, as the float the user wrote (the shortest decimal that rounds to
/// it: ``1.2``, not ``1.2000000476837158``).
fn as_written(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

pub(crate) fn bm25_params(k1: Real, b: Real, method: &str, delta: Real) -> PyResult<Params> {
    let method = method.parse::<Method>().map_err(CoreError::from)?;
    let method = match method.delta() {
        Some(_) => method.with_delta(delta.finite_f32("delta")?),
        None => method,
    };
    Ok(Params {
        k1: k1.finite_f32("k1")?,
        b: b.finite_f32("b")?,
        method,
    })
}

/// A BM25 keyword index over documents with integer ids.
///
/// ``method`` is ``"lucene"`` (default), ``"robertson"``, ``"atire"``, ``"bm25+"`` or
/// ``"bm25l"`` (the last two with ``delta``); ``stemmer`` a Snowball language (``"english"``
/// by default) or None; ``stopwords`` None, ``"english"`` or a list of words. Terms are
/// Unicode words, lowercased; technical compounds such as ``CVE-2024-1234`` or ``net/mlx5e``
/// are also indexed whole.
#[pyclass(frozen, weakref, module = "imesde._imesde", name = "BM25")]
pub(crate) struct PyBm25(RwLock<Bm25>);

impl PyBm25 {
    /// An empty index with an engine's BM25 settings (what ``Engine(lexical=...)`` takes).
    pub(crate) fn from_config(config: &imesde_engine::LexicalConfig) -> PyResult<Self> {
        let analyzer = AnalyzerConfig {
            stemmer: config.stemmer.clone(),
            stopwords: config.stopwords.clone(),
            ..AnalyzerConfig::default()
        };
        let index = Bm25::new(config.params, analyzer).map_err(CoreError::from)?;
        Ok(Self(RwLock::new(index)))
    }

    /// This index's settings, for an engine's BM25 index made like it.
    pub(crate) fn lexical_config(&self) -> imesde_engine::LexicalConfig {
        let index = self.0.read();
        let analyzer = index.analyzer().config();
        imesde_engine::LexicalConfig {
            params: index.params(),
            stemmer: analyzer.stemmer.clone(),
            stopwords: analyzer.stopwords.clone(),
        }
    }
}

#[pymethods]
impl PyBm25 {
    #[new]
    #[pyo3(
        signature = (k1 = Real(1.2), b = Real(0.75), *, method = Text("lucene".into()), stemmer = Some(Text("english".into())), stopwords = None, delta = Real(0.5)),
        text_signature = "(k1=1.2, b=0.75, *, method='lucene', stemmer='english', stopwords=None, delta=0.5)"
    )]
    fn new(
        k1: Real,
        b: Real,
        method: Text,
        stemmer: Option<Text>,
        stopwords: Option<&Bound<'_, PyAny>>,
        delta: Real,
    ) -> PyResult<Self> {
        let index = Bm25::new(
            bm25_params(k1, b, &method, delta)?,
            analyzer_config(stemmer.as_deref(), stopwords)?,
        )
        .map_err(CoreError::from)?;
        Ok(Self(RwLock::new(index)))
    }

    /// Indexes ``text`` under ``id``; raises ``InvalidValueError`` if ``id`` is already there.
    fn add(&self, py: Python<'_>, id: Id, text: Text) -> PyResult<()> {
        gil::run(py, "BM25.add", || self.0.write().add(id.0, &text)).raise()?;
        Ok(())
    }

    /// ``add`` for many documents: texts, or token lists indexed as they are (as bm25s takes
    /// them). All ids are checked first, so a bad batch adds nothing; Ctrl-C while a large
    /// batch is analysed raises ``KeyboardInterrupt`` and adds nothing too (once the documents
    /// are being added, the last step, it is raised after they are in). Also precomputes the
    /// per-posting scores that searches reuse until the next change.
    fn add_batch(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        texts: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let ids = ids_of(ids)?;
        let docs = Docs::extract(texts, "texts")?;
        if ids.len() != docs.len() {
            return Err(py_err!(
                Shape,
                "{} ids for {} documents",
                ids.len(),
                docs.len()
            ));
        }
        gil::write_interruptible(py, "BM25.add_batch", |stop| {
            let mut guard = self.0.write();
            let index: &mut Bm25 = &mut guard;
            install(|| match &docs {
                Docs::Texts(texts) => {
                    index.add_batch_until(&ids, texts, &|| stop.load(Ordering::Relaxed))
                }
                Docs::Terms(terms) => index.add_batch_terms(&ids, terms),
            })?;
            index.warm();
            Ok::<_, imesde_bm25::Bm25Error>(())
        })
        .raise()?;
        Ok(())
    }

    /// Removes the document ``id``; raises ``ItemNotFoundError`` (a ``KeyError``) if absent.
    fn remove(&self, py: Python<'_>, id: Id) -> PyResult<()> {
        gil::run(py, "BM25.remove", || self.0.write().remove(id.0)).raise()?;
        Ok(())
    }

    /// Replaces the text of ``id`` (adds it when absent).
    fn update(&self, py: Python<'_>, id: Id, text: Text) -> PyResult<()> {
        gil::run(py, "BM25.update", || self.0.write().update(id.0, &text)).raise()?;
        Ok(())
    }

    /// Same as ``add``.
    fn add_document(&self, py: Python<'_>, id: Id, text: Text) -> PyResult<()> {
        self.add(py, id, text)
    }

    /// Same as ``remove``.
    fn remove_document(&self, py: Python<'_>, id: Id) -> PyResult<()> {
        self.remove(py, id)
    }

    /// Same as ``update``.
    fn update_document(&self, py: Python<'_>, id: Id, text: Text) -> PyResult<()> {
        self.update(py, id, text)
    }

    /// The ``k`` best documents for ``query`` scoring at least ``min_score`` and above 0 (a
    /// document matching only terms of no weight, as Robertson's floored IDF gives terms in
    /// most documents, is not a match), best first.
    /// ``query`` is a text, or its terms already analyzed (a sequence of str).
    #[pyo3(
        signature = (query, k = Count::from(10), min_score = Real(0.0)),
        text_signature = "($self, query, k=10, min_score=0.0)"
    )]
    fn search(
        &self,
        py: Python<'_>,
        query: LexicalQuery,
        k: Count,
        min_score: Real,
    ) -> PyResult<Vec<Bm25Hit>> {
        let (k, min_score) = search_args(k, min_score)?;
        let hits = gil::run(py, "BM25.search", || {
            self.0.read().search(query.get(), k, min_score)
        })?;
        Ok(hits.into_iter().map(Bm25Hit).collect())
    }

    /// ``search`` for each of ``queries`` (texts, or token lists as bm25s' ``retrieve`` takes
    /// them), on all cores; Ctrl-C stops it (``KeyboardInterrupt``).
    #[pyo3(
        signature = (queries, k = Count::from(10), min_score = Real(0.0)),
        text_signature = "($self, queries, k=10, min_score=0.0)"
    )]
    fn search_batch(
        &self,
        py: Python<'_>,
        queries: &Bound<'_, PyAny>,
        k: Count,
        min_score: Real,
    ) -> PyResult<Vec<Vec<Bm25Hit>>> {
        let (k, min_score) = search_args(k, min_score)?;
        let queries = Docs::extract(queries, "queries")?;
        let found = gil::run_interruptible(py, "BM25.search_batch", |stop| {
            let guard = self.0.read();
            let index: &Bm25 = &guard;
            let stopped = || stop.load(Ordering::Relaxed);
            install(|| match &queries {
                Docs::Texts(texts) => texts
                    .par_iter()
                    .map(|q| (!stopped()).then(|| index.search(&**q, k, min_score)))
                    .collect::<Option<Vec<_>>>(),
                Docs::Terms(terms) => terms
                    .par_iter()
                    .map(|t| {
                        (!stopped())
                            .then(|| index.search_terms(t.iter().map(|s| &**s), k, min_score))
                    })
                    .collect::<Option<Vec<_>>>(),
            })
        })?;
        // None only when stopped, and then the signal's exception was raised above.
        Ok(found
            .unwrap_or_default()
            .into_iter()
            .map(|hits| hits.into_iter().map(Bm25Hit).collect())
            .collect())
    }

    /// The terms the analyzer makes of ``text`` (as documents and queries are indexed).
    fn analyze(&self, py: Python<'_>, text: Text) -> PyResult<Vec<String>> {
        gil::run(py, "BM25.analyze", || {
            self.0.read().analyzer().analyze(&text)
        })
    }

    /// Number of documents.
    #[getter]
    fn document_count(&self) -> usize {
        self.0.read().document_count()
    }

    /// Number of distinct terms.
    #[getter]
    fn term_count(&self) -> usize {
        self.0.read().term_count()
    }

    /// Mean number of terms per document.
    #[getter]
    fn average_document_length(&self) -> f64 {
        self.0.read().average_document_length()
    }

    /// Total number of terms over all documents.
    #[getter]
    fn token_count(&self) -> u64 {
        self.0.read().token_count()
    }

    /// Heap bytes held by the index (postings, cached impacts, forward index, dictionary).
    #[getter]
    fn memory_bytes(&self) -> usize {
        self.0.read().memory_bytes()
    }

    /// BM25's ``k1``.
    #[getter]
    fn k1(&self) -> f64 {
        as_written(self.0.read().params().k1)
    }

    /// BM25's ``b``.
    #[getter]
    fn b(&self) -> f64 {
        as_written(self.0.read().params().b)
    }

    /// The scoring variant.
    #[getter]
    fn method(&self) -> String {
        self.0.read().params().method.to_string()
    }

    /// The ``delta`` of BM25+ and BM25L, or None for the other methods.
    #[getter]
    fn delta(&self) -> Option<f64> {
        self.0.read().params().method.delta().map(as_written)
    }

    /// The Snowball language terms are stemmed in, or None.
    #[getter]
    fn stemmer(&self) -> Option<String> {
        self.0.read().analyzer().config().stemmer.clone()
    }

    /// The stop words (dropped before stemming).
    #[getter]
    fn stopwords(&self) -> Vec<String> {
        self.0.read().analyzer().config().stopwords.clone()
    }

    fn __len__(&self) -> usize {
        self.0.read().document_count()
    }

    fn __contains__(&self, id: &Bound<'_, PyAny>) -> bool {
        // Anything that is not a valid id is not in the index.
        id_of(id, "id").is_ok_and(|id| self.0.read().contains(id))
    }

    /// Writes the index to ``path`` atomically (versioned format with a checksum).
    fn save(&self, py: Python<'_>, path: FsPath) -> PyResult<()> {
        gil::run(py, "BM25.save", || self.0.read().save(&path)).raise()?;
        Ok(())
    }

    /// Reads an index written by ``save``; a truncated or modified file raises
    /// ``IndexCorruptError``.
    #[staticmethod]
    fn load(py: Python<'_>, path: FsPath) -> PyResult<Self> {
        let index = gil::run(py, "BM25.load", || Bm25::load(&path)).raise()?;
        Ok(Self(RwLock::new(index)))
    }

    /// The index as the bytes ``save`` writes.
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let data = gil::run(py, "BM25.to_bytes", || self.0.read().to_bytes())?;
        Ok(PyBytes::new(py, &data))
    }

    /// An index from ``to_bytes`` (or a file's) bytes, checked as ``load`` checks a file.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Self> {
        let data = convert::byte_data(data)?;
        let index = gil::run(py, "BM25.from_bytes", || {
            Bm25::from_bytes(&data, Path::new("<bytes>"))
        })
        .raise()?;
        Ok(Self(RwLock::new(index)))
    }

    /// Pickles through ``to_bytes``: ``copy.deepcopy``, ``joblib`` and ``spawn`` workers
    /// get the same index, and a damaged pickle is ``IndexCorruptError``.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let data = slf.get().to_bytes(slf.py())?;
        reduce_to_bytes(slf.as_any(), data.as_bytes(), None)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let i = self.0.read();
        let p = i.params();
        // The settings that make two indexes score alike (stop words as their number).
        let delta = p
            .method
            .delta()
            .map_or(String::new(), |d| format!(", delta={}", as_written(d)));
        let analyzer = i.analyzer().config();
        let stemmer = analyzer
            .stemmer
            .as_deref()
            .map_or_else(|| "None".to_owned(), |s| py_str(py, s));
        // A few stop words as the list they are, many as their number.
        let stopwords = match analyzer.stopwords.len() {
            0..=3 => {
                let words: Vec<String> = analyzer.stopwords.iter().map(|w| py_str(py, w)).collect();
                format!("[{}]", words.join(", "))
            }
            n => format!("[{n} words]"),
        };
        format!(
            "BM25(k1={}, b={}, method={}{delta}, stemmer={stemmer}, stopwords={stopwords}, \
             documents={}, terms={})",
            p.k1,
            p.b,
            py_str(py, &p.method.to_string()),
            i.document_count(),
            i.term_count()
        )
    }
}

/// A search's ``k`` and ``min_score``, checked.
fn search_args(k: Count, min_score: Real) -> PyResult<(usize, f32)> {
    let min_score = min_score.0 as f32;
    if min_score.is_nan() {
        return Err(py_err!(InvalidValue, "min_score must be a number, got nan"));
    }
    Ok((k.positive("k")?, min_score))
}

/// ``fuse``'s ``weights``: numbers in the lists' order (not a str, a mapping's keys, nor a set,
/// whose order is its hashes'). A positive weight too small for float32 stays positive (it
/// still counts: a weight of 0 adds no results).
fn weights_of(w: &Bound<'_, PyAny>) -> PyResult<Vec<f32>> {
    let wrong = || {
        py_err!(
            DType,
            "weights must be a list of numbers, one per list, got {}",
            type_name(w)
        )
    };
    if w.is_instance_of::<PyString>()
        || w.is_instance_of::<PyBytes>()
        || w.is_instance_of::<PySet>()
        || w.is_instance_of::<PyFrozenSet>()
        || w.cast::<PyMapping>().is_ok()
    {
        return Err(wrong());
    }
    w.try_iter()
        .map_err(|_| wrong())?
        .enumerate()
        .map(|(j, x)| {
            let x = x?;
            let r = x.extract::<Real>().map_err(|e| {
                if e.is_instance_of::<PyTypeError>(w.py()) {
                    py_err!(DType, "weights[{j}]: {}", e.value(w.py()))
                } else {
                    e
                }
            })?;
            let f = r.0 as f32;
            Ok(if f == 0.0 && r.0 > 0.0 {
                f32::MIN_POSITIVE
            } else {
                f
            })
        })
        .collect()
}

/// One ranked list from Python: ``(id, score)`` pairs or objects with ``id`` and ``score``.
fn ranked(list: &Bound<'_, PyAny>, i: usize) -> PyResult<Vec<(u64, f32)>> {
    list.try_iter()
        .map_err(|_| py_err!(DType, "lists[{i}] must be a list of (id, score)"))?
        .map(|item| {
            let item = item?;
            // A pair (tuple or list) or a hit.
            let (id, score) = match item.extract::<(Bound<'_, PyAny>, Bound<'_, PyAny>)>() {
                Ok(pair) => (Ok(pair.0), Ok(pair.1)),
                Err(_) if item.is_instance_of::<PyList>() && item.len()? == 2 => {
                    (item.get_item(0), item.get_item(1))
                }
                Err(_) => (item.getattr("id"), item.getattr("score")),
            };
            match (id, score) {
                (Ok(id), Ok(score)) => {
                    let id = id_of(&id, &format!("an id in lists[{i}]"))?;
                    let what = format!("the score of id {id} in lists[{i}]");
                    Ok((id, score.extract::<Real>()?.finite_f32(&what)?))
                }
                // An item whose `.id` or `.score` raised (not merely missing) raises that.
                (Err(e), _) | (_, Err(e)) if !e.is_instance_of::<PyAttributeError>(item.py()) => {
                    Err(e)
                }
                _ => Err(py_err!(
                    DType,
                    "lists[{i}] items must be (id, score) pairs or hits with .id and .score"
                )),
            }
        })
        .collect()
}

/// Fuses ranked lists (each best first) into one: ``method`` ``"rrf"`` (reciprocal rank,
/// constant ``rrf_k``), ``"weighted"`` (min-max scaled scores times ``weights``),
/// ``"combsum"`` (the same, weights 1 unless given), ``"combmnz"`` (CombSUM times the number
/// of lists holding the id) or ``"borda"``; ``weights`` (one per list, not all 0) weight every
/// method, and an id that only lists of weight 0 name is no result (``[0, 1]``: the second
/// list's ranking). An id a list names twice counts once, at its first place. Returns the
/// ``k`` best ``(id, score)`` pairs.
#[pyfunction]
#[pyo3(
    signature = (lists, method = Text("rrf".into()), k = Count::from(10), weights = None, rrf_k = Real(60.0)),
    text_signature = "(lists, method='rrf', k=10, weights=None, rrf_k=60.0)"
)]
pub(crate) fn fuse(
    lists: &Bound<'_, PyAny>,
    method: Text,
    k: Count,
    weights: Option<&Bound<'_, PyAny>>,
    rrf_k: Real,
) -> PyResult<Vec<(u64, f32)>> {
    let k = k.positive("k")?;
    let method = match method.parse::<Fusion>().map_err(CoreError::from)? {
        Fusion::Rrf { .. } => Fusion::Rrf { k: rrf_k.0 as f32 },
        m => m,
    };
    let weights = weights.map(weights_of).transpose()?;
    let lists = lists
        .try_iter()
        .map_err(|_| {
            py_err!(
                DType,
                "lists must be a list of ranked lists, got {}",
                type_name(lists)
            )
        })?
        .enumerate()
        .map(|(i, l)| ranked(&l?, i))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(imesde_bm25::fuse(&lists, method, k, weights.as_deref()).map_err(CoreError::from)?)
}

/// The documents of a batch: texts, or token lists.
enum Docs {
    Texts(Vec<PyBackedStr>),
    Terms(Vec<Vec<PyBackedStr>>),
}

impl Docs {
    /// Texts when the first item is a str, token lists otherwise; an item of the other kind
    /// is named by its index. A str that cannot be read (a lone surrogate) raises Python's
    /// own error.
    fn extract(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Self> {
        let kinds = "a list of str or a list of token lists (lists of str)";
        if obj.is_instance_of::<PyString>() {
            return Err(py_err!(DType, "{what} must be {kinds}, got one str"));
        }
        let items: Vec<Bound<'_, PyAny>> = obj
            .try_iter()
            .map_err(|_| py_err!(DType, "{what} must be {kinds}, got {}", type_name(obj)))?
            .collect::<PyResult<_>>()?;
        // `like`: why the item must be a str (its list's first item is one), for the message.
        let text = |item: &Bound<'_, PyAny>,
                    at: &dyn Fn() -> String,
                    like: &str|
         -> PyResult<PyBackedStr> {
            let s = as_str(item, || format!("{}{like} must be str", at()))?;
            utf8(s, &at())?;
            PyBackedStr::try_from(s.clone())
        };
        if items
            .first()
            .is_none_or(PyAnyMethods::is_instance_of::<PyString>)
        {
            let like = format!(" (as {what}[0])");
            return items
                .iter()
                .enumerate()
                .map(|(i, item)| text(item, &|| format!("{what}[{i}]"), &like))
                .collect::<PyResult<_>>()
                .map(Self::Texts);
        }
        items
            .iter()
            .enumerate()
            .map(|(i, doc)| {
                if doc.is_instance_of::<PyString>() {
                    return Err(py_err!(
                        DType,
                        "{what}[{i}] must be a token list (as {what}[0]), got str"
                    ));
                }
                if doc.is_instance_of::<PyBytes>() || doc.is_instance_of::<PyByteArray>() {
                    return Err(py_err!(
                        DType,
                        "{what}[{i}] must be a str or a token list, got {} (decode it first)",
                        type_name(doc)
                    ));
                }
                doc.try_iter()
                    .map_err(|_| {
                        py_err!(
                            DType,
                            "{what} must be {kinds}; {what}[{i}] is {}",
                            type_name(doc)
                        )
                    })?
                    .enumerate()
                    .map(|(j, token)| text(&token?, &|| format!("{what}[{i}][{j}]"), ""))
                    .collect()
            })
            .collect::<PyResult<_>>()
            .map(Self::Terms)
    }

    fn len(&self) -> usize {
        match self {
            Self::Texts(texts) => texts.len(),
            Self::Terms(terms) => terms.len(),
        }
    }
}
