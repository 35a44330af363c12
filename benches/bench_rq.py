"""Semantic IDs: imesde's RQ-KMeans against faiss's ResidualQuantizer and semantic-id 0.2.5.

    python benches/bench_rq.py [--skip-semantic-id] [--gaussian-n 100000]

Data: the all-MiniLM-L6-v2 embeddings (imesde's default model) of 20,000 distinct texts of the
changelog stream, evenly spaced over it (cached in benches/.cache after the first run), and
100,000 x 384 standard Gaussian vectors (seed 0). Configurations: L=3 and L=4 levels of
K=256, and K=[16, 64, 256]. Every model trains on the whole set and is scored on it: fit time,
encoding throughput, reconstruction MSE per vector, the share of items whose code another item
also has (collisions), and the lowest per-level usage entropy divided by ln K.

Anchors, in the same process and on the same arrays: faiss-cpu ``ResidualQuantizer`` with beam
1 and with its default beam (5; it trains and encodes with the beam), and semantic-id's
``RQKMeans`` (scikit-learn k-means, its defaults: n_init=10, max_iter=100), on the real set
only unless ``--semantic-id-gaussian``.
"""

from __future__ import annotations

import argparse
import importlib
import warnings
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
from _data import stream_embeddings
from _timing import machine, timed

ANCHORS = ("faiss RQ beam 1", "faiss RQ beam 5 (default)", "semantic-id 0.2.5")
F32 = npt.NDArray[np.float32]
Codes = npt.NDArray[np.int64]


def metrics(x: F32, codes: Codes, rec: F32, ks: list[int]) -> dict[str, float]:
    usage = imesde.RQKMeans(len(ks), ks).codebook_usage(codes)
    return {
        "mse": float(np.mean(np.sum((x.astype(np.float64) - rec) ** 2, axis=1))),
        "collisions": imesde.RQKMeans.collision_rate(codes),
        "entropy": min(u["entropy"] for u in usage),
    }


def run_imesde(x: F32, ks: list[int], balanced: bool, beam: int) -> dict[str, float]:
    model = imesde.RQKMeans(len(ks), ks, balanced=balanced, random_state=0, beam_width=beam)
    _, fit_s = timed(lambda: model.fit(x))
    codes, enc_s = timed(lambda: model.encode(x))
    return {
        "fit_s": fit_s,
        "enc_per_s": len(x) / enc_s,
        **metrics(x, codes.astype(np.int64), model.decode(codes), ks),
    }


def run_faiss(x: F32, ks: list[int], beam: int) -> dict[str, float]:
    # Optional anchors, imported by name so the type check needs neither installed.
    faiss: Any = importlib.import_module("faiss")
    nbits = [int(np.log2(k)) for k in ks]
    bits = faiss.UInt64Vector()
    for nb in nbits:
        bits.push_back(nb)
    # faiss 1.15 wants its own vector type here, not a list.
    rq = faiss.ResidualQuantizer(x.shape[1], bits)
    rq.max_beam_size = beam
    _, fit_s = timed(lambda: rq.train(x))
    packed, enc_s = timed(lambda: rq.compute_codes(x))
    rec = rq.decode(packed)
    # Unpack the bit-packed codes (levels of nbits each, LSB first).
    unpacked = np.unpackbits(packed, axis=1, bitorder="little")
    codes = np.zeros((len(x), len(ks)), dtype=np.int64)
    off = 0
    for lvl, nb in enumerate(nbits):
        codes[:, lvl] = unpacked[:, off : off + nb].astype(np.int64) @ (1 << np.arange(nb))
        off += nb
    return {"fit_s": fit_s, "enc_per_s": len(x) / enc_s, **metrics(x, codes, rec, ks)}


def run_semantic_id(x: F32, ks: list[int]) -> dict[str, float]:
    rq_kmeans: Any = importlib.import_module("semantic_id").RQKMeans
    warnings.filterwarnings("ignore")
    model = rq_kmeans(n_levels=len(ks), n_clusters=ks, random_state=0)
    _, fit_s = timed(lambda: model.fit(x))
    codes, enc_s = timed(lambda: model.encode(x))
    codes = codes.astype(np.int64)
    rec = model.decode(codes).astype(np.float32)
    return {"fit_s": fit_s, "enc_per_s": len(x) / enc_s, **metrics(x, codes, rec, ks)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gaussian-n", type=int, default=100_000)
    ap.add_argument("--skip-semantic-id", action="store_true")
    ap.add_argument("--semantic-id-gaussian", action="store_true")
    ap.add_argument("--configs", default="256x3,256x4,16-64-256")
    args = ap.parse_args()

    print(f"machine: {machine()}")
    sets = {
        "stream 20k (MiniLM)": stream_embeddings(),
        f"gaussian {args.gaussian_n // 1000}k": np.random.default_rng(0)
        .standard_normal((args.gaussian_n, 384))
        .astype(np.float32),
    }
    configs = {
        "256x3": [256] * 3,
        "256x4": [256] * 4,
        "16-64-256": [16, 64, 256],
    }
    header = (
        f"{'data':<20} {'config':<10} {'method':<28} {'fit s':>7} {'encode/s':>10} "
        f"{'MSE':>8} {'collide':>8} {'entropy':>8} {'fit speed-up':>13}"
    )
    print(header)
    print("-" * len(header))
    for data_name, x in sets.items():
        for cname in args.configs.split(","):
            ks = configs[cname]
            rows: dict[str, dict[str, float]] = {}
            rows["faiss RQ beam 1"] = run_faiss(x, ks, 1)
            rows["faiss RQ beam 5 (default)"] = run_faiss(x, ks, 5)
            if not args.skip_semantic_id and (
                data_name.startswith("stream") or args.semantic_id_gaussian
            ):
                rows["semantic-id 0.2.5"] = run_semantic_id(x, ks)
            rows["imesde"] = run_imesde(x, ks, False, 1)
            rows["imesde beam 5"] = run_imesde(x, ks, False, 5)
            rows["imesde balanced"] = run_imesde(x, ks, True, 1)
            for name, r in rows.items():
                vs = ""
                if name.startswith("imesde"):
                    vs = " ".join(
                        f"{rows[a]['fit_s'] / r['fit_s']:.1f}x"
                        for a in (
                            "faiss RQ beam 1",
                            "faiss RQ beam 5 (default)",
                            "semantic-id 0.2.5",
                        )
                        if a in rows
                    )
                print(
                    f"{data_name:<20} {cname:<10} {name:<28} {r['fit_s']:>7.2f} "
                    f"{r['enc_per_s']:>10,.0f} {r['mse']:>8.4f} {r['collisions']:>8.4f} "
                    f"{r['entropy']:>8.3f} {vs:>13}"
                )
            print()
    print("fit speed-up: anchor fit time / imesde fit time, against faiss beam 1, faiss beam 5")
    print("and semantic-id (when run). entropy: the lowest level's usage entropy / ln K.")


if __name__ == "__main__":
    main()
