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

/// A `#[pymethods]` block for `$ty` with the getters of the core record at `self.$field`,
/// then `$extra`.
macro_rules! item_class {
    ($ty:ty, $field:tt, { $($extra:tt)* }) => {
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
            $($extra)*
        }
    };
}

/// `text` as Python's repr shows it, or `None`.
fn repr_text(py: Python<'_>, text: Option<&str>) -> String {
    text.map_or_else(|| "None".to_owned(), |t| py_str(py, t))
}

/// What a pickled `Hit` holds: id, score, text, ts, metadata.
type HitFields<'py> = (u64, f32, Option<String>, f64, Option<Bound<'py, PyDict>>);

/// One search result: ``id``, ``text``, ``score``, ``ts``, ``metadata``.
///
/// Unpacks as ``(text, score)``, so ``for text, score in engine.search_vector(q)`` works.
#[pyclass(frozen, module = "imesde._imesde")]
pub(crate) struct Hit(pub(crate) imesde_ring::Hit);

item_class!(Hit, 0, {
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
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, HitFields<'py>)> {
        let h = &slf.get().0;
        let meta = meta_dict(slf.py(), h.metadata.as_ref())?;
        let from = slf
            .get_type()
            .getattr(pyo3::intern!(slf.py(), "_from_fields"))?;
        Ok((
            from,
            (
                h.id,
                h.score,
                h.text.as_deref().map(str::to_owned),
                h.ts,
                meta,
            ),
        ))
    }
    #[staticmethod]
    fn _from_fields(
        id: u64,
        score: f32,
        text: Option<String>,
        ts: f64,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        Ok(Hit(imesde_ring::Hit {
            id,
            score,
            text: text.map(Arc::from),
            ts,
            metadata: metadata.map(|m| meta_map(m, "metadata")).transpose()?,
        }))
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

item_class!(Item, 0, {
    /// A copy of the stored unit-length vector (dequantised for int8 storage).
    #[getter]
    fn vector<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        PyArray1::from_slice(py, &self.0.vector)
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
    pub(crate) subscription: Py<Subscription>,
    pub(crate) hit: imesde_ring::Hit,
}

item_class!(Event, hit, {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.subscription)
    }
    /// The subscription that fired.
    #[getter]
    fn subscription(&self, py: Python<'_>) -> Py<Subscription> {
        self.subscription.clone_ref(py)
    }
    /// The subscription's query text (None for a vector query).
    #[getter]
    fn query(&self) -> Option<String> {
        self.subscription.get().query().map(str::to_owned)
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
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Event(subscription={}, id={}, score={:.4}, text={})",
            self.subscription.get().id,
            self.hit.id,
            self.hit.score,
            repr_text(py, self.hit.text.as_deref())
        )
    }
});
