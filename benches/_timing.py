"""The one timing helper of the benchmark scripts (the pytest-benchmark suites time with its
``benchmark`` fixture): wall-clock seconds of a call, of each of many calls, percentiles, and
the machine line every report starts with."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import numpy as np

T = TypeVar("T")
A = TypeVar("A")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()``'s result and the seconds it took."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def each(fn: Callable[[A], object], args: Iterable[A]) -> list[float]:
    """The seconds of ``fn(a)`` for each of ``args``, in order."""
    out = []
    for a in args:
        t = time.perf_counter()
        fn(a)
        out.append(time.perf_counter() - t)
    return out


def median(fn: Callable[[], object], repeat: int) -> float:
    """The median seconds of ``repeat`` calls of ``fn``, after one untimed warm-up call."""
    fn()
    return float(np.median([timed(fn)[1] for _ in range(repeat)]))


def percentile(xs: Iterable[float], p: float) -> float:
    """The ``p``-th percentile of ``xs`` (NaN when empty)."""
    values = np.fromiter(xs, dtype=np.float64)
    return float(np.percentile(values, p)) if values.size else float("nan")


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (the platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """The CPU, core count, imesde version and SIMD backend, as README tables name them."""
    import imesde

    return (
        f"{cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"imesde {imesde.__version__} ({imesde.simd_backend()})"
    )
