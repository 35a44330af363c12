//! Lexical search for imesde: an analyzer, a BM25 inverted index with exact add / remove /
//! update, MaxScore top-k, a checksummed file format, and rank fusion.
//!
//! ```
//! use imesde_bm25::{AnalyzerConfig, Bm25, Params};
//!
//! let mut index = Bm25::new(Params::default(), AnalyzerConfig::english())?;
//! index.add(1, "Fix CVE-2024-1234 in the nfs client")?;
//! index.add(2, "Update German translation")?;
//! let hits = index.search("cve-2024-1234", 10, 0.0);
//! assert_eq!(hits[0].id, 1);
//! # Ok::<(), imesde_bm25::Bm25Error>(())
//! ```

#![warn(missing_docs)]

mod analyzer;
mod error;
mod fusion;
mod index;
mod persist;
mod stopwords;

pub use analyzer::{Analyzer, AnalyzerConfig, stemmer_languages};
pub use error::{Bm25Error, Result};
pub use fusion::{Fusion, fuse};
pub use index::{Bm25, Bm25Hit, Corpus, CorpusPart, Method, Params, Query};
