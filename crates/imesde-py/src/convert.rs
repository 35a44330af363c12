//! Python -> Rust argument conversion with clear, typed errors. Arrays are borrowed, never
//! copied or cast: a float64 or strided array is an error that says how to fix it.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use imesde_ring::{
    Filter, KeyInterner, MAX_FILTER_DEPTH, Metadata, MetadataUpdate, Predicate, Value,
};
use numpy::{
    PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::Borrowed;
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyUnicodeEncodeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyComplex, PyDict, PyFloat, PyFrozenSet, PyInt, PyList,
    PyMapping, PyMemoryView, PySet, PyString, PyTuple,
};
use serde_json::Value as Json;

use crate::exceptions::{Exc, class, err, py_err};

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
        // Contiguity and alignment were made sure of when the view was made.
        self.array
            .as_slice()
            .expect("a C-contiguous, aligned array")
    }
}

/// Borrows `obj` as a C-contiguous float32 array with 1 or 2 dimensions (an unaligned one is
/// copied).
pub(crate) fn rows<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Rows<'py>> {
    rows_of(obj, what, false)
}

/// [`rows`], also taking a 2-D array of no rows (`[0, dim]`): an empty batch of queries, as
/// faiss takes one.
pub(crate) fn batch_rows<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Rows<'py>> {
    rows_of(obj, what, true)
}

fn rows_of<'py>(obj: &Bound<'py, PyAny>, what: &str, empty_ok: bool) -> PyResult<Rows<'py>> {
    let Ok(untyped) = obj.cast::<PyUntypedArray>() else {
        return Err(py_err!(
            DType,
            "{what} must be a numpy float32 array, got {}; use np.asarray(x, dtype=np.float32)",
            obj.get_type().name()?
        ));
    };
    let dtype = untyped.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<f32>(obj.py())) {
        return Err(py_err!(
            DType,
            "{what} must have dtype float32, got {dtype}; convert with np.ascontiguousarray(x, dtype=np.float32) (imesde never casts silently)"
        ));
    }
    let ndim = untyped.ndim();
    if ndim != 1 && ndim != 2 {
        return Err(py_err!(Shape, "{what} must be 1-D or 2-D, got {ndim}-D"));
    }
    if !untyped.is_c_contiguous() {
        return Err(py_err!(
            Shape,
            "{what} is not C-contiguous; pass np.ascontiguousarray(x)"
        ));
    }
    let shape = untyped.shape();
    let (rows, dim) = if ndim == 1 {
        (1, shape[0])
    } else {
        (shape[0], shape[1])
    };
    if dim == 0 || (rows == 0 && !(empty_ok && ndim == 2)) {
        return Err(py_err!(Shape, "{what} is empty (shape {shape:?})"));
    }
    let mut array = obj.cast::<PyArrayDyn<f32>>()?.try_readonly()?;
    if array.as_slice().is_err() {
        // C-contiguous but not aligned for f32 (`np.frombuffer` at an odd offset): read from
        // an aligned copy of the same values.
        let copy = obj.call_method0(pyo3::intern!(obj.py(), "copy"))?;
        array = copy.cast_into::<PyArrayDyn<f32>>()?.try_readonly()?;
    }
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
            return Err(py_err!(
                InvalidValue,
                "{what} must be at least 1, got {got}"
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
            py_err!(
                InvalidValue,
                "{what} must be at least 0, got a negative number"
            )
        })
    }
}

impl<'py> FromPyObject<'_, 'py> for Count {
    type Error = PyErr;
    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        // A bool is an int to Python, never a count (k=True is a mistake, not k=1).
        if obj.is_instance_of::<PyBool>() {
            return Err(py_err!(DType, "expected an int, got {}", given(&obj)));
        }
        match obj.extract::<i64>() {
            Ok(v) => Ok(Count::from(v)),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
                // Beyond 64 bits: only the sign matters.
                let negative = obj.lt(0)?;
                Ok(Count(if negative { i128::MIN } else { i128::MAX }))
            }
            Err(_) => Err(py_err!(DType, "expected an int, got {}", given(&obj))),
        }
    }
}

/// A flag argument: a bool (numpy's too).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flag(pub(crate) bool);

impl<'py> FromPyObject<'_, 'py> for Flag {
    type Error = PyErr;
    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        obj.extract::<bool>()
            .map(Flag)
            .map_err(|_| py_err!(DType, "expected a bool, got {}", given(&obj)))
    }
}

/// Whether `inspect.<test>(obj)` holds (`iscoroutinefunction`, `isasyncgen`, ...).
pub(crate) fn inspect_is(obj: &Bound<'_, PyAny>, test: &Bound<'_, PyString>) -> PyResult<bool> {
    let py = obj.py();
    py.import(pyo3::intern!(py, "inspect"))?
        .call_method1(test, (obj,))?
        .is_truthy()
}

/// A file path argument: a str, bytes or ``os.PathLike``.
pub(crate) struct FsPath(pub(crate) PathBuf);

impl std::ops::Deref for FsPath {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl<'py> FromPyObject<'_, 'py> for FsPath {
    type Error = PyErr;
    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        let py = obj.py();
        match obj.extract::<PathBuf>() {
            Ok(p) => Ok(FsPath(p)),
            // A str that the file system cannot name (a lone surrogate): a TextEncodingError,
            // which is the UnicodeEncodeError open() raises and an ImesdeError.
            Err(e) if e.is_instance_of::<PyUnicodeEncodeError>(py) => {
                match py_fspath(&obj).map(Bound::cast_into::<PyString>) {
                    Ok(Ok(s)) => Err(utf8(&s, "the path").err().unwrap_or(e)),
                    _ => Err(e),
                }
            }
            Err(e) if !e.is_instance_of::<PyTypeError>(py) => Err(e),
            Err(_) => {
                // bytes, or an os.PathLike that gives bytes: a path as open() takes it.
                #[cfg(unix)]
                if let Ok(raw) = py_fspath(&obj)
                    && let Ok(bytes) = raw.cast::<PyBytes>()
                {
                    use std::os::unix::ffi::OsStrExt;
                    let path = std::ffi::OsStr::from_bytes(bytes.as_bytes());
                    return Ok(FsPath(PathBuf::from(path)));
                }
                // Elsewhere bytes name a path in the file system encoding (UTF-8 on Windows):
                // `os.fsdecode` reads them as open() does.
                #[cfg(not(unix))]
                if let Ok(raw) = py_fspath(&obj)
                    && raw.is_instance_of::<PyBytes>()
                {
                    let decoded = py
                        .import(pyo3::intern!(py, "os"))?
                        .call_method1(pyo3::intern!(py, "fsdecode"), (raw,))?;
                    return decoded.extract::<PathBuf>().map(FsPath);
                }
                Err(py_err!(
                    DType,
                    "expected a path (str, bytes or os.PathLike), got {}",
                    type_name(&obj)
                ))
            }
        }
    }
}

/// `os.fspath(obj)`.
fn py_fspath<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    py.import(pyo3::intern!(py, "os"))?
        .call_method1(pyo3::intern!(py, "fspath"), (obj,))
}

/// The bytes of a bytes-like argument: bytes as they are, a bytearray or memoryview copied.
pub(crate) fn byte_data<'a>(obj: &'a Bound<'_, PyAny>) -> PyResult<Cow<'a, [u8]>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Cow::Borrowed(b.as_bytes()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Cow::Owned(b.to_vec()));
    }
    if obj.is_instance_of::<PyMemoryView>() {
        let copy = obj.py().get_type::<PyBytes>().call1((obj,))?;
        return Ok(Cow::Owned(copy.cast::<PyBytes>()?.as_bytes().to_vec()));
    }
    Err(py_err!(
        DType,
        "data must be bytes, bytearray or memoryview, got {}",
        type_name(obj)
    ))
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

/// Whether `obj` is a bool: Python's, or numpy's as a scalar or a 0-d array
/// (`dtype.kind == "b"`).
pub(crate) fn is_bool(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<PyBool>()
        || (!obj.is_instance_of::<PyInt>()
            && obj
                .getattr(pyo3::intern!(obj.py(), "dtype"))
                .and_then(|d| d.getattr(pyo3::intern!(obj.py(), "kind")))
                .is_ok_and(|k| k.extract::<String>().is_ok_and(|k| k == "b")))
}

/// `obj` as an id (see [`Id`]); `what` names it in errors.
pub(crate) fn id_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    // A bool is an int to Python (numpy's converts to one), never an id.
    if is_bool(obj) {
        return Err(py_err!(DType, "{what} must be an int, got bool"));
    }
    match obj.extract::<u64>() {
        Ok(v) => Ok(v),
        Err(e)
            if e.is_instance_of::<PyOverflowError>(obj.py())
                || e.is_instance_of::<PyValueError>(obj.py()) =>
        {
            Err(py_err!(
                OutOfRange,
                "{what} must be an integer from 0 to 2**64 - 1, got {}",
                obj.repr().map_or_else(|_| "?".into(), |r| r.to_string())
            ))
        }
        Err(_) => Err(py_err!(
            DType,
            "{what} must be an int, got {}",
            type_name(obj)
        )),
    }
}

/// A real number argument (an int or float, numpy scalars too).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Real(pub(crate) f64);

impl<'py> FromPyObject<'_, 'py> for Real {
    type Error = PyErr;
    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        // A bool is a number to Python, never a parameter's value (k1=True is a mistake).
        if obj.is_instance_of::<PyBool>() || numpy_kind(&obj) == Some('b') {
            return Err(py_err!(DType, "expected a number, got {}", given(&obj)));
        }
        // numpy's complex scalars convert with only a warning, their imaginary part dropped.
        if obj.is_instance_of::<PyComplex>() || numpy_kind(&obj) == Some('c') {
            return Err(py_err!(
                DType,
                "expected a real number, got {}",
                given(&obj)
            ));
        }
        match obj.extract::<f64>() {
            Ok(v) => Ok(Real(v)),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => Err(err(
                Exc::OutOfRange,
                "the number is too large for a float".to_owned(),
            )),
            Err(_) => Err(py_err!(DType, "expected a number, got {}", given(&obj))),
        }
    }
}

/// The dtype kind of a numpy scalar (`'b'` for `np.True_`, `'c'` for `np.complex64(1)`: both
/// numbers to `float()`); None for anything else. Python's own floats and ints answer at once.
fn numpy_kind(obj: &Bound<'_, PyAny>) -> Option<char> {
    if obj.is_exact_instance_of::<PyFloat>() || obj.is_exact_instance_of::<PyInt>() {
        return None;
    }
    let ty = obj.get_type();
    if !ty
        .module()
        .is_ok_and(|m| m.to_cow().is_ok_and(|m| m == "numpy"))
    {
        return None;
    }
    let kind = obj.getattr("dtype").and_then(|d| d.getattr("kind")).ok()?;
    kind.extract::<char>().ok()
}

impl Real {
    /// The value as f32, when finite; `what` names it in errors.
    pub(crate) fn finite_f32(self, what: &str) -> PyResult<f32> {
        let v = self.0 as f32;
        if v.is_finite() {
            Ok(v)
        } else {
            let range = if self.0.is_finite() {
                " within float32's range"
            } else {
                ""
            };
            Err(py_err!(
                InvalidValue,
                "{what} must be a finite number{range}, got {}",
                self.0
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
        match class(py, Exc::TextEncoding) {
            Ok(class) => PyErr::from_type(class, args),
            Err(e) => e,
        }
    })
}

/// An argument's type and a short repr, for the messages of extractors that cannot name the
/// argument (`PyO3` names it only in a note, which `str(e)` and most log lines leave out): with
/// several ints in one call, `got str '3'` says which one was wrong.
fn given(obj: &Bound<'_, PyAny>) -> String {
    const SHOWN: usize = 40;
    let name = type_name(obj);
    let Ok(repr) = obj.repr() else {
        return name;
    };
    let repr = repr.to_string_lossy();
    match repr.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{name} {}...", &repr[..cut]),
        None => format!("{name} {repr}"),
    }
}

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "?".into(), |n| n.to_string())
}

/// A list of optional texts, one per item.
pub(crate) fn texts(
    obj: &Bound<'_, PyAny>,
    what: &str,
    n: usize,
) -> PyResult<Vec<Option<Arc<str>>>> {
    if obj.is_instance_of::<PyString>() {
        return Err(py_err!(
            DType,
            "{what} must be a list of str, got a single str"
        ));
    }
    one_per_item(str_items_upto(obj, what, true, Some(n))?, n, what)
}

/// Refuses entry `i` of a column of `n` entries (checked before reading it, so an endless
/// iterator is read one past them, not until memory runs out).
fn within(i: usize, n: usize, what: &str) -> PyResult<()> {
    if i == n {
        return Err(py_err!(
            Shape,
            "{what} has more than {n} entries for {n} items"
        ));
    }
    Ok(())
}

/// A column given for `n` items, refused unless it has one entry each: an empty one is not
/// "none given" (that is None), and a shorter one names its length here, where it is known.
fn one_per_item<T>(column: Vec<T>, n: usize, what: &str) -> PyResult<Vec<T>> {
    let len = column.len();
    if len == n {
        return Ok(column);
    }
    let entries = if len == 1 { "entry" } else { "entries" };
    Err(py_err!(
        Shape,
        "{what} has {len} {entries}, expected {n} (one per item)"
    ))
}

/// The items of an iterable of str (and None where `allow_none`).
pub(crate) fn str_items(
    obj: &Bound<'_, PyAny>,
    what: &str,
    allow_none: bool,
) -> PyResult<Vec<Option<Arc<str>>>> {
    str_items_upto(obj, what, allow_none, None)
}

/// [`str_items`], refused past `n` items when given.
fn str_items_upto(
    obj: &Bound<'_, PyAny>,
    what: &str,
    allow_none: bool,
    n: Option<usize>,
) -> PyResult<Vec<Option<Arc<str>>>> {
    // Bytes iterate as ints: say what was given, not "texts[0] must be str, got int".
    if obj.is_instance_of::<PyBytes>() || obj.is_instance_of::<PyByteArray>() {
        return Err(py_err!(
            DType,
            "{what} must be a list of str, got {} (decode it first)",
            type_name(obj)
        ));
    }
    // A pyarrow Array or ChunkedArray iterates as pyarrow scalars: read its Python values
    // (`_args.python_values`; a list or tuple is read as it is, without the call).
    let values;
    let obj = if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        obj
    } else {
        let py = obj.py();
        values = args(py, pyo3::intern!(py, "python_values"))?.call1((obj,))?;
        &values
    };
    let iter = obj.try_iter().map_err(|_| {
        py_err!(
            DType,
            "{what} must be a list of str, got {}",
            type_name(obj)
        )
    })?;
    let expected = if allow_none { "str or None" } else { "str" };
    iter.enumerate()
        .map(|(i, item)| {
            if let Some(n) = n {
                within(i, n, what)?;
            }
            let item = item?;
            // pandas marks a missing str as NaN or NA.
            if allow_none
                && !item.is_instance_of::<PyString>()
                && (is_missing(&item) || item.extract::<f64>().is_ok_and(f64::is_nan))
            {
                return Ok(None);
            }
            let s = as_str(&item, || format!("{what}[{i}] must be {expected}"))?;
            Ok(Some(Arc::from(utf8(s, &format!("{what}[{i}]"))?)))
        })
        .collect()
}

/// Whether `v` is a missing value: None, pandas' `NA` or `NaT`, or numpy's `NaT`.
fn is_missing(v: &Bound<'_, PyAny>) -> bool {
    if v.is_none() {
        return true;
    }
    // The values metadata holds are answered without reading a type's name.
    let plain = v.is_instance_of::<PyString>()
        || v.is_instance_of::<PyInt>()
        || v.is_instance_of::<PyFloat>()
        || v.is_instance_of::<PyList>();
    !plain
        && (v
            .get_type()
            .name()
            .is_ok_and(|n| matches!(n.to_cow().as_deref(), Ok("NAType" | "NaTType")))
            || numpy_as_python(v, 0).is_some_and(|plain| plain.is_none()))
}

/// `item` as a str; otherwise a `DTypeError` saying `"{must}, got <its type>"`.
pub(crate) fn as_str<'a, 'py>(
    item: &'a Bound<'py, PyAny>,
    must: impl FnOnce() -> String,
) -> PyResult<&'a Bound<'py, PyString>> {
    item.cast::<PyString>()
        .map_err(|_| py_err!(DType, "{}, got {}", must(), type_name(item)))
}

/// A timestamp: seconds since the epoch as int / float, or a `datetime`.
pub(crate) fn timestamp(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    // Plain numbers (a column is read a value at a time) are read below without a look at
    // their type's name.
    if !(obj.is_instance_of::<PyFloat>() || obj.is_instance_of::<PyInt>())
        && let Some(seconds) = time_seconds(obj, what)?
    {
        return Ok(seconds);
    }
    match obj.extract::<Real>() {
        Ok(Real(v)) => Ok(v),
        Err(e) if e.is_instance_of::<PyTypeError>(obj.py()) => Err(py_err!(
            DType,
            "{what} must be a number of seconds or a datetime, got {}",
            type_name(obj)
        )),
        Err(_) => Err(py_err!(
            OutOfRange,
            "{what} is too large for a number of seconds"
        )),
    }
}

/// Seconds since the epoch of what is not a plain number: a 0-d array's scalar, a numpy
/// `datetime64`, a pandas `Timestamp`, anything with `timestamp()`; None for anything else.
fn time_seconds(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<f64>> {
    // A 0-d array (`np.array(t)`) as the scalar it holds.
    if let Ok(array) = obj.cast::<PyUntypedArray>()
        && array.ndim() == 0
    {
        return timestamp(&obj.get_item(PyTuple::empty(obj.py()))?, what).map(Some);
    }
    if let Some(seconds) = datetime64_seconds(obj, what)? {
        return Ok(Some(seconds));
    }
    // A pyarrow timestamp scalar as the datetime64 it holds (a date is refused).
    if obj
        .get_type()
        .module()
        .is_ok_and(|m| m.to_cow().is_ok_and(|m| m.starts_with("pyarrow")))
    {
        let held = args(obj.py(), pyo3::intern!(obj.py(), "arrow_times"))?.call1((obj, what))?;
        if let Some(seconds) = datetime64_seconds(&held, what)? {
            return Ok(Some(seconds));
        }
    }
    // A pandas `Timestamp` (or `NaT`) to the nanosecond, as its Series' datetime64 values
    // are read: its `timestamp()` rounds to microseconds. One beyond int64 nanoseconds
    // (pandas 3 holds far dates in other units) as the datetime64 it holds.
    if matches!(&*obj.get_type().name()?.to_cow()?, "Timestamp" | "NaTType") {
        if let Ok(ns) = obj
            .getattr(pyo3::intern!(obj.py(), "value"))
            .and_then(|v| v.extract::<i64>())
        {
            if ns == i64::MIN {
                return Err(py_err!(InvalidValue, "{what} is NaT (not a time)"));
            }
            // Whole seconds and the rest apart, as `_args.datetime64_seconds` splits them.
            let (whole, rest) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
            return Ok(Some(whole as f64 + rest as f64 / 1e9));
        }
        if let Ok(held) = obj.getattr(pyo3::intern!(obj.py(), "asm8"))
            && let Some(seconds) = datetime64_seconds(&held, what)?
        {
            return Ok(Some(seconds));
        }
    }
    if obj.hasattr("timestamp")? {
        let seconds = obj
            .call_method0("timestamp")
            .and_then(|t| t.extract::<f64>())
            .or_else(|e| {
                // `datetime.min` / `datetime.max` naive, where the local zone puts them
                // beyond the years a datetime holds; on Windows any naive time before 1970
                // or after 3000.
                args(obj.py(), pyo3::intern!(obj.py(), "naive_seconds"))?
                    .call1((obj,))?
                    .extract::<Option<f64>>()?
                    .ok_or(e)
            });
        return seconds.map(Some).map_err(|e| {
            py_err!(
                InvalidValue,
                "{what}: {} has no timestamp: {e}",
                type_name(obj)
            )
        });
    }
    Ok(None)
}

/// Seconds since the epoch of a numpy `datetime64` (any unit: `float()` of a nanosecond one
/// is its count of nanoseconds); `None` for anything else. `NaT` is refused.
fn datetime64_seconds(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<f64>> {
    let py = obj.py();
    if obj.get_type().name()?.to_cow()? != "datetime64" {
        return Ok(None);
    }
    let numpy = py.import(pyo3::intern!(py, "numpy"))?;
    if !obj.is_instance(&numpy.getattr(pyo3::intern!(py, "datetime64"))?)? {
        return Ok(None);
    }
    let seconds: f64 = seconds_of_datetime64(obj, what)?.extract()?;
    if seconds.is_nan() {
        return Err(py_err!(InvalidValue, "{what} is NaT (not a time)"));
    }
    Ok(Some(seconds))
}

pub(crate) fn timestamps(obj: &Bound<'_, PyAny>, n: usize) -> PyResult<Vec<f64>> {
    if let Some(seconds) = array_seconds(obj)? {
        return one_per_item(seconds, n, "timestamps");
    }
    // Anything but a list: checked as a column (`_args.time_column`: bytes iterate as ints,
    // a set and a mapping in an order of their own), and a pandas Series or Index of
    // datetimes, or a pyarrow array of timestamps, read whole as its datetime64 values (a
    // value at a time cost microseconds each).
    if !(obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>()) {
        let py = obj.py();
        let column = args(py, pyo3::intern!(py, "time_column"))?.call1((obj,))?;
        if let Some(seconds) = array_seconds(&column)? {
            return one_per_item(seconds, n, "timestamps");
        }
    }
    let seconds = obj
        .try_iter()
        .map_err(|_| {
            py_err!(
                DType,
                "timestamps must be a sequence, got {}",
                type_name(obj)
            )
        })?
        .enumerate()
        .map(|(i, t)| {
            within(i, n, "timestamps")?;
            timestamp(&t?, &format!("timestamps[{i}]"))
        })
        .collect::<PyResult<Vec<f64>>>()?;
    one_per_item(seconds, n, "timestamps")
}

/// `imesde._args.datetime64_seconds` of a `datetime64` scalar or array (any unit, far dates
/// too: numpy's own subtraction wraps past int64).
fn seconds_of_datetime64<'py>(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    args(py, pyo3::intern!(py, "datetime64_seconds"))?.call1((obj, what))
}

/// The function `name` of `imesde._args`, the Python side of these conversions.
fn args<'py>(py: Python<'py>, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
    py.import(pyo3::intern!(py, "imesde._args"))?.getattr(name)
}

/// Seconds of a 1-D numpy array of numbers or `datetime64` (any unit) converted whole, as
/// [`timestamp`] converts each of its values (a value at a time cost microseconds each);
/// `None` for anything else. `NaT` is refused.
fn array_seconds(obj: &Bound<'_, PyAny>) -> PyResult<Option<Vec<f64>>> {
    let Ok(untyped) = obj.cast::<PyUntypedArray>() else {
        return Ok(None);
    };
    let kind = untyped.dtype().kind();
    if untyped.ndim() != 1 || !matches!(kind, b'f' | b'i' | b'u' | b'M') {
        return Ok(None);
    }
    let py = obj.py();
    let numpy = py.import(pyo3::intern!(py, "numpy"))?;
    let seconds = if kind == b'M' {
        seconds_of_datetime64(obj, "timestamps")?
    } else {
        obj.clone()
    };
    let seconds = numpy
        .getattr(pyo3::intern!(py, "ascontiguousarray"))?
        .call1((seconds, numpy.getattr("float64")?))?;
    let seconds = seconds.cast::<PyArrayDyn<f64>>()?.try_readonly()?;
    let seconds = seconds.as_slice()?.to_vec();
    if kind == b'M'
        && let Some(i) = seconds.iter().position(|s| s.is_nan())
    {
        return Err(py_err!(InvalidValue, "timestamps[{i}] is NaT (not a time)"));
    }
    Ok(Some(seconds))
}

/// Why a metadata value was refused: a message of one exception class, or an error made
/// already (text encoding errors carry the offending string).
enum BadValue {
    Msg(Exc, String),
    Py(PyErr),
}

impl BadValue {
    /// The Python error, with a type error raised as `dtype_as`.
    fn into_err(self, dtype_as: Exc) -> PyErr {
        match self {
            BadValue::Msg(Exc::DType, m) => err(dtype_as, m),
            BadValue::Msg(e, m) => err(e, m),
            BadValue::Py(e) => e,
        }
    }
}

/// One metadata value: a str, int, float or bool (numpy scalars too), or, at the top level
/// (`list_ok`), a list or tuple of them.
fn meta_value(v: &Bound<'_, PyAny>, what: &str, list_ok: bool) -> Result<Value, BadValue> {
    if v.is_instance_of::<PyBool>() {
        return Ok(Value::Bool(v.is_truthy().unwrap_or(false)));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return utf8(s, what).map(Value::from).map_err(BadValue::Py);
    }
    if v.is_instance_of::<PyInt>() {
        return v.extract::<i64>().map(Value::Int).map_err(|_| {
            BadValue::Msg(
                Exc::OutOfRange,
                format!("{what} = {v} is outside the 64-bit signed integers metadata holds"),
            )
        });
    }
    if v.is_instance_of::<PyFloat>() {
        let f: f64 = v.extract().unwrap_or(f64::NAN);
        let hint = if f.is_nan() {
            " (a gap? None is no value for the key)"
        } else {
            ""
        };
        return if f.is_finite() {
            Ok(Value::Float(f))
        } else {
            Err(BadValue::Msg(
                Exc::InvalidValue,
                format!("{what} = {f} is not a finite number{hint}"),
            ))
        };
    }
    if list_ok && (v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>()) {
        let mut out = Vec::new();
        for (i, x) in v.try_iter().map_err(BadValue::Py)?.enumerate() {
            let x = x.map_err(BadValue::Py)?;
            out.push(meta_value(&x, &format!("{what}[{i}]"), false)?);
        }
        return Ok(Value::from(out));
    }
    // numpy scalars (np.int64, np.float32, np.bool_, np.str_) and 1-D arrays: their Python
    // values.
    if let Some(plain) = numpy_as_python(v, usize::from(list_ok)) {
        return meta_value(&plain, what, list_ok);
    }
    let expected = if list_ok {
        "str, int, float, bool or a list of them"
    } else {
        "str, int, float or bool"
    };
    Err(BadValue::Msg(
        Exc::DType,
        format!("{what} must be a {expected}, got {}", type_name(v)),
    ))
}

/// A numpy scalar (or array of at most `max_ndim` dimensions) as the Python value numpy's
/// `item()` / `tolist()` gives; None for anything else. A `datetime64` or `timedelta64` is
/// no such value (`item()` gives an int for nanoseconds, a datetime for microseconds): only
/// its `NaT` is, as None.
fn numpy_as_python<'py>(v: &Bound<'py, PyAny>, max_ndim: usize) -> Option<Bound<'py, PyAny>> {
    let py = v.py();
    let dtype = v.getattr(pyo3::intern!(py, "dtype")).ok()?;
    let ndim = v
        .getattr(pyo3::intern!(py, "ndim"))
        .ok()?
        .extract::<usize>()
        .ok()?;
    let kind = dtype.getattr(pyo3::intern!(py, "kind")).ok()?;
    if matches!(kind.extract::<&str>(), Ok("M" | "m")) {
        return (ndim == 0)
            .then(|| v.call_method0(pyo3::intern!(py, "item")).ok())
            .flatten()
            .filter(PyAnyMethods::is_none);
    }
    let method = match ndim {
        0 => pyo3::intern!(py, "item"),
        n if n <= max_ndim => pyo3::intern!(py, "tolist"),
        _ => return None,
    };
    v.call_method0(method).ok().filter(|plain| !plain.is(v))
}

/// `obj` as a dict when it is one or another mapping (`MappingProxyType`, a `Mapping`
/// subclass), copied to a dict then; `None` for anything else.
fn mapping<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyDict>>> {
    if let Ok(d) = obj.cast::<PyDict>() {
        return Ok(Some(d.clone()));
    }
    let Ok(m) = obj.cast::<PyMapping>() else {
        return Ok(None);
    };
    let d = PyDict::new(obj.py());
    d.update(m)?;
    Ok(Some(d))
}

/// A metadata dict: str keys, values as [`meta_value`] takes them.
pub(crate) fn meta_map(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Metadata> {
    meta_map_with(obj, what, &mut KeyInterner::default())
}

/// [`meta_map`] sharing one allocation per distinct key through `keys` (the items of a batch
/// mostly have the same keys; a filter then reads one hot copy of each).
fn meta_map_with(obj: &Bound<'_, PyAny>, what: &str, keys: &mut KeyInterner) -> PyResult<Metadata> {
    let pairs = meta_pairs(obj, what, keys)?;
    Ok(Metadata::new(
        pairs.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))),
    ))
}

/// The pairs of a metadata dict: str keys, values as [`meta_value`] takes them, a missing one
/// ([`is_missing`]: None, pandas' `NA` or `NaT`) as None: a key left out of new metadata,
/// removed by an update.
fn meta_pairs(
    obj: &Bound<'_, PyAny>,
    what: &str,
    keys: &mut KeyInterner,
) -> PyResult<Vec<(Arc<str>, Option<Value>)>> {
    let dict = mapping(obj)?.ok_or_else(|| {
        py_err!(
            DType,
            "{what} must be a dict (str keys; str, int, float, bool or list values), got {}",
            type_name(obj)
        )
    })?;
    dict.iter()
        .map(|(k, v)| {
            let key = k
                .cast::<PyString>()
                .map_err(|_| py_err!(DType, "{what} keys must be str, got {}", type_name(&k)))?;
            let key = utf8(key, &format!("a {what} key"))?;
            let value = if is_missing(&v) {
                None
            } else {
                Some(
                    meta_value(&v, &format!("{what}[{key:?}]"), true)
                        .map_err(|e| e.into_err(Exc::DType))?,
                )
            };
            Ok((keys.intern(key), value))
        })
        .collect()
}

/// The metadata changes of `Engine.update_metadata` for `n` ids: one dict for all (a list of
/// one), or one dict (or None) per id; only one dict without ids (`n` None). With `merge`, a
/// dict's keys are set and those given None removed (None: no change); otherwise a dict
/// replaces the metadata (None: none).
pub(crate) fn metadata_updates(
    obj: &Bound<'_, PyAny>,
    n: Option<usize>,
    merge: bool,
) -> PyResult<Vec<MetadataUpdate>> {
    let mut keys = KeyInterner::default();
    let mut one = |m: &Bound<'_, PyAny>, what: &str| -> PyResult<MetadataUpdate> {
        Ok(match (m.is_none(), merge) {
            (true, true) => MetadataUpdate::Merge(Vec::new()),
            (true, false) => MetadataUpdate::Replace(None),
            (false, true) => MetadataUpdate::Merge(meta_pairs(m, what, &mut keys)?),
            (false, false) => MetadataUpdate::Replace(Some(meta_map_with(m, what, &mut keys)?)),
        })
    };
    if let Some(d) = mapping(obj)? {
        return Ok(vec![one(d.as_any(), "metadata")?]);
    }
    if obj.is_instance_of::<PyString>() {
        return Err(py_err!(
            DType,
            "metadata must be a dict or a list of dicts, got a single str"
        ));
    }
    let Some(n) = n else {
        return Err(py_err!(
            DType,
            "metadata must be one dict when the items are chosen by a filter (no ids), got {}",
            type_name(obj)
        ));
    };
    let updates = per_item(obj, n, |i, m| one(m, &format!("metadata[{i}]")))?;
    if updates.len() != n {
        return Err(py_err!(
            Shape,
            "metadata has {} entries for {n} ids (give one per id, or one dict for all)",
            updates.len()
        ));
    }
    Ok(updates)
}

/// Metadata for `n` items: one dict for all, or a list of dicts / None.
pub(crate) fn metadata(obj: &Bound<'_, PyAny>, n: usize) -> PyResult<Vec<Option<Metadata>>> {
    if let Some(d) = mapping(obj)? {
        // Read from the dict (a mapping is copied to one once).
        let shared = meta_map(d.as_any(), "metadata")?;
        return Ok(vec![Some(shared); n]);
    }
    let mut keys = KeyInterner::default();
    let metadata = per_item(obj, n, |i, m| {
        if m.is_none() {
            Ok(None)
        } else {
            Ok(Some(meta_map_with(
                m,
                &format!("metadata[{i}]"),
                &mut keys,
            )?))
        }
    })?;
    one_per_item(metadata, n, "metadata")
}

/// Each entry of a list of metadata dicts (at most `n`), read by `read(i, entry)`.
fn per_item<T>(
    obj: &Bound<'_, PyAny>,
    n: usize,
    mut read: impl FnMut(usize, &Bound<'_, PyAny>) -> PyResult<T>,
) -> PyResult<Vec<T>> {
    // A DataFrame iterates as its column names.
    if obj.get_type().name()?.to_cow()? == "DataFrame" {
        return Err(py_err!(
            DType,
            "metadata must be a dict or a list of dicts, got a DataFrame; pass \
             df.to_dict(\"records\")"
        ));
    }
    obj.try_iter()
        .map_err(|_| {
            py_err!(
                DType,
                "metadata must be a dict or a list of dicts, got {}",
                type_name(obj)
            )
        })?
        .enumerate()
        .map(|(i, m)| {
            within(i, n, "metadata")?;
            read(i, &m?)
        })
        .collect()
}

/// A `where` document as JSON, for [`Predicate::parse`]: dicts, lists and the values metadata
/// holds. Anything else is an `InvalidValueError` naming where it is.
fn where_json(v: &Bound<'_, PyAny>, path: &str, depth: usize) -> PyResult<Json> {
    // A level of filter is a dict and a list ($and / $or) deep, plus an operator's dict and list.
    if depth > 2 * MAX_FILTER_DEPTH + 4 {
        return Err(py_err!(
            InvalidValue,
            "{path}: filters nest at most {MAX_FILTER_DEPTH} levels deep"
        ));
    }
    if let Some(d) = mapping(v)? {
        let mut map = serde_json::Map::new();
        for (k, x) in d.iter() {
            let Ok(key) = k.cast::<PyString>() else {
                return Err(py_err!(
                    InvalidValue,
                    "{path}: keys must be str, got {}",
                    type_name(&k)
                ));
            };
            let key = utf8(key, "a where key")?;
            let json = where_json(&x, &format!("{path}[{key:?}]"), depth + 1)?;
            map.insert(key.to_owned(), json);
        }
        return Ok(Json::Object(map));
    }
    // A set of `$in` values holds them as well as a list does.
    if v.is_instance_of::<PyList>()
        || v.is_instance_of::<PyTuple>()
        || v.is_instance_of::<PySet>()
        || v.is_instance_of::<PyFrozenSet>()
    {
        return v
            .try_iter()?
            .enumerate()
            .map(|(i, x)| where_json(&x?, &format!("{path}[{i}]"), depth + 1))
            .collect::<PyResult<Vec<_>>>()
            .map(Json::Array);
    }
    if v.is_none() {
        return Ok(Json::Null);
    }
    // A numpy array (of `$in` values, say) as the list it holds.
    if let Some(plain) = numpy_as_python(v, 1)
        && plain.is_instance_of::<PyList>()
    {
        return where_json(&plain, path, depth);
    }
    match meta_value(v, path, false) {
        Ok(Value::Str(s)) => Ok(Json::String(s.into())),
        Ok(Value::Int(i)) => Ok(Json::from(i)),
        Ok(Value::Float(f)) => Ok(serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)),
        Ok(Value::Bool(b)) => Ok(Json::Bool(b)),
        Ok(Value::List(_)) => unreachable!("lists are handled above"),
        // Text-encoding and range errors keep their class (both are InvalidValueErrors).
        Err(e) => Err(e.into_err(Exc::InvalidValue)),
    }
}

/// Compiles a `where` argument.
pub(crate) fn predicate(where_: &Bound<'_, PyAny>) -> PyResult<Predicate> {
    let doc = where_json(where_, "where", 0)?;
    Predicate::parse(&doc).map_err(|e| err(Exc::InvalidValue, e.to_string()))
}

/// Builds a search filter from the keyword arguments.
pub(crate) fn filter(
    since: Option<&Bound<'_, PyAny>>,
    until: Option<&Bound<'_, PyAny>>,
    where_: Option<&Bound<'_, PyAny>>,
    exact: bool,
) -> PyResult<Filter> {
    // NaN would silently match nothing (or everything); an infinity is an open end.
    let bound = |t: &Bound<'_, PyAny>, what: &str| {
        let v = timestamp(t, what)?;
        if v.is_nan() {
            return Err(py_err!(
                InvalidValue,
                "{what} is NaN; give seconds since the epoch or a datetime"
            ));
        }
        Ok(v)
    };
    Ok(Filter {
        since: since.map(|t| bound(t, "since")).transpose()?,
        until: until.map(|t| bound(t, "until")).transpose()?,
        predicate: where_.filter(|w| !w.is_none()).map(predicate).transpose()?,
        exact,
    })
}

/// A metadata value as a Python object.
fn value_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::List(xs) => PyList::new(
            py,
            xs.iter()
                .map(|x| value_py(py, x))
                .collect::<PyResult<Vec<_>>>()?,
        )?
        .into_any(),
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
        d.set_item(k, value_py(py, v)?)?;
    }
    Ok(Some(d))
}

/// Work of at least this many texts counts as long: a progress bar by default on a terminal
/// (`imesde._bulk` decides; this only routes the call there).
const LONG: usize = 10_000;

/// The function `name` of `imesde._bulk` (chunked bulk work and progress bars).
pub(crate) fn bulk<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import(pyo3::intern!(py, "imesde._bulk"))?.getattr(name)
}

/// Whether bulk work on `texts` goes through `imesde._bulk` in chunks: a `batch_size`, a bar
/// asked for (anything but None or False: the helper checks it), an input that is not a list
/// or tuple (a generator is read a chunk at a time), or a long list that may get a bar.
pub(crate) fn in_chunks(
    texts: &Bound<'_, PyAny>,
    batch_size: Option<&Bound<'_, PyAny>>,
    show: Option<&Bound<'_, PyAny>>,
) -> PyResult<bool> {
    let given = |o: Option<&Bound<'_, PyAny>>| o.is_some_and(|x| !x.is_none());
    if given(batch_size) {
        return Ok(true);
    }
    // A str is one text; bytes are refused whole (by `strs`), not read as an iterable of ints.
    if texts.is_instance_of::<PyString>()
        || texts.is_instance_of::<PyBytes>()
        || texts.is_instance_of::<PyByteArray>()
    {
        return Ok(false);
    }
    let listed = texts.is_instance_of::<PyList>() || texts.is_instance_of::<PyTuple>();
    match show.filter(|s| !s.is_none()) {
        Some(s) => {
            // Only an explicit False on a list or tuple keeps the one-batch path.
            let off = s.is_instance_of::<PyBool>() && !s.is_truthy()?;
            Ok(!(listed && off))
        }
        None => Ok(!listed || texts.len()? >= LONG),
    }
}

/// Texts to embed: a list (or any iterable) of str; a lone str counts as one text when
/// `single` allows it. `None` and other types are `DTypeError`s (a `TypeError`).
pub(crate) fn strs(obj: &Bound<'_, PyAny>, what: &str, single: bool) -> PyResult<Vec<Arc<str>>> {
    if let Ok(s) = obj.cast::<PyString>() {
        if single {
            return Ok(vec![Arc::from(utf8(s, what)?)]);
        }
        let one = if what == "queries" {
            "search for one query"
        } else {
            "ingest for one text"
        };
        return Err(py_err!(
            DType,
            "{what} must be a list of str, got a single str (use {one})"
        ));
    }
    Ok(str_items(obj, what, false)?.into_iter().flatten().collect())
}

/// A BM25 query: a text, or its terms already analyzed (an iterable of str in order: not a
/// set or a mapping, which keep no order and no repeated term).
pub(crate) enum LexicalQuery {
    Text(String),
    Terms(Vec<String>),
}

impl LexicalQuery {
    pub(crate) fn get(&self) -> imesde_bm25::Query<'_> {
        match self {
            Self::Text(text) => imesde_bm25::Query::Text(text),
            Self::Terms(terms) => imesde_bm25::Query::Terms(terms),
        }
    }
}

impl<'py> FromPyObject<'_, 'py> for LexicalQuery {
    type Error = PyErr;
    fn extract(obj: Borrowed<'_, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(text) = obj.cast::<PyString>() {
            return Ok(Self::Text(utf8(&text, "query")?.to_owned()));
        }
        if obj.is_instance_of::<PyBytes>()
            || obj.is_instance_of::<PyByteArray>()
            || obj.try_iter().is_err()
        {
            return Err(py_err!(
                DType,
                "query must be a str or a list of its terms (str), got {}",
                type_name(&obj)
            ));
        }
        if obj.is_instance_of::<PySet>()
            || obj.is_instance_of::<PyFrozenSet>()
            || obj.cast::<PyMapping>().is_ok()
        {
            return Err(py_err!(
                DType,
                "query terms must be a list, got {} (it keeps no order and no repeated term)",
                type_name(&obj)
            ));
        }
        let terms = str_items(&obj, "query terms", false)?;
        Ok(Self::Terms(
            terms.into_iter().flatten().map(|t| t.to_string()).collect(),
        ))
    }
}

/// One text.
pub(crate) fn one_str(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Arc<str>> {
    match obj.cast::<PyString>() {
        Ok(s) => Ok(Arc::from(utf8(s, what)?)),
        Err(_) => Err(py_err!(DType, "{what} must be str, got {}", type_name(obj))),
    }
}

/// Ids from an iterable of ints (or an integer numpy array), each checked (see [`Id`]).
pub(crate) fn ids_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u64>> {
    id_items(obj, id_of)
}

/// An id to look an item up by: None for an integer no item has (negative, as the ``-1``
/// padding of ``search_vectors``, or past 2**64 - 1); anything but an int is a type error.
pub(crate) fn lookup_id(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<u64>> {
    // A negative int (padding) is answered before id_of builds the error it would raise.
    if !is_bool(obj) && obj.extract::<i64>().is_ok_and(|i| i < 0) {
        return Ok(None);
    }
    match id_of(obj, what) {
        Ok(id) => Ok(Some(id)),
        Err(e) if crate::exceptions::is(obj.py(), &e, Exc::OutOfRange) => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`ids_of`] of ids to look items up by ([`lookup_id`]).
pub(crate) fn lookup_ids_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Option<u64>>> {
    id_items(obj, lookup_id)
}

/// Each item of the iterable `obj` (not a str or bytes) through `each`.
fn id_items<T>(
    obj: &Bound<'_, PyAny>,
    each: impl Fn(&Bound<'_, PyAny>, &str) -> PyResult<T>,
) -> PyResult<Vec<T>> {
    // Bytes iterate as ints, a str as characters: `delete(b"3")` is not ids 51.
    if obj.is_instance_of::<PyBytes>()
        || obj.is_instance_of::<PyByteArray>()
        || obj.is_instance_of::<PyString>()
    {
        return Err(py_err!(
            DType,
            "ids must be a list of int, got {}",
            type_name(obj)
        ));
    }
    if let Ok(array) = obj.cast::<PyUntypedArray>()
        && array.ndim() > 1
    {
        return Err(py_err!(
            Shape,
            "ids must be a 1-D list or array of int, got a {}-D array (ids.ravel() flattens \
             it; get_batch answers None for the -1 padding of search_vectors)",
            array.ndim()
        ));
    }
    obj.try_iter()
        .map_err(|_| py_err!(DType, "ids must be a list of int, got {}", type_name(obj)))?
        .enumerate()
        .map(|(i, id)| each(&id?, &format!("ids[{i}]")))
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

/// `s` as Python's `repr` shows it.
pub(crate) fn py_str(py: Python<'_>, s: &str) -> String {
    PyString::new(py, s)
        .repr()
        .map_or_else(|_| "?".to_owned(), |r| r.to_string())
}
