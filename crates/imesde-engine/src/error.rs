use std::path::PathBuf;

use imesde_embed::EmbedError;
use imesde_ring::RingError;

/// Everything the engine can refuse or fail at: its parts' errors, and its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The ring refused (a shape, value or capacity problem, or a damaged snapshot).
    #[error(transparent)]
    Ring(#[from] RingError),
    /// A `where` document that is not a filter ([`imesde_ring::Predicate::parse`]).
    #[error(transparent)]
    Filter(#[from] imesde_ring::FilterError),
    /// Embedding failed, or the model could not be loaded or read.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// BM25 refused (an option, or a document it does not hold).
    #[cfg(feature = "bm25")]
    #[error(transparent)]
    Bm25(#[from] imesde_bm25::Bm25Error),
    /// RQ-KMeans refused (a labeler's codebooks do not fit the engine's vectors).
    #[cfg(feature = "rq")]
    #[error(transparent)]
    Rq(#[from] imesde_rq::RqError),
    /// A text operation on an engine made for vectors only.
    #[error(
        "this engine was made with a dimension and has no model: ingest and search vectors, or \
         give it a model"
    )]
    NoModel,
    /// A lexical operation on an engine without a BM25 index.
    #[error("this engine keeps no BM25 index: create it with lexical on")]
    NoLexical,
    /// A value out of range (a fusion weight, a percentile, a labeler's output).
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A snapshot made with another model than the one given to load it.
    #[error("the snapshot was made with model {saved:?}, not {given:?}; load it with that model")]
    ModelMismatch {
        /// The model the snapshot names.
        saved: String,
        /// The model given.
        given: String,
    },
    /// The ring's (or a snapshot's) vectors are of another dimension than the model's.
    #[error("the engine holds {engine}-dim vectors, the model makes {model}")]
    DimensionMismatch {
        /// The engine's (or snapshot's) dimension.
        engine: usize,
        /// The model's.
        model: usize,
    },
}

/// Result alias of this crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
