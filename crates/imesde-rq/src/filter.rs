//! Exact nearest codeword at integer speed.
//!
//! Scoring a vector against every codeword in f32 is the whole cost of training and encoding.
//! Here the codewords are quantised to int8 and the vector to 15-bit integers, the integer
//! kernel of `imesde-simd` scores all codewords (about twice the f32 throughput, and exact
//! integers, so the same on every CPU), and a rigorous error bound per pair turns each
//! approximate distance into an interval. Only codewords whose interval reaches below the best
//! upper end can be nearest; those few are rescored with the fixed-order f32 kernel, and the
//! result is the very codeword (ties included) that scoring all of them in f32 gives.
//!
//! The bound: with `r = t q + f` (query codes `q`, scale `t`, error `f`) and `c = s c' + e`,
//! `r.c - t s (q.c') = t q.e + f.c`, so `|r.c - approx| <= |t q| |e| + |f| |c|`, plus a margin
//! of `1e-5 |r| |c|` that covers f32 rounding in both computations (the rounding of a 384-term
//! fixed-order dot product is below `2e-6 |r| |c|`).

use imesde_simd::packed::PackedRows;
use imesde_simd::{Kernels, quant};

use crate::select::{indices_at_most, min_f32, smallest_into};

/// Relative slack on the computed error norms and the f32 rounding margin.
const NORM_SLACK: f32 = 1.0 + 1e-4;
const ROUNDING: f32 = 1e-5;

/// Codewords quantised for the integer prefilter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QuantBook {
    /// The int8 codes, packed for the batched scan.
    codes: PackedRows,
    scale: Vec<f32>,
    /// `|c_j - scale_j * codes_j|`, slightly inflated.
    err: Vec<f32>,
    /// `|c_j|`, slightly inflated.
    norm: Vec<f32>,
}

fn norm(v: impl Iterator<Item = f32>) -> f32 {
    (v.map(|x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt() as f32) * NORM_SLACK
}

impl QuantBook {
    /// `None` when the dimension is beyond what the integer kernels accept.
    pub(crate) fn new(centroids: &[f32], dim: usize) -> Option<Self> {
        if dim > quant::MAX_I8_DIM {
            return None;
        }
        let k = centroids.len() / dim;
        let mut codes = vec![0i8; k * dim];
        let mut scale = Vec::with_capacity(k);
        let mut err = Vec::with_capacity(k);
        let mut nrm = Vec::with_capacity(k);
        for (c, out) in centroids.chunks_exact(dim).zip(codes.chunks_exact_mut(dim)) {
            let s = quant::quantize_i8(c, out);
            scale.push(s);
            err.push(norm(
                c.iter()
                    .zip(out.iter())
                    .map(|(&v, &q)| v - f32::from(q) * s),
            ));
            nrm.push(norm(c.iter().copied()));
        }
        Some(QuantBook {
            codes: PackedRows::new(&codes, dim),
            scale,
            err,
            norm: nrm,
        })
    }
}

avx2_dispatch! {
    /// Quantises `x` to integer codes (truncating; any rounding works, the error is measured) and
    /// returns the scale and the norms `|t q|`, `|x - t q|`, `|x|`, each slightly inflated. Written
    /// in sixteen lanes so it vectorises.
    fn quantize_with_norms(x: &[f32], q: &mut [i16], max_code: f32) -> (f32, [f32; 3]) =
        quantize_with_norms_any;
}

#[inline(always)]
fn quantize_with_norms_any(x: &[f32], q: &mut [i16], max_code: f32) -> (f32, [f32; 3]) {
    let mut amax = [0.0f32; 16];
    let (chunks, tail) = x.as_chunks::<16>();
    for c in chunks {
        for l in 0..16 {
            let a = c[l].abs();
            amax[l] = if a > amax[l] { a } else { amax[l] };
        }
    }
    let amax = amax
        .iter()
        .chain(tail.iter())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    let inv = max_code / amax;
    // A row so small (|x| < 1e-34 or so) that `inv` overflows is a zero row in f32: its
    // squares are 0 already, and `0 * inf` would be a NaN code below.
    if amax == 0.0 || !inv.is_finite() {
        q.fill(0);
        return (0.0, [0.0; 3]);
    }
    let t = amax / max_code;
    let mc = max_code as i32;
    let mut acc = [[0.0f32; 16]; 3];
    let lane = |l: usize, v: f32, c: &mut i16, acc: &mut [[f32; 16]; 3]| {
        let scaled = v * inv;
        debug_assert!(scaled.abs() <= max_code * 1.001);
        // SAFETY: |v| <= amax, so |v * inv| <= max_code (+ one rounding) < 2^31, and v and
        // inv are finite (inputs are checked, and so is inv above); truncation toward zero is
        // the same on every CPU.
        let code = unsafe { scaled.to_int_unchecked::<i32>() }.clamp(-mc, mc);
        *c = code as i16;
        let back = code as f32 * t;
        let e = v - back;
        acc[0][l] += back * back;
        acc[1][l] += e * e;
        acc[2][l] += v * v;
    };
    let (qc, qt) = q.as_chunks_mut::<16>();
    for (c, qq) in chunks.iter().zip(qc) {
        for l in 0..16 {
            lane(l, c[l], &mut qq[l], &mut acc);
        }
    }
    for (l, (&v, c)) in tail.iter().zip(qt).enumerate() {
        lane(l, v, c, &mut acc);
    }
    let n = |a: &[f32; 16]| a.iter().sum::<f32>().sqrt() * NORM_SLACK;
    (t, [n(&acc[0]), n(&acc[1]), n(&acc[2])])
}

/// Points quantised for the prefilter: codes, scale and the three norms of each.
#[derive(Debug, Default)]
pub(crate) struct Quantized {
    q: Vec<i16>,
    t: Vec<f32>,
    qn: Vec<f32>,
    fe: Vec<f32>,
    xn: Vec<f32>,
}

/// A run of rows of a [`Quantized`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct QView<'a> {
    q: &'a [i16],
    t: &'a [f32],
    qn: &'a [f32],
    fe: &'a [f32],
    xn: &'a [f32],
}

impl Quantized {
    /// Quantises every row of `x` (in parallel; each row independently, so the same result
    /// on any thread count), straight into the final arrays.
    pub(crate) fn of(x: &[f32], dim: usize) -> Self {
        use rayon::prelude::*;
        let m = x.len() / dim;
        let mut out = Quantized {
            q: vec![0; m * dim],
            t: vec![0.0; m],
            qn: vec![0.0; m],
            fe: vec![0.0; m],
            xn: vec![0.0; m],
        };
        let max_code = f32::from(quant::query_max_code(dim));
        out.q
            .par_chunks_mut(dim)
            .zip(x.par_chunks(dim))
            .zip(out.t.par_iter_mut())
            .zip(out.qn.par_iter_mut().zip(out.fe.par_iter_mut()))
            .zip(out.xn.par_iter_mut())
            .with_min_len(256)
            .for_each(|((((q, row), t), (qn, fe)), xn)| {
                (*t, [*qn, *fe, *xn]) = quantize_with_norms(row, q, max_code);
            });
        out
    }

    fn fill(&mut self, x: &[f32], dim: usize, max_code: i16) {
        let m = x.len() / dim;
        self.q.resize(m * dim, 0);
        self.t.clear();
        self.qn.clear();
        self.fe.clear();
        self.xn.clear();
        let max_code = f32::from(max_code);
        for (row, q) in x.chunks_exact(dim).zip(self.q.chunks_exact_mut(dim)) {
            let (t, [qn, fe, xn]) = quantize_with_norms(row, q, max_code);
            self.t.push(t);
            self.qn.push(qn);
            self.fe.push(fe);
            self.xn.push(xn);
        }
    }

    /// Rows `start..start + m`.
    pub(crate) fn rows(&self, start: usize, m: usize, dim: usize) -> QView<'_> {
        QView {
            q: &self.q[start * dim..(start + m) * dim],
            t: &self.t[start..start + m],
            qn: &self.qn[start..start + m],
            fe: &self.fe[start..start + m],
            xn: &self.xn[start..start + m],
        }
    }
}

/// Per-thread buffers of [`nearest_block`] and [`approx_costs`].
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    own: Quantized,
    dots: Vec<i32>,
    lo: Vec<f32>,
    hi: Vec<f32>,
    cb: Vec<f32>,
    near: Vec<u32>,
    exact: Vec<f32>,
}

/// The quantised rows of `x`: `pre` when the caller has them, else made in `own`, with codes
/// up to `max_code`.
fn view<'a>(
    own: &'a mut Quantized,
    pre: Option<QView<'a>>,
    x: &[f32],
    dim: usize,
    max_code: i16,
) -> QView<'a> {
    if let Some(v) = pre {
        v
    } else {
        own.fill(x, dim, max_code);
        let m = x.len() / dim;
        own.rows(0, m, dim)
    }
}

/// Exact `argmin_j (|c_j|^2 - 2 x.c_j + bias_j)` for each of the `m` points of `x` (ties to the
/// lowest `j`), identical to scoring every codeword with the fixed-order kernel; `best[i]` is
/// that minimum (without `|x|^2`). With `cands` (`m x c`), also each point's `c` cheapest
/// codewords by the integer scores, cheapest first, always including the exact nearest.
#[allow(clippy::too_many_arguments)]
pub(crate) fn nearest_block(
    kern: &Kernels,
    x: &[f32],
    dim: usize,
    centroids: &[f32],
    cn: &[f32],
    bias: &[f32],
    qb: &QuantBook,
    pre: Option<QView<'_>>,
    s: &mut Scratch,
    labels: &mut [u32],
    best: &mut [f32],
    mut cands: Option<&mut [u32]>,
) {
    let m = x.len() / dim;
    let k = cn.len();
    let Scratch {
        own,
        dots,
        lo,
        hi,
        cb,
        near,
        exact,
    } = s;
    let c = cands.as_ref().map_or(0, |c| c.len() / m.max(1));
    let mut cand_cost = vec![0.0f32; c];
    // Exact answers do not depend on the query codes' precision: they may take the kernel's
    // fastest. Candidate lists are estimates from the integer scores, so they use the same
    // precision on every CPU (a seeded fit must give the same codebooks everywhere).
    let max_code = if cands.is_some() {
        quant::query_max_code(dim)
    } else {
        kern.packed_query_max_code(dim)
    };
    let v = view(own, pre, x, dim, max_code);
    dots.resize(m * k, 0);
    kern.scan_packed_i8(v.q, m, &qb.codes, dots);
    // Bias folded into the squared norms once per block.
    cb.clear();
    cb.extend(
        cn.iter()
            .enumerate()
            .map(|(j, &c)| c + bias.get(j).copied().unwrap_or(0.0)),
    );
    lo.resize(k, 0.0);
    hi.resize(k, 0.0);
    for i in 0..m {
        let row = &x[i * dim..(i + 1) * dim];
        let t2 = 2.0 * v.t[i];
        let a = 2.0 * v.qn[i];
        let b = 2.0 * (v.fe[i] + ROUNDING * v.xn[i]);
        let d = &dots[i * k..(i + 1) * k];
        intervals(cb, t2, &qb.scale, d, a, &qb.err, b, &qb.norm, lo, hi);
        let upper = min_f32(hi);
        // The few codewords whose interval reaches below the best upper end, scored exactly.
        indices_at_most(lo, upper, near);
        exact.resize(near.len(), 0.0);
        kern.dots_f32_fixed_gather(row, centroids, near, exact);
        let mut best_j = usize::MAX;
        let mut best_v = f32::INFINITY;
        for (&j, &dot) in near.iter().zip(exact.iter()) {
            let j = j as usize;
            let mut v = cn[j] - 2.0 * dot;
            if let Some(&b) = bias.get(j) {
                v += b;
            }
            if v < best_v || best_j == usize::MAX {
                best_v = v;
                best_j = j;
            }
        }
        labels[i] = best_j as u32;
        best[i] = best_v;
        if let Some(cands) = cands.as_deref_mut() {
            let ix = &mut cands[i * c..(i + 1) * c];
            // The interval midpoints: the integer scores' cost estimates.
            for (l, &h) in lo.iter_mut().zip(hi.iter()) {
                *l = 0.5 * (*l + h);
            }
            smallest_into(lo, ix, &mut cand_cost);
            ensure_listed(ix, best_j as u32);
        }
    }
}

/// Puts `j` in place of the last entry of `ix` unless it is already there.
pub(crate) fn ensure_listed(ix: &mut [u32], j: u32) {
    if !ix.contains(&j)
        && let Some(last) = ix.last_mut()
    {
        *last = j;
    }
}

/// The cost interval `[lo, hi]` of every codeword (branch-free, so it vectorises).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn intervals_any(
    cb: &[f32],
    t2: f32,
    scale: &[f32],
    dots: &[i32],
    a: f32,
    err: &[f32],
    b: f32,
    norm: &[f32],
    lo: &mut [f32],
    hi: &mut [f32],
) {
    for j in 0..cb.len() {
        let d = cb[j] - t2 * scale[j] * dots[j] as f32;
        let bound = a * err[j] + b * norm[j];
        lo[j] = d - bound;
        hi[j] = d + bound;
    }
}

avx2_dispatch! {
    #[allow(clippy::too_many_arguments)]
    fn intervals(
        cb: &[f32],
        t2: f32,
        scale: &[f32],
        dots: &[i32],
        a: f32,
        err: &[f32],
        b: f32,
        norm: &[f32],
        lo: &mut [f32],
        hi: &mut [f32],
    ) = intervals_any;
}

/// Approximate costs `|c_j|^2 - 2 x.c_j` of every point against every codeword, from the
/// integer scores (deterministic on every CPU; used where exactness does not matter, such as
/// the balanced assignment's ordering).
#[allow(clippy::too_many_arguments)]
pub(crate) fn approx_costs(
    kern: &Kernels,
    x: &[f32],
    dim: usize,
    cn: &[f32],
    qb: &QuantBook,
    pre: Option<QView<'_>>,
    s: &mut Scratch,
    out: &mut [f32],
) {
    let m = x.len() / dim;
    let k = cn.len();
    let v = view(&mut s.own, pre, x, dim, quant::query_max_code(dim));
    s.dots.resize(m * k, 0);
    kern.scan_packed_i8(v.q, m, &qb.codes, &mut s.dots);
    for i in 0..m {
        let t = v.t[i];
        for j in 0..k {
            out[i * k + j] = cn[j] - 2.0 * (t * qb.scale[j] * s.dots[i * k + j] as f32);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kmeans::{argmin, costs, sq_norms};

    /// Xorshift draws in [-0.5, 0.5): deterministic test data for this crate's unit tests.
    pub(crate) fn rng(seed: &mut u64) -> f32 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    /// A row too small for its scale to be taken (`max_code / amax` overflows) is a zero row:
    /// it gave a NaN code (a failed debug assertion; `to_int_unchecked` of a NaN in release),
    /// from `RqKMeans::encode` of a row of subnormal values.
    #[test]
    fn rows_too_small_to_scale_are_zero_rows() {
        let x = [1e-40f32, 0.0, -1e-41, 0.0, 3e-39, 0.0, 0.0, 0.0];
        let mut q = [7i16; 8];
        let (t, norms) = quantize_with_norms_any(&x, &mut q, 32767.0);
        assert_eq!((q, t, norms), ([0; 8], 0.0, [0.0; 3]));
    }

    /// The prefiltered argmin equals the full fixed-order scan on every backend-independent
    /// input we can think of: random, near-duplicate and exactly duplicated codewords (ties),
    /// zero vectors, tiny and huge scales, with and without bias.
    #[test]
    fn prefilter_gives_exactly_the_full_scan_argmin() {
        let kern = Kernels::best();
        let mut seed = 0x1234_5678_9ABC_DEF1u64;
        for case in 0..400 {
            let dim = 1 + case % 70;
            let k = 1 + (case * 7) % 40;
            let m = 1 + (case * 3) % 9;
            let scale = [1e-3f32, 1.0, 1e3][case % 3];
            let mut c: Vec<f32> = (0..k * dim).map(|_| rng(&mut seed) * scale).collect();
            if k > 2 {
                // An exact duplicate and a near duplicate.
                let (a, b) = c.split_at_mut(dim);
                b[..dim].copy_from_slice(a);
                b[dim] += scale * 1e-6;
            }
            let mut x: Vec<f32> = (0..m * dim).map(|_| rng(&mut seed) * scale).collect();
            // A point equal to a codeword, and a zero point.
            x[..dim].copy_from_slice(&c[..dim]);
            if m > 1 {
                x[dim..2 * dim].fill(0.0);
            }
            let bias: Vec<f32> = if case % 2 == 0 {
                Vec::new()
            } else {
                (0..k)
                    .map(|_| rng(&mut seed) * scale * scale * 0.1)
                    .collect()
            };
            let cn = sq_norms(kern, &c, dim);
            let qb = QuantBook::new(&c, dim).unwrap();
            let mut s = Scratch::default();
            let mut labels = vec![0u32; m];
            let mut best = vec![0.0f32; m];
            nearest_block(
                kern,
                &x,
                dim,
                &c,
                &cn,
                &bias,
                &qb,
                None,
                &mut s,
                &mut labels,
                &mut best,
                None,
            );
            let mut full = vec![0.0f32; m * k];
            costs(kern, &x, m, &c, &cn, &mut full);
            for i in 0..m {
                let row = &full[i * k..(i + 1) * k];
                let j = argmin(row, &bias);
                assert_eq!(labels[i] as usize, j, "case {case} point {i}");
                let want = row[j] + bias.get(j).copied().unwrap_or(0.0);
                assert_eq!(best[i].to_bits(), want.to_bits(), "case {case} point {i}");
            }
        }
    }
}
