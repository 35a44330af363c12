//! Text to vectors for imesde.
//!
//! A [`tokenizers`] tokenizer and an ONNX Runtime session (through [`ort`], with the runtime
//! library loaded at run time by [`load_runtime`]) turn texts into L2-normalised sentence
//! vectors. Batches are sorted by token length and padded per sub-batch only to their longest
//! text, then restored to input order; an LRU cache with an optional TTL skips texts seen
//! recently.
//!
//! ```no_run
//! use std::path::Path;
//! use imesde_embed::{Embedder, EmbedderConfig, load_runtime};
//!
//! load_runtime(Path::new("/path/to/onnxruntime/capi/libonnxruntime.so.1.31.1"))?;
//! let embedder = Embedder::new(
//!     Path::new("model.onnx"),
//!     Path::new("tokenizer.json"),
//!     EmbedderConfig::default(),
//! )?;
//! let vectors = embedder.embed(&["kernel panic", "memory leak fixed"], &mut || false)?;
//! assert_eq!(vectors.len(), 2 * embedder.dim());
//! # Ok::<(), imesde_embed::EmbedError>(())
//! ```

#![warn(missing_docs)]

mod cache;
mod embedder;
mod error;
mod model;
mod onnx_meta;
mod pool;
mod runtime;

pub use cache::Cache;
pub use embedder::{EmbedStats, Embedder, EmbedderConfig};
pub use error::{EmbedError, Result};
pub use model::{PROVIDERS, providers_for};
pub use onnx_meta::position_limit;
pub use pool::{Optimization, Pooling};
pub use runtime::{
    MIN_MINOR_VERSION, RuntimeInfo, available_providers, load_runtime, runtime_info,
};

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Bumped in every forked child: ONNX Runtime sessions made before a `fork()` have lost their
/// worker threads there, so an [`Embedder`] refuses to run in a later generation.
static GENERATION: AtomicU64 = AtomicU64::new(0);

pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Call in the child after `fork()` (only stores to atomics, so it is async-signal-safe):
/// tokenization runs serially and embedders built before the fork report
/// [`EmbedError::Forked`] instead of hanging on thread pools that did not survive it.
pub fn after_fork_in_child() {
    tokenizers::utils::parallelism::set_parallelism(false);
    GENERATION.fetch_add(1, Ordering::AcqRel);
    // A child of a process that was ending is not.
    CLOSED.store(false, Ordering::Release);
    RUNNING.store(0, Ordering::Release);
}

/// Session runs in flight, and whether new ones may start (see [`close_sessions`]).
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Held while a session runs and its outputs are read.
pub(crate) struct Running(());

impl Running {
    /// Counts a run. After [`close_sessions`], waits a while instead
    /// (without a lock of its own: the process is most likely gone before the wait ends) and
    /// fails, so that an exit handler joining this thread (a thread pool's) does not wait for
    /// ever.
    pub(crate) fn enter() -> Result<Self> {
        // Counted before the closing is read (`close_sessions` stores, then reads the
        // count): one of the two sees the other.
        RUNNING.fetch_add(1, Ordering::SeqCst);
        if CLOSED.load(Ordering::SeqCst) {
            RUNNING.fetch_sub(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(3));
            return Err(EmbedError::Inference(
                "the program is exiting: the model no longer runs".into(),
            ));
        }
        Ok(Running(()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// For the process's end, before ONNX Runtime's static destructors run (after the program's
/// own exit handlers): no session run starts from now on (one about to start fails after a
/// wait, see `Running::enter`), and the runs in flight (daemon threads of a program that
/// ended) are waited for, `limit` at most. Whether none is left. A run overlapping the
/// library's destructors logs errors from freed state, or crashes.
pub fn close_sessions(limit: Duration) -> bool {
    CLOSED.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + limit;
    while RUNNING.load(Ordering::SeqCst) != 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}
