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

use std::sync::atomic::{AtomicU64, Ordering};

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
}
