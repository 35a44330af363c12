//! Semantic IDs for imesde: residual-quantisation k-means (RQ-KMeans).
//!
//! [`RqKMeans::fit`] trains one k-means codebook per level on the residuals the previous levels
//! leave, with seeded k-means++ and parallel Lloyd iterations on the fixed-order kernels of
//! `imesde-simd`, so a seed gives bit-identical codebooks on every machine and thread count.
//! `balanced` training evens out cluster sizes with per-codeword prices that encoding keeps
//! using. [`RqKMeans::encode`] is greedy or beam search, [`RqKMeans::decode`] sums codewords,
//! [`metrics`] measures reconstruction error, collisions and codebook usage, and codebooks are
//! saved in a small checksummed format ([`persist`]).

#![warn(missing_docs)]

#[macro_use(avx2_dispatch)]
extern crate imesde_simd;

mod error;
mod filter;
mod kmeans;
pub mod metrics;
pub mod persist;
mod rng;
mod rq;
mod select;

pub use error::{Result, RqError};
pub use imesde_simd::Backend;
pub use rq::{Codebook, FitConfig, Init, LevelReport, MAX_BEAM_SCORES, RqKMeans};
