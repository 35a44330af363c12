//! Python -> Rust argument conversion with clear, typed errors. Arrays are borrowed, never
//! copied or cast: a float64 or strided array is an error that says how to fix it.

use std::fmt::Write as _;
use std::sync::Arc;

use imesde_ring::{Filter, Metadata};
use numpy::{
    PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::Borrowed;
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyUnicodeEncodeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

use crate::exceptions::{Exc, class, err};

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

/// A count argument (`k`, `n`, sizes) as the caller gave it: any Python integer (numpy ones
/// too), however large. [`Count::positive`] checks it with the argument's name; a value
/// beyond `usize` saturates, since every count is capped at what the object holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Count(i128);

impl From<i64> for Count {
    fn from(v: i64) -> Self {
        Count(i128::from(v))
    }
}

impl Count {
    /// The count, when it is at least 1.
    pub(crate) fn positive(self, what: &str) -> PyResult<usize> {
        if self.0 < 1 {
            let got = if self.0 == i128::MIN {
                "a negative number".to_owned()
            } else {
                self.0.to_string()
            };
            return Err(err(
                Exc::InvalidValue,
                format!("{what} must be at least 1, got {got}"),
            ));
        }
        Ok(usize::try_from(self.0).unwrap_or(usize::MAX))
    }

    /// The count, when it is at least 0.
    pub(crate) fn non_negative(self, what: &str) -> PyResult<usize> {
        if self.0 == 0 {
            return Ok(0);
        }
        Count(self.0).positive(what).map_err(|_| {
            err(
                Exc::InvalidValue,
                format!("{what} must be at least 0, got a negative number"),
            )
        })
    }
}

impl<'py> FromPyObject<'_, 'py> for Count {
    type Error = PyErr;
    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<i64>() {
            Ok(v) => Ok(Count::from(v)),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
                // Beyond 64 bits: only the sign matters.
                let negative = obj.lt(0)?;
                Ok(Count(if negative { i128::MIN } else { i128::MAX }))
            }
            Err(_) => Err(err(
                Exc::DType,
                format!("expected an int, got {}", type_name(&obj)),
            )),
        }
    }
}

/// An item or document id: an integer from 0 to 2^64 - 1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Id(pub(crate) u64);

impl<'py> FromPyObject<'_, 'py> for Id {
    type Error = PyErr;
    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        id_of(&obj, "id").map(Id)
    }
}

/// `obj` as an id (see [`Id`]); `what` names it in errors.
pub(crate) fn id_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    match obj.extract::<u64>() {
        Ok(v) => Ok(v),
        Err(e)
            if e.is_instance_of::<PyOverflowError>(obj.py())
                || e.is_instance_of::<PyValueError>(obj.py()) =>
        {
            Err(err(
                Exc::OutOfRange,
                format!(
                    "{what} must be an integer from 0 to 2**64 - 1, got {}",
                    obj.repr().map_or_else(|_| "?".into(), |r| r.to_string())
                ),
            ))
        }
        Err(_) => Err(err(
            Exc::DType,
            format!("{what} must be an int, got {}", type_name(obj)),
        )),
    }
}

/// A real number argument (an int or float, numpy scalars too).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Real(pub(crate) f64);

impl<'py> FromPyObject<'_, 'py> for Real {
    type Error = PyErr;
    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<f64>() {
            Ok(v) => Ok(Real(v)),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => Err(err(
                Exc::OutOfRange,
                "the number is too large for a float".to_owned(),
            )),
            Err(_) => Err(err(
                Exc::DType,
                format!("expected a number, got {}", type_name(&obj)),
            )),
        }
    }
}

impl Real {
    /// The value as f32, when finite; `what` names it in errors.
    pub(crate) fn finite_f32(self, what: &str) -> PyResult<f32> {
        let v = self.0 as f32;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(err(
                Exc::InvalidValue,
                format!("{what} must be a finite number, got {}", self.0),
            ))
        }
    }
}

/// A str argument, readable as UTF-8.
#[derive(Debug, Clone)]
pub(crate) struct Text(pub(crate) String);

impl<'py> FromPyObject<'_, 'py> for Text {
    type Error = PyErr;
    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        let s = as_str(&obj, || "expected a str".to_owned())?;
        Ok(Text(utf8(s, "the text")?.to_owned()))
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// The UTF-8 of `s`; a lone surrogate (which UTF-8 cannot hold) is a `TextEncodingError`
/// (an `InvalidValueError` and a `UnicodeEncodeError`) naming `what`.
pub(crate) fn utf8<'a>(s: &'a Bound<'_, PyString>, what: &str) -> PyResult<&'a str> {
    s.to_str().map_err(|e| {
        let py = s.py();
        if !e.is_instance_of::<PyUnicodeEncodeError>(py) {
            return e;
        }
        let v = e.value(py);
        let field = |name: &str| v.getattr(name).and_then(|f| f.extract::<usize>()).ok();
        let (Some(start), Some(end)) = (field("start"), field("end")) else {
            return e;
        };
        let reason = format!(
            "surrogates not allowed: {what} is not valid Unicode text (replace the lone \
             surrogate, e.g. with s.encode('utf-8', 'replace').decode())"
        );
        let args = ("utf-8".to_owned(), s.clone().unbind(), start, end, reason);
        PyErr::from_type(class(py, Exc::TextEncoding), args)
    })
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
            Ok(Some(Arc::from(utf8(s, &format!("{what}[{i}]"))?)))
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
        return obj
            .call_method0("timestamp")
            .and_then(|t| t.extract::<f64>())
            .map_err(|e| {
                err(
                    Exc::InvalidValue,
                    format!("{what}: {} has no timestamp: {e}", type_name(obj)),
                )
            });
    }
    match obj.extract::<Real>() {
        Ok(Real(v)) => Ok(v),
        Err(e) if e.is_instance_of::<PyTypeError>(obj.py()) => Err(err(
            Exc::DType,
            format!(
                "{what} must be a number of seconds or a datetime, got {}",
                type_name(obj)
            ),
        )),
        Err(_) => Err(err(
            Exc::OutOfRange,
            format!("{what} is too large for a number of seconds"),
        )),
    }
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
            let (k, v) = (utf8(key, &format!("a {what} key"))?, utf8(val, what)?);
            Ok((k.to_owned(), v.to_owned()))
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
    // NaN would silently match nothing (or everything); an infinity is an open end.
    let bound = |t: &Bound<'_, PyAny>, what: &str| {
        let v = timestamp(t, what)?;
        if v.is_nan() {
            return Err(err(
                Exc::InvalidValue,
                format!("{what} is NaN; give seconds since the epoch or a datetime"),
            ));
        }
        Ok(v)
    };
    Ok(Filter {
        since: since.map(|t| bound(t, "since")).transpose()?,
        until: until.map(|t| bound(t, "until")).transpose()?,
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
            return Ok(vec![Arc::from(utf8(s, what)?)]);
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
        Ok(s) => Ok(Arc::from(utf8(s, what)?)),
        Err(_) => Err(err(
            Exc::DType,
            format!("{what} must be str, got {}", type_name(obj)),
        )),
    }
}

/// Ids from an iterable of ints (or an integer numpy array), each checked (see [`Id`]).
pub(crate) fn ids_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    obj.try_iter()
        .map_err(|_| {
            err(
                Exc::DType,
                format!("ids must be a list of int, got {}", type_name(obj)),
            )
        })?
        .enumerate()
        .map(|(i, id)| id_of(&id?, &format!("ids[{i}]")))
        .collect()
}

/// What `__reduce__` returns for an object whose pickle is its file format's bytes:
/// `(type(obj).from_bytes, (data, *more))`, so unpickling checks them as loading a file does.
pub(crate) fn reduce_to_bytes<'py>(
    obj: &Bound<'py, PyAny>,
    data: &[u8],
    more: Option<Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
    let py = obj.py();
    let from_bytes = obj.get_type().getattr(pyo3::intern!(py, "from_bytes"))?;
    let data = PyBytes::new(py, data).into_any();
    let args = match more {
        Some(m) => PyTuple::new(py, [data, m])?,
        None => PyTuple::new(py, [data])?,
    };
    Ok((from_bytes, args))
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
