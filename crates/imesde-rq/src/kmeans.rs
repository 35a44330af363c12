//! Seeded k-means with a reproducible result: k-means++ seeding, Lloyd iterations in parallel,
//! empty clusters re-seeded, and an optional balanced (size-constrained) assignment.
//!
//! Reproducible means bit-identical for a given seed on every machine and every thread count:
//! distances come from the fixed-order kernel of `imesde-simd`, every parallel step either
//! works per point or reduces fixed-size blocks in a fixed order, and ties go to the lowest
//! index.

use std::borrow::Cow;

use imesde_simd::Kernels;
use rayon::prelude::*;

use crate::rng::Rng;

/// Points per parallel task in distance computations.
pub(crate) const CHUNK: usize = 64;
/// Points per partial sum in the centroid update: a fixed size, so the order of the f64 sums
/// does not depend on how many threads run.
const SUM_BLOCK: usize = 4096;
/// Price rounds per Lloyd iteration in the balanced assignment.
const PRICE_ROUNDS: usize = 60;

/// What one k-means run is asked to do.
#[derive(Debug, Clone)]
pub(crate) struct KMeansConfig {
    /// Number of clusters.
    pub k: usize,
    /// Most Lloyd iterations.
    pub max_iter: usize,
    /// Stop when the summed squared centroid shift falls below `tol` times the mean per-feature
    /// variance of the data (scikit-learn's rule).
    pub tol: f64,
    /// Seed of the k-means++ seeding and of sampling.
    pub seed: u64,
    /// Give every cluster nearly the same number of points.
    pub balanced: bool,
    /// Train on at most this many points, drawn without replacement.
    pub sample_size: Option<usize>,
    /// How the first centroids are chosen.
    pub init: Init,
}

/// How k-means chooses its first centroids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Init {
    /// `k` distinct training points drawn uniformly (faiss's choice). With the same seed at
    /// every level of a residual quantiser the draws are the same points, which measured
    /// 4-5 % lower reconstruction error than independent draws or k-means++ on embeddings.
    #[default]
    Random,
    /// k-means++: each next centroid drawn with probability proportional to its squared
    /// distance to the nearest centroid chosen so far.
    KMeansPlusPlus,
}

/// A trained level: centroids, the per-centroid assignment bias (empty unless balanced), the
/// final labels of *all* input points, and how training went.
#[derive(Debug, Clone)]
pub(crate) struct KMeansResult {
    pub centroids: Vec<f32>,
    pub bias: Vec<f32>,
    pub labels: Vec<u32>,
    pub iterations: usize,
    pub converged: bool,
    /// Sum of squared distances of all points to their centroids.
    pub inertia: f64,
}

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

/// Index of the smallest `row[j] + bias[j]` (bias may be empty); ties go to the lowest index.
#[inline]
pub(crate) fn argmin(row: &[f32], bias: &[f32]) -> usize {
    let mut best = 0;
    let mut best_v = f32::INFINITY;
    if bias.is_empty() {
        for (j, &v) in row.iter().enumerate() {
            if v < best_v {
                best_v = v;
                best = j;
            }
        }
    } else {
        for (j, (&v, &b)) in row.iter().zip(bias).enumerate() {
            let v = v + b;
            if v < best_v {
                best_v = v;
                best = j;
            }
        }
    }
    best
}

/// Nearest centroid (after bias) of every point, and its squared distance.
#[allow(clippy::too_many_arguments)]
pub(crate) fn assign(
    kern: &Kernels,
    data: &[f32],
    xn: &[f32],
    dim: usize,
    centroids: &[f32],
    bias: &[f32],
    labels: &mut [u32],
    dist: &mut [f32],
) {
    let k = centroids.len() / dim;
    let cn = sq_norms(kern, centroids, dim);
    labels
        .par_chunks_mut(CHUNK)
        .zip(dist.par_chunks_mut(CHUNK))
        .zip(data.par_chunks(CHUNK * dim).zip(xn.par_chunks(CHUNK)))
        .for_each_init(
            || vec![0.0f32; CHUNK * k],
            |buf, ((lab, dst), (x, xn))| {
                let m = lab.len();
                costs(kern, x, m, centroids, &cn, buf);
                for i in 0..m {
                    let row = &buf[i * k..(i + 1) * k];
                    let j = argmin(row, bias);
                    lab[i] = j as u32;
                    dst[i] = (xn[i] + row[j]).max(0.0);
                }
            },
        );
}

/// Mean per-feature variance of the data (f64).
fn mean_variance(data: &[f32], dim: usize) -> f64 {
    let n = (data.len() / dim) as f64;
    let mut mean = vec![0.0f64; dim];
    let mut sq = vec![0.0f64; dim];
    for row in data.chunks_exact(dim) {
        for ((m, s), &v) in mean.iter_mut().zip(sq.iter_mut()).zip(row) {
            let v = f64::from(v);
            *m += v;
            *s += v * v;
        }
    }
    mean.iter()
        .zip(&sq)
        .map(|(m, s)| (s / n - (m / n) * (m / n)).max(0.0))
        .sum::<f64>()
        / dim as f64
}

/// k-means++: the first centroid uniformly, each next one with probability proportional to the
/// squared distance to the nearest centroid chosen so far.
fn kmeans_pp(
    kern: &Kernels,
    data: &[f32],
    xn: &[f32],
    dim: usize,
    k: usize,
    rng: &mut Rng,
) -> Vec<f32> {
    let n = xn.len();
    let mut centroids = Vec::with_capacity(k * dim);
    let mut closest = vec![f32::INFINITY; n];
    let mut pick = rng.below(n);
    for _ in 0..k {
        let c = &data[pick * dim..(pick + 1) * dim];
        centroids.extend_from_slice(c);
        let mut cn = [0.0f32];
        kern.scan_multi_f32_fixed(c, 1, c, &mut cn);
        closest
            .par_chunks_mut(1024)
            .zip(data.par_chunks(1024 * dim).zip(xn.par_chunks(1024)))
            .for_each_init(
                || vec![0.0f32; 1024],
                |buf, (cl, (x, xn))| {
                    let m = cl.len();
                    kern.scan_multi_f32_fixed(x, m, c, &mut buf[..m]);
                    for i in 0..m {
                        let d = (xn[i] + cn[0] - 2.0 * buf[i]).max(0.0);
                        if d < cl[i] {
                            cl[i] = d;
                        }
                    }
                },
            );
        let total: f64 = closest.iter().map(|&d| f64::from(d)).sum();
        pick = if total > 0.0 {
            let target = rng.f64() * total;
            let mut acc = 0.0f64;
            let mut chosen = n - 1;
            for (i, &d) in closest.iter().enumerate() {
                acc += f64::from(d);
                if acc > target && d > 0.0 {
                    chosen = i;
                    break;
                }
            }
            chosen
        } else {
            rng.below(n)
        };
    }
    centroids
}

/// New centroids as the f64 means of their points; sums are built per fixed block of points
/// and added block by block, so the result does not depend on the thread count. Returns the
/// centroids and the counts.
fn update(data: &[f32], dim: usize, labels: &[u32], k: usize) -> (Vec<f64>, Vec<u64>) {
    let partial: Vec<(Vec<f64>, Vec<u64>)> = data
        .par_chunks(SUM_BLOCK * dim)
        .zip(labels.par_chunks(SUM_BLOCK))
        .map(|(x, lab)| {
            let mut sums = vec![0.0f64; k * dim];
            let mut counts = vec![0u64; k];
            for (row, &l) in x.chunks_exact(dim).zip(lab) {
                let l = l as usize;
                counts[l] += 1;
                for (s, &v) in sums[l * dim..(l + 1) * dim].iter_mut().zip(row) {
                    *s += f64::from(v);
                }
            }
            (sums, counts)
        })
        .collect();
    let mut sums = vec![0.0f64; k * dim];
    let mut counts = vec![0u64; k];
    for (s, c) in partial {
        for (a, b) in sums.iter_mut().zip(&s) {
            *a += b;
        }
        for (a, b) in counts.iter_mut().zip(&c) {
            *a += b;
        }
    }
    (sums, counts)
}

/// Gives each empty cluster half of a big one (faiss's rule): a cluster is chosen with
/// probability proportional to its size beyond one point, and the two centroids are nudged
/// apart symmetrically so the next assignment divides its points.
fn split_into_empty(centroids: &mut [f32], counts: &mut [u64], dim: usize, rng: &mut Rng) {
    const EPS: f32 = 1.0 / 1024.0;
    let k = counts.len();
    let n: u64 = counts.iter().sum();
    for ci in 0..k {
        if counts[ci] != 0 {
            continue;
        }
        // Weighted pick among clusters with more than one point.
        let spare: u64 = counts.iter().map(|&c| c.saturating_sub(1)).sum();
        if spare == 0 || n == 0 {
            break;
        }
        let mut target = (rng.f64() * spare as f64) as u64;
        let mut cj = 0;
        for (j, &c) in counts.iter().enumerate() {
            let w = c.saturating_sub(1);
            if target < w {
                cj = j;
                break;
            }
            target -= w;
        }
        let (src, dst) = (cj * dim, ci * dim);
        for d in 0..dim {
            let v = centroids[src + d];
            let (a, b) = if d % 2 == 0 {
                (1.0 + EPS, 1.0 - EPS)
            } else {
                (1.0 - EPS, 1.0 + EPS)
            };
            centroids[dst + d] = v * a;
            centroids[src + d] = v * b;
        }
        counts[ci] = counts[cj] / 2;
        counts[cj] -= counts[ci];
    }
}

/// Size-capped assignment: every cluster takes at most `ceil(n / k)` points. Points choose in
/// order of regret (how much worse their second choice is), each taking the cheapest cluster
/// with room left; ties go to the lower index.
fn capacity_assign(costs: &[f32], k: usize, labels: &mut [u32]) {
    let n = labels.len();
    let cap = n.div_ceil(k);
    let mut order: Vec<(f32, usize)> = costs
        .par_chunks(k)
        .enumerate()
        .map(|(i, row)| {
            let (mut b1, mut b2) = (f32::INFINITY, f32::INFINITY);
            for &v in row {
                if v < b1 {
                    b2 = b1;
                    b1 = v;
                } else if v < b2 {
                    b2 = v;
                }
            }
            (b2 - b1, i)
        })
        .collect();
    order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut load = vec![0usize; k];
    for (_, i) in order {
        let row = &costs[i * k..(i + 1) * k];
        let mut best = 0;
        let mut best_v = f32::INFINITY;
        for (j, &v) in row.iter().enumerate() {
            if load[j] < cap && v < best_v {
                best_v = v;
                best = j;
            }
        }
        labels[i] = best as u32;
        load[best] += 1;
    }
}

/// Balanced assignment by prices: each point takes the centroid of least `cost + price`, and
/// prices rise on clusters above `n / k` points and fall below it, until sizes even out. The
/// prices are kept between Lloyd iterations and become the codebook's assignment bias, so
/// encoding later makes the same choices. `costs` is `n x k`.
fn balance(costs: &[f32], k: usize, prices: &mut [f32], labels: &mut [u32], scale: f32) {
    let n = labels.len();
    let target = n as f32 / k as f32;
    for round in 0..PRICE_ROUNDS {
        labels
            .par_chunks_mut(CHUNK)
            .zip(costs.par_chunks(CHUNK * k))
            .for_each(|(lab, c)| {
                for (l, row) in lab.iter_mut().zip(c.chunks_exact(k)) {
                    *l = argmin(row, prices) as u32;
                }
            });
        let mut counts = vec![0u32; k];
        for &l in labels.iter() {
            counts[l as usize] += 1;
        }
        // Step sizes shrink over the rounds so prices settle instead of oscillating.
        let step = scale * 0.5 / (1.0 + round as f32 * 0.25);
        for (p, &c) in prices.iter_mut().zip(&counts) {
            *p += step * ((c as f32 - target) / target).clamp(-1.0, 4.0);
        }
    }
}

/// Runs k-means on `data` (`n x dim`, row-major).
pub(crate) fn kmeans(kern: &Kernels, data: &[f32], dim: usize, cfg: &KMeansConfig) -> KMeansResult {
    let n = data.len() / dim;
    let k = cfg.k;
    let mut rng = Rng::new(cfg.seed);
    let train: Cow<'_, [f32]> = match cfg.sample_size {
        Some(s) if s < n => {
            // Partial Fisher-Yates, then sorted so the subset is read in memory order.
            let mut idx: Vec<usize> = (0..n).collect();
            for i in 0..s {
                let j = i + rng.below(n - i);
                idx.swap(i, j);
            }
            let mut chosen = idx[..s].to_vec();
            chosen.sort_unstable();
            let mut out = Vec::with_capacity(s * dim);
            for i in chosen {
                out.extend_from_slice(&data[i * dim..(i + 1) * dim]);
            }
            Cow::Owned(out)
        }
        _ => Cow::Borrowed(data),
    };
    let nt = train.len() / dim;
    let xn = sq_norms(kern, &train, dim);
    let mut centroids = match cfg.init {
        Init::Random => {
            // k distinct training points (partial Fisher-Yates).
            let mut idx: Vec<usize> = (0..nt).collect();
            for i in 0..k {
                let j = i + rng.below(nt - i);
                idx.swap(i, j);
            }
            idx[..k]
                .iter()
                .flat_map(|&i| train[i * dim..(i + 1) * dim].iter().copied())
                .collect()
        }
        Init::KMeansPlusPlus => kmeans_pp(kern, &train, &xn, dim, k, &mut rng),
    };
    let tol = cfg.tol * mean_variance(&train, dim);
    let mut prices = if cfg.balanced {
        vec![0.0f32; k]
    } else {
        Vec::new()
    };
    let mut labels = vec![0u32; nt];
    let mut dist = vec![0.0f32; nt];
    let mut all_costs = if cfg.balanced {
        vec![0.0f32; nt * k]
    } else {
        Vec::new()
    };
    let mut iterations = 0;
    let mut converged = false;
    for _ in 0..cfg.max_iter {
        iterations += 1;
        if cfg.balanced {
            let cn = sq_norms(kern, &centroids, dim);
            all_costs
                .par_chunks_mut(CHUNK * k)
                .zip(train.par_chunks(CHUNK * dim))
                .for_each(|(out, x)| {
                    let m = x.len() / dim;
                    costs(kern, x, m, &centroids, &cn, out);
                });
            capacity_assign(&all_costs, k, &mut labels);
            for (i, d) in dist.iter_mut().enumerate() {
                *d = (xn[i] + all_costs[i * k + labels[i] as usize]).max(0.0);
            }
        } else {
            assign(
                kern,
                &train,
                &xn,
                dim,
                &centroids,
                &[],
                &mut labels,
                &mut dist,
            );
        }
        let (sums, counts) = update(&train, dim, &labels, k);
        let mut next = vec![0.0f32; k * dim];
        let mut counts = counts;
        for j in 0..k {
            if counts[j] > 0 {
                let inv = 1.0 / counts[j] as f64;
                for (v, s) in next[j * dim..(j + 1) * dim]
                    .iter_mut()
                    .zip(&sums[j * dim..(j + 1) * dim])
                {
                    *v = (s * inv) as f32;
                }
            }
        }
        split_into_empty(&mut next, &mut counts, dim, &mut rng);
        let mut shift = 0.0f64;
        for (a, b) in next.iter().zip(&centroids) {
            let d = f64::from(a - b);
            shift += d * d;
        }
        centroids = next;
        if shift <= tol {
            converged = true;
            break;
        }
    }
    if cfg.balanced {
        // Prices that make the nearest-codeword rule (which encoding uses) reproduce a
        // balanced split of the training points under the final centroids.
        let cn = sq_norms(kern, &centroids, dim);
        all_costs
            .par_chunks_mut(CHUNK * k)
            .zip(train.par_chunks(CHUNK * dim))
            .for_each(|(out, x)| {
                let m = x.len() / dim;
                costs(kern, x, m, &centroids, &cn, out);
            });
        let scale = {
            let mut s = 0.0f64;
            for (row, &x) in all_costs.chunks_exact(k).zip(&xn) {
                let j = argmin(row, &[]);
                s += f64::from((x + row[j]).max(0.0));
            }
            (s / nt as f64) as f32 * 0.05 + f32::MIN_POSITIVE
        };
        balance(&all_costs, k, &mut prices, &mut labels, scale);
    }
    drop(all_costs);
    // Final labels for every input point under the final centroids (and prices).
    let xn_all;
    let xn_ref = if matches!(train, Cow::Borrowed(_)) {
        &xn
    } else {
        xn_all = sq_norms(kern, data, dim);
        &xn_all
    };
    let mut labels = vec![0u32; n];
    let mut dist = vec![0.0f32; n];
    assign(
        kern,
        data,
        xn_ref,
        dim,
        &centroids,
        &prices,
        &mut labels,
        &mut dist,
    );
    let inertia = dist.iter().map(|&d| f64::from(d)).sum();
    KMeansResult {
        centroids,
        bias: prices,
        labels,
        iterations,
        converged,
        inertia,
    }
}
