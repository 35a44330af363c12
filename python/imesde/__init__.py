"""imesde: in-memory semantic search over real-time streams.

The newest ``num_shards * shard_size`` items live in a sharded ring buffer; search is exact
(cosine), parallel over shards and SIMD-accelerated, and runs while ingestion continues.
"""

from imesde._imesde import (
    Engine,
    Hit,
    Item,
    __version__,
    batch_cosine_similarity,
    cosine_similarity,
    euclidean_distance,
    manhattan_distance,
    normalize_l2,
    simd_backend,
    top_k,
)
from imesde.exceptions import (
    CapacityError,
    DimensionMismatchError,
    DTypeError,
    ImesdeError,
    InvalidValueError,
    ItemNotFoundError,
    ShapeError,
)

__all__ = [
    "CapacityError",
    "DTypeError",
    "DimensionMismatchError",
    "Engine",
    "Hit",
    "ImesdeError",
    "InvalidValueError",
    "Item",
    "ItemNotFoundError",
    "ShapeError",
    "__version__",
    "batch_cosine_similarity",
    "cosine_similarity",
    "euclidean_distance",
    "manhattan_distance",
    "normalize_l2",
    "simd_backend",
    "top_k",
]
