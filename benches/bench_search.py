"""Exact top-10 search: imesde against numpy and faiss-cpu on the same data, one process.

    python benches/bench_search.py [--sizes 16384 65536 262144] [--repeat 30] [--rounds 3]
                                   [--no-real]

Prints a Markdown table of latencies and ratios to numpy: each contender is timed in
`--rounds` interleaved rounds (the median of `--repeat` calls each, after the other
libraries' threads went idle) and the median round is reported. Timing data: unit-length
Gaussian vectors of 384 dims. Int8 recall@10 against exact f32 is measured on three sets:
the Gaussian vectors (the hardest case: the top scores lie within ~0.001 of each other),
clustered vectors, and real text embeddings (the changelog stream of ../shared/data embedded
with the default model, queried with the 176 debtags query texts; the newest `n` items, all
126,223 for the largest size).
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
from _data import debtags_query_texts, stream_texts
from _timing import machine, median

DIM = 384
K = 10
BATCH = 64


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


def real_embeddings() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The stream's texts and the debtags queries (short and long), embedded."""
    texts = stream_texts()
    queries = debtags_query_texts()
    model = imesde.TextEmbedder()
    t = time.perf_counter()
    x = model.embed(texts)
    print(f"embedded {len(texts):,} stream texts in {time.perf_counter() - t:.0f} s")
    return x, model.embed(queries)


def real_recall(x: npt.NDArray[np.float32], qs: npt.NDArray[np.float32], n: int) -> str:
    x = x[-n:]
    r = int8_recall(x, qs)
    return f"{r:.3f}" if len(x) == n else f"{r:.3f} ({len(x):,})"


def int8_recall(x: npt.NDArray[np.float32], qs: npt.NDArray[np.float32]) -> float:
    """Top-K recall of an int8 engine against an f32 one holding the same vectors `x`."""
    shards = 16
    found = []
    for storage in ("f32", "int8"):
        e = imesde.Engine(DIM, num_shards=shards, shard_size=-(-len(x) // shards), storage=storage)
        e.ingest_vectors(x)
        found.append(e.search_vectors(qs, K)[1])
    return recall(found[0], found[1])


def clustered(n: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    centers = rng.standard_normal((256, DIM), dtype=np.float32)
    x = centers[rng.integers(0, 256, n)] + 0.6 * rng.standard_normal((n, DIM), dtype=np.float32)
    return unit(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[16_384, 65_536, 262_144])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-real", action="store_true", help="skip the real-embedding recall")
    args = ap.parse_args()
    faiss: Any
    try:
        faiss = importlib.import_module("faiss")  # optional anchor: `pip install faiss-cpu`
    except ImportError:
        faiss = None
    rng = np.random.default_rng(0)
    print(
        f"machine: {machine()}, "
        f"numpy {np.__version__}, faiss {getattr(faiss, '__version__', 'absent')}"
    )
    real = None if args.no_real else real_embeddings()
    print()
    print(
        "| items | queries | numpy ms | faiss ms | imesde f32 ms | imesde int8 ms "
        "| f32 / numpy | f32 / faiss | int8 / numpy "
        "| int8 recall@10: gauss / clustered / real |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        r_real = "-" if real is None else real_recall(*real, n)
        bench_size(n, args.repeat, args.rounds, faiss, rng, r_real)


def settle() -> None:
    """Let the previous library's worker threads go idle (OpenMP and OpenBLAS spin after
    each call), so they do not compete with the next one for the cores."""
    time.sleep(0.5)


def bench_size(
    n: int, repeat: int, rounds: int, faiss: Any, rng: np.random.Generator, r_real: str
) -> None:
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
    r_clu = int8_recall(xc, qc)

    def measure(fns: dict[str, Callable[[], object]], rep: int) -> dict[str, float]:
        """Median over interleaved rounds of each contender's median call."""
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                settle()
                times[name].append(median(fn, rep) * 1e3)
        return {name: float(np.median(ts)) for name, ts in times.items()}

    nan = float("nan")
    for label, nq in (("1", 1), (f"batch {BATCH}", BATCH)):
        if nq == 1:
            rep = repeat
            fns = {
                "f32": lambda: engines["f32"].search_vector(q, K),
                "int8": lambda: engines["int8"].search_vector(q, K),
                "numpy": lambda: numpy_top_k(x, q),
            }
            if index is not None:
                fns["faiss"] = lambda: index.search(q[None, :], K)
        else:
            rep = max(3, repeat // 5)
            fns = {
                "f32": lambda: engines["f32"].search_vectors(qs, K),
                "int8": lambda: engines["int8"].search_vectors(qs, K),
                "numpy": lambda: numpy_top_k_batch(x, qs),
            }
            if index is not None:
                fns["faiss"] = lambda: index.search(qs, K)
        t = measure(fns, rep)
        t_f32, t_i8, t_np, t_fa = t["f32"], t["int8"], t["numpy"], t.get("faiss", nan)
        print(
            f"| {n:,} | {label} | {t_np:.2f} | {t_fa:.2f} | {t_f32:.2f} | {t_i8:.2f} "
            f"| {t_f32 / t_np:.2f}x | {t_f32 / t_fa:.2f}x | {t_i8 / t_np:.2f}x "
            f"| {r_gauss:.3f} / {r_clu:.3f} / {r_real} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
