//! Balanced k-means: every cluster takes nearly the same number of points, by a size-capped
//! assignment and learnt prices (the codebook's assignment bias).

use imesde_simd::Kernels;
use rayon::prelude::*;

#[allow(clippy::wildcard_imports)]
use super::*;

/// Price rounds that learn a balanced codebook's assignment biases.
pub(crate) const PRICE_ROUNDS: usize = 60;

/// Candidates of the balanced assignment: each point's `SHORT` cheapest clusters, cheapest
/// first (ties by index).
pub(crate) const SHORT: usize = 16;

pub(crate) struct Shortlist {
    pub(crate) m: usize,
    pub(crate) idx: Vec<u32>,
    pub(crate) cost: Vec<f32>,
}

impl Shortlist {
    pub(crate) fn new(costs: &[f32], k: usize) -> Self {
        let m = SHORT.min(k);
        let n = costs.len() / k;
        let mut idx = vec![0u32; n * m];
        let mut cost = vec![0.0f32; n * m];
        idx.par_chunks_mut(CHUNK * m)
            .zip(cost.par_chunks_mut(CHUNK * m))
            .zip(costs.par_chunks(CHUNK * k))
            .for_each(|((ix, cs), rows)| {
                for ((ix, cs), row) in ix
                    .chunks_exact_mut(m)
                    .zip(cs.chunks_exact_mut(m))
                    .zip(rows.chunks_exact(k))
                {
                    smallest_into(row, ix, cs);
                }
            });
        Shortlist { m, idx, cost }
    }
}

/// Size-capped assignment: every cluster takes at most `ceil(n / k)` points. Points choose in
/// order of regret (how much worse their second choice is), each taking its cheapest cluster
/// with room left; ties go to the lower index. Each point offers its candidates (`idx`, `m` per
/// point) with their costs; `all(i, penalty)` is point `i`'s argmin of cost + penalty over
/// every cluster, asked only when all its candidates are full. With candidates that are a
/// point's `m` cheapest clusters this is exactly the assignment by the points' full cost rows.
pub(crate) fn capacity_assign(
    idx: &[u32],
    cost: &[f32],
    m: usize,
    k: usize,
    labels: &mut [u32],
    all: impl Fn(usize, &[f32]) -> usize,
) {
    let n = labels.len();
    let cap = n.div_ceil(k);
    // (regret, point, first choice)
    let mut order: Vec<(f32, u32, u32)> = cost
        .par_chunks(m)
        .zip(idx.par_chunks(m))
        .enumerate()
        .map(|(i, (cs, ix))| {
            let (mut first, mut second) = ((f32::INFINITY, u32::MAX), f32::INFINITY);
            for (&v, &j) in cs.iter().zip(ix) {
                if improves(v, j, first) {
                    second = first.0;
                    first = (v, j);
                } else if v < second {
                    second = v;
                }
            }
            (second - first.0, i as u32, first.1)
        })
        .collect();
    order.par_sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut load = vec![0usize; k];
    // +inf on full clusters, so "cheapest with room" is a plain argmin of cost + penalty.
    let mut penalty = vec![0.0f32; k];
    for (_, i, first) in order {
        let i = i as usize;
        let best = if load[first as usize] < cap {
            first as usize
        } else {
            let mut b = (f32::INFINITY, u32::MAX);
            for (&v, &j) in cost[i * m..(i + 1) * m]
                .iter()
                .zip(&idx[i * m..(i + 1) * m])
            {
                let open = penalty[j as usize] == 0.0;
                if open && improves(v, j, b) {
                    b = (v, j);
                }
            }
            if b.1 == u32::MAX {
                all(i, &penalty)
            } else {
                b.1 as usize
            }
        };
        labels[i] = best as u32;
        load[best] += 1;
        if load[best] == cap {
            penalty[best] = f32::INFINITY;
        }
    }
}

/// Exact costs `|c_j|^2 - 2 x.c_j` of each point against its candidates (`n x m`).
pub(crate) fn listed_costs(
    kern: &Kernels,
    data: &[f32],
    dim: usize,
    centroids: &[f32],
    cn: &[f32],
    idx: &[u32],
    cost: &mut [f32],
) {
    let m = idx.len() / (data.len() / dim).max(1);
    cost.par_chunks_mut(CHUNK * m)
        .zip(idx.par_chunks(CHUNK * m))
        .zip(data.par_chunks(CHUNK * dim))
        .for_each(|((cs, ix), x)| {
            for ((cs, ix), row) in cs
                .chunks_exact_mut(m)
                .zip(ix.chunks_exact(m))
                .zip(x.chunks_exact(dim))
            {
                candidate_costs(kern, row, centroids, cn, ix, cs);
            }
        });
}

/// Balanced assignment by prices: each point takes the shortlisted centroid of least
/// `cost + price`, and prices rise on clusters above `n / k` points and fall below it, until
/// sizes even out. The prices become the codebook's assignment bias, so encoding later makes
/// the same choices.
pub(crate) fn balance(
    short: &Shortlist,
    k: usize,
    prices: &mut [f32],
    labels: &mut [u32],
    scale: f32,
) {
    let n = labels.len();
    let m = short.m;
    let target = n as f32 / k as f32;
    // A cluster in no point's shortlist gets no point whatever its price: lowering it round
    // after round would only make a price that, in encoding (which scores every cluster),
    // draws in every point near it.
    let mut listed = vec![false; k];
    for &j in &short.idx {
        listed[j as usize] = true;
    }
    for round in 0..PRICE_ROUNDS {
        labels
            .par_chunks_mut(CHUNK)
            .zip(
                short
                    .idx
                    .par_chunks(CHUNK * m)
                    .zip(short.cost.par_chunks(CHUNK * m)),
            )
            .for_each(|(lab, (ix, cs))| {
                for (l, (ix, cs)) in lab
                    .iter_mut()
                    .zip(ix.chunks_exact(m).zip(cs.chunks_exact(m)))
                {
                    let mut best = (f32::INFINITY, u32::MAX);
                    for (&j, &c) in ix.iter().zip(cs) {
                        let v = (c + prices[j as usize], j);
                        if v.0 < best.0 || (v.0.total_cmp(&best.0).is_eq() && v.1 < best.1) {
                            best = v;
                        }
                    }
                    *l = best.1;
                }
            });
        let mut counts = vec![0u32; k];
        for &l in labels.iter() {
            counts[l as usize] += 1;
        }
        let step = price_step(scale, round);
        for ((p, &c), &listed) in prices.iter_mut().zip(&counts).zip(&listed) {
            if listed || c > 0 {
                *p += step * ((c as f32 - target) / target).clamp(-1.0, 4.0);
            }
        }
    }
}

/// The price step of round `round`: sizes shrink over the rounds so prices settle instead of
/// oscillating.
fn price_step(scale: f32, round: usize) -> f32 {
    scale * 0.5 / (1.0 + round as f32 * 0.25)
}

/// Rounds of price learning on every cluster of each point's full cost row, after the
/// shortlist rounds: they settle what the shortlists could not see (a cluster whose price
/// took it into points' choices beyond their shortlists), so that encoding, which scores
/// every cluster, splits the data as evenly as the learning did.
const FULL_ROUNDS: usize = 12;

/// [`balance`]'s rounds continued on the full cost rows `all_costs` (`n x k`).
fn balance_full(all_costs: &[f32], k: usize, prices: &mut [f32], labels: &mut [u32], scale: f32) {
    let target = labels.len() as f32 / k as f32;
    for round in PRICE_ROUNDS..PRICE_ROUNDS + FULL_ROUNDS {
        labels
            .par_chunks_mut(CHUNK)
            .zip(all_costs.par_chunks(CHUNK * k))
            .for_each(|(lab, rows)| {
                for (l, row) in lab.iter_mut().zip(rows.chunks_exact(k)) {
                    *l = argmin(row, prices) as u32;
                }
            });
        let mut counts = vec![0u32; k];
        for &l in labels.iter() {
            counts[l as usize] += 1;
        }
        let step = price_step(scale, round);
        for (p, &c) in prices.iter_mut().zip(&counts) {
            *p += step * ((c as f32 - target) / target).clamp(-1.0, 4.0);
        }
    }
}

/// Assignment prices (a codebook's bias) under which the nearest-codeword rule splits `data`
/// (`n x dim`, squared norms `xn`, quantised `pre`) evenly among `centroids`: learnt from zero
/// by [`balance`] over each point's shortlist. `labels` gets the balanced split; `all_costs`
/// (`n x k`) is work space.
#[allow(clippy::too_many_arguments)]
pub(crate) fn learn_prices(
    kern: &Kernels,
    data: &[f32],
    xn: &[f32],
    dim: usize,
    centroids: &[f32],
    pre: &Quantized,
    all_costs: &mut [f32],
    labels: &mut [u32],
) -> Vec<f32> {
    let k = centroids.len() / dim;
    let n = labels.len();
    all_costs_of(kern, data, dim, centroids, pre, all_costs);
    let short = Shortlist::new(all_costs, k);
    let scale = {
        let m = short.m;
        let s: f64 = (0..n)
            .map(|i| f64::from((xn[i] + short.cost[i * m]).max(0.0)))
            .sum();
        (s / n as f64) as f32 * 0.05 + f32::MIN_POSITIVE
    };
    let mut prices = vec![0.0f32; k];
    balance(&short, k, &mut prices, labels, scale);
    balance_full(all_costs, k, &mut prices, labels, scale);
    prices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_in_no_shortlist_keeps_its_price() {
        // 20 clusters, shortlists of 16: cluster 19 costs far more than any other for every
        // point, so it is in no shortlist. Lowering its price would win it no point here, but
        // would make it the choice of every point when encoding scores all clusters.
        let (n, k) = (400, 20);
        let costs: Vec<f32> = (0..n)
            .flat_map(|i| {
                (0..k).map(move |j| {
                    if j == k - 1 {
                        1e3
                    } else {
                        ((i + j) % k) as f32
                    }
                })
            })
            .collect();
        let short = Shortlist::new(&costs, k);
        assert!(!short.idx.contains(&((k - 1) as u32)));
        let mut prices = vec![0.0f32; k];
        let mut labels = vec![0u32; n];
        balance(&short, k, &mut prices, &mut labels, 1.0);
        assert!(prices[k - 1].abs() < f32::EPSILON, "{}", prices[k - 1]);
        // The full rounds see it: it stays unchosen, its price only a few small steps lower.
        balance_full(&costs, k, &mut prices, &mut labels, 1.0);
        assert!(!labels.contains(&((k - 1) as u32)));
        assert!(prices[k - 1] > -1.0, "{}", prices[k - 1]);
    }
}
