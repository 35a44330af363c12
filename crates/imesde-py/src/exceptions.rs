//! Every exception class of imesde, by kind. The classes are defined in Python
//! (`imesde.exceptions`, where a class has several bases as naturally as one: a wrong shape is
//! both an `imesde.ImesdeError` and a `ValueError`); the binding looks each up by name once.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// The kinds of error, in the order of [`NAMES`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Exc {
    Imesde,
    Shape,
    Dimension,
    InvalidValue,
    DType,
    Capacity,
    NotFound,
    ModelLoad,
    ModelNotFound,
    Embedding,
    Storage,
    Corrupt,
    Internal,
    OutOfRange,
    TextEncoding,
}

/// The class of each [`Exc`] in `imesde.exceptions`.
const NAMES: [&str; 15] = [
    "ImesdeError",
    "ShapeError",
    "DimensionMismatchError",
    "InvalidValueError",
    "DTypeError",
    "CapacityError",
    "ItemNotFoundError",
    "ModelLoadError",
    "ModelNotFoundError",
    "EmbeddingError",
    "StorageError",
    "IndexCorruptError",
    "InternalError",
    "OutOfRangeError",
    "TextEncodingError",
];

static CLASSES: PyOnceLock<Vec<Py<PyType>>> = PyOnceLock::new();

/// The class of `exc`, or the error of importing `imesde.exceptions`.
pub(crate) fn class(py: Python<'_>, exc: Exc) -> PyResult<Bound<'_, PyType>> {
    let classes = CLASSES.get_or_try_init(py, || {
        let module = py.import("imesde.exceptions")?;
        NAMES
            .iter()
            .map(|name| Ok(module.getattr(*name)?.cast_into::<PyType>()?.unbind()))
            .collect::<PyResult<Vec<_>>>()
    })?;
    Ok(classes[exc as usize].bind(py).clone())
}

/// A new error of class `exc` with `msg`.
pub(crate) fn err(exc: Exc, msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| match class(py, exc) {
        Ok(class) => PyErr::from_type(class, msg),
        Err(e) => e,
    })
}

/// Whether `e` is of imesde's class `exc`.
pub(crate) fn is(py: Python<'_>, e: &PyErr, exc: Exc) -> bool {
    class(py, exc).is_ok_and(|c| e.is_instance(py, &c))
}

/// A new error of class `Exc::$exc`, its message formatted as by `format!`:
/// `py_err!(InvalidValue, "k must be at least 1, got {k}")`.
macro_rules! py_err {
    ($exc:ident, $($msg:tt)+) => {
        $crate::exceptions::err($crate::exceptions::Exc::$exc, format!($($msg)+))
    };
}
pub(crate) use py_err;
