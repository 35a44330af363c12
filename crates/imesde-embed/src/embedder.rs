//! Texts in, unit vectors out: tokenize, sort by length, pad per sub-batch, run, pool, normalise.

use std::collections::HashMap;
use std::io::Read;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::cache::Cache;
use crate::error::{EmbedError, Result};
use crate::model::{Batch, OnnxModel};
use crate::pool::{Optimization, Pooling};

/// The most ONNX Runtime threads an embedder asks for.
const MAX_THREADS: usize = 1024;

/// How an [`Embedder`] tokenizes, batches, pools and caches.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedderConfig {
    /// Tokens per text, special tokens included; longer texts are truncated.
    pub max_length: usize,
    /// Texts per model call.
    pub batch_size: usize,
    /// How token vectors become one vector (for a model that does not pool itself).
    pub pooling: Pooling,
    /// L2-normalise each vector.
    pub normalize: bool,
    /// ONNX Runtime intra-op threads; `None` lets ONNX Runtime choose.
    pub threads: Option<usize>,
    /// ONNX Runtime graph optimisation level.
    pub optimization: Optimization,
    /// Vectors kept in the text cache; 0 turns the cache off.
    pub cache_size: usize,
    /// Age after which a cached vector is recomputed.
    pub cache_ttl: Option<Duration>,
    /// Most bytes the cache holds (texts and vectors): long texts fill it before
    /// `cache_size` entries do.
    pub cache_bytes: usize,
    /// ONNX Runtime execution providers by name (`"CUDAExecutionProvider"`, ...), in order of
    /// preference; empty runs on the CPU.
    pub providers: Vec<String>,
    /// Read the sentence vector a graph computes itself (`sentence_embedding`) when it has
    /// one; false reads its token states, when it has them too, and pools them by `pooling`
    /// (what a caller who names a pooling asks for).
    pub graph_pooling: bool,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        Self {
            max_length: 256,
            batch_size: 32,
            pooling: Pooling::Mean,
            normalize: true,
            threads: None,
            optimization: Optimization::Basic,
            cache_size: 10_000,
            cache_ttl: None,
            cache_bytes: 64 << 20,
            providers: Vec::new(),
            graph_pooling: true,
        }
    }
}

/// Counters since the embedder was built. Times are wall-clock seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EmbedStats {
    /// Texts asked for, cache hits included.
    pub requested: u64,
    /// Texts run through the model.
    pub embedded: u64,
    /// Texts found in the cache.
    pub cache_hits: u64,
    /// Texts looked up in the cache and not found.
    pub cache_misses: u64,
    /// Model calls.
    pub batches: u64,
    /// Tokens fed to the model, padding included.
    pub padded_tokens: u64,
    /// Real tokens fed to the model.
    pub tokens: u64,
    /// Tokenizing.
    pub tokenize_seconds: f64,
    /// Building the padded input arrays.
    pub pad_seconds: f64,
    /// Inside ONNX Runtime.
    pub inference_seconds: f64,
    /// Pooling and normalisation.
    pub pool_seconds: f64,
}

impl EmbedStats {
    /// Mean seconds per model call.
    #[must_use]
    pub fn mean_batch_seconds(&self) -> f64 {
        if self.batches == 0 {
            0.0
        } else {
            self.inference_seconds / self.batches as f64
        }
    }

    /// Texts embedded per second of embedding work (tokenize + pad + infer + pool).
    #[must_use]
    pub fn texts_per_second(&self) -> f64 {
        let t =
            self.tokenize_seconds + self.pad_seconds + self.inference_seconds + self.pool_seconds;
        if t > 0.0 {
            self.embedded as f64 / t
        } else {
            0.0
        }
    }
}

/// A sentence-embedding model with its tokenizer, batching policy and cache. `Sync`: share it
/// between threads; model calls are serialised, tokenization and cache lookups are not.
#[derive(Debug)]
pub struct Embedder {
    tokenizer: Tokenizer,
    model: OnnxModel,
    config: EmbedderConfig,
    pad_id: i64,
    dim: usize,
    cache: Option<Mutex<Cache>>,
    stats: Mutex<EmbedStats>,
    generation: u64,
    /// The model file's SHA-256, once asked for.
    sha256: OnceLock<String>,
    /// Where a long text's prefix may be cut (see [`Embedder::tokenize`]).
    cuts: Cuts,
}

impl Embedder {
    /// Loads `model` (an ONNX file) and `tokenizer` (a `tokenizer.json`). The ONNX Runtime
    /// library must be loaded first ([`crate::load_runtime`]).
    ///
    /// # Errors
    /// Missing files, a tokenizer or model that is not a sentence model, options out of range.
    pub fn new(model: &Path, tokenizer: &Path, config: EmbedderConfig) -> Result<Self> {
        if config.max_length < 2 {
            return Err(EmbedError::Config(format!(
                "max_length must be at least 2 (room for [CLS] and [SEP]), got {}",
                config.max_length
            )));
        }
        if config.batch_size == 0 {
            return Err(EmbedError::Config(
                "batch_size must be at least 1, got 0".into(),
            ));
        }
        if let Some(t) = config.threads
            && !(1..=MAX_THREADS).contains(&t)
        {
            // ONNX Runtime would try to start them all (or wrap the count to a negative one).
            return Err(EmbedError::Config(format!(
                "threads must be between 1 and {MAX_THREADS}, got {t}"
            )));
        }
        if !tokenizer.is_file() {
            return Err(EmbedError::NotFound {
                what: "tokenizer file",
                path: tokenizer.to_path_buf(),
            });
        }
        let tok_error = |reason: String| EmbedError::Tokenizer {
            path: tokenizer.to_path_buf(),
            reason,
        };
        if let Ok(Some(limit)) = crate::position_limit(model)
            && config.max_length > limit
        {
            return Err(EmbedError::Config(format!(
                "max_length {} is more than the {limit} token positions of {}",
                config.max_length,
                model.display()
            )));
        }
        let mut tok = Tokenizer::from_file(tokenizer).map_err(|e| tok_error(e.to_string()))?;
        let pad_id = tok.get_padding().map_or(0, |p| i64::from(p.pad_id));
        tok.with_padding(None);
        let cuts = Cuts::of(&tok);
        tok.with_truncation(Some(TruncationParams {
            max_length: config.max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| tok_error(e.to_string()))?;
        let model = OnnxModel::load(
            model,
            config.threads,
            config.optimization,
            &config.providers,
            config.graph_pooling,
        )?;
        let cache = NonZeroUsize::new(config.cache_size)
            .map(|n| Mutex::new(Cache::new(n, config.cache_ttl, config.cache_bytes)));
        let mut this = Self {
            tokenizer: tok,
            model,
            config,
            pad_id,
            dim: 0,
            cache,
            stats: Mutex::default(),
            generation: crate::generation(),
            sha256: OnceLock::new(),
            cuts,
        };
        this.dim = this.probe().map_err(|e| EmbedError::Model {
            path: this.model.path().to_path_buf(),
            reason: format!(
                "it does not embed what the tokenizer {} gives: {e}",
                tokenizer.display()
            ),
        })?;
        Ok(this)
    }

    /// One model call at load that learns the output width and proves, before any user's
    /// text meets it, that the graph runs on what this tokenizer gives: a character outside
    /// its vocabulary, a row padded with its pad id, and its largest token id.
    fn probe(&self) -> Result<usize> {
        let encodings = self.tokenize(&["imesde \u{2603} probe", "i"])?;
        // As many rows per run as a batch holds (a graph exported for one row takes one):
        // with two, the shorter is padded with the pad id.
        let runs: &[&[usize]] = if self.config.batch_size >= 2 {
            &[&[0, 1]]
        } else {
            &[&[0], &[1]]
        };
        let mut out = Vec::new();
        let mut dim = 0;
        for (r, rows) in runs.iter().enumerate() {
            let mut batch = self.pad(&encodings, rows);
            if r == 0
                && let Some(top) = self.tokenizer.get_vocab(true).into_values().max()
            {
                batch.ids[0] = i64::from(top);
            }
            dim = self.model.run(&batch, self.config.pooling, &mut out)?;
            if dim < 2 {
                return Err(EmbedError::Inference(format!(
                    "its output is {dim} value wide per text: a score, not a sentence embedding"
                )));
            }
            if out.chunks(dim).any(|v| v.iter().all(|&x| x == 0.0)) {
                return Err(EmbedError::Inference(
                    "it gives all-zero vectors, which have no direction to search by".to_owned(),
                ));
            }
        }
        Ok(dim)
    }

    /// Width of the vectors.
    #[must_use]
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The settings this embedder runs with.
    #[must_use]
    pub fn config(&self) -> &EmbedderConfig {
        &self.config
    }

    /// The model file.
    #[must_use]
    pub fn model_path(&self) -> &Path {
        self.model.path()
    }

    /// The SHA-256 of the model file (hex), read once and then remembered: what identifies
    /// the model's weights (two files of one shape and size can hold different models).
    ///
    /// # Errors
    /// The file can no longer be read.
    pub fn model_sha256(&self) -> std::io::Result<&str> {
        if let Some(h) = self.sha256.get() {
            return Ok(h);
        }
        let hash = sha256_file(self.model.path())?;
        Ok(self.sha256.get_or_init(|| hash))
    }

    /// Whether the tokenizer lowercases texts (its normaliser: BERT's with `lowercase`,
    /// `Lowercase`, or a sequence holding one).
    #[must_use]
    pub fn lowercases(&self) -> bool {
        fn lowers(n: &tokenizers::NormalizerWrapper) -> bool {
            use tokenizers::NormalizerWrapper as N;
            match n {
                N::BertNormalizer(b) => b.lowercase,
                N::Lowercase(_) => true,
                N::Sequence(seq) => seq.as_ref().iter().any(lowers),
                _ => false,
            }
        }
        self.tokenizer.get_normalizer().is_some_and(lowers)
    }

    /// True when the graph pools itself and `pooling` is not used.
    #[must_use]
    pub fn is_pooled(&self) -> bool {
        self.model.is_pooled()
    }

    /// What this embedder has done so far.
    #[must_use]
    pub fn stats(&self) -> EmbedStats {
        *self.stats.lock()
    }

    /// Vectors cached now that can still be served (those past the TTL are not).
    #[must_use]
    pub fn cache_len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.lock().live_len())
    }

    /// Empties the cache.
    pub fn clear_cache(&self) {
        if let Some(c) = &self.cache {
            c.lock().clear();
        }
    }

    /// Embeds `texts` into a row-major `[texts.len(), dim]` buffer. `interrupted` is asked
    /// between model calls; when it returns true the call stops with [`EmbedError::Interrupted`]
    /// (nothing is half-written to the cache).
    ///
    /// # Errors
    /// Tokenization or inference failure, or an interruption.
    pub fn embed<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<f32>> {
        if self.generation != crate::generation() {
            return Err(EmbedError::Forked);
        }
        let dim = self.dim;
        let mut out = vec![0.0f32; texts.len() * dim];
        // Unique texts the cache does not hold, and the rows each one fills.
        let mut todo: Vec<&str> = Vec::new();
        let mut rows: Vec<Vec<usize>> = Vec::new();
        {
            let mut first: HashMap<&str, usize> = HashMap::new();
            let mut cache = self.cache.as_ref().map(|c| c.lock());
            for (i, text) in texts.iter().enumerate() {
                let text = text.as_ref();
                if let Some(&u) = first.get(text) {
                    rows[u].push(i);
                } else if cache
                    .as_mut()
                    .is_some_and(|c| c.get_into(text, &mut out[i * dim..(i + 1) * dim]))
                {
                    // Served from the cache.
                } else {
                    first.insert(text, todo.len());
                    todo.push(text);
                    rows.push(vec![i]);
                }
            }
        }
        // Rows not served by the cache (duplicates of a missed text included).
        let missed: usize = rows.iter().map(Vec::len).sum();
        let mut stats = EmbedStats {
            requested: texts.len() as u64,
            cache_hits: (texts.len() - missed) as u64,
            cache_misses: missed as u64,
            ..EmbedStats::default()
        };
        if !todo.is_empty() {
            let vectors = self
                .run_model(&todo, interrupted, &mut stats)
                // The batches that ran before an interruption or a failure are counted.
                .inspect_err(|_| self.add_stats(&stats))?;
            for (u, positions) in rows.iter().enumerate() {
                let v = &vectors[u * dim..(u + 1) * dim];
                for &i in positions {
                    out[i * dim..(i + 1) * dim].copy_from_slice(v);
                }
            }
            if let Some(cache) = &self.cache {
                let mut cache = cache.lock();
                for (u, text) in todo.iter().enumerate() {
                    cache.put(text, &vectors[u * dim..(u + 1) * dim]);
                }
            }
        }
        self.add_stats(&stats);
        Ok(out)
    }

    fn add_stats(&self, s: &EmbedStats) {
        let mut t = self.stats.lock();
        t.requested += s.requested;
        t.embedded += s.embedded;
        t.cache_hits += s.cache_hits;
        t.cache_misses += s.cache_misses;
        t.batches += s.batches;
        t.padded_tokens += s.padded_tokens;
        t.tokens += s.tokens;
        t.tokenize_seconds += s.tokenize_seconds;
        t.pad_seconds += s.pad_seconds;
        t.inference_seconds += s.inference_seconds;
        t.pool_seconds += s.pool_seconds;
    }

    /// Embeds distinct texts, shortest first in sub-batches, results in input order.
    fn run_model(
        &self,
        texts: &[&str],
        interrupted: &mut dyn FnMut() -> bool,
        stats: &mut EmbedStats,
    ) -> Result<Vec<f32>> {
        let dim = self.dim;
        let t0 = Instant::now();
        let encodings = self.tokenize(texts)?;
        stats.tokenize_seconds += t0.elapsed().as_secs_f64();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());
        let mut out = vec![0.0f32; texts.len() * dim];
        let mut pooled = Vec::new();
        for chunk in order.chunks(self.config.batch_size) {
            if interrupted() {
                return Err(EmbedError::Interrupted);
            }
            let t = Instant::now();
            let batch = self.pad(&encodings, chunk);
            let t_pad = t.elapsed().as_secs_f64();
            let got = self.model.run(&batch, self.config.pooling, &mut pooled)?;
            let t_run = t.elapsed().as_secs_f64();
            if got != dim {
                return Err(EmbedError::Inference(format!(
                    "the model returned {got}-dim vectors after {dim}-dim ones"
                )));
            }
            for (j, &i) in chunk.iter().enumerate() {
                let dst = &mut out[i * dim..(i + 1) * dim];
                dst.copy_from_slice(&pooled[j * dim..(j + 1) * dim]);
                if self.config.normalize {
                    imesde_simd::normalize_l2(dst);
                }
            }
            stats.pad_seconds += t_pad;
            stats.inference_seconds += t_run - t_pad;
            stats.pool_seconds += t.elapsed().as_secs_f64() - t_run;
            stats.batches += 1;
            stats.embedded += chunk.len() as u64;
            stats.padded_tokens += batch.ids.len() as u64;
            stats.tokens += batch.mask.iter().filter(|&&m| m != 0).count() as u64;
        }
        Ok(out)
    }

    /// The encodings of `texts`, truncated to `max_length`. A text far longer than that (a
    /// stack trace, a whole file) is tokenized from a prefix cut where the tokenizer splits
    /// words whatever follows ([`Cuts`]: a space; for BERT's tokenizers also a tab, a newline
    /// or a CJK ideograph): its tokens are the first of the whole text's, so when they
    /// already overflow `max_length` the truncated encoding is the whole text's, found without
    /// tokenizing megabytes. A prefix that does not overflow is tokenized again from a prefix
    /// [`WIDER`] times as long, and for BERT's tokenizers, when that one does not overflow
    /// either, read on piece by piece ([`Embedder::encode_in_pieces`]); a run with no place to
    /// cut within a prefix (one huge "word") is cut at its end, so that megabytes of it cost a
    /// prefix, not gigabytes.
    fn tokenize<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Encoding>> {
        let budget = self
            .config
            .max_length
            .saturating_mul(PREFIX_BYTES_PER_TOKEN);
        let inputs: Vec<&str> = texts
            .iter()
            .map(|t| word_prefix(t.as_ref(), budget, self.cuts))
            .collect();
        let error = |e: tokenizers::Error| EmbedError::Tokenize(e.to_string());
        let mut encodings = self
            .tokenizer
            .encode_batch(inputs.clone(), true)
            .map_err(error)?;
        for ((enc, input), text) in encodings.iter_mut().zip(&inputs).zip(texts) {
            let text = text.as_ref();
            if input.len() < text.len() && enc.get_overflowing().is_empty() {
                let wider = word_prefix(text, budget.saturating_mul(WIDER), self.cuts);
                *enc = self.tokenizer.encode(wider, true).map_err(error)?;
                if wider.len() < text.len()
                    && enc.get_overflowing().is_empty()
                    && matches!(self.cuts, Cuts::Bert { .. })
                {
                    *enc = self.encode_in_pieces(text, budget.saturating_mul(WIDER))?;
                }
            }
        }
        Ok(encodings)
    }

    /// A text for BERT's tokenizer whose first `piece` bytes held fewer than `max_length`
    /// tokens (blanks, control or zero-width characters by the megabyte, before or between
    /// its words): read on a piece at a time, each cut where the tokenizer splits words, until
    /// the pieces hold more than `max_length` tokens, the text ends or [`MAX_PIECES`] pieces
    /// were read. Where a piece starts, at a word's start, what the tokenizer turns into a
    /// space or deletes is skipped without tokenizing it (nothing there joins two words), so
    /// megabytes of it cost a scan. A piece with no place to cut is the start of one word: the
    /// word is read whole (less what the normaliser deletes) up to a piece's length. The
    /// pieces' tokens joined are the whole text's first ones.
    fn encode_in_pieces(&self, text: &str, piece: usize) -> Result<Encoding> {
        let error = |e: tokenizers::Error| EmbedError::Tokenize(e.to_string());
        let mut pieces = Vec::new();
        let (mut rest, mut tokens) = (text, 0);
        let cleans = matches!(self.cuts, Cuts::Bert { cleans: true, .. });
        while tokens <= self.config.max_length && pieces.len() < MAX_PIECES {
            rest =
                rest.trim_start_matches(|c: char| c.is_whitespace() || cleans && bert_deletes(c));
            if rest.is_empty() {
                break;
            }
            let read = cut_within(rest, piece, self.cuts, 0);
            let after = &rest[read.len()..];
            let mut enc = if after.is_empty() || after.starts_with(|c| self.cuts.before(c)) {
                rest = after;
                self.tokenizer.encode(read, false)
            } else {
                // No place to cut in the piece: it is the start of one word, which runs to
                // the next place to cut. That word is read whole, less what the normaliser
                // deletes, up to a piece's length (past that, one `[UNK]` for WordPiece).
                let end = rest.find(|c| self.cuts.before(c)).unwrap_or(rest.len());
                let mut word = String::new();
                for c in rest[..end]
                    .chars()
                    .filter(|&c| !(cleans && bert_deletes(c)))
                {
                    if word.len() + c.len_utf8() > piece {
                        break;
                    }
                    word.push(c);
                }
                rest = &rest[end..];
                self.tokenizer.encode(word, false)
            }
            .map_err(error)?;
            enc.take_overflowing();
            tokens += enc.len();
            pieces.push(enc);
        }
        self.tokenizer
            .post_process(Encoding::merge(pieces, true), None, true)
            .map_err(error)
    }

    /// Pads the encodings `chunk` selects to the longest of them.
    fn pad(&self, encodings: &[Encoding], chunk: &[usize]) -> Batch {
        let seq = chunk.iter().map(|&i| encodings[i].len()).max().unwrap_or(0);
        let n = chunk.len() * seq;
        let mut batch = Batch {
            ids: Vec::with_capacity(n),
            mask: Vec::with_capacity(n),
            type_ids: Vec::with_capacity(n),
            batch: chunk.len(),
            seq,
        };
        for &i in chunk {
            let e = &encodings[i];
            let pad = seq - e.len();
            batch.ids.extend(e.get_ids().iter().map(|&x| i64::from(x)));
            batch.ids.extend(std::iter::repeat_n(self.pad_id, pad));
            batch
                .mask
                .extend(e.get_attention_mask().iter().map(|&x| i64::from(x)));
            batch.mask.extend(std::iter::repeat_n(0, pad));
            batch
                .type_ids
                .extend(e.get_type_ids().iter().map(|&x| i64::from(x)));
            batch.type_ids.extend(std::iter::repeat_n(0, pad));
        }
        batch
    }
}

/// The SHA-256 of a file, as lowercase hex.
fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let mut hex = String::with_capacity(64);
    for b in hasher.finalize() {
        hex.push(char::from_digit(u32::from(b >> 4), 16).expect("a hex digit"));
        hex.push(char::from_digit(u32::from(b & 15), 16).expect("a hex digit"));
    }
    Ok(hex)
}

/// Bytes of text per token position beyond which a text is tokenized from a prefix first
/// (see `Embedder::tokenize`): far more than any word piece takes.
const PREFIX_BYTES_PER_TOKEN: usize = 64;

/// How much longer the second prefix of a text is than the first (see `Embedder::tokenize`),
/// and the pieces a longer one is read on in (`Embedder::encode_in_pieces`).
const WIDER: usize = 16;

/// Most pieces a text is read on in (see `Embedder::encode_in_pieces`): 4 MB for a
/// `max_length` of 256, read in well under a second.
const MAX_PIECES: usize = 16;

/// What BERT's normaliser deletes or turns into a space: U+FFFD, control characters (NUL; a
/// tab, newline or carriage return becomes a space) and format ones (zero-width spaces and
/// joiners, direction marks, the soft hyphen, the byte-order mark: Unicode's Cf category, the
/// blocks text carries).
fn bert_deletes(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{FFFD}' | '\u{AD}' | '\u{600}'..='\u{605}' | '\u{61C}' | '\u{6DD}' | '\u{70F}'
            | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}')
}

/// Where a tokenizer is sure to split words, so that a prefix cut there has the first tokens
/// of the whole text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cuts {
    /// Before a space (U+0020) only: every pre-tokenizer splits words there, while other
    /// whitespace may not split (BERT's normaliser deletes a vertical tab or form feed, gluing
    /// the words around it; Metaspace splits at U+0020 only).
    Space,
    /// BERT's normaliser and pre-tokenizer: before whitespace it keeps and splits at (a space,
    /// tab, newline, carriage return, no-break or ideographic space, ...) or ASCII punctuation
    /// (split off), and with `cjk` before a CJK ideograph (which it surrounds with spaces);
    /// `cleans`: its normaliser deletes control and format characters (and turns other
    /// whitespace into spaces).
    Bert { cjk: bool, cleans: bool },
}

impl Cuts {
    /// The cuts `tok` is sure of.
    fn of(tok: &Tokenizer) -> Cuts {
        use tokenizers::{NormalizerWrapper, PreTokenizerWrapper};
        let bert_words = matches!(
            tok.get_pre_tokenizer(),
            Some(PreTokenizerWrapper::BertPreTokenizer(_))
        );
        match tok.get_normalizer() {
            Some(NormalizerWrapper::BertNormalizer(n)) if bert_words => Cuts::Bert {
                cjk: n.handle_chinese_chars,
                cleans: n.clean_text,
            },
            None if bert_words => Cuts::Bert {
                cjk: false,
                cleans: false,
            },
            _ => Cuts::Space,
        }
    }

    fn before(self, c: char) -> bool {
        match self {
            Cuts::Space => c == ' ',
            // Its pre-tokenizer splits at whitespace (what the normaliser keeps of it: a
            // vertical tab, form feed or U+0085 is deleted) and around punctuation.
            Cuts::Bert { cjk, cleans } => {
                matches!(c, ' ' | '\t' | '\n' | '\r')
                    || c.is_ascii_punctuation()
                    || (cjk && is_cjk(c))
                    || (c.is_whitespace() && !(cleans && matches!(c, '\x0b' | '\x0c' | '\u{85}')))
            }
        }
    }
}

/// BERT's CJK ideographs: exactly the blocks the `tokenizers` normaliser splits one character
/// at a time (its `is_chinese_char`; note the gap 0x2B820..0x2B91F, which it does not split).
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

/// `text` cut at the last place `cuts` allows in the second half of its first `budget` bytes;
/// all of it when it is no longer; its first `budget` bytes (to a character's start) when it
/// has no such place there: a run of half the budget with no place to cut is one huge "word",
/// which `WordPiece` reads as one `[UNK]` whether it is cut or whole.
fn word_prefix(text: &str, budget: usize, cuts: Cuts) -> &str {
    cut_within(text, budget, cuts, budget / 2)
}

/// `text` cut at the last place `cuts` allows from byte `from` to byte `budget`; all of it
/// when it is no longer; its first `budget` bytes (to a character's start) when there is no
/// such place (the piece reader looks from the start, [`word_prefix`] in the second half).
fn cut_within(text: &str, budget: usize, cuts: Cuts, from: usize) -> &str {
    if text.len() <= budget {
        return text;
    }
    let mut end = budget;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut start = from;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let at_end = text[end..].chars().next().is_some_and(|c| cuts.before(c));
    let cut = if at_end {
        Some(end)
    } else if start >= end {
        None
    } else if cuts == Cuts::Space {
        // A space is one byte, never inside a multi-byte character.
        text.as_bytes()[start..end]
            .iter()
            .rposition(|&b| b == b' ')
            .map(|i| start + i)
    } else {
        text[start..end]
            .char_indices()
            .rev()
            .find(|&(_, c)| cuts.before(c))
            .map(|(i, _)| start + i)
    };
    match cut {
        Some(cut) if cut > 0 => &text[..cut],
        _ if end > 0 => &text[..end],
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::{Cuts, word_prefix};

    #[test]
    fn prefixes_end_before_a_space() {
        let p = |t, b| word_prefix(t, b, Cuts::Space);
        assert_eq!(p("short text", 64), "short text");
        assert_eq!(p("one two three", 9), "one two");
        // No space to cut at in the budget's second half: the budget's bytes, to a
        // character's start.
        assert_eq!(p("abcdefgh ij", 5), "abcde");
        assert_eq!(p("ab cdefgh ij", 8), "ab cdefg");
        assert_eq!(p("ab ééé cd", 5), "ab");
        assert_eq!(p(" lead", 3), " le");
        assert_eq!(p("éééé", 5), "éé");
        // Other whitespace may glue words when normalised (a vertical tab is deleted): not a
        // place to cut.
        assert_eq!(p("abcd ef\x0bgh ij", 9), "abcd");
        assert_eq!(p("abcd\tefgh", 8), "abcd\tefg");
        // Right before a space is a cut too.
        assert_eq!(p("ab cd\x0bef gh", 8), "ab cd\x0bef");
    }

    #[test]
    fn bert_prefixes_end_before_whitespace_it_keeps_or_an_ideograph() {
        let bert = Cuts::Bert {
            cjk: true,
            cleans: true,
        };
        assert_eq!(word_prefix("ab\ncd\nef", 7, bert), "ab\ncd");
        assert_eq!(word_prefix("ab\r\ncd", 4, bert), "ab\r");
        assert_eq!(word_prefix("ab\tcd", 4, bert), "ab");
        // A vertical tab or form feed is deleted: no cut. An ideographic or no-break space
        // becomes a space, and punctuation is split off: cuts.
        assert_eq!(word_prefix("ab\x0bcd\x0cef", 7, bert), "ab\x0bcd\x0ce");
        assert_eq!(word_prefix("abcd\u{3000}ef", 8, bert), "abcd");
        assert_eq!(word_prefix("abcd\u{a0}efg", 8, bert), "abcd");
        assert_eq!(word_prefix("abcd.efgh", 8, bert), "abcd");
        // Not before a character of the gap that BERT's normaliser does not split.
        assert_eq!(word_prefix("abcd ef\u{2B820}gh", 9, bert), "abcd");
        // Before an ideograph (3 bytes each), never inside one.
        assert_eq!(word_prefix("日本語の文", 8, bert), "日本");
        assert_eq!(word_prefix("日本語の文", 5, bert), "日");
        assert_eq!(
            word_prefix(
                "日本語",
                8,
                Cuts::Bert {
                    cjk: false,
                    cleans: true
                }
            ),
            "日本"
        );
        assert_eq!(word_prefix("ab日本", 4, bert), "ab");
    }
}
