//! Standing queries: registered query vectors that every ingested batch is scored against, in
//! one batched kernel pass, turning matching new items into events.
//!
//! A subscription fires for a new item when the item passes its metadata filter, scores at
//! least its threshold (if it has one) and enters its running top-k (if it has one: the `k`
//! best scores seen since it was registered; an item enters when fewer than `k` were seen or
//! it beats the lowest of them).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use imesde_simd::Kernels;
use parking_lot::{Mutex, RwLock};

use crate::error::RingError;
use crate::item::{Attributes, Filter, Hit};

/// What makes a standing query fire.
#[derive(Debug, Clone, Default)]
pub struct StandingSpec {
    /// Fire for scores `>= threshold`.
    pub threshold: Option<f32>,
    /// Fire for items that enter the running top-k.
    pub top_k: Option<usize>,
    /// Only items whose metadata matches (time bounds are ignored).
    pub filter: Filter,
}

/// A matching new item for one subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The subscription's id.
    pub subscription: u64,
    /// The item and its cosine similarity to the subscription's query.
    pub hit: Hit,
}

/// f32 ordered by `total_cmp`, for the running top-k heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score(f32);
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Score {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

#[derive(Debug)]
struct Sub {
    id: u64,
    spec: StandingSpec,
    /// Min-heap of the best `top_k` scores seen so far.
    best: Mutex<BinaryHeap<Reverse<Score>>>,
}

#[derive(Debug, Default)]
struct Registry {
    next_id: u64,
    subs: Vec<Sub>,
    /// The subscriptions' unit queries, back to back, in `subs` order.
    queries: Vec<f32>,
}

/// The standing queries of one ring.
#[derive(Debug, Default)]
pub(crate) struct Standing {
    reg: RwLock<Registry>,
}

impl Standing {
    /// A new subscription id, for [`Standing::add`]: events can then be routed to their
    /// subscriber before its query is registered.
    pub(crate) fn reserve(&self) -> u64 {
        let mut reg = self.reg.write();
        let id = reg.next_id;
        reg.next_id += 1;
        id
    }

    /// Registers a unit query under `id`, an id from [`Standing::reserve`] not used yet.
    pub(crate) fn add(&self, id: u64, unit: &[f32], spec: StandingSpec) -> Result<(), RingError> {
        if spec.threshold.is_some_and(|t| !t.is_finite()) {
            return Err(RingError::Standing(
                "threshold must be a finite number".into(),
            ));
        }
        if spec.top_k == Some(0) {
            return Err(RingError::ZeroK);
        }
        if spec.threshold.is_none() && spec.top_k.is_none() {
            return Err(RingError::Standing(
                "a standing query needs a threshold, a top_k, or both".into(),
            ));
        }
        let mut reg = self.reg.write();
        if id >= reg.next_id || reg.subs.iter().any(|s| s.id == id) {
            return Err(RingError::Standing(format!(
                "subscription id {id} was not reserved, or is taken"
            )));
        }
        reg.queries.extend_from_slice(unit);
        reg.subs.push(Sub {
            id,
            spec,
            best: Mutex::new(BinaryHeap::new()),
        });
        Ok(())
    }

    /// Removes a subscription; false when there is none with this id.
    pub(crate) fn remove(&self, id: u64, dim: usize) -> bool {
        let mut reg = self.reg.write();
        let Some(i) = reg.subs.iter().position(|s| s.id == id) else {
            return false;
        };
        reg.subs.remove(i);
        reg.queries.drain(i * dim..(i + 1) * dim);
        true
    }

    pub(crate) fn ids(&self) -> Vec<u64> {
        self.reg.read().subs.iter().map(|s| s.id).collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.reg.read().subs.is_empty()
    }

    /// Scores the `n` unit vectors of a batch (ids `first..`) against every subscription in
    /// one kernel pass and returns the events, in item order, then subscription order.
    pub(crate) fn match_batch(
        &self,
        kernels: &Kernels,
        unit: &[f32],
        dim: usize,
        first: u64,
        attrs: &Attributes,
        ts: &dyn Fn(usize) -> f64,
    ) -> Vec<Event> {
        let reg = self.reg.read();
        let nq = reg.subs.len();
        if nq == 0 {
            return Vec::new();
        }
        let n = unit.len() / dim;
        let mut scores = vec![0.0f32; nq * n];
        kernels.scan_multi_f32(&reg.queries, nq, unit, &mut scores);
        let mut events = Vec::new();
        for (q, sub) in reg.subs.iter().enumerate() {
            let spec = &sub.spec;
            let mut best = sub.best.lock();
            for i in 0..n {
                let score = scores[q * n + i];
                if spec.threshold.is_some_and(|t| score < t) {
                    continue;
                }
                let meta = attrs.metadata.get(i).and_then(Option::as_ref);
                let text = attrs.texts.get(i).and_then(Option::as_deref);
                if !spec.filter.matches_content(meta, text) {
                    continue;
                }
                if let Some(k) = spec.top_k {
                    if best.len() < k {
                        best.push(Reverse(Score(score)));
                    } else if best.peek().is_some_and(|low| score > low.0.0) {
                        best.pop();
                        best.push(Reverse(Score(score)));
                    } else {
                        continue;
                    }
                }
                events.push(Event {
                    subscription: sub.id,
                    hit: Hit {
                        id: first + i as u64,
                        score,
                        text: attrs.texts.get(i).cloned().flatten(),
                        ts: ts(i),
                        metadata: attrs.metadata.get(i).cloned().flatten(),
                    },
                });
            }
        }
        events.sort_by_key(|e| e.hit.id);
        events
    }
}
