//! What searches, reads and standing queries return: `Hit`, `Item`, `Event`. Each holds a core
//! record with the same fields (`id`, `text`, `ts`, `metadata`), whose getters are written
//! once, in [`item_class`].

use std::sync::Arc;

use numpy::PyArray1;
use pyo3::PyTraverseError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::convert::{meta_dict, meta_map, py_str};
use crate::stream::Subscription;
use imesde_ring::Metadata;

/// A `#[pymethods]` block for `$ty` with the getters of the core record at `self.$field`,
/// `to_dict` (of the getters named `$fields`, in that order), then `$extra`.
macro_rules! item_class {
    ($ty:ty, $field:tt, [$($fields:literal),*], { $($extra:tt)* }) => {
        #[pymethods]
        impl $ty {
            /// Global id of the item (its position in the stream).
            #[getter]
            fn id(&self) -> u64 {
                self.$field.id
            }
            /// The item's text, or None.
            #[getter]
            fn text(&self) -> Option<&str> {
                self.$field.text.as_deref()
            }
            /// Timestamp in seconds since the Unix epoch.
            #[getter]
            fn ts(&self) -> f64 {
                self.$field.ts
            }
            /// The item's metadata as a new dict, or None.
            #[getter]
            fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
                meta_dict(py, self.$field.metadata.as_ref())
            }
            /// The fields as a new dict, for ``pd.DataFrame([h.to_dict() for h in hits])`` or
            /// JSON.
            fn to_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
                let d = PyDict::new(slf.py());
                for name in [$($fields),*] {
                    d.set_item(name, slf.getattr(name)?)?;
                }
                Ok(d)
            }
            $($extra)*
        }
    };
}

/// Characters of a text a repr shows: a long one (a log line, a document) is cut there, so a
/// list of hits in a notebook stays readable.
const REPR_CHARS: usize = 200;

/// `text` as Python's repr shows it (its first `REPR_CHARS` characters and its length when it
/// is longer), or `None`.
fn repr_text(py: Python<'_>, text: Option<&str>) -> String {
    let Some(t) = text else {
        return "None".to_owned();
    };
    match t.char_indices().nth(REPR_CHARS) {
        Some((cut, _)) => {
            let n = t.chars().count();
            format!("{}... ({n} chars)", py_str(py, &t[..cut]))
        }
        None => py_str(py, t),
    }
}

/// The fields every record has, read the same way from a hit and an item.
trait Record {
    fn id(&self) -> u64;
    fn text(&self) -> Option<&str>;
    fn ts(&self) -> f64;
    fn metadata(&self) -> Option<&Metadata>;
}

macro_rules! record {
    ($($ty:ty),*) => {$(
        impl Record for $ty {
            fn id(&self) -> u64 { self.id }
            fn text(&self) -> Option<&str> { self.text.as_deref() }
            fn ts(&self) -> f64 { self.ts }
            fn metadata(&self) -> Option<&Metadata> { self.metadata.as_ref() }
        }
    )*};
}
record!(imesde_ring::Hit, imesde_ring::Item);

/// What `__reduce__` returns for a record: its class's `_from_fields` and (id, the record's
/// own field `X`, text, ts, metadata).
type Reduced<'py, X> = (
    Bound<'py, PyAny>,
    (u64, X, Option<String>, f64, Option<Bound<'py, PyDict>>),
);

/// Pickles `record` as its fields, `extra` second (``multiprocessing``, Ray and ``copy``).
fn reduce_record<'py, X>(
    slf: &Bound<'py, PyAny>,
    record: &impl Record,
    extra: X,
) -> PyResult<Reduced<'py, X>> {
    let from = slf
        .get_type()
        .getattr(pyo3::intern!(slf.py(), "_from_fields"))?;
    let meta = meta_dict(slf.py(), record.metadata())?;
    Ok((
        from,
        (
            record.id(),
            extra,
            record.text().map(str::to_owned),
            record.ts(),
            meta,
        ),
    ))
}

/// Whether two records hold the same id, text, timestamp and metadata (compared as dicts).
#[allow(clippy::float_cmp)] // equality of fields, as Python compares floats
fn same_record(py: Python<'_>, a: &impl Record, b: &impl Record) -> PyResult<bool> {
    if a.id() != b.id() || a.text() != b.text() || a.ts() != b.ts() {
        return Ok(false);
    }
    match (meta_dict(py, a.metadata())?, meta_dict(py, b.metadata())?) {
        (None, None) => Ok(true),
        (Some(x), Some(y)) => x.eq(y),
        _ => Ok(false),
    }
}

/// `__eq__`'s answer: `equal` as a bool, or `NotImplemented` when `other` is another type.
pub(crate) fn eq_answer(py: Python<'_>, equal: Option<PyResult<bool>>) -> PyResult<Py<PyAny>> {
    match equal {
        None => Ok(py.NotImplemented()),
        Some(e) => Ok(pyo3::types::PyBool::new(py, e?)
            .to_owned()
            .into_any()
            .unbind()),
    }
}

/// A hit's hash: its id and score (what equal hits share).
pub(crate) fn hash_of(id: u64, score: f32) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // `+ 0.0` makes -0.0 (equal to 0.0) hash as 0.0.
    (id, (score + 0.0).to_bits()).hash(&mut h);
    h.finish()
}

/// A pickled record's text and metadata as the core holds them.
fn record_fields(
    text: Option<String>,
    metadata: Option<&Bound<'_, PyAny>>,
) -> PyResult<(Option<Arc<str>>, Option<Metadata>)> {
    Ok((
        text.map(Arc::from),
        metadata.map(|m| meta_map(m, "metadata")).transpose()?,
    ))
}

/// One search result: ``id``, ``text``, ``score``, ``ts``, ``metadata``.
///
/// Unpacks as ``(text, score)``, so ``for text, score in engine.search_vector(q)`` works.
#[pyclass(frozen, module = "imesde._imesde")]
pub(crate) struct Hit(pub(crate) imesde_ring::Hit);

item_class!(Hit, 0, ["id", "text", "score", "ts", "metadata"], {
    /// Cosine similarity to the query (or the BM25 or fused score of a lexical or hybrid
    /// search).
    #[getter]
    fn score(&self) -> f32 {
        self.0.score
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
    /// Pickles as its fields (``multiprocessing``, Ray and ``copy`` carry hits).
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Reduced<'py, f32>> {
        reduce_record(slf.as_any(), &slf.get().0, slf.get().0.score)
    }
    #[staticmethod]
    fn _from_fields(
        id: u64,
        score: f32,
        text: Option<String>,
        ts: f64,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let (text, metadata) = record_fields(text, metadata)?;
        Ok(Hit(imesde_ring::Hit {
            id,
            score,
            text,
            ts,
            metadata,
        }))
    }
    /// Equal to a ``Hit`` with the same fields (as a dataclass compares), so result lists
    /// compare: ``engine.search(q) == restored.search(q)``.
    #[allow(clippy::float_cmp)] // equality of fields, as Python compares floats
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let equal = other.cast::<Hit>().ok().map(|o| {
            let o = &o.get().0;
            Ok(self.0.score == o.score && same_record(py, &self.0, o)?)
        });
        eq_answer(py, equal)
    }
    fn __hash__(&self) -> u64 {
        hash_of(self.0.id, self.0.score)
    }
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Hit(id={}, score={:.4}, text={}, ts={})",
            self.0.id,
            self.0.score,
            repr_text(py, self.0.text.as_deref()),
            self.0.ts
        )
    }
});

/// An item read back with ``Engine.get``: ``id``, ``vector``, ``text``, ``ts``, ``metadata``.
#[pyclass(frozen, module = "imesde._imesde")]
pub(crate) struct Item(pub(crate) imesde_ring::Item);

item_class!(Item, 0, ["id", "vector", "text", "ts", "metadata"], {
    /// A copy of the stored unit-length vector (dequantised for int8 storage).
    #[getter]
    fn vector<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        PyArray1::from_slice(py, &self.0.vector)
    }
    /// Pickles as its fields, the vector as a float32 array.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<Reduced<'py, Bound<'py, PyArray1<f32>>>> {
        let item = &slf.get().0;
        reduce_record(
            slf.as_any(),
            item,
            PyArray1::from_slice(slf.py(), &item.vector),
        )
    }
    #[staticmethod]
    fn _from_fields(
        id: u64,
        vector: Vec<f32>,
        text: Option<String>,
        ts: f64,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let (text, metadata) = record_fields(text, metadata)?;
        Ok(Item(imesde_ring::Item {
            id,
            vector,
            text,
            ts,
            metadata,
        }))
    }
    /// Equal to an ``Item`` with the same fields, the vector included.
    fn __eq__(&self, other: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let equal = other.cast::<Item>().ok().map(|o| {
            let o = &o.get().0;
            Ok(self.0.vector == o.vector && same_record(py, &self.0, o)?)
        });
        eq_answer(py, equal)
    }
    fn __hash__(&self) -> u64 {
        hash_of(self.0.id, (self.0.ts + 0.0) as f32)
    }
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Item(id={}, text={}, ts={})",
            self.0.id,
            repr_text(py, self.0.text.as_deref()),
            self.0.ts
        )
    }
});

/// A new item that matched a standing query: ``subscription``, ``hit`` and the hit's fields
/// (``id``, ``text``, ``score``, ``ts``, ``metadata``), plus ``query``.
#[pyclass(frozen, module = "imesde._imesde")]
pub(crate) struct Event {
    /// None on a copy made by pickling (a subscription stays with its engine).
    pub(crate) subscription: Option<Py<Subscription>>,
    /// A copy's query (a live event reads its subscription's).
    pub(crate) query: Option<String>,
    pub(crate) hit: imesde_ring::Hit,
}

item_class!(
    Event,
    hit,
    ["id", "text", "score", "ts", "metadata", "query"],
    {
        fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
            if let Some(s) = &self.subscription {
                visit.call(s)?;
            }
            Ok(())
        }
        /// The subscription that fired (None on a copy unpickled elsewhere).
        #[getter]
        fn subscription(&self, py: Python<'_>) -> Option<Py<Subscription>> {
            self.subscription.as_ref().map(|s| s.clone_ref(py))
        }
        /// The subscription's query text (None for a vector query).
        #[getter]
        fn query(&self) -> Option<String> {
            match &self.subscription {
                Some(s) => s.get().query().map(str::to_owned),
                None => self.query.clone(),
            }
        }
        /// The matching item as a ``Hit``.
        #[getter]
        fn hit(&self) -> Hit {
            Hit(self.hit.clone())
        }
        /// Cosine similarity of the item to the query.
        #[getter]
        fn score(&self) -> f32 {
            self.hit.score
        }
        /// Pickles as its hit's fields and its query (Ray, ``multiprocessing``, ``copy``); the
        /// copy's ``subscription`` is None.
        fn __reduce__<'py>(
            slf: &Bound<'py, Self>,
        ) -> PyResult<Reduced<'py, (f32, Option<String>)>> {
            let me = slf.get();
            reduce_record(slf.as_any(), &me.hit, (me.hit.score, me.query()))
        }
        #[staticmethod]
        fn _from_fields(
            id: u64,
            score_query: (f32, Option<String>),
            text: Option<String>,
            ts: f64,
            metadata: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<Self> {
            let (text, metadata) = record_fields(text, metadata)?;
            let (score, query) = score_query;
            Ok(Event {
                subscription: None,
                query,
                hit: imesde_ring::Hit {
                    id,
                    score,
                    text,
                    ts,
                    metadata,
                },
            })
        }
        fn __repr__(&self, py: Python<'_>) -> String {
            let sub = self
                .subscription
                .as_ref()
                .map_or_else(|| "None".to_owned(), |s| s.get().id.to_string());
            format!(
                "Event(subscription={sub}, id={}, score={:.4}, text={})",
                self.hit.id,
                self.hit.score,
                repr_text(py, self.hit.text.as_deref())
            )
        }
    }
);
