"""Checks of arguments shared by the Python modules (the native module has its own): integers
(an int or a numpy integer scalar, never a bool, a float cut short or an array) and batches
(any iterable, never a lone string read as its characters)."""

from __future__ import annotations

import numbers
import operator
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from imesde.exceptions import DTypeError, InvalidValueError

T = TypeVar("T")


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


def iterate(values: Iterable[T], what: str) -> Iterator[T]:
    """``iter(values)``; ``DTypeError`` naming ``what`` for a lone str or bytes (which would be
    read as its characters) and for anything that is not iterable."""
    if isinstance(values, str | bytes):
        raise DTypeError(
            f"{what} must be an iterable (a list), got a single {type(values).__name__}"
        )
    try:
        return iter(values)
    except TypeError:
        raise DTypeError(
            f"{what} must be an iterable (a list), got {type(values).__name__}"
        ) from None


def listed(values: Iterable[Any], what: str) -> list[Any]:
    """:func:`iterate`'s items as a list."""
    return list(iterate(values, what))
