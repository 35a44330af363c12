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
    Dimension { expected: usize, got: usize },
    /// A code outside its level's codebook.
    #[error("code {code} at level {level} is out of range (the level has {k} codewords)")]
    Code { level: usize, code: i64, k: usize },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Stopped by the caller (see [`crate::RqKMeans::fit_until`]); nothing was trained.
    #[error("interrupted")]
    Interrupted,
    /// The file is not an imesde codebook file, or is truncated, corrupted or of another version.
    #[error("{path} is not a valid imesde RQ codebook file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, RqError>;
