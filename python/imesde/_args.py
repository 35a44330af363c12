"""Checks of integer arguments shared by the Python modules (the native module has its own):
an int or a numpy integer scalar, never a bool, a float cut short or an array."""

from __future__ import annotations

import numbers
import operator

from imesde.exceptions import DTypeError, InvalidValueError


def integer(value: object, what: str) -> int:
    """``value`` as an int; ``DTypeError`` naming ``what`` for anything else."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DTypeError(f"{what} must be an int, got {type(value).__name__}")
    return operator.index(value)


def positive(value: object, what: str) -> int:
    """``value`` as an int of at least 1 (``InvalidValueError`` below)."""
    n = integer(value, what)
    if n < 1:
        raise InvalidValueError(f"{what} must be at least 1, got {n}")
    return n
