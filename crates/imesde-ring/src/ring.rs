use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use imesde_simd::binary::{self, BinaryQuery};
use imesde_simd::quant::{self, NarrowQueries};
use imesde_simd::{Kernels, TopK};
use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;

use crate::item::{meta_bytes, text_bytes};
use crate::ivf::{self, Ivf, IvfConfig};
use crate::memo::{Memo, Memos, forget};
use crate::par;
use crate::standing::{Event, Standing, StandingSpec};
use crate::{Attributes, Filter, Hit, Item, Metadata, MetadataUpdate, Result, RingError};

/// How vectors are kept in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Storage {
    /// 4 bytes per value, exact scores.
    F32,
    /// 1 byte per value plus one f32 scale per vector (symmetric quantisation), scanned; and
    /// a 4-bit residual per value that rescores the scan's best candidates, so results match
    /// exact f32 search closely (1.5 bytes per value and 4 per vector in all).
    Int8,
    /// One sign bit per value, scanned by Hamming distance (48 bytes for 384 values, a 32nd
    /// of f32), plus the int8 copy of [`Storage::Int8`], read only to rescore the scan's best
    /// candidates (and by exact searches): the scan reads an eighth of what int8's reads.
    Binary,
}

impl std::str::FromStr for Storage {
    type Err = RingError;
    /// The storage named by [`Storage::name`] (`"float32"` too).
    fn from_str(name: &str) -> Result<Self> {
        match name {
            "f32" | "float32" => Ok(Storage::F32),
            "int8" => Ok(Storage::Int8),
            "binary" => Ok(Storage::Binary),
            _ => Err(RingError::UnknownStorage(name.to_owned())),
        }
    }
}

impl Storage {
    /// `"f32"`, `"int8"` or `"binary"`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Storage::F32 => "f32",
            Storage::Int8 => "int8",
            Storage::Binary => "binary",
        }
    }

    /// Bytes one stored vector of `dim` values takes (saturating at `usize::MAX`).
    #[must_use]
    pub fn vector_bytes(self, dim: usize) -> usize {
        match self {
            Storage::F32 => dim.saturating_mul(4),
            Storage::Int8 => dim
                .saturating_add(quant::residual_bytes(dim))
                .saturating_add(4),
            Storage::Binary => Storage::Int8
                .vector_bytes(dim)
                .saturating_add(binary::words(dim) * 8),
        }
    }
}

/// Shape of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Values per vector.
    pub dim: usize,
    /// Number of independently locked shards.
    pub num_shards: usize,
    /// Slots per shard.
    pub shard_size: usize,
    /// Vector storage.
    pub storage: Storage,
}

impl RingConfig {
    /// Bytes a slot takes once written: the vector, an id, a timestamp, two payload pointers
    /// (in `u128`: a shape asked for may not fit a `usize`).
    pub(crate) fn slot_bytes(&self) -> u128 {
        self.storage.vector_bytes(self.dim) as u128
            + 8
            + 8
            + 2 * size_of::<Option<Arc<str>>>() as u128
    }
}

/// Counters and sizes reported by [`Ring::stats`].
#[derive(Debug, Clone, PartialEq)]
pub struct RingStats {
    /// Items held now.
    pub len: usize,
    /// Items ever ingested.
    pub ingested: u64,
    /// Items overwritten by newer ones.
    pub evicted: u64,
    /// Items deleted.
    pub deleted: u64,
    /// Searches served (one per query).
    pub searches: u64,
    /// Bytes of the fixed slot arrays (vectors, ids, timestamps), allocated at construction.
    pub fixed_bytes: usize,
    /// Bytes held by texts and metadata now.
    pub payload_bytes: usize,
    /// Bytes held by the index now (lists, their sign bits, each slot's place, centroids);
    /// 0 without one.
    pub index_bytes: usize,
    /// The SIMD backend in use.
    pub backend: &'static str,
}

/// The result of a batched search: `scores[q * k + i]` and `ids[q * k + i]` is the i-th best
/// item for query `q`; `k` may be smaller than asked when fewer items were held (or passed the
/// filter). A query with fewer hits than another (an index search reads only the lists it
/// probes) has its row padded with [`BatchResult::NO_ID`] and a score of minus infinity.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchResult {
    /// Scores, row-major `[nq, k]`.
    pub scores: Vec<f32>,
    /// Item ids, row-major `[nq, k]`.
    pub ids: Vec<u64>,
    /// Number of queries.
    pub nq: usize,
    /// Results per query.
    pub k: usize,
}

impl BatchResult {
    /// The id of a padding entry (`-1` as a signed id, as faiss pads its results).
    pub const NO_ID: u64 = u64::MAX;
}

/// Best first: higher score, then the newer item. `partial_cmp` (scores are never NaN) so
/// that `0.0` and `-0.0` tie as they do in [`TopK`].
fn best_first(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.score
        .partial_cmp(&a.score)
        .unwrap_or(std::cmp::Ordering::Equal)
        .then(b.id.cmp(&a.id))
}

pub(crate) const EMPTY: u64 = u64::MAX;
/// A deleted item's slot holds its id with this bit set (ids stay below 2^63): searches and
/// reads skip it as they skip an empty slot, a writer of a newer item takes the slot, and a
/// late writer of an older one does not bring that older item back.
pub(crate) const DELETED: u64 = 1 << 63;

/// Whether a slot's id is an item held (not empty, not deleted).
#[inline]
pub(crate) fn is_live(id: u64) -> bool {
    id & DELETED == 0
}
/// Ids are below this (they fit an `i64`, as numpy and faiss users take them); a ring that
/// would pass it refuses the batch instead of wrapping around.
pub const MAX_IDS: u64 = i64::MAX as u64;
/// Candidates per hit a ranking by sign bits keeps by default ([`Ring::set_k_factor`]), to
/// be rescored (from the int8 copy on binary storage). Measured on 2^20 MiniLM-like vectors
/// (65,536 stream embeddings and noisy neighbours at their spacing) with the debtags
/// queries, recall@10 after rescoring: 200 candidates 0.99, 100 0.97 (the Hamming distance
/// instead of the asymmetric score needs 3,000 for 0.99).
pub const DEFAULT_K_FACTOR: usize = 20;
/// A binary scan keeps candidates for at least this many hits: `k_factor * max(k, 10)`.
const BINARY_MIN_HITS: usize = 10;
/// Rows scored per kernel call: bounds the score buffers whatever the shard size.
const CHUNK: usize = 2048;
/// Rows per parallel task: a shard larger than this is split, so the threads of a scan end
/// together whatever the number of shards.
const TASK_ROWS: usize = 2 * CHUNK;
/// Multiply-adds per helper thread: a smaller scan runs on the calling thread alone (a
/// helper that wakes after it ended only costs the caller the wake-up call), a larger one
/// asks for one helper per this much work.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// One query's (score, key) pairs, best first.
type Ranked = Vec<(f32, u64)>;

static PARALLEL: AtomicBool = AtomicBool::new(true);

/// Enables or disables the rayon thread pool (writes and scan helpers) for every ring in the
/// process. Disabled after `fork()` in a child, where the parent's pool threads do not exist.
pub fn set_parallel(enabled: bool) {
    PARALLEL.store(enabled, Ordering::Relaxed);
}

/// Int8 rows: codes and a scale per row, scanned, and a 4-bit residual per value
/// ([`quant::quantize_residual`]) read to rescore the scan's best candidates. Binary rings
/// also keep sign bits (blocked, [`binary::put_row`]), which their scans read instead of the
/// codes; `bits` is empty on int8 rings.
pub(crate) enum Vectors {
    F32(Vec<f32>),
    Int8 {
        codes: Vec<i8>,
        scales: Vec<f32>,
        residuals: Vec<u8>,
        bits: Vec<u64>,
    },
}

/// One shard's slots. Its arrays are reserved whole when the ring is made but hold only the
/// slots written so far (`ids.len()` of them, see [`Shard::ensure`]): memory is touched as
/// items arrive, so a large ring holding few items (or a snapshot of one) costs little.
pub(crate) struct Shard {
    pub(crate) vectors: Vectors,
    pub(crate) ids: Vec<u64>,
    pub(crate) ts: Vec<f64>,
    pub(crate) texts: Vec<Option<Arc<str>>>,
    pub(crate) meta: Vec<Option<Metadata>>,
    /// Slots below this index have been written at least once.
    pub(crate) high: usize,
    pub(crate) len: usize,
    pub(crate) payload_bytes: usize,
}

impl Shard {
    /// The item in `slot` (whose id is `id`) as a result with `score`; the one place a hit is
    /// made from a slot.
    pub(crate) fn hit(&self, id: u64, slot: usize, score: f32) -> Hit {
        Hit {
            id,
            score,
            text: self.texts[slot].clone(),
            ts: self.ts[slot],
            metadata: self.meta[slot].clone(),
        }
    }

    /// Whether the item in `slot` passes `filter`: the one place a filter reads a slot.
    #[inline]
    pub(crate) fn passes(&self, slot: usize, filter: &Filter) -> bool {
        filter.matches(
            self.ts[slot],
            self.meta[slot].as_ref(),
            self.texts[slot].as_deref(),
        )
    }

    /// The ids of the items held here that pass `filter`, in slot order.
    pub(crate) fn ids_passing<'a>(&'a self, filter: &'a Filter) -> impl Iterator<Item = u64> + 'a {
        (0..self.ids.len())
            .filter(move |&slot| is_live(self.ids[slot]) && self.passes(slot, filter))
            .map(|slot| self.ids[slot])
    }

    /// Makes slot `slot` addressable (the arrays grow within their reserved capacity, so they
    /// never move).
    pub(crate) fn ensure(&mut self, slot: usize, dim: usize) {
        let n = slot + 1;
        if self.ids.len() >= n {
            return;
        }
        self.ids.resize(n, EMPTY);
        self.ts.resize(n, 0.0);
        self.texts.resize(n, None);
        self.meta.resize(n, None);
        match &mut self.vectors {
            Vectors::F32(v) => v.resize(n * dim, 0.0),
            Vectors::Int8 {
                codes,
                scales,
                residuals,
                bits,
            } => {
                codes.resize(n * dim, 0);
                scales.resize(n, 0.0);
                residuals.resize(n * quant::residual_bytes(dim), 0);
                if bits.capacity() > 0 {
                    bits.resize(binary::blocked_len(n, binary::words(dim)), 0);
                }
            }
        }
    }

    /// The id in `slot`, if one was ever written there.
    pub(crate) fn id_at(&self, slot: usize) -> u64 {
        self.ids.get(slot).copied().unwrap_or(EMPTY)
    }
}

/// See [`Ring::writing`].
struct Writing<'a> {
    _gate: parking_lot::RwLockReadGuard<'a, ()>,
    done: &'a AtomicU64,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.done.fetch_add(1, Ordering::SeqCst);
    }
}

/// Vectors validated, normalised and (for int8) quantised, ready to copy into slots.
enum Prepared {
    F32(Vec<f32>),
    Int8 {
        codes: Vec<i8>,
        scales: Vec<f32>,
        residuals: Vec<u8>,
        /// Row-major sign bits (binary rings; empty otherwise).
        bits: Vec<u64>,
    },
}

/// A query in the form the kernels of the ring's storage want.
enum Query {
    F32(Vec<f32>),
    /// 15-bit codes for single scans and rescoring; a batch (and only a batch) also gets
    /// 7-bit codes, which the batched int8 scan multiplies about twice as fast on AVX2
    /// (other backends widen them, at the old speed, so every backend picks the same
    /// candidates).
    Int8 {
        codes: Vec<i16>,
        scales: Vec<f32>,
        narrow: Option<NarrowQueries>,
        /// The queries for a binary ring's scan, which scores its rows' sign bits instead of
        /// multiplying codes (`None`: an int8 scan).
        bits: Option<Vec<BinaryQuery>>,
    },
}

impl Query {
    /// Candidates a scan keeps per query for `k` hits. An int8 scan's scores are off by up
    /// to half a quantisation step per value, enough to swap close neighbours, so it keeps
    /// more, to be rescored. Measured on 16,384 and 262,144 Gaussian and clustered vectors of
    /// 384 dims, recall@10 after rescoring stops rising at 15 candidates; a larger top-k
    /// slows the scan (30 candidates: +20 %). A batch's 7-bit codes leave more error in the
    /// scan, but its recall@10 after rescoring was the same with 15, 20 and 40 candidates
    /// (Gaussian 16,384 and 65,536, stream embeddings 16,384).
    ///
    /// A binary scan ranks by the query against sign bits, coarser still: it keeps
    /// `k_factor` candidates a hit ([`binary_candidates`]).
    fn candidates(&self, k: usize, k_factor: usize) -> usize {
        match self {
            Query::F32(_) => k,
            Query::Int8 { bits: Some(_), .. } => binary_candidates(k, k_factor),
            Query::Int8 { .. } => k.saturating_add(k / 2).saturating_add(5),
        }
    }
}

/// Candidates a ranking by sign bits (a binary scan, the index's lists) keeps for `k` hits,
/// to be rescored: `k_factor * max(k, 10)` (200 for 10 hits by default; see
/// [`DEFAULT_K_FACTOR`]).
fn binary_candidates(k: usize, k_factor: usize) -> usize {
    k.max(BINARY_MIN_HITS).saturating_mul(k_factor)
}

/// A scanning thread's score buffers, kept from task to task (a batch's integer scores of one
/// chunk are a quarter of a megabyte: allocating and zeroing them per task showed up in the
/// profile).
#[derive(Default)]
struct ScanBufs {
    fbuf: Vec<f32>,
    ibuf: Vec<i32>,
    hbuf: Vec<i32>,
}

/// The sharded ring buffer. All methods take `&self`; the ring is `Send + Sync`.
pub struct Ring {
    cfg: RingConfig,
    pub(crate) shards: Box<[RwLock<Shard>]>,
    pub(crate) next_id: AtomicU64,
    searches: AtomicU64,
    pub(crate) deleted: AtomicU64,
    kernels: &'static Kernels,
    standing: Standing,
    /// Filter answers per slot for the filters searched most recently.
    memos: Memos,
    /// Held shared by every batch write, exclusively by a snapshot: a snapshot sees whole
    /// batches only.
    pub(crate) gate: RwLock<()>,
    /// Writes (batches, deletes, metadata updates) begun and done: a read that saw them equal
    /// before it ran, and `writes_begun` unchanged after, ran while nothing was written
    /// ([`Ring::settled`]).
    writes_begun: AtomicU64,
    writes_done: AtomicU64,
    /// The index, when one is set ([`Ring::set_index`]).
    ivf: RwLock<Option<Ivf>>,
    /// Held while a training runs (one at a time).
    training: Mutex<()>,
    /// The process whose thread holds `training` (0: none): a child forked during a
    /// training sees the lock held by a thread it does not have.
    trainer: AtomicU32,
    /// Candidates a hit that a ranking by sign bits keeps ([`Ring::set_k_factor`]).
    k_factor: AtomicUsize,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("cfg", &self.cfg)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// An empty vector with room for `n` values (reserved, not touched), or `None` when that
/// cannot be allocated.
fn try_reserved<T>(n: usize) -> Option<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    Some(v)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The sign bits of `n` unit rows of `dim` values, row-major.
fn sign_rows(unit: &[f32], dim: usize) -> Vec<u64> {
    let w = binary::words(dim);
    let mut bits = vec![0u64; unit.len() / dim * w];
    for (x, b) in unit.chunks_exact(dim).zip(bits.chunks_exact_mut(w)) {
        binary::sign_bits(x, b);
    }
    bits
}

/// Checks and L2-normalises `n` vectors of `dim` values into `out`.
fn normalise_into(what: &'static str, src: &[f32], dim: usize, out: &mut [f32]) -> Result<()> {
    for (index, (x, o)) in src
        .chunks_exact(dim)
        .zip(out.chunks_exact_mut(dim))
        .enumerate()
    {
        if x.iter().any(|v| !v.is_finite()) {
            return Err(RingError::NonFinite { what, index });
        }
        o.copy_from_slice(x);
        if imesde_simd::normalize_l2(o) == 0.0 {
            return Err(RingError::ZeroVector { what, index });
        }
    }
    Ok(())
}

/// The most shards a ring has: far beyond any core count, and a bound on what a shape
/// (an argument, a snapshot's header) can make a ring allocate before its slots.
pub const MAX_SHARDS: usize = 1 << 16;

impl Ring {
    /// Allocates a ring. Fails on a zero size, on a size that overflows or cannot be
    /// allocated, and on int8 storage beyond [`quant::MAX_I8_DIM`] dims.
    ///
    /// # Errors
    /// [`RingError::ZeroSize`], [`RingError::TooManyShards`], [`RingError::Capacity`],
    /// [`RingError::DimTooLarge`].
    pub fn new(cfg: RingConfig) -> Result<Self> {
        Self::create(cfg, true)
    }

    /// [`Ring::new`]; with `whole_fits`, also refused when its slots alone need more than the
    /// machine can hold ([`RingError::Memory`]). A snapshot's ring is not: a few items of a
    /// large ring saved elsewhere load here, what they take held to the memory free.
    pub(crate) fn create(cfg: RingConfig, whole_fits: bool) -> Result<Self> {
        for (what, v) in [
            ("dim", cfg.dim),
            ("num_shards", cfg.num_shards),
            ("shard_size", cfg.shard_size),
        ] {
            if v == 0 {
                return Err(RingError::ZeroSize { what });
            }
        }
        if cfg.num_shards > MAX_SHARDS {
            return Err(RingError::TooManyShards {
                got: cfg.num_shards,
                max: MAX_SHARDS,
            });
        }
        if cfg.storage != Storage::F32 && cfg.dim > quant::MAX_I8_DIM {
            return Err(RingError::DimTooLarge {
                dim: cfg.dim,
                max: quant::MAX_I8_DIM,
            });
        }
        let bytes = cfg.slot_bytes() * cfg.num_shards as u128 * cfg.shard_size as u128;
        let capacity_err = || RingError::Capacity {
            num_shards: cfg.num_shards,
            shard_size: cfg.shard_size,
            dim: cfg.dim,
            bytes,
        };
        // Refuse what cannot fit in the address space before trying (1 << 47: 128 TiB).
        if bytes > 1u128 << 47 {
            return Err(capacity_err());
        }
        // Slots are touched as items arrive: a ring larger than the machine would be accepted
        // here and its process killed once the stream filled it.
        if whole_fits && let Some(limit) = crate::memory_limit().filter(|&limit| bytes > limit) {
            return Err(RingError::Memory {
                num_shards: cfg.num_shards,
                shard_size: cfg.shard_size,
                dim: cfg.dim,
                bytes,
                limit,
            });
        }
        let values = cfg
            .shard_size
            .checked_mul(cfg.dim)
            .ok_or_else(capacity_err)?;
        let mut shards = Vec::new();
        shards
            .try_reserve_exact(cfg.num_shards)
            .map_err(|_| capacity_err())?;
        for _ in 0..cfg.num_shards {
            let vectors = match cfg.storage {
                Storage::F32 => Vectors::F32(try_reserved(values).ok_or_else(capacity_err)?),
                Storage::Int8 | Storage::Binary => Vectors::Int8 {
                    codes: try_reserved(values).ok_or_else(capacity_err)?,
                    scales: try_reserved(cfg.shard_size).ok_or_else(capacity_err)?,
                    residuals: try_reserved(cfg.shard_size * quant::residual_bytes(cfg.dim))
                        .ok_or_else(capacity_err)?,
                    bits: if cfg.storage == Storage::Binary {
                        try_reserved(binary::blocked_len(cfg.shard_size, binary::words(cfg.dim)))
                            .ok_or_else(capacity_err)?
                    } else {
                        Vec::new()
                    },
                },
            };
            shards.push(RwLock::new(Shard {
                vectors,
                ids: try_reserved(cfg.shard_size).ok_or_else(capacity_err)?,
                ts: try_reserved(cfg.shard_size).ok_or_else(capacity_err)?,
                texts: try_reserved(cfg.shard_size).ok_or_else(capacity_err)?,
                meta: try_reserved(cfg.shard_size).ok_or_else(capacity_err)?,
                high: 0,
                len: 0,
                payload_bytes: 0,
            }));
        }
        Ok(Ring {
            cfg,
            shards: shards.into_boxed_slice(),
            next_id: AtomicU64::new(0),
            searches: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            kernels: Kernels::best(),
            standing: Standing::default(),
            memos: Memos::default(),
            gate: RwLock::new(()),
            writes_begun: AtomicU64::new(0),
            writes_done: AtomicU64::new(0),
            ivf: RwLock::new(None),
            training: Mutex::new(()),
            trainer: AtomicU32::new(0),
            k_factor: AtomicUsize::new(DEFAULT_K_FACTOR),
        })
    }

    /// Candidates per hit that a ranking by sign bits keeps to rescore (a binary scan's, the
    /// index's): `k_factor * max(k, 10)` for `k` hits ([`DEFAULT_K_FACTOR`] unless set).
    #[must_use]
    pub fn k_factor(&self) -> usize {
        self.k_factor.load(Ordering::Relaxed)
    }

    /// Sets [`Ring::k_factor`] for the searches that start from now on, as faiss'
    /// `IndexRefine.k_factor`: more candidates rescored, a higher recall for a slower search.
    /// Searches that rank no sign bits (f32 and int8 storage without an index) ignore it.
    ///
    /// # Errors
    /// [`RingError::ZeroSize`] for 0.
    pub fn set_k_factor(&self, k_factor: usize) -> Result<()> {
        if k_factor == 0 {
            return Err(RingError::ZeroSize { what: "k_factor" });
        }
        self.k_factor.store(k_factor, Ordering::Relaxed);
        Ok(())
    }

    /// The ring's shape.
    #[must_use]
    pub fn config(&self) -> RingConfig {
        self.cfg
    }

    /// Total number of slots.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.cfg.num_shards * self.cfg.shard_size
    }

    /// Number of items held now (never more than the capacity).
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len).sum()
    }

    /// The id the next ingested item will get (= items ever ingested). Ids below
    /// `next_id() - capacity()` have been overwritten or are being overwritten now.
    #[must_use]
    pub fn next_id(&self) -> u64 {
        self.next_id.load(Ordering::Acquire)
    }

    /// Whether the ring holds no item.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn slot_of(&self, id: u64) -> (usize, usize) {
        let s = self.cfg.num_shards as u64;
        (
            (id % s) as usize,
            ((id / s) % self.cfg.shard_size as u64) as usize,
        )
    }

    /// Folds `step(acc, shard, rows)` over every shard, in row ranges of at most
    /// `TASK_ROWS` slots, each under the shard's read lock; in parallel when the scan of `nq`
    /// queries is worth waking the pool for; one accumulator per thread.
    fn fold_shards<A: Send>(
        &self,
        nq: usize,
        init: impl Fn() -> A + Sync,
        step: impl Fn(&mut A, &Shard, Range<usize>) + Sync,
    ) -> Vec<A> {
        let next_id = self.next_id.load(Ordering::Relaxed);
        let held = next_id.min(self.capacity() as u64) as usize;
        let work = held.saturating_mul(self.cfg.dim).saturating_mul(nq);
        // One helper per PARALLEL_MIN_WORK: waking a pool thread costs the caller a system
        // call, not worth it for less (and a many-core pool is not woken whole for a small
        // ring).
        let helpers = if PARALLEL.load(Ordering::Relaxed) {
            work / PARALLEL_MIN_WORK
        } else {
            0
        };
        // Slots written so far per shard (all of them once the ring is full): a large ring
        // holding few items is not walked in empty tasks.
        let used = usize::try_from(next_id.div_ceil(self.shards.len() as u64))
            .unwrap_or(usize::MAX)
            .min(self.cfg.shard_size);
        let per_shard = used.div_ceil(TASK_ROWS);
        let tasks = self.shards.len() * per_shard;
        par::fold(tasks, helpers, init, |acc, t| {
            let shard = self.shards[t / per_shard].read();
            let start = (t % per_shard) * TASK_ROWS;
            let end = (start + TASK_ROWS).min(shard.high);
            if start < end {
                step(acc, &shard, start..end);
            }
        })
    }

    /// Checks a batch as an ingest would (whole rows of the ring's dimension, finite, none
    /// zero) without storing it: for work that must not start on a batch the ring refuses
    /// (labelling it with ids handed out for good).
    ///
    /// # Errors
    /// As [`Ring::ingest`] for the vectors.
    pub fn check_vectors(&self, vectors: &[f32]) -> Result<()> {
        self.batch_rows("vector", vectors).map(|_| ())
    }

    /// [`Ring::unit_rows`] of a batch, which may be empty (no rows).
    fn batch_rows(&self, what: &'static str, vectors: &[f32]) -> Result<(usize, Vec<f32>)> {
        if vectors.is_empty() {
            return Ok((0, Vec::new()));
        }
        self.unit_rows(what, vectors)
    }

    /// The ids an empty batch gets (none, where the next batch's begin).
    fn no_ids(&self) -> Range<u64> {
        let next = self.next_id();
        next..next
    }

    /// Checks the length and values of `vectors.len() / dim` rows and L2-normalises them.
    fn unit_rows(&self, what: &'static str, vectors: &[f32]) -> Result<(usize, Vec<f32>)> {
        let dim = self.cfg.dim;
        if !vectors.len().is_multiple_of(dim) || vectors.is_empty() {
            let got = if vectors.is_empty() {
                0
            } else {
                vectors.len() % dim
            };
            return Err(RingError::Dimension {
                what,
                got,
                expected: dim,
            });
        }
        let mut unit = vec![0.0f32; vectors.len()];
        normalise_into(what, vectors, dim, &mut unit)?;
        Ok((vectors.len() / dim, unit))
    }

    /// Unit rows in this ring's storage form.
    fn encode_unit(&self, unit: Vec<f32>) -> Prepared {
        match self.cfg.storage {
            Storage::F32 => Prepared::F32(unit),
            Storage::Int8 | Storage::Binary => {
                let dim = self.cfg.dim;
                let rb = quant::residual_bytes(dim);
                let n = unit.len() / dim;
                let mut codes = vec![0i8; unit.len()];
                let mut residuals = vec![0u8; n * rb];
                let scales = unit
                    .chunks_exact(dim)
                    .zip(codes.chunks_exact_mut(dim))
                    .zip(residuals.chunks_exact_mut(rb))
                    .map(|((x, c), r)| {
                        let scale = quant::quantize_i8(x, c);
                        quant::quantize_residual(x, c, scale, r);
                        scale
                    })
                    .collect();
                let bits = if self.cfg.storage == Storage::Binary {
                    sign_rows(&unit, dim)
                } else {
                    Vec::new()
                };
                Prepared::Int8 {
                    codes,
                    scales,
                    residuals,
                    bits,
                }
            }
        }
    }

    /// Adds `vectors.len() / dim` vectors (row-major) with their attributes and returns their
    /// ids. The batch is validated whole before anything is written: on error the ring is
    /// unchanged. Vectors are stored L2-normalised. An empty batch (with empty attribute
    /// lists) stores nothing and gets no ids.
    ///
    /// # Errors
    /// A wrong length, a NaN / infinite or all-zero vector, an attribute list whose length is
    /// not the number of vectors, a non-finite timestamp.
    pub fn ingest(&self, vectors: &[f32], attrs: &Attributes) -> Result<Range<u64>> {
        let (n, unit) = self.batch_rows("vector", vectors)?;
        attrs.check(n)?;
        if n == 0 {
            return Ok(self.no_ids());
        }
        let routes = self.route(&unit);
        self.write(n, &self.encode_unit(unit), attrs, now(), routes)
    }

    /// [`Ring::ingest`], then scores the batch against every standing query
    /// ([`Ring::subscribe`]) in one kernel pass and returns the events (item order, then
    /// subscription order) with the ids. Scores are exact f32 cosines, also on int8 rings.
    ///
    /// # Errors
    /// As [`Ring::ingest`].
    pub fn ingest_matching(
        &self,
        vectors: &[f32],
        attrs: &Attributes,
    ) -> Result<(Range<u64>, Vec<Event>)> {
        let (n, unit) = self.batch_rows("vector", vectors)?;
        attrs.check(n)?;
        if n == 0 {
            return Ok((self.no_ids(), Vec::new()));
        }
        let routes = self.route(&unit);
        let ts_now = now();
        // f32 rings store the unit rows themselves: score from there, without a copy; int8
        // and binary rings keep a copy while a standing query is registered.
        let (prepared, copy) = match self.cfg.storage {
            Storage::F32 => (Prepared::F32(unit), None),
            Storage::Int8 | Storage::Binary => {
                let copy = (!self.standing.is_empty()).then(|| unit.clone());
                (self.encode_unit(unit), copy)
            }
        };
        let ids = self.write(n, &prepared, attrs, ts_now, routes)?;
        // Matched against the standing queries registered now: one whose `subscribe`
        // returned while the batch was written gets its events, the first one too (when the
        // batch began there was none).
        if self.standing.is_empty() {
            return Ok((ids, Vec::new()));
        }
        let recomputed;
        let unit = match (&prepared, &copy) {
            (_, Some(u)) | (Prepared::F32(u), None) => u,
            (Prepared::Int8 { .. }, None) => {
                recomputed = self.unit_rows("vector", vectors)?.1;
                &recomputed
            }
        };
        let ts = |i: usize| attrs.timestamps.get(i).copied().unwrap_or(ts_now);
        let events =
            self.standing
                .match_batch(self.kernels, unit, self.cfg.dim, ids.start, attrs, &ts);
        Ok((ids, events))
    }

    /// Registers a standing query (a vector of the ring's dimension); returns its id.
    ///
    /// # Errors
    /// A query of the wrong length, NaN / infinite or zero; a spec with neither threshold nor
    /// `top_k`, a `top_k` of 0 or a non-finite threshold.
    pub fn subscribe(&self, query: &[f32], spec: StandingSpec) -> Result<u64> {
        let id = self.reserve_subscription();
        self.subscribe_as(id, query, spec)?;
        Ok(id)
    }

    /// A subscription id for [`Ring::subscribe_as`]: a caller that routes events by id sets
    /// up the receiver first, so that no event of the new query finds none.
    pub fn reserve_subscription(&self) -> u64 {
        self.standing.reserve()
    }

    /// [`Ring::subscribe`] under an id from [`Ring::reserve_subscription`].
    ///
    /// # Errors
    /// As [`Ring::subscribe`]; an id not reserved, or registered already.
    pub fn subscribe_as(&self, id: u64, query: &[f32], spec: StandingSpec) -> Result<()> {
        let (n, unit) = self.unit_rows("query", query)?;
        if n != 1 {
            return Err(RingError::Dimension {
                what: "query",
                got: query.len(),
                expected: self.cfg.dim,
            });
        }
        self.standing.add(id, &unit, spec)
    }

    /// Removes a standing query; false when no subscription has this id.
    pub fn unsubscribe(&self, id: u64) -> bool {
        self.standing.remove(id, self.cfg.dim)
    }

    /// Ids of the registered standing queries, oldest first.
    #[must_use]
    pub fn subscriptions(&self) -> Vec<u64> {
        self.standing.ids()
    }

    /// The newest `n` items still held that pass `filter`, newest first.
    ///
    /// # Errors
    /// An empty time window.
    pub fn recent(&self, n: usize, filter: &Filter) -> Result<Vec<Item>> {
        filter.check()?;
        // A walk down from the newest id misses those overwritten before it reaches them.
        let walk = || {
            let end = self.next_id.load(Ordering::Acquire);
            let floor = end.saturating_sub(self.capacity() as u64);
            let mut out = Vec::with_capacity(n.min(self.capacity()));
            let mut id = end;
            while id > floor && out.len() < n {
                id -= 1;
                // The filter is checked before the item (its vector) is copied out.
                if let Some(Some(item)) = self.read_slot(id, |shard, slot| {
                    shard
                        .passes(slot, filter)
                        .then(|| self.item_at(shard, id, slot))
                }) {
                    out.push(item);
                }
            }
            out
        };
        Ok(self.settled(2, walk, |out| out.len() >= n))
    }

    /// The remembered answers of `filter` (None for a filter that keeps everything).
    fn memo(&self, filter: &Filter) -> Option<Arc<Memo>> {
        (!filter.is_empty()).then(|| {
            self.memos
                .of(filter, self.cfg.num_shards, self.cfg.shard_size)
        })
    }

    /// Whether the live item `id` in `slot` of `shard` passes `filter`, remembered in `memo`.
    #[inline]
    fn passes_memo(
        &self,
        memo: Option<&Memo>,
        filter: &Filter,
        shard: &Shard,
        id: u64,
        slot: usize,
    ) -> bool {
        let eval = || shard.passes(slot, filter);
        match memo {
            Some(m) => m.passes((id % self.cfg.num_shards as u64) as usize, slot, eval),
            None => eval(),
        }
    }

    /// How many held items pass `filter` (each shard read once, nothing copied out).
    ///
    /// # Errors
    /// An empty time window.
    pub fn count(&self, filter: &Filter) -> Result<usize> {
        filter.check()?;
        let count = || {
            self.shards
                .iter()
                .map(|s| s.read().ids_passing(filter).count())
                .sum()
        };
        Ok(self.settled(1, count, |_| false))
    }

    /// The ids of the items held that pass `filter`, oldest first.
    ///
    /// # Errors
    /// An empty time window.
    pub fn ids_passing(&self, filter: &Filter) -> Result<Vec<u64>> {
        filter.check()?;
        let read = || {
            let mut ids: Vec<u64> = Vec::new();
            for s in &self.shards {
                ids.extend(s.read().ids_passing(filter));
            }
            ids
        };
        let mut ids = self.settled(1, read, |_| false);
        ids.sort_unstable();
        Ok(ids)
    }

    /// Whether item `id` is held and passes `filter`.
    #[must_use]
    pub fn passes(&self, id: u64, filter: &Filter) -> bool {
        self.read_slot(id, |shard, slot| shard.passes(slot, filter))
            .unwrap_or(false)
    }

    /// Deletes the items `ids` that are held: searches, reads, snapshots and [`Ring::len`] no
    /// longer see them, and standing queries are not told. Returns the ids deleted, in the
    /// order given (ids not held, or repeated, are skipped).
    pub fn delete(&self, ids: &[u64]) -> Vec<u64> {
        self.delete_passing(ids, &Filter::default())
    }

    /// [`Ring::delete`] of those of `ids` that pass `filter` when their turn comes (checked
    /// under the shard's write lock: an item whose metadata was changed meanwhile so that it
    /// no longer passes stays).
    pub fn delete_passing(&self, ids: &[u64], filter: &Filter) -> Vec<u64> {
        self.change_each(ids, filter, |_, shard, _, slot| {
            let id = shard.ids[slot];
            shard.payload_bytes -=
                text_bytes(shard.texts[slot].as_ref()) + meta_bytes(shard.meta[slot].as_ref());
            shard.ids[slot] = id | DELETED;
            shard.texts[slot] = None;
            shard.meta[slot] = None;
            shard.len -= 1;
            // Counted with the item gone, inside the write (as `stats` reads them).
            self.deleted.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Changes the metadata of the items `ids` that are held and pass `filter` (checked as
    /// each is changed), in place: the `i`-th id gets `update(i)`. Each item keeps its id,
    /// vector, text and timestamp; filters see the new metadata from the next search on
    /// (remembered filter answers for it are forgotten); standing queries are not told.
    /// Returns the ids updated, each once, in the order given (ids not held, or not passing,
    /// are skipped; an id given twice gets both updates, in turn).
    pub fn update_metadata<'u>(
        &self,
        ids: &[u64],
        filter: &Filter,
        update: impl Fn(usize) -> &'u MetadataUpdate,
    ) -> Vec<u64> {
        let mut updated = self.change_each(ids, filter, |i, shard, s, slot| {
            // Read under the shard's write lock, as a writer of the slot does.
            let memos = self.memos.current();
            let new = update(i).apply(shard.meta[slot].as_ref());
            shard.payload_bytes = shard.payload_bytes - meta_bytes(shard.meta[slot].as_ref())
                + meta_bytes(new.as_ref());
            shard.meta[slot] = new;
            forget(&memos, s, slot);
        });
        // An id given twice was updated twice (in turn), and is one item updated.
        let mut seen = std::collections::HashSet::with_capacity(updated.len());
        updated.retain(|&id| seen.insert(id));
        updated
    }

    /// Runs `change(i, shard, s, slot)` for each of `ids` (the `i`-th) that is held, in slot
    /// `slot` of shard `s`, and passes `filter`, checked under that shard's write lock, which
    /// `change` runs under; returns the ids changed, in the order given.
    fn change_each(
        &self,
        ids: &[u64],
        filter: &Filter,
        mut change: impl FnMut(usize, &mut Shard, usize, usize),
    ) -> Vec<u64> {
        let plain = filter.is_empty();
        let _writing = self.writing();
        let mut changed = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            if !is_live(id) {
                continue;
            }
            let (s, slot) = self.slot_of(id);
            let mut shard = self.shards[s].write();
            if shard.id_at(slot) != id || !(plain || shard.passes(slot, filter)) {
                continue;
            }
            change(i, &mut shard, s, slot);
            changed.push(id);
        }
        changed
    }

    /// Counts `n` searches answered elsewhere from this ring's items (by keywords) in
    /// [`RingStats::searches`].
    pub fn count_searches(&self, n: u64) {
        self.searches.fetch_add(n, Ordering::Relaxed);
    }

    /// Runs `f` while no batch is written: batches in flight finish first, new ones wait
    /// until it returns. For reads that must see the ring as one state across several calls
    /// (a ranking made elsewhere, then read back). `f` must not write to this ring; it may
    /// pause it again (a search inside a hybrid search's last try), which then just runs.
    pub fn with_writes_paused<R>(&self, f: impl FnOnce() -> R) -> R {
        thread_local! {
            /// The rings this thread holds paused (their addresses).
            static PAUSED: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        struct Resume;
        impl Drop for Resume {
            fn drop(&mut self) {
                PAUSED.with(|p| p.borrow_mut().pop());
            }
        }
        let me = std::ptr::from_ref(self) as usize;
        if PAUSED.with(|p| p.borrow().contains(&me)) {
            return f();
        }
        let _gate = self.gate.write();
        PAUSED.with(|p| p.borrow_mut().push(me));
        let _resume = Resume;
        f()
    }

    /// A writer's hold on the ring: the gate, shared with other writers (held off by
    /// [`Ring::with_writes_paused`]), and the write counted as begun, then as done when the
    /// hold is dropped.
    fn writing(&self) -> Writing<'_> {
        let gate = self.gate.read();
        self.writes_begun.fetch_add(1, Ordering::SeqCst);
        Writing {
            _gate: gate,
            done: &self.writes_done,
        }
    }

    /// `read()` as it ran while nothing was written, or as soon as `whole` takes it (a search
    /// that found `k`): up to `tries` times as writers come and go, then once with writes
    /// paused. A read of several shards, each under its own lock in turn, is no snapshot:
    /// while it runs, a writer can put items into shards it has read and replace others in
    /// shards it has not, and a search, count or walk then misses items that were held
    /// throughout (a search with a filter, on a small ring turning over, came back empty).
    fn settled<R>(&self, tries: usize, read: impl Fn() -> R, whole: impl Fn(&R) -> bool) -> R {
        for _ in 0..tries {
            let begun = self.writes_begun.load(Ordering::SeqCst);
            let idle = self.writes_done.load(Ordering::SeqCst) == begun;
            let out = read();
            if whole(&out) || (idle && self.writes_begun.load(Ordering::SeqCst) == begun) {
                return out;
            }
        }
        self.with_writes_paused(read)
    }

    /// Whether the item `id` is held.
    #[must_use]
    pub fn contains(&self, id: u64) -> bool {
        self.read_slot(id, |_, _| ()).is_some()
    }

    /// Writes a validated, prepared batch; returns its ids.
    fn write(
        &self,
        n: usize,
        prepared: &Prepared,
        attrs: &Attributes,
        ts_now: f64,
        routes: Option<Routes>,
    ) -> Result<Range<u64>> {
        let _writing = self.writing();
        let start = self
            .next_id
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |next| {
                next.checked_add(n as u64).filter(|&end| end <= MAX_IDS)
            })
            .map_err(|next| RingError::IdsExhausted { next, n })?;
        let end = start + n as u64;
        // Only the newest `capacity` of a batch can survive it; skip writing the rest.
        let first = start.max(end.saturating_sub(self.capacity() as u64));
        let dim = self.cfg.dim;
        let write_shard = |s: usize, lock: &RwLock<Shard>| {
            let nsh = self.cfg.num_shards as u64;
            let mut id = first + (s as u64 + nsh - first % nsh) % nsh;
            if id >= end {
                return;
            }
            let mut shard = lock.write();
            // Read under this shard's write lock: a memo made after it has nothing known yet
            // about the slots written here.
            let memos = self.memos.current();
            while id < end {
                let i = (id - start) as usize;
                let slot = ((id / nsh) % self.cfg.shard_size as u64) as usize;
                shard.ensure(slot, dim);
                let old = shard.ids[slot];
                // A concurrent writer may already have put a newer item here (or it was
                // deleted since: the tombstone keeps its id).
                if old == EMPTY || old & !DELETED < id {
                    let shard = &mut *shard;
                    match (&mut shard.vectors, &prepared) {
                        (Vectors::F32(dst), Prepared::F32(src)) => {
                            dst[slot * dim..(slot + 1) * dim]
                                .copy_from_slice(&src[i * dim..(i + 1) * dim]);
                        }
                        (
                            Vectors::Int8 {
                                codes,
                                scales,
                                residuals,
                                bits,
                            },
                            Prepared::Int8 {
                                codes: c,
                                scales: sc,
                                residuals: r,
                                bits: b,
                            },
                        ) => {
                            let rb = quant::residual_bytes(dim);
                            if !b.is_empty() {
                                let w = binary::words(dim);
                                binary::put_row(bits, slot, &b[i * w..(i + 1) * w]);
                            }
                            codes[slot * dim..(slot + 1) * dim]
                                .copy_from_slice(&c[i * dim..(i + 1) * dim]);
                            residuals[slot * rb..(slot + 1) * rb]
                                .copy_from_slice(&r[i * rb..(i + 1) * rb]);
                            scales[slot] = sc[i];
                        }
                        _ => unreachable!("prepared for this ring's storage"),
                    }
                    if !is_live(old) {
                        shard.len += 1;
                    }
                    shard.payload_bytes -= text_bytes(shard.texts[slot].as_ref())
                        + meta_bytes(shard.meta[slot].as_ref());
                    shard.ids[slot] = id;
                    forget(&memos, s, slot);
                    shard.ts[slot] = attrs.timestamps.get(i).copied().unwrap_or(ts_now);
                    shard.texts[slot] = attrs.texts.get(i).cloned().flatten();
                    // An empty map is no metadata: the same to filters, and to a snapshot.
                    shard.meta[slot] =
                        (attrs.metadata.get(i).cloned().flatten()).filter(|m| !m.is_empty());
                    shard.payload_bytes += text_bytes(shard.texts[slot].as_ref())
                        + meta_bytes(shard.meta[slot].as_ref());
                    shard.high = shard.high.max(slot + 1);
                }
                id += nsh;
            }
        };
        if PARALLEL.load(Ordering::Relaxed) && n * dim >= 1 << 16 {
            self.shards
                .par_iter()
                .enumerate()
                .for_each(|(s, lock)| write_shard(s, lock));
        } else {
            for (s, lock) in self.shards.iter().enumerate() {
                write_shard(s, lock);
            }
        }
        if let Some(routes) = routes {
            self.index_written(first..end, start, &routes);
        }
        Ok(start..end)
    }

    /// Unit queries in the form the kernels of this ring's storage want; int8 rings get
    /// 15-bit query codes, binary rings also sign bits (unless `exact`: then they scan their
    /// int8 copy as int8 rings do).
    fn prepare_queries(&self, queries: &[f32], exact: bool) -> Result<(usize, Query, Vec<f32>)> {
        let (nq, unit) = self.unit_rows("query", queries)?;
        let query = self.query_of(&unit, exact);
        Ok((nq, query, unit))
    }

    /// The queries whose unit rows are `unit`, as the ring's scans take them.
    fn query_of(&self, unit: &[f32], exact: bool) -> Query {
        let nq = unit.len() / self.cfg.dim;
        match self.cfg.storage {
            Storage::F32 => Query::F32(unit.to_vec()),
            Storage::Int8 | Storage::Binary => {
                let mut codes = vec![0i16; unit.len()];
                let scales = unit
                    .chunks_exact(self.cfg.dim)
                    .zip(codes.chunks_exact_mut(self.cfg.dim))
                    .map(|(x, c)| quant::quantize_query(x, c))
                    .collect();
                let binary = self.cfg.storage == Storage::Binary && !exact;
                let narrow = (nq > 1 && !binary).then(|| NarrowQueries::new(unit, self.cfg.dim));
                Query::Int8 {
                    codes,
                    scales,
                    narrow,
                    bits: binary.then(|| {
                        unit.chunks_exact(self.cfg.dim)
                            .map(BinaryQuery::new)
                            .collect()
                    }),
                }
            }
        }
    }

    /// Scores `nq` queries against the slots `rows` of `shard`, chunk by chunk, calling
    /// `visit(query, first_slot, scores)` with the scores of slots `first_slot..` for that
    /// query.
    fn scan_shard(
        &self,
        shard: &Shard,
        rows: Range<usize>,
        q: &Query,
        nq: usize,
        bufs: &mut ScanBufs,
        mut visit: impl FnMut(usize, usize, &[f32]),
    ) {
        let dim = self.cfg.dim;
        let k = self.kernels;
        let mut start = rows.start;
        let ScanBufs { fbuf, ibuf, hbuf } = bufs;
        while start < rows.end {
            let end = (start + CHUNK).min(rows.end);
            let m = end - start;
            match (&shard.vectors, q) {
                (Vectors::F32(v), Query::F32(qs)) => {
                    fbuf.resize(nq * m, 0.0);
                    let rows = &v[start * dim..end * dim];
                    if nq == 1 {
                        k.scan_f32(qs, rows, fbuf);
                    } else {
                        k.scan_multi_f32(qs, nq, rows, fbuf);
                    }
                }
                (
                    Vectors::Int8 { bits, .. },
                    Query::Int8 {
                        bits: Some(qbits), ..
                    },
                ) => {
                    // Ranked by the asymmetric score; the best are rescored from the codes.
                    let from = binary::blocked_len(start, binary::words(dim));
                    fbuf.resize(nq * m, 0.0);
                    for (bq, f) in qbits.iter().zip(fbuf.chunks_exact_mut(m)) {
                        bq.scores(&bits[from..], hbuf, f);
                    }
                }
                (
                    Vectors::Int8 { codes, scales, .. },
                    Query::Int8 {
                        codes: qc,
                        scales: qs,
                        narrow,
                        bits: None,
                    },
                ) => {
                    ibuf.resize(nq * m, 0);
                    let rows = &codes[start * dim..end * dim];
                    // A batch scans its 7-bit codes; a single query has no others.
                    let qs = if let Some(narrow) = narrow {
                        k.scan_multi_narrow(narrow, rows, ibuf);
                        narrow.scales()
                    } else {
                        k.scan_i8(qc, rows, ibuf);
                        qs
                    };
                    // Each query's scores are scaled and visited while they are in L1.
                    let row_scales = &scales[start..end];
                    fbuf.resize(m, 0.0);
                    let f = &mut fbuf[..m];
                    for (j, (i, &qs)) in ibuf.chunks_exact(m).zip(qs.iter()).enumerate() {
                        for ((f, &i), &s) in f.iter_mut().zip(i).zip(row_scales) {
                            *f = i as f32 * (s * qs);
                        }
                        visit(j, start, f);
                    }
                    start = end;
                    continue;
                }
                _ => unreachable!("queries are prepared for this ring's storage"),
            }
            for (j, row) in fbuf.chunks_exact(m).enumerate() {
                visit(j, start, row);
            }
            start = end;
        }
    }

    /// The `k` items most similar to `query` (cosine) among those passing `filter`, best
    /// first; equal scores put the newer item first. Fewer than `k` when fewer match (any
    /// `k` is taken: it is capped at the capacity).
    ///
    /// # Errors
    /// `k == 0`, an empty time window, a query of the wrong length, NaN / infinite or zero.
    pub fn search(&self, query: &[f32], k: usize, filter: &Filter) -> Result<Vec<Hit>> {
        if k == 0 {
            return Err(RingError::ZeroK);
        }
        // No more than the ring can hold: a huge `k` allocates nothing it cannot fill.
        let k = k.min(self.capacity());
        filter.check()?;
        let (_, q, unit) = self.prepare_queries(query, filter.exact)?;
        self.searches.fetch_add(1, Ordering::Relaxed);
        if matches!(q, Query::Int8 { .. }) || self.index_serves(filter) {
            // Candidates to rescore (an int8 scan's, a binary scan's, the index's): ranked as
            // (score, key) pairs ([`Ring::refine`]), hits made of the best, read back once the
            // ranking is done. A batch written or deleted meanwhile can take a ranked item (an
            // int8 or binary one is dropped when rescored), or a metadata update make it fail the
            // filter, and the hits are short of `k`: settled as every read of several shards
            // is ([`Ring::settled`]; the ring can turn over while a search waits for a core).
            let read = || {
                self.best_per_query(&q, &unit, 1, k, filter)
                    .swap_remove(0)
                    .into_iter()
                    .filter_map(|(score, key)| self.hit_passing(EMPTY - key, score, filter))
                    .collect::<Vec<Hit>>()
            };
            return Ok(self.settled(2, read, |hits| hits.len() >= k));
        }
        Ok(self.settled(2, || self.scan_hits(&q, k, filter), |hits| hits.len() >= k))
    }

    /// The `k` best hits of an f32 scan of every item passing `filter`.
    fn scan_hits(&self, q: &Query, k: usize, filter: &Filter) -> Vec<Hit> {
        let plain = filter.is_empty();
        let memo = self.memo(filter);
        // An f32 scan: its scores are exact, so its best `k` are the answer.
        // Each thread keeps the best `k` it has seen over all its tasks (`seen`): an item
        // that does not enter it cannot be in the global top-k, and its floor rises from
        // task to task, so most score blocks are skipped. What enters it also enters the
        // task's own top-k, read out as hits while the shard's lock is held.
        let per_thread = self.fold_shards(
            1,
            || (TopK::new(k), Vec::new(), ScanBufs::default()),
            |(seen, hits, bufs): &mut (TopK, Vec<Hit>, ScanBufs), shard, rows| {
                let mut top = TopK::new(k);
                self.scan_shard(shard, rows, q, 1, bufs, |_, first, scores| {
                    seen.offer_scores(scores, |seen, r, score| {
                        let slot = first + r;
                        let id = shard.ids[slot];
                        // Newer first on ties: the key orders ascending.
                        let key = EMPTY - id;
                        if is_live(id)
                            && seen.accepts(score, key)
                            && (plain || self.passes_memo(memo.as_deref(), filter, shard, id, slot))
                        {
                            seen.push(score, key);
                            top.push(score, key);
                        }
                    });
                });
                hits.extend(top.into_sorted_vec().into_iter().map(|(score, key)| {
                    let id = EMPTY - key;
                    shard.hit(id, self.slot_of(id).1, score)
                }));
                // Only this thread's best k can be in the global top-k (`seen` holds them).
                if hits.len() > k.saturating_mul(2) {
                    hits.select_nth_unstable_by(k - 1, best_first);
                    hits.truncate(k);
                }
            },
        );
        let mut hits: Vec<Hit> = per_thread.into_iter().flat_map(|(_, h, _)| h).collect();
        hits.sort_unstable_by(best_first);
        hits.truncate(k);
        hits
    }

    /// Top-`k` for each of `queries.len() / dim` queries in one pass over the ring (each
    /// stored row is read once for all queries); no queries give no rows.
    ///
    /// # Errors
    /// As [`Ring::search`].
    pub fn search_batch(&self, queries: &[f32], k: usize, filter: &Filter) -> Result<BatchResult> {
        if k == 0 {
            return Err(RingError::ZeroK);
        }
        let k = k.min(self.capacity());
        filter.check()?;
        if queries.is_empty() {
            // No queries: no rows, as wide as a query's would be at most.
            return Ok(BatchResult {
                scores: Vec::new(),
                ids: Vec::new(),
                nq: 0,
                k: k.min(self.len()),
            });
        }
        let (nq, q, unit) = self.prepare_queries(queries, filter.exact)?;
        self.searches.fetch_add(nq as u64, Ordering::Relaxed);
        // A query short of `k` while writers ran (items, candidates overwritten meanwhile) is
        // settled as a search is.
        let found = self.settled(
            2,
            || self.best_per_query(&q, &unit, nq, k, filter),
            |found| found.iter().all(|best| best.len() >= k),
        );
        // A scan of every item finds as many for each query; the index finds what each
        // query's probed lists hold.
        let kk = found.iter().map(Vec::len).max().unwrap_or(0);
        let mut scores = Vec::with_capacity(nq * kk);
        let mut ids = Vec::with_capacity(nq * kk);
        for best in found {
            let pad = kk - best.len();
            for (s, key) in best {
                scores.push(s);
                ids.push(EMPTY - key);
            }
            scores.extend(std::iter::repeat_n(f32::NEG_INFINITY, pad));
            ids.extend(std::iter::repeat_n(BatchResult::NO_ID, pad));
        }
        Ok(BatchResult {
            scores,
            ids,
            nq,
            k: kk,
        })
    }

    /// The best `k` (score, key) pairs for each of the `nq` prepared queries (`unit`: the
    /// same queries as unit rows) passing `filter`, best first: from the index's probed lists
    /// when it serves the search, else one pass over the ring keeping each query's
    /// candidates; then their refinement ([`Ring::refine`]).
    fn best_per_query(
        &self,
        q: &Query,
        unit: &[f32],
        nq: usize,
        k: usize,
        filter: &Filter,
    ) -> Vec<Ranked> {
        if !filter.exact
            && let Some((mut found, thin)) = self.index_search(q, unit, k, filter)
        {
            // A query whose probed lists hold fewer items passing the filter than the
            // candidates it rescores (a selective filter, a narrow time window, deletes, a
            // large k) is answered by a scan of every item instead, as without the index,
            // and gets `k` whenever `k` pass. Those few were not the best of many: at 2^20
            // items, 100 passing gave recall@10 0.6 from the lists.
            let want = k.min(self.len());
            let short: Vec<usize> = (0..nq)
                .filter(|&j| thin[j] || found[j].len() < want)
                .collect();
            if !short.is_empty() {
                let dim = self.cfg.dim;
                let rows: Vec<f32> = short
                    .iter()
                    .flat_map(|&j| unit[j * dim..(j + 1) * dim].iter().copied())
                    .collect();
                let scanned = self.scan_best(&self.query_of(&rows, false), short.len(), k, filter);
                for (j, best) in short.into_iter().zip(scanned) {
                    found[j] = best;
                }
            }
            return found;
        }
        self.scan_best(q, nq, k, filter)
    }

    /// The best `k` (score, key) pairs for each of the `nq` prepared queries passing
    /// `filter`, best first: one pass over the ring keeping each query's candidates, then
    /// their refinement ([`Ring::refine`]).
    fn scan_best(&self, q: &Query, nq: usize, k: usize, filter: &Filter) -> Vec<Ranked> {
        let plain = filter.is_empty();
        let memo = self.memo(filter);
        // No more than the ring holds: a large `k_factor` keeps nothing it cannot fill.
        let kc = q.candidates(k, self.k_factor()).min(self.capacity());
        // One top-k per query and thread, its floor carried from task to task.
        let per_thread = self.fold_shards(
            nq,
            || {
                let tops: Vec<TopK> = (0..nq).map(|_| TopK::new(kc)).collect();
                (tops, ScanBufs::default())
            },
            |(tops, bufs): &mut (Vec<TopK>, ScanBufs), shard, rows| {
                self.scan_shard(shard, rows, q, nq, bufs, |j, first, scores| {
                    tops[j].offer_scores(scores, |top, r, score| {
                        let slot = first + r;
                        let id = shard.ids[slot];
                        if is_live(id)
                            && top.accepts(score, EMPTY - id)
                            && (plain || self.passes_memo(memo.as_deref(), filter, shard, id, slot))
                        {
                            top.push(score, EMPTY - id);
                        }
                    });
                });
            },
        );
        let mut merged: Vec<TopK> = (0..nq).map(|_| TopK::new(kc)).collect();
        for (tops, _) in per_thread {
            for (m, t) in merged.iter_mut().zip(tops) {
                m.merge(t);
            }
        }
        merged
            .into_iter()
            .enumerate()
            .map(|(j, m)| self.refine(q, j, m.into_sorted_vec(), k))
            .collect()
    }

    /// The best `k` of a scan's candidates for query `j`, best first: int8 and binary
    /// candidates are rescored from their codes and residuals. A candidate overwritten or
    /// deleted since the scan is dropped: its scan score is no cosine (a binary one's is a
    /// Hamming count, an int8 one's was off by up to 5e-3 in `search_vectors` under writers),
    /// and a query left short of `k` is read again ([`Ring::settled`]).
    fn refine(&self, q: &Query, j: usize, best: Ranked, k: usize) -> Ranked {
        if !matches!(q, Query::Int8 { .. }) {
            return best;
        }
        let ids: Vec<u64> = best.iter().map(|&(_, key)| EMPTY - key).collect();
        let mut best: Ranked = best
            .into_iter()
            .zip(self.rescore(q, j, &ids))
            .filter_map(|((_, key), refined)| refined.map(|r| (r, key)))
            .collect();
        imesde_simd::sort_best_first(&mut best);
        best.truncate(k);
        best
    }

    /// The item with this id, if the ring still holds it.
    #[must_use]
    pub fn get(&self, id: u64) -> Option<Item> {
        self.read_slot(id, |shard, slot| self.item_at(shard, id, slot))
    }

    /// The item `id` in `slot` of `shard`, its vector copied (dequantised for int8 storage).
    fn item_at(&self, shard: &Shard, id: u64, slot: usize) -> Item {
        let Hit {
            text, ts, metadata, ..
        } = shard.hit(id, slot, 0.0);
        Item {
            id,
            vector: self.vector_at(shard, slot),
            text,
            ts,
            metadata,
        }
    }

    /// The unit vector in `slot` of `shard` (dequantised for int8 and binary storage).
    fn vector_at(&self, shard: &Shard, slot: usize) -> Vec<f32> {
        let dim = self.cfg.dim;
        match &shard.vectors {
            Vectors::F32(v) => v[slot * dim..(slot + 1) * dim].to_vec(),
            Vectors::Int8 {
                codes,
                scales,
                residuals,
                ..
            } => {
                let rb = quant::residual_bytes(dim);
                let mut out = vec![0.0; dim];
                quant::dequantize_refined(
                    &codes[slot * dim..(slot + 1) * dim],
                    &residuals[slot * rb..(slot + 1) * rb],
                    scales[slot],
                    &mut out,
                );
                out
            }
        }
    }

    /// The item `id` as a search result with `score` (for results ranked elsewhere, such as
    /// by keywords), without copying its vector; `None` when it is not held.
    #[must_use]
    pub fn hit(&self, id: u64, score: f32) -> Option<Hit> {
        self.read_slot(id, |shard, slot| shard.hit(id, slot, score))
    }

    /// [`Ring::hit`] when the item still passes `filter`: for results ranked under a filter
    /// and read back afterwards, when its metadata may have changed meanwhile
    /// ([`Ring::update_metadata`]); `None` otherwise, as for an item no longer held.
    #[must_use]
    pub fn hit_passing(&self, id: u64, score: f32, filter: &Filter) -> Option<Hit> {
        self.read_slot(id, |shard, slot| {
            shard
                .passes(slot, filter)
                .then(|| shard.hit(id, slot, score))
        })
        .flatten()
    }

    /// The scores of the items `ids` for query `j` of an int8 scan from their codes and
    /// residuals; `None` for an item overwritten or deleted since the scan.
    fn rescore(&self, q: &Query, j: usize, ids: &[u64]) -> Vec<Option<f32>> {
        let Query::Int8 { codes, scales, .. } = q else {
            unreachable!("only int8 scans keep extra candidates")
        };
        let dim = self.cfg.dim;
        let rb = quant::residual_bytes(dim);
        let (qc, qs) = (&codes[j * dim..(j + 1) * dim], scales[j]);
        let mut residual = vec![0i8; dim];
        let mut dots = [0i32; 1];
        // The candidates' rows are scattered and mostly out of cache: ask for all of them
        // first, so their loads overlap.
        for &id in ids {
            self.read_slot(id, |shard, slot| {
                if let Vectors::Int8 {
                    codes, residuals, ..
                } = &shard.vectors
                {
                    imesde_simd::prefetch(&codes[slot * dim..(slot + 1) * dim]);
                    imesde_simd::prefetch(&residuals[slot * rb..(slot + 1) * rb]);
                }
            });
        }
        ids.iter()
            .map(|&id| {
                self.read_slot(id, |shard, slot| {
                    let Vectors::Int8 {
                        codes,
                        scales,
                        residuals,
                        ..
                    } = &shard.vectors
                    else {
                        unreachable!("int8 queries go with int8 rings")
                    };
                    self.kernels
                        .scan_i8(qc, &codes[slot * dim..(slot + 1) * dim], &mut dots);
                    let coarse = dots[0];
                    quant::unpack_residual(&residuals[slot * rb..(slot + 1) * rb], &mut residual);
                    self.kernels.scan_i8(qc, &residual, &mut dots);
                    quant::refined_score(coarse, dots[0], scales[slot], qs)
                })
            })
            .collect()
    }

    /// Runs `f` on the shard and slot holding `id`, under the shard's read lock.
    fn read_slot<T>(&self, id: u64, f: impl FnOnce(&Shard, usize) -> T) -> Option<T> {
        if !is_live(id) {
            return None;
        }
        let (s, slot) = self.slot_of(id);
        let shard = self.shards[s].read();
        (shard.id_at(slot) == id).then(|| f(&shard, slot))
    }

    /// Sizes and counters.
    #[must_use]
    pub fn stats(&self) -> RingStats {
        // Read while no write ran: amid a batch, its ids are handed out before its items are
        // held, and `evicted` (what is neither held nor deleted) counted items not yet
        // written, then fell back.
        let (len, payload_bytes, ingested, deleted) = self.settled(
            2,
            || {
                let (len, payload_bytes) = self
                    .shards
                    .iter()
                    .map(|s| {
                        let s = s.read();
                        (s.len, s.payload_bytes)
                    })
                    .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                let ingested = self.next_id.load(Ordering::Acquire);
                (
                    len,
                    payload_bytes,
                    ingested,
                    self.deleted.load(Ordering::Relaxed),
                )
            },
            |_| false,
        );
        // A ring that was made fits its address space.
        let slot_bytes = self.cfg.slot_bytes() as usize;
        RingStats {
            len,
            ingested,
            evicted: ingested.saturating_sub(len as u64 + deleted),
            deleted,
            searches: self.searches.load(Ordering::Relaxed),
            fixed_bytes: slot_bytes * self.capacity(),
            payload_bytes,
            index_bytes: self.ivf.read().as_ref().map_or(0, Ivf::heap_bytes),
            backend: self.kernels.backend().name(),
        }
    }
}

/// The lists a batch's items were assigned to, and the quantiser they were assigned with.
struct Routes {
    epoch: u64,
    /// Empty while the index is untrained.
    lists: Vec<u32>,
    /// The items' sign bits, row-major.
    signs: Vec<u64>,
}

/// The index (the `ivf` module): configuration, training, upkeep on writes, and search.
impl Ring {
    /// Sets (or with `None` removes) the index. A new index is untrained: searches scan every
    /// item until [`Ring::train_index`] has run.
    ///
    /// # Errors
    /// [`RingError::Index`] for a shape [`IvfConfig::check`] refuses.
    pub fn set_index(&self, cfg: Option<IvfConfig>) -> Result<()> {
        if let Some(c) = cfg {
            c.check(self.capacity())?;
        }
        *self.ivf.write() = cfg.map(|c| Ivf::new(c, self.cfg.dim, self.capacity()));
        Ok(())
    }

    /// Sets how many lists a search of the index scans from now on (faiss' `index.nprobe =
    /// n`); the lists and their training are kept. A search in flight keeps the number it
    /// began with.
    ///
    /// # Errors
    /// [`RingError::NoIndex`] without an index; [`RingError::Index`] unless
    /// `1 <= nprobe <= nlist`.
    pub fn set_nprobe(&self, nprobe: usize) -> Result<()> {
        let mut guard = self.ivf.write();
        let index = guard.as_mut().ok_or(RingError::NoIndex)?;
        let cfg = IvfConfig {
            nprobe,
            ..index.cfg
        };
        cfg.check(self.capacity())?;
        index.cfg = cfg;
        Ok(())
    }

    /// The index's configuration, if one is set.
    #[must_use]
    pub fn index(&self) -> Option<IvfConfig> {
        self.ivf.read().as_ref().map(|i| i.cfg)
    }

    /// Whether the index is set and trained (it then serves searches without `exact`).
    #[must_use]
    pub fn index_trained(&self) -> bool {
        self.ivf.read().as_ref().is_some_and(Ivf::is_trained)
    }

    /// Whether a (re)training is due: an untrained index and enough items held
    /// ([`IvfConfig::train_size`]), or a window turned over since the last training. The
    /// engine then runs [`Ring::train_index`] on a thread of its own.
    #[must_use]
    pub fn index_wants_training(&self) -> bool {
        self.reclaim_training();
        !self.training.is_locked() && self.training_due()
    }

    /// Whether the window moved on far enough since the index was trained (see
    /// [`Ring::index_wants_training`]), whether or not a training runs.
    fn training_due(&self) -> bool {
        let next = self.next_id.load(Ordering::Acquire);
        let guard = self.ivf.read();
        guard
            .as_ref()
            .is_some_and(|i| i.wants_training(next, self.len(), self.capacity()))
    }

    /// Items per list of the index (empty without one).
    #[must_use]
    pub fn index_list_sizes(&self) -> Vec<usize> {
        self.ivf
            .read()
            .as_ref()
            .map(Ivf::list_sizes)
            .unwrap_or_default()
    }

    /// Trains the index's quantiser on a sample of the held items (64 per list, spread
    /// evenly over the window) and assigns every held item to a list again. Writers are not
    /// held up: the assignment runs away from the index lock, and the slots written meanwhile
    /// are assigned again when the new lists are installed. When a training is already
    /// running, waits for it, and trains again if items have arrived since it began. Returns
    /// whether the index is trained.
    pub fn train_index(&self) -> bool {
        self.reclaim_training();
        if let Some(_one) = self.training.try_lock() {
            return self.train_holding();
        }
        // One is running (on the engine's thread), begun on the window of its time: waited
        // for (with a bound, as a backstop for a child forked before the holder recorded its
        // process), then trained again when items have arrived since it began.
        let Some(_one) = self
            .training
            .try_lock_for(std::time::Duration::from_mins(10))
        else {
            return self.index_trained();
        };
        let trained_at = self.ivf.read().as_ref().and_then(|i| i.trained_at);
        if trained_at == Some(self.next_id.load(Ordering::Acquire)) {
            return true;
        }
        self.train_holding()
    }

    /// Trains the index when a training is due ([`Ring::index_wants_training`]) and none is
    /// running (false at once then); whether it trained. Due is decided again once the
    /// training lock is held: a training that ran meanwhile (an explicit [`Ring::train_index`],
    /// the items since deleted) left nothing to do, and training again then would change the
    /// lists under the caller's feet.
    pub fn train_index_if_due(&self) -> bool {
        self.reclaim_training();
        match self.training.try_lock() {
            Some(_one) if self.training_due() => self.train_holding(),
            _ => false,
        }
    }

    /// A training with `training` held: records this process as its holder meanwhile (and
    /// clears it however the training ends).
    fn train_holding(&self) -> bool {
        struct Holder<'a>(&'a AtomicU32);
        impl Drop for Holder<'_> {
            fn drop(&mut self) {
                self.0.store(0, Ordering::Release);
            }
        }
        self.trainer.store(std::process::id(), Ordering::Release);
        let _holder = Holder(&self.trainer);
        self.train_locked()
    }

    /// In a child forked while a thread of its parent trained, frees the training lock that
    /// thread held: it never runs here, and a training would otherwise never start again.
    fn reclaim_training(&self) {
        let pid = self.trainer.load(Ordering::Acquire);
        if pid != 0
            && pid != std::process::id()
            && self
                .trainer
                .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // SAFETY: `trainer` is set only while `training` is held, so the lock was held
            // by the parent's thread when this process was forked; no thread here holds it,
            // and the exchange lets one thread free it, once.
            unsafe { self.training.force_unlock() };
        }
    }

    fn train_locked(&self) -> bool {
        let Some(cfg) = self.index() else {
            return false;
        };
        let dim = self.cfg.dim;
        // Every batch below `next` is written whole (the gate waits for writers in flight).
        let next = {
            let _gate = self.gate.write();
            self.next_id.load(Ordering::Acquire)
        };
        let floor = next.saturating_sub(self.capacity() as u64);
        let held: Vec<u64> = (floor..next).filter(|&id| self.contains(id)).collect();
        if held.len() < cfg.nlist {
            // Too few items for `nlist` lists (faiss refuses them too): the index stays as it
            // is, untrained or trained on earlier items.
            return self.index_trained();
        }
        let m = ivf::sample_size(cfg, held.len());
        let mut sample = Vec::with_capacity(m * dim);
        for t in 0..m {
            if let Some(v) = self.unit_of(held[t * held.len() / m]) {
                sample.extend(v);
            }
        }
        if sample.is_empty() {
            // Every item sampled was overwritten or deleted meanwhile.
            return self.index_trained();
        }
        let centroids = ivf::train(self.kernels, &sample, dim, cfg.nlist);
        let w = binary::words(dim);
        let mut lists = vec![ivf::NO_LIST; self.capacity()];
        let mut signs = vec![0u64; self.capacity() * w];
        for chunk in held.chunks(4096) {
            let mut units = Vec::with_capacity(chunk.len() * dim);
            let mut slots = Vec::with_capacity(chunk.len());
            for &id in chunk {
                if let Some(v) = self.unit_of(id) {
                    units.extend(v);
                    slots.push(self.global_slot(id));
                }
            }
            let assigned = ivf::assign_to(self.kernels, &centroids, dim, &units);
            for ((g, l), u) in slots.into_iter().zip(assigned).zip(units.chunks_exact(dim)) {
                lists[g] = l;
                binary::sign_bits(u, &mut signs[g * w..(g + 1) * w]);
            }
        }
        let mut guard = self.ivf.write();
        // Unless the index was replaced meanwhile by one of another shape (`nprobe` may
        // have changed: the lists are the same).
        let Some(index) = guard.as_mut().filter(|i| i.cfg.nlist == cfg.nlist) else {
            return false;
        };
        index.install(centroids, &lists, &signs, next, held.len());
        // Items written since `next` were routed with the old quantiser.
        let now = self.next_id.load(Ordering::Acquire);
        for id in next.max(now.saturating_sub(self.capacity() as u64))..now {
            if let Some(v) = self.unit_of(id) {
                let l = index.assign(self.kernels, &v)[0];
                index.set(self.global_slot(id), l, &sign_rows(&v, dim));
            }
        }
        true
    }

    /// `shard * shard_size + slot` of item `id`: its place in the index.
    fn global_slot(&self, id: u64) -> usize {
        let (s, slot) = self.slot_of(id);
        s * self.cfg.shard_size + slot
    }

    /// The unit vector of item `id`, if held.
    fn unit_of(&self, id: u64) -> Option<Vec<f32>> {
        self.read_slot(id, |shard, slot| self.vector_at(shard, slot))
    }

    /// The lists of a batch's unit rows, when there is an index.
    fn route(&self, unit: &[f32]) -> Option<Routes> {
        let guard = self.ivf.read();
        let index = guard.as_ref()?;
        let lists = index.assign(self.kernels, unit);
        let signs = if lists.is_empty() {
            Vec::new()
        } else {
            sign_rows(unit, self.cfg.dim)
        };
        Some(Routes {
            epoch: index.epoch,
            lists,
            signs,
        })
    }

    /// Puts the items `ids` (of a batch starting at `start`) in their lists, where they still
    /// hold their slots (a newer writer's item puts itself). Items routed with a quantiser
    /// replaced since are routed again.
    fn index_written(&self, ids: Range<u64>, start: u64, routes: &Routes) {
        let mut guard = self.ivf.write();
        let Some(index) = guard.as_mut().filter(|i| i.is_trained()) else {
            return;
        };
        let fresh = index.epoch == routes.epoch && !routes.lists.is_empty();
        let (dim, w) = (self.cfg.dim, binary::words(self.cfg.dim));
        for id in ids {
            let i = (id - start) as usize;
            let rerouted;
            let (list, signs) = if fresh {
                (routes.lists[i], &routes.signs[i * w..(i + 1) * w])
            } else if let Some(v) = self.unit_of(id) {
                rerouted = sign_rows(&v, dim);
                (index.assign(self.kernels, &v)[0], rerouted.as_slice())
            } else {
                continue;
            };
            if self.contains(id) {
                index.set(self.global_slot(id), list, signs);
            }
        }
    }

    /// Whether the index answers a search with `filter` (set, trained, not `exact`).
    fn index_serves(&self, filter: &Filter) -> bool {
        !filter.exact && self.index_trained()
    }

    /// The best `k` per query among the items of the `nprobe` lists nearest to it: their
    /// sign bits scored against the query ([`BinaryQuery`]) pick the best
    /// [`binary_candidates`] that pass `filter`,
    /// which are then scored from the ring: exactly on f32 rings, from codes and residuals on
    /// the others; and per query, whether its lists held fewer passing items than that
    /// (thin: not a choice among many). `None` when the index does not serve.
    fn index_search(
        &self,
        q: &Query,
        unit: &[f32],
        k: usize,
        filter: &Filter,
    ) -> Option<(Vec<Ranked>, Vec<bool>)> {
        let dim = self.cfg.dim;
        let guard = self.ivf.read();
        let index = guard.as_ref().filter(|i| i.is_trained())?;
        let kc = binary_candidates(k, self.k_factor()).min(self.capacity());
        let plain = filter.is_empty();
        let memo = self.memo(filter);
        let ss = self.cfg.shard_size;
        let found: Vec<Vec<(f32, u64)>> = unit
            .chunks_exact(dim)
            .map(|u| {
                let lists = index.probe(self.kernels, u);
                let mut top = TopK::new(kc);
                index.scan(&lists, &BinaryQuery::new(u), &mut top, |top, score, g| {
                    let shard = self.shards[g / ss].read();
                    let slot = g % ss;
                    let id = shard.id_at(slot);
                    if is_live(id)
                        && top.accepts(score, EMPTY - id)
                        && (plain || self.passes_memo(memo.as_deref(), filter, &shard, id, slot))
                    {
                        top.push(score, EMPTY - id);
                    }
                });
                top.into_sorted_vec()
            })
            .collect();
        drop(guard);
        let thin = found.iter().map(|best| best.len() < kc).collect();
        Some((
            found
                .into_iter()
                .enumerate()
                .map(|(j, best)| {
                    let mut best: Ranked = match q {
                        Query::F32(qs) => best
                            .into_iter()
                            .filter_map(|(_, key)| {
                                self.read_slot(EMPTY - key, |shard, slot| {
                                    let Vectors::F32(v) = &shard.vectors else {
                                        unreachable!("f32 queries go with f32 rings")
                                    };
                                    let row = &v[slot * dim..(slot + 1) * dim];
                                    (self.kernels.dot_f32(&qs[j * dim..(j + 1) * dim], row), key)
                                })
                            })
                            .collect(),
                        Query::Int8 { .. } => {
                            let ids: Vec<u64> = best.iter().map(|&(_, key)| EMPTY - key).collect();
                            best.into_iter()
                                .zip(self.rescore(q, j, &ids))
                                .filter_map(|((_, key), s)| s.map(|s| (s, key)))
                                .collect()
                        }
                    };
                    imesde_simd::sort_best_first(&mut best);
                    best.truncate(k);
                    best
                })
                .collect(),
            thin,
        ))
    }
}
