//! Assigning points to centroids: costs, the nearest centroid (with a bias), among candidates
//! or all of them.

use imesde_simd::Kernels;
use rayon::prelude::*;

#[allow(clippy::wildcard_imports)]
use super::*;

/// `out[i] = |x_i|^2` with the fixed-order kernel.
pub(crate) fn sq_norms(kern: &Kernels, data: &[f32], dim: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; data.len() / dim];
    out.par_chunks_mut(CHUNK)
        .zip(data.par_chunks(CHUNK * dim))
        .for_each(|(o, x)| {
            for (v, row) in o.iter_mut().zip(x.chunks_exact(dim)) {
                let mut d = [0.0f32];
                kern.scan_multi_f32_fixed(row, 1, row, &mut d);
                *v = d[0];
            }
        });
    out
}

/// `out[i * k + j] = |c_j|^2 - 2 <x_i, c_j>`: the squared distance without the constant
/// `|x_i|^2`, for the `m` points in `x`.
pub(crate) fn costs(
    kern: &Kernels,
    x: &[f32],
    m: usize,
    centroids: &[f32],
    cn: &[f32],
    out: &mut [f32],
) {
    let k = cn.len();
    kern.scan_multi_f32_fixed(x, m, centroids, &mut out[..m * k]);
    for row in out[..m * k].chunks_exact_mut(k) {
        for (v, &c) in row.iter_mut().zip(cn) {
            *v = c - 2.0 * *v;
        }
    }
}

avx2_dispatch! {
    /// Index of the smallest `row[j] + bias[j]` (bias may be empty); ties go to the lowest index.
    #[inline]
    pub(crate) fn argmin(row: &[f32], bias: &[f32]) -> usize = argmin_any;
}

/// Sixteen lanes each keep their first minimum; the lanes are then merged by value and index,
/// which gives exactly the first minimum of the row.
#[inline(always)]
pub(crate) fn argmin_any(row: &[f32], bias: &[f32]) -> usize {
    const L: usize = 16;
    let mut val = [f32::INFINITY; L];
    let mut idx = [0u32; L];
    let full = row.len() / L * L;
    let mut j = 0;
    while j < full {
        for l in 0..L {
            let v = row[j + l] + if bias.is_empty() { 0.0 } else { bias[j + l] };
            let better = v < val[l];
            val[l] = if better { v } else { val[l] };
            idx[l] = if better { (j + l) as u32 } else { idx[l] };
        }
        j += L;
    }
    let mut best = usize::MAX;
    let mut best_v = f32::INFINITY;
    for l in 0..L {
        // Exact ties matter here: the lowest index among equal values wins.
        let tie = val[l].total_cmp(&best_v).is_eq();
        if full > 0 && (val[l] < best_v || (tie && (idx[l] as usize) < best)) {
            best_v = val[l];
            best = idx[l] as usize;
        }
    }
    for (t, &v) in row.iter().enumerate().skip(full) {
        let v = v + if bias.is_empty() { 0.0 } else { bias[t] };
        if v < best_v || best == usize::MAX {
            best_v = v;
            best = t;
        }
    }
    if best == usize::MAX { 0 } else { best }
}

/// Nearest centroid (after bias) of every point, and its squared distance. With `cands`
/// (`n x c`), also each point's `c` nearest centroids (by the integer scores when the
/// prefilter runs), always including its nearest, for [`assign_among`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn assign(
    kern: &Kernels,
    data: &[f32],
    xn: &[f32],
    dim: usize,
    centroids: &[f32],
    bias: &[f32],
    pre: Option<&Quantized>,
    labels: &mut [u32],
    dist: &mut [f32],
    cands: Option<&mut [u32]>,
) {
    let k = centroids.len() / dim;
    let c = cands.as_ref().map_or(0, |v| v.len() / labels.len().max(1));
    // One optional candidate block per chunk of points.
    let mut blocks: Vec<Option<&mut [u32]>> = match cands {
        Some(v) => v.chunks_mut(CHUNK * c).map(Some).collect(),
        None => (0..labels.len().div_ceil(CHUNK)).map(|_| None).collect(),
    };
    let cn = sq_norms(kern, centroids, dim);
    let qb = QuantBook::new(centroids, dim);
    labels
        .par_chunks_mut(CHUNK)
        .zip(dist.par_chunks_mut(CHUNK))
        .zip(data.par_chunks(CHUNK * dim).zip(xn.par_chunks(CHUNK)))
        .zip(blocks.par_iter_mut())
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; CHUNK * k], Scratch::default(), vec![0.0f32; c]),
            |(buf, scratch, cc), (b, (((lab, dst), (x, xn)), ix))| {
                let m = lab.len();
                let mut ix = ix.as_deref_mut();
                if let Some(qb) = &qb {
                    let v = pre.map(|p| p.rows(b * CHUNK, m, dim));
                    nearest_block(
                        kern, x, dim, centroids, &cn, bias, qb, v, scratch, lab, dst, ix,
                    );
                    for i in 0..m {
                        let c = dst[i] - bias.get(lab[i] as usize).copied().unwrap_or(0.0);
                        dst[i] = (xn[i] + c).max(0.0);
                    }
                    return;
                }
                costs(kern, x, m, centroids, &cn, buf);
                for i in 0..m {
                    let row = &buf[i * k..(i + 1) * k];
                    let j = argmin(row, bias);
                    lab[i] = j as u32;
                    dst[i] = (xn[i] + row[j]).max(0.0);
                    if let Some(ix) = ix.as_deref_mut() {
                        let ix = &mut ix[i * c..(i + 1) * c];
                        smallest_into(row, ix, cc);
                        ensure_listed(ix, j as u32);
                    }
                }
            },
        );
}

/// Whether candidate `j` with cost `v` beats `best` (cost, index; `u32::MAX` = none yet):
/// lower cost, ties to the lower index.
#[inline]
pub(crate) fn improves(v: f32, j: u32, best: (f32, u32)) -> bool {
    v < best.0 || (v.total_cmp(&best.0).is_eq() && j < best.1) || best.1 == u32::MAX
}

/// Exact costs `|c_j|^2 - 2 row.c_j` of the candidates `ix`, scored with the fixed-order
/// kernel as a full pass scores them.
pub(crate) fn candidate_costs(
    kern: &Kernels,
    row: &[f32],
    centroids: &[f32],
    cn: &[f32],
    ix: &[u32],
    out: &mut [f32],
) {
    kern.dots_f32_fixed_gather(row, centroids, ix, out);
    for (v, &j) in out.iter_mut().zip(ix) {
        *v = cn[j as usize] - 2.0 * *v;
    }
}

/// The candidate `j` of `ix` with the least `cn[j] - 2 row.c_j + bias[j]` (bias may be empty);
/// ties go to the lowest index.
pub(crate) fn nearest_among(
    kern: &Kernels,
    row: &[f32],
    centroids: &[f32],
    cn: &[f32],
    bias: &[f32],
    ix: &[u32],
) -> (u32, f32) {
    let mut best = (f32::INFINITY, u32::MAX);
    let mut costs = [0.0f32; 16];
    for ix in ix.chunks(16) {
        let costs = &mut costs[..ix.len()];
        candidate_costs(kern, row, centroids, cn, ix, costs);
        for (&j, &c) in ix.iter().zip(costs.iter()) {
            let v = c + bias.get(j as usize).copied().unwrap_or(0.0);
            if improves(v, j, best) {
                best = (v, j);
            }
        }
    }
    (best.1, best.0)
}

/// Like [`assign`] (no bias), but each point only looks at its candidates `cands` (`n x c`,
/// from the last full pass): a restricted Lloyd step.
#[allow(clippy::too_many_arguments)]
pub(crate) fn assign_among(
    kern: &Kernels,
    data: &[f32],
    xn: &[f32],
    dim: usize,
    centroids: &[f32],
    cands: &[u32],
    labels: &mut [u32],
    dist: &mut [f32],
) {
    let c = cands.len() / labels.len().max(1);
    let cn = sq_norms(kern, centroids, dim);
    labels
        .par_chunks_mut(CHUNK)
        .zip(dist.par_chunks_mut(CHUNK))
        .zip(data.par_chunks(CHUNK * dim).zip(xn.par_chunks(CHUNK)))
        .zip(cands.par_chunks(CHUNK * c))
        .for_each(|(((lab, dst), (x, xn)), ix)| {
            for (i, (row, ix)) in x.chunks_exact(dim).zip(ix.chunks_exact(c)).enumerate() {
                let (j, v) = nearest_among(kern, row, centroids, &cn, &[], ix);
                lab[i] = j;
                dst[i] = (xn[i] + v).max(0.0);
            }
        });
}

/// Costs of every point against every centroid (`n x k`), from the integer scores when the
/// dimension allows (the balanced assignment only needs their order to be about right).
pub(crate) fn all_costs_of(
    kern: &Kernels,
    data: &[f32],
    dim: usize,
    centroids: &[f32],
    pre: &Quantized,
    out: &mut [f32],
) {
    let k = centroids.len() / dim;
    let cn = sq_norms(kern, centroids, dim);
    let qb = QuantBook::new(centroids, dim);
    out.par_chunks_mut(CHUNK * k)
        .zip(data.par_chunks(CHUNK * dim))
        .enumerate()
        .for_each_init(Scratch::default, |scratch, (b, (o, x))| {
            let m = x.len() / dim;
            match &qb {
                Some(qb) => {
                    let v = Some(pre.rows(b * CHUNK, m, dim));
                    approx_costs(kern, x, dim, &cn, qb, v, scratch, o);
                }
                None => costs(kern, x, m, centroids, &cn, o),
            }
        });
}
