//! Top-k search: MaxScore over the query's posting lists, a dense pass for queries of many
//! postings, and the exhaustive reference both must agree with.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

use super::{Bm25, Bm25Hit, Corpus, CorpusPart, DEAD, Impacts, Query};

/// A query whose lists hold at least `1 / DENSE_FRACTION` postings per document is scored
/// into a dense array instead of with pruning.
const DENSE_FRACTION: usize = 2;

/// Score upper bounds are inflated by this much so float rounding never prunes a winner.
const SLACK: f32 = 1.0 + 1e-5;

impl Bm25 {
    /// The `k` best documents for `query` with a score of at least `min_score`, best first
    /// (equal scores: the most recently added first).
    ///
    /// Exact, with MaxScore pruning term at a time (Turtle and Flood's MaxScore in the
    /// accumulator form of Moffat and Zobel's "continue"): terms are scored from the highest
    /// upper bound down into an accumulator; once the bounds of the terms left cannot lift a new
    /// document above the current k-th score, the rest only probe the documents already
    /// gathered that can still reach it. Long queries full of common words then cost little
    /// more than their rare words.
    /// `query` is a text or its analyzed terms ([`Query`]).
    #[must_use]
    pub fn search<'q>(
        &self,
        query: impl Into<Query<'q>>,
        k: usize,
        min_score: f32,
    ) -> Vec<Bm25Hit> {
        self.search_with(&self.query_terms(query), k, min_score, Path::Any)
    }

    /// [`Self::search`] for a query already analyzed into `terms` (as
    /// [`Analyzer::analyze`](crate::Analyzer::analyze) makes them): terms are looked up as
    /// given, a repeated term counts again.
    #[must_use]
    pub fn search_terms<S: AsRef<str>>(
        &self,
        terms: impl IntoIterator<Item = S>,
        k: usize,
        min_score: f32,
    ) -> Vec<Bm25Hit> {
        self.search_with(&self.term_weights(terms), k, min_score, Path::Any)
    }

    /// [`Self::search`] among the documents whose id `keep` accepts: exact, with the filter
    /// applied as documents are selected (so `k` hits come back whenever `k` matching
    /// documents score above `min_score`). `keep` is asked only about documents that match
    /// the query, a text or its analyzed terms ([`Query`]).
    #[must_use]
    pub fn search_filtered<'q>(
        &self,
        query: impl Into<Query<'q>>,
        k: usize,
        min_score: f32,
        keep: &mut dyn FnMut(u64) -> bool,
    ) -> Vec<Bm25Hit> {
        self.search_with(&self.query_terms(query), k, min_score, Path::Filtered(keep))
    }

    /// [`Self::search`] that never takes the dense path (queries with many postings are
    /// scored into a dense array): for tests of the pruning.
    #[doc(hidden)]
    #[must_use]
    pub fn search_pruned(&self, query: &str, k: usize, min_score: f32) -> Vec<Bm25Hit> {
        self.search_with(&self.query_terms(query), k, min_score, Path::Pruned)
    }

    fn search_with(
        &self,
        query_terms: &[(u32, f32)],
        k: usize,
        min_score: f32,
        path: Path<'_>,
    ) -> Vec<Bm25Hit> {
        self.search_scored(query_terms, k, min_score, path, None)
    }

    fn search_scored(
        &self,
        query_terms: &[(u32, f32)],
        k: usize,
        min_score: f32,
        path: Path<'_>,
        corpus: Option<&Corpus>,
    ) -> Vec<Bm25Hit> {
        let n = self.ids.len() as u32;
        if k == 0 || n == 0 {
            return Vec::new();
        }
        // No more hits than documents: a huge `k` allocates nothing it cannot fill.
        let k = k.min(n as usize);
        let mut term_ids: Vec<u32> = query_terms.iter().map(|(t, _)| *t).collect();
        term_ids.sort_unstable();
        let lists = self.lists(query_terms, n, corpus);
        if let Path::Filtered(keep) = path {
            let mut keep_doc = |doc: u32| keep(self.docs[doc as usize].id);
            // Pruning bounds assume every document may enter: a filtered search scores every
            // posting (in list order, so the same sums as the unfiltered search makes).
            let top = if let [list] = &lists[..] {
                single_list(list, k, min_score, &mut keep_doc)
            } else {
                SCRATCH.with_borrow_mut(|scratch| {
                    let docs = self.docs.len();
                    dense_top(
                        &lists,
                        docs,
                        k,
                        min_score,
                        &mut scratch.dense,
                        &mut keep_doc,
                    )
                })
            };
            return self.hits(top, &term_ids);
        }
        if let [list] = &lists[..] {
            // One term: its postings are the candidates; no accumulator needed.
            return self.hits(single_list(list, k, min_score, &mut |_| true), &term_ids);
        }
        let dense = matches!(path, Path::Any);
        let postings: usize = lists.iter().map(|l| l.postings.len()).sum();
        let docs = self.docs.len();
        SCRATCH.with_borrow_mut(|scratch| {
            let top = if dense && postings >= docs / DENSE_FRACTION {
                // So many postings (a long query of common words) that pruning would cost
                // more than it saves.
                dense_top(&lists, docs, k, min_score, &mut scratch.dense, &mut |_| {
                    true
                })
            } else {
                max_score_top(&lists, docs, k, min_score, scratch)
            };
            self.hits(top, &term_ids)
        })
    }

    /// The query's posting lists with their weights and bounds, highest bound first: scored
    /// with this index's statistics (`n` documents), or with `corpus`'s.
    fn lists(&self, query_terms: &[(u32, f32)], n: u32, corpus: Option<&Corpus>) -> Vec<List<'_>> {
        let p = self.params;
        let mut lists: Vec<List<'_>> = match corpus {
            None => {
                let norm = self.length_norm();
                query_terms
                    .iter()
                    .map(|&(t, w)| {
                        let term = &self.terms[t as usize];
                        let weight = w * p.idf(term.df, n);
                        let impacts = self.impacts(term, &norm);
                        // The largest impact of the list now.
                        let bound = (weight * impacts.max * SLACK).max(0.0);
                        List {
                            postings: &term.docs[..],
                            impacts: ListImpacts::Cached(impacts),
                            weight,
                            bound,
                        }
                    })
                    .collect()
            }
            Some(c) => {
                let norm = Self::norm_for(p, c.documents, c.total_len);
                query_terms
                    .iter()
                    .map(|&(t, w)| {
                        let term = &self.terms[t as usize];
                        let (df, max) = c.terms.get(&*term.text).copied().unwrap_or((term.df, 0.0));
                        let weight = w * p.idf(df, c.documents);
                        let bound = (weight * max * SLACK).max(0.0);
                        List {
                            postings: &term.docs[..],
                            impacts: ListImpacts::Corpus(self.impacts_with(term, &norm)),
                            weight,
                            bound,
                        }
                    })
                    .collect()
            }
        };
        lists.sort_by(|a, b| b.bound.total_cmp(&a.bound));
        lists
    }

    /// This index's part of a corpus of several indexes, for `query`: its documents, their
    /// total length, and each distinct query term (in query order) with the number of
    /// documents here containing it (0 for a term it lacks). Summed over the indexes they
    /// make a [`Corpus`] (with [`Self::corpus_max_impacts`]).
    #[must_use]
    pub fn corpus_terms<'q>(&self, query: impl Into<Query<'q>>) -> CorpusPart {
        let analyzed;
        let tokens: &[String] = match query.into() {
            Query::Text(text) => {
                analyzed = self.analyzer.analyze(text);
                &analyzed
            }
            Query::Terms(terms) => terms,
        };
        let mut terms: Vec<(String, u32)> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for token in tokens {
            if !seen.insert(token) {
                continue;
            }
            let df = self
                .dict
                .get(token.as_str())
                .map_or(0, |&t| self.terms[t as usize].df);
            terms.push((token.clone(), df));
        }
        (self.ids.len() as u32, self.total_len, terms)
    }

    /// The largest impact (TF part) of each of `terms` over this index's documents when the
    /// corpus has `documents` documents of `total_len` terms in all (0 for a term it lacks).
    #[must_use]
    pub fn corpus_max_impacts(&self, terms: &[String], documents: u32, total_len: u64) -> Vec<f32> {
        let norm = Self::norm_for(self.params, documents, total_len);
        terms
            .iter()
            .map(|t| match self.dict.get(t.as_str()) {
                Some(&i) => self
                    .impacts_with(&self.terms[i as usize], &norm)
                    .iter()
                    .fold(0.0f32, |m, &x| m.max(x)),
                None => 0.0,
            })
            .collect()
    }

    /// [`Self::search`] (with `keep`, [`Self::search_filtered`]) scoring as one index holding
    /// the documents of every index of `corpus` would: the same scores and order for the
    /// documents of this index, so the best `k` of each index, merged, are the corpus's.
    #[must_use]
    pub fn search_corpus<'q>(
        &self,
        query: impl Into<Query<'q>>,
        k: usize,
        min_score: f32,
        corpus: &Corpus,
        keep: Option<&mut dyn FnMut(u64) -> bool>,
    ) -> Vec<Bm25Hit> {
        let path = match keep {
            Some(keep) => Path::Filtered(keep),
            None => Path::Any,
        };
        self.search_scored(&self.query_terms(query), k, min_score, path, Some(corpus))
    }

    /// The selected documents as hits, best first.
    fn hits(&self, heap: BinaryHeap<Scored>, query: &[u32]) -> Vec<Bm25Hit> {
        heap.into_sorted_vec()
            .into_iter()
            .map(|e| self.hit(e.doc, e.score, query))
            .collect()
    }

    /// The hit for `doc`; `query` holds the query's term ids in ascending order.
    fn hit(&self, doc: u32, score: f32, query: &[u32]) -> Bm25Hit {
        let d = &self.docs[doc as usize];
        // Both lists ascend: one merge finds the shared terms.
        let mut terms = Vec::new();
        let mut q = query.iter().peekable();
        for &(t, _) in &d.terms {
            while q.next_if(|&&x| x < t).is_some() {}
            match q.peek() {
                Some(&&x) if x == t => terms.push(self.terms[t as usize].text.to_string()),
                Some(_) => {}
                None => break,
            }
        }
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
            for (&doc, &tf) in term.docs.iter().zip(&term.tfs) {
                let len = self.lens[doc as usize];
                if len != DEAD {
                    let norm =
                        (1.0 - f64::from(p.b) + f64::from(p.b) * f64::from(len) / avgdl) as f32;
                    *acc.entry(doc).or_insert(0.0) += weight * p.tfc(tf as f32, norm);
                }
            }
        }
        let mut all: Vec<Scored> = acc
            .into_iter()
            .filter(|&(_, s)| s >= min_score && s > 0.0)
            .map(|(doc, score)| Scored { score, doc })
            .collect();
        all.sort();
        all.truncate(k);
        let mut terms: Vec<u32> = q.iter().map(|(t, _)| *t).collect();
        terms.sort_unstable();
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
}

/// How [`Bm25::search_with`] selects: either path by the query's postings, pruning only (for
/// tests), or scoring every posting for a filter.
enum Path<'a> {
    Any,
    Pruned,
    Filtered(&'a mut dyn FnMut(u64) -> bool),
}

/// One query term's postings, their impacts, the term's weight and the most it adds to a
/// document's score.
struct List<'a> {
    postings: &'a [u32],
    impacts: ListImpacts<'a>,
    weight: f32,
    bound: f32,
}

/// A list's impacts: this index's cached ones, or computed for a [`Corpus`] search.
enum ListImpacts<'a> {
    Cached(Impacts<'a>),
    Corpus(Vec<f32>),
}

impl std::ops::Deref for ListImpacts<'_> {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match self {
            ListImpacts::Cached(c) => &c.impacts,
            ListImpacts::Corpus(v) => v,
        }
    }
}

/// The best `k` documents of one list that `keep` accepts.
fn single_list(
    list: &List<'_>,
    k: usize,
    min_score: f32,
    keep: &mut dyn FnMut(u32) -> bool,
) -> BinaryHeap<Scored> {
    let mut heap = BinaryHeap::with_capacity(k + 1);
    for (&doc, &impact) in list.postings.iter().zip(list.impacts.iter()) {
        let score = list.weight * impact;
        if impact == 0.0 || score < min_score || score <= 0.0 || !enters(&heap, k, score, doc) {
            continue;
        }
        if !keep(doc) {
            continue;
        }
        push_top(&mut heap, k, Scored { score, doc });
    }
    heap
}

/// Every list added into a dense score array (in list order, so the same sums as pruning
/// makes), then the best `k` that `keep` accepts selected block by block.
fn dense_top(
    lists: &[List<'_>],
    docs: usize,
    k: usize,
    min_score: f32,
    dense: &mut Vec<f32>,
    keep: &mut dyn FnMut(u32) -> bool,
) -> BinaryHeap<Scored> {
    dense.clear();
    dense.resize(docs, 0.0);
    // A slice, not the Vec: the loops below keep its bounds in registers.
    let dense = dense.as_mut_slice();
    for l in lists {
        for (&doc, &impact) in l.postings.iter().zip(l.impacts.iter()) {
            dense[doc as usize] += l.weight * impact;
        }
    }
    let mut heap = BinaryHeap::with_capacity(k + 1);
    // As elsewhere: scores under `min_score` or not above 0 are left out.
    let mut floor = min_score;
    for (b, block) in dense.chunks(BLOCK).enumerate() {
        let max = block_max(block);
        if max < floor || max <= 0.0 {
            continue;
        }
        for (i, &score) in block.iter().enumerate() {
            if score >= floor && score > 0.0 {
                let doc = (b * BLOCK + i) as u32;
                if !enters(&heap, k, score, doc) || !keep(doc) {
                    continue;
                }
                push_top(&mut heap, k, Scored { score, doc });
                if heap.len() == k {
                    floor = floor.max(heap.peek().expect("full").score);
                }
            }
        }
    }
    heap
}

/// MaxScore: lists are read whole, highest bound first, into the accumulator ([`gather`])
/// until what the lists left can add cannot lift a new document above the k-th score; those
/// lists then only probe the documents gathered that can still reach it ([`probe`]).
fn max_score_top(
    lists: &[List<'_>],
    docs: usize,
    k: usize,
    min_score: f32,
    scratch: &mut Scratch,
) -> BinaryHeap<Scored> {
    if scratch.acc.len() < docs {
        scratch.acc.resize(docs, f32::NAN);
    }
    // rest[i]: the most the lists after i can add.
    let mut rest = vec![0.0f32; lists.len()];
    for i in (0..lists.len().saturating_sub(1)).rev() {
        rest[i] = (rest[i + 1] + lists[i + 1].bound) * SLACK;
    }
    let (theta, probe_from) = gather(lists, &rest, k, scratch);
    // A slice, not the Vec: the loops below keep its bounds in registers.
    let (acc, touched) = (scratch.acc.as_mut_slice(), &mut scratch.touched);
    if probe_from < lists.len() {
        probe(
            lists,
            &rest,
            probe_from,
            theta,
            k,
            acc,
            touched,
            &mut scratch.kth,
        );
    }
    let mut heap = BinaryHeap::with_capacity(k + 1);
    for &doc in touched.iter() {
        let score = acc[doc as usize];
        acc[doc as usize] = f32::NAN;
        if score < min_score || score <= 0.0 {
            continue;
        }
        push_top(&mut heap, k, Scored { score, doc });
    }
    touched.clear();
    heap
}

/// Reads lists whole into the accumulator, admitting a new document only if it can still
/// reach the k-th score `theta`. Returns theta and the first list not read (the rest cannot
/// bring in new documents).
fn gather(lists: &[List<'_>], rest: &[f32], k: usize, scratch: &mut Scratch) -> (f32, usize) {
    let (acc, touched) = (scratch.acc.as_mut_slice(), &mut scratch.touched);
    let mut theta = f32::NEG_INFINITY;
    // The most any gathered document can have scored so far: theta (the k-th gathered score)
    // can only beat rest[i] once this does.
    let mut seen_ub = 0.0f32;
    let mut kth_at = 0;
    for (i, l) in lists.iter().enumerate() {
        let weight = l.weight;
        // A document first seen in this list has nothing from the lists before (they were
        // read whole), so at most `add + rest[i]` in the end: below theta it can never enter
        // the top k and is not gathered. Contributions are never negative, so theta (the k-th
        // gathered score) only rises.
        let admit = theta - rest[i];
        // Branch-free: whether a posting's document is new is a coin toss in the middle
        // lists, too random for the branch predictor.
        let base = touched.len();
        touched.resize(base + l.postings.len(), 0);
        let (out, mut len) = (&mut touched[base..], 0);
        for (&doc, &impact) in l.postings.iter().zip(l.impacts.iter()) {
            let slot = &mut acc[doc as usize];
            let add = weight * impact;
            // A removed document has impact 0 and never enters.
            #[allow(clippy::needless_bitwise_bool)] // no branch: see above
            let enter = slot.is_nan() & (add >= admit) & (impact != 0.0);
            // A new document that does not enter stays NaN (NaN + add).
            *slot = if enter { add } else { *slot + add };
            out[len] = doc;
            len += usize::from(enter);
        }
        touched.truncate(base + len);
        seen_ub += l.bound;
        // The k-th score costs a pass over what is gathered: only worth it when a list is
        // left and theta could pass what the lists after the next can add (no gathered
        // document has more than `seen_ub`), so that it ends this phase or keeps new
        // documents of the next list out.
        if i + 1 < lists.len()
            && touched.len() >= k
            && touched.len() != kth_at
            && rest[i + 1] < seen_ub
        {
            theta = kth_score(acc, touched, k, &mut scratch.kth);
            kth_at = touched.len();
        }
        if rest[i] < theta {
            return (theta, i + 1);
        }
    }
    (theta, lists.len())
}

/// Adds the lists from `from` on to the gathered documents that can still reach `theta`,
/// dropping those that fall behind as theta rises.
#[allow(clippy::too_many_arguments)]
fn probe(
    lists: &[List<'_>],
    rest: &[f32],
    from: usize,
    mut theta: f32,
    k: usize,
    acc: &mut [f32],
    touched: &mut Vec<u32>,
    kth: &mut Vec<f32>,
) {
    // Only gathered documents that can still reach theta.
    let keep_above = |floor: f32, acc: &mut [f32], touched: &mut Vec<u32>| {
        touched.retain(|&doc| {
            acc[doc as usize] >= floor || {
                acc[doc as usize] = f32::NAN;
                false
            }
        });
    };
    keep_above(theta - rest[from - 1], acc, touched);
    let mut sorted = false;
    for (j, l) in lists.iter().enumerate().skip(from) {
        let (postings, impacts, weight) = (l.postings, &l.impacts[..], l.weight);
        if touched.len().saturating_mul(4) < postings.len() {
            // Few candidates, a long list: look each candidate up, in doc order, galloping
            // from the previous one.
            if !sorted {
                touched.sort_unstable();
                sorted = true;
            }
            let mut at = 0usize;
            for &doc in touched.iter() {
                at = gallop(postings, at, doc);
                match postings.get(at) {
                    Some(&found) if found == doc => acc[doc as usize] += weight * impacts[at],
                    Some(_) => {}
                    None => break,
                }
            }
        } else {
            // Otherwise one pass over the list, adding to candidates only (NaN + x stays
            // NaN, so non-candidates need no test).
            for (&doc, &impact) in postings.iter().zip(impacts.iter()) {
                acc[doc as usize] += weight * impact;
            }
        }
        // Candidates that the lists left cannot lift to the k-th score drop out.
        if j + 1 < lists.len() && touched.len() > k {
            theta = theta.max(kth_score(acc, touched, k, kth));
            keep_above(theta - rest[j], acc, touched);
        }
    }
}

/// Per-thread accumulator: a score per internal document (NaN: not gathered) and the
/// documents gathered, so a search touches only what it scores.
#[derive(Default)]
struct Scratch {
    acc: Vec<f32>,
    /// Scores of every document, for queries with many postings.
    dense: Vec<f32>,
    touched: Vec<u32>,
    kth: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Whether `(score, doc)` would enter the `k` best in `heap` (asked before a filter, which
/// costs more).
#[inline]
fn enters(heap: &BinaryHeap<Scored>, k: usize, score: f32, doc: u32) -> bool {
    heap.len() < k || Scored { score, doc } < *heap.peek().expect("full")
}

/// Keeps the `k` best entries in `heap` (whose top is the worst kept).
fn push_top(heap: &mut BinaryHeap<Scored>, k: usize, e: Scored) {
    if heap.len() < k {
        heap.push(e);
    } else if e < *heap.peek().expect("full") {
        heap.pop();
        heap.push(e);
    }
}

/// Scores per block of the dense selection, skipped whole when below the k-th score.
const BLOCK: usize = 64;

/// The largest of `block`'s scores (never NaN): eight lanes of `if s > m`, which (unlike
/// `f32::max` with its NaN rule) the compiler turns into packed max instructions.
fn block_max(block: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut parts = block.chunks_exact(8);
    for part in &mut parts {
        for (m, &s) in lanes.iter_mut().zip(part) {
            *m = if s > *m { s } else { *m };
        }
    }
    parts
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &s| if s > m { s } else { m })
}

/// The first index at or after `from` whose document is not below `doc` (`postings` sorted
/// by document): exponential steps from `from`, then a binary search in the last step.
fn gallop(postings: &[u32], from: usize, doc: u32) -> usize {
    let mut lo = from;
    let mut step = 1;
    while lo + step < postings.len() && postings[lo + step] < doc {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step + 1).min(postings.len());
    lo + postings[lo..hi].partition_point(|&at| at < doc)
}

/// The `k`-th best score among the gathered documents (a lower bound of the final k-th).
/// One pass that keeps the best `k` sorted in `best` (a score enters only above the current
/// k-th, rare after the first few); a large `k` selects instead.
fn kth_score(acc: &[f32], touched: &[u32], k: usize, best: &mut Vec<f32>) -> f32 {
    best.clear();
    if k > 64 {
        best.extend(touched.iter().map(|&d| acc[d as usize]));
        let (_, kth, _) = best.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        return *kth;
    }
    best.extend(touched[..k].iter().map(|&d| acc[d as usize]));
    best.sort_unstable_by(|a, b| b.total_cmp(a));
    let mut floor = best[k - 1];
    for &d in &touched[k..] {
        let s = acc[d as usize];
        if s > floor {
            let at = best.partition_point(|&x| x >= s);
            best.insert(at, s);
            best.pop();
            floor = best[k - 1];
        }
    }
    floor
}

/// A scored document; `Ord` puts the better one first (higher score, then newer).
#[derive(Debug, Clone, Copy)]
struct Scored {
    score: f32,
    doc: u32,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(other.doc.cmp(&self.doc))
    }
}
