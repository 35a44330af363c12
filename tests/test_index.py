"""``Engine(..., index="ivf")``: an inverted-file index that follows the window. On real text
embeddings (the changelog stream embedded by the default model) it finds nearly what the exact
scan finds, for every storage, while the window turns over; filters, deletes, ``exact=True``,
batches, standing queries, snapshots and pickles behave as without it; bad shapes are
refused."""

from __future__ import annotations

import pickle
import time
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


def test_a_round_trip_keeps_an_untrained_index_untrained(embedded: tuple[list[str], F32]) -> None:
    """Too few items to train on: a pickle or snapshot of the engine is not trained on load
    either (it was, on 300 items for 256 lists, and then answered with empty slots, and
    skipped the training due once enough items came)."""
    texts, x = embedded
    e = imesde.Engine(384, num_shards=4, shard_size=4096, index="ivf", nlist=256)
    e.ingest_vectors(x[:300], texts[:300])
    back = pickle.loads(pickle.dumps(e))
    assert not e.stats()["index_trained"]
    assert not back.stats()["index_trained"]
    got, want = back.search_vectors(x[:50], 10), e.search_vectors(x[:50], 10)
    assert np.array_equal(got[1], want[1])
    assert (got[1] >= 0).all()


def test_train_index_needs_a_list_worth_of_items_and_an_early_training_is_redone(
    embedded: tuple[list[str], F32],
) -> None:
    _, x = embedded
    e = imesde.Engine(384, num_shards=4, shard_size=1024, index="ivf", nlist=64)
    e.ingest_vectors(x[:20])
    # 20 items for 64 lists: nothing is trained (faiss refuses it too), searches stay exact.
    assert not e.train_index()
    assert not e.stats()["index_trained"]
    e.ingest_vectors(x[20:100])
    assert e.train_index()
    # Trained on 100 items, fewer than a training's 1,024: the engine trains again once it
    # holds that many, without waiting for the window to turn over.
    plain = imesde.Engine(384, num_shards=4, shard_size=1024, index="ivf", nlist=64)
    plain.ingest_vectors(x[:100])
    # All the items (~2,700: a query's 8 probed lists hold more than the 200 candidates it
    # rescores, so the lists answer it, not a scan of every item).
    for engine in (e, plain):
        engine.ingest_vectors(x[100:])
    plain.train_index()  # waits for the training running on its thread (on the same items)
    queries = x[::100]
    want = [ids(plain.search_vector(q, 10)) for q in queries]
    deadline = time.monotonic() + 60
    while [ids(e.search_vector(q, 10)) for q in queries] != want:
        assert time.monotonic() < deadline, "the early training was not redone"
        time.sleep(0.05)


def test_a_selective_filter_still_finds_k_through_the_index(
    embedded: tuple[list[str], F32],
) -> None:
    """Probed lists that hold fewer than k items passing the filter: the query is answered by
    a scan of every item (it returned 2-3 of 10, or none)."""
    texts, x = embedded
    n = min(len(x), 4096)
    e = imesde.Engine(384, num_shards=4, shard_size=1024, index="ivf", nlist=64, nprobe=2)
    e.ingest_vectors(x[:n], texts[:n], metadata=[{"rare": i % 200 == 0} for i in range(n)])
    assert e.train_index()
    rare = {"rare": True}
    passing = len(range(0, n, 200))
    for q in x[: n : n // 20]:
        hits = e.search_vector(q, 10, where=rare)
        assert len(hits) == 10 <= passing
        assert ids(hits) == ids(e.search_vector(q, 10, where=rare, exact=True))
    _scores, found = e.search_vectors(x[:40], 10, where=rare)
    assert (found >= 0).all()
    assert found.shape == (40, 10)
    # Deleting all but a few leaves the index trained; what is held is still found.
    held = list(range(n))
    e.delete(held[5:])
    assert e.train_index() == e.stats()["index_trained"]
    assert sorted(ids(e.search_vector(x[3], 10))) == held[:5]


def test_probed_lists_thinned_by_a_filter_or_deletes_give_way_to_an_exact_scan(
    embedded: tuple[list[str], F32],
) -> None:
    """Probed lists that hold at least k passing items but fewer than the candidates a query
    rescores: those few were the answer (at 2^20 items a filter that 100 pass gave recall@10
    0.6); now the query is answered by a scan of every item, as exact as ``exact=True``."""
    texts, x = embedded
    n = min(len(x), 4096)
    e = imesde.Engine(384, num_shards=4, shard_size=1024, index="ivf", nlist=16, nprobe=2)
    e.ingest_vectors(x[:n], texts[:n], metadata=[{"g": i % 20} for i in range(n)])
    assert e.train_index()
    queries = np.ascontiguousarray(x[: n : n // 50])
    for where in ({"g": 3}, {"g": {"$in": [1, 2]}}):
        exact = [ids(e.search_vector(q, 10, where=where, exact=True)) for q in queries]
        assert [ids(e.search_vector(q, 10, where=where)) for q in queries] == exact
        _scores, found = e.search_vectors(queries, 10, where=where)
        assert found.tolist() == exact
    # The same when deletes thin every list.
    e.delete([i for i in range(n) if i % 20])
    exact = [ids(e.search_vector(q, 10, exact=True)) for q in queries]
    assert [ids(e.search_vector(q, 10)) for q in queries] == exact


def test_nprobe_defaults_to_an_eighth_of_the_nlist_given() -> None:
    """``nlist`` given without ``nprobe``: an eighth of it, at least 8, as documented (it was
    the capacity's default, 128 at 2^20 slots, whatever ``nlist`` was)."""
    for nlist, nprobe in ((256, 32), (4096, 512), (32, 8), (4, 4), (None, 128)):
        e = imesde.Engine(8, num_shards=16, shard_size=65_536, index="ivf", nlist=nlist)
        assert (e.stats()["nlist"], e.stats()["nprobe"]) == (nlist or 1024, nprobe)


def test_nprobe_is_set_on_a_live_engine_as_faiss_sets_it(
    embedded: tuple[list[str], F32], tmp_path: Path
) -> None:
    """``engine.nprobe = n`` (faiss' ``index.nprobe = n``): the lists are kept, searches
    probe ``n`` of them from then on, as an engine built with ``nprobe=n`` on the same items
    does, and snapshots and pickles keep it. The docs said "raise nprobe" and only the
    constructor took it."""
    texts, x = embedded
    n = min(len(x), 4096)
    kw: dict[str, object] = {"num_shards": 4, "shard_size": 1024, "index": "ivf", "nlist": 8}
    e = imesde.Engine(384, nprobe=1, **kw)  # type: ignore[arg-type]
    wide = imesde.Engine(384, nprobe=8, **kw)  # type: ignore[arg-type]
    for engine in (e, wide):
        engine.ingest_vectors(x[:n], texts[:n])
        assert engine.train_index()
    assert (e.nlist, e.nprobe, imesde.Engine(384).nprobe, imesde.Engine(384).nlist) == (
        8,
        1,
        None,
        None,
    )
    rng = np.random.default_rng(3)
    queries = x[rng.choice(n, 60, replace=False)]
    queries = np.ascontiguousarray(queries + rng.normal(0, 0.05, queries.shape), np.float32)
    want = e.search_vectors(queries, 10, exact=True)[1]
    narrow = recall(e.search_vectors(queries, 10)[1], want)
    sizes = e.stats()["index_bytes"]
    e.nprobe = np.int64(8)
    assert (e.nprobe, e.stats()["nprobe"], e.stats()["index_bytes"]) == (8, 8, sizes)
    got = e.search_vectors(queries, 10)[1]
    assert np.array_equal(got, wide.search_vectors(queries, 10)[1])
    assert recall(got, want) > narrow
    # Refused, and nothing changes: typed errors naming what was wrong.
    for bad, exc in ((0, imesde.InvalidValueError), (9, imesde.InvalidValueError)):
        with pytest.raises(exc, match="nprobe"):
            e.nprobe = bad
    for wrong in (None, 2.0, "4", True):
        with pytest.raises(imesde.DTypeError, match="nprobe"):
            e.nprobe = wrong  # type: ignore[assignment]
    with pytest.raises(imesde.InvalidValueError, match="index"):
        imesde.Engine(384).nprobe = 4
    assert e.nprobe == 8
    assert np.array_equal(e.search_vectors(queries, 10)[1], got)
    e.nprobe = 3
    e.save(tmp_path / "e.imesde")
    for back in (imesde.Engine.load(tmp_path / "e.imesde"), pickle.loads(pickle.dumps(e))):
        assert (back.nlist, back.nprobe) == (8, 3)
        assert np.array_equal(back.search_vectors(queries, 10)[1], e.search_vectors(queries, 10)[1])


@pytest.mark.parametrize(
    "kwargs", [{"storage": "binary"}, {"storage": "f32", "index": "ivf", "nlist": 8}]
)
def test_k_factor_rescores_more_candidates_as_faiss_refine_does(
    kwargs: dict[str, object], tmp_path: Path
) -> None:
    """Sign bits rank items of tight clusters (cosines within ~0.01) poorly: the default 200
    candidates for 10 hits miss most true neighbours there, and ``engine.k_factor`` (faiss'
    ``IndexRefine.k_factor``) rescores more of them. Snapshots and pickles keep it; engines
    that rank no sign bits refuse it."""
    rng = np.random.default_rng(0)
    dim, n = 128, 16_384
    centres = rng.standard_normal((8, dim)).astype(np.float32)
    x = centres[rng.integers(0, 8, n)] + 0.1 * rng.standard_normal((n, dim)).astype(np.float32)
    noise = 0.05 * rng.standard_normal((40, dim)).astype(np.float32)
    queries: F32 = np.ascontiguousarray(x[rng.choice(n, 40, replace=False)] + noise)
    exact = imesde.Engine(dim, num_shards=4, shard_size=n // 4)
    e = imesde.Engine(dim, num_shards=4, shard_size=n // 4, **kwargs)  # type: ignore[arg-type]
    for engine in (exact, e):
        engine.ingest_vectors(x)
    assert e.nlist is None or e.train_index()
    want = exact.search_vectors(queries, 10)[1]
    assert e.k_factor == 20
    found = [recall(e.search_vectors(queries, 10)[1], want)]
    for k_factor in (100, 400):
        e.k_factor = k_factor
        found.append(recall(e.search_vectors(queries, 10)[1], want))
    assert found[0] < 0.5 < found[1] < found[2], found
    assert found[2] >= 0.9, found
    got = e.search_vectors(queries, 10)[1]
    for wrong, exc in ((0, imesde.InvalidValueError), (None, imesde.DTypeError)):
        with pytest.raises(exc, match="k_factor"):
            e.k_factor = wrong  # type: ignore[assignment]
    assert e.k_factor == 400
    e.save(tmp_path / "e.imesde")
    for back in (imesde.Engine.load(tmp_path / "e.imesde"), pickle.loads(pickle.dumps(e))):
        assert back.k_factor == 400
        assert np.array_equal(back.search_vectors(queries, 10)[1], got)
    for plain in (exact, imesde.Engine(dim, storage="int8")):
        with pytest.raises(imesde.InvalidValueError, match="sign bits"):
            plain.k_factor = 100
        assert plain.k_factor == 20


def test_an_empty_batch_of_queries_is_answered_as_faiss_answers_it() -> None:
    e = imesde.Engine(8, num_shards=1, shard_size=16)
    none = np.zeros((0, 8), np.float32)
    scores, found = e.search_vectors(none, 5)
    assert scores.shape == found.shape == (0, 0)
    e.ingest_vectors(np.eye(8, dtype=np.float32))
    scores, found = e.search_vectors(none, 5)
    assert scores.shape == found.shape == (0, 5)
    assert scores.dtype == np.dtype(np.float32)
    assert found.dtype == np.dtype(np.int64)
    assert len(e) == 8
    with pytest.raises(imesde.DimensionMismatchError):
        e.search_vectors(np.zeros((0, 4), np.float32), 5)
    # An empty batch stores nothing, as faiss' add and ingest_batch([]) (a stream polled
    # when nothing came); a vector of no dimensions is refused.
    assert e.ingest_vectors(none).tolist() == []
    assert len(e) == 8
    with pytest.raises(imesde.ShapeError):
        e.search_vector(np.zeros(0, np.float32), 5)
