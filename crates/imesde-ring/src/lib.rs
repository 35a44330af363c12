//! The sharded ring buffer at the heart of imesde.
//!
//! A [`Ring`] holds `num_shards x shard_size` slots. Item `id` (a global, increasing counter)
//! lives in shard `id % num_shards`, slot `(id / num_shards) % shard_size`, so the item that a
//! new one overwrites is always the globally oldest: the ring keeps exactly the newest
//! `capacity` items. Each shard has its own lock: writers to different shards, and readers,
//! proceed at the same time. Search scans the shards with the SIMD kernels of `imesde-simd`
//! on the calling thread and on rayon pool threads that join as they wake (`par`), each
//! thread keeping an exact top-k over the shards it scanned; the top-ks are merged.
//!
//! Vectors are stored L2-normalised, so scores are cosine similarities. With
//! [`Storage::Int8`] each vector is kept as 8-bit codes and one scale (a quarter of the
//! memory) and scored against a 15-bit query.
//!
//! Standing queries ([`Ring::subscribe`]) are scored against every batch that
//! [`Ring::ingest_matching`] adds, in one batched kernel pass, and matching items come back as
//! [`Event`]s.

#![warn(missing_docs)]

mod error;
mod item;
mod ivf;
mod memo;
mod memory;
mod meta;
mod par;
mod ring;
mod snapshot;
mod standing;

pub use error::RingError;
pub use item::{Attributes, Filter, Hit, Item, MAX_TIMESTAMP, MIN_TIMESTAMP, check_timestamp};
pub use ivf::IvfConfig;
pub use memory::{memory_available, memory_limit};
pub use meta::{
    CmpOp, FilterError, Key, KeyInterner, MAX_FILTER_DEPTH, Metadata, MetadataUpdate, Predicate,
    Value, key_hash,
};
pub use ring::{
    BatchResult, DEFAULT_K_FACTOR, MAX_IDS, MAX_SHARDS, Ring, RingConfig, RingStats, Storage,
    set_parallel,
};
pub use standing::{Event, StandingSpec};

/// Result alias of this crate.
pub type Result<T, E = RingError> = std::result::Result<T, E>;
