//! The imesde engine: texts embedded as they arrive into a bounded sharded ring, searched
//! exactly by meaning, by keywords (BM25) or both, watched by standing queries, labelled with
//! semantic ids, saved and restored whole.
//!
//! This is the one core crate that combines the others (`imesde-ring`, `imesde-embed`,
//! `imesde-bm25`, `imesde-rq`); the Python binding wraps it and adds only what Python needs.
//!
//! ```no_run
//! use std::path::Path;
//! use std::sync::Arc;
//! use imesde_embed::{Embedder, EmbedderConfig, load_runtime};
//! use imesde_engine::{Engine, TextModel};
//! use imesde_ring::{IvfConfig, Attributes, Filter, RingConfig, Storage};
//!
//! load_runtime(Path::new("/path/to/libonnxruntime.so"))?;
//! let embedder = Embedder::new(
//!     Path::new("model.onnx"),
//!     Path::new("tokenizer.json"),
//!     EmbedderConfig::default(),
//! )?;
//! let model = Arc::new(TextModel::new(embedder));
//! let ring = RingConfig { dim: model.embedder().dim(), num_shards: 16, shard_size: 1024, storage: Storage::F32 };
//! let engine = Engine::new(ring, Some(model), true)?;
//! let texts = ["kernel: out of memory", "sshd: accepted publickey"].map(std::sync::Arc::from);
//! engine.ingest_texts(&texts, Attributes::default(), &mut || false)?;
//! let hits = engine.search_text("process killed by the OOM killer", 1, &Filter::default(), &mut || false)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod error;
pub mod fork;
mod inbox;
mod labeler;
#[cfg(feature = "bm25")]
mod lexical;
mod model;
mod snapshot;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use imesde_ring::{
    Attributes, BatchResult, Event, Filter, Hit, Item, IvfConfig, Metadata, MetadataUpdate, Ring,
    RingConfig, StandingSpec, Value,
};
#[cfg(feature = "bm25")]
use parking_lot::Mutex;
use parking_lot::RwLock;

pub use error::{EngineError, Result};
// The crates whose types the engine's signatures take (`RingConfig`, `Attributes`, `Filter`,
// `Predicate`, `Embedder`): a dependency on this crate alone reaches them.
pub use imesde_embed;
pub use imesde_ring;
pub use inbox::Inbox;
#[cfg(feature = "rq")]
pub use labeler::RqLabeler;
pub use labeler::{IdFormat, IdStore, IdStoreState, Labeler, SEMANTIC_ID};
pub use model::{RecordedSettings, TextModel, same_model};
pub use snapshot::Manifest;

#[cfg(feature = "bm25")]
pub use imesde_bm25::{Corpus, CorpusPart, Fusion, Query};
#[cfg(feature = "bm25")]
pub use lexical::LexicalConfig;

/// A standing query's threshold: a cosine score, or a percentile of the scores of the items
/// held when it is registered (`Percentile(99.0)`: the score above which 1 % of them fall).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// A cosine score an item must reach.
    Score(f32),
    /// A percentile (0 to 100) of the scores of the items held now.
    Percentile(f64),
}

impl std::str::FromStr for Threshold {
    type Err = EngineError;
    /// A percentile written `"pNN"`: `"p99"`, `"p99.9"` (from 0 up to, not including, 100).
    fn from_str(spec: &str) -> Result<Self> {
        // Digits with an optional fraction: no sign, exponent, spaces or underscores.
        let plain = |p: &&str| {
            let mut parts = p.splitn(2, '.');
            let whole = parts.next().unwrap_or("");
            let frac = parts.next();
            let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
            !p.is_empty() && p != &"." && digits(whole) && frac.is_none_or(digits)
        };
        spec.strip_prefix('p')
            .filter(plain)
            .and_then(|p| p.parse::<f64>().ok())
            .filter(|p| (0.0..100.0).contains(p))
            .map(Threshold::Percentile)
            .ok_or_else(|| {
                EngineError::Invalid(format!(
                    "threshold {spec:?} is not a percentile like \"p99\" or \"p99.9\""
                ))
            })
    }
}

/// What an ingest stored: the items' ids, and the standing queries' events (item order, then
/// subscription order).
#[derive(Debug, Clone, PartialEq)]
pub struct Ingested {
    /// The ids the items got, in batch order (none for an empty batch).
    pub ids: Range<u64>,
    /// The events of the standing queries the items matched.
    pub events: Vec<Event>,
}

/// The engine. All methods take `&self`; it is `Send + Sync`, and ingestion, search and
/// snapshots run from any number of threads at once.
#[derive(Debug)]
pub struct Engine {
    ring: Arc<Ring>,
    model: Option<Arc<TextModel>>,
    #[cfg(feature = "bm25")]
    lexical: Option<Mutex<lexical::Lexical>>,
    labeler: RwLock<Option<Arc<dyn Labeler>>>,
}

/// Lists deeper than `k` let fusion promote what only one side ranks well.
#[cfg(feature = "bm25")]
fn hybrid_depth(k: usize) -> usize {
    k.saturating_mul(5).max(50)
}

/// A standing query's filter: its time window would be ignored (events are of new items).
fn no_time_window(filter: &Filter) -> Result<()> {
    if filter.since.is_some() || filter.until.is_some() {
        return Err(EngineError::Invalid(
            "a standing query takes no time window (since / until): it matches the items \
             ingested from now on"
                .into(),
        ));
    }
    Ok(())
}

/// A metadata update's values, as ingest checks an item's ([`Metadata::check`]).
fn check_update(update: &MetadataUpdate) -> Result<()> {
    update.check().map_err(|reason| {
        EngineError::Ring(imesde_ring::RingError::Metadata {
            what: "metadata".into(),
            reason,
        })
    })
}

/// A hybrid search's `alpha`, when given, is a weight in 0..=1.
#[cfg(feature = "bm25")]
fn check_alpha(alpha: Option<f32>) -> Result<()> {
    match alpha {
        Some(a) if !(0.0..=1.0).contains(&a) => Err(EngineError::Invalid(format!(
            "alpha must be between 0 and 1, got {a}"
        ))),
        _ => Ok(()),
    }
}

impl Engine {
    /// An engine with a ring of `ring`'s shape (its `dim` must be the model's), embedding texts
    /// with `model` (None: vectors only), keeping a BM25 index with the ring when `lexical`.
    ///
    /// # Errors
    /// A ring that cannot be made, a dimension other than the model's, or `lexical` without
    /// the `bm25` feature.
    pub fn new(ring: RingConfig, model: Option<Arc<TextModel>>, lexical: bool) -> Result<Self> {
        #[cfg(feature = "bm25")]
        return Self::with_lexical(ring, model, lexical.then(LexicalConfig::default));
        #[cfg(not(feature = "bm25"))]
        {
            if lexical {
                return Err(EngineError::NoLexical);
            }
            Self::check_dim(&ring, model.as_ref())?;
            Self::assemble(Ring::new(ring)?, model)
        }
    }

    /// [`Engine::new`] with a BM25 index of these settings (None: none).
    ///
    /// # Errors
    /// As [`Engine::new`], and settings a BM25 index refuses.
    #[cfg(feature = "bm25")]
    pub fn with_lexical(
        ring: RingConfig,
        model: Option<Arc<TextModel>>,
        lexical: Option<LexicalConfig>,
    ) -> Result<Self> {
        Self::check_dim(&ring, model.as_ref())?;
        let mut engine = Self::assemble(Ring::new(ring)?, model)?;
        engine.lexical = lexical
            .map(|c| lexical::Lexical::new(c).map(Mutex::new))
            .transpose()?;
        Ok(engine)
    }

    fn check_dim(ring: &RingConfig, model: Option<&Arc<TextModel>>) -> Result<()> {
        if let Some(m) = model
            && m.embedder().dim() != ring.dim
        {
            return Err(EngineError::DimensionMismatch {
                engine: ring.dim,
                model: m.embedder().dim(),
            });
        }
        Ok(())
    }

    /// An engine around `ring`, without BM25 (set by the caller).
    #[allow(clippy::unnecessary_wraps)] // fallible where the features make it so
    fn assemble(ring: Ring, model: Option<Arc<TextModel>>) -> Result<Self> {
        Ok(Engine {
            ring: Arc::new(ring),
            model,
            #[cfg(feature = "bm25")]
            lexical: None,
            labeler: RwLock::new(None),
        })
    }

    /// The settings of the BM25 index, when one is kept.
    #[cfg(feature = "bm25")]
    #[must_use]
    pub fn lexical_config(&self) -> Option<LexicalConfig> {
        self.lexical.as_ref().map(|l| l.lock().config().clone())
    }

    /// Heap bytes of the BM25 index kept in step with the ring, when one is kept.
    #[cfg(feature = "bm25")]
    #[must_use]
    pub fn lexical_bytes(&self) -> Option<usize> {
        self.lexical.as_ref().map(|l| l.lock().memory_bytes())
    }

    /// The ring (shape, counters, direct vector access).
    #[must_use]
    pub fn ring(&self) -> &Arc<Ring> {
        &self.ring
    }

    /// The model, or None for a vectors-only engine.
    #[must_use]
    pub fn model(&self) -> Option<&Arc<TextModel>> {
        self.model.as_ref()
    }

    /// Whether a BM25 index is kept with the ring.
    #[must_use]
    pub fn is_lexical(&self) -> bool {
        #[cfg(feature = "bm25")]
        return self.lexical.is_some();
        #[cfg(not(feature = "bm25"))]
        false
    }

    /// `k` capped at the capacity: no count asks for more than the engine can hold.
    #[must_use]
    pub fn cap(&self, k: usize) -> usize {
        k.min(self.ring.capacity())
    }

    /// `k` of a search, capped ([`Engine::cap`]); 0 is refused, as every search refuses it.
    fn top(&self, k: usize) -> Result<usize> {
        if k == 0 {
            return Err(imesde_ring::RingError::ZeroK.into());
        }
        Ok(self.cap(k))
    }

    fn text_model(&self) -> Result<&TextModel> {
        self.model.as_deref().ok_or(EngineError::NoModel)
    }

    /// Queries embedded with the model's query prompt, if it has one.
    ///
    /// # Errors
    /// No model; embedding failed or was interrupted.
    pub fn embed_queries(
        &self,
        texts: &[Arc<str>],
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<f32>> {
        let m = self.text_model()?;
        m.embed(texts, m.query_prompt(), interrupted)
    }

    /// Texts to store embedded with the model's document prompt, if it has one.
    ///
    /// # Errors
    /// No model; embedding failed or was interrupted.
    pub fn embed_documents(
        &self,
        texts: &[Arc<str>],
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<f32>> {
        let m = self.text_model()?;
        m.embed(texts, m.document_prompt(), interrupted)
    }

    /// Labels each item ingested from now on (its metadata [`SEMANTIC_ID`]); None stops.
    ///
    /// # Errors
    /// As [`Engine::check_labeler`]; the labeler in place stays.
    pub fn set_labeler(&self, labeler: Option<Arc<dyn Labeler>>) -> Result<()> {
        if let Some(l) = &labeler {
            self.check_labeler(l.as_ref())?;
        }
        *self.labeler.write() = labeler;
        Ok(())
    }

    /// Whether `labeler` can label this engine's vectors (it is asked for the labels of no
    /// vectors of the engine's dimension), so that one made for other vectors is refused when
    /// it is attached rather than by every ingest.
    ///
    /// # Errors
    /// The labeler's own: another dimension, for one.
    pub fn check_labeler(&self, labeler: &dyn Labeler) -> Result<()> {
        labeler.label(&[], self.ring.config().dim).map(drop)
    }

    /// Whether a labeler is set.
    #[must_use]
    pub fn has_labeler(&self) -> bool {
        self.labeler.read().is_some()
    }

    /// Embeds `texts` and stores them (`attrs.texts` is filled with them); see
    /// [`Engine::ingest_vectors`]. The batch is checked before it is embedded, and nothing is
    /// stored when embedding fails or is interrupted.
    ///
    /// # Errors
    /// No model, a bad batch, embedding failed or was interrupted.
    pub fn ingest_texts(
        &self,
        texts: &[Arc<str>],
        mut attrs: Attributes,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Ingested> {
        attrs.texts = texts.iter().cloned().map(Some).collect();
        attrs.check(texts.len())?;
        if texts.is_empty() {
            return self.ingest_vectors(&[], attrs);
        }
        let vectors = self.embed_documents(texts, interrupted)?;
        self.ingest_vectors(&vectors, attrs)
    }

    /// Stores `vectors` (row-major, the engine's dimension) with their attributes: labelled by
    /// the labeler if one is set, scored against the standing queries, indexed by BM25 when it
    /// is on. A bad batch (or a labeler's refusal) stores nothing; an empty one stores nothing
    /// and gets no ids.
    ///
    /// # Errors
    /// A wrong length, a NaN / infinite or zero vector, attribute lists of another length, a
    /// labeler's error.
    pub fn ingest_vectors(&self, vectors: &[f32], attrs: Attributes) -> Result<Ingested> {
        let labeler = self.labeler.read().clone();
        self.ingest_labelled(vectors, attrs, labeler.as_deref())
    }

    /// [`Engine::ingest_vectors`] labelled by `labeler` in place of the engine's own (None: no
    /// labels).
    ///
    /// # Errors
    /// As [`Engine::ingest_vectors`].
    pub fn ingest_labelled(
        &self,
        vectors: &[f32],
        attrs: Attributes,
        labeler: Option<&dyn Labeler>,
    ) -> Result<Ingested> {
        let attrs = match labeler {
            Some(l) => self.labelled(l, vectors, attrs)?,
            None => attrs,
        };
        let (ids, events) = self.ring.ingest_matching(vectors, &attrs)?;
        self.train_index_if_due();
        #[cfg(feature = "bm25")]
        if let Some(lexical) = &self.lexical {
            let docs = ids
                .clone()
                .zip(&attrs.texts)
                .filter_map(|(id, t)| t.as_deref().map(|t| (id, t)));
            lexical.lock().follow(&self.ring, docs);
        }
        Ok(Ingested { ids, events })
    }

    /// Sets (or with `None` removes) an index ([`IvfConfig`]): once trained, searches without
    /// `exact` scan only the items of the lists nearest to the query. It trains on a thread of
    /// its own when the engine holds enough items, and again each time the window has turned
    /// over; until then searches scan every item. [`Engine::train_index`] trains now.
    ///
    /// # Errors
    /// A shape that cannot work (`nlist == 0`, `nprobe` not in `1..=nlist`).
    pub fn set_index(&self, cfg: Option<IvfConfig>) -> Result<()> {
        self.ring.set_index(cfg)?;
        self.train_index_if_due();
        Ok(())
    }

    /// Trains the index on the items held now and waits for it (when a training is running,
    /// waits for that one first, and trains again only if items arrived since it began);
    /// returns whether the index is trained.
    pub fn train_index(&self) -> bool {
        self.ring.train_index()
    }

    /// Starts a training on a thread of its own when one is due.
    fn train_index_if_due(&self) {
        if self.ring.index_wants_training() {
            let ring = Arc::clone(&self.ring);
            // A thread that cannot be started leaves the index as it is (searches stay
            // right; the next ingest tries again).
            let _ = std::thread::Builder::new()
                .name("imesde-index".into())
                .spawn(move || {
                    // Inside the fork gate: a fork waits for the training, whose locks a
                    // child would otherwise find held by a thread it does not have.
                    let _inside = fork::Inside::enter();
                    ring.train_index_if_due()
                });
        }
    }

    /// Deletes the items `ids` that are held: searches of every kind, reads, snapshots and
    /// the BM25 index no longer see them; standing queries are not told. Returns the ids
    /// deleted (ids not held are skipped).
    pub fn delete(&self, ids: &[u64]) -> Vec<u64> {
        self.delete_checked(ids, &Filter::default())
    }

    /// [`Engine::delete`] of those of `ids` that pass `filter` when their turn comes.
    fn delete_checked(&self, ids: &[u64], filter: &Filter) -> Vec<u64> {
        #[cfg(feature = "bm25")]
        if let Some(lexical) = &self.lexical {
            // Under the index's lock: an ingest between its ring write and its indexing
            // then sees the item gone and does not index it.
            let mut lexical = lexical.lock();
            let deleted = self.ring.delete_passing(ids, filter);
            lexical.remove(&deleted);
            return deleted;
        }
        self.ring.delete_passing(ids, filter)
    }

    /// Changes the metadata of the items `ids` that are held and pass `filter`, in place (the
    /// `i`-th id gets `update(i)`): each keeps its id, vector, text and timestamp, and every
    /// filter sees the new metadata from the next search on; standing queries are not told.
    /// Returns the ids updated, each once (ids not held, or not passing, are skipped).
    ///
    /// # Errors
    /// An empty time window; a value a snapshot could not hold (a NaN, a list inside a list).
    pub fn update_metadata<'u>(
        &self,
        ids: &[u64],
        filter: &Filter,
        update: impl Fn(usize) -> &'u MetadataUpdate,
    ) -> Result<Vec<u64>> {
        filter.check()?;
        for i in 0..ids.len() {
            check_update(update(i))?;
        }
        Ok(self.ring.update_metadata(ids, filter, update))
    }

    /// Changes the metadata of every item held that passes `filter` by `update`, as
    /// [`Engine::update_metadata`] does; returns the ids updated. An item ingested meanwhile
    /// is not changed; one that stops passing before its turn comes is not either.
    ///
    /// # Errors
    /// An empty time window; a value a snapshot could not hold.
    pub fn update_metadata_passing(
        &self,
        filter: &Filter,
        update: &MetadataUpdate,
    ) -> Result<Vec<u64>> {
        check_update(update)?;
        let ids = self.ring.ids_passing(filter)?;
        Ok(self.ring.update_metadata(&ids, filter, |_| update))
    }

    /// Deletes the items held that pass `filter` (of `ids` only, when given), as
    /// [`Engine::delete`] does; returns the ids deleted. An item ingested meanwhile is not
    /// deleted unless it is among `ids`, held and passing when its turn comes.
    ///
    /// # Errors
    /// An empty time window.
    pub fn delete_passing(&self, ids: Option<&[u64]>, filter: &Filter) -> Result<Vec<u64>> {
        // Each checked as it is deleted: one whose metadata changed since it was found stays.
        Ok(match ids {
            Some(ids) => {
                filter.check()?;
                self.delete_checked(ids, filter)
            }
            None => self.delete_checked(&self.ring.ids_passing(filter)?, filter),
        })
    }

    /// A new version of the item `id`: `vectors` (one row) with `attrs` stored as a new item
    /// (labelled and matched as any ingest), then `id` deleted if it was held. What `attrs`
    /// leaves unset, the new version keeps from the item held: its text (when `attrs` has
    /// none) and its metadata (when `attrs.metadata` is empty). A bad row stores nothing and
    /// leaves `id` as it was.
    ///
    /// # Errors
    /// As [`Engine::ingest_labelled`]; more than one row.
    pub fn replace(
        &self,
        id: u64,
        vectors: &[f32],
        attrs: Attributes,
        labeler: Option<&dyn Labeler>,
    ) -> Result<Ingested> {
        let dim = self.ring.config().dim;
        if vectors.len() != dim {
            return Err(EngineError::Invalid(format!(
                "a replacement is one vector of {dim} values, got {} values",
                vectors.len()
            )));
        }
        let attrs = self.carry_over(id, attrs);
        // Only the item held now is retired: an id not yet handed out may be the new item's
        // own (or a concurrent ingest's).
        let held = self.ring.contains(id);
        let ingested = self.ingest_labelled(vectors, attrs, labeler)?;
        if held && id < ingested.ids.start {
            self.delete(&[id]);
        }
        Ok(ingested)
    }

    /// `attrs` of a new version of `id` with what they leave unset taken from the item held:
    /// its text (when `attrs` has none) and its metadata (when `attrs.metadata` is empty).
    /// [`Engine::replace`] applies it; a caller that labels the new version itself applies it
    /// first, so that the label joins the old metadata.
    #[must_use]
    pub fn carry_over(&self, id: u64, mut attrs: Attributes) -> Attributes {
        if let Some(old) = self.ring.get(id) {
            if attrs.texts.first().is_none_or(Option::is_none) {
                attrs.texts = vec![old.text];
            }
            if attrs.metadata.is_empty() {
                attrs.metadata = vec![old.metadata];
            }
        }
        attrs
    }

    /// Checks a batch as an ingest would, storing nothing: before labelling it, since a
    /// label's unique id is handed out for good. Returns its number of items.
    ///
    /// # Errors
    /// Vectors or attributes the ingest would refuse.
    pub fn check_batch(&self, vectors: &[f32], attrs: &Attributes) -> Result<usize> {
        self.ring.check_vectors(vectors)?;
        let n = vectors.len() / self.ring.config().dim;
        attrs.check(n)?;
        Ok(n)
    }

    /// `attrs` with each item's metadata extended by its label.
    fn labelled(
        &self,
        labeler: &dyn Labeler,
        vectors: &[f32],
        attrs: Attributes,
    ) -> Result<Attributes> {
        let dim = self.ring.config().dim;
        if vectors.is_empty() || !vectors.len().is_multiple_of(dim) {
            // The ring refuses it with the right message.
            return Ok(attrs);
        }
        let n = self.check_batch(vectors, &attrs)?;
        let labels = labeler.label(vectors, dim)?;
        if labels.len() != n {
            return Err(EngineError::Invalid(format!(
                "the labeler returned {} labels for {n} items",
                labels.len()
            )));
        }
        Ok(with_labels(attrs, labels))
    }

    /// The `k` items most similar in meaning to the text `query` (embedded with the query
    /// prompt), best first, among those `filter` keeps.
    ///
    /// # Errors
    /// No model, embedding failed, `k` of 0, a bad filter.
    pub fn search_text(
        &self,
        query: &str,
        k: usize,
        filter: &Filter,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<Hit>> {
        self.top(k)?;
        let q = self.embed_queries(&[Arc::from(query)], interrupted)?;
        self.search_vector(&q, k, filter)
    }

    /// [`Engine::search_text`] for each of `queries` (embedded in one batch).
    ///
    /// # Errors
    /// As [`Engine::search_text`].
    pub fn search_texts(
        &self,
        queries: &[Arc<str>],
        k: usize,
        filter: &Filter,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<Vec<Hit>>> {
        self.top(k)?;
        let q = self.embed_queries(queries, interrupted)?;
        let dim = self.ring.config().dim;
        Ok(q.chunks(dim)
            .map(|row| self.ring.search(row, k, filter))
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// The `k` items most similar to `query` (a vector of the engine's dimension).
    ///
    /// # Errors
    /// A query of the wrong length, NaN / infinite or zero; `k` of 0; a bad filter.
    pub fn search_vector(&self, query: &[f32], k: usize, filter: &Filter) -> Result<Vec<Hit>> {
        Ok(self.ring.search(query, k, filter)?)
    }

    /// Top-`k` for each of a batch of query vectors among the items `filter` keeps, in one
    /// pass over the ring.
    ///
    /// # Errors
    /// As [`Engine::search_vector`].
    pub fn search_vectors(
        &self,
        queries: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Result<BatchResult> {
        Ok(self.ring.search_batch(queries, k, filter)?)
    }

    /// The `k` items whose texts best match the words of `query` (BM25) among those `filter`
    /// keeps, best first; a hit's score is its BM25 score. `query` is a text or its terms
    /// already analyzed ([`Query`]: a `&str`, or a `&[String]`).
    ///
    /// # Errors
    /// No BM25 index, `k` of 0, an empty time window.
    #[cfg(feature = "bm25")]
    pub fn lexical_search<'q>(
        &self,
        query: impl Into<Query<'q>>,
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<Hit>> {
        self.lexical_hits(query.into(), self.top(k)?, filter, None)
    }

    /// The hits of [`Engine::lexical_ranked`], read back whole (see [`Engine::settled`]).
    #[cfg(feature = "bm25")]
    fn lexical_hits(
        &self,
        query: Query<'_>,
        k: usize,
        filter: &Filter,
        corpus: Option<&Corpus>,
    ) -> Result<Vec<Hit>> {
        let hits = self.settled(|held| {
            let ranked = self.lexical_ranked(held, query, k, filter, corpus)?;
            let hits: Vec<Hit> = self.hits_for(&ranked, filter).collect();
            let whole = hits.len() == ranked.len();
            Ok((hits, whole))
        })?;
        self.ring.count_searches(1);
        Ok(hits)
    }

    /// Hits for ranked ids, in order, read back from the ring (ids overwritten meanwhile are
    /// skipped, and those whose metadata no longer passes `filter`).
    #[cfg(feature = "bm25")]
    fn hits_for<'a>(
        &'a self,
        ranked: &'a [(u64, f32)],
        filter: &'a Filter,
    ) -> impl Iterator<Item = Hit> + 'a {
        ranked
            .iter()
            .filter_map(|&(id, score)| self.ring.hit_passing(id, score, filter))
    }

    /// What `read` ranked and read back from the ring, once it is `whole` (it found every
    /// item it ranked, or `k` of them). An ingest on another thread can overwrite a ranked
    /// item before it is read back, and on a busy machine, where a reader waits a few
    /// milliseconds for a core, all of them: two tries as they come, then one with writers
    /// held off. `read` gets the BM25 index when the caller holds it (that last try: taken
    /// before the ring's writers are held off, the order of [`Engine::delete`]).
    #[cfg(feature = "bm25")]
    fn settled<T>(
        &self,
        mut read: impl FnMut(Option<&lexical::Lexical>) -> Result<(T, bool)>,
    ) -> Result<T> {
        let lexical = self.lexical.as_ref().ok_or(EngineError::NoLexical)?;
        for _ in 0..2 {
            let (out, whole) = read(None)?;
            if whole {
                return Ok(out);
            }
        }
        let lexical = lexical.lock();
        self.ring
            .with_writes_paused(|| read(Some(&lexical)).map(|(out, _)| out))
    }

    /// This engine's part of the BM25 statistics of several engines searched as one (a
    /// sharded engine): its documents, their total length, each distinct query term with the
    /// documents containing it here. Sum them over the engines, add the largest of their
    /// [`Engine::lexical_max_impacts`], and [`Engine::lexical_search_corpus`] on each engine
    /// scores as one engine holding every item would.
    ///
    /// # Errors
    /// No BM25 index.
    #[cfg(feature = "bm25")]
    pub fn lexical_corpus_terms<'q>(&self, query: impl Into<Query<'q>>) -> Result<CorpusPart> {
        let lexical = self.lexical.as_ref().ok_or(EngineError::NoLexical)?;
        Ok(lexical.lock().corpus_terms(query.into()))
    }

    /// The largest BM25 impact of each of `terms` here in a corpus of `documents` documents of
    /// `total_len` terms (see [`Engine::lexical_corpus_terms`]).
    ///
    /// # Errors
    /// No BM25 index.
    #[cfg(feature = "bm25")]
    pub fn lexical_max_impacts(
        &self,
        terms: &[String],
        documents: u32,
        total_len: u64,
    ) -> Result<Vec<f32>> {
        let lexical = self.lexical.as_ref().ok_or(EngineError::NoLexical)?;
        Ok(lexical
            .lock()
            .corpus_max_impacts(terms, documents, total_len))
    }

    /// [`Engine::lexical_search`] scored with `corpus`'s statistics: this engine's best `k`
    /// as one engine holding the items of every engine of the corpus ranks them.
    ///
    /// # Errors
    /// As [`Engine::lexical_search`].
    #[cfg(feature = "bm25")]
    pub fn lexical_search_corpus<'q>(
        &self,
        query: impl Into<Query<'q>>,
        k: usize,
        filter: &Filter,
        corpus: &Corpus,
    ) -> Result<Vec<Hit>> {
        self.lexical_hits(query.into(), self.top(k)?, filter, Some(corpus))
    }

    /// The best `k` ids and BM25 scores among the items held that `filter` keeps, from the
    /// index `held` (None: locked here).
    #[cfg(feature = "bm25")]
    fn lexical_ranked(
        &self,
        held: Option<&lexical::Lexical>,
        query: Query<'_>,
        k: usize,
        filter: &Filter,
        corpus: Option<&Corpus>,
    ) -> Result<Vec<(u64, f32)>> {
        let lexical = self.lexical.as_ref().ok_or(EngineError::NoLexical)?;
        filter.check()?;
        let locked;
        let lexical = if let Some(l) = held {
            l
        } else {
            locked = lexical.lock();
            &*locked
        };
        // Only items the ring still holds: an ingest on another thread overwrites items in
        // the ring before the index lets them go, and those would take places in the top k.
        Ok(if filter.is_empty() {
            lexical.ranked(query, k, corpus, Some(&mut |id| self.ring.contains(id)))
        } else {
            lexical.ranked(
                query,
                k,
                corpus,
                Some(&mut |id| self.ring.passes(id, filter)),
            )
        })
    }

    /// Dense and lexical results fused into one ranking: the best `max(5k, 50)` of each side
    /// among the items `filter` keeps, fused by `fusion`; `alpha` weights the dense list and
    /// `1 - alpha` the lexical one. A hit's score is its fused score.
    ///
    /// # Errors
    /// No model or no BM25 index, `k` of 0, `alpha` outside 0..=1, embedding failed.
    #[cfg(feature = "bm25")]
    pub fn hybrid_search(
        &self,
        query: &str,
        k: usize,
        fusion: Fusion,
        alpha: Option<f32>,
        filter: &Filter,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<Hit>> {
        check_alpha(alpha)?;
        self.top(k)?;
        // The query embedded first: both sides are then ranked on (nearly) the same items.
        let q = self.embed_queries(&[Arc::from(query)], interrupted)?;
        self.hybrid_search_vector(Query::Text(query), &q, k, fusion, alpha, filter)
    }

    /// [`Engine::hybrid_search`] with the query's embedding given (`vector`, of the engine's
    /// dimension), as a vectors-only engine needs it: the dense side searches `vector`, the
    /// lexical side `query` (a text or its analyzed terms, [`Query`]).
    ///
    /// # Errors
    /// No BM25 index, `k` of 0, `alpha` outside 0..=1, a bad vector.
    #[cfg(feature = "bm25")]
    pub fn hybrid_search_vector<'q>(
        &self,
        query: impl Into<Query<'q>>,
        vector: &[f32],
        k: usize,
        fusion: Fusion,
        alpha: Option<f32>,
        filter: &Filter,
    ) -> Result<Vec<Hit>> {
        check_alpha(alpha)?;
        let k = self.top(k)?;
        let depth = self.cap(hybrid_depth(k));
        // The weighted fusion's alpha is 0.5 unless given: fused scores stay in [0, 1].
        let alpha = alpha.or((fusion == Fusion::Weighted).then_some(0.5));
        let weights = alpha.map(|a| [a, 1.0 - a]);
        let query = query.into();
        self.settled(|held| {
            let lexical = self.lexical_ranked(held, query, depth, filter, None)?;
            let dense: Vec<(u64, f32)> = self
                .ring
                .search(vector, depth, filter)?
                .into_iter()
                .map(|h| (h.id, h.score))
                .collect();
            // Every fused item, in order, read back until `k` are found: one an ingest on
            // another thread overwrote since it was ranked gives its place to the next.
            let fused = imesde_bm25::fuse(
                &[dense, lexical],
                fusion,
                2 * depth,
                weights.as_ref().map(|w| &w[..]),
            )?;
            let hits: Vec<Hit> = self.hits_for(&fused, filter).take(k).collect();
            let whole = hits.len() == k.min(fused.len());
            Ok((hits, whole))
        })
    }

    /// Registers a standing query (a vector of the engine's dimension): every item ingested
    /// from now on that passes `filter`, scores at least the threshold (if any) and enters the
    /// running top-`k` (if any) becomes an event of [`Engine::ingest_vectors`]. Returns the
    /// subscription's id and the threshold as a score (a percentile calibrated on the items
    /// held now that pass `filter`).
    ///
    /// `filter`'s predicate applies; a time window does not (an item's time is that of its
    /// arrival, or one given with it) and is refused.
    ///
    /// # Errors
    /// A bad query; neither a threshold nor a top-k; a percentile outside 0..100 or on an
    /// empty engine; a filter with `since` or `until`.
    pub fn subscribe(
        &self,
        query: &[f32],
        threshold: Option<Threshold>,
        top_k: Option<usize>,
        filter: Filter,
    ) -> Result<(u64, Option<f32>)> {
        no_time_window(&filter)?;
        let threshold = self.threshold_score(query, threshold, &filter)?;
        let id = self.reserve_subscription();
        self.subscribe_as(id, query, threshold, top_k, filter)?;
        Ok((id, threshold))
    }

    /// A threshold as a score: a percentile calibrated for `query` on the items held now that
    /// pass `filter` (the standing query's: the items it would match).
    ///
    /// # Errors
    /// A percentile outside 0..100, or on an engine holding no item that passes `filter`; a
    /// bad query.
    pub fn threshold_score(
        &self,
        query: &[f32],
        threshold: Option<Threshold>,
        filter: &Filter,
    ) -> Result<Option<f32>> {
        Ok(match threshold {
            None => None,
            Some(Threshold::Score(t)) => Some(t),
            Some(Threshold::Percentile(p)) => Some(self.calibrate(query, p, filter)?),
        })
    }

    /// A subscription id for [`Engine::subscribe_as`]: a caller that routes events to
    /// receivers by id sets up the receiver before the query can match anything.
    pub fn reserve_subscription(&self) -> u64 {
        self.ring.reserve_subscription()
    }

    /// [`Engine::subscribe`] under an id from [`Engine::reserve_subscription`], with the
    /// threshold as a score ([`Engine::threshold_score`]).
    ///
    /// # Errors
    /// As [`Engine::subscribe`]; an id not reserved or registered already.
    pub fn subscribe_as(
        &self,
        id: u64,
        query: &[f32],
        threshold: Option<f32>,
        top_k: Option<usize>,
        filter: Filter,
    ) -> Result<()> {
        no_time_window(&filter)?;
        self.ring.subscribe_as(
            id,
            query,
            StandingSpec {
                threshold,
                top_k,
                filter,
            },
        )?;
        Ok(())
    }

    /// The score above which `100 - pct` % of the held items that pass `filter`'s predicate
    /// fall for `query` (the k-th best of an exact scan, `k = ceil((100 - pct) % of them)`).
    fn calibrate(&self, query: &[f32], pct: f64, filter: &Filter) -> Result<f32> {
        if !(0.0..100.0).contains(&pct) {
            return Err(EngineError::Invalid(format!(
                "a percentile threshold must be in 0..100 (like p99 or p99.9), got {pct}"
            )));
        }
        let held = self.ring.len();
        if held == 0 {
            return Err(EngineError::Invalid(format!(
                "cannot calibrate threshold p{pct} on an empty engine: ingest first"
            )));
        }
        let rank = |n: usize| (((100.0 - pct) / 100.0 * n as f64).ceil() as usize).clamp(1, n);
        // Every item's score: an index, or sign bits, would see only some of them.
        let every = Filter {
            exact: true,
            predicate: filter.predicate.clone(),
            ..Filter::default()
        };
        // The items the standing query would match (counted, then the k-th of them found).
        let matching = if every.predicate.is_none() {
            held
        } else {
            self.ring.count(&every)?
        };
        if matching == 0 {
            return Err(EngineError::Invalid(format!(
                "cannot calibrate threshold p{pct}: no item held passes the filter"
            )));
        }
        let hits = self.ring.search(query, rank(matching), &every)?;
        Ok(hits.last().map_or(f32::NEG_INFINITY, |h| h.score))
    }

    /// Removes a standing query; false when none has this id.
    pub fn unsubscribe(&self, id: u64) -> bool {
        self.ring.unsubscribe(id)
    }

    /// How many items held pass `filter`.
    ///
    /// # Errors
    /// An empty time window.
    pub fn count(&self, filter: &Filter) -> Result<usize> {
        Ok(self.ring.count(filter)?)
    }

    /// The newest `n` items still held that `filter` keeps, newest first.
    ///
    /// # Errors
    /// An empty time window.
    pub fn recent(&self, n: usize, filter: &Filter) -> Result<Vec<Item>> {
        Ok(self.ring.recent(self.cap(n), filter)?)
    }

    /// The item with this id, if it is still held.
    #[must_use]
    pub fn get(&self, id: u64) -> Option<Item> {
        self.ring.get(id)
    }

    /// The manifest a snapshot of this engine carries.
    ///
    /// # Errors
    /// The model file can no longer be read (its identity includes its hash).
    pub fn manifest(&self) -> Result<Manifest> {
        let model = match &self.model {
            Some(m) => Some(m.identity().map_err(|source| EngineError::Io {
                path: m.embedder().model_path().to_path_buf(),
                source,
            })?),
            None => None,
        };
        #[cfg(feature = "bm25")]
        let bm25 = self.lexical_config().map(|c| c.to_spec());
        #[cfg(not(feature = "bm25"))]
        let bm25 = None;
        Ok(Manifest {
            model,
            lexical: self.is_lexical(),
            bm25,
            index: self.ring.index(),
            k_factor: Some(self.ring.k_factor()).filter(|&f| f != imesde_ring::DEFAULT_K_FACTOR),
        })
    }

    /// The engine as bytes: every held item, the ring's shape and the manifest (standing
    /// queries and labelers are not saved). Taken consistently while other threads ingest.
    ///
    /// # Errors
    /// As [`Engine::manifest`].
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        Ok(self.ring.snapshot(&self.manifest()?.to_tag()))
    }

    /// Writes [`Engine::snapshot`] to `path` atomically (a temporary file of its own, fsync,
    /// rename; a symlink is written through, a directory or device refused).
    ///
    /// # Errors
    /// The file cannot be written, or as [`Engine::manifest`].
    pub fn save(&self, path: &Path) -> Result<()> {
        imesde_format::write_atomic(path, &self.snapshot()?).map_err(|source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// An engine restored from [`Engine::snapshot`] bytes: the same items in the same slots,
    /// so searches return exactly what they did; BM25, when it was on, rebuilt from the texts.
    /// `model` must be the one the snapshot was made with (dimension and identity).
    ///
    /// # Errors
    /// Damaged bytes, another model or dimension, a model file that cannot be read.
    pub fn from_snapshot(bytes: &[u8], model: Option<Arc<TextModel>>) -> Result<Self> {
        let (ring, tag) = Ring::from_snapshot(bytes)?;
        let manifest = Manifest::parse(&tag)?;
        if let Some(m) = &model {
            let dim = ring.config().dim;
            if m.embedder().dim() != dim {
                return Err(EngineError::DimensionMismatch {
                    engine: dim,
                    model: m.embedder().dim(),
                });
            }
            if let Some(saved) = &manifest.model {
                let given = m.identity().map_err(|source| EngineError::Io {
                    path: m.embedder().model_path().to_path_buf(),
                    source,
                })?;
                if !same_model(saved, &given) {
                    return Err(EngineError::ModelMismatch {
                        saved: saved.clone(),
                        given,
                    });
                }
            }
        }
        if let Some(cfg) = manifest.index {
            // Trained again on the restored items before the engine is handed out (when they
            // are enough to train on, as for a new engine). Earlier
            // versions let a ring have more lists than slots (16 by default on the smallest
            // rings): those get as many lists as the ring allows.
            let most = IvfConfig::max_nlist(ring.capacity());
            let cfg = if cfg.nlist > most {
                IvfConfig {
                    nlist: most,
                    nprobe: cfg.nprobe.min(most),
                }
            } else {
                cfg
            };
            ring.set_index(Some(cfg)).map_err(|e| {
                imesde_ring::RingError::Snapshot(format!("its index cannot be set up again: {e}"))
            })?;
            // As a new engine would: trained when it holds enough items, else once they come.
            if ring.index_wants_training() {
                ring.train_index();
            }
        }
        if let Some(f) = manifest.k_factor {
            ring.set_k_factor(f)?;
        }
        #[cfg(not(feature = "bm25"))]
        if manifest.lexical {
            return Err(EngineError::NoLexical);
        }
        #[allow(unused_mut)]
        let mut engine = Self::assemble(ring, model)?;
        #[cfg(feature = "bm25")]
        if manifest.lexical {
            let config = match &manifest.bm25 {
                Some(spec) => LexicalConfig::parse_spec(spec)?,
                None => LexicalConfig::default(),
            };
            let mut lexical = lexical::Lexical::new(config)?;
            lexical.rebuild(&engine.ring);
            engine.lexical = Some(Mutex::new(lexical));
        }
        Ok(engine)
    }

    /// [`Engine::from_snapshot`] of the file `path` (a regular file only).
    ///
    /// # Errors
    /// The file cannot be read, or as [`Engine::from_snapshot`].
    pub fn load(path: &Path, model: Option<Arc<TextModel>>) -> Result<Self> {
        let bytes = imesde_format::read_file(path).map_err(|source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_snapshot(&bytes, model)
    }

    /// Whether the snapshot bytes were made with a model (a vectors-only engine's were not).
    ///
    /// # Errors
    /// Damaged bytes.
    pub fn snapshot_has_model(bytes: &[u8]) -> Result<bool> {
        Ok(Self::snapshot_model(bytes)?.is_some())
    }

    /// The identity of the model the snapshot bytes were made with (see
    /// [`TextModel::identity`]; [`RecordedSettings::of`] reads its settings), or None.
    ///
    /// # Errors
    /// Damaged bytes.
    pub fn snapshot_model(bytes: &[u8]) -> Result<Option<String>> {
        Ok(Manifest::parse(&Ring::snapshot_tag(bytes)?)?.model)
    }
}

/// `attrs` with item `i`'s metadata extended by [`SEMANTIC_ID`] = `labels[i]`.
#[must_use]
pub fn with_labels(attrs: Attributes, labels: Vec<String>) -> Attributes {
    let key: Arc<str> = Arc::from(SEMANTIC_ID);
    let metadata = labels
        .into_iter()
        .enumerate()
        .map(|(i, label)| {
            let (key, label) = (Arc::clone(&key), Value::from(label));
            Some(match attrs.metadata.get(i).and_then(Option::as_ref) {
                Some(m) => m.with(key, label),
                None => Metadata::new([(key, label)]),
            })
        })
        .collect();
    Attributes { metadata, ..attrs }
}
