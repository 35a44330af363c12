//! The similarity toolkit people reach for next to a search engine: unit rows, cosine
//! similarities and L1 / L2 distances between every pair of two sets of rows, the best `k` of
//! each row of scores. Each operation checks its inputs and returns a [`SimilarityError`]
//! naming the input at fault; results that cannot be allocated are errors, not aborts.

use std::fmt;

use rayon::prelude::*;

use crate::{Kernels, normalize_l2, top_k};

/// Why a similarity cannot be computed. The `&'static str` names the input (`"a"`, `"query"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimilarityError {
    /// A NaN or infinite value.
    NonFinite(&'static str),
    /// A NaN score, which has no rank.
    NanScore(&'static str),
    /// Row `i` is all zeros: its direction (and any cosine with it) is undefined.
    ZeroRow(&'static str, usize),
    /// The rows of the two inputs have different widths.
    Dimension {
        /// The first input's width.
        a: usize,
        /// The second input's width.
        b: usize,
    },
    /// A result of `n x m` values cannot be allocated.
    TooLarge {
        /// The first input's rows.
        n: usize,
        /// The second input's rows.
        m: usize,
    },
    /// An input that is not whole rows of its width (or rows of no values).
    Shape {
        /// The input.
        what: &'static str,
        /// Its values.
        len: usize,
        /// The width its rows must have.
        dim: usize,
    },
}

impl fmt::Display for SimilarityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NonFinite(what) => write!(f, "{what} contains NaN or infinite values"),
            Self::NanScore(what) => write!(f, "{what} contain NaN, which has no rank"),
            Self::ZeroRow(what, i) => write!(
                f,
                "{what} row {i} is all zeros; its direction (and cosine) is undefined"
            ),
            Self::Dimension { a, b } => write!(f, "a has {a} dims, b has {b} dims"),
            Self::Shape { what, len, dim } => {
                write!(f, "{what} has {len} values, which are not rows of {dim}")
            }
            Self::TooLarge { n, m } => {
                write!(f, "a result of {n} x {m} values cannot be allocated")
            }
        }
    }
}

impl std::error::Error for SimilarityError {}

type Result<T> = std::result::Result<T, SimilarityError>;

/// The distances [`pairwise`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distance {
    /// Euclidean, [`l2`].
    L2,
    /// Manhattan, [`l1`].
    L1,
}

/// An L2-normalised copy of the rows of `x` (`dim` values each), named `what` in errors.
///
/// # Errors
/// A NaN / infinite value, or a zero row.
pub fn unit_rows(what: &'static str, x: &[f32], dim: usize) -> Result<Vec<f32>> {
    finite(what, x)?;
    let mut out = x.to_vec();
    for (i, row) in out.chunks_exact_mut(dim.max(1)).enumerate() {
        if normalize_l2(row) == 0.0 {
            return Err(SimilarityError::ZeroRow(what, i));
        }
    }
    Ok(out)
}

fn finite(what: &'static str, x: &[f32]) -> Result<()> {
    if x.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(SimilarityError::NonFinite(what))
    }
}

/// A zeroed result of `n * m` values, or [`SimilarityError::TooLarge`] when it cannot be
/// allocated (every pair of two large inputs).
fn output(n: usize, m: usize) -> Result<Vec<f32>> {
    let len = n.checked_mul(m).filter(|l| l.checked_mul(4).is_some());
    let mut v = Vec::new();
    if let Some(len) = len
        && v.try_reserve_exact(len).is_ok()
    {
        v.resize(len, 0.0);
        return Ok(v);
    }
    Err(SimilarityError::TooLarge { n, m })
}

/// The numbers of rows of `a` and `b`, whole rows of one width each (which may be none).
fn rows(a: &[f32], b: &[f32], dim_a: usize, dim_b: usize) -> Result<(usize, usize)> {
    if dim_a != dim_b {
        return Err(SimilarityError::Dimension { a: dim_a, b: dim_b });
    }
    for (what, x) in [("a", a), ("b", b)] {
        if dim_a == 0 || x.len() % dim_a != 0 {
            return Err(SimilarityError::Shape {
                what,
                len: x.len(),
                dim: dim_a,
            });
        }
    }
    Ok((a.len() / dim_a, b.len() / dim_a))
}

/// Cosine similarities of the rows of `a` (`dim_a` values each) and `b` (`dim_b`): `[n, m]`
/// row-major, `a`'s rows first. Inputs are named `names` in errors.
///
/// # Errors
/// Different widths, inputs that are not whole rows, a NaN / infinite value, a zero row, a
/// result too large.
pub fn cosine(
    names: [&'static str; 2],
    (a, dim_a): (&[f32], usize),
    (b, dim_b): (&[f32], usize),
) -> Result<Vec<f32>> {
    let (n, m) = rows(a, b, dim_a, dim_b)?;
    let (ua, ub) = (
        unit_rows(names[0], a, dim_a)?,
        unit_rows(names[1], b, dim_b)?,
    );
    let mut out = output(n, m)?;
    if n > 0 && m > 0 {
        Kernels::best().scan_multi_f32(&ua, n, &ub, &mut out);
    }
    Ok(out)
}

/// `distance` between every row of `a` and every row of `b` (as [`cosine`]), rows of `a` in
/// parallel.
///
/// # Errors
/// Different widths, inputs that are not whole rows, a NaN / infinite value, a result too
/// large.
pub fn distances(
    distance: Distance,
    (a, dim_a): (&[f32], usize),
    (b, dim_b): (&[f32], usize),
) -> Result<Vec<f32>> {
    let (n, m) = rows(a, b, dim_a, dim_b)?;
    finite("a", a)?;
    finite("b", b)?;
    let mut out = output(n, m)?;
    let f = match distance {
        Distance::L2 => l2,
        Distance::L1 => l1,
    };
    pairwise(a, b, dim_a, f, &mut out);
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

/// The `k` largest values of each row of `x` (`n` values each), best first, equal values in
/// index order: `(index, value)` pairs, `min(k, n)` per row, rows in parallel.
///
/// # Errors
/// A NaN score (named `what`).
pub fn top_k_rows(what: &'static str, x: &[f32], n: usize, k: usize) -> Result<Vec<(usize, f32)>> {
    if x.iter().any(|v| v.is_nan()) {
        return Err(SimilarityError::NanScore(what));
    }
    Ok(x.par_chunks(n.max(1))
        .flat_map_iter(|row| top_k(row, k))
        .collect())
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
        assert_eq!(
            distances(Distance::L1, (&a, 2), (&b, 2)).unwrap(),
            [6.0, 1.0]
        );
        assert_eq!(
            distances(Distance::L2, (&a, 2), (&b, 2)).unwrap(),
            [18f32.sqrt(), 1.0]
        );
        assert_eq!(cosine(["a", "b"], (&a, 2), (&b, 2)).unwrap(), [0.0, 1.0]);
        assert_eq!(unit_rows("x", &a, 2).unwrap(), [0.0, 1.0, 1.0, 0.0]);
        assert_eq!(
            unit_rows("x", &[1.0, 0.0, 0.0, 0.0], 2),
            Err(SimilarityError::ZeroRow("x", 1))
        );
        assert_eq!(
            cosine(["q", "v"], (&[1.0, 0.0], 2), (&[0.0, 0.0], 2)),
            Err(SimilarityError::ZeroRow("v", 0))
        );
        assert_eq!(
            distances(Distance::L1, (&a, 2), (&[f32::INFINITY, 0.0], 2)),
            Err(SimilarityError::NonFinite("b"))
        );
        assert_eq!(
            distances(Distance::L1, (&a, 2), (&b, 1)),
            Err(SimilarityError::Dimension { a: 2, b: 1 })
        );
        // Rows that are not whole, or of no values, are refused (the kernels asserted, or
        // answered for rows cut short); no rows give no values.
        for (x, dim) in [(&[1.0f32, 0.0, 0.0][..], 2), (&[1.0, 0.0][..], 0)] {
            assert_eq!(
                cosine(["a", "b"], (x, dim), (&b[..dim.min(2)], dim)),
                Err(SimilarityError::Shape {
                    what: "a",
                    len: x.len(),
                    dim
                })
            );
        }
        assert_eq!(cosine(["a", "b"], (&[], 2), (&b, 2)), Ok(vec![]));
        assert_eq!(distances(Distance::L2, (&a, 2), (&[], 2)), Ok(vec![]));
        assert_eq!(
            output(usize::MAX / 2, 3),
            Err(SimilarityError::TooLarge {
                n: usize::MAX / 2,
                m: 3
            })
        );
        assert_eq!(
            top_k_rows("s", &[1.0, 3.0, 3.0, 0.0, 5.0, 4.0], 3, 2).unwrap(),
            [(1, 3.0), (2, 3.0), (1, 5.0), (2, 4.0)]
        );
        assert_eq!(
            top_k_rows("s", &[1.0, f32::NAN], 2, 1),
            Err(SimilarityError::NanScore("s"))
        );
    }
}
