//! An inverted-file index that lives with the window: a coarse quantiser (`nlist` unit
//! centroids, spherical k-means on a sample of the held items) routes every item to the list of
//! its nearest centroid, a search scans only the items of the `nprobe` lists nearest to the
//! query, and an item leaves its list when the ring overwrites its slot (one swap-remove: the
//! window's one delete per insert costs O(1), with no tombstones to compact).
//!
//! Lists hold slot numbers (`shard * shard_size + slot`) and, side by side, the items' sign
//! bits (48 bytes at 384 dims, blocked as [`binary`] lays them out): a search scans the
//! probed lists' bits contiguously with the asymmetric lookup kernel and rescores the best
//! candidates from the ring (exactly for f32 storage, from codes and residuals for int8 and
//! binary), so whatever a slot holds when it is read is what is scored. The quantiser is trained once the ring holds
//! enough items and retrained when the window has turned over ([`Ivf::wants_training`]); a
//! retraining assigns every held item again away from the lock and then replays the slots
//! written meanwhile, so ingestion never waits for it.

use crate::RingError;
use imesde_simd::binary::{self, BinaryQuery};
use imesde_simd::{Kernels, TopK};

/// Shape of an index: `nlist` lists, `nprobe` of them scanned per query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IvfConfig {
    /// Number of lists (centroids).
    pub nlist: usize,
    /// Lists scanned per query.
    pub nprobe: usize,
}

impl IvfConfig {
    /// The default for a ring of `capacity` slots: `nlist ~ sqrt(capacity)` (a power of two
    /// between 16 and 4,096) and `nprobe = nlist / 8` (at least 8). At 2^20 real-like items
    /// after a turnover (1,024 lists, 128 probed) a query reads an eighth of the items'
    /// sign bits: recall@10 0.99 for queries near the stream's items and 0.885 for the
    /// debtags vocabulary, whose short texts sit between the clusters, at 21x the exact int8
    /// scan's speed (`make bench-churn`).
    #[must_use]
    pub fn for_capacity(capacity: usize) -> Self {
        // A ring of fewer than 16 slots gets a list per slot.
        let nlist = capacity
            .isqrt()
            .next_power_of_two()
            .clamp(16, 4096)
            .min(capacity.max(1));
        IvfConfig {
            nlist,
            nprobe: (nlist / 8).max(8).min(nlist),
        }
    }

    /// [`IvfConfig::for_capacity`] with `nlist` and / or `nprobe` given; the default `nprobe`
    /// is an eighth of the `nlist` given (at least 8, at most `nlist`), as of the default one.
    /// Checked when the index is set.
    #[must_use]
    pub fn with(capacity: usize, nlist: Option<usize>, nprobe: Option<usize>) -> Self {
        let mut cfg = IvfConfig::for_capacity(capacity);
        if let Some(n) = nlist {
            cfg.nlist = n;
            cfg.nprobe = (n / 8).max(8).min(n);
        }
        cfg.nprobe = nprobe.unwrap_or(cfg.nprobe);
        cfg
    }

    /// The most lists an index may have (faiss' largest usual IVF is 65,536 lists).
    pub const MAX_NLIST: usize = 1 << 16;

    /// The most lists a ring of `capacity` slots may have: one per slot, at most
    /// [`IvfConfig::MAX_NLIST`].
    #[must_use]
    pub fn max_nlist(capacity: usize) -> usize {
        capacity.min(Self::MAX_NLIST)
    }

    /// Whether this shape can work for a ring of `capacity` slots.
    ///
    /// # Errors
    /// [`RingError::Index`] unless `1 <= nlist <= max_nlist(capacity)` and
    /// `1 <= nprobe <= nlist`.
    pub fn check(&self, capacity: usize) -> Result<(), RingError> {
        let max = Self::max_nlist(capacity);
        if self.nlist == 0 || self.nlist > max || self.nprobe == 0 || self.nprobe > self.nlist {
            return Err(RingError::Index {
                nlist: self.nlist,
                nprobe: self.nprobe,
                max,
            });
        }
        Ok(())
    }

    /// Items a first training waits for: 16 per list (at least 1,024), or the whole ring when
    /// it is smaller.
    #[must_use]
    pub fn train_size(&self, capacity: usize) -> usize {
        (self.nlist * 16).max(1024).min(capacity)
    }
}

const NONE: u32 = u32::MAX;
/// Items a training samples at most (per list: 32).
const SAMPLE_PER_LIST: usize = 32;
/// Lloyd iterations of a training.
const ITERATIONS: usize = 8;

/// The lists and the quantiser.
pub(crate) struct Ivf {
    pub(crate) cfg: IvfConfig,
    dim: usize,
    /// `nlist x dim` unit rows; empty until trained.
    centroids: Vec<f32>,
    lists: Vec<Vec<u32>>,
    /// Per list, its items' sign bits (blocked; row `i` is the item `lists[l][i]`).
    bits: Vec<Vec<u64>>,
    words: usize,
    /// Per slot: its list and its position there (`NONE` when in none).
    place: Vec<(u32, u32)>,
    /// The ring's `next_id` when the current quantiser was trained (`None`: never).
    pub(crate) trained_at: Option<u64>,
    /// The items held when it was trained.
    trained_on: usize,
    /// Bumped by every training, so a writer that assigned with older centroids notices.
    pub(crate) epoch: u64,
}

impl Ivf {
    pub(crate) fn new(cfg: IvfConfig, dim: usize, slots: usize) -> Self {
        Ivf {
            cfg,
            dim,
            centroids: Vec::new(),
            lists: vec![Vec::new(); cfg.nlist],
            bits: vec![Vec::new(); cfg.nlist],
            words: binary::words(dim),
            place: vec![(NONE, NONE); slots],
            trained_at: None,
            trained_on: 0,
            epoch: 0,
        }
    }

    pub(crate) fn is_trained(&self) -> bool {
        !self.centroids.is_empty()
    }

    /// Whether a (re)training is due: `held` items reach the train size and the quantiser was
    /// trained on fewer than half that many (an early `train_index`) or never, or the window
    /// has turned over (`capacity` items written) since it was trained. (Half: a training of
    /// a full ring counts the items held while writers overwrite the oldest, a few short.)
    pub(crate) fn wants_training(&self, next_id: u64, held: usize, capacity: usize) -> bool {
        let size = self.cfg.train_size(capacity);
        match self.trained_at {
            None => held >= size,
            Some(at) => {
                next_id >= at.saturating_add(capacity as u64)
                    || (self.trained_on < size / 2 && held >= size)
            }
        }
    }

    /// The list of each of the `unit.len() / dim` rows (the nearest centroid); empty when
    /// untrained.
    pub(crate) fn assign(&self, kernels: &Kernels, unit: &[f32]) -> Vec<u32> {
        assign_to(kernels, &self.centroids, self.dim, unit)
    }

    /// Puts slot `g`, whose item has the sign bits `signs`, in `list` (out of the list it
    /// was in).
    pub(crate) fn set(&mut self, g: usize, list: u32, signs: &[u64]) {
        self.remove(g);
        let (l, bits) = (
            &mut self.lists[list as usize],
            &mut self.bits[list as usize],
        );
        let pos = l.len();
        self.place[g] = (list, pos as u32);
        room(l, pos + 1);
        l.push(g as u32);
        let need = binary::blocked_len(pos + 1, self.words);
        room(bits, need);
        bits.resize(need, 0);
        binary::put_row(bits, pos, signs);
    }

    /// Takes slot `g` out of its list (the list's last item takes its place).
    pub(crate) fn remove(&mut self, g: usize) {
        let (list, pos) = self.place[g];
        if list == NONE {
            return;
        }
        let (l, bits) = (
            &mut self.lists[list as usize],
            &mut self.bits[list as usize],
        );
        let (pos, last) = (pos as usize, l.len() - 1);
        l.swap_remove(pos);
        if pos != last {
            let mut row = vec![0u64; self.words];
            binary::get_row(bits, last, &mut row);
            binary::put_row(bits, pos, &row);
            self.place[l[pos] as usize].1 = pos as u32;
        }
        bits.truncate(binary::blocked_len(last, self.words));
        trim(l);
        trim(bits);
        self.place[g] = (NONE, NONE);
    }

    /// The `nprobe` lists nearest to `query` (a unit vector).
    pub(crate) fn probe(&self, kernels: &Kernels, query: &[f32]) -> Vec<usize> {
        let mut scores = vec![0.0f32; self.cfg.nlist];
        kernels.scan_f32(query, &self.centroids, &mut scores);
        let mut top = TopK::new(self.cfg.nprobe);
        for (l, &s) in scores.iter().enumerate() {
            top.push(s, l as u64);
        }
        top.into_sorted_vec()
            .into_iter()
            .map(|(_, l)| l as usize)
            .collect()
    }

    /// Scores every item of `lists` against `query` by its sign bits and offers them to
    /// `offer(top, score, slot)` (blocks below the top's floor skipped).
    pub(crate) fn scan(
        &self,
        lists: &[usize],
        query: &BinaryQuery,
        top: &mut TopK,
        mut offer: impl FnMut(&mut TopK, f32, usize),
    ) {
        let (mut ints, mut scores) = (Vec::new(), Vec::new());
        for &l in lists {
            let members = &self.lists[l];
            scores.resize(members.len(), 0.0);
            query.scores(&self.bits[l], &mut ints, &mut scores);
            top.offer_scores(&scores, |top, i, s| offer(top, s, members[i] as usize));
        }
    }

    /// Replaces the quantiser and every list (`lists[g]` the list of slot `g`, `NONE` for
    /// none, `signs` its sign bits, `words` per slot) as a training computed them.
    pub(crate) fn install(
        &mut self,
        centroids: Vec<f32>,
        lists: &[u32],
        signs: &[u64],
        trained_at: u64,
        trained_on: usize,
    ) {
        self.centroids = centroids;
        let w = self.words;
        // Each list sized for its new members (and an eighth more), whatever it held before.
        let mut counts = vec![0usize; self.lists.len()];
        for &l in lists.iter().filter(|&&l| l != NONE) {
            counts[l as usize] += 1;
        }
        for ((l, b), &c) in self.lists.iter_mut().zip(&mut self.bits).zip(&counts) {
            *l = Vec::with_capacity(c + c / 8);
            *b = Vec::with_capacity(binary::blocked_len(c + c / 8, w));
        }
        self.place.fill((NONE, NONE));
        for (g, &l) in lists.iter().enumerate() {
            if l != NONE {
                self.set(g, l, &signs[g * w..(g + 1) * w]);
            }
        }
        self.trained_at = Some(trained_at);
        self.trained_on = trained_on;
        self.epoch += 1;
    }

    /// Heap bytes held: the lists and their sign bits, each slot's place, the centroids.
    pub(crate) fn heap_bytes(&self) -> usize {
        let lists: usize = self.lists.iter().map(|l| l.capacity() * 4).sum();
        let bits: usize = self.bits.iter().map(|b| b.capacity() * 8).sum();
        lists
            + bits
            + (self.lists.len() + self.bits.len()) * size_of::<Vec<u32>>()
            + self.place.capacity() * size_of::<(u32, u32)>()
            + self.centroids.capacity() * size_of::<f32>()
    }

    /// Sizes of the lists (for stats and tests).
    pub(crate) fn list_sizes(&self) -> Vec<usize> {
        self.lists.iter().map(Vec::len).collect()
    }
}

/// Makes room for `need` items in `v`, an eighth more than needed when it has to grow: a list
/// under churn hovers around its size, and doubling would leave up to half of it unused.
fn room<T>(v: &mut Vec<T>, need: usize) {
    if need > v.capacity() {
        v.reserve_exact(need + need / 8 - v.len());
    }
}

/// Gives back what a list that has shrunk to under half its room no longer needs.
fn trim<T>(v: &mut Vec<T>) {
    if v.capacity() > 2 * v.len() + 256 {
        v.shrink_to(v.len() + v.len() / 8);
    }
}

/// The nearest of `centroids` (unit rows) for each unit row of `unit`; empty without
/// centroids.
pub(crate) fn assign_to(
    kernels: &Kernels,
    centroids: &[f32],
    dim: usize,
    unit: &[f32],
) -> Vec<u32> {
    if centroids.is_empty() || unit.is_empty() {
        return Vec::new();
    }
    let nlist = centroids.len() / dim;
    let mut out = Vec::with_capacity(unit.len() / dim);
    let mut scores = Vec::new();
    // A few hundred rows at a time: the score block stays in cache.
    for rows in unit.chunks(256 * dim) {
        let nq = rows.len() / dim;
        scores.resize(nq * nlist, 0.0);
        kernels.scan_multi_f32(rows, nq, centroids, &mut scores);
        out.extend(scores.chunks_exact(nlist).map(|s| {
            let mut best = 0;
            for (l, &v) in s.iter().enumerate() {
                if v > s[best] {
                    best = l;
                }
            }
            best as u32
        }));
    }
    out
}

/// Spherical k-means of the unit rows `sample` into `nlist` unit centroids: the first
/// centroids are rows spread evenly over the sample, then Lloyd iterations (a list left
/// empty takes the row its centroid fits worst). Deterministic for a given sample.
pub(crate) fn train(kernels: &Kernels, sample: &[f32], dim: usize, nlist: usize) -> Vec<f32> {
    let n = sample.len() / dim;
    let mut centroids: Vec<f32> = (0..nlist)
        .flat_map(|l| {
            let r = (l * n / nlist.max(1)).min(n.saturating_sub(1));
            sample[r * dim..(r + 1) * dim].iter().copied()
        })
        .collect();
    for _ in 0..ITERATIONS {
        let lists = assign_to(kernels, &centroids, dim, sample);
        let mut sums = vec![0.0f64; nlist * dim];
        let mut counts = vec![0usize; nlist];
        for (r, &l) in lists.iter().enumerate() {
            counts[l as usize] += 1;
            for (s, &v) in sums[l as usize * dim..][..dim]
                .iter_mut()
                .zip(&sample[r * dim..(r + 1) * dim])
            {
                *s += f64::from(v);
            }
        }
        // An empty list takes the row its centroid fits worst: rows by fit, worst last.
        let mut spare: Vec<(f32, usize)> = if counts.contains(&0) {
            (0..n)
                .map(|r| {
                    let c = &centroids[lists[r] as usize * dim..][..dim];
                    (kernels.dot_f32(c, &sample[r * dim..(r + 1) * dim]), r)
                })
                .collect()
        } else {
            Vec::new()
        };
        spare.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        for l in 0..nlist {
            let c = &mut centroids[l * dim..(l + 1) * dim];
            if counts[l] == 0 {
                if let Some((_, r)) = spare.pop() {
                    c.copy_from_slice(&sample[r * dim..(r + 1) * dim]);
                }
                continue;
            }
            for (c, &s) in c.iter_mut().zip(&sums[l * dim..(l + 1) * dim]) {
                *c = s as f32;
            }
            if imesde_simd::normalize_l2(c) == 0.0 {
                c.copy_from_slice(&sample[..dim]);
            }
        }
    }
    centroids
}

/// How many of `held` items a training samples: 32 per list, at most all.
pub(crate) fn sample_size(cfg: IvfConfig, held: usize) -> usize {
    (cfg.nlist * SAMPLE_PER_LIST).min(held)
}

/// The list of a slot that holds nothing.
pub(crate) const NO_LIST: u32 = NONE;
