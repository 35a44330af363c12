"""What the benchmark suites share: the real data (scaled down when benchmarks are disabled, so
that ``make test`` runs every suite once as a smoke test) and the machine's line for reports.

Run them with ``make bench`` (tables with each contender's time relative to the anchor of its
group) or ``pytest benches --benchmark-disable`` (each case once).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from _data import stream_embeddings
from _timing import machine


def pytest_report_header() -> str:
    return f"machine: {machine()}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every suite reads the real data in ../shared/data: marked ``data`` as in tests/."""
    for item in items:
        item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session")
def smoke(request: pytest.FixtureRequest) -> bool:
    """True when benchmarks are disabled: each case runs once on a small input."""
    opt = request.config.getoption
    return bool(opt("benchmark_disable", default=False)) and not opt(
        "benchmark_enable", default=False
    )


@pytest.fixture(scope="session")
def stream_vectors(smoke: bool) -> npt.NDArray[np.float32]:
    """20,000 embedded stream texts (2,000 in a smoke run)."""
    return stream_embeddings(2_000 if smoke else 20_000)
