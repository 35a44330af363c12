use std::path::PathBuf;

/// Everything that can go wrong in the lexical index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Bm25Error {
    /// A parameter is out of range or unknown.
    #[error("{0}")]
    Config(String),
    /// `add` of an id the index already holds.
    #[error("document {0} is already indexed; use update to replace it")]
    Duplicate(u64),
    /// `remove` of an id the index does not hold.
    #[error("no document with id {0}")]
    NotFound(u64),
    /// Stopped by the caller (see [`crate::Bm25::add_batch_until`]); nothing was added.
    #[error("interrupted")]
    Interrupted,
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not an index, or is truncated, corrupted or of another version.
    #[error("{path} is not a valid imesde BM25 index: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A result whose error is a [`Bm25Error`].
pub type Result<T> = std::result::Result<T, Bm25Error>;
