//! Every exception class of imesde, built once per interpreter.
//!
//! `create_exception!` allows a single base, but a wrong shape must be both an
//! `imesde.ImesdeError` and a `ValueError` (and so on), so the classes are made with
//! `type(name, bases, namespace)` from one table here. Python re-exports them from
//! `imesde.exceptions`.

use pyo3::exceptions::{
    PyException, PyFileNotFoundError, PyKeyError, PyMemoryError, PyOSError, PyOverflowError,
    PyTypeError, PyUnicodeEncodeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

/// The exception classes, in the order of [`SPECS`].
pub(crate) struct Exceptions {
    classes: Vec<Py<PyType>>,
}

/// Index of each class in [`SPECS`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Exc {
    Imesde = 0,
    Shape = 1,
    Dimension = 2,
    InvalidValue = 3,
    DType = 4,
    Capacity = 5,
    NotFound = 6,
    ModelLoad = 7,
    ModelNotFound = 8,
    Embedding = 9,
    Storage = 10,
    Corrupt = 11,
    Internal = 12,
    OutOfRange = 13,
    TextEncoding = 14,
}

enum Base {
    Own(Exc),
    Builtin(fn(Python<'_>) -> Bound<'_, PyType>),
}

struct Spec {
    exc: Exc,
    name: &'static str,
    bases: &'static [Base],
    doc: &'static str,
}

// Closures, not `Python::get_type` paths: the path is not generic over the lifetime.
#[allow(clippy::redundant_closure_for_method_calls)]
const SPECS: [Spec; 15] = [
    Spec {
        exc: Exc::Imesde,
        name: "ImesdeError",
        bases: &[Base::Builtin(|py| py.get_type::<PyException>())],
        doc: "Base class of every error raised by imesde.",
    },
    Spec {
        exc: Exc::Shape,
        name: "ShapeError",
        bases: &[
            Base::Own(Exc::Imesde),
            Base::Builtin(|py| py.get_type::<PyValueError>()),
        ],
        doc: "An array or list has the wrong shape, length or memory layout.",
    },
    Spec {
        exc: Exc::Dimension,
        name: "DimensionMismatchError",
        bases: &[Base::Own(Exc::Shape)],
        doc: "A vector's dimension differs from the engine's.",
    },
    Spec {
        exc: Exc::InvalidValue,
        name: "InvalidValueError",
        bases: &[
            Base::Own(Exc::Imesde),
            Base::Builtin(|py| py.get_type::<PyValueError>()),
        ],
        doc: "A value is out of range: NaN or infinite numbers, a zero vector, k <= 0, a zero size.",
    },
    Spec {
        exc: Exc::DType,
        name: "DTypeError",
        bases: &[
            Base::Own(Exc::Imesde),
            Base::Builtin(|py| py.get_type::<PyTypeError>()),
        ],
        doc: "An argument has the wrong type or dtype (imesde never casts silently).",
    },
    Spec {
        exc: Exc::Capacity,
        name: "CapacityError",
        bases: &[
            Base::Own(Exc::Imesde),
            Base::Builtin(|py| py.get_type::<PyMemoryError>()),
        ],
        doc: "The requested ring is too large to allocate.",
    },
    Spec {
        exc: Exc::NotFound,
        name: "ItemNotFoundError",
        bases: &[
            Base::Own(Exc::Imesde),
            Base::Builtin(|py| py.get_type::<PyKeyError>()),
        ],
        doc: "No item with this id is held (never ingested, or already overwritten).",
    },
    Spec {
        exc: Exc::ModelLoad,
        name: "ModelLoadError",
        bases: &[Base::Own(Exc::Imesde)],
        doc: "A model, tokenizer or the ONNX Runtime library cannot be loaded.",
    },
    Spec {
        exc: Exc::ModelNotFound,
        name: "ModelNotFoundError",
        bases: &[
            Base::Own(Exc::ModelLoad),
            Base::Builtin(|py| py.get_type::<PyFileNotFoundError>()),
        ],
        doc: "A model or tokenizer file does not exist, or the default model is not installed.",
    },
    Spec {
        exc: Exc::Embedding,
        name: "EmbeddingError",
        bases: &[Base::Own(Exc::Imesde)],
        doc: "Tokenizing or running the model failed for a batch of texts.",
    },
    Spec {
        exc: Exc::Storage,
        name: "StorageError",
        bases: &[
            Base::Own(Exc::Imesde),
            Base::Builtin(|py| py.get_type::<PyOSError>()),
        ],
        doc: "A file could not be read or written.",
    },
    Spec {
        exc: Exc::Corrupt,
        name: "IndexCorruptError",
        bases: &[
            Base::Own(Exc::Imesde),
            Base::Builtin(|py| py.get_type::<PyValueError>()),
        ],
        doc: "A saved file is not an imesde file, or is truncated, modified or of another version.",
    },
    Spec {
        exc: Exc::Internal,
        name: "InternalError",
        bases: &[Base::Own(Exc::Imesde)],
        doc: "A bug in imesde stopped a call (a Rust panic, caught): the message names the call. \
              The object it was called on is still usable. Please report it.",
    },
    Spec {
        exc: Exc::OutOfRange,
        name: "OutOfRangeError",
        bases: &[
            Base::Own(Exc::InvalidValue),
            Base::Builtin(|py| py.get_type::<PyOverflowError>()),
        ],
        doc: "An integer is outside the range imesde takes: a negative id, a seed of 2**64 or more.",
    },
    Spec {
        exc: Exc::TextEncoding,
        name: "TextEncodingError",
        bases: &[
            Base::Own(Exc::InvalidValue),
            Base::Builtin(|py| py.get_type::<PyUnicodeEncodeError>()),
        ],
        doc: "A text cannot be encoded as UTF-8: it holds a lone surrogate such as '\\ud800'.",
    },
];

static EXCEPTIONS: PyOnceLock<Exceptions> = PyOnceLock::new();

fn build(py: Python<'_>) -> PyResult<Exceptions> {
    let mut classes: Vec<Py<PyType>> = Vec::with_capacity(SPECS.len());
    let type_ = py.get_type::<PyType>();
    for (i, spec) in SPECS.iter().enumerate() {
        debug_assert_eq!(spec.exc as usize, i, "SPECS is in Exc order");
        let bases: Vec<Bound<'_, PyType>> = spec
            .bases
            .iter()
            .map(|b| match b {
                Base::Own(e) => classes[*e as usize].bind(py).clone(),
                Base::Builtin(f) => f(py),
            })
            .collect();
        let ns = PyDict::new(py);
        ns.set_item("__doc__", spec.doc)?;
        ns.set_item("__module__", "imesde.exceptions")?;
        let cls = type_.call1((spec.name, PyTuple::new(py, bases)?, ns))?;
        classes.push(cls.cast_into::<PyType>()?.unbind());
    }
    Ok(Exceptions { classes })
}

/// The class of `exc`.
pub(crate) fn class(py: Python<'_>, exc: Exc) -> Bound<'_, PyType> {
    EXCEPTIONS
        .get_or_try_init(py, || build(py))
        .expect("building the imesde exception classes cannot fail")
        .classes[exc as usize]
        .bind(py)
        .clone()
}

/// A new error of class `exc` with `msg`.
pub(crate) fn err(exc: Exc, msg: impl Into<String>) -> PyErr {
    let msg = msg.into();
    Python::attach(|py| PyErr::from_type(class(py, exc), msg))
}

/// A new error of class `Exc::$exc`, its message formatted as by `format!`:
/// `py_err!(InvalidValue, "k must be at least 1, got {k}")`.
macro_rules! py_err {
    ($exc:ident, $($msg:tt)+) => {
        $crate::exceptions::err($crate::exceptions::Exc::$exc, format!($($msg)+))
    };
}
pub(crate) use py_err;

/// Adds every class to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    for spec in &SPECS {
        m.add(spec.name, class(py, spec.exc))?;
    }
    Ok(())
}
