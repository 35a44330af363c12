//! Loading ONNX Runtime at run time.
//!
//! imesde links no ONNX Runtime: `ort`'s `load-dynamic` opens a `libonnxruntime` that the caller
//! names (the Python package finds the one inside the `onnxruntime` wheel). Every `ort` call
//! before a successful [`load_runtime`] would make `ort` guess a library name and panic on
//! failure, so [`environment`] is the only door to sessions and it refuses until then.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use parking_lot::Mutex;

use crate::error::{EmbedError, Result};

/// The ONNX Runtime this process loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// The library file that was opened.
    pub path: PathBuf,
    /// Its version, e.g. `1.31.1`.
    pub version: String,
}

struct Loaded {
    info: RuntimeInfo,
    environment: Environment,
}

static LOADED: OnceLock<Loaded> = OnceLock::new();
/// Serialises first loads: ort keeps one library and one environment per process.
static LOADING: Mutex<()> = Mutex::new(());

/// The oldest ONNX Runtime minor version (1.x) that imesde accepts.
pub const MIN_MINOR_VERSION: u32 = ort::MINOR_VERSION;

/// Opens the ONNX Runtime library at `path` once per process.
///
/// Later calls return the library already loaded, whatever path they name: a process can hold
/// one ONNX Runtime only.
///
/// # Errors
/// [`EmbedError::Runtime`] when the file is missing, is not an ONNX Runtime library, or is
/// older than 1.[`MIN_MINOR_VERSION`].
pub fn load_runtime(path: &Path) -> Result<&'static RuntimeInfo> {
    if let Some(loaded) = LOADED.get() {
        return Ok(&loaded.info);
    }
    let _guard = LOADING.lock();
    if let Some(loaded) = LOADED.get() {
        return Ok(&loaded.info);
    }
    let fail = |reason: String| EmbedError::Runtime {
        path: path.to_path_buf(),
        reason,
        min_minor: MIN_MINOR_VERSION,
    };
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    let builder = ort::init_from(path).map_err(|e| fail(e.to_string()))?;
    let environment = builder
        .with_name("imesde")
        .with_telemetry(false)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let version = version_string(path).unwrap_or_else(|| "unknown".into());
    let loaded = LOADED.get_or_init(|| Loaded {
        info: RuntimeInfo {
            path: path.to_path_buf(),
            version,
        },
        environment,
    });
    Ok(&loaded.info)
}

/// The runtime loaded by [`load_runtime`], if any.
#[must_use]
pub fn runtime_info() -> Option<&'static RuntimeInfo> {
    LOADED.get().map(|l| &l.info)
}

/// The process's ONNX Runtime environment.
pub(crate) fn environment() -> Result<&'static Environment> {
    LOADED
        .get()
        .map(|l| &l.environment)
        .ok_or_else(|| EmbedError::Runtime {
            path: PathBuf::new(),
            reason: "no ONNX Runtime library has been loaded yet (call load_runtime first)".into(),
            min_minor: MIN_MINOR_VERSION,
        })
}

/// `OrtGetApiBase()->GetVersionString()` of the library at `path`, e.g. `1.31.1`.
fn version_string(path: &Path) -> Option<String> {
    // SAFETY: opening the library runs its initialisers; it is the ONNX Runtime library that
    // `ort::init_from` has just opened successfully, so they have already run once.
    let lib = unsafe { libloading::Library::new(path) }.ok()?;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release (C API, stable).
    let get_base = unsafe {
        lib.get::<unsafe extern "system" fn() -> *const ort::sys::OrtApiBase>(b"OrtGetApiBase")
    }
    .ok()?;
    // SAFETY: a call with no arguments that returns a pointer to a static struct.
    let base = unsafe { get_base() };
    if base.is_null() {
        return None;
    }
    // SAFETY: `base` is non-null and points to the library's static `OrtApiBase`, whose
    // `GetVersionString` returns a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(((*base).GetVersionString)()) };
    // The library stays loaded: ort holds its own handle for the life of the process.
    version.to_str().ok().map(str::to_owned)
}

/// The execution providers the loaded ONNX Runtime library was built with, in its order of
/// preference (`["CPUExecutionProvider"]` for the CPU wheel; the `onnxruntime-gpu` wheel adds
/// `CUDAExecutionProvider` and `TensorrtExecutionProvider`).
///
/// # Errors
/// [`EmbedError::Runtime`] before [`load_runtime`] succeeded; an error of ONNX Runtime.
pub fn available_providers() -> Result<Vec<String>> {
    let Some(loaded) = LOADED.get() else {
        return Err(EmbedError::Runtime {
            path: PathBuf::new(),
            reason: "ONNX Runtime is not loaded yet".into(),
            min_minor: MIN_MINOR_VERSION,
        });
    };
    let fail = |reason: String| EmbedError::Runtime {
        path: loaded.info.path.clone(),
        reason,
        min_minor: MIN_MINOR_VERSION,
    };
    let api = ort::api();
    let mut names: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut n: std::ffi::c_int = 0;
    let (get, release) = (api.GetAvailableProviders, api.ReleaseAvailableProviders);
    // SAFETY: the C API fills `names` with `n` NUL-terminated strings it owns until released.
    let status = unsafe { get(&raw mut names, &raw mut n) };
    if !status.0.is_null() {
        // SAFETY: a non-null status is an error status that we must release.
        unsafe { (api.ReleaseStatus)(status.0) };
        return Err(fail("GetAvailableProviders failed".into()));
    }
    let out = (0..usize::try_from(n).unwrap_or(0))
        .map(|i| {
            // SAFETY: `i < n` indexes the array the call returned; each entry is a C string.
            unsafe { std::ffi::CStr::from_ptr(*names.add(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // SAFETY: releases exactly what GetAvailableProviders returned.
    let status = unsafe { release(names, n) };
    if !status.0.is_null() {
        // SAFETY: as above.
        unsafe { (api.ReleaseStatus)(status.0) };
    }
    Ok(out)
}
