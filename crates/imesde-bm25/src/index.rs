//! The inverted index and BM25 scoring with MaxScore top-k.

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::str::FromStr;

use crate::analyzer::{Analyzer, AnalyzerConfig};
use crate::error::{Bm25Error, Result};

/// The BM25 variant: how term frequency and document frequency become a score (the names and
/// formulas of Kamphuis et al., ECIR 2020, as in bm25s).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Method {
    /// `ln(1 + (N - n + 0.5) / (n + 0.5)) * tf / (tf + k1 (1 - b + b dl / avgdl))`.
    #[default]
    Lucene,
    /// Robertson's IDF `ln((N - n + 0.5) / (n + 0.5))`, floored at 0, with Lucene's TF part.
    Robertson,
    /// `ln(N / n) * tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl))`.
    Atire,
    /// BM25+: `ln((N + 1) / n) * ((k1 + 1) tf / (k1 (1 - b + b dl / avgdl) + tf) + delta)`, the
    /// delta added for each matching term.
    Bm25Plus { delta: f32 },
}

impl FromStr for Method {
    type Err = Bm25Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "lucene" => Ok(Self::Lucene),
            "robertson" => Ok(Self::Robertson),
            "atire" => Ok(Self::Atire),
            "bm25+" | "bm25plus" => Ok(Self::Bm25Plus { delta: 0.5 }),
            other => Err(Bm25Error::Config(format!(
                "method must be \"lucene\", \"robertson\", \"atire\" or \"bm25+\", got {other:?}"
            ))),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lucene => "lucene",
            Self::Robertson => "robertson",
            Self::Atire => "atire",
            Self::Bm25Plus { .. } => "bm25+",
        })
    }
}

/// Scoring parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub k1: f32,
    pub b: f32,
    pub method: Method,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            k1: 1.2,
            b: 0.75,
            method: Method::Lucene,
        }
    }
}

impl Params {
    fn check(&self) -> Result<()> {
        if !(self.k1.is_finite() && self.k1 >= 0.0) {
            return Err(Bm25Error::Config(format!(
                "k1 must be a number >= 0, got {}",
                self.k1
            )));
        }
        if !(0.0..=1.0).contains(&self.b) {
            return Err(Bm25Error::Config(format!(
                "b must be between 0 and 1, got {}",
                self.b
            )));
        }
        if let Method::Bm25Plus { delta } = self.method
            && !(delta.is_finite() && delta >= 0.0)
        {
            return Err(Bm25Error::Config(format!(
                "delta must be a number >= 0, got {delta}"
            )));
        }
        Ok(())
    }

    fn idf(&self, df: u32, n: u32) -> f32 {
        let (df, n) = (f64::from(df), f64::from(n));
        let v = match self.method {
            Method::Lucene => (1.0 + (n - df + 0.5) / (df + 0.5)).ln(),
            Method::Robertson => ((n - df + 0.5) / (df + 0.5)).max(1.0).ln(),
            Method::Atire => (n / df).ln(),
            Method::Bm25Plus { .. } => ((n + 1.0) / df).ln(),
        };
        v as f32
    }

    /// The TF part for `tf` occurrences in a document whose length norm is `norm`
    /// (`1 - b + b dl / avgdl`).
    #[inline]
    fn tfc(&self, tf: f32, norm: f32) -> f32 {
        let k = self.k1 * norm;
        match self.method {
            Method::Lucene | Method::Robertson => tf / (tf + k),
            Method::Atire => tf * (self.k1 + 1.0) / (tf + k),
            Method::Bm25Plus { delta } => (self.k1 + 1.0) * tf / (k + tf) + delta,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Posting {
    doc: u32,
    tf: u32,
}

#[derive(Debug, Default)]
struct Term {
    text: Box<str>,
    /// Live documents containing the term.
    df: u32,
    /// The largest tf ever indexed (an upper bound after removals).
    max_tf: u32,
    /// Sorted by `doc`; may hold postings of removed documents until compacted.
    postings: Vec<Posting>,
    dead: u32,
}

/// A saved document: id, length, (term, tf) sorted by term.
pub(crate) type SavedDoc<T> = (u64, u32, T);
/// What `save` writes: the term texts and the live documents.
pub(crate) type Export<'a> = (Vec<&'a str>, Vec<SavedDoc<&'a [(u32, u32)]>>);

#[derive(Debug)]
struct Doc {
    id: u64,
    len: u32,
    live: bool,
    /// (term, tf), sorted by term; emptied on removal.
    terms: Box<[(u32, u32)]>,
}

/// One result: the document id, its score and the query terms it matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Bm25Hit {
    pub id: u64,
    pub score: f32,
    pub terms: Vec<String>,
}

/// A BM25 inverted index over documents with `u64` ids.
///
/// Document lengths, document frequencies, `N` and the average length always describe exactly
/// the documents indexed now: `remove` and `update` keep them exact (postings of removed
/// documents are skipped, then compacted away).
#[derive(Debug)]
pub struct Bm25 {
    analyzer: Analyzer,
    params: Params,
    dict: HashMap<Box<str>, u32>,
    terms: Vec<Term>,
    ids: HashMap<u64, u32>,
    docs: Vec<Doc>,
    total_len: u64,
    scratch: Vec<String>,
}

/// Score upper bounds are inflated by this much so float rounding never prunes a winner.
const SLACK: f32 = 1.0 + 1e-5;

impl Bm25 {
    /// An empty index.
    ///
    /// # Errors
    /// Parameters out of range or an unknown stemmer language.
    pub fn new(params: Params, analyzer: AnalyzerConfig) -> Result<Self> {
        params.check()?;
        Ok(Self {
            analyzer: Analyzer::new(analyzer)?,
            params,
            dict: HashMap::new(),
            terms: Vec::new(),
            ids: HashMap::new(),
            docs: Vec::new(),
            total_len: 0,
            scratch: Vec::new(),
        })
    }

    #[must_use]
    pub fn params(&self) -> Params {
        self.params
    }

    #[must_use]
    pub fn analyzer(&self) -> &Analyzer {
        &self.analyzer
    }

    /// Number of documents indexed.
    #[must_use]
    pub fn document_count(&self) -> usize {
        self.ids.len()
    }

    /// Number of distinct terms in the indexed documents.
    #[must_use]
    pub fn term_count(&self) -> usize {
        self.terms.iter().filter(|t| t.df > 0).count()
    }

    /// Mean number of terms per document (0 when empty).
    #[must_use]
    pub fn average_document_length(&self) -> f64 {
        if self.ids.is_empty() {
            0.0
        } else {
            self.total_len as f64 / self.ids.len() as f64
        }
    }

    #[must_use]
    pub fn contains(&self, id: u64) -> bool {
        self.ids.contains_key(&id)
    }

    /// The ids indexed, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.ids.keys().copied()
    }

    /// Indexes `text` under `id`.
    ///
    /// # Errors
    /// [`Bm25Error::Duplicate`] if `id` is already indexed.
    pub fn add(&mut self, id: u64, text: &str) -> Result<()> {
        if self.ids.contains_key(&id) {
            return Err(Bm25Error::Duplicate(id));
        }
        let mut tokens = std::mem::take(&mut self.scratch);
        self.analyzer.analyze_into(text, &mut tokens);
        let len = tokens.len() as u32;
        let mut counts: HashMap<u32, u32> = HashMap::with_capacity(tokens.len());
        for token in tokens.drain(..) {
            let term = match self.dict.entry(token.into_boxed_str()) {
                Entry::Occupied(e) => *e.get(),
                Entry::Vacant(e) => {
                    let t = self.terms.len() as u32;
                    self.terms.push(Term {
                        text: e.key().clone(),
                        ..Term::default()
                    });
                    e.insert(t);
                    t
                }
            };
            *counts.entry(term).or_insert(0) += 1;
        }
        self.scratch = tokens;
        let mut terms: Vec<(u32, u32)> = counts.into_iter().collect();
        terms.sort_unstable();
        self.insert(id, len, terms.into_boxed_slice());
        Ok(())
    }

    fn insert(&mut self, id: u64, len: u32, terms: Box<[(u32, u32)]>) {
        let doc = self.docs.len() as u32;
        for &(t, tf) in &terms {
            let term = &mut self.terms[t as usize];
            term.df += 1;
            term.max_tf = term.max_tf.max(tf);
            term.postings.push(Posting { doc, tf });
        }
        self.docs.push(Doc {
            id,
            len,
            live: true,
            terms,
        });
        self.ids.insert(id, doc);
        self.total_len += u64::from(len);
    }

    /// Removes the document `id`.
    ///
    /// # Errors
    /// [`Bm25Error::NotFound`] if it is not indexed.
    pub fn remove(&mut self, id: u64) -> Result<()> {
        let doc = self.ids.remove(&id).ok_or(Bm25Error::NotFound(id))?;
        let d = &mut self.docs[doc as usize];
        d.live = false;
        self.total_len -= u64::from(d.len);
        let terms = std::mem::take(&mut d.terms);
        for &(t, _) in &terms {
            let term = &mut self.terms[t as usize];
            term.df -= 1;
            term.dead += 1;
            if term.dead as usize * 2 > term.postings.len() && term.dead >= 8 {
                let docs = &self.docs;
                term.postings.retain(|p| docs[p.doc as usize].live);
                term.dead = 0;
                if term.df == 0 {
                    term.max_tf = 0;
                }
            }
        }
        if self.docs.len() > 1024 && self.docs.len() > 2 * self.ids.len() {
            self.compact();
        }
        Ok(())
    }

    /// Replaces the text of `id` (adds it if absent).
    ///
    /// # Errors
    /// None in practice; kept fallible like `add`.
    pub fn update(&mut self, id: u64, text: &str) -> Result<()> {
        if self.ids.contains_key(&id) {
            self.remove(id)?;
        }
        self.add(id, text)
    }

    /// Renumbers live documents densely and drops dead postings and unused terms.
    fn compact(&mut self) {
        let docs = std::mem::take(&mut self.docs);
        let old_terms = std::mem::take(&mut self.terms);
        self.dict.clear();
        self.ids.clear();
        self.total_len = 0;
        let mut remap: Vec<u32> = vec![u32::MAX; old_terms.len()];
        for d in docs.into_iter().filter(|d| d.live) {
            let terms: Box<[(u32, u32)]> = d
                .terms
                .iter()
                .map(|&(t, tf)| {
                    if remap[t as usize] == u32::MAX {
                        remap[t as usize] = self.terms.len() as u32;
                        let text = old_terms[t as usize].text.clone();
                        self.dict.insert(text.clone(), remap[t as usize]);
                        self.terms.push(Term {
                            text,
                            ..Term::default()
                        });
                    }
                    (remap[t as usize], tf)
                })
                .collect();
            let mut terms = terms.into_vec();
            terms.sort_unstable();
            self.insert(d.id, d.len, terms.into_boxed_slice());
        }
    }

    /// Query terms with their multiplicity (a repeated query word counts again, as in bm25s).
    fn query_terms(&self, query: &str) -> Vec<(u32, f32)> {
        let mut weights: Vec<(u32, f32)> = Vec::new();
        for token in self.analyzer.analyze(query) {
            if let Some(&t) = self.dict.get(token.as_str())
                && self.terms[t as usize].df > 0
            {
                match weights.iter_mut().find(|(x, _)| *x == t) {
                    Some((_, w)) => *w += 1.0,
                    None => weights.push((t, 1.0)),
                }
            }
        }
        weights
    }

    /// The `k` best documents for `query` with a score of at least `min_score`, best first
    /// (equal scores: the most recently added first). Exact: MaxScore skips only documents
    /// that provably cannot enter the top `k`.
    #[must_use]
    pub fn search(&self, query: &str, k: usize, min_score: f32) -> Vec<Bm25Hit> {
        let n = self.ids.len() as u32;
        if k == 0 || n == 0 {
            return Vec::new();
        }
        let avgdl = (self.total_len as f64 / f64::from(n)) as f32;
        let p = self.params;
        let norm = |len: u32| {
            if avgdl > 0.0 {
                1.0 - p.b + p.b * len as f32 / avgdl
            } else {
                1.0 - p.b
            }
        };
        let query_terms = self.query_terms(query);
        let term_ids: Vec<u32> = query_terms.iter().map(|(t, _)| *t).collect();
        let mut cursors: Vec<Cursor<'_>> = query_terms
            .into_iter()
            .map(|(t, w)| {
                let term = &self.terms[t as usize];
                let weight = w * p.idf(term.df, n);
                let ub = weight * p.tfc(term.max_tf as f32, 1.0 - p.b) * SLACK;
                Cursor {
                    postings: &term.postings,
                    pos: 0,
                    weight,
                    ub: ub.max(0.0),
                }
            })
            .collect();
        cursors.sort_by(|a, b| a.ub.total_cmp(&b.ub));
        let mut prefix = Vec::with_capacity(cursors.len());
        let mut acc = 0.0f32;
        for c in &cursors {
            acc += c.ub;
            prefix.push(acc * SLACK);
        }
        let mut heap: BinaryHeap<Entry2> = BinaryHeap::with_capacity(k + 1);
        let mut theta = f32::NEG_INFINITY;
        let mut first = 0usize;
        let m = cursors.len();
        loop {
            while first < m && heap.len() == k && prefix[first] < theta {
                first += 1;
            }
            let Some(doc) = cursors[first..]
                .iter()
                .filter_map(|c| c.postings.get(c.pos).map(|p| p.doc))
                .min()
            else {
                break;
            };
            let d = &self.docs[doc as usize];
            let dn = norm(d.len);
            let mut score = 0.0f32;
            for c in &mut cursors[first..] {
                if let Some(p) = c.postings.get(c.pos)
                    && p.doc == doc
                {
                    score += c.weight * self.params.tfc(p.tf as f32, dn);
                    c.pos += 1;
                }
            }
            if !d.live {
                continue;
            }
            let mut pruned = false;
            for i in (0..first).rev() {
                if heap.len() == k && score + prefix[i] < theta {
                    pruned = true;
                    break;
                }
                let c = &mut cursors[i];
                c.pos += c.postings[c.pos..].partition_point(|p| p.doc < doc);
                if let Some(p) = c.postings.get(c.pos)
                    && p.doc == doc
                {
                    score += c.weight * self.params.tfc(p.tf as f32, dn);
                    c.pos += 1;
                }
            }
            if pruned || score < min_score || score <= 0.0 {
                continue;
            }
            let e = Entry2 { score, doc };
            if heap.len() < k {
                heap.push(e);
            } else if e < *heap.peek().expect("full") {
                heap.pop();
                heap.push(e);
            }
            if heap.len() == k {
                theta = heap.peek().expect("full").score;
            }
        }
        let mut hits = heap.into_sorted_vec();
        hits.truncate(k);
        hits.into_iter()
            .map(|e| self.hit(e.doc, e.score, &term_ids))
            .collect()
    }

    fn hit(&self, doc: u32, score: f32, query: &[u32]) -> Bm25Hit {
        let d = &self.docs[doc as usize];
        let terms = d
            .terms
            .iter()
            .filter(|(t, _)| query.contains(t))
            .map(|(t, _)| self.terms[*t as usize].text.to_string())
            .collect();
        Bm25Hit {
            id: d.id,
            score,
            terms,
        }
    }

    /// Every matching document scored term by term, best first: the reference [`Self::search`]
    /// must agree with.
    #[must_use]
    pub fn search_exhaustive(&self, query: &str, k: usize, min_score: f32) -> Vec<Bm25Hit> {
        let n = self.ids.len() as u32;
        if k == 0 || n == 0 {
            return Vec::new();
        }
        let avgdl = self.total_len as f64 / f64::from(n);
        let p = self.params;
        let mut acc: HashMap<u32, f32> = HashMap::new();
        let q = self.query_terms(query);
        for &(t, w) in &q {
            let term = &self.terms[t as usize];
            let weight = w * p.idf(term.df, n);
            for posting in &term.postings {
                let d = &self.docs[posting.doc as usize];
                if d.live {
                    let norm =
                        (1.0 - f64::from(p.b) + f64::from(p.b) * f64::from(d.len) / avgdl) as f32;
                    *acc.entry(posting.doc).or_insert(0.0) +=
                        weight * p.tfc(posting.tf as f32, norm);
                }
            }
        }
        let mut all: Vec<Entry2> = acc
            .into_iter()
            .filter(|&(_, s)| s >= min_score && s > 0.0)
            .map(|(doc, score)| Entry2 { score, doc })
            .collect();
        all.sort();
        all.truncate(k);
        let terms: Vec<u32> = q.iter().map(|(t, _)| *t).collect();
        all.into_iter()
            .map(|e| self.hit(e.doc, e.score, &terms))
            .collect()
    }

    /// The BM25 score of every indexed document for `query` (0 where nothing matches), keyed
    /// by id.
    #[must_use]
    pub fn scores(&self, query: &str) -> HashMap<u64, f32> {
        self.search_exhaustive(query, usize::MAX, 0.0)
            .into_iter()
            .map(|h| (h.id, h.score))
            .collect()
    }

    /// Live documents as `(id, length, [(term, tf)])`, for saving.
    pub(crate) fn export(&self) -> Export<'_> {
        let terms = self.terms.iter().map(|t| &*t.text).collect();
        let docs = self
            .docs
            .iter()
            .filter(|d| d.live)
            .map(|d| (d.id, d.len, &*d.terms))
            .collect();
        (terms, docs)
    }

    /// Rebuilds an index from saved parts (already validated).
    pub(crate) fn import(
        params: Params,
        analyzer: AnalyzerConfig,
        terms: Vec<String>,
        docs: Vec<SavedDoc<Vec<(u32, u32)>>>,
    ) -> Result<Self> {
        let mut index = Self::new(params, analyzer)?;
        for text in terms {
            let text: Box<str> = text.into();
            index.dict.insert(text.clone(), index.terms.len() as u32);
            index.terms.push(Term {
                text,
                ..Term::default()
            });
        }
        for (id, len, terms) in docs {
            index.insert(id, len, terms.into_boxed_slice());
        }
        Ok(index)
    }
}

/// A query term's position in its posting list during a search.
struct Cursor<'a> {
    postings: &'a [Posting],
    pos: usize,
    weight: f32,
    ub: f32,
}

/// A scored document; `Ord` puts the better one first (higher score, then newer).
#[derive(Debug, Clone, Copy)]
struct Entry2 {
    score: f32,
    doc: u32,
}

impl PartialEq for Entry2 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry2 {}
impl PartialOrd for Entry2 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry2 {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(other.doc.cmp(&self.doc))
    }
}
