//! BM25 kept in step with the ring: items' texts are indexed as they arrive and leave the
//! index when the ring overwrites them.

use std::collections::BTreeSet;
use std::fmt::Write;

use imesde_bm25::{AnalyzerConfig, Bm25, Corpus, CorpusPart, Method, Params, Query};
use imesde_ring::{Ring, RingError};

use crate::error::Result;

/// How an engine's BM25 index scores and analyses: its parameters, stemmer and stop words
/// (its analysis is always the current one: the index is rebuilt from the texts on load).
#[derive(Debug, Clone, PartialEq)]
pub struct LexicalConfig {
    /// `k1`, `b` and the scoring variant.
    pub params: Params,
    /// A Snowball language, or None for no stemming.
    pub stemmer: Option<String>,
    /// Words dropped before stemming.
    pub stopwords: Vec<String>,
}

impl Default for LexicalConfig {
    /// Lucene's BM25 (k1 1.2, b 0.75), English stemming, no stop words.
    fn default() -> Self {
        LexicalConfig {
            params: Params::default(),
            stemmer: Some("english".into()),
            stopwords: Vec::new(),
        }
    }
}

impl LexicalConfig {
    /// The analyzer of an index made now with these settings.
    #[must_use]
    pub fn analyzer(&self) -> AnalyzerConfig {
        AnalyzerConfig {
            stemmer: self.stemmer.clone(),
            stopwords: self.stopwords.clone(),
            ..AnalyzerConfig::default()
        }
    }

    /// The settings as one line of a snapshot's manifest:
    /// `k1:b:method:delta:stemmer:stopwords`, the stop words as hex of their UTF-8, comma
    /// separated (any word survives the line format).
    #[must_use]
    pub fn to_spec(&self) -> String {
        let delta = self.params.method.delta().unwrap_or(0.0);
        let hex = |w: &String| {
            w.bytes().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
        };
        let stop: Vec<String> = self.stopwords.iter().map(hex).collect();
        format!(
            "{}:{}:{}:{delta}:{}:{}",
            self.params.k1,
            self.params.b,
            self.params.method,
            self.stemmer.as_deref().unwrap_or(""),
            stop.join(",")
        )
    }

    /// The settings [`LexicalConfig::to_spec`] wrote.
    ///
    /// # Errors
    /// [`RingError::Snapshot`] for a line that is not one.
    pub fn parse_spec(spec: &str) -> std::result::Result<Self, RingError> {
        let bad = || {
            RingError::Snapshot(format!(
                "the bm25 line {spec:?} is not k1:b:method:delta:stemmer:stopwords"
            ))
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let [k1, b, method, delta, stemmer, stop] = parts[..] else {
            return Err(bad());
        };
        let (k1, b, delta): (f32, f32, f32) = (
            k1.parse().map_err(|_| bad())?,
            b.parse().map_err(|_| bad())?,
            delta.parse().map_err(|_| bad())?,
        );
        let method = method
            .parse::<Method>()
            .map_err(|_| bad())?
            .with_delta(delta);
        let word = |h: &str| -> Option<String> {
            let bytes = (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            String::from_utf8(bytes).ok()
        };
        let stopwords = stop
            .split(',')
            .filter(|h| !h.is_empty())
            .map(word)
            .collect::<Option<Vec<String>>>()
            .ok_or_else(bad)?;
        let config = LexicalConfig {
            params: Params { k1, b, method },
            stemmer: (!stemmer.is_empty()).then(|| stemmer.to_owned()),
            stopwords,
        };
        // Settings an index refuses are a damaged line, not an engine without BM25.
        Bm25::new(config.params, config.analyzer()).map_err(|_| bad())?;
        Ok(config)
    }
}

/// The index and the ids it holds (in order, to evict the oldest).
#[derive(Debug)]
pub(crate) struct Lexical {
    index: Bm25,
    held: BTreeSet<u64>,
    config: LexicalConfig,
}

impl Lexical {
    /// Heap bytes of the index and of the set of ids it holds (a B-tree's entry: its id
    /// and about as much again in nodes).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.index.memory_bytes() + self.held.len() * 2 * size_of::<u64>()
    }

    pub(crate) fn new(config: LexicalConfig) -> Result<Self> {
        Ok(Lexical {
            index: Bm25::new(config.params, config.analyzer())?,
            held: BTreeSet::new(),
            config,
        })
    }

    /// The settings the index was made with.
    pub(crate) fn config(&self) -> &LexicalConfig {
        &self.config
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
        query: Query<'_>,
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
    pub(crate) fn corpus_terms(&self, query: Query<'_>) -> CorpusPart {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_a_manifest_line() {
        for config in [
            LexicalConfig::default(),
            LexicalConfig {
                params: Params {
                    k1: 0.9,
                    b: 0.4,
                    method: Method::Bm25Plus { delta: 0.25 },
                },
                stemmer: Some("german".into()),
                stopwords: vec!["der".into(), "a:b,c\nd".into(), "über".into()],
            },
            LexicalConfig {
                params: Params {
                    method: Method::Bm25L { delta: 0.75 },
                    ..Params::default()
                },
                stemmer: None,
                ..LexicalConfig::default()
            },
        ] {
            assert_eq!(
                LexicalConfig::parse_spec(&config.to_spec()).unwrap(),
                config
            );
        }
        for bad in [
            "",
            "1.2:0.75",
            "x:0.75:lucene:0::",
            "1.2:0.75:okapi:0::",
            "1.2:0.75:lucene:0:klingon:",
            "1.2:0.75:lucene:0::zz",
        ] {
            assert!(LexicalConfig::parse_spec(bad).is_err(), "{bad}");
        }
    }
}
