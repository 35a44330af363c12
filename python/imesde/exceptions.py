"""The exceptions imesde raises, all rooted at :class:`ImesdeError`.

Mistakes of shape or value also subclass :class:`ValueError`, of type or dtype
:class:`TypeError`, missing model files :class:`FileNotFoundError`, so code that catches the
builtin classes keeps working.
"""

from imesde._imesde import (
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
    StorageError,
    TextEncodingError,
)


class ShardUnavailableError(ImesdeError):
    """A shard of an ``imesde.distributed.ShardedEngine`` cannot answer (its actor died or
    cannot be reached); ``shard`` is its index. Restore it with ``restore_shard(shard)``, or
    pass ``allow_partial=True`` to searches to answer from the other shards."""

    def __init__(self, message: str, *, shard: int) -> None:
        super().__init__(message)
        self.shard = shard


__all__ = [
    "CapacityError",
    "DTypeError",
    "DimensionMismatchError",
    "EmbeddingError",
    "ImesdeError",
    "IndexCorruptError",
    "InternalError",
    "InvalidValueError",
    "ItemNotFoundError",
    "ModelLoadError",
    "ModelNotFoundError",
    "OutOfRangeError",
    "ShapeError",
    "ShardUnavailableError",
    "StorageError",
    "TextEncodingError",
]
