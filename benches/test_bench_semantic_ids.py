"""Ingesting a stream with semantic ids attached: 20,000 stream vectors in batches of 256 into
an ``Engine`` labelling each item with a unique RQ-KMeans id (3 levels of 256).

Contenders, one group: no ids (the floor), ids from imesde's ``SemanticIdEngine`` (labelled
in Rust), and the anchor: the same ids made by a Python function per batch with the pure-Python
in-memory store of imesde 0.x (vectors copied to numpy, encoded, formatted and made unique in
Python), which is how every labeller ran before the engine crate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
import pytest
from imesde.semantic_ids.stores import _claim

BATCH = 256


class PythonStore:
    """The in-memory store as imesde 0.x wrote it: dicts and a lock, the claim rule in Python."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._issued: set[str] = set()
        self._owned: dict[tuple[str, str], str] = {}

    def next_suffix(self, key: str) -> int:
        with self._lock:
            n = self._counts.get(key, 0)
            self._counts[key] = n + 1
            return n

    def claim(
        self, keys: Sequence[str], sep: str = "-", owners: Sequence[str] | None = None
    ) -> list[str]:
        def take(cand: str, owner: str | None) -> bool:
            if cand in self._issued:
                return False
            self._issued.add(cand)
            return True

        with self._lock:
            out, counts = _claim(
                keys,
                owners,
                sep,
                lambda k: self._counts.get(k, 0),
                lambda k, o: self._owned.get((k, o)),
                take,
            )
            self._counts.update(counts)
            return out


@pytest.fixture(scope="module")
def encoder(stream_vectors: npt.NDArray[np.float32]) -> imesde.RQKMeans:
    return imesde.RQKMeans(3, 256, random_state=0).fit(stream_vectors)


def labeller(kind: str, encoder: imesde.RQKMeans) -> Callable[[Any], list[str]] | None:
    if kind == "none":
        return None
    if kind == "rust":
        return imesde.SemanticIdEngine(encoder)
    legacy = imesde.SemanticIdEngine(encoder, imesde.UniqueIdResolver(PythonStore()))
    return lambda x: legacy(x)  # a plain function: the engine calls it per batch


@pytest.mark.benchmark(group="ingest 20k stream vectors with semantic ids")
@pytest.mark.parametrize("kind", ["python per batch (anchor)", "rust", "none"])
def test_ingest_with_semantic_ids(
    benchmark: Any, kind: str, encoder: imesde.RQKMeans, stream_vectors: npt.NDArray[np.float32]
) -> None:
    kind = kind.split(" ")[0]

    def ingest() -> imesde.Engine:
        engine = imesde.Engine(384, num_shards=16, shard_size=2048)
        engine.attach_semantic_ids(labeller(kind, encoder))
        for start in range(0, len(stream_vectors), BATCH):
            engine.ingest_vectors(stream_vectors[start : start + BATCH])
        return engine

    engine = benchmark.pedantic(ingest, rounds=5, warmup_rounds=1)
    assert len(engine) == len(stream_vectors)
    ids = [(engine.get(i).metadata or {}).get("semantic_id") for i in (0, len(engine) - 1)]
    if kind == "none":
        assert ids == [None, None]
    else:
        assert all(ids)
        assert ids[0] != ids[1]
