"""What the benchmark suites report besides pytest-benchmark's timings (they time with its
``benchmark`` fixture): percentiles of measured latencies, and the machine line every report
starts with."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable

import numpy as np


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
