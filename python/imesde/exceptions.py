"""The exceptions imesde raises, all rooted at :class:`ImesdeError`.

Mistakes of shape or value also subclass :class:`ValueError`, of type or dtype
:class:`TypeError`, so code that catches the builtin classes keeps working.
"""

from imesde._imesde import (
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
    "ImesdeError",
    "InvalidValueError",
    "ItemNotFoundError",
    "ShapeError",
]
