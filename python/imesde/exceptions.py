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
    "StorageError",
    "TextEncodingError",
]
