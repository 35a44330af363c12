"""A window under churn (issue 25): a window of ``W`` vectors with the structure of real text
embeddings (``_data.real_like``), then ``W`` more inserts in batches of 1,000, each
overwriting the oldest items, so the window turns over once; then queries. Per contender, in
one process: insert throughput during the churn, query latency (p50 / p99 of single queries),
recall@10 against exact search over the window as it is then (numpy over the newest ``W``
items), and memory (what the structure holds: imesde's fixed arrays plus its index's lists,
hnswlib's index file size, usearch's ``memory_usage``, faiss' serialised index).

Contenders: imesde's exact int8 scan (the anchor), imesde ``storage="binary"``, imesde
``index="ivf"`` (int8 storage), hnswlib (HNSW, ``mark_deleted`` + ``replace_deleted``),
usearch (HNSW, ``remove`` + ``add``), faiss ``IndexIVFFlat`` and ``IndexIVFPQ``
(``remove_ids`` of the oldest, ``add_with_ids``). The anchors that are not installed are
skipped; ``make bench-churn`` installs them.

Queries: 200 items of the window plus a little noise (queries in the stream's own
distribution) and the 176 debtags query texts embedded (short texts that sit between the
stream's clusters), recall reported for both. ``W`` is 2^20 by default as the issue asks;
``IMESDE_CHURN_WINDOW`` sets another (the README's table says which it used: building the
HNSW anchors at 2^20 takes tens of minutes on 2 vCPUs); a smoke run uses 4,096.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
import pytest
from _data import debtags_query_texts, real_like
from imesde._locate import packaged_model

pytestmark = pytest.mark.timeout(7200)

K = 10
BATCH = 1_000
DIM = 384
F32 = npt.NDArray[np.float32]
CONTENDERS = [
    "imesde int8 exact (anchor)",
    "imesde binary",
    "imesde ivf",
    "hnswlib",
    "usearch",
    "faiss IVF-Flat",
    "faiss IVF-PQ",
]


@dataclass
class Data:
    window: int
    x: F32
    near: F32
    debtags: F32
    exact: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def data(smoke: bool) -> Data:
    w = 4_096 if smoke else int(os.environ.get("IMESDE_CHURN_WINDOW", 1 << 20))
    x = real_like(2 * w, base_n=2_048 if smoke else 65_536)
    rng = np.random.default_rng(3)
    pick = x[w + rng.choice(w, 200, replace=False)]
    near = pick + rng.normal(0, 0.02, pick.shape).astype(np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    debtags = imesde.TextEmbedder(*packaged_model()).embed(debtags_query_texts())
    d = Data(w, x, near.astype(np.float32), debtags)
    # Exact top-10 over the window after the churn: the newest w items (ids w..2w).
    last = x[w:]
    for name, qs in (("near", d.near), ("debtags", d.debtags)):
        s = qs @ last.T
        top = np.argpartition(-s, K, axis=1)[:, :K]
        d.exact[name] = top + w
    return d


class Contender:
    """Adds batches with global ids, drops the oldest, answers top-K queries with ids."""

    def add(self, x: F32, ids: npt.NDArray[np.int64]) -> None:
        raise NotImplementedError

    def drop(self, ids: npt.NDArray[np.int64]) -> None:
        """Forget these (the oldest) ids; a ring does it itself when it overwrites them."""

    def search(self, q: F32) -> list[int]:
        raise NotImplementedError

    def memory(self) -> int:
        raise NotImplementedError


class Imesde(Contender):
    def __init__(self, w: int, **kw: Any) -> None:
        self.e = imesde.Engine(DIM, num_shards=16, shard_size=w // 16, **kw)

    def add(self, x: F32, ids: npt.NDArray[np.int64]) -> None:
        got = self.e.ingest_vectors(x)
        assert got[0] == ids[0]

    def ready(self) -> None:
        if self.e.stats()["index"]:
            assert self.e.train_index()

    def search(self, q: F32) -> list[int]:
        return [h.id for h in self.e.search_vector(q, K)]

    def memory(self) -> int:
        s = self.e.stats()
        return int(s["memory_bytes"]) + int(s["index_bytes"])


class Hnswlib(Contender):
    def __init__(self, w: int) -> None:
        hnswlib = pytest.importorskip("hnswlib")
        self.index = hnswlib.Index(space="ip", dim=DIM)
        self.index.init_index(max_elements=w, ef_construction=100, M=16, allow_replace_deleted=True)
        self.index.set_ef(64)

    def add(self, x: F32, ids: npt.NDArray[np.int64]) -> None:
        self.index.add_items(x, ids, replace_deleted=True)

    def drop(self, ids: npt.NDArray[np.int64]) -> None:
        for i in ids:
            self.index.mark_deleted(int(i))

    def search(self, q: F32) -> list[int]:
        return [int(i) for i in self.index.knn_query(q, K)[0][0]]

    def memory(self) -> int:
        return int(self.index.index_file_size())


class Usearch(Contender):
    def __init__(self, w: int) -> None:
        index = pytest.importorskip("usearch.index")
        self.index = index.Index(ndim=DIM, metric="ip", dtype="f32", connectivity=16)

    def add(self, x: F32, ids: npt.NDArray[np.int64]) -> None:
        self.index.add(ids, x)

    def drop(self, ids: npt.NDArray[np.int64]) -> None:
        self.index.remove(ids)

    def search(self, q: F32) -> list[int]:
        return [int(i) for i in self.index.search(q, K).keys]

    def memory(self) -> int:
        return int(self.index.memory_usage)


class Faiss(Contender):
    def __init__(self, w: int, x: F32, pq: bool) -> None:
        faiss = pytest.importorskip("faiss")
        self.faiss = faiss
        nlist = max(16, int(np.sqrt(w)))
        quantizer = faiss.IndexFlatIP(DIM)
        if pq:
            self.index = faiss.IndexIVFPQ(quantizer, DIM, nlist, 48, 8, faiss.METRIC_INNER_PRODUCT)
        else:
            self.index = faiss.IndexIVFFlat(quantizer, DIM, nlist, faiss.METRIC_INNER_PRODUCT)
        self.quantizer = quantizer
        sample = x[np.random.default_rng(0).choice(w, min(w, 64 * nlist), replace=False)]
        self.index.train(sample)
        self.index.nprobe = max(8, nlist // 8)

    def add(self, x: F32, ids: npt.NDArray[np.int64]) -> None:
        self.index.add_with_ids(x, ids)

    def drop(self, ids: npt.NDArray[np.int64]) -> None:
        self.index.remove_ids(self.faiss.IDSelectorRange(int(ids[0]), int(ids[-1]) + 1))

    def search(self, q: F32) -> list[int]:
        return [int(i) for i in self.index.search(q[None, :], K)[1][0]]

    def memory(self) -> int:
        return int(self.faiss.serialize_index(self.index).nbytes)


def make(name: str, d: Data) -> Contender:
    w = d.window
    if name.startswith("imesde int8"):
        return Imesde(w, storage="int8")
    if name == "imesde binary":
        return Imesde(w, storage="binary")
    if name == "imesde ivf":
        return Imesde(w, storage="int8", index="ivf")
    if name == "hnswlib":
        return Hnswlib(w)
    if name == "usearch":
        return Usearch(w)
    return Faiss(w, d.x, pq=name.endswith("PQ"))


def recall(c: Contender, qs: F32, exact: npt.NDArray[np.int64]) -> float:
    return float(
        np.mean([len(set(c.search(q)) & set(e)) / K for q, e in zip(qs, exact, strict=True)])
    )


@pytest.mark.parametrize("contender", CONTENDERS)
def test_churn(benchmark: Any, data: Data, contender: str) -> None:
    w = data.window
    c = make(contender, data)
    ids = np.arange(2 * w, dtype=np.int64)
    for s in range(0, w, BATCH):
        e = min(s + BATCH, w)
        c.add(data.x[s:e], ids[s:e])
    if isinstance(c, Imesde):
        c.ready()
    # The churn: each batch overwrites the oldest items.
    t = time.perf_counter()
    for s in range(w, 2 * w, BATCH):
        e = min(s + BATCH, 2 * w)
        c.drop(ids[s - w : e - w])
        c.add(data.x[s:e], ids[s:e])
    churn = time.perf_counter() - t
    if isinstance(c, Imesde):
        c.ready()  # a training due after the turnover, waited for (an engine does it on a thread)
    benchmark.group = f"window of {w:,} after {w:,} churned inserts: one top-{K} query"
    qs = data.near
    lat: list[float] = []

    def one(i: list[int] = [0]) -> list[int]:  # noqa: B006
        q = qs[i[0] % len(qs)]
        i[0] += 1
        t0 = time.perf_counter()
        got = c.search(q)
        lat.append(time.perf_counter() - t0)
        return got

    benchmark.pedantic(one, rounds=len(qs), warmup_rounds=5)
    r_near = recall(c, data.near, data.exact["near"])
    r_debtags = recall(c, data.debtags, data.exact["debtags"])
    benchmark.extra_info.update(
        {
            "inserts/s during churn": round(w / churn),
            "p50 ms": round(float(np.percentile(lat, 50)) * 1e3, 3),
            "p99 ms": round(float(np.percentile(lat, 99)) * 1e3, 3),
            "recall@10 near-items": round(r_near, 4),
            "recall@10 debtags": round(r_debtags, 4),
            "memory MB": round(c.memory() / 1e6, 1),
        }
    )
    print(f"\n{contender}: {benchmark.extra_info}")
    # The bars at full size; a smoke run's 4,096 items (around 2,048 real ones) only have to
    # be found at all.
    floor = {"imesde int8 exact (anchor)": 0.99, "imesde binary": 0.95, "imesde ivf": 0.9}
    assert r_near >= (0.5 if w < 1 << 16 else floor.get(contender, 0.5)), r_near
