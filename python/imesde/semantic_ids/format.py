"""Codes as strings: ``"3-9-1"``, ``"<a_3><b_9><c_1>"`` or a formatter of the caller's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from imesde._args import choice
from imesde.exceptions import DTypeError, InvalidValueError, OutOfRangeError, ShapeError

__all__ = ["codes_to_ids"]

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _level_name(level: int) -> str:
    """The token name of a level: ``a`` .. ``z``, then ``aa``, ``ab``, ... (bijective base 26,
    so no two levels share a name)."""
    name = ""
    n = level + 1
    while n:
        n, r = divmod(n - 1, 26)
        name = _LETTERS[r] + name
    return name


def _codes(codes: Any) -> npt.NDArray[np.int64]:
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise ShapeError(f"codes must be 2-D (n, n_levels), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InvalidValueError(f"codes must be integers, got dtype {arr.dtype}")
    # uint64 codes beyond int64 would wrap to negative ones.
    if arr.size and arr.dtype == np.uint64 and int(arr.max()) > np.iinfo(np.int64).max:
        raise OutOfRangeError(f"code {int(arr.max())} is beyond the codes a codebook has")
    if arr.size and int(arr.min()) < 0:
        raise OutOfRangeError(f"code {int(arr.min())} is out of range: codes count from 0")
    return np.ascontiguousarray(arr, dtype=np.int64)


def codes_to_ids(
    codes: Any,
    *,
    sep: str = "-",
    fmt: Literal["plain", "token"] = "plain",
    formatter: Callable[[npt.NDArray[np.int64]], str] | None = None,
) -> list[str]:
    """Turn codes ``(n, n_levels)`` into strings.

    ``fmt="plain"`` joins the codes with ``sep`` (``"3-9-1"``); ``fmt="token"`` writes one token
    per level (``"<a_3><b_9><c_1>"``, for language models; after ``z`` come ``aa``, ``ab``, ...);
    ``formatter`` maps one row of codes to a string and overrides both.
    """
    arr = _codes(codes)
    if not isinstance(sep, str):
        raise DTypeError(f"sep must be str, got {type(sep).__name__}")
    if not sep or any(c.isdigit() for c in sep):
        # "1" + "23" and "12" + "3" would be one id.
        raise InvalidValueError(f"sep must be a non-empty str without digits, got {sep!r}")
    if formatter is not None:
        ids = [formatter(row) for row in arr]
        for i, got in enumerate(ids):
            if not isinstance(got, str):
                raise DTypeError(f"formatter must return str, got {type(got).__name__} for row {i}")
        return ids
    if choice(fmt, "fmt", ("plain", "token")) == "token":
        names = [_level_name(lvl) for lvl in range(arr.shape[1])]
        return [
            "".join(f"<{name}_{c}>" for name, c in zip(names, row, strict=True))
            for row in arr.tolist()
        ]
    return [sep.join(map(str, row)) for row in arr.tolist()]
