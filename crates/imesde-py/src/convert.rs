//! Python -> Rust argument conversion with clear, typed errors. Arrays are borrowed, never
//! copied or cast: a float64 or strided array is an error that says how to fix it.

use std::sync::Arc;

use imesde_ring::{Filter, Metadata};
use numpy::{
    PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::exceptions::{Exc, err};

/// A borrowed float32 array of 1 or 2 dimensions, viewed as `rows x dim`.
#[allow(clippy::struct_field_names)]
pub(crate) struct Rows<'py> {
    array: PyReadonlyArrayDyn<'py, f32>,
    pub(crate) rows: usize,
    pub(crate) dim: usize,
    pub(crate) one_d: bool,
}

impl Rows<'_> {
    pub(crate) fn as_slice(&self) -> &[f32] {
        // Contiguity was checked when the view was made.
        self.array.as_slice().expect("checked C-contiguous")
    }
}

/// Borrows `obj` as a C-contiguous float32 array with 1 or 2 dimensions.
pub(crate) fn rows<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Rows<'py>> {
    let Ok(untyped) = obj.cast::<PyUntypedArray>() else {
        return Err(err(
            Exc::DType,
            format!(
                "{what} must be a numpy float32 array, got {}; use np.asarray(x, dtype=np.float32)",
                obj.get_type().name()?
            ),
        ));
    };
    let dtype = untyped.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<f32>(obj.py())) {
        return Err(err(
            Exc::DType,
            format!(
                "{what} must have dtype float32, got {dtype}; convert with x.astype(np.float32) (imesde never casts silently)"
            ),
        ));
    }
    let ndim = untyped.ndim();
    if ndim != 1 && ndim != 2 {
        return Err(err(
            Exc::Shape,
            format!("{what} must be 1-D or 2-D, got {ndim}-D"),
        ));
    }
    if !untyped.is_c_contiguous() {
        return Err(err(
            Exc::Shape,
            format!("{what} is not C-contiguous; pass np.ascontiguousarray(x)"),
        ));
    }
    let shape = untyped.shape();
    let (rows, dim) = if ndim == 1 {
        (1, shape[0])
    } else {
        (shape[0], shape[1])
    };
    if rows == 0 || dim == 0 {
        return Err(err(
            Exc::Shape,
            format!("{what} is empty (shape {shape:?})"),
        ));
    }
    let array = obj.cast::<PyArrayDyn<f32>>()?.try_readonly()?;
    Ok(Rows {
        array,
        rows,
        dim,
        one_d: ndim == 1,
    })
}

/// A positive count from a Python int (`k`, sizes): 0 and negatives are `InvalidValueError`.
pub(crate) fn positive(what: &str, v: i64) -> PyResult<usize> {
    if v <= 0 {
        return Err(err(
            Exc::InvalidValue,
            format!("{what} must be at least 1, got {v}"),
        ));
    }
    usize::try_from(v).map_err(|_| err(Exc::InvalidValue, format!("{what} is too large: {v}")))
}

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "?".into(), |n| n.to_string())
}

/// A list of optional texts, one per item.
pub(crate) fn texts(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<Option<Arc<str>>>> {
    if obj.is_instance_of::<PyString>() {
        return Err(err(
            Exc::DType,
            format!("{what} must be a list of str, got a single str"),
        ));
    }
    str_items(obj, what, true)
}

/// The items of an iterable of str (and None where `allow_none`).
pub(crate) fn str_items(
    obj: &Bound<'_, PyAny>,
    what: &str,
    allow_none: bool,
) -> PyResult<Vec<Option<Arc<str>>>> {
    let iter = obj.try_iter().map_err(|_| {
        err(
            Exc::DType,
            format!("{what} must be a list of str, got {}", type_name(obj)),
        )
    })?;
    let expected = if allow_none { "str or None" } else { "str" };
    iter.enumerate()
        .map(|(i, item)| {
            let item = item?;
            if allow_none && item.is_none() {
                return Ok(None);
            }
            let s = as_str(&item, || format!("{what}[{i}] must be {expected}"))?;
            Ok(Some(Arc::from(s.to_str()?)))
        })
        .collect()
}

/// `item` as a str; otherwise a `DTypeError` saying `"{must}, got <its type>"`.
pub(crate) fn as_str<'a, 'py>(
    item: &'a Bound<'py, PyAny>,
    must: impl FnOnce() -> String,
) -> PyResult<&'a Bound<'py, PyString>> {
    item.cast::<PyString>()
        .map_err(|_| err(Exc::DType, format!("{}, got {}", must(), type_name(item))))
}

/// A timestamp: seconds since the epoch as int / float, or a `datetime`.
pub(crate) fn timestamp(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    if obj.hasattr("timestamp")? && !obj.is_instance_of::<pyo3::types::PyFloat>() {
        return obj.call_method0("timestamp")?.extract::<f64>();
    }
    obj.extract::<f64>().map_err(|_| {
        err(
            Exc::DType,
            format!(
                "{what} must be a number of seconds or a datetime, got {}",
                type_name(obj)
            ),
        )
    })
}

pub(crate) fn timestamps(obj: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    obj.try_iter()
        .map_err(|_| {
            err(
                Exc::DType,
                format!("timestamps must be a sequence, got {}", type_name(obj)),
            )
        })?
        .enumerate()
        .map(|(i, t)| timestamp(&t?, &format!("timestamps[{i}]")))
        .collect()
}

/// A `dict[str, str]`.
pub(crate) fn str_dict(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<(String, String)>> {
    let dict = obj.cast::<PyDict>().map_err(|_| {
        err(
            Exc::DType,
            format!("{what} must be a dict[str, str], got {}", type_name(obj)),
        )
    })?;
    dict.iter()
        .map(|(k, v)| {
            let key = k.cast::<PyString>().map_err(|_| {
                err(
                    Exc::DType,
                    format!("{what} keys must be str, got {}", type_name(&k)),
                )
            })?;
            let val = v.cast::<PyString>().map_err(|_| {
                err(
                    Exc::DType,
                    format!("{what}[{key}] must be str, got {}", type_name(&v)),
                )
            })?;
            Ok((key.to_str()?.to_owned(), val.to_str()?.to_owned()))
        })
        .collect()
}

/// Metadata for `n` items: one dict for all, or a list of dicts / None.
pub(crate) fn metadata(obj: &Bound<'_, PyAny>, n: usize) -> PyResult<Vec<Option<Arc<Metadata>>>> {
    if obj.is_instance_of::<PyDict>() {
        let shared = Arc::new(Metadata::new(str_dict(obj, "metadata")?));
        return Ok(vec![Some(shared); n]);
    }
    obj.try_iter()
        .map_err(|_| {
            err(
                Exc::DType,
                format!(
                    "metadata must be a dict[str, str] or a list of them, got {}",
                    type_name(obj)
                ),
            )
        })?
        .enumerate()
        .map(|(i, m)| {
            let m = m?;
            if m.is_none() {
                Ok(None)
            } else {
                Ok(Some(Arc::new(Metadata::new(str_dict(
                    &m,
                    &format!("metadata[{i}]"),
                )?))))
            }
        })
        .collect()
}

/// Builds a search filter from the keyword arguments.
pub(crate) fn filter(
    since: Option<&Bound<'_, PyAny>>,
    until: Option<&Bound<'_, PyAny>>,
    where_: Option<&Bound<'_, PyAny>>,
) -> PyResult<Filter> {
    Ok(Filter {
        since: since.map(|t| timestamp(t, "since")).transpose()?,
        until: until.map(|t| timestamp(t, "until")).transpose()?,
        equals: where_
            .map(|w| str_dict(w, "where"))
            .transpose()?
            .unwrap_or_default(),
    })
}

/// Metadata as a new Python dict, or None.
pub(crate) fn meta_dict<'py>(
    py: Python<'py>,
    m: Option<&Metadata>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Some(m) = m else { return Ok(None) };
    let d = PyDict::new(py);
    for (k, v) in m.iter() {
        d.set_item(k, v)?;
    }
    Ok(Some(d))
}

/// Texts to embed: a list (or any iterable) of str; a lone str counts as one text when
/// `single` allows it. `None` and other types are `DTypeError`s (a `TypeError`).
pub(crate) fn strs(obj: &Bound<'_, PyAny>, what: &str, single: bool) -> PyResult<Vec<Arc<str>>> {
    if let Ok(s) = obj.cast::<PyString>() {
        if single {
            return Ok(vec![Arc::from(s.to_str()?)]);
        }
        return Err(err(
            Exc::DType,
            format!("{what} must be a list of str, got a single str (use ingest for one text)"),
        ));
    }
    Ok(str_items(obj, what, false)?.into_iter().flatten().collect())
}

/// One text.
pub(crate) fn one_str(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Arc<str>> {
    match obj.cast::<PyString>() {
        Ok(s) => Ok(Arc::from(s.to_str()?)),
        Err(_) => Err(err(
            Exc::DType,
            format!("{what} must be str, got {}", type_name(obj)),
        )),
    }
}
