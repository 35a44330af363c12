use thiserror::Error;

/// Everything the ring can refuse. Each variant says what was wrong and what was expected.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum RingError {
    /// A size parameter was zero.
    #[error("{what} must be at least 1, got 0")]
    ZeroSize {
        /// The parameter (`num_shards`, `shard_size`, `dim`, `k_factor`).
        what: &'static str,
    },
    /// The ring would not fit in memory (or its size overflows).
    #[error(
        "a ring of {num_shards} shards x {shard_size} slots x {dim} dims needs {bytes} bytes, which cannot be allocated"
    )]
    Capacity {
        /// The shards asked for.
        num_shards: usize,
        /// The slots per shard asked for.
        shard_size: usize,
        /// The vectors' dimension.
        dim: usize,
        /// The bytes the slots would need.
        bytes: u128,
    },
    /// The ring's slots alone need more memory than this process can ever hold
    /// ([`crate::memory_limit`]): accepted, it would be killed once the stream filled it.
    #[error(
        "a ring of {num_shards} shards x {shard_size} slots x {dim} dims needs {bytes} bytes \
         for its slots alone, more than this machine can hold ({limit} bytes of memory and \
         swap, or its cgroup's limit): fewer slots, or storage=\"int8\" / \"binary\" \
         (about 40 % of f32's bytes)"
    )]
    Memory {
        /// The shards asked for.
        num_shards: usize,
        /// The slots per shard asked for.
        shard_size: usize,
        /// The vectors' dimension.
        dim: usize,
        /// The bytes the slots would need.
        bytes: u128,
        /// The most memory (and swap) this process can hold.
        limit: u128,
    },
    /// A snapshot whose items lie in more slots than the memory free now holds (the slots up
    /// to each item's are written as it is placed).
    #[error(
        "the snapshot's items lie in slots that need {bytes} bytes or more, beyond the {free} \
         bytes of memory (and swap) free now"
    )]
    LoadMemory {
        /// The bytes the slots up to the items' would need, at least.
        bytes: u128,
        /// The memory (and swap) free when the snapshot was loaded.
        free: u128,
    },
    /// More shards than a ring keeps ([`crate::MAX_SHARDS`]): each has its own lock and
    /// buffers, allocated up front.
    #[error("num_shards must be at most {max}, got {got}")]
    TooManyShards {
        /// The shards asked for.
        got: usize,
        /// [`crate::MAX_SHARDS`].
        max: usize,
    },
    /// Int8 storage supports dimensions up to [`imesde_simd::quant::MAX_I8_DIM`].
    #[error("dim {dim} is too large for int8 storage (at most {max})")]
    DimTooLarge {
        /// The dimension asked for.
        dim: usize,
        /// The largest int8 storage holds.
        max: usize,
    },
    /// A storage name other than `"f32"` (or `"float32"`), `"int8"` and `"binary"`.
    #[error("storage must be \"f32\", \"int8\" or \"binary\", got {0:?}")]
    UnknownStorage(String),
    /// An index shape that cannot work.
    #[error(
        "an index needs 1 <= nlist <= {max} (the ring's slots, at most 65536) and 1 <= nprobe \
         <= nlist, got nlist {nlist}, nprobe {nprobe}"
    )]
    Index {
        /// The lists asked for.
        nlist: usize,
        /// The lists to probe asked for.
        nprobe: usize,
        /// The most lists this ring can have.
        max: usize,
    },
    /// An index setting changed on a ring that keeps no index.
    #[error("nprobe applies to an index and none is kept (index=\"ivf\" keeps one)")]
    NoIndex,
    /// A vector or query had the wrong number of values.
    #[error("{what} has {got} dims, the engine holds {expected}-dim vectors")]
    Dimension {
        /// What was given (`"vector"`, `"query"`).
        what: &'static str,
        /// Its values (or, for a batch, those past its last whole row).
        got: usize,
        /// The ring's dimension.
        expected: usize,
    },
    /// A per-item list did not have one entry per vector.
    #[error("{what} has {got} entries, expected {expected} (one per vector)")]
    Length {
        /// The list (`"texts"`, `"timestamps"`, `"metadata"`).
        what: &'static str,
        /// Its entries.
        got: usize,
        /// The vectors in the batch.
        expected: usize,
    },
    /// A vector contained NaN or an infinity.
    #[error("{what} {index} contains NaN or infinite values")]
    NonFinite {
        /// What was given (`"vector"`, `"query"`).
        what: &'static str,
        /// Its row in the batch.
        index: usize,
    },
    /// A vector was all zeros: it has no direction, so cosine similarity is undefined.
    #[error("{what} {index} is all zeros; cosine similarity needs a non-zero vector")]
    ZeroVector {
        /// What was given (`"vector"`, `"query"`).
        what: &'static str,
        /// Its row in the batch.
        index: usize,
    },
    /// `k` was zero.
    #[error("k must be at least 1, got 0")]
    ZeroK,
    /// A metadata value a snapshot could not hold (a NaN, a list inside a list): refused
    /// when given, not when the snapshot is loaded.
    #[error("{what}: {reason}")]
    Metadata {
        /// Whose metadata (`metadata[2]`: a batch's third item's; `metadata`: an update's).
        what: String,
        /// Why it cannot be held (naming the key).
        reason: String,
    },
    /// A time window whose start is not before its end.
    #[error("since ({since}) must be earlier than until ({until})")]
    TimeWindow {
        /// The window's start (seconds since the epoch).
        since: f64,
        /// Its end.
        until: f64,
    },
    /// Snapshot bytes that are not a whole, unmodified snapshot.
    #[error("not a valid imesde snapshot: {0}")]
    Snapshot(String),
    /// A standing query's settings are invalid.
    #[error("{0}")]
    Standing(String),
    /// The ring has handed out every id it can ([`crate::MAX_IDS`]).
    #[error("cannot add {n} items: the engine's next id is {next} and ids stop at 2^63 - 1")]
    IdsExhausted {
        /// The next id the ring would hand out.
        next: u64,
        /// The items of the batch refused.
        n: usize,
    },
    /// A timestamp was NaN or infinite; `what` names it (`timestamps[3]`).
    #[error("{what} is not a finite number")]
    Timestamp {
        /// The timestamp (`timestamps[3]`, `since`).
        what: String,
    },
    /// A timestamp outside the years 1 to 9999 (seconds since the epoch): most often one in
    /// milliseconds or nanoseconds.
    #[error(
        "{what} is {value:e} s from 1970, outside the years 1 to 9999 a timestamp may name; \
         timestamps are seconds since the epoch (milliseconds? divide by 1e3; nanoseconds: by \
         1e9)"
    )]
    TimestampRange {
        /// The timestamp (`timestamps[3]`).
        what: String,
        /// Its value, in seconds since the epoch.
        value: f64,
    },
}
