"""``Engine(..., index="ivf")``: an inverted-file index that follows the window. On real text
embeddings (the changelog stream embedded by the default model) it finds nearly what the exact
scan finds, for every storage, while the window turns over; filters, deletes, ``exact=True``,
batches, standing queries, snapshots and pickles behave as without it; bad shapes are
refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import imesde
import numpy as np
import numpy.typing as npt
import pytest

F32 = npt.NDArray[np.float32]


def ids(hits: list[imesde.Hit]) -> list[int]:
    return [h.id for h in hits]


def recall(got: npt.ArrayLike, want: npt.ArrayLike) -> float:
    pairs = zip(np.asarray(got), np.asarray(want), strict=True)
    return float(np.mean([len(set(g) & set(w)) / max(len(w), 1) for g, w in pairs]))


@pytest.mark.parametrize("storage", ["f32", "int8", "binary"])
def test_the_index_follows_the_window(embedded: tuple[list[str], F32], storage: str) -> None:
    texts, x = embedded
    n = len(x)
    cap = 1024
    kw = {"num_shards": 4, "shard_size": cap // 4, "storage": storage}
    exact = imesde.Engine(384, **kw)  # type: ignore[arg-type]
    e = imesde.Engine(384, index="ivf", nlist=32, nprobe=8, **kw)  # type: ignore[arg-type]
    stats = e.stats()
    assert (stats["index"], stats["nlist"], stats["nprobe"]) == ("ivf", 32, 8)
    meta = [{"odd": i % 2 == 1} for i in range(n)]
    rng = np.random.default_rng(7)
    # The window turns over twice; the index is trained (at least) once it has enough items.
    for start in range(0, 3 * cap, 256):
        rows = np.arange(start, start + 256) % n
        for engine in (exact, e):
            engine.ingest_vectors(
                x[rows], [texts[i] for i in rows], metadata=[meta[i] for i in rows]
            )
    assert e.train_index()
    stats = e.stats()
    assert stats["index_trained"]
    # Per held item at least its slot (4 bytes) and its sign bits (48); per slot its place (8).
    assert stats["index_bytes"] >= cap * (4 + 48 + 8)
    assert exact.stats()["index_bytes"] == 0
    # Standing queries see every new item, index or not.
    subs = [engine.subscribe(x[5], threshold=0.5) for engine in (exact, e)]
    for engine in (exact, e):
        engine.ingest_vectors(x[:256], texts[:256])
    events = [[(ev.id, ev.score) for ev in sub.drain()] for sub in subs]
    assert events[0]
    assert events[0] == events[1]
    held = x[np.arange(2 * cap, 3 * cap) % n]
    queries = held[rng.choice(len(held), 40, replace=False)]
    queries = queries + rng.normal(0, 0.02, queries.shape).astype(np.float32)
    got, want = e.search_vectors(queries, 10)[1], exact.search_vectors(queries, 10)[1]
    assert recall(got, want) >= 0.9
    for q in queries[:10]:
        hits = e.search_vector(q, 10, where={"odd": True})
        assert all(h.metadata is not None and h.metadata["odd"] for h in hits)
        assert ids(e.search_vector(q, 10)) == list(e.search_vectors(q[None, :], 10)[1][0])
        # exact=True: the exact scan, hit for hit.
        assert ids(e.search_vector(q, 10, exact=True)) == ids(exact.search_vector(q, 10))
    best = ids(e.search_vector(queries[0], 5))
    assert e.delete(best) == 5
    assert not set(ids(e.search_vector(queries[0], 30))) & set(best)


def test_snapshots_and_pickles_keep_the_index(
    embedded: tuple[list[str], F32], tmp_path: Path
) -> None:
    texts, x = embedded
    e = imesde.Engine(384, num_shards=4, shard_size=512, storage="int8", index="ivf", nlist=16)
    e.ingest_vectors(x[:2048], texts[:2048])
    assert e.train_index()
    e.save(tmp_path / "e.imesde")
    for back in (imesde.Engine.load(tmp_path / "e.imesde"), pickle.loads(pickle.dumps(e))):
        s = back.stats()
        assert (s["index"], s["nlist"], s["nprobe"], s["index_trained"]) == ("ivf", 16, 8, True)
        assert len(back) == len(e)
        # Trained again on the same items, deterministically: the same answers.
        for q in x[:2048:200]:
            assert ids(back.search_vector(q, 10)) == ids(e.search_vector(q, 10))


def test_without_training_searches_are_exact(embedded: tuple[list[str], F32]) -> None:
    _, x = embedded
    e = imesde.Engine(384, num_shards=4, shard_size=4096, index="ivf", nlist=256)
    plain = imesde.Engine(384, num_shards=4, shard_size=4096)
    for engine in (e, plain):
        engine.ingest_vectors(x[:500])
    # 500 items are fewer than a training needs (16 per list): every search is exact.
    assert not e.stats()["index_trained"]
    for q in x[:50:10]:
        assert ids(e.search_vector(q, 10)) == ids(plain.search_vector(q, 10))
    assert imesde.Engine(384).stats()["index"] is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"index": "hnsw"}, "ivf"),
        ({"nlist": 16}, "index"),
        ({"index": "ivf", "nlist": 8, "nprobe": 9}, "nprobe"),
        ({"index": "ivf", "nlist": 0}, "nlist"),
        ({"index": "ivf", "nprobe": -1}, "nprobe"),
    ],
)
def test_bad_shapes_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(imesde.InvalidValueError, match=match):
        imesde.Engine(384, **kwargs)  # type: ignore[arg-type]
