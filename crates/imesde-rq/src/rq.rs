//! Residual quantisation: level `l` is a k-means codebook trained on what levels `0..l` leave
//! unexplained, and a vector's code is one codeword index per level.

use imesde_simd::{Backend, Kernels};
use rayon::prelude::*;

use crate::error::{Result, RqError};
use crate::filter::{QuantBook, Quantized, Scratch, nearest_block};
pub use crate::kmeans::Init;
use crate::kmeans::{
    ByLabel, CANDIDATES, CHUNK, KMeansConfig, argmin, costs, kmeans, learn_prices, nearest_among,
    sq_norms,
};
use crate::select::smallest_into;

/// One level: `k` codewords of the model's dimension, their squared norms, and the assignment
/// bias learnt by balanced training (empty otherwise). Kept divided by the model's scale (see
/// [`RqKMeans`]); [`Codebook::centroids`] and [`Codebook::bias`] give them in the data's units.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    pub(crate) k: usize,
    pub(crate) centroids: Vec<f32>,
    pub(crate) norms: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    /// The int8 codewords of the exact integer prefilter (`None` past its dimension limit).
    pub(crate) quant: Option<QuantBook>,
    /// The model's scale: a power of two, so scaling is exact.
    pub(crate) scale: f32,
}

impl Codebook {
    pub(crate) fn new(kern: &Kernels, dim: usize, centroids: Vec<f32>, bias: Vec<f32>) -> Self {
        let norms = sq_norms(kern, &centroids, dim);
        Codebook {
            k: centroids.len() / dim,
            quant: QuantBook::new(&centroids, dim),
            centroids,
            norms,
            bias,
            scale: 1.0,
        }
    }
    /// Number of codewords.
    #[must_use]
    pub fn len(&self) -> usize {
        self.k
    }
    /// Whether the codebook has no codewords (never true for a trained model).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.k == 0
    }
    /// Codewords, `k x dim` row-major, in the units of the training data.
    #[must_use]
    pub fn centroids(&self) -> Vec<f32> {
        self.centroids.iter().map(|v| v * self.scale).collect()
    }
    /// Per-codeword assignment bias of a balanced model (a squared distance, in the units of
    /// the training data); empty for a plain one.
    #[must_use]
    pub fn bias(&self) -> Vec<f32> {
        self.bias
            .iter()
            .map(|v| v * self.scale * self.scale)
            .collect()
    }
}

/// Largest row norm, relative to the model's scale, that encoding accepts: squared distances
/// of such rows stay far inside f32's range (2^120 of its 2^128).
const MAX_SCALED_NORM: f64 = (1u64 << 60) as f64;

/// The power of two that brings `data`'s largest magnitude near 1, or 1 when it is already
/// between 2^-16 and 2^16. Training and encoding work on the data divided by it (exactly: a
/// power of two only moves exponents), so the model is the same at every magnitude and
/// squared distances neither overflow (values of 1e19 and more) nor underflow (1e-20).
fn scale_of(data: &[f32]) -> f32 {
    let max = data.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max == 0.0 || (2f32.powi(-16)..=2f32.powi(16)).contains(&max) {
        return 1.0;
    }
    let e = (max.log2().round() as i32).clamp(-126, 127);
    // A normal f32 power of two: exponent bits only.
    f32::from_bits(((e + 127) as u32) << 23)
}

/// Refuses training data whose largest row is more than [`MAX_SCALED_NORM`] times its typical
/// (median) row: scaled to the largest, the other rows' squared distances would fall below
/// f32's range and every one of them would get the same code.
fn check_spread(data: &[f32], dim: usize) -> Result<()> {
    let mut peaks: Vec<f32> = data
        .chunks_exact(dim)
        .map(|row| row.iter().fold(0f32, |m, v| m.max(v.abs())))
        .filter(|&m| m > 0.0)
        .collect();
    if peaks.is_empty() {
        return Ok(());
    }
    let (largest, i) =
        peaks.iter().enumerate().fold(
            (0f32, 0),
            |(m, at), (i, &v)| if v > m { (v, i) } else { (m, at) },
        );
    let mid = peaks.len() / 2;
    let median = *peaks.select_nth_unstable_by(mid, f32::total_cmp).1;
    if f64::from(largest) > f64::from(median) * MAX_SCALED_NORM {
        // `i` counts the non-zero rows: find the row itself.
        let row = data
            .chunks_exact(dim)
            .enumerate()
            .filter(|(_, r)| r.iter().any(|&v| v != 0.0))
            .nth(i)
            .map_or(0, |(r, _)| r);
        return Err(RqError::Invalid(format!(
            "vector {row} has values up to {largest:.3e}, more than 2^60 times the typical \
             vector's ({median:.3e}): next to it every other vector would get the same code; \
             drop it or rescale the data"
        )));
    }
    Ok(())
}

/// `data` divided by `scale` (borrowed as is when it is 1).
#[allow(clippy::float_cmp)] // scales are exact powers of two
fn scaled(data: &[f32], scale: f32) -> std::borrow::Cow<'_, [f32]> {
    if scale == 1.0 {
        std::borrow::Cow::Borrowed(data)
    } else {
        std::borrow::Cow::Owned(data.iter().map(|v| v / scale).collect())
    }
}

/// Training parameters.
#[derive(Debug, Clone)]
pub struct FitConfig {
    /// Codebook size per level; its length is the number of levels.
    pub n_clusters: Vec<usize>,
    /// Most Lloyd iterations per level.
    pub max_iter: usize,
    /// Convergence tolerance: a level stops when the summed squared centroid shift falls below
    /// `tol` times the mean per-feature variance of the data (scikit-learn's rule).
    pub tol: f64,
    /// Seed: the same seed gives bit-identical codebooks on every machine and thread count.
    pub seed: u64,
    /// Size-constrained (balanced) assignment at every level.
    pub balanced: bool,
    /// Train each level on at most this many vectors.
    pub sample_size: Option<usize>,
    /// Train each level on at most this many vectors per codeword (faiss's rule; 256 by
    /// default): more adds time, not quality.
    pub max_points_per_centroid: Option<usize>,
    /// How each level's k-means starts.
    pub init: Init,
    /// Rounds of codebook refinement after the levels are trained: encode the training set,
    /// then move every codeword to the least-squares optimum given all the other levels'
    /// codewords. Each round lowers a plain model's reconstruction error. A balanced model then
    /// learns its biases again, so its codes stay evenly used (each round also adds some
    /// collisions); its error usually falls too, but the rebalancing can raise it (data with
    /// many repeated rows).
    /// `None`: 3 rounds for a plain model, 1 for a balanced one.
    pub refine: Option<usize>,
    /// Run on this SIMD backend instead of the best one (for tests: results are bit-identical
    /// on every backend).
    pub backend: Option<Backend>,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            n_clusters: vec![256; 3],
            max_iter: 25,
            tol: 1e-4,
            seed: 0,
            balanced: false,
            sample_size: None,
            max_points_per_centroid: Some(256),
            init: Init::Random,
            refine: None,
            backend: None,
        }
    }
}

impl FitConfig {
    /// Most training vectors of a level of `k` codewords (`None`: all of them).
    fn train_size(&self, k: usize) -> Option<usize> {
        match (self.sample_size, self.max_points_per_centroid) {
            (Some(s), Some(p)) => Some(s.min(p.saturating_mul(k))),
            (s, p) => s.or(p.map(|p| p.saturating_mul(k))),
        }
    }
}

/// How training went, per level.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelReport {
    /// The k-means iterations run.
    pub iterations: usize,
    /// Whether they stopped because the centroids stopped moving (their summed squared shift
    /// at most [`FitConfig::tol`] times the data's variance), else at the iteration cap.
    pub converged: bool,
    /// Mean squared residual norm after this level, over the training vectors.
    pub mse: f64,
}

/// A trained residual quantiser.
#[derive(Debug, Clone)]
pub struct RqKMeans {
    pub(crate) dim: usize,
    pub(crate) levels: Vec<Codebook>,
    /// The kernels it runs on; any backend gives the same codes.
    pub(crate) backend: Backend,
}

impl PartialEq for RqKMeans {
    fn eq(&self, other: &Self) -> bool {
        self.dim == other.dim && self.levels == other.levels
    }
}

fn check_data(data: &[f32], dim: usize) -> Result<usize> {
    checked_max_abs(data, dim).map(|(n, _)| n)
}

/// [`check_data`], and the largest `|v|`.
fn checked_max_abs(data: &[f32], dim: usize) -> Result<(usize, f32)> {
    if dim == 0 {
        return Err(RqError::Invalid("dimension must be at least 1".into()));
    }
    if !data.len().is_multiple_of(dim) {
        return Err(RqError::Invalid(format!(
            "{} values do not form rows of {dim}",
            data.len()
        )));
    }
    let Some(m) = finite_max_abs(data) else {
        let i = data.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(RqError::Invalid(format!(
            "vector {} contains NaN or infinity",
            i / dim
        )));
    };
    Ok((data.len() / dim, m))
}

avx2_dispatch! {
    /// The largest `|v|` (0 for none), or `None` when a value is NaN or infinite. One pass in
    /// sixteen lanes, so it vectorises.
    fn finite_max_abs(data: &[f32]) -> Option<f32> = finite_max_abs_any;
}

#[inline(always)]
fn finite_max_abs_any(data: &[f32]) -> Option<f32> {
    let mut m = [0.0f32; 16];
    let mut bad = [false; 16];
    let (chunks, tail) = data.as_chunks::<16>();
    let mut lane = |l: usize, v: f32| {
        let a = v.abs();
        // A NaN never replaces the maximum; it and infinity mark the lane.
        m[l] = if a > m[l] { a } else { m[l] };
        bad[l] |= a.is_nan() || a > f32::MAX;
    };
    for c in chunks {
        for l in 0..16 {
            lane(l, c[l]);
        }
    }
    for (l, &v) in tail.iter().enumerate() {
        lane(l, v);
    }
    if bad.iter().any(|&b| b) {
        None
    } else {
        Some(m.iter().fold(0.0f32, |a, &b| a.max(b)))
    }
}

/// Buffers of [`RqKMeans::greedy_block`]: codebook scores, residuals, prefilter scratch.
type GreedyScratch = (Vec<f32>, Vec<f32>, Scratch);

/// Runs `f` with this thread's greedy-encoding buffers, kept between calls so that encoding
/// small batches (a stream's) does not allocate and zero them each time; fresh ones when the
/// thread's are in use (a nested call while it waits for other work).
fn with_greedy_scratch(f: impl FnOnce(&mut GreedyScratch)) {
    thread_local! {
        static SCRATCH: std::cell::RefCell<GreedyScratch> = std::cell::RefCell::default();
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut GreedyScratch::default()),
    });
}

/// Subtracts from each row of `residual` (`dim` wide) its codeword `centroids[labels[i]]`.
fn subtract_codewords(residual: &mut [f32], dim: usize, labels: &[u32], centroids: &[f32]) {
    residual
        .par_chunks_mut(dim)
        .zip(labels.par_iter())
        .for_each(|(r, &j)| {
            let c = &centroids[j as usize * dim..(j as usize + 1) * dim];
            for (a, b) in r.iter_mut().zip(c) {
                *a -= b;
            }
        });
}

avx2_dispatch! {
    /// `acc -= w * row`, in f64.
    fn sub_scaled(acc: &mut [f64], w: f64, row: &[f32]) = sub_scaled_any;
}

#[inline(always)]
fn sub_scaled_any(acc: &mut [f64], w: f64, row: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(row) {
        *a -= w * f64::from(v);
    }
}

/// Copies one level's candidate lists (`n x CANDIDATES`, point order) into the block layout of
/// [`RqKMeans::encode_listed`]: blocks of `CHUNK` vectors, level-major within a block.
fn lay_out_lists(lists: &mut [u32], level: &[u32], l: usize, nl: usize) {
    for (block, src) in lists
        .chunks_mut(CHUNK * nl * CANDIDATES)
        .zip(level.chunks(CHUNK * CANDIDATES))
    {
        let at = l * src.len();
        block[at..at + src.len()].copy_from_slice(src);
    }
}

/// One level's items grouped by codeword, for [`RqKMeans::refine`]: per codeword `j`, how many
/// items use it, the sum of their vectors (f64), and which codewords of the other levels they
/// use, how often (`(level, codeword, times)`, sorted, in `pairs[start[j]..start[j + 1]]`).
struct CoUse {
    counts: Vec<u64>,
    sums: Vec<f64>,
    start: Vec<usize>,
    pairs: Vec<(u32, u32, u32)>,
}

impl CoUse {
    fn new(data: &[f32], dim: usize, labels: &[Vec<u32>], l: usize, k: usize) -> Self {
        let groups = ByLabel::new(&labels[l], k);
        let sums = groups.sums(data, dim);
        let per_code: Vec<Vec<(u32, u32, u32)>> = (0..k)
            .into_par_iter()
            .map_init(Vec::new, |used, j| {
                used.clear();
                for (m, lab) in labels.iter().enumerate().filter(|&(m, _)| m != l) {
                    used.extend(groups.of(j).iter().map(|&i| (m as u32, lab[i as usize])));
                }
                used.sort_unstable();
                let mut out: Vec<(u32, u32, u32)> = Vec::new();
                for &(m, jm) in used.iter() {
                    match out.last_mut() {
                        Some(last) if (last.0, last.1) == (m, jm) => last.2 += 1,
                        _ => out.push((m, jm, 1)),
                    }
                }
                out
            })
            .collect();
        let mut start = vec![0usize; k + 1];
        for (j, p) in per_code.iter().enumerate() {
            start[j + 1] = start[j] + p.len();
        }
        CoUse {
            counts: groups.counts,
            sums,
            start,
            pairs: per_code.concat(),
        }
    }
}

/// Most candidate-list entries `fit` keeps for its refinement rounds (256 MiB).
const MAX_LIST_ENTRIES: usize = 1 << 26;

/// The most scores a beam search keeps per vector and level (partial codes x codewords): a
/// bound on its memory, 4 MiB per vector (a beam of 1,024 over 1,024 codewords).
pub const MAX_BEAM_SCORES: usize = 1 << 20;

impl RqKMeans {
    /// Trains `cfg.n_clusters.len()` levels on `data` (`n x dim`, row-major). Returns the model
    /// and per-level reports.
    ///
    /// # Errors
    /// [`RqError::Invalid`] for empty or non-finite data, no levels, a level with more clusters
    /// than training vectors, `max_iter` of 0 or a negative `tol`.
    pub fn fit(data: &[f32], dim: usize, cfg: &FitConfig) -> Result<(Self, Vec<LevelReport>)> {
        Self::fit_until(data, dim, cfg, &|| false)
    }

    /// [`RqKMeans::fit`] that asks `stop` between k-means iterations and refinement rounds (from
    /// any thread) and, once it returns true, ends with [`RqError::Interrupted`].
    ///
    /// # Errors
    /// As [`RqKMeans::fit`], or [`RqError::Interrupted`].
    pub fn fit_until(
        data: &[f32],
        dim: usize,
        cfg: &FitConfig,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<(Self, Vec<LevelReport>)> {
        check_data(data, dim)?;
        check_spread(data, dim)?;
        let scale = scale_of(data);
        let (mut model, mut reports) = Self::fit_scaled(&scaled(data, scale), dim, cfg, stop)?;
        model.set_scale(scale);
        for r in &mut reports {
            r.mse *= f64::from(scale) * f64::from(scale);
        }
        Ok((model, reports))
    }

    fn set_scale(&mut self, scale: f32) {
        for cb in &mut self.levels {
            cb.scale = scale;
        }
    }

    /// The model's scale (a power of two; see [`scale_of`]).
    pub(crate) fn scale(&self) -> f32 {
        self.levels[0].scale
    }

    /// [`RqKMeans::fit`] on data already scaled.
    fn fit_scaled(
        data: &[f32],
        dim: usize,
        cfg: &FitConfig,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<(Self, Vec<LevelReport>)> {
        let n = check_data(data, dim)?;
        if cfg.n_clusters.is_empty() {
            return Err(RqError::Invalid("at least one level is needed".into()));
        }
        if cfg.max_iter == 0 {
            return Err(RqError::Invalid("max_iter must be at least 1".into()));
        }
        if cfg.tol.is_nan() || cfg.tol < 0.0 {
            return Err(RqError::Invalid("tol must be >= 0".into()));
        }
        let usable = cfg.sample_size.map_or(n, |s| s.min(n));
        if cfg.sample_size == Some(0) || cfg.max_points_per_centroid == Some(0) {
            return Err(RqError::Invalid(
                "sample_size and max_points_per_centroid must be at least 1".into(),
            ));
        }
        for (l, &k) in cfg.n_clusters.iter().enumerate() {
            if k == 0 || k > usable {
                return Err(RqError::Invalid(format!(
                    "level {l} asks for {k} clusters but {usable} training vectors are available \
                     (need 1 <= n_clusters <= training vectors)"
                )));
            }
            if k > u32::MAX as usize {
                return Err(RqError::Invalid(format!("{k} clusters is too many")));
            }
        }
        let kern = match cfg.backend {
            Some(b) => Kernels::get(b).ok_or_else(|| {
                RqError::Invalid(format!("this CPU cannot run the {} kernels", b.name()))
            })?,
            None => Kernels::best(),
        };
        let nl = cfg.n_clusters.len();
        let rounds = cfg.refine.unwrap_or(if cfg.balanced { 1 } else { 3 });
        // With more than one refinement round, each vector's nearest codewords per level are
        // noted (by the levels' final assignment) and later rounds (codewords move little)
        // choose among those, unless the lists would take more than half the data's memory or
        // `MAX_LIST_ENTRIES`.
        let keep_lists = rounds > 1
            && 2 * nl * CANDIDATES <= dim
            && n.saturating_mul(nl * CANDIDATES) <= MAX_LIST_ENTRIES;
        let mut residual = data.to_vec();
        let mut levels = Vec::with_capacity(nl);
        let mut reports = Vec::with_capacity(nl);
        // The levels' final assignments are the greedy codes of the trained codebooks: the
        // first refinement round starts from them.
        let mut codes = vec![0u32; n * nl];
        let mut lists = if keep_lists {
            vec![0u32; n * nl * CANDIDATES]
        } else {
            Vec::new()
        };
        for (l, &k) in cfg.n_clusters.iter().enumerate() {
            let km = kmeans(
                kern,
                &residual,
                dim,
                &KMeansConfig {
                    k,
                    max_iter: cfg.max_iter,
                    tol: cfg.tol,
                    // The same seed at every level: random init then starts each level from
                    // the residuals of the same training points (see `Init::Random`).
                    seed: cfg.seed,
                    balanced: cfg.balanced,
                    sample_size: cfg.train_size(k),
                    init: cfg.init,
                    restricted: true,
                    lists: keep_lists && k >= 4 * CANDIDATES,
                },
                stop,
            );
            if stop() {
                return Err(RqError::Interrupted);
            }
            subtract_codewords(&mut residual, dim, &km.labels, &km.centroids);
            for (c, &j) in codes.iter_mut().skip(l).step_by(nl).zip(&km.labels) {
                *c = j;
            }
            if !km.lists.is_empty() {
                lay_out_lists(&mut lists, &km.lists, l, nl);
            }
            reports.push(LevelReport {
                iterations: km.iterations,
                converged: km.converged,
                mse: km.inertia / n as f64,
            });
            levels.push(Codebook::new(kern, dim, km.centroids, km.bias));
        }
        drop(residual);
        let mut model = RqKMeans {
            dim,
            levels,
            backend: kern.backend(),
        };
        if rounds > 0 {
            for round in 0..rounds {
                if stop() {
                    return Err(RqError::Interrupted);
                }
                if round > 0 {
                    codes = if lists.is_empty() {
                        model.encode(data, 1)?
                    } else {
                        model.encode_listed(data, &lists)
                    };
                }
                model.refine(data, &codes, 2);
            }
            if cfg.balanced {
                // The moved codewords need new biases to split the data evenly again (the
                // old ones would crowd a few codewords). Learnt on as many vectors as a
                // level trains on.
                let kmax = cfg.n_clusters.iter().copied().max().unwrap_or(1);
                model.rebalance(data, cfg.train_size(kmax).unwrap_or(n).min(n));
            }
        }
        Ok((model, reports))
    }

    /// Greedy codes of `data` (checked by `fit`) chosen among candidate lists (`CANDIDATES` per
    /// vector and level, in blocks of `CHUNK` vectors, level-major within a block). Levels
    /// with few codewords are scored in full.
    fn encode_listed(&self, data: &[f32], lists: &[u32]) -> Vec<u32> {
        let nl = self.levels.len();
        let n = data.len() / self.dim;
        let mut codes = vec![0u32; n * nl];
        let kern = self.kernels();
        codes
            .par_chunks_mut(CHUNK * nl)
            .zip(data.par_chunks(CHUNK * self.dim))
            .zip(lists.par_chunks(CHUNK * nl * CANDIDATES))
            .for_each_init(
                || (Vec::new(), Vec::new(), Scratch::default()),
                |(buf, res, scratch), ((out, x), ls)| {
                    self.greedy_block(kern, x, out, buf, res, scratch, Some(ls));
                },
            );
        codes
    }

    /// Moves every codeword to the mean of what its items need from it given their other
    /// codewords (block coordinate descent on the joint least-squares error of all levels),
    /// keeping the codes. One sweep visits each level once.
    ///
    /// Codeword `j` of level `l` goes to the mean over its items of `x - sum_{m != l} c_m`:
    /// the mean of its items' vectors minus, per other level, the codewords those items use,
    /// each weighted by how many of them use it. The data is read once per call (the sums of
    /// its vectors by codeword); a sweep works on the codebooks and the co-occurrence counts.
    fn refine(&mut self, data: &[f32], codes: &[u32], sweeps: usize) {
        let dim = self.dim;
        let nl = self.levels.len();
        let labels: Vec<Vec<u32>> = (0..nl)
            .map(|l| codes.iter().skip(l).step_by(nl).copied().collect())
            .collect();
        let groups: Vec<CoUse> = (0..nl)
            .map(|l| CoUse::new(data, dim, &labels, l, self.levels[l].k))
            .collect();
        for _ in 0..sweeps {
            for (l, g) in groups.iter().enumerate() {
                let (before, rest) = self.levels.split_at_mut(l);
                let (cb, after) = rest.split_first_mut().expect("level l exists");
                let books: Vec<&[f32]> = before
                    .iter()
                    .chain(after.iter())
                    .map(|c| &c.centroids[..])
                    .collect();
                // Other levels in `books` order: `m` below `l` as is, above it shifted by one.
                let book = |m: usize| books[if m < l { m } else { m - 1 }];
                cb.centroids.par_chunks_mut(dim).enumerate().for_each_init(
                    || vec![0.0f64; dim],
                    |acc, (j, c)| {
                        let count = g.counts[j];
                        if count == 0 {
                            return;
                        }
                        acc.copy_from_slice(&g.sums[j * dim..(j + 1) * dim]);
                        for &(m, jm, times) in &g.pairs[g.start[j]..g.start[j + 1]] {
                            let (m, jm) = (m as usize, jm as usize);
                            let row = &book(m)[jm * dim..(jm + 1) * dim];
                            sub_scaled(acc, f64::from(times), row);
                        }
                        let inv = 1.0 / count as f64;
                        for (c, &a) in c.iter_mut().zip(acc.iter()) {
                            *c = (a * inv) as f32;
                        }
                    },
                );
            }
        }
        let kern = self.kernels();
        for cb in &mut self.levels {
            cb.norms = sq_norms(kern, &cb.centroids, dim);
            cb.quant = QuantBook::new(&cb.centroids, dim);
        }
    }

    /// Learns every level's assignment bias afresh for its current codewords (after
    /// refinement moved them): level by level, on `m` evenly spaced vectors of `data` and the
    /// residuals the earlier levels' biased choices leave.
    fn rebalance(&mut self, data: &[f32], m: usize) {
        let dim = self.dim;
        let n = data.len() / dim;
        let kern = self.kernels();
        let mut residual: Vec<f32> = (0..m)
            .flat_map(|i| {
                let r = i * n / m;
                data[r * dim..(r + 1) * dim].iter().copied()
            })
            .collect();
        let mut labels = vec![0u32; m];
        let mut all_costs = Vec::new();
        for cb in &mut self.levels {
            let k = cb.k;
            all_costs.resize(m * k, 0.0);
            let xn = sq_norms(kern, &residual, dim);
            let pre = Quantized::of(&residual, dim);
            cb.bias = learn_prices(
                kern,
                &residual,
                &xn,
                dim,
                &cb.centroids,
                &pre,
                &mut all_costs,
                &mut labels,
            );
            // What encoding would choose with the new biases.
            labels
                .par_iter_mut()
                .zip(all_costs.par_chunks(k))
                .for_each(|(l, row)| *l = argmin(row, &cb.bias) as u32);
            subtract_codewords(&mut residual, dim, &labels, &cb.centroids);
        }
    }

    /// Builds a model from codebooks (`k_l x dim` each) and optional biases.
    ///
    /// # Errors
    /// [`RqError::Invalid`] for a zero dimension, no levels, or a ragged, empty or non-finite
    /// codebook or bias.
    pub fn from_codebooks(dim: usize, books: Vec<(Vec<f32>, Vec<f32>)>) -> Result<Self> {
        if dim == 0 || books.is_empty() {
            return Err(RqError::Invalid(
                "need a dimension and at least one level".into(),
            ));
        }
        let scale = scale_of(
            &books
                .iter()
                .map(|(c, _)| c.iter().fold(0f32, |m, v| m.max(v.abs())))
                .collect::<Vec<f32>>(),
        );
        let books = books
            .into_iter()
            .map(|(c, b)| {
                let c = scaled(&c, scale).into_owned();
                let b = b.iter().map(|v| v / scale / scale).collect();
                (c, b)
            })
            .collect();
        Self::from_scaled(dim, scale, books)
    }

    /// A model from codebooks (and biases) already divided by `scale` (`scale` times the
    /// codewords, `scale^2` times the biases are the data's units).
    ///
    /// # Errors
    /// As [`RqKMeans::from_codebooks`], and a `scale` that is not a positive power of two.
    pub(crate) fn from_scaled(
        dim: usize,
        scale: f32,
        books: Vec<(Vec<f32>, Vec<f32>)>,
    ) -> Result<Self> {
        if dim == 0 || books.is_empty() {
            return Err(RqError::Invalid(
                "need a dimension and at least one level".into(),
            ));
        }
        if !(scale.is_normal() && scale > 0.0 && scale.to_bits().trailing_zeros() >= 23) {
            return Err(RqError::Invalid(format!(
                "scale {scale:e} is not a power of two"
            )));
        }
        let kern = Kernels::best();
        let mut levels = Vec::with_capacity(books.len());
        for (l, (c, b)) in books.into_iter().enumerate() {
            let k = check_data(&c, dim)?;
            if k == 0 || (!b.is_empty() && b.len() != k) || b.iter().any(|v| !v.is_finite()) {
                return Err(RqError::Invalid(format!("level {l}: malformed codebook")));
            }
            // Distances to a codeword (|x|^2 - 2 x.c + |c|^2) must stay finite, and so must
            // the codewords in the data's units: trained codebooks are far inside both bounds.
            let limit = f64::from(f32::MAX) / 4.0;
            let too_large = c.chunks_exact(dim).any(|row| {
                let norm2: f64 = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                let max = row.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
                norm2 >= limit || max * f64::from(scale) >= limit
            });
            if too_large {
                return Err(RqError::Invalid(format!(
                    "level {l}: codewords too large for finite distances"
                )));
            }
            levels.push(Codebook::new(kern, dim, c, b));
        }
        let mut model = RqKMeans {
            dim,
            levels,
            backend: kern.backend(),
        };
        model.set_scale(scale);
        Ok(model)
    }

    /// Runs later calls on `backend` (for tests: codes are the same on every backend).
    ///
    /// # Errors
    /// [`RqError::Invalid`] when this CPU cannot run `backend`.
    pub fn set_backend(&mut self, backend: Backend) -> Result<()> {
        Kernels::get(backend).ok_or_else(|| {
            RqError::Invalid(format!(
                "this CPU cannot run the {} kernels",
                backend.name()
            ))
        })?;
        self.backend = backend;
        Ok(())
    }

    fn kernels(&self) -> &'static Kernels {
        Kernels::get(self.backend).expect("checked when set")
    }

    /// Vector dimension.
    #[must_use]
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// The codebooks, first level first.
    #[must_use]
    pub fn levels(&self) -> &[Codebook] {
        &self.levels
    }
    /// Codebook size of each level.
    #[must_use]
    pub fn n_clusters(&self) -> Vec<usize> {
        self.levels.iter().map(|c| c.k).collect()
    }

    /// The beam [`RqKMeans::encode`] searches for `beam`: at most the number of codes (a
    /// wider beam is exhaustive search already), when its scores per vector stay within
    /// [`MAX_BEAM_SCORES`].
    ///
    /// # Errors
    /// [`RqError::Invalid`] for 0, or for a beam whose scores exceed that bound.
    pub fn check_beam(&self, beam: usize) -> Result<usize> {
        let codes = self
            .levels
            .iter()
            .fold(1usize, |n, c| n.saturating_mul(c.k));
        let beam = beam.min(codes);
        let kmax = self.levels.iter().map(|c| c.k).max().unwrap_or(1);
        // Greedy search (1) keeps no beam: any codebook size.
        if beam == 0 || (beam > 1 && beam.saturating_mul(kmax) > MAX_BEAM_SCORES) {
            return Err(RqError::Invalid(format!(
                "beam_width must be from 1 to {} for codebooks of {kmax} codewords, got {beam}",
                (MAX_BEAM_SCORES / kmax).max(1)
            )));
        }
        Ok(beam)
    }

    /// Greedy codes (`n x levels`, row-major): at each level the nearest codeword (plus the
    /// balanced bias) to what is left. With `beam > 1`, keeps the `beam` best partial codes per
    /// vector and returns the one that reconstructs it best.
    ///
    /// # Errors
    /// [`RqError::Dimension`] for rows of another dimension, [`RqError::Invalid`] for NaN or
    /// infinite values, rows far larger than the training data (see `check_input`) or a beam
    /// width of 0.
    pub fn encode(&self, data: &[f32], beam: usize) -> Result<Vec<u32>> {
        let (n, data) = self.check_input(data)?;
        let data: &[f32] = &data;
        let beam = self.check_beam(beam)?;
        let nl = self.levels.len();
        let mut codes = vec![0u32; n * nl];
        let kern = self.kernels();
        if beam == 1 {
            codes
                .par_chunks_mut(CHUNK * nl)
                .zip(data.par_chunks(CHUNK * self.dim))
                .for_each(|(out, x)| {
                    with_greedy_scratch(|(buf, res, scratch)| {
                        self.greedy_block(kern, x, out, buf, res, scratch, None);
                    });
                });
        } else {
            // Blocks of about CHUNK entries per level.
            let per = (CHUNK / beam).max(1);
            codes
                .par_chunks_mut(per * nl)
                .zip(data.par_chunks(per * self.dim))
                .for_each_init(Vec::new, |buf, (out, x)| {
                    self.beam_block(kern, x, beam, out, buf);
                });
        }
        Ok(codes)
    }

    #[allow(clippy::too_many_arguments)]
    fn greedy_block(
        &self,
        kern: &Kernels,
        x: &[f32],
        out: &mut [u32],
        buf: &mut Vec<f32>,
        res: &mut Vec<f32>,
        scratch: &mut Scratch,
        lists: Option<&[u32]>,
    ) {
        let dim = self.dim;
        let nl = self.levels.len();
        let m = x.len() / dim;
        res.clear();
        res.extend_from_slice(x);
        let mut labels = vec![0u32; m];
        let mut best = vec![0.0f32; m];
        for (l, cb) in self.levels.iter().enumerate() {
            let level = l * m * CANDIDATES..(l + 1) * m * CANDIDATES;
            let listed = cb.k >= 4 * CANDIDATES;
            if let (Some(ls), true) = (lists, listed) {
                for (i, (row, ix)) in res
                    .chunks_exact(dim)
                    .zip(ls[level].chunks_exact(CANDIDATES))
                    .enumerate()
                {
                    labels[i] = nearest_among(kern, row, &cb.centroids, &cb.norms, &cb.bias, ix).0;
                }
            } else if let Some(qb) = &cb.quant {
                nearest_block(
                    kern,
                    res,
                    dim,
                    &cb.centroids,
                    &cb.norms,
                    &cb.bias,
                    qb,
                    None,
                    scratch,
                    &mut labels,
                    &mut best,
                    None,
                );
            } else {
                buf.resize(m * cb.k, 0.0);
                costs(kern, res, m, &cb.centroids, &cb.norms, buf);
                for i in 0..m {
                    labels[i] = argmin(&buf[i * cb.k..(i + 1) * cb.k], &cb.bias) as u32;
                }
            }
            for i in 0..m {
                let j = labels[i] as usize;
                out[i * nl + l] = j as u32;
                if l + 1 < nl {
                    let c = &cb.centroids[j * dim..(j + 1) * dim];
                    for (a, b) in res[i * dim..(i + 1) * dim].iter_mut().zip(c) {
                        *a -= b;
                    }
                }
            }
        }
    }

    /// Beam search for the vectors of `x`: per level, every vector's partial codes are
    /// scored against the codebook in one batched call (the codebook is read once per block,
    /// not once per vector), then each vector keeps its `beam` best. The fixed-order kernel
    /// gives every score the same bits as scoring one vector at a time.
    fn beam_block(
        &self,
        kern: &Kernels,
        x: &[f32],
        beam: usize,
        out: &mut [u32],
        buf: &mut Vec<f32>,
    ) {
        let dim = self.dim;
        let nl = self.levels.len();
        let m = x.len() / dim;
        // All vectors' entries, vector after vector: residuals, codes so far and scores
        // (squared error + bias); `count[v]` entries belong to vector v.
        let mut res = x.to_vec();
        let mut codes: Vec<u32> = Vec::new();
        let mut err = sq_norms(kern, x, dim);
        let mut count = vec![1usize; m];
        let mut cand: Vec<(f32, usize, usize)> = Vec::new();
        // An entry contributes at most min(beam, K) candidates (sizes stay bounded for any
        // beam width).
        let kmax = self.levels.iter().map(|c| c.k).max().unwrap_or(1);
        let (mut ix, mut cs) = (vec![0u32; beam.min(kmax)], vec![0.0f32; beam.min(kmax)]);
        for (l, cb) in self.levels.iter().enumerate() {
            let total = err.len();
            buf.resize(total * cb.k, 0.0);
            costs(kern, &res, total, &cb.centroids, &cb.norms, buf);
            let entries: usize = count.iter().map(|&c| beam.min(c * cb.k)).sum();
            let mut next_res = Vec::with_capacity(entries * dim);
            let mut next_codes = Vec::with_capacity(entries * (l + 1));
            let mut next_err = Vec::with_capacity(entries);
            let mut first = 0;
            for c in &mut count {
                cand.clear();
                let keep = beam.min(*c * cb.k);
                for e in 0..*c {
                    let row = &mut buf[(first + e) * cb.k..(first + e + 1) * cb.k];
                    for (j, v) in row.iter_mut().enumerate() {
                        let bias = cb.bias.get(j).copied().unwrap_or(0.0);
                        *v = err[first + e] + *v + bias;
                    }
                    // Only an entry's own `keep` best can be among the vector's `keep` best.
                    let kk = keep.min(cb.k);
                    smallest_into(row, &mut ix[..kk], &mut cs[..kk]);
                    cand.extend(
                        cs[..kk]
                            .iter()
                            .zip(&ix[..kk])
                            .map(|(&s, &j)| (s, e, j as usize)),
                    );
                }
                let order = |a: &(f32, usize, usize), b: &(f32, usize, usize)| {
                    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
                };
                cand.select_nth_unstable_by(keep - 1, order);
                cand.truncate(keep);
                cand.sort_by(order);
                for &(score, e, j) in &cand {
                    let e = first + e;
                    let cw = &cb.centroids[j * dim..(j + 1) * dim];
                    next_res.extend(
                        res[e * dim..(e + 1) * dim]
                            .iter()
                            .zip(cw)
                            .map(|(a, b)| a - b),
                    );
                    next_codes.extend_from_slice(&codes[e * l..(e + 1) * l]);
                    next_codes.push(j as u32);
                    next_err.push(score);
                }
                first += *c;
                *c = keep;
            }
            res = next_res;
            codes = next_codes;
            err = next_err;
        }
        // Each vector's best entry comes first among its own.
        let mut first = 0;
        for (o, &c) in out.chunks_exact_mut(nl).zip(&count) {
            o.copy_from_slice(&codes[first * nl..(first + 1) * nl]);
            first += c;
        }
    }

    /// Reconstruction: the sum of each level's codeword, `n x dim` row-major.
    ///
    /// # Errors
    /// [`RqError::Invalid`] when `codes` is not a whole number of rows, [`RqError::Code`] for a
    /// code outside its level's codebook.
    pub fn decode(&self, codes: &[u32]) -> Result<Vec<f32>> {
        let nl = self.levels.len();
        if !codes.len().is_multiple_of(nl) {
            return Err(RqError::Invalid(format!(
                "{} codes do not form rows of {nl} levels",
                codes.len()
            )));
        }
        for (i, &c) in codes.iter().enumerate() {
            let l = i % nl;
            if c as usize >= self.levels[l].k {
                return Err(RqError::Code {
                    level: l,
                    code: i64::from(c),
                    k: self.levels[l].k,
                });
            }
        }
        let (dim, scale) = (self.dim, self.scale());
        let mut out = vec![0.0f32; codes.len() / nl * dim];
        // The first level is copied, not added: a large zeroed buffer's pages are mapped on
        // first use, and a first read (`+=`) maps the shared zero page, so the write after it
        // is a copy-on-write fault with a TLB shootdown on every CPU (~8 % of a fit on the
        // 2-vCPU VM); a first write is a plain fault.
        out.par_chunks_mut(dim)
            .zip(codes.par_chunks(nl))
            .for_each(|(o, cs)| {
                for (l, (cb, &c)) in self.levels.iter().zip(cs).enumerate() {
                    let c = c as usize;
                    let word = &cb.centroids[c * dim..(c + 1) * dim];
                    if l == 0 {
                        o.copy_from_slice(word);
                    } else {
                        for (a, b) in o.iter_mut().zip(word) {
                            *a += b;
                        }
                    }
                }
                if scale.to_bits() != 1f32.to_bits() {
                    for a in o {
                        *a *= scale;
                    }
                }
            });
        Ok(out)
    }

    /// `data` checked (whole rows of finite values) and divided by the model's scale; rows
    /// whose norm is then beyond [`MAX_SCALED_NORM`] (2^60 times the training data's
    /// magnitude) are refused: their squared distances would overflow.
    fn check_input<'a>(&self, data: &'a [f32]) -> Result<(usize, std::borrow::Cow<'a, [f32]>)> {
        if !data.len().is_multiple_of(self.dim) {
            return Err(RqError::Dimension {
                expected: self.dim,
                got: data.len(),
            });
        }
        let (n, max_abs) = checked_max_abs(data, self.dim)?;
        let x = scaled(data, self.scale());
        // Every row's norm is at most max |v| sqrt(dim): only when that bound is beyond
        // the limit are the rows measured.
        let bound =
            f64::from(max_abs) / f64::from(self.scale()) * (self.dim as f64).sqrt() * (1.0 + 1e-6);
        if bound > MAX_SCALED_NORM {
            for (i, row) in x.chunks_exact(self.dim).enumerate() {
                let norm = row
                    .iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>()
                    .sqrt();
                if norm > MAX_SCALED_NORM {
                    return Err(RqError::Invalid(format!(
                        "vector {i} has norm {:.3e}, more than 2^60 times the magnitude of the \
                         data the model was trained on ({:e}): it cannot be encoded",
                        norm * f64::from(self.scale()),
                        self.scale()
                    )));
                }
            }
        }
        Ok((n, x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::filter::tests::rng;

    /// A model with random codebooks (`ks` levels) and random data with random codes.
    fn random_setup(n: usize, dim: usize, ks: &[usize]) -> (RqKMeans, Vec<f32>, Vec<u32>) {
        let mut seed = 0x5EEDu64;
        let books = ks
            .iter()
            .map(|&k| ((0..k * dim).map(|_| rng(&mut seed)).collect(), Vec::new()))
            .collect();
        let model = RqKMeans::from_codebooks(dim, books).unwrap();
        let data: Vec<f32> = (0..n * dim).map(|_| 3.0 * rng(&mut seed)).collect();
        let codes = (0..n)
            .flat_map(|i| ks.iter().map(move |&k| ((i * 7 + k * i / 3) % k) as u32))
            .collect();
        (model, data, codes)
    }

    #[test]
    fn beams_are_bounded_by_their_scores_and_greedy_by_nothing() {
        // More codewords than a beam of 2 may score: greedy search still encodes.
        let k = MAX_BEAM_SCORES / 2 + 1;
        let book: Vec<f32> = (0..k).map(|i| i as f32).collect();
        let model = RqKMeans::from_codebooks(1, vec![(book, Vec::new())]).unwrap();
        assert_eq!(model.encode(&[41.2, 7.9], 1).unwrap(), vec![41, 8]);
        assert!(model.check_beam(2).is_err());
        assert!(model.check_beam(0).is_err());
        // A beam wider than the codes is exhaustive search: taken, as that.
        let small = RqKMeans::from_codebooks(1, vec![(vec![0.0, 1.0], Vec::new())]).unwrap();
        assert_eq!(small.check_beam(usize::MAX).unwrap(), 2);
    }

    /// One sweep puts every used codeword at the mean over its items of the vector minus their
    /// other levels' codewords (levels before it already moved), the least-squares optimum;
    /// unused codewords stay.
    #[test]
    fn refine_moves_each_codeword_to_its_least_squares_optimum() {
        let (n, dim, ks) = (500, 8, [5usize, 7, 3]);
        let (mut model, data, codes) = random_setup(n, dim, &ks);
        let mut want: Vec<Vec<f32>> = model.levels.iter().map(|c| c.centroids.clone()).collect();
        for l in 0..ks.len() {
            let mut sums = vec![0.0f64; ks[l] * dim];
            let mut counts = vec![0usize; ks[l]];
            for i in 0..n {
                let j = codes[i * ks.len() + l] as usize;
                counts[j] += 1;
                for d in 0..dim {
                    let mut v = f64::from(data[i * dim + d]);
                    for (m, book) in want.iter().enumerate().filter(|&(m, _)| m != l) {
                        let jm = codes[i * ks.len() + m] as usize;
                        v -= f64::from(book[jm * dim + d]);
                    }
                    sums[j * dim + d] += v;
                }
            }
            for j in (0..ks[l]).filter(|&j| counts[j] > 0) {
                for d in 0..dim {
                    want[l][j * dim + d] = (sums[j * dim + d] / counts[j] as f64) as f32;
                }
            }
        }
        model.refine(&data, &codes, 1);
        for (cb, want) in model.levels.iter().zip(&want) {
            for (&got, &w) in cb.centroids.iter().zip(want) {
                assert!((got - w).abs() <= 1e-5 * (1.0 + w.abs()), "{got} vs {w}");
            }
        }
    }

    /// Lists laid out by level land where `greedy_block` reads them: per block of `CHUNK`
    /// vectors, level `l` at `l * m * CANDIDATES` (`m` vectors in the block, the last short).
    #[test]
    fn lists_are_laid_out_as_encoding_reads_them() {
        let (n, nl) = (150, 3);
        let mut lists = vec![u32::MAX; n * nl * CANDIDATES];
        for l in 0..nl {
            let level: Vec<u32> = (0..n * CANDIDATES)
                .map(|e| (e / CANDIDATES * 1000 + l * 100 + e % CANDIDATES) as u32)
                .collect();
            lay_out_lists(&mut lists, &level, l, nl);
        }
        for (b, block) in lists.chunks(CHUNK * nl * CANDIDATES).enumerate() {
            let m = block.len() / (nl * CANDIDATES);
            for l in 0..nl {
                let level = &block[l * m * CANDIDATES..(l + 1) * m * CANDIDATES];
                for (i, ix) in level.chunks_exact(CANDIDATES).enumerate() {
                    for (r, &v) in ix.iter().enumerate() {
                        let want = (b * CHUNK + i) * 1000 + l * 100 + r;
                        assert_eq!(v as usize, want);
                    }
                }
            }
        }
    }
}
