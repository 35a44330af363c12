//! The Python module `imesde._imesde`: thin wrappers that convert arguments, release the GIL,
//! call the core crates and convert the results back.

mod bm25;
mod convert;
mod embed;
mod engine;
mod error;
mod exceptions;
mod gil;
mod hits;
mod rq;
mod similarity;
mod stream;

use pyo3::prelude::*;

/// After `fork()`, the child has none of the parent's rayon or ONNX Runtime worker threads
/// (see `imesde_engine::fork::after_fork_in_child`).
#[cfg(unix)]
extern "C" fn after_fork_in_child() {
    gil::after_fork_in_child();
}

/// Before `fork()`: wait until no thread holds a lock that the child would inherit held.
#[cfg(unix)]
extern "C" fn before_fork() {
    gil::before_fork();
}

#[cfg(unix)]
extern "C" fn after_fork_in_parent() {
    gil::after_fork_in_parent();
}

/// The process that loaded ONNX Runtime (0: none yet), for [`guard_exit`].
#[cfg(all(target_os = "linux", target_env = "gnu"))]
static LOADED_BY: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Called once ONNX Runtime is loaded: from then on, a child of `fork()` ends its `exit` with
/// `_exit` before the library's static destructors run. They wait for ever on condition
/// variables of the parent's thread pools, whose threads the child does not have (a child
/// that called `sys.exit`, or simply ended, never finished). Registered right after the
/// library loaded, the handler runs before its destructors and after every handler
/// registered later; C stdio is flushed first, and Python's finalization has run by then.
/// The process that loaded it exits as usual (its runs in flight were waited for by
/// [`gil::close_sessions`]).
pub(crate) fn guard_exit() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::ffi::{c_int, c_void};
        use std::sync::atomic::Ordering;
        unsafe extern "C" {
            // glibc: like `atexit`, with the exit status; handlers run last registered first.
            fn on_exit(handler: extern "C" fn(c_int, *mut c_void), arg: *mut c_void) -> c_int;
        }
        extern "C" fn before_runtime_destructors(status: c_int, _: *mut c_void) {
            // SAFETY: getpid cannot fail; in a child, every C stream is flushed, then the
            // process ends: nothing runs after.
            unsafe {
                if libc::getpid().cast_unsigned() != LOADED_BY.load(Ordering::Acquire) {
                    libc::fflush(std::ptr::null_mut());
                    libc::_exit(status);
                }
            }
        }
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() }.cast_unsigned();
        // The first loader only: a child calling this again keeps its parent's pid.
        if LOADED_BY
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: registers a handler with a static lifetime and no argument, once.
            unsafe {
                on_exit(before_runtime_destructors, std::ptr::null_mut());
            }
        }
    }
}

/// The CPU features that decide which model runs fastest here (``"avx2"``, ``"avx512vnni"``,
/// ``"avxvnni"``, ``"dotprod"``, ...).
#[pyfunction]
fn cpu_features() -> Vec<&'static str> {
    imesde_simd::cpu_features()
}

/// Panics inside the binding's work helper, for the tests of what users get instead of a
/// `PanicException`: an `imesde.InternalError` naming the call.
#[pyfunction]
#[pyo3(name = "_panic_for_tests")]
fn panic_for_tests(py: Python<'_>, message: &str) -> PyResult<()> {
    gil::run(py, "_panic_for_tests", || -> () { panic!("{message}") })
}

/// The name of the SIMD backend chosen for this CPU (``"avx512-vnni"``, ``"avx2"``, ...).
#[pyfunction]
fn simd_backend() -> &'static str {
    imesde_simd::Kernels::best().backend().name()
}

#[pymodule]
fn _imesde(m: &Bound<'_, PyModule>) -> PyResult<()> {
    #[cfg(unix)]
    // SAFETY: registers handlers that touch only atomics (the child's is async-signal-safe;
    // the prepare handler runs in the parent before the fork and may sleep).
    unsafe {
        libc::pthread_atfork(
            Some(before_fork),
            Some(after_fork_in_parent),
            Some(after_fork_in_child),
        );
    }
    // NumPy's C API is loaded now, while `import imesde` runs, not by the first call that
    // returns an array: rust-numpy panics when that load is interrupted (a Ctrl-C landing in
    // numpy's own import, which it runs in Python), and a call must never do that.
    m.py().import("numpy")?;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        numpy::npyffi::is_numpy_2(m.py())
    }))
    .map_err(|_| {
        pyo3::exceptions::PyImportError::new_err("imesde: NumPy's C API could not be loaded")
    })?;
    // Python runs signal handlers on its main thread only: long calls made there are the
    // ones that watch for Ctrl-C.
    let main: usize = m
        .py()
        .import("threading")?
        .call_method0("main_thread")?
        .getattr("ident")?
        .extract()?;
    gil::set_main_thread_ident(main);
    // Threads still inside imesde when the program ends are parked, not ended mid-call.
    gil::find_finalizing();
    m.add_function(wrap_pyfunction!(gil::at_exit, m)?)?;
    m.py()
        .import("atexit")?
        .call_method1("register", (m.getattr("_at_exit")?,))?;
    // SAFETY: registers a function that calls no Python API (once per process: a module is
    // initialised once). Its 32 places all taken, imesde's `atexit` hook closes them instead.
    if unsafe { pyo3::ffi::Py_AtExit(Some(gil::close_sessions)) } != 0 {
        gil::close_sessions_in_hook();
    }
    m.add_class::<embed::TextEmbedder>()?;
    m.add_class::<bm25::PyBm25>()?;
    m.add_class::<bm25::Bm25Hit>()?;
    m.add_function(wrap_pyfunction!(bm25::fuse, m)?)?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<hits::Hit>()?;
    m.add_class::<hits::Item>()?;
    m.add_class::<hits::Event>()?;
    m.add_class::<stream::Subscription>()?;
    m.add_function(wrap_pyfunction!(similarity::cosine_similarity, m)?)?;
    m.add_function(wrap_pyfunction!(similarity::batch_cosine_similarity, m)?)?;
    m.add_function(wrap_pyfunction!(similarity::euclidean_distance, m)?)?;
    m.add_function(wrap_pyfunction!(similarity::manhattan_distance, m)?)?;
    m.add_function(wrap_pyfunction!(similarity::normalize_l2, m)?)?;
    m.add_function(wrap_pyfunction!(similarity::top_k, m)?)?;
    m.add_class::<rq::RqCodebooks>()?;
    m.add_class::<rq::Labeler>()?;
    m.add_class::<rq::PyIdStore>()?;
    m.add_function(wrap_pyfunction!(rq::rq_collision_rate, m)?)?;
    m.add_function(wrap_pyfunction!(rq::rq_codebook_usage, m)?)?;
    m.add_function(wrap_pyfunction!(simd_backend, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_features, m)?)?;
    m.add_function(wrap_pyfunction!(embed::available_providers, m)?)?;
    m.add_function(wrap_pyfunction!(panic_for_tests, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("MIN_TIMESTAMP", imesde_ring::MIN_TIMESTAMP)?;
    m.add("MAX_TIMESTAMP", imesde_ring::MAX_TIMESTAMP)?;
    Ok(())
}
