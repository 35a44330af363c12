use std::path::PathBuf;

/// Everything that can go wrong while loading a model or embedding text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The ONNX Runtime library could not be opened, or is too old for us.
    #[error(
        "cannot load the ONNX Runtime library at {path}: {reason} (imesde needs ONNX Runtime \
         >= 1.{min_minor}; install it with `pip install onnxruntime` or point IMESDE_ORT_DYLIB at \
         a libonnxruntime)"
    )]
    Runtime {
        /// The library tried.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
        /// The oldest ONNX Runtime 1.x minor version imesde uses.
        min_minor: u32,
    },
    /// A model or tokenizer file does not exist.
    #[error("{what} not found: {path}")]
    NotFound {
        /// Which file (`"model file"`, `"tokenizer file"`).
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The model file exists but cannot be used as a sentence-embedding model.
    #[error("cannot load the model {path}: {reason}")]
    Model {
        /// The model file.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The tokenizer file exists but cannot be parsed.
    #[error("cannot load the tokenizer {path}: {reason}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// Why it cannot be parsed.
        reason: String,
    },
    /// An execution provider that the loaded ONNX Runtime lacks or cannot start.
    #[error(
        "cannot run on {asked:?}: {reason}; the loaded ONNX Runtime offers {available:?} (for \
         CUDA, install onnxruntime-gpu instead of onnxruntime)"
    )]
    Provider {
        /// The providers asked for.
        asked: Vec<String>,
        /// Those the loaded ONNX Runtime offers.
        available: Vec<String>,
        /// Why the ones asked for cannot run.
        reason: String,
    },
    /// An option is out of range.
    #[error("{0}")]
    Config(String),
    /// Tokenization of a text failed.
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// ONNX Runtime failed while running the model.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The embedder was built before a `fork()` and this is the child.
    #[error(
        "this embedder was created before the process forked; its ONNX Runtime threads do not \
         exist in the child: create the embedder after the fork, or use the 'spawn' start method"
    )]
    Forked,
    /// The caller asked to stop (for example Ctrl-C) between two batches.
    #[error("interrupted")]
    Interrupted,
}

/// A result whose error is an [`EmbedError`].
pub type Result<T> = std::result::Result<T, EmbedError>;
