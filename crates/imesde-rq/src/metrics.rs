//! Quality measures of a code assignment.

use std::collections::HashMap;

/// Mean over vectors of the squared L2 error `|x - x_hat|^2` (what faiss reports as MSE).
#[must_use]
pub fn reconstruction_error(data: &[f32], recon: &[f32], dim: usize) -> f64 {
    assert_eq!(
        data.len(),
        recon.len(),
        "reconstruction_error: shape mismatch"
    );
    let n = data.len() / dim;
    if n == 0 {
        return 0.0;
    }
    let total: f64 = data
        .iter()
        .zip(recon)
        .map(|(&a, &b)| {
            let d = f64::from(a) - f64::from(b);
            d * d
        })
        .sum();
    total / n as f64
}

/// Fraction of items whose full code is shared with at least one other item.
#[must_use]
pub fn collision_rate(codes: &[u32], n_levels: usize) -> f64 {
    let n = codes.len() / n_levels;
    if n == 0 {
        return 0.0;
    }
    let mut seen: HashMap<&[u32], u32> = HashMap::with_capacity(n);
    for c in codes.chunks_exact(n_levels) {
        *seen.entry(c).or_default() += 1;
    }
    let shared: u64 = seen
        .values()
        .filter(|&&c| c > 1)
        .map(|&c| u64::from(c))
        .sum();
    shared as f64 / n as f64
}

/// How a level's codebook is used by a set of codes.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelUsage {
    /// Codebook size.
    pub k: usize,
    /// Codewords used at least once.
    pub used: usize,
    /// Shannon entropy of the code distribution divided by `ln k` (1.0: perfectly even).
    pub entropy: f64,
    /// Items per codeword.
    pub counts: Vec<u64>,
}

/// Per-level usage of `codes` (`n x ks.len()`); codes must be below their level's `k`.
#[must_use]
pub fn codebook_usage(codes: &[u32], ks: &[usize]) -> Vec<LevelUsage> {
    let nl = ks.len();
    let n = codes.len() / nl;
    ks.iter()
        .enumerate()
        .map(|(l, &k)| {
            let mut counts = vec![0u64; k];
            for row in codes.chunks_exact(nl) {
                counts[row[l] as usize] += 1;
            }
            let used = counts.iter().filter(|&&c| c > 0).count();
            let h: f64 = counts
                .iter()
                .filter(|&&c| c > 0)
                .map(|&c| {
                    let p = c as f64 / n as f64;
                    -p * p.ln()
                })
                .sum();
            let entropy = if k > 1 { h / (k as f64).ln() } else { 1.0 };
            LevelUsage {
                k,
                used,
                entropy,
                counts,
            }
        })
        .collect()
}
