"""Semantic IDs: RQ-KMeans codes as strings like ``"12-5-33"``, made unique on demand.

The API follows the ``semantic-id`` package, so switching is a change of import::

    from imesde import RQKMeans, SemanticIdEngine, SQLiteCollisionStore, UniqueIdResolver

    encoder = RQKMeans(n_levels=3, n_clusters=256, random_state=42)
    engine = SemanticIdEngine(encoder, UniqueIdResolver(SQLiteCollisionStore("ids.db")))
    engine.fit(X)
    ids = engine.unique_ids(X)  # "12-5-33", "12-5-33-1", ...

Training, encoding and decoding run in Rust (``imesde._imesde.RQCodebooks``): seeded k-means
per level on the residuals of the previous levels, parallel Lloyd iterations on SIMD kernels
whose rounding is the same on every CPU, so a ``random_state`` gives the same codebooks on
every machine and thread count.
"""

from __future__ import annotations

from imesde.semantic_ids.format import codes_to_ids
from imesde.semantic_ids.resolver import SemanticIdEngine, UniqueIdResolver
from imesde.semantic_ids.rqkmeans import RQKMeans
from imesde.semantic_ids.stores import (
    CollisionStore,
    InMemoryCollisionStore,
    SQLiteCollisionStore,
)

__all__ = [
    "CollisionStore",
    "InMemoryCollisionStore",
    "RQKMeans",
    "SQLiteCollisionStore",
    "SemanticIdEngine",
    "UniqueIdResolver",
    "codes_to_ids",
]
