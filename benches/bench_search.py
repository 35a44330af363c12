"""Exact top-10 search: imesde against numpy and faiss-cpu on the same data, one process.

    python benches/bench_search.py [--sizes 16384 65536 262144] [--repeat 30]

Prints a Markdown table of median latencies and ratios to numpy. Data: unit-length Gaussian
vectors of 384 dims (the hardest case for int8: the top scores are close together) and, for
int8 recall, the same measured on clustered data that looks more like text embeddings.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt

DIM = 384
K = 10
BATCH = 64


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def numpy_top_k(x: npt.NDArray[np.float32], q: npt.NDArray[np.float32]) -> npt.NDArray[np.intp]:
    s = x @ q
    idx = np.argpartition(-s, K)[:K]
    return idx[np.argsort(-s[idx])]


def numpy_top_k_batch(
    x: npt.NDArray[np.float32], qs: npt.NDArray[np.float32]
) -> npt.NDArray[np.intp]:
    s = qs @ x.T
    idx = np.argpartition(-s, K, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(s, idx, 1), axis=1)
    return np.take_along_axis(idx, order, 1)


def recall(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)]))


def unit(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def clustered(n: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    centers = rng.standard_normal((256, DIM), dtype=np.float32)
    x = centers[rng.integers(0, 256, n)] + 0.6 * rng.standard_normal((n, DIM), dtype=np.float32)
    return unit(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16_384, 65_536, 262_144])
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    faiss: Any
    try:
        faiss = importlib.import_module("faiss")  # optional anchor: `pip install faiss-cpu`
    except ImportError:
        faiss = None
    rng = np.random.default_rng(0)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, simd={imesde.simd_backend()}, "
        f"numpy {np.__version__}, faiss {getattr(faiss, '__version__', 'absent')}"
    )
    print()
    print(
        "| items | queries | numpy ms | faiss ms | imesde f32 ms | imesde int8 ms "
        "| f32 / numpy | f32 / faiss | int8 / numpy | int8 recall@10 (gauss / clustered) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        bench_size(n, args.repeat, faiss, rng)


def settle() -> None:
    """Let the previous library's worker threads go idle (OpenMP and OpenBLAS spin after
    each call), so they do not compete with the next one for the cores."""
    time.sleep(0.5)


def bench_size(n: int, repeat: int, faiss: Any, rng: np.random.Generator) -> None:
    x = unit(rng.standard_normal((n, DIM), dtype=np.float32))
    qs = unit(rng.standard_normal((BATCH, DIM), dtype=np.float32))
    q = qs[0].copy()
    shards = 16
    engines = {}
    for storage in ("f32", "int8"):
        e = imesde.Engine(DIM, num_shards=shards, shard_size=n // shards, storage=storage)
        e.ingest_vectors(x)
        engines[storage] = e
    index = None
    if faiss is not None:
        index = faiss.IndexFlatIP(DIM)
        index.add(x)
    # Recall of int8 against exact f32, on Gaussian data and on clustered data.
    _, exact = engines["f32"].search_vectors(qs, K)
    _, approx = engines["int8"].search_vectors(qs, K)
    r_gauss = recall(exact, approx)
    xc = clustered(n, rng)
    noise = 0.3 * rng.standard_normal((BATCH, DIM), dtype=np.float32)
    qc = unit(xc[rng.integers(0, n, BATCH)] + noise)
    found = []
    for storage in ("f32", "int8"):
        e = imesde.Engine(DIM, num_shards=shards, shard_size=n // shards, storage=storage)
        e.ingest_vectors(xc)
        found.append(e.search_vectors(qc, K)[1])
    r_clu = recall(found[0], found[1])

    def measure(fn: Callable[[], object], rep: int) -> float:
        settle()
        return median_ms(fn, rep)

    nan = float("nan")
    for label, nq in (("1", 1), (f"batch {BATCH}", BATCH)):
        if nq == 1:
            rep = repeat
            t_f32 = measure(lambda: engines["f32"].search_vector(q, K), rep)
            t_i8 = measure(lambda: engines["int8"].search_vector(q, K), rep)
            t_np = measure(lambda: numpy_top_k(x, q), rep)
            t_fa = measure(lambda: index.search(q[None, :], K), rep) if index else nan
        else:
            rep = max(3, repeat // 5)
            t_f32 = measure(lambda: engines["f32"].search_vectors(qs, K), rep)
            t_i8 = measure(lambda: engines["int8"].search_vectors(qs, K), rep)
            t_np = measure(lambda: numpy_top_k_batch(x, qs), rep)
            t_fa = measure(lambda: index.search(qs, K), rep) if index else nan
        print(
            f"| {n:,} | {label} | {t_np:.2f} | {t_fa:.2f} | {t_f32:.2f} | {t_i8:.2f} "
            f"| {t_f32 / t_np:.2f}x | {t_f32 / t_fa:.2f}x | {t_i8 / t_np:.2f}x "
            f"| {r_gauss:.3f} / {r_clu:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
