"""Typed metadata and the ``where`` language: every search kind keeps exactly the items a numpy
reference keeps, over real changelog items with str, int, float, bool and list metadata; a
malformed filter is an ``InvalidValueError`` that names the bad part."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
import pytest

N = 1500
Meta = dict[str, Any]
Keep = Callable[[Meta], bool]

# Each filter with what it means, written independently in Python.
FILTERS: list[tuple[dict[str, Any], Keep]] = [
    (
        {"length": {"$gt": 40}, "long": False},
        lambda m: m["length"] > 40 and m["long"] is False,
    ),
    (
        {"pos": {"$in": list(range(7, N, 5))}, "long": {"$eq": True}},
        lambda m: m["pos"] % 5 == 2 and m["pos"] >= 7 and m["long"],
    ),
    (
        {"$or": [{"urgency": {"$in": ["high", "medium"]}}, {"year": {"$lte": 1997}}]},
        lambda m: m["urgency"] in ("high", "medium") or m["year"] <= 1997,
    ),
    (
        {"$not": {"tags": "unstable"}, "weight": {"$gte": 100.5, "$lt": 600}},
        lambda m: "unstable" not in m["tags"] and 100.5 <= m["weight"] < 600,
    ),
    (
        {"urgency": {"$nin": ["low"]}, "missing": {"$ne": 3}},
        lambda m: m["urgency"] != "low",
    ),
    (
        {"closes": {"$exists": True}, "missing": {"$exists": 0}},
        lambda m: "closes" in m,
    ),
    (  # chromadb's array operators on a list
        {"tags": {"$contains": "unstable"}, "urgency": {"$not_contains": "low"}},
        lambda m: "unstable" in m["tags"] and m["urgency"] != "low",
    ),
    (
        {"$or": [{"closes": {"$exists": False}, "long": True}, {"closes": {"$gt": 40_000}}]},
        lambda m: ("closes" not in m and m["long"]) or any(b > 40_000 for b in m.get("closes", [])),
    ),
]


def metadata_of(i: int, item: dict[str, str]) -> Meta:
    text = item["text"]
    return {
        "pos": i,
        "length": len(text),
        "long": len(text) > 60,
        "urgency": item.get("urgency", "none"),
        "year": datetime.fromisoformat(item["ts"]).year,
        "weight": i * 0.5,
        "tags": [item.get("dist", "none"), item["source"]],
        # Only on the items that close bugs (a key some items lack, for $exists).
        **({"closes": item["closes"]} if "closes" in item else {}),
    }


@pytest.fixture(scope="module")
def corpus(
    stream: list[dict[str, str]], embedder: imesde.TextEmbedder
) -> tuple[imesde.Engine, list[Meta], npt.NDArray[np.float32]]:
    items = stream[:N]
    meta = [metadata_of(i, it) for i, it in enumerate(items)]
    engine = imesde.Engine(embedder, num_shards=4, shard_size=512, lexical=True)
    ids = engine.ingest_batch(
        [it["text"] for it in items],
        metadata=meta,
        timestamps=[datetime.fromisoformat(it["ts"]) for it in items],
    )
    assert list(ids) == list(range(N))
    vectors = np.stack([engine.get(i).vector for i in range(N)])
    return engine, meta, vectors


def mask_of(meta: list[Meta], keep: Keep) -> list[int]:
    return [i for i, m in enumerate(meta) if keep(m)]


def dense_reference(
    vectors: npt.NDArray[np.float32], kept: list[int], q: npt.NDArray[np.float32], k: int
) -> tuple[list[int], list[float]]:
    scores = vectors[kept] @ q
    # Best first, the newer item first on equal scores (as the engine orders them).
    order = sorted(range(len(kept)), key=lambda j: (-scores[j], -kept[j]))[:k]
    return [kept[j] for j in order], [float(scores[j]) for j in order]


def assert_same_ranking(
    ids: list[int], scores: list[float], want_ids: list[int], want_scores: list[float]
) -> None:
    assert len(ids) == len(want_ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    if not want_scores:
        return
    # Items may trade places only with another of the same score (duplicate texts).
    last = want_scores[-1]
    assert {i for i, s in zip(ids, scores, strict=True) if s > last + 1e-5} == {
        i for i, s in zip(want_ids, want_scores, strict=True) if s > last + 1e-5
    }


QUERIES = ["fix a crash on startup", "security update for a buffer overflow", "new upstream"]


@pytest.mark.parametrize("which", range(len(FILTERS)))
def test_dense_searches_keep_what_numpy_keeps(
    corpus: tuple[imesde.Engine, list[Meta], npt.NDArray[np.float32]],
    embedder: imesde.TextEmbedder,
    which: int,
) -> None:
    engine, meta, vectors = corpus
    where, keep = FILTERS[which]
    kept = mask_of(meta, keep)
    assert 0 < len(kept) < N, "each filter keeps some items and drops others"
    qs = embedder.embed(QUERIES)
    batch = engine.search_batch(QUERIES, 10, where=where)
    scores, ids = engine.search_vectors(qs, 10, where=where)
    assert ids.dtype == np.int64
    for j, (text, q) in enumerate(zip(QUERIES, qs, strict=True)):
        want = dense_reference(vectors, kept, q, 10)
        for hits in (
            engine.search(text, 10, where=where),
            engine.search_vector(q, 10, where=where),
            batch[j],
        ):
            assert_same_ranking([h.id for h in hits], [h.score for h in hits], *want)
            assert all(keep(h.metadata or {}) for h in hits)
        assert_same_ranking(ids[j].tolist(), scores[j].tolist(), *want)
    newest = [i for i in reversed(kept)][:25]
    assert [item.id for item in engine.recent(25, where=where)] == newest
    # How many pass: what numpy counts (all of them: len).
    assert engine.count(where=where) == len(kept)
    assert engine.count() == len(engine) == N


@pytest.mark.parametrize("which", range(len(FILTERS)))
def test_lexical_and_hybrid_keep_what_numpy_keeps(
    corpus: tuple[imesde.Engine, list[Meta], npt.NDArray[np.float32]],
    embedder: imesde.TextEmbedder,
    which: int,
) -> None:
    engine, meta, vectors = corpus
    where, keep = FILTERS[which]
    kept = set(mask_of(meta, keep))
    for query in QUERIES:
        # Reference: every BM25 hit of the whole engine, then the kept ones.
        everything = engine.lexical_search(query, N)
        want = [h for h in everything if h.id in kept][:10]
        got = engine.lexical_search(query, 10, where=where)
        assert_same_ranking(
            [h.id for h in got],
            [h.score for h in got],
            [h.id for h in want],
            [h.score for h in want],
        )
        # Hybrid: both sides filtered, then fused (depth max(5k, 50)).
        dense = dense_reference(vectors, sorted(kept), embedder.embed_one(query), 50)
        lexical = [(h.id, h.score) for h in everything if h.id in kept][:50]
        fused = imesde.fuse(
            [list(zip(*dense, strict=True)), lexical], "weighted", k=10, weights=[0.5, 0.5]
        )
        hybrid = engine.hybrid_search(query, 10, "weighted", alpha=0.5, where=where)
        assert all(h.id in kept for h in hybrid)
        np.testing.assert_allclose([h.score for h in hybrid], [s for _, s in fused], atol=1e-4)


def test_time_window_and_where_combine(
    corpus: tuple[imesde.Engine, list[Meta], npt.NDArray[np.float32]],
) -> None:
    engine, _, _ = corpus
    since = engine.get(300).ts
    until = engine.get(900).ts
    where = {"long": True}
    hits = engine.search("packaging fix", 50, since=since, until=until, where=where)
    assert hits
    assert all(since <= h.ts < until and (h.metadata or {})["long"] for h in hits)
    lexical = engine.lexical_search("fix", 50, since=since, until=until, where=where)
    assert lexical
    assert all(since <= h.ts < until and (h.metadata or {})["long"] for h in lexical)
    with pytest.raises(imesde.InvalidValueError):
        engine.lexical_search("fix", since=until, until=since)
    window = [i for i in engine.recent(N, where=where) if since <= i.ts < until]
    assert engine.count(since=since, until=until, where=where) == len(window) > 0
    with pytest.raises(imesde.InvalidValueError):
        engine.count(since=until, until=since)


def test_standing_queries_apply_the_filter(
    stream: list[dict[str, str]], embedder: imesde.TextEmbedder
) -> None:
    engine = imesde.Engine(embedder, num_shards=2, shard_size=256)
    where, keep = FILTERS[2]
    sub = engine.subscribe("security fix", threshold=-1.0, where=where)
    items = stream[:400]
    meta = [metadata_of(i, it) for i, it in enumerate(items)]
    engine.ingest_batch([it["text"] for it in items], metadata=meta)
    fired = sorted(e.hit.id for e in sub.drain())
    assert fired == mask_of(meta, keep)


# Filters on the item's text (chromadb's where_document), alone and with metadata.
TEXT_FILTERS: list[tuple[dict[str, Any], Callable[[str, Meta], bool]]] = [
    ({"$contains": "upstream"}, lambda t, m: "upstream" in t),
    ({"$not_contains": "e", "long": False}, lambda t, m: "e" not in t and not m["long"]),
    (
        {"#document": {"$contains": "fix", "$not_contains": "Fix"}},
        lambda t, m: "fix" in t and "Fix" not in t,
    ),
    (
        {"$or": [{"$contains": "CVE"}, {"urgency": "high"}], "$not_contains": "Debian"},
        lambda t, m: ("CVE" in t or m["urgency"] == "high") and "Debian" not in t,
    ),
]


@pytest.mark.parametrize("which", range(len(TEXT_FILTERS)))
def test_text_filters_keep_what_python_keeps(
    corpus: tuple[imesde.Engine, list[Meta], npt.NDArray[np.float32]],
    stream: list[dict[str, str]],
    embedder: imesde.TextEmbedder,
    which: int,
) -> None:
    engine, meta, _ = corpus
    texts = [it["text"] for it in stream[:N]]
    where, keep = TEXT_FILTERS[which]
    kept = {i for i in range(N) if keep(texts[i], meta[i])}
    assert 0 < len(kept) < N
    assert engine.count(where=where) == len(kept)
    assert {item.id for item in engine.recent(N, where=where)} == kept
    assert {h.id for h in engine.search("security fix", N, where=where)} == kept
    for hits in (
        engine.lexical_search("new upstream release", 30, where=where),
        engine.hybrid_search("new upstream release", 30, where=where),
    ):
        assert {h.id for h in hits} <= kept
    # A standing query fires for the new items that pass, their texts read as they arrive.
    fresh = imesde.Engine(embedder, num_shards=2, shard_size=64)
    sub = fresh.subscribe("security fix", threshold=-1.0, where=where)
    fresh.ingest_batch(texts[:100], metadata=meta[:100])
    assert sorted(e.hit.id for e in sub.drain()) == sorted(i for i in kept if i < 100)


def test_typed_values_round_trip_through_save_and_pickle(
    corpus: tuple[imesde.Engine, list[Meta], npt.NDArray[np.float32]], tmp_path: Path
) -> None:
    import pickle

    engine, meta, _ = corpus
    m = engine.get(12).metadata
    assert m == meta[12]
    assert m is not None
    assert type(m["pos"]) is int
    assert type(m["long"]) is bool
    assert type(m["weight"]) is float
    engine.save(tmp_path / "e.imesde")
    for back in (imesde.Engine.load(tmp_path / "e.imesde"), pickle.loads(pickle.dumps(engine))):
        assert back.get(12).metadata == meta[12]
        where = FILTERS[1][0]
        got = [h.id for h in back.search("new upstream release", 20, where=where)]
        assert got == [h.id for h in engine.search("new upstream release", 20, where=where)]
    # An empty dict is no metadata, before a snapshot and after it.
    small = imesde.Engine(4, num_shards=1, shard_size=4)
    small.ingest_vectors(np.ones((2, 4), np.float32), metadata=[{}, {"a": 1}])
    for e in (small, imesde.Engine.from_bytes(small.to_bytes())):
        assert [e.get(0).metadata, e.get(1).metadata] == [None, {"a": 1}]


def test_deleted_items_stay_out_of_filtered_searches(
    stream: list[dict[str, str]], embedder: imesde.TextEmbedder, tmp_path: Path
) -> None:
    engine = imesde.Engine(embedder, num_shards=2, shard_size=256, lexical=True)
    items = stream[:300]
    meta = [metadata_of(i, it) for i, it in enumerate(items)]
    engine.ingest_batch([it["text"] for it in items], metadata=meta)
    where = {"pos": {"$gte": 0}}
    top = [h.id for h in engine.search("new upstream release", 5, where=where)]
    lex = [h.id for h in engine.lexical_search("upstream release", 5, where=where)]
    gone = set(top + lex)
    assert engine.delete(sorted(gone)) == len(gone)
    engine.save(tmp_path / "e.imesde")
    for e in (engine, imesde.Engine.load(tmp_path / "e.imesde")):
        for hits in (
            e.search("new upstream release", 50, where=where),
            e.lexical_search("upstream release", 50, where=where),
            e.hybrid_search("new upstream release", 50, where=where),
            e.recent(300, where=where),
        ):
            assert hits
            assert not gone & {h.id for h in hits}


@pytest.mark.parametrize(
    ("where", "points_at"),
    [
        ({"status": {"$gtt": 1}}, 'where["status"]["$gtt"]'),
        ({"$and": [{"a": 1}, {"b": {"$in": 3}}]}, 'where["$and"][1]["b"]["$in"]'),
        ({"$or": []}, 'where["$or"]'),
        ({"a": {"$gt": True}}, 'where["a"]["$gt"]'),
        ({"a": {"$exists": "yes"}}, 'where["a"]["$exists"]'),
        ({"a": None}, 'where["a"]'),
        ({"a": [1, 2]}, 'where["a"]'),
        ({"a": {"$in": [1, {"x": 1}]}}, 'where["a"]["$in"][1]'),
        ({"a": {"$eq": object()}}, 'where["a"]["$eq"]'),
        ({"a": float("nan")}, 'where["a"]'),
        ({"$xor": [{"a": 1}]}, 'where["$xor"]'),
        ({"$contains": 3}, 'where["$contains"]'),
        ({"$contains": ""}, 'where["$contains"]'),
        ({"#document": {"$eq": "x"}}, 'where["#document"]["$eq"]'),
        ({"$and": [{"$not_contains": ["a"]}]}, 'where["$and"][0]["$not_contains"]'),
        ({1: "a"}, "where"),
        (["a"], "where"),
    ],
)
def test_malformed_filters_name_the_bad_part(where: Any, points_at: str) -> None:
    engine = imesde.Engine(4)
    engine.ingest_vectors(np.eye(4, dtype=np.float32), metadata={"a": 1})
    q = np.ones(4, dtype=np.float32)
    for call in (
        lambda: engine.search_vector(q, where=where),
        lambda: engine.search_vectors(q[None], where=where),
        lambda: engine.recent(3, where=where),
        lambda: engine.subscribe(q, threshold=0.0, where=where),
    ):
        with pytest.raises(imesde.InvalidValueError) as info:
            call()
        assert str(info.value).startswith(points_at), str(info.value)
    assert len(engine) == 4
    assert engine.subscriptions() == []


def test_metadata_values_are_typed_and_checked() -> None:
    engine = imesde.Engine(4)
    v = np.eye(4, dtype=np.float32)
    ids = engine.ingest_vectors(
        v[:2],
        metadata=[
            {"s": "x", "i": np.int64(7), "f": np.float32(0.5), "b": np.bool_(True)},
            {"tags": ("a", "b"), "big": 2**62},
        ],
    )
    assert ids.dtype == np.int64
    assert engine.get(0).metadata == {"s": "x", "i": 7, "f": 0.5, "b": True}
    assert type(engine.get(0).metadata["b"]) is bool  # type: ignore[index]
    assert engine.get(1).metadata == {"tags": ["a", "b"], "big": 2**62}
    for bad, error in [
        ({"a": b"x"}, imesde.DTypeError),
        ({"a": {"nested": 1}}, imesde.DTypeError),
        ({"a": [1, None]}, imesde.DTypeError),
        ({"a": [[1]]}, imesde.DTypeError),
        ({"a": float("inf")}, imesde.InvalidValueError),
        ({"a": 2**64}, imesde.OutOfRangeError),
        ({3: "a"}, imesde.DTypeError),
    ]:
        with pytest.raises(error):
            engine.ingest_vectors(v[2:3], metadata=bad)  # type: ignore[arg-type]
    assert len(engine) == 2
    # Numbers compare by value across int and float; bools are not numbers.
    assert [h.id for h in engine.search_vector(v[0], where={"i": 7.0})] == [0]
    assert [h.id for h in engine.search_vector(v[0], where={"f": {"$lt": 1}})] == [0]
    assert engine.search_vector(v[0], where={"b": 1}) == []
    assert [h.id for h in engine.search_vector(v[0], where={"tags": "b"})] == [1]
    # numpy arrays: tags stored as a list, $in values given as an array.
    engine.ingest_vectors(v[2:3], metadata={"tags": np.array([3, 4])})
    assert engine.get(2).metadata == {"tags": [3, 4]}
    where = {"tags": {"$in": np.array([4, 9])}}
    assert [h.id for h in engine.search_vector(v[0], where=where)] == [2]
    with pytest.raises(imesde.DTypeError):
        engine.ingest_vectors(v[3:4], metadata={"m": np.ones((2, 2))})
    with pytest.raises(imesde.InvalidValueError):
        engine.search_vector(v[0], where={"tags": {"$in": np.ones((2, 2))}})


def test_deeply_nested_filters_are_refused_not_a_crash() -> None:
    engine = imesde.Engine(4)
    engine.ingest_vectors(np.eye(4, dtype=np.float32), metadata={"a": 1})
    q = np.ones(4, dtype=np.float32)
    ok: dict[str, Any] = {"a": 1}
    for _ in range(30):
        ok = {"$not": ok}
    assert len(engine.search_vector(q, where=ok)) == 4  # 30 negations of "a == 1": an even count
    deep: dict[str, Any] = {"a": 1}
    for _ in range(200_000):
        deep = {"$not": deep}
    for where in (deep, {"$and": [deep]}, {"a": {"$in": [1, deep]}}):
        with pytest.raises(imesde.InvalidValueError, match="nest at most"):
            engine.search_vector(q, where=where)
    wide = {"$and": [{"a": {"$in": list(range(1000))}}] * 100}
    assert len(engine.search_vector(q, where=wide)) == 4


def test_numpy_datetimes_of_every_unit_are_times() -> None:
    """A nanosecond ``datetime64`` (pandas 2's unit, numpy's for full-precision strings) was
    read as its count of nanoseconds: ``since=`` found nothing, stored times were 1.7e18."""
    engine = imesde.Engine(4, num_shards=1, shard_size=8)
    vectors = np.eye(4, dtype=np.float32)
    stamps = np.array(
        [
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:21",
            "2023-11-14T22:13:22",
            "2023-11-14T22:13:23",
        ],
        dtype="datetime64[ns]",
    )
    engine.ingest_vectors(vectors, timestamps=stamps)
    assert [engine.get(i).ts for i in range(4)] == [1_700_000_000.0 + i for i in range(4)]
    for unit in ("s", "ms", "us", "ns"):
        since = np.datetime64("2023-11-14T22:13:21", unit)
        until = np.datetime64("2023-11-14T22:13:23", unit)
        hits = engine.search_vector(vectors[0], 10, since=since, until=until)
        assert sorted(h.id for h in hits) == [1, 2], unit
    new = engine.upsert(0, vectors[0], ts=np.datetime64("2023-11-14T22:13:30.5", "ms"))
    assert engine.get(new).ts == 1_700_000_010.5
    for bad in (np.datetime64("NaT", "ns"), np.datetime64("NaT")):
        with pytest.raises(imesde.InvalidValueError, match="NaT"):
            engine.search_vector(vectors[0], 1, since=bad)
    with pytest.raises(imesde.InvalidValueError, match="NaT"):
        engine.ingest_vectors(vectors[:1], timestamps=np.array(["NaT"], "datetime64[ns]"))
    assert len(engine) == 4


def test_timestamp_arrays_convert_as_their_values_do() -> None:
    """A numpy array of times (numbers or ``datetime64`` of any unit) is converted whole,
    to what its values one by one give; a ``NaT`` is named by its place."""
    engine = imesde.Engine(4, num_shards=1, shard_size=64)
    vectors = np.tile(np.eye(4, dtype=np.float32), (2, 1))
    base = np.datetime64("2023-11-14T22:13:20", "s")
    arrays = [
        (base + np.arange(8) * np.timedelta64(1500, "ms")).astype("datetime64[ms]"),
        (base + np.arange(8) * np.timedelta64(1, "D")).astype("datetime64[ns]"),
        np.linspace(1.7e9, 1.7e9 + 7, 8),
        np.arange(8, dtype=np.uint32) + 1_700_000_000,
        np.linspace(1.7e9, 1.7e9 + 7, 8).astype(np.float32),
    ]
    for stamps in arrays:
        ids = engine.ingest_vectors(vectors, timestamps=stamps)
        one_by_one = engine.ingest_vectors(vectors, timestamps=list(stamps))
        got = [engine.get(int(i)).ts for i in ids]
        assert got == [engine.get(int(i)).ts for i in one_by_one], stamps.dtype
    assert got[1] == float(np.float32(1.7e9 + 1))
    # Steps other than 1 (datetime64[100ns], [7ns], [10ms]) as numpy's own arithmetic gives.
    for unit in ("100ns", "7ns", "10ms", "3s"):
        stamps = (base + np.arange(8) * np.timedelta64(12345, "ms")).astype(f"datetime64[{unit}]")
        ids = engine.ingest_vectors(vectors, timestamps=stamps)
        exact = [int(ns) / 10**9 for ns in stamps.astype("datetime64[ns]").view(np.int64)]
        got = [engine.get(int(i)).ts for i in ids]
        assert np.allclose(got, exact, rtol=0, atol=3e-7), unit  # f64's step at 1.7e9 s
    held = len(engine)
    stamps = arrays[1].copy()
    stamps[5] = np.datetime64("NaT")
    with pytest.raises(imesde.InvalidValueError, match=r"timestamps\[5\] is NaT"):
        engine.ingest_vectors(vectors, timestamps=stamps)
    assert len(engine) == held


def test_mappings_other_than_dicts_are_metadata_and_filters() -> None:
    """A read-only view of a dict (``MappingProxyType``, what frozen config objects hand
    out) was refused as metadata and as a filter ("must be a dict")."""
    import collections
    import types

    engine = imesde.Engine(4, num_shards=1, shard_size=16)
    vectors = np.eye(4, dtype=np.float32)
    engine.ingest_vectors(vectors[:2], metadata=types.MappingProxyType({"team": "db"}))
    engine.ingest_vectors(
        vectors[2:],
        metadata=[types.MappingProxyType({"team": "web"}), collections.OrderedDict(team="db")],
    )
    assert [engine.get(i).metadata for i in range(4)] == [
        {"team": t} for t in ["db", "db", "web", "db"]
    ]
    for where in (
        types.MappingProxyType({"team": "db"}),
        {"$or": [types.MappingProxyType({"team": {"$eq": "db"}})]},
    ):
        assert sorted(h.id for h in engine.search_vector(vectors[0], 10, where=where)) == [0, 1, 3]


def test_get_refuses_an_array_for_an_id() -> None:
    engine = imesde.Engine(4, num_shards=1, shard_size=8)
    engine.ingest_vectors(np.eye(4, dtype=np.float32))
    for bad in (np.array([1]), np.array(1.0), np.array([1, 2])):
        with pytest.raises(imesde.DTypeError):
            engine.get(bad)  # type: ignore[arg-type]
    assert engine.get(np.int64(1)).id == 1
    with pytest.raises(imesde.ItemNotFoundError):
        engine.get(2**70)
