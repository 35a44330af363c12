use thiserror::Error;

/// Everything the ring can refuse. Each variant says what was wrong and what was expected.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum RingError {
    /// A size parameter was zero.
    #[error("{what} must be at least 1, got 0")]
    ZeroSize { what: &'static str },
    /// The ring would not fit in memory (or its size overflows).
    #[error(
        "a ring of {num_shards} shards x {shard_size} slots x {dim} dims needs {bytes} bytes, which cannot be allocated"
    )]
    Capacity {
        num_shards: usize,
        shard_size: usize,
        dim: usize,
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
        num_shards: usize,
        shard_size: usize,
        dim: usize,
        bytes: u128,
        limit: u128,
    },
    /// A snapshot whose items lie in more slots than the memory free now holds (the slots up
    /// to each item's are written as it is placed).
    #[error(
        "the snapshot's items lie in slots that need {bytes} bytes or more, beyond the {free} \
         bytes of memory (and swap) free now"
    )]
    LoadMemory { bytes: u128, free: u128 },
    /// More shards than a ring keeps ([`crate::MAX_SHARDS`]): each has its own lock and
    /// buffers, allocated up front.
    #[error("num_shards must be at most {max}, got {got}")]
    TooManyShards { got: usize, max: usize },
    /// Int8 storage supports dimensions up to [`imesde_simd::quant::MAX_I8_DIM`].
    #[error("dim {dim} is too large for int8 storage (at most {max})")]
    DimTooLarge { dim: usize, max: usize },
    /// A storage name other than `"f32"` (or `"float32"`), `"int8"` and `"binary"`.
    #[error("storage must be \"f32\", \"int8\" or \"binary\", got {0:?}")]
    UnknownStorage(String),
    /// An index shape that cannot work.
    #[error(
        "an index needs 1 <= nlist <= {max} (the ring's slots, at most 65536) and 1 <= nprobe \
         <= nlist, got nlist {nlist}, nprobe {nprobe}"
    )]
    Index {
        nlist: usize,
        nprobe: usize,
        max: usize,
    },
    /// An index setting changed on a ring that keeps no index.
    #[error("nprobe applies to an index and none is kept (index=\"ivf\" keeps one)")]
    NoIndex,
    /// A vector or query had the wrong number of values.
    #[error("{what} has {got} dims, the engine holds {expected}-dim vectors")]
    Dimension {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    /// A per-item list did not have one entry per vector.
    #[error("{what} has {got} entries, expected {expected} (one per vector)")]
    Length {
        what: &'static str,
        got: usize,
        expected: usize,
    },
    /// A vector contained NaN or an infinity.
    #[error("{what} {index} contains NaN or infinite values")]
    NonFinite { what: &'static str, index: usize },
    /// A vector was all zeros: it has no direction, so cosine similarity is undefined.
    #[error("{what} {index} is all zeros; cosine similarity needs a non-zero vector")]
    ZeroVector { what: &'static str, index: usize },
    /// `k` was zero.
    #[error("k must be at least 1, got 0")]
    ZeroK,
    /// A metadata value a snapshot could not hold (a NaN, a list inside a list): refused
    /// when given, not when the snapshot is loaded.
    #[error("{what}: {reason}")]
    Metadata { what: String, reason: String },
    /// A time window whose start is not before its end.
    #[error("since ({since}) must be earlier than until ({until})")]
    TimeWindow { since: f64, until: f64 },
    /// Snapshot bytes that are not a whole, unmodified snapshot.
    #[error("not a valid imesde snapshot: {0}")]
    Snapshot(String),
    /// A standing query's settings are invalid.
    #[error("{0}")]
    Standing(String),
    /// The ring has handed out every id it can ([`crate::MAX_IDS`]).
    #[error("cannot add {n} items: the engine's next id is {next} and ids stop at 2^63 - 1")]
    IdsExhausted { next: u64, n: usize },
    /// A timestamp was NaN or infinite; `what` names it (`timestamps[3]`).
    #[error("{what} is not a finite number")]
    Timestamp { what: String },
    /// A timestamp outside the years 1 to 9999 (seconds since the epoch): most often one in
    /// milliseconds or nanoseconds.
    #[error(
        "{what} is {value:e} s from 1970, outside the years 1 to 9999 a timestamp may name; \
         timestamps are seconds since the epoch (milliseconds? divide by 1e3; nanoseconds: by \
         1e9)"
    )]
    TimestampRange { what: String, value: f64 },
}
