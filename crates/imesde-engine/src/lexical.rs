//! BM25 kept in step with the ring: items' texts are indexed as they arrive and leave the
//! index when the ring overwrites them.

use std::collections::BTreeSet;

use imesde_bm25::{AnalyzerConfig, Bm25, Corpus, CorpusPart, Params};
use imesde_ring::Ring;

use crate::error::Result;

/// The index and the ids it holds (in order, to evict the oldest).
#[derive(Debug)]
pub(crate) struct Lexical {
    index: Bm25,
    held: BTreeSet<u64>,
}

impl Lexical {
    pub(crate) fn new() -> Result<Self> {
        Ok(Lexical {
            index: Bm25::new(Params::default(), AnalyzerConfig::english())?,
            held: BTreeSet::new(),
        })
    }

    /// Indexes `docs` (id, text) that `ring` still holds (not overwritten or deleted) and
    /// drops the documents it has overwritten.
    pub(crate) fn follow<'t>(&mut self, ring: &Ring, docs: impl Iterator<Item = (u64, &'t str)>) {
        let floor = ring.next_id().saturating_sub(ring.capacity() as u64);
        let (ids, texts): (Vec<u64>, Vec<&str>) = docs
            .filter(|&(id, _)| id >= floor && ring.contains(id))
            .unzip();
        // Ids come from the ring, so they are new: the batch (analysed on all cores when large)
        // goes in whole; were one refused, the others still go in one by one.
        if self.index.add_batch(&ids, &texts).is_ok() {
            self.held.extend(ids);
        } else {
            for (id, text) in ids.into_iter().zip(texts) {
                if self.index.add(id, text).is_ok() {
                    self.held.insert(id);
                }
            }
        }
        while let Some(&oldest) = self.held.first()
            && oldest < floor
        {
            self.held.pop_first();
            let _ = self.index.remove(oldest);
        }
    }

    /// Drops the documents `ids` (deleted from the ring).
    pub(crate) fn remove(&mut self, ids: &[u64]) {
        for id in ids {
            if self.held.remove(id) {
                let _ = self.index.remove(*id);
            }
        }
    }

    /// The index rebuilt from the texts `ring` holds (after loading a snapshot): the same
    /// documents give the same statistics, so the same scores.
    pub(crate) fn rebuild(&mut self, ring: &Ring) {
        let end = ring.next_id();
        let floor = end.saturating_sub(ring.capacity() as u64);
        let texts: Vec<(u64, std::sync::Arc<str>)> = (floor..end)
            .filter_map(|id| ring.hit(id, 0.0)?.text.map(|t| (id, t)))
            .collect();
        self.follow(ring, texts.iter().map(|(id, t)| (*id, &**t)));
    }

    /// BM25 `(id, score)` of the best `k` documents among the ids `keep` accepts (all
    /// without it), best first; scored as one index of `corpus` when given.
    pub(crate) fn ranked(
        &self,
        query: &str,
        k: usize,
        corpus: Option<&Corpus>,
        keep: Option<&mut dyn FnMut(u64) -> bool>,
    ) -> Vec<(u64, f32)> {
        let hits = match (corpus, keep) {
            (Some(c), keep) => self.index.search_corpus(query, k, 0.0, c, keep),
            (None, Some(keep)) => self.index.search_filtered(query, k, 0.0, keep),
            (None, None) => self.index.search(query, k, 0.0),
        };
        hits.into_iter().map(|h| (h.id, h.score)).collect()
    }

    /// This index's part of a corpus of several engines' indexes (see [`Bm25::corpus_terms`]).
    pub(crate) fn corpus_terms(&self, query: &str) -> CorpusPart {
        self.index.corpus_terms(query)
    }

    /// See [`Bm25::corpus_max_impacts`].
    pub(crate) fn corpus_max_impacts(
        &self,
        terms: &[String],
        documents: u32,
        total_len: u64,
    ) -> Vec<f32> {
        self.index.corpus_max_impacts(terms, documents, total_len)
    }
}
