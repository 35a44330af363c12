//! The inverted index and BM25 scoring with MaxScore top-k.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use foldhash::HashMap as FastMap;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use rayon::prelude::*;

use crate::analyzer::{Analyzer, AnalyzerConfig, Piece, pieces};
use crate::error::{Bm25Error, Result};

mod search;

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
    Bm25Plus {
        /// The shift added for each matching term.
        delta: f32,
    },
    /// BM25L (Lv and Zhai, CIKM 2011): `ln((N + 1) / (n + 0.5)) * (k1 + 1) (c + delta) /
    /// (k1 + c + delta)` with `c = tf / (1 - b + b dl / avgdl)`, for each matching term.
    Bm25L {
        /// The shift of the normalised term frequency.
        delta: f32,
    },
}

impl Method {
    /// The `delta` of BM25+ and BM25L; None for the methods without one.
    #[must_use]
    pub fn delta(self) -> Option<f32> {
        match self {
            Self::Bm25Plus { delta } | Self::Bm25L { delta } => Some(delta),
            _ => None,
        }
    }

    /// The method with `delta` as its delta (the methods without one are returned as they are).
    #[must_use]
    pub fn with_delta(self, delta: f32) -> Self {
        match self {
            Self::Bm25Plus { .. } => Self::Bm25Plus { delta },
            Self::Bm25L { .. } => Self::Bm25L { delta },
            m => m,
        }
    }
}

impl FromStr for Method {
    type Err = Bm25Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "lucene" => Ok(Self::Lucene),
            "robertson" => Ok(Self::Robertson),
            "atire" => Ok(Self::Atire),
            "bm25+" | "bm25plus" => Ok(Self::Bm25Plus { delta: 0.5 }),
            "bm25l" => Ok(Self::Bm25L { delta: 0.5 }),
            other => Err(Bm25Error::Config(format!(
                "method must be \"lucene\", \"robertson\", \"atire\", \"bm25+\" or \"bm25l\", \
                 got {other:?}"
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
            Self::Bm25L { .. } => "bm25l",
        })
    }
}

/// A query: a text the index's analyzer splits into terms, or terms already analyzed (as
/// [`Analyzer::analyze`] makes them), looked up as given. A repeated term counts again.
#[derive(Debug, Clone, Copy)]
pub enum Query<'a> {
    /// A text, analyzed by the index's analyzer.
    Text(&'a str),
    /// Terms already analyzed, looked up as given.
    Terms(&'a [String]),
}

impl<'a> From<&'a str> for Query<'a> {
    fn from(text: &'a str) -> Self {
        Self::Text(text)
    }
}

impl<'a> From<&'a String> for Query<'a> {
    fn from(text: &'a String) -> Self {
        Self::Text(text)
    }
}

impl<'a> From<&'a [String]> for Query<'a> {
    fn from(terms: &'a [String]) -> Self {
        Self::Terms(terms)
    }
}

impl<'a> From<&'a Vec<String>> for Query<'a> {
    fn from(terms: &'a Vec<String>) -> Self {
        Self::Terms(terms)
    }
}

/// Scoring parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Term-frequency saturation (1.2 by default).
    pub k1: f32,
    /// Document-length normalisation, 0 (none) to 1 (full; 0.75 by default).
    pub b: f32,
    /// The scoring variant.
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
        if let Some(delta) = self.method.delta()
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
            Method::Bm25L { .. } => ((n + 1.0) / (df + 0.5)).ln(),
        };
        v as f32
    }

    /// The TF part for `tf` occurrences in a document whose length norm is `norm`
    /// (`1 - b + b dl / avgdl`).
    /// In f64: any finite `k1` is taken, and `tf (k1 + 1)` of a huge one overflows f32.
    #[inline]
    fn tfc(&self, tf: f32, norm: f32) -> f32 {
        let (tf, k1) = (f64::from(tf), f64::from(self.k1));
        let k = k1 * f64::from(norm);
        let v = match self.method {
            Method::Lucene | Method::Robertson => tf / (tf + k),
            Method::Atire => tf * (k1 + 1.0) / (tf + k),
            Method::Bm25Plus { delta } => (k1 + 1.0) * tf / (k + tf) + f64::from(delta),
            Method::Bm25L { delta } => {
                let c = tf / f64::from(norm) + f64::from(delta);
                (k1 + 1.0) * c / (k1 + c)
            }
        };
        v as f32
    }
}

/// A term's impacts for one index epoch and their maximum (the term's exact upper bound).
#[derive(Debug, Default)]
struct Cached {
    epoch: u64,
    impacts: Vec<f32>,
    max: f32,
}

#[derive(Debug, Default)]
struct Term {
    text: Box<str>,
    /// Live documents containing the term.
    df: u32,
    /// The postings, as two columns: documents (sorted) and term frequencies. Searches
    /// read only the documents (and the cached impacts). May hold postings of removed
    /// documents until compacted.
    docs: Vec<u32>,
    tfs: Vec<u32>,
    dead: u32,
    /// The TF part of each posting's score (0 for removed documents), valid for the index
    /// `epoch` stored with it: computed by the first search after a change, then reused.
    impacts: RwLock<Cached>,
}

/// A saved document: id, length, (term, tf) sorted by term.
pub(crate) type SavedDoc<T> = (u64, u32, T);
/// What `save` writes: the term texts and the live documents.
pub(crate) type Export<'a> = (Vec<&'a str>, Vec<SavedDoc<&'a [(u32, u32)]>>);

/// An internal document; its length and liveness are in `Bm25::lens`.
#[derive(Debug)]
struct Doc {
    id: u64,
    /// (term, tf), sorted by term; emptied on removal.
    terms: Box<[(u32, u32)]>,
}

/// One result: the document id, its score and the query terms it matched.
#[derive(Debug, Clone, PartialEq)]
pub struct Bm25Hit {
    /// The document's id.
    pub id: u64,
    /// Its BM25 score.
    pub score: f32,
    /// The query terms it holds.
    pub terms: Vec<String>,
}

/// Statistics of several indexes taken as one corpus (summed from each index's
/// [`Bm25::corpus_terms`] and, per term, the largest of their [`Bm25::corpus_max_impacts`]),
/// so that [`Bm25::search_corpus`] on each index scores as one index holding them all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Corpus {
    /// Documents in all the indexes.
    pub documents: u32,
    /// Their total length in terms.
    pub total_len: u64,
    /// Per query term: the documents containing it in all the indexes, and its largest impact.
    pub terms: std::collections::HashMap<String, (u32, f32)>,
}

/// One index's part of a [`Corpus`] for a query ([`Bm25::corpus_terms`]): its documents, their
/// total length, and each distinct query term with the documents containing it.
pub type CorpusPart = (u32, u64, Vec<(String, u32)>);

/// A BM25 inverted index over documents with `u64` ids.
///
/// Document lengths, document frequencies, `N` and the average length always describe exactly
/// the documents indexed now: `remove` and `update` keep them exact (postings of removed
/// documents are skipped, then compacted away).
#[derive(Debug)]
pub struct Bm25 {
    analyzer: Analyzer,
    params: Params,
    dict: FastMap<Box<str>, u32>,
    terms: Vec<Term>,
    ids: FastMap<u64, u32>,
    docs: Vec<Doc>,
    /// Length of each internal document, `DEAD` once removed: what scoring reads, packed.
    lens: Vec<u32>,
    total_len: u64,
    /// Bumped by every change: cached impacts of an older epoch are stale.
    epoch: u64,
    /// Term of each word seen as written (`NO_TERM` for a stop word), so a word is lowercased
    /// and stemmed once, not at each occurrence (the parts of a parallel batch keep caches of
    /// their own); at most `WORD_CACHE` words, emptied when full (so that a stream of one-off
    /// tokens cannot keep the frequent words out for good) and when terms are renumbered.
    words: FastMap<Box<str>, u32>,
    scratch: Vec<u32>,
    scratch_counts: Vec<(u32, u32)>,
}

/// At most this many words in [`Bm25::words`] (about 5 MB); a full cache is emptied and
/// refills with the words that keep coming, the frequent ones first.
const WORD_CACHE: usize = 1 << 17;
const NO_TERM: u32 = u32::MAX;

const DEAD: u32 = u32::MAX;

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
            dict: FastMap::default(),
            terms: Vec::new(),
            ids: FastMap::default(),
            docs: Vec::new(),
            lens: Vec::new(),
            total_len: 0,
            epoch: 1,
            words: FastMap::default(),
            scratch: Vec::new(),
            scratch_counts: Vec::new(),
        })
    }

    /// The scoring parameters.
    #[must_use]
    pub fn params(&self) -> Params {
        self.params
    }

    /// The analyzer texts and queries go through.
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

    /// Heap bytes held by the index: postings, cached impacts, the forward index used for
    /// exact removal, document table, dictionary and word cache (allocator overhead not included).
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let terms: usize = self
            .terms
            .iter()
            .map(|t| {
                size_of::<Term>()
                    + t.text.len()
                    + (t.docs.capacity() + t.tfs.capacity()) * size_of::<u32>()
                    + t.impacts.read().impacts.capacity() * size_of::<f32>()
            })
            .sum();
        let docs: usize = self
            .docs
            .iter()
            .map(|d| size_of::<Doc>() + d.terms.len() * size_of::<(u32, u32)>())
            .sum();
        let dict = self.dict.capacity() * (size_of::<Box<str>>() + size_of::<u32>())
            + self.dict.keys().map(|k| k.len()).sum::<usize>();
        let words = self.words.capacity() * (size_of::<Box<str>>() + size_of::<u32>())
            + self.words.keys().map(|k| k.len()).sum::<usize>();
        let ids = self.ids.capacity() * (size_of::<u64>() + size_of::<u32>());
        terms + docs + dict + words + ids + self.lens.capacity() * size_of::<u32>()
    }

    /// Total number of terms over all documents (the sum of their lengths).
    #[must_use]
    pub fn token_count(&self) -> u64 {
        self.total_len
    }

    /// Whether a document has the id `id`.
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
        self.add_text(id, text);
        Ok(())
    }

    /// Indexes `texts[i]` under `ids[i]`, all or nothing: an id already indexed or repeated in
    /// the batch is refused before anything is added.
    ///
    /// # Errors
    /// [`Bm25Error::Duplicate`] for an id already indexed; [`Bm25Error::Config`] for an id
    /// given twice, or lengths that differ.
    pub fn add_batch<S: AsRef<str> + Sync>(&mut self, ids: &[u64], texts: &[S]) -> Result<()> {
        self.add_batch_until(ids, texts, &|| false)
    }

    /// [`Self::add_batch`] that asks `stop` (from any thread) while it analyses a large batch; once it returns true the call ends with [`Bm25Error::Interrupted`] and
    /// nothing is added.
    ///
    /// # Errors
    /// As [`Self::add_batch`], or [`Bm25Error::Interrupted`].
    pub fn add_batch_until<S: AsRef<str> + Sync>(
        &mut self,
        ids: &[u64],
        texts: &[S],
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Result<()> {
        self.check_new(ids, texts.len())?;
        if texts.len() < PARALLEL_DOCS {
            // Added one at a time, with no step to stop at: stopped before the first.
            if stop() {
                return Err(Bm25Error::Interrupted);
            }
            for (&id, text) in ids.iter().zip(texts) {
                self.add_text(id, text.as_ref());
            }
            return Ok(());
        }
        // Parts analysed on all cores, then merged in order: a part's terms get their index
        // ids in the order of their first occurrence, as one document after the other would.
        let analyzer = &self.analyzer;
        // Few parts (each part's distinct terms are looked up again when merged), two per
        // thread so that a slow part does not hold up the others.
        let size = texts
            .len()
            .div_ceil(2 * rayon::current_num_threads())
            .max(PART_DOCS);
        let parts: Option<Vec<Part>> = texts
            .par_chunks(size)
            .map(|texts| Part::analyze(analyzer, texts, stop))
            .collect();
        let parts = parts.ok_or(Bm25Error::Interrupted)?;
        let mut from = 0;
        for part in parts {
            let n = part.lens.len();
            self.insert_part(&ids[from..from + n], part);
            from += n;
        }
        Ok(())
    }

    /// [`Self::add_batch`] for documents already analyzed: `docs[i]` holds the terms of the
    /// document `ids[i]`, indexed as they are (as bm25s indexes token lists).
    ///
    /// # Errors
    /// As [`Self::add_batch`].
    pub fn add_batch_terms<S: AsRef<str>, D: AsRef<[S]>>(
        &mut self,
        ids: &[u64],
        docs: &[D],
    ) -> Result<()> {
        self.check_new(ids, docs.len())?;
        for (&id, doc) in ids.iter().zip(docs) {
            let mut terms = std::mem::take(&mut self.scratch);
            terms.clear();
            terms.extend(
                doc.as_ref()
                    .iter()
                    .map(|term| term_id(&mut self.dict, &mut self.terms, term.as_ref())),
            );
            self.index_terms(id, terms);
        }
        Ok(())
    }

    /// Refuses a batch of `n` documents whose `ids` are not `n` new, distinct ids.
    fn check_new(&self, ids: &[u64], n: usize) -> Result<()> {
        if ids.len() != n {
            return Err(Bm25Error::Config(format!(
                "{} ids for {n} documents",
                ids.len()
            )));
        }
        let mut seen = HashSet::with_capacity(ids.len());
        for &id in ids {
            if self.ids.contains_key(&id) {
                return Err(Bm25Error::Duplicate(id));
            }
            if !seen.insert(id) {
                // Not indexed yet: "use update" would not help.
                return Err(Bm25Error::Config(format!(
                    "id {id} is given twice in the batch; each document needs its own id"
                )));
            }
        }
        Ok(())
    }

    /// Analyses `text` and indexes it under `id`, which is not indexed yet. The terms are
    /// those of [`Analyzer::analyze`], found through the word cache.
    fn add_text(&mut self, id: u64, text: &str) {
        let mut terms = std::mem::take(&mut self.scratch);
        terms.clear();
        let Self {
            analyzer,
            dict,
            terms: table,
            words,
            ..
        } = self;
        term_ids(
            analyzer,
            words,
            text,
            |t| term_id(dict, table, t),
            &mut terms,
        );
        self.index_terms(id, terms);
    }

    /// Indexes the document `id` (not indexed yet) made of the term ids `terms`, in any order.
    fn index_terms(&mut self, id: u64, mut terms: Vec<u32>) {
        let len = terms.len() as u32;
        let mut counts = std::mem::take(&mut self.scratch_counts);
        counts.clear();
        counted(&mut terms, &mut counts);
        self.insert(id, len, Box::from(&counts[..]));
        self.scratch = terms;
        self.scratch_counts = counts;
    }

    /// Indexes the documents of `part` under `ids` (new ones), as `insert` one after the other
    /// would: a part's terms get their ids in the order of their first occurrence, and each
    /// posting list grows by the part's list at once (its documents come after all others,
    /// so lists stay sorted).
    fn insert_part(&mut self, ids: &[u64], part: Part) {
        self.epoch += 1;
        let base = self.docs.len() as u32;
        let to_index: Vec<u32> = part
            .terms
            .iter()
            .map(|t| term_id(&mut self.dict, &mut self.terms, t))
            .collect();
        for (&t, (docs, tfs)) in to_index.iter().zip(part.postings) {
            let term = &mut self.terms[t as usize];
            term.df += docs.len() as u32;
            term.docs.extend(docs.iter().map(|&d| base + d));
            term.tfs.extend_from_slice(&tfs);
        }
        let mut pairs = part.pairs;
        let mut from = 0;
        for (i, ((&id, &len), &end)) in ids.iter().zip(&part.lens).zip(&part.ends).enumerate() {
            let counts = &mut pairs[from..end as usize];
            from = end as usize;
            for (t, _) in counts.iter_mut() {
                *t = to_index[*t as usize];
            }
            counts.sort_unstable();
            self.docs.push(Doc {
                id,
                terms: Box::from(&*counts),
            });
            self.lens.push(len);
            self.ids.insert(id, base + i as u32);
            self.total_len += u64::from(len);
        }
    }

    fn insert(&mut self, id: u64, len: u32, terms: Box<[(u32, u32)]>) {
        self.epoch += 1;
        let doc = self.docs.len() as u32;
        for &(t, tf) in &terms {
            let term = &mut self.terms[t as usize];
            term.df += 1;
            term.docs.push(doc);
            term.tfs.push(tf);
        }
        self.docs.push(Doc { id, terms });
        self.lens.push(len);
        self.ids.insert(id, doc);
        self.total_len += u64::from(len);
    }

    /// Removes the document `id`.
    ///
    /// # Errors
    /// [`Bm25Error::NotFound`] if it is not indexed.
    pub fn remove(&mut self, id: u64) -> Result<()> {
        let doc = self.ids.remove(&id).ok_or(Bm25Error::NotFound(id))?;
        self.epoch += 1;
        let len = std::mem::replace(&mut self.lens[doc as usize], DEAD);
        self.total_len -= u64::from(len);
        let terms = std::mem::take(&mut self.docs[doc as usize].terms);
        for &(t, _) in &terms {
            let term = &mut self.terms[t as usize];
            term.df -= 1;
            term.dead += 1;
            if term.dead as usize * 2 > term.docs.len() && term.dead >= 8 {
                let mut kept = 0;
                for i in 0..term.docs.len() {
                    if self.lens[term.docs[i] as usize] != DEAD {
                        term.docs[kept] = term.docs[i];
                        term.tfs[kept] = term.tfs[i];
                        kept += 1;
                    }
                }
                term.docs.truncate(kept);
                term.tfs.truncate(kept);
                term.dead = 0;
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
        let lens = std::mem::take(&mut self.lens);
        let old_terms = std::mem::take(&mut self.terms);
        self.dict.clear();
        self.words.clear();
        self.ids.clear();
        self.total_len = 0;
        let mut remap: Vec<u32> = vec![u32::MAX; old_terms.len()];
        for (d, len) in docs.into_iter().zip(lens).filter(|&(_, len)| len != DEAD) {
            let terms: Box<[(u32, u32)]> = d
                .terms
                .iter()
                .map(|&(t, tf)| {
                    if remap[t as usize] == u32::MAX {
                        let text = &old_terms[t as usize].text;
                        remap[t as usize] = term_id(&mut self.dict, &mut self.terms, text);
                    }
                    (remap[t as usize], tf)
                })
                .collect();
            let mut terms = terms.into_vec();
            terms.sort_unstable();
            self.insert(d.id, len, terms.into_boxed_slice());
        }
    }

    /// Query terms with their multiplicity (a repeated query word counts again, as in bm25s).
    fn query_terms<'q>(&self, query: impl Into<Query<'q>>) -> Vec<(u32, f32)> {
        match query.into() {
            Query::Text(text) => self.term_weights(self.analyzer.analyze(text)),
            Query::Terms(terms) => self.term_weights(terms),
        }
    }

    /// [`Self::query_terms`] of terms already analyzed.
    /// In order of first occurrence; linear in the query's length (a query of every word of
    /// the vocabulary is one pass, not one per distinct term).
    fn term_weights<S: AsRef<str>>(&self, terms: impl IntoIterator<Item = S>) -> Vec<(u32, f32)> {
        let mut weights: Vec<(u32, f32)> = Vec::new();
        let mut at: FastMap<u32, usize> = FastMap::default();
        for token in terms {
            if let Some(&t) = self.dict.get(token.as_ref())
                && self.terms[t as usize].df > 0
            {
                let i = *at.entry(t).or_insert_with(|| {
                    weights.push((t, 0.0));
                    weights.len() - 1
                });
                weights[i].1 += 1.0;
            }
        }
        weights
    }

    /// `1 - b + b * len / avgdl` for the documents indexed now (call with at least one).
    fn length_norm(&self) -> impl Fn(u32) -> f32 + use<> {
        Self::norm_for(self.params, self.ids.len() as u32, self.total_len)
    }

    /// `1 - b + b * len / avgdl` for `documents` documents of `total_len` terms in all.
    fn norm_for(params: Params, documents: u32, total_len: u64) -> impl Fn(u32) -> f32 + use<> {
        let avgdl = (total_len as f64 / f64::from(documents.max(1))) as f32;
        let (b_avg, one_b) = (params.b / avgdl.max(f32::MIN_POSITIVE), 1.0 - params.b);
        move |len: u32| one_b + b_avg * len as f32
    }

    /// `term`'s impacts under `norm`, computed now (not cached).
    fn impacts_with(&self, term: &Term, norm: &dyn Fn(u32) -> f32) -> Vec<f32> {
        let p = self.params;
        term.docs
            .iter()
            .zip(&term.tfs)
            .map(|(&doc, &tf)| match self.lens[doc as usize] {
                DEAD => 0.0,
                len => p.tfc(tf as f32, norm(len)),
            })
            .collect()
    }

    /// Computes every term's cached impacts now (otherwise each term's are computed by the
    /// first search that needs them after a change): call after a bulk load.
    pub fn warm(&self) {
        if self.ids.is_empty() {
            return;
        }
        let norm = self.length_norm();
        for term in &self.terms {
            drop(self.impacts(term, &norm));
        }
    }

    /// The impacts of `term` for the current epoch, computed now if stale.
    fn impacts<'a>(&self, term: &'a Term, norm: &dyn Fn(u32) -> f32) -> Impacts<'a> {
        let guard = term.impacts.read();
        if guard.epoch == self.epoch {
            return guard;
        }
        drop(guard);
        let mut guard = term.impacts.write();
        if guard.epoch != self.epoch {
            let p = self.params;
            let cached = &mut *guard;
            cached.impacts.clear();
            cached.impacts.extend(term.docs.iter().zip(&term.tfs).map(
                |(&doc, &tf)| match self.lens[doc as usize] {
                    DEAD => 0.0,
                    len => p.tfc(tf as f32, norm(len)),
                },
            ));
            cached.max = cached.impacts.iter().fold(0.0f32, |m, &x| m.max(x));
            cached.epoch = self.epoch;
        }
        RwLockWriteGuard::downgrade(guard)
    }

    /// Live documents as `(id, length, [(term, tf)])`, for saving.
    pub(crate) fn export(&self) -> Export<'_> {
        let terms = self.terms.iter().map(|t| &*t.text).collect();
        let docs = self
            .docs
            .iter()
            .zip(&self.lens)
            .filter(|&(_, &len)| len != DEAD)
            .map(|(d, &len)| (d.id, len, &*d.terms))
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

type Impacts<'a> = RwLockReadGuard<'a, Cached>;

/// Batches of at least this many documents are analysed on all cores, in two parts per
/// thread of at least `PART_DOCS` documents.
const PARALLEL_DOCS: usize = 4096;
const PART_DOCS: usize = 2048;
/// A large batch's analysis asks whether to stop every this many documents.
const STOP_EVERY: usize = 512;

/// Appends the term ids of `text` to `out`: the terms of [`Analyzer::analyze`], each word
/// through the cache `words` (lowercased and stemmed at its first sight only), each term's id
/// from `id_of`.
fn term_ids(
    analyzer: &Analyzer,
    words: &mut FastMap<Box<str>, u32>,
    text: &str,
    mut id_of: impl FnMut(&str) -> u32,
    out: &mut Vec<u32>,
) {
    pieces(text, analyzer.config(), |piece| match piece {
        Piece::Word(word) => {
            let t = words.get(word).copied().unwrap_or_else(|| {
                let t = analyzer
                    .word_term(word)
                    .map_or(NO_TERM, |term| id_of(&term));
                if words.len() >= WORD_CACHE {
                    words.clear();
                }
                words.insert(word.into(), t);
                t
            });
            if t != NO_TERM {
                out.push(t);
            }
        }
        Piece::Compound(compound) => out.push(id_of(&analyzer.compound_term(compound))),
    });
}

/// Appends the `(term, count)` pairs of the term ids `terms` (sorted in place) to `out`, in
/// term order.
fn counted(terms: &mut [u32], out: &mut Vec<(u32, u32)>) {
    terms.sort_unstable();
    let first = out.len();
    for &t in terms.iter() {
        match out[first..].last_mut() {
            Some((last, n)) if *last == t => *n += 1,
            _ => out.push((t, 1)),
        }
    }
}

/// Documents analysed apart from the index (one part of a parallel batch), their terms
/// numbered in the order of their first occurrence in the part.
struct Part {
    terms: Vec<Box<str>>,
    /// Each term's postings in the part: documents (numbered from 0 in the part) and tfs.
    postings: Vec<(Vec<u32>, Vec<u32>)>,
    /// The `(part term, tf)` pairs of every document, one after the other; document `i`'s
    /// end in `ends[i]`, its length in `lens[i]`.
    pairs: Vec<(u32, u32)>,
    ends: Vec<u32>,
    lens: Vec<u32>,
}

impl Part {
    /// The part of `texts`, or None once `stop` returns true (asked every `STOP_EVERY`
    /// documents).
    fn analyze<S: AsRef<str>>(
        analyzer: &Analyzer,
        texts: &[S],
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Option<Self> {
        let mut dict: FastMap<Box<str>, u32> = FastMap::default();
        let mut words = FastMap::default();
        let mut terms: Vec<Box<str>> = Vec::new();
        let mut ids = Vec::new();
        let mut part = Part {
            terms: Vec::new(),
            postings: Vec::new(),
            pairs: Vec::new(),
            ends: Vec::with_capacity(texts.len()),
            lens: Vec::with_capacity(texts.len()),
        };
        for (i, text) in texts.iter().enumerate() {
            if i % STOP_EVERY == 0 && stop() {
                return None;
            }
            ids.clear();
            let id_of = |t: &str| intern(&mut dict, &mut terms, t, |text| text);
            term_ids(analyzer, &mut words, text.as_ref(), id_of, &mut ids);
            let doc = part.lens.len() as u32;
            part.lens.push(ids.len() as u32);
            let first = part.pairs.len();
            counted(&mut ids, &mut part.pairs);
            part.ends.push(part.pairs.len() as u32);
            part.postings.resize_with(terms.len(), Default::default);
            for &(t, tf) in &part.pairs[first..] {
                let (docs, tfs) = &mut part.postings[t as usize];
                docs.push(doc);
                tfs.push(tf);
            }
        }
        part.terms = terms;
        Some(part)
    }
}

/// The id of `term` in the index's dictionary, a new one (with an empty posting list) if it
/// is not there yet.
fn term_id(dict: &mut FastMap<Box<str>, u32>, terms: &mut Vec<Term>, term: &str) -> u32 {
    intern(dict, terms, term, |text| Term {
        text,
        ..Term::default()
    })
}

/// The id of `term` in `dict`; a new one, the next index of `table` (where `new` makes its
/// entry from the text), if it is not there yet.
fn intern<T>(
    dict: &mut FastMap<Box<str>, u32>,
    table: &mut Vec<T>,
    term: &str,
    new: impl FnOnce(Box<str>) -> T,
) -> u32 {
    // Most terms are known: the key is allocated only for a new one.
    if let Some(&t) = dict.get(term) {
        return t;
    }
    let t = table.len() as u32;
    let text: Box<str> = term.into();
    table.push(new(text.clone()));
    dict.insert(text, t);
    t
}
