//! Semantic IDs for imesde: residual-quantisation k-means (RQ-KMeans).
//!
//! [`RqKMeans::fit`] trains one k-means codebook per level on the residuals the previous levels
//! leave, with seeded k-means++ and parallel Lloyd iterations on the fixed-order kernels of
//! `imesde-simd`, so a seed gives bit-identical codebooks on every machine and thread count.
//! `balanced` training evens out cluster sizes with per-codeword prices that encoding keeps
//! using. [`RqKMeans::encode`] is greedy or beam search, [`RqKMeans::decode`] sums codewords,
//! [`metrics`] measures reconstruction error, collisions and codebook usage, and codebooks are
//! saved in a small checksummed format ([`persist`]).

/// `fn $name(args) -> ret` that runs `$body` compiled for AVX2 when the CPU has it and the
/// portable build otherwise. The bodies are element-wise IEEE arithmetic in a written order
/// (Rust neither fuses nor reorders float operations), so both builds give the same results;
/// AVX2 only makes the vectors wider.
macro_rules! avx2_dispatch {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:ident;) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn wide($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { wide($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

mod error;
mod filter;
mod kmeans;
pub mod metrics;
pub mod persist;
mod rng;
mod rq;

pub use error::{Result, RqError};
pub use imesde_simd::Backend;
pub use rq::{Codebook, FitConfig, Init, LevelReport, RqKMeans};
