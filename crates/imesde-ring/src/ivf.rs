//! An inverted-file index that lives with the window: a coarse quantiser (`nlist` unit
//! centroids, spherical k-means on a sample of the held items) routes every item to the list of
//! its nearest centroid, a search scans only the items of the `nprobe` lists nearest to the
//! query, and an item leaves its list when the ring overwrites its slot (one swap-remove: the
//! window's one delete per insert costs O(1), with no tombstones to compact).
//!
//! Lists hold slot numbers (`shard * shard_size + slot`), not copies of vectors: a search
//! reads the probed items from the ring, so there is one copy of every vector, and whatever a
//! slot holds when it is read is what is scored (an item written after the lists were read is
//! missed by that search, as by any index). The quantiser is trained once the ring holds
//! enough items and retrained when the window has turned over ([`Ivf::wants_training`]); a
//! retraining assigns every held item again away from the lock and then replays the slots
//! written meanwhile, so ingestion never waits for it.

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
    /// between 16 and 4,096) and `nprobe = nlist / 16` (at least 8).
    #[must_use]
    pub fn for_capacity(capacity: usize) -> Self {
        let nlist = capacity.isqrt().next_power_of_two().clamp(16, 4096);
        IvfConfig {
            nlist,
            nprobe: (nlist / 16).max(8).min(nlist),
        }
    }

    /// Items a first training waits for: 16 per list (at least 1,024), or the whole ring when
    /// it is smaller.
    #[must_use]
    pub fn train_size(&self, capacity: usize) -> usize {
        (self.nlist * 16).max(1024).min(capacity)
    }
}

const NONE: u32 = u32::MAX;
/// Items a training samples at most (per list: 64).
const SAMPLE_PER_LIST: usize = 64;
/// Lloyd iterations of a training.
const ITERATIONS: usize = 12;

/// The lists and the quantiser.
pub(crate) struct Ivf {
    pub(crate) cfg: IvfConfig,
    dim: usize,
    /// `nlist x dim` unit rows; empty until trained.
    centroids: Vec<f32>,
    lists: Vec<Vec<u32>>,
    /// Per slot: its list and its position there (`NONE` when in none).
    place: Vec<(u32, u32)>,
    /// The ring's `next_id` when the current quantiser was trained (`None`: never).
    pub(crate) trained_at: Option<u64>,
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
            place: vec![(NONE, NONE); slots],
            trained_at: None,
            epoch: 0,
        }
    }

    pub(crate) fn is_trained(&self) -> bool {
        !self.centroids.is_empty()
    }

    /// Whether a (re)training is due: never trained and `held` items reach the train size, or
    /// trained and the window has turned over (`capacity` items written) since.
    pub(crate) fn wants_training(&self, next_id: u64, held: usize, capacity: usize) -> bool {
        match self.trained_at {
            None => held >= self.cfg.train_size(capacity),
            Some(at) => next_id >= at.saturating_add(capacity as u64),
        }
    }

    /// The list of each of the `unit.len() / dim` rows (the nearest centroid); empty when
    /// untrained.
    pub(crate) fn assign(&self, kernels: &Kernels, unit: &[f32]) -> Vec<u32> {
        assign_to(kernels, &self.centroids, self.dim, unit)
    }

    /// Puts slot `g` in `list` (out of the list it was in).
    pub(crate) fn set(&mut self, g: usize, list: u32) {
        self.remove(g);
        let l = &mut self.lists[list as usize];
        self.place[g] = (list, l.len() as u32);
        l.push(g as u32);
    }

    /// Takes slot `g` out of its list.
    pub(crate) fn remove(&mut self, g: usize) {
        let (list, pos) = self.place[g];
        if list == NONE {
            return;
        }
        let l = &mut self.lists[list as usize];
        l.swap_remove(pos as usize);
        if let Some(&moved) = l.get(pos as usize) {
            self.place[moved as usize].1 = pos;
        }
        self.place[g] = (NONE, NONE);
    }

    /// The slots of the `nprobe` lists nearest to `query` (a unit vector), nearest list first.
    pub(crate) fn probe(&self, kernels: &Kernels, query: &[f32]) -> Vec<u32> {
        let mut scores = vec![0.0f32; self.cfg.nlist];
        kernels.scan_f32(query, &self.centroids, &mut scores);
        let mut top = TopK::new(self.cfg.nprobe);
        for (l, &s) in scores.iter().enumerate() {
            top.push(s, l as u64);
        }
        top.into_sorted_vec()
            .into_iter()
            .flat_map(|(_, l)| self.lists[l as usize].iter().copied())
            .collect()
    }

    /// Replaces the quantiser and every list (`lists[g]` the list of slot `g`, `NONE` for
    /// none) as a training computed them.
    pub(crate) fn install(&mut self, centroids: Vec<f32>, lists: &[u32], trained_at: u64) {
        self.centroids = centroids;
        self.lists.iter_mut().for_each(Vec::clear);
        self.place.fill((NONE, NONE));
        for (g, &l) in lists.iter().enumerate() {
            if l != NONE {
                self.set(g, l);
            }
        }
        self.trained_at = Some(trained_at);
        self.epoch += 1;
    }

    /// Sizes of the lists (for stats and tests).
    pub(crate) fn list_sizes(&self) -> Vec<usize> {
        self.lists.iter().map(Vec::len).collect()
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
        let mut worst = (0..n).map(|r| {
            let c = &centroids[lists[r] as usize * dim..][..dim];
            (kernels.dot_f32(c, &sample[r * dim..(r + 1) * dim]), r)
        });
        let mut spare: Vec<(f32, usize)> = Vec::new();
        if counts.contains(&0) {
            spare = worst.by_ref().collect();
            spare.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            spare.reverse();
        }
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

/// How many of `n` held items a training samples: 64 per list, at most all.
pub(crate) fn sample_size(cfg: IvfConfig, held: usize) -> usize {
    (cfg.nlist * SAMPLE_PER_LIST).min(held)
}

/// The list of a slot that holds nothing.
pub(crate) const NO_LIST: u32 = NONE;
