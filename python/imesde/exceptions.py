"""The exceptions imesde raises, all rooted at :class:`ImesdeError`.

Mistakes of shape or value also subclass :class:`ValueError`, of type or dtype
:class:`TypeError`, missing model files :class:`FileNotFoundError`, so code that catches the
builtin classes keeps working.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# Raised by the native module, which looks each class up here by name.


class ImesdeError(Exception):
    """Base class of every error raised by imesde.

    ``ingested_ids``: for an ``ingest_batch`` read in chunks that stopped at a bad one, the
    ids (an int64 array) of what the chunks before it stored; None for every other error.
    """

    ingested_ids: npt.NDArray[np.int64] | None = None


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


class ModelLoadError(ImesdeError):
    """A model, tokenizer or the ONNX Runtime library cannot be loaded."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """A model or tokenizer file does not exist, or the default model is not installed."""


class EmbeddingError(ImesdeError):
    """Tokenizing or running the model failed for a batch of texts."""


class StorageError(ImesdeError, OSError):
    """A file could not be read or written."""


class IndexCorruptError(ImesdeError, ValueError):
    """A saved file is not an imesde file, or is truncated, modified or of another version."""


class InternalError(ImesdeError):
    """A bug in imesde stopped a call (a Rust panic, caught): the message names the call. The
    object it was called on is still usable. Please report it."""


class OutOfRangeError(InvalidValueError, OverflowError):
    """An integer is outside the range imesde takes: a negative id, a seed of 2**64 or more."""


class TextEncodingError(InvalidValueError, UnicodeEncodeError):
    """A text cannot be encoded as UTF-8: it holds a lone surrogate such as ``'\\ud800'``."""


class ShardUnavailableError(ImesdeError):
    """A shard of an ``imesde.distributed.ShardedEngine`` cannot answer (its actor died or
    cannot be reached); ``shard`` is its index. Restore it with ``restore_shard(shard)``, or
    pass ``allow_partial=True`` to searches to answer from the other shards."""

    def __init__(self, message: str, *, shard: int) -> None:
        super().__init__(message)
        self.shard = shard

    def __reduce__(self) -> tuple[Any, ...]:
        # An exception unpickles as `cls(*args)`, which has no `shard`: a worker's error
        # broke the pool that carried it (multiprocessing, concurrent.futures).
        return (functools.partial(type(self), shard=self.shard), self.args, self.__dict__)


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
