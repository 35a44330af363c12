"""The real data of ``../shared/data`` as the benchmarks read it."""

from __future__ import annotations

import gzip
import json
from itertools import islice
from pathlib import Path

import numpy as np
import numpy.typing as npt

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CACHE = Path(__file__).resolve().parent / ".cache"


def stream_texts(limit: int | None = None) -> list[str]:
    """The changelog stream's texts in time order (the first ``limit`` of them)."""
    with gzip.open(DATA / "changelog_stream.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in islice(f, limit)]


def debtags_query_texts() -> list[str]:
    """Each debtags query's short and long form, in file order."""
    queries = []
    for line in (DATA / "debtags_queries.jsonl").read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        queries += [q["query"], q["query_long"]]
    return queries


def stream_sample(n: int = 20_000) -> list[str]:
    """``n`` distinct stream texts, evenly spaced over the stream, in time order."""
    texts = list(dict.fromkeys(stream_texts()))
    step = len(texts) / n
    return [texts[int(i * step)] for i in range(n)]


def stream_embeddings(n: int = 20_000) -> npt.NDArray[np.float32]:
    """The packaged model's embeddings of ``stream_sample(n)``, row i of text i (cached in
    benches/.cache after the first run)."""
    import imesde
    from imesde._locate import packaged_model

    path = CACHE / f"stream{n}_minilm.npy"
    if path.exists():
        cached: npt.NDArray[np.float32] = np.load(path)
        return cached
    x = imesde.TextEmbedder(*packaged_model()).embed(stream_sample(n))
    CACHE.mkdir(exist_ok=True)
    np.save(path, x)
    return x


def whole_stream_embeddings() -> npt.NDArray[np.float32]:
    """The packaged model's embeddings of every text of the stream, in time order (126,223;
    cached in benches/.cache after the first run, which takes minutes)."""
    import imesde
    from imesde._locate import packaged_model

    path = CACHE / "stream_all_minilm.npy"
    if path.exists():
        cached: npt.NDArray[np.float32] = np.load(path)
        return cached
    x = imesde.TextEmbedder(*packaged_model()).embed(stream_texts())
    CACHE.mkdir(exist_ok=True)
    np.save(path, x)
    return x


def real_like(n: int, base_n: int = 65_536, seed: int = 0) -> npt.NDArray[np.float32]:
    """``n`` unit vectors with the structure of real text embeddings: the first ``base_n``
    are ``stream_embeddings(base_n)`` themselves, the rest each one of them plus Gaussian
    noise whose length is the real set's median nearest-neighbour distance (so that a
    neighbour sits from its original as the real items sit from theirs), normalised. Not
    i.i.d. Gaussian vectors, whose top scores all tie."""
    base = stream_embeddings(base_n)
    rng = np.random.default_rng(seed)
    sample = base[rng.choice(len(base), min(2_000, len(base)), replace=False)]
    sims = sample @ base.T
    sims[sims > 0.99999] = -1.0  # the sample item itself (and exact duplicates)
    spacing = float(np.sqrt(2.0 - 2.0 * np.median(sims.max(axis=1))))
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    head = min(n, len(base))
    out[:head] = base[:head]
    step = 1 << 16
    for start in range(head, n, step):
        end = min(n, start + step)
        noise = rng.standard_normal((end - start, base.shape[1]), dtype=np.float32)
        noise *= np.float32(spacing / np.sqrt(base.shape[1]))
        rows = base[rng.integers(0, len(base), end - start)] + noise
        out[start:end] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out
