"""Typed interface of the native module ``imesde._imesde``."""

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeAlias, final, overload

import numpy as np
import numpy.typing as npt

__version__: str

_F32Array: TypeAlias = npt.NDArray[np.float32]
_Timestamp: TypeAlias = float | int | datetime

class ImesdeError(Exception):
    """Base class of every error raised by imesde."""

class ShapeError(ImesdeError, ValueError):
    """An array or list has the wrong shape, length or memory layout."""

class DimensionMismatchError(ShapeError):
    """A vector's dimension differs from the engine's."""

class InvalidValueError(ImesdeError, ValueError):
    """A value is out of range: NaN or infinite numbers, a zero vector, k <= 0, a zero size."""

class DTypeError(ImesdeError, TypeError):
    """An argument has the wrong type or dtype (imesde never casts silently)."""

class CapacityError(ImesdeError, MemoryError):
    """The requested ring is too large to allocate."""

class ItemNotFoundError(ImesdeError, KeyError):
    """No item with this id is held (never ingested, or already overwritten)."""

@final
class Hit:
    """One search result. Unpacks as ``(text, score)``."""

    @property
    def id(self) -> int:
        """Global id of the item (its position in the stream)."""
    @property
    def text(self) -> str | None:
        """The item's text, or None."""
    @property
    def score(self) -> float:
        """Cosine similarity to the query."""
    @property
    def ts(self) -> float:
        """_Timestamp in seconds since the Unix epoch."""
    @property
    def metadata(self) -> dict[str, str] | None:
        """The item's metadata as a new dict, or None."""
    def __len__(self) -> int: ...
    @overload
    def __getitem__(self, index: Literal[0, -2], /) -> str | None: ...
    @overload
    def __getitem__(self, index: Literal[1, -1], /) -> float: ...
    @overload
    def __getitem__(self, index: int, /) -> str | float | None: ...
    def __iter__(self) -> Iterator[Any]: ...

@final
class Item:
    """An item read back with ``Engine.get``."""

    @property
    def id(self) -> int:
        """Global id."""
    @property
    def vector(self) -> _F32Array:
        """A copy of the stored unit-length vector (dequantised for int8 storage)."""
    @property
    def text(self) -> str | None:
        """The item's text, or None."""
    @property
    def ts(self) -> float:
        """_Timestamp in seconds since the Unix epoch."""
    @property
    def metadata(self) -> dict[str, str] | None:
        """The item's metadata as a new dict, or None."""

@final
class Engine:
    """An in-memory semantic search engine over a bounded stream of vectors.

    Holds the newest ``num_shards * shard_size`` items; older ones are overwritten. Vectors
    are stored L2-normalised, scores are cosine similarities, search is exact.
    """

    def __new__(
        cls,
        dim: int,
        *,
        num_shards: int = 16,
        shard_size: int = 1024,
        storage: str = "f32",
    ) -> Engine:
        """An engine for ``dim``-dimensional vectors holding ``num_shards * shard_size``
        items, stored as ``"f32"`` or ``"int8"`` (a quarter of the memory)."""
    def ingest_vectors(
        self,
        vectors: _F32Array,
        texts: Sequence[str | None] | None = None,
        *,
        timestamps: Sequence[_Timestamp] | None = None,
        metadata: Mapping[str, str] | Sequence[Mapping[str, str] | None] | None = None,
    ) -> npt.NDArray[np.uint64]:
        """Add vectors with optional texts, timestamps and metadata; return their ids."""
    def search_vector(
        self,
        query: _F32Array,
        k: int = 10,
        *,
        since: _Timestamp | None = None,
        until: _Timestamp | None = None,
        where: Mapping[str, str] | None = None,
    ) -> list[Hit]:
        """The ``k`` items most similar to ``query``, best first, optionally filtered."""
    def search_vectors(
        self, queries: _F32Array, k: int = 10
    ) -> tuple[_F32Array, npt.NDArray[np.int64]]:
        """Exact top-``k`` for a batch of queries: ``(scores, ids)`` of shape ``[nq, k']``."""
    def get(self, id: int) -> Item:
        """The item with this id; raises ``ItemNotFoundError`` if it is not held."""
    def __len__(self) -> int: ...
    @property
    def capacity(self) -> int:
        """Number of slots: the most items the engine holds."""
    @property
    def dim(self) -> int:
        """Dimension of the stored vectors."""
    @property
    def num_shards(self) -> int:
        """Number of shards."""
    @property
    def shard_size(self) -> int:
        """Slots per shard."""
    @property
    def storage(self) -> str:
        """``"f32"`` or ``"int8"``."""
    def stats(self) -> dict[str, Any]:
        """Counters and sizes of the engine."""

def cosine_similarity(a: _F32Array, b: _F32Array) -> Any:
    """Cosine similarity: a float for two 1-D vectors, else the ``[n, m]`` float32 matrix."""

def batch_cosine_similarity(query: _F32Array, vectors: _F32Array) -> _F32Array:
    """Cosine similarity of one query against every row of ``vectors``."""

def euclidean_distance(a: _F32Array, b: _F32Array) -> Any:
    """Euclidean distance; a float for two vectors, else the ``[n, m]`` matrix."""

def manhattan_distance(a: _F32Array, b: _F32Array) -> Any:
    """Manhattan distance; a float for two vectors, else the ``[n, m]`` matrix."""

def normalize_l2(x: _F32Array) -> _F32Array:
    """A unit-length copy of ``x`` or of each of its rows."""

def top_k(scores: _F32Array, k: int = 10) -> tuple[npt.NDArray[np.int64], _F32Array]:
    """``(indices, values)`` of the ``k`` largest scores, best first."""

def simd_backend() -> str:
    """The SIMD backend chosen for this CPU."""
