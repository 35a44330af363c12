//! The similarity toolkit people reach for next to a search engine: unit rows, L1 / L2
//! distances, every pair of two sets of rows, the best `k` of each row of scores.

use rayon::prelude::*;

use crate::{Kernels, normalize_l2, top_k};

/// Why rows cannot be made unit length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitError {
    /// A NaN or infinite value.
    NonFinite,
    /// Row `i` is all zeros: its direction (and any cosine with it) is undefined.
    ZeroRow(usize),
}

/// An L2-normalised copy of the rows of `x` (`dim` values each).
///
/// # Errors
/// A NaN / infinite value, or a zero row.
pub fn unit_rows(x: &[f32], dim: usize) -> Result<Vec<f32>, UnitError> {
    if !x.iter().all(|v| v.is_finite()) {
        return Err(UnitError::NonFinite);
    }
    let mut out = x.to_vec();
    for (i, row) in out.chunks_exact_mut(dim.max(1)).enumerate() {
        if normalize_l2(row) == 0.0 {
            return Err(UnitError::ZeroRow(i));
        }
    }
    Ok(out)
}

/// Euclidean distance, summed in f64: between finite f32 vectors it is finite and exact to
/// f32 rounding whatever their magnitude.
#[must_use]
pub fn l2(x: &[f32], y: &[f32]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum::<f64>()
        .sqrt() as f32
}

/// Manhattan distance, summed in f64 (see [`l2`]).
#[must_use]
pub fn l1(x: &[f32], y: &[f32]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
        .sum::<f64>() as f32
}

/// `out[i * m + j] = f(a_i, b_j)` for the `n` rows of `a` and `m` of `b`, rows of `a` in
/// parallel. `out` holds `n * m` values.
pub fn pairwise(
    a: &[f32],
    b: &[f32],
    dim: usize,
    f: impl Fn(&[f32], &[f32]) -> f32 + Sync,
    out: &mut [f32],
) {
    let m = b.len() / dim.max(1);
    out.par_chunks_mut(m.max(1))
        .zip(a.par_chunks(dim.max(1)))
        .for_each(|(o, x)| {
            for (v, y) in o.iter_mut().zip(b.chunks_exact(dim.max(1))) {
                *v = f(x, y);
            }
        });
}

/// Cosines of the unit rows `a` (`n` of them) against the unit rows `b`, `[n, m]` into `out`.
pub fn cosine_matrix(a: &[f32], n: usize, b: &[f32], out: &mut [f32]) {
    Kernels::best().scan_multi_f32(a, n, b, out);
}

/// The `k` largest values of each row of `x` (`n` values each), best first, equal values in
/// index order: `(index, value)` pairs, `min(k, n)` per row, rows in parallel.
#[must_use]
pub fn top_k_rows(x: &[f32], n: usize, k: usize) -> Vec<(usize, f32)> {
    x.par_chunks(n.max(1))
        .flat_map_iter(|row| top_k(row, k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::float_cmp)] // exact values: the sums are exact in f64
    fn distances_units_and_selection() {
        let (a, b) = ([0.0f32, 3.0, 4.0, 0.0], [3.0f32, 0.0]);
        assert_eq!(l2(&a[..2], &b), 18f32.sqrt());
        assert_eq!(l1(&a[..2], &b), 6.0);
        let mut out = vec![0.0; 2];
        pairwise(&a, &b, 2, l1, &mut out);
        assert_eq!(out, [6.0, 1.0]);
        assert_eq!(unit_rows(&a, 2).unwrap(), [0.0, 1.0, 1.0, 0.0]);
        assert_eq!(
            unit_rows(&[1.0, 0.0, 0.0, 0.0], 2),
            Err(UnitError::ZeroRow(1))
        );
        assert_eq!(unit_rows(&[f32::NAN, 1.0], 2), Err(UnitError::NonFinite));
        assert_eq!(
            top_k_rows(&[1.0, 3.0, 3.0, 0.0, 5.0, 4.0], 3, 2),
            [(1, 3.0), (2, 3.0), (1, 5.0), (2, 4.0)]
        );
    }
}
