"""Metadata changed in place (``Engine.update_metadata``): every search kind, ``count``,
``recent``, snapshots and pickles see exactly the metadata a Python mirror of the changes
holds (chromadb's ``update`` rules: a merge sets keys and removes those given None), including
filters searched before the change; bad changes are typed errors that change nothing."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import imesde
import numpy as np
import pytest

if TYPE_CHECKING:
    from imesde._imesde import _IndexKind, _Storage

Meta = dict[str, Any]

N = 600
FILTERS: list[dict[str, Any]] = [
    {"urgency": "critical"},
    {"dist": {"$in": ["unstable", "experimental"]}, "acked": {"$ne": True}},
    {"$or": [{"acked": True}, {"pos": {"$lt": 50}}]},
    {"dist": {"$exists": False}},
]


def passes(where: dict[str, Any], m: Meta | None) -> bool:
    """What each of FILTERS keeps, written independently in Python."""
    m = m or {}
    if where is FILTERS[0]:
        return m.get("urgency") == "critical"
    if where is FILTERS[1]:
        return m.get("dist") in ("unstable", "experimental") and m.get("acked") is not True
    if where is FILTERS[2]:
        return m.get("acked") is True or ("pos" in m and m["pos"] < 50)
    return "dist" not in m


def merged(old: Meta | None, change: Meta) -> Meta | None:
    new = dict(old or {})
    for key, value in change.items():
        if value is None:
            new.pop(key, None)
        else:
            new[key] = value
    return new or None


@pytest.fixture
def engine_and_mirror(
    stream: list[dict[str, str]], embedder: imesde.TextEmbedder
) -> tuple[imesde.Engine, list[Meta | None]]:
    items = stream[:N]
    mirror: list[Meta | None] = [
        {"pos": i, "dist": it["dist"], "urgency": it["urgency"]} for i, it in enumerate(items)
    ]
    engine = imesde.Engine(embedder, num_shards=4, shard_size=256, lexical=True)
    engine.ingest_batch([it["text"] for it in items], metadata=mirror)
    return engine, mirror


def check(engine: imesde.Engine, mirror: list[Meta | None]) -> None:
    """Every filter keeps in every search kind exactly what the mirror says it keeps."""
    for i in range(0, N, 37):
        assert engine.get(i).metadata == mirror[i]
    for where in FILTERS:
        want = {i for i in range(N) if passes(where, mirror[i])}
        assert engine.count(where=where) == len(want)
        assert {item.id for item in engine.recent(N, where=where)} == want
        dense = engine.search("security fix for a crash", N, where=where)
        assert {h.id for h in dense} == want
        for hits in (
            engine.lexical_search("security fix crash", 20, where=where),
            engine.hybrid_search("security fix for a crash", 20, where=where),
        ):
            assert {h.id for h in hits} <= want
            assert all(h.metadata == mirror[h.id] for h in hits)


def test_updates_are_what_every_search_filters_on(
    engine_and_mirror: tuple[imesde.Engine, list[Meta | None]], tmp_path: Path
) -> None:
    engine, mirror = engine_and_mirror
    check(engine, mirror)  # the filters' answers are remembered now
    rng = np.random.default_rng(3)
    before = engine.get(7)

    # One dict for several ids (merged): a key set, a key added, a key removed.
    ids = sorted(int(i) for i in rng.choice(N, 120, replace=False))
    change: Meta = {"urgency": "critical", "acked": True, "dist": None}
    assert engine.update_metadata([*ids, 10_000], change) == 120
    for i in ids:
        mirror[i] = merged(mirror[i], change)
    check(engine, mirror)

    # One dict per id, replacing (None and {} clear it), as a numpy array of ids.
    ids = sorted(int(i) for i in rng.choice(N, 90, replace=False))
    replacements: list[Meta | None] = [
        None if j % 3 == 0 else {} if j % 3 == 1 else {"dist": "experimental", "pos": j}
        for j in range(len(ids))
    ]
    assert engine.update_metadata(np.array(ids), replacements, merge=False) == 90
    for i, new in zip(ids, replacements, strict=True):
        mirror[i] = new or None
    check(engine, mirror)

    # One id, per-id merges with None (no change) among them.
    assert engine.update_metadata(7, {"acked": True}) == 1
    mirror[7] = merged(mirror[7], {"acked": True})
    assert engine.update_metadata([3, 4], [None, {"urgency": "critical"}]) == 2
    mirror[4] = merged(mirror[4], {"urgency": "critical"})
    check(engine, mirror)

    # Chosen by a filter (qdrant's set_payload with a filter), of ids too.
    by_filter: Meta = {"acked": False, "triaged": True}
    want = [i for i in range(N) if passes(FILTERS[1], mirror[i])]
    assert engine.update_metadata(metadata=by_filter, where=FILTERS[1]) == len(want)
    for i in want:
        mirror[i] = merged(mirror[i], by_filter)
    of_ids = list(range(0, N, 3))
    want = [i for i in of_ids if passes(FILTERS[0], mirror[i])]
    assert engine.update_metadata(of_ids, {"urgency": "low"}, where=FILTERS[0]) == len(want)
    for i in want:
        mirror[i] = merged(mirror[i], {"urgency": "low"})
    check(engine, mirror)
    assert engine.count(where={"triaged": True}) > 0

    # The item keeps everything but its metadata.
    after = engine.get(7)
    assert (after.id, after.text, after.ts) == (before.id, before.text, before.ts)
    assert np.array_equal(after.vector, before.vector)
    assert len(engine) == N

    engine.save(tmp_path / "e.imesde")
    check(imesde.Engine.load(tmp_path / "e.imesde"), mirror)
    check(pickle.loads(pickle.dumps(engine)), mirror)


def test_a_filter_chooses_the_items_and_never_every_item_by_default() -> None:
    engine = imesde.Engine(4, num_shards=2, shard_size=8)
    x = np.eye(4, dtype=np.float32)
    engine.ingest_vectors(x, metadata={"a": 1}, timestamps=[10.0, 20.0, 30.0, 40.0])
    assert engine.update_metadata(metadata={"late": True}, since=25.0) == 2
    assert [engine.get(i).metadata for i in range(4)] == [{"a": 1}] * 2 + [
        {"a": 1, "late": True}
    ] * 2
    assert engine.update_metadata([0, 1, 2], {"a": 2}, where={"late": {"$exists": True}}) == 1
    assert engine.get(2).metadata == {"a": 2, "late": True}
    change = {"b": 1}
    bad: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"metadata": change}, imesde.InvalidValueError),  # neither ids nor a filter
        ({"metadata": change, "where": {}}, imesde.InvalidValueError),
        ({"ids": [0]}, imesde.DTypeError),  # no metadata
        ({"metadata": [change], "where": {"a": 1}}, imesde.DTypeError),  # one per id, no ids
        ({"metadata": change, "since": 5.0, "until": 1.0}, imesde.InvalidValueError),
        ({"metadata": change, "where": {"a": {"$gtt": 1}}}, imesde.InvalidValueError),
        # Filters that keep every item as written are no filter here either.
        ({"metadata": change, "where": {"$and": [{}]}}, imesde.InvalidValueError),
        ({"metadata": change, "where": {"$or": [{"a": 2}, {}]}}, imesde.InvalidValueError),
        # Empty, but not a mapping: refused as a search refuses it, ids or not.
        ({"ids": [0, 1], "metadata": change, "where": ""}, imesde.InvalidValueError),
        ({"ids": [0, 1], "metadata": change, "where": []}, imesde.InvalidValueError),
    ]
    for kwargs, error in bad:
        with pytest.raises(error):
            engine.update_metadata(**kwargs)
    assert [engine.get(i).metadata for i in range(4)] == [{"a": 1}] * 2 + [
        {"a": 2, "late": True},
        {"a": 1, "late": True},
    ]
    everything: list[dict[str, Any]] = [{"$and": [{}]}, {"$not": {"$not": {}}}]
    for where in everything:
        with pytest.raises(imesde.InvalidValueError, match="ids or a filter"):
            engine.delete(where=where)
    with pytest.raises(imesde.InvalidValueError):
        engine.delete([0], where="")  # type: ignore[arg-type]
    assert len(engine) == 4
    # An id given twice with a filter: the second change only if it still passes.
    assert engine.update_metadata([0, 0], [{"a": 5}, {"b": 1}], where={"a": 1}) == 1
    assert engine.get(0).metadata == {"a": 5}


def test_deleted_and_overwritten_items_are_not_updated() -> None:
    engine = imesde.Engine(4, num_shards=1, shard_size=4)
    engine.ingest_vectors(np.eye(4, dtype=np.float32), metadata={"a": 1})
    engine.delete(1)
    engine.ingest_vectors(np.eye(4, dtype=np.float32)[:2])  # 0 and 1's slots: ids 4, 5
    assert engine.update_metadata([0, 1, 2, 3, 4], {"b": 2}) == 3
    assert [engine.get(i).metadata for i in (2, 3, 4)] == [{"a": 1, "b": 2}] * 2 + [{"b": 2}]
    assert engine.get(5).metadata is None
    assert engine.update_metadata(np.int64(2), {"a": None, "b": None}) == 1
    assert engine.get(2).metadata is None  # every key removed: no metadata, as {} is
    # An id given twice is one item, updated twice in turn.
    assert engine.update_metadata([3, 3], [{"n": 1}, {"m": 2}]) == 1
    assert engine.get(3).metadata == {"a": 1, "b": 2, "n": 1, "m": 2}


@pytest.mark.parametrize(
    ("ids", "metadata", "merge", "error", "match"),
    [
        ([0, 1], [{"a": 2}], True, imesde.ShapeError, "1 entries for 2 ids"),
        ([0], [{"a": 2}, {"a": 3}], True, imesde.ShapeError, "more than 1"),
        ([0], "a=2", True, imesde.DTypeError, "single str"),
        ([0], {"a": 2}, 1, imesde.DTypeError, "bool"),
        ([0], 5, True, imesde.DTypeError, "dict or a list of dicts"),
        ([0], {"a": object()}, True, imesde.DTypeError, r'metadata\["a"\]'),
        ([0], [{"a": 1}], False, None, None),
        ([0], {"a": b"x"}, False, imesde.DTypeError, r'metadata\["a"\]'),
        ([0], {1: "x"}, True, imesde.DTypeError, "keys must be str"),
        ([0], {"a": float("nan")}, True, imesde.InvalidValueError, "finite"),
        (["x"], {"a": 2}, True, imesde.DTypeError, None),
        ([-1], {"a": 2}, True, imesde.OutOfRangeError, None),
        ([1, 0], [{"a": 2}, {"a": [1, {}]}], True, imesde.DTypeError, r"metadata\[1\]"),
    ],
)
def test_bad_updates_are_typed_errors_and_change_nothing(
    ids: Any, metadata: Any, merge: bool, error: type[Exception] | None, match: str | None
) -> None:
    engine = imesde.Engine(4, num_shards=1, shard_size=8)
    engine.ingest_vectors(np.eye(4, dtype=np.float32), metadata={"a": 1})
    if error is None:
        assert engine.update_metadata(ids, metadata, merge=merge) == 1
        return
    with pytest.raises(error, match=match):
        engine.update_metadata(ids, metadata, merge=merge)
    assert [engine.get(i).metadata for i in range(4)] == [{"a": 1}] * 4
    assert engine.count(where={"a": 1}) == 4


@pytest.mark.parametrize(
    ("storage", "index", "lexical"),
    [("int8", None, False), ("binary", None, False), ("f32", "ivf", False), ("f32", None, True)],
)
def test_searches_during_updates_return_only_items_that_pass(
    storage: _Storage, index: _IndexKind | None, lexical: bool
) -> None:
    # Rescored (int8, binary), indexed and lexical searches rank under the filter and read the
    # hits back afterwards: an update in between must not make a hit that fails the filter.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4096, 64)).astype(np.float32)
    texts = [f"alpha beta item {i} gamma {i % 7}" for i in range(len(x))]
    extra: dict[str, Any] = {"nlist": 16, "nprobe": 4} if index else {}
    engine = imesde.Engine(
        64, num_shards=4, shard_size=1024, storage=storage, index=index, lexical=lexical, **extra
    )
    engine.ingest_vectors(x, texts, metadata={"c": 0})
    if index:
        engine.train_index()
    bad: list[Any] = []
    done = threading.Event()

    def update(seed: int) -> None:
        r = np.random.default_rng(seed)
        while not done.is_set():
            ids = r.choice(len(x), 64, replace=False)
            engine.update_metadata(ids, {"c": int(r.integers(2))})

    def search(seed: int) -> None:
        r = np.random.default_rng(seed)
        for _ in range(1500):
            if lexical:
                hits = engine.lexical_search(f"gamma {int(r.integers(7))}", 10, where={"c": 0})
            else:
                hits = engine.search_vector(x[int(r.integers(len(x)))], 10, where={"c": 0})
            bad.extend(h for h in hits if h.metadata != {"c": 0})

    updaters = [threading.Thread(target=update, args=(s,)) for s in (1, 2)]
    searchers = [threading.Thread(target=search, args=(s,)) for s in (3, 4)]
    for t in updaters + searchers:
        t.start()
    for t in searchers:
        t.join()
    done.set()
    for t in updaters:
        t.join()
    assert bad == []


def test_delete_by_filter_keeps_an_item_changed_meanwhile() -> None:
    # delete(where=...) finds the items that pass, then deletes them one by one: an item whose
    # metadata an update changed in between (so that it no longer passes) must stay.
    engine = imesde.Engine(16, num_shards=4, shard_size=16_384)
    rng = np.random.default_rng(5)
    kept: list[int] = []
    done = threading.Event()
    ingested = [0]  # ids handed out so far, as the ingesting thread saw them

    def mark() -> None:
        r = np.random.default_rng(6)
        while not done.is_set():
            newest = ingested[0]
            if newest:
                i = int(r.integers(max(0, newest - 300), newest))
                if engine.update_metadata(i, {"s": "keep"}) == 1:
                    kept.append(i)

    def sweep() -> None:
        while not done.is_set():
            engine.delete(where={"s": "tmp"})

    helpers = [threading.Thread(target=mark), threading.Thread(target=sweep)]
    for t in helpers:
        t.start()
    for _ in range(300):
        batch = rng.standard_normal((100, 16)).astype(np.float32)
        ingested[0] = int(engine.ingest_vectors(batch, metadata={"s": "tmp"})[-1]) + 1
    done.set()
    for t in helpers:
        t.join()
    assert kept
    assert [i for i in kept if i not in engine] == []
    assert engine.count(where={"s": "keep"}) == len(set(kept))
