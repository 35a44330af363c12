"""Checks of arguments shared by the Python modules (the native module has its own): integers
(an int or a numpy integer scalar, never a bool, a float cut short or an array) and batches
(any iterable, never a lone string read as its characters); and the rules of the native engine
that Python code applies too (a percentile threshold, a running top-k)."""

from __future__ import annotations

import heapq
import importlib
import numbers
import operator
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta
from typing import Any, TypeVar

import numpy as np

from imesde.exceptions import DTypeError, InvalidValueError, OutOfRangeError, ShapeError

T = TypeVar("T")


def percentile(value: str) -> float | None:
    """The NN of a percentile threshold ``"pNN"`` as the engine reads it (digits with an
    optional fraction, 0 <= NN < 100), None for a string that is not one."""
    digits = value[1:] if value.startswith("p") else ""
    plain = digits.replace(".", "", 1).isdigit() and digits.isascii()
    pct = float(digits) if plain else -1.0
    return pct if 0.0 <= pct < 100.0 else None


def enters_top_k(best: list[float], k: int | None, score: float) -> bool:
    """Whether a match with ``score`` enters a running top-``k`` whose scores so far are the
    min-heap ``best`` (updated), by one engine's rule: fewer than ``k`` so far, or better than
    the worst of them; always without ``k``."""
    if k is None:
        return True
    if len(best) < k:
        heapq.heappush(best, score)
        return True
    if score > best[0]:
        heapq.heapreplace(best, score)
        return True
    return False


def integer(value: object, what: str) -> int:
    """``value`` as an int; ``DTypeError`` naming ``what`` for anything else."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DTypeError(f"{what} must be an int, got {type(value).__name__}")
    try:
        return operator.index(value)
    except TypeError:  # numpy's timedelta64 is an Integral that is not an index
        raise DTypeError(f"{what} must be an int, got {type(value).__name__}") from None


def number(value: object, what: str) -> float:
    """``value`` (an int or float, numpy's too; not a bool) as a float; ``DTypeError`` naming
    ``what`` for anything else."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DTypeError(f"{what} must be a number, got {type(value).__name__}")
    return float(value)


def positive(value: object, what: str) -> int:
    """``value`` as an int of at least 1 (``InvalidValueError`` below)."""
    n = integer(value, what)
    if n < 1:
        raise InvalidValueError(f"{what} must be at least 1, got {n}")
    return n


def choice(value: object, what: str, options: tuple[str, ...]) -> str:
    """``value`` as one of the str ``options``: ``DTypeError`` for anything not a str (an
    array compared with ``==`` would answer elementwise), ``InvalidValueError`` for another
    str."""
    listed = " or ".join(map(repr, options))
    if not isinstance(value, str):
        raise DTypeError(f"{what} must be a str ({listed}), got {type(value).__name__}")
    if value not in options:
        raise InvalidValueError(f"{what} must be {listed}, got {value!r}")
    return value


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


def python_values(values: Any) -> Any:
    """A pyarrow ``Array`` or ``ChunkedArray`` as the list of its Python values (it iterates
    as pyarrow scalars); anything else as it is."""
    to_pylist = getattr(values, "to_pylist", None)
    return to_pylist() if callable(to_pylist) and not isinstance(values, list) else values


def listed(values: Iterable[Any], what: str) -> list[Any]:
    """:func:`iterate`'s items as a list."""
    return list(iterate(values, what))


def time_column(values: Any) -> Any:
    """A column of times given for as many items, checked as one (not a str or bytes, read as
    characters or ints; not a set or a mapping, in an order of their own; 1-D), and as
    :func:`datetime_column` reads it whole where it can be; None for one read a value at a
    time (a list, an iterator, an array of numbers)."""
    if isinstance(values, str | bytes | bytearray | AbstractSet | Mapping):
        raise DTypeError(
            "timestamps must be a list or array of times, one per item, got "
            f"{type(values).__name__}"
        )
    ndim = getattr(values, "ndim", 1)
    if isinstance(ndim, int) and ndim > 1:
        raise ShapeError(
            f"timestamps must be 1-D, one per item, got a {ndim}-D array (ravel() flattens it)"
        )
    return datetime_column(values)


def datetime_column(values: Any) -> Any:
    """A pandas Series or Index of datetimes (naive, or aware: then its instants in UTC;
    numpy- or pyarrow-backed) or a pyarrow array of timestamps as a numpy ``datetime64`` array
    in its own unit; None for anything else."""
    arrow = arrow_times(values, "timestamps")
    if arrow is not None:
        return arrow
    dtype: Any = getattr(values, "dtype", None)
    if isinstance(values, np.ndarray) or getattr(dtype, "kind", None) != "M":
        return None
    if not isinstance(dtype, np.dtype) and hasattr(dtype, "pyarrow_dtype"):
        # A pandas ArrowDtype: its values as the pyarrow array they are (pandas needs
        # pyarrow for one).
        pa: Any = importlib.import_module("pyarrow")
        return arrow_times(pa.array(values), "timestamps")
    unit = getattr(dtype, "unit", None) or np.datetime_data(dtype)[0]
    to_numpy = getattr(values, "to_numpy", None)
    return None if to_numpy is None else np.asarray(to_numpy(dtype=f"datetime64[{unit}]"))


def arrow_times(values: Any, what: str) -> Any:
    """A pyarrow ``Array`` or ``ChunkedArray`` of timestamps as a numpy ``datetime64`` array
    (instants in UTC, nulls as ``NaT``), a pyarrow timestamp scalar as a ``datetime64``; None
    for anything else that is not a time. A pyarrow date or time of day is a ``DTypeError``,
    as a ``datetime.date`` is."""
    if not type(values).__module__.startswith("pyarrow"):
        return None
    pa: Any = importlib.import_module("pyarrow")
    kind = getattr(values, "type", None)
    if not isinstance(kind, pa.DataType) or not pa.types.is_temporal(kind):
        return None
    if not pa.types.is_timestamp(kind):
        raise DTypeError(f"{what} must be seconds or datetimes, got pyarrow {kind}")
    if isinstance(values, pa.Scalar):
        return pa.array([values]).to_numpy(zero_copy_only=False)[0]
    if isinstance(values, pa.ChunkedArray):  # whose to_numpy takes no zero_copy_only before 13
        values = values.combine_chunks()
    return np.asarray(values.to_numpy(zero_copy_only=False))


_NAIVE_EPOCH = datetime(1970, 1, 1)


def naive_seconds(value: Any) -> float | None:
    """Seconds since the epoch of a naive ``datetime`` (local time) whose own ``timestamp()``
    failed, None for anything else: at an edge of its range (``datetime.min`` /
    ``datetime.max``, which the local zone puts in year 0 or 10000) the zone's offset two
    days in; on Windows, whose ``timestamp()`` of a naive time takes only 1970-01-02 to
    3000, the offset at the same date in the nearest year it takes (1972 / 2996, leap years
    both, so February 29 has one)."""
    if not isinstance(value, datetime) or value.tzinfo is not None:
        return None
    near = []
    if value.year in (1, 9999):
        near.append(value + timedelta(days=2 if value.year == 1 else -2))
    if value.year < 1972 or value.year > 2996:
        near.append(value.replace(year=1972 if value.year < 1972 else 2996))
    for t in near:
        try:
            offset = t.timestamp() - (t - _NAIVE_EPOCH).total_seconds()
        except (OSError, OverflowError, ValueError):
            continue
        return (value - _NAIVE_EPOCH).total_seconds() + offset
    return None


# Seconds in a datetime64 unit, and units in a second.
_SECONDS_IN = {"W": 604800, "D": 86400, "h": 3600, "m": 60, "s": 1}
_IN_A_SECOND = {"ms": 10**3, "us": 10**6, "ns": 10**9, "ps": 10**12, "fs": 10**15, "as": 10**18}


def datetime64_seconds(value: Any, what: str) -> Any:
    """Seconds since the epoch of a numpy ``datetime64`` scalar or array of any unit (float64,
    NaN for ``NaT``), from its count of units: numpy's own conversion to seconds wraps past
    int64 (a far date became a time before 1970) and fails for attoseconds. Years and months
    go through days (they have calendar lengths); ``OutOfRangeError`` where those overflow."""
    arr = np.asarray(value)
    unit, step = np.datetime_data(arr.dtype)
    counts = arr.view(np.int64)
    nat = counts == np.iinfo(np.int64).min
    if unit in ("Y", "M"):
        days = arr.astype("M8[D]")
        if np.any((days.astype(arr.dtype) != arr) & ~nat):
            raise OutOfRangeError(f"{what} is too far from 1970 for a number of seconds")
        seconds = days.view(np.int64).astype(np.float64) * 86400.0
    elif unit in _SECONDS_IN or unit in _IN_A_SECOND:
        # The count in units of one, exact where it fits int64 (a step such as [100ns]).
        if step != 1 and np.all(np.abs(counts[~nat]) <= np.iinfo(np.int64).max // step):
            counts, step = counts * step, 1
        if unit in _SECONDS_IN:
            seconds = counts.astype(np.float64) * float(step * _SECONDS_IN[unit])
        elif step == 1:
            # Whole seconds and the rest apart: f64 keeps the fraction of a large time.
            whole, rest = np.divmod(counts, _IN_A_SECOND[unit])
            seconds = whole.astype(np.float64) + rest.astype(np.float64) / _IN_A_SECOND[unit]
        else:
            seconds = counts.astype(np.float64) * step / _IN_A_SECOND[unit]
    else:  # "generic": only NaT has no unit
        seconds = np.full(arr.shape, np.nan)
    seconds = np.where(nat, np.nan, seconds)
    return seconds if arr.ndim else float(seconds)
