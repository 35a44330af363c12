//! Exact top-k selection with a bounded min-heap.
//!
//! Order: higher score first; equal scores are broken by the smaller key, so results are
//! deterministic whatever order candidates arrive in (per shard, per thread).

/// Keeps the `k` best `(score, key)` pairs seen so far. Scores must not be NaN.
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    // A min-heap on "goodness": heap[0] is the worst entry kept.
    heap: Vec<(f32, u64)>,
}

#[inline]
#[allow(clippy::float_cmp)] // exact ties are what the key breaks
fn better(a: (f32, u64), b: (f32, u64)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// Sorts `(score, key)` pairs best first in the order of [`TopK`]: higher score, then smaller
/// key (0.0 ties -0.0); scores are never NaN.
pub fn sort_best_first(pairs: &mut [(f32, u64)]) {
    pairs.sort_unstable_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.1.cmp(&b.1))
    });
}

impl TopK {
    /// An empty selection that will keep at most `k` entries.
    #[must_use]
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: Vec::with_capacity(k.min(1 << 16)),
        }
    }

    /// Number of entries kept so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing has been kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Whether `push(score, key)` would keep the pair. Cheap enough for the scan loop, so a
    /// caller can run an expensive filter only on pairs that would enter.
    #[inline]
    #[must_use]
    pub fn accepts(&self, score: f32, key: u64) -> bool {
        self.k > 0 && (self.heap.len() < self.k || better((score, key), self.heap[0]))
    }

    /// The lowest score that can still enter: `-inf` until `k` pairs are kept, then the
    /// worst kept score (a pair with an equal score enters only with a smaller key).
    #[inline]
    #[must_use]
    pub fn floor(&self) -> f32 {
        match self.heap.first() {
            _ if self.k == 0 => f32::INFINITY,
            Some(worst) if self.heap.len() == self.k => worst.0,
            _ => f32::NEG_INFINITY,
        }
    }

    /// Calls `offer(self, i, scores[i])` for every `i` whose score reaches [`TopK::floor`],
    /// in increasing `i`; blocks of 32 scores whose maximum is below the floor are skipped
    /// with one comparison. `offer` decides what to push (it may check a filter first).
    #[inline]
    pub fn offer_scores(&mut self, scores: &[f32], mut offer: impl FnMut(&mut Self, usize, f32)) {
        const BLOCK: usize = 32;
        const LANES: usize = 8;
        for (b, block) in scores.chunks(BLOCK).enumerate() {
            let floor = self.floor();
            // Eight independent lanes with `if s > m` (not `f32::max`, whose NaN rule keeps
            // the compiler from reordering) become packed max instructions.
            let mut lanes = [f32::NEG_INFINITY; LANES];
            let mut parts = block.chunks_exact(LANES);
            for part in &mut parts {
                for (m, &s) in lanes.iter_mut().zip(part) {
                    *m = if s > *m { s } else { *m };
                }
            }
            let max = parts
                .remainder()
                .iter()
                .chain(&lanes)
                .fold(f32::NEG_INFINITY, |m, &s| if s > m { s } else { m });
            if max < floor {
                continue;
            }
            // Most scores of a block that passes are still below the floor: a bit per score
            // (a compare and a mask, vectorised) and only the set bits visited, instead of a
            // hard-to-predict branch per score. The floor only rises, so each is checked again.
            let mut mask = 0u32;
            for (i, &s) in block.iter().enumerate() {
                mask |= u32::from(s >= floor) << i;
            }
            while mask != 0 {
                let i = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let s = block[i];
                if s >= self.floor() {
                    offer(self, b * BLOCK + i, s);
                }
            }
        }
    }

    /// Offers a pair; returns whether it was kept.
    #[inline]
    pub fn push(&mut self, score: f32, key: u64) -> bool {
        if !self.accepts(score, key) {
            return false;
        }
        if self.heap.len() < self.k {
            self.heap.push((score, key));
            self.sift_up(self.heap.len() - 1);
        } else {
            self.heap[0] = (score, key);
            self.sift_down(0);
        }
        true
    }

    /// Offers every pair of `other`.
    pub fn merge(&mut self, other: TopK) {
        for (s, key) in other.heap {
            self.push(s, key);
        }
    }

    /// The kept pairs, best first.
    #[must_use]
    pub fn into_sorted_vec(self) -> Vec<(f32, u64)> {
        let mut v = self.heap;
        sort_best_first(&mut v);
        v
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if better(self.heap[parent], self.heap[i]) {
                self.heap.swap(parent, i);
                i = parent;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut worst = i;
            if l < n && better(self.heap[worst], self.heap[l]) {
                worst = l;
            }
            if r < n && better(self.heap[worst], self.heap[r]) {
                worst = r;
            }
            if worst == i {
                break;
            }
            self.heap.swap(i, worst);
            i = worst;
        }
    }
}

/// Indices and values of the `k` largest entries of `scores`, best first (ties: lower index
/// first). Returns fewer than `k` when `scores` is shorter. Scores must not be NaN.
#[must_use]
pub fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut sel = TopK::new(k.min(scores.len()));
    for (i, &s) in scores.iter().enumerate() {
        sel.push(s, i as u64);
    }
    sel.into_sorted_vec()
        .into_iter()
        .map(|(s, i)| (i as usize, s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` pseudo-random scores `(x % levels) / div - shift`: few distinct values, so ties
    /// are common.
    fn scores(state: &mut u64, n: usize, levels: u64, div: f32, shift: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                ((*state >> 33) % levels) as f32 / div - shift
            })
            .collect()
    }

    fn reference(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut idx: Vec<usize> = (0..scores.len()).collect();
        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        idx.into_iter().take(k).map(|i| (i, scores[i])).collect()
    }

    #[test]
    fn matches_full_sort_for_many_sizes_and_ties() {
        let mut state = 12345u64;
        for n in [0usize, 1, 2, 7, 100, 1000] {
            for k in [1usize, 3, 10, 1000, 5000] {
                let scores = scores(&mut state, n, 17, 4.0, 2.0);
                assert_eq!(top_k(&scores, k), reference(&scores, k), "n={n} k={k}");
            }
        }
    }

    #[test]
    fn offer_scores_sees_every_pair_that_could_enter() {
        let mut state = 99u64;
        for n in [0usize, 1, 15, 16, 17, 100, 1000] {
            for k in [1usize, 3, 10, 200] {
                let scores = scores(&mut state, n, 29, 8.0, 1.0);
                let mut top = TopK::new(k);
                top.offer_scores(&scores, |t, i, s| {
                    t.push(s, i as u64);
                });
                let got: Vec<(usize, f32)> = top
                    .into_sorted_vec()
                    .into_iter()
                    .map(|(s, i)| (i as usize, s))
                    .collect();
                assert_eq!(got, reference(&scores, k), "n={n} k={k}");
            }
        }
        let mut none = TopK::new(0);
        none.offer_scores(&[1.0, 2.0], |_, _, _| panic!("k = 0 takes nothing"));
    }

    #[test]
    fn k_zero_keeps_nothing_and_merge_is_exact() {
        let mut a = TopK::new(0);
        assert!(!a.push(1.0, 0));
        assert!(a.is_empty());
        let mut x = TopK::new(3);
        let mut y = TopK::new(3);
        for i in 0..10u64 {
            x.push(i as f32, i);
            y.push(-(i as f32), 100 + i);
        }
        y.merge(x);
        let keys: Vec<u64> = y.into_sorted_vec().into_iter().map(|p| p.1).collect();
        assert_eq!(keys, vec![9, 8, 7]);
    }
}
