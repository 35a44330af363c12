use std::path::PathBuf;

/// Everything that can go wrong in training, encoding or loading codebooks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RqError {
    /// A parameter or an input is out of range (empty data, `k` of 0, NaN, wrong shape, ...).
    #[error("{0}")]
    Invalid(String),
    /// Input rows of the wrong dimension.
    #[error("expected vectors of dimension {expected}, got {got}")]
    Dimension {
        /// The codebooks' dimension.
        expected: usize,
        /// The rows'.
        got: usize,
    },
    /// A code outside its level's codebook.
    #[error("code {code} at level {level} is out of range (the level has {k} codewords)")]
    Code {
        /// The level (from 0).
        level: usize,
        /// The code given.
        code: i64,
        /// The level's codewords.
        k: usize,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Stopped by the caller (see [`crate::RqKMeans::fit_until`]); nothing was trained.
    #[error("interrupted")]
    Interrupted,
    /// The file is not an imesde codebook file, or is truncated, corrupted or of another version.
    #[error("{path} is not a valid imesde RQ codebook file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A result whose error is an [`RqError`].
pub type Result<T> = std::result::Result<T, RqError>;
