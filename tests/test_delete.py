"""Deletes and upserts: a deleted item is gone from every search kind, reads, snapshots and
BM25 (also after save and load), standing queries are not told; an upsert stores a new
version and retires the old one, and a bad one changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import imesde
import numpy as np
import numpy.typing as npt
import pytest
from helpers import unit

if TYPE_CHECKING:
    from imesde._imesde import _Storage

Golden = tuple[list[str], npt.NDArray[np.float32]]


def brute_force_ids(
    data: npt.NDArray[np.float32], keep: list[int], q: npt.NDArray[np.float32], k: int
) -> list[int]:
    scores = unit(data[keep]) @ unit(q)
    order = np.argsort(-scores, kind="stable")[:k]
    return [keep[i] for i in order]


@pytest.mark.parametrize("storage", ["f32", "int8", "binary"])
def test_deleted_items_leave_every_search_and_snapshots(
    golden: Golden, storage: _Storage, tmp_path: Path
) -> None:
    texts, vecs = golden
    n = 300
    engine = imesde.Engine(384, num_shards=4, shard_size=128, storage=storage, lexical=True)
    engine.ingest_vectors(vecs[:n], texts[:n], metadata=[{"n": str(i)} for i in range(n)])
    gone = [int(i) for i in np.random.default_rng(5).choice(n, 60, replace=False)]
    assert engine.delete(np.array(gone, dtype=np.uint64)) == 60
    assert engine.delete([*gone[:5], 10_000]) == 0  # already gone, never held
    assert engine.delete(gone[0]) == 0
    keep = [i for i in range(n) if i not in set(gone)]
    assert len(engine) == len(keep)
    assert engine.stats()["deleted"] == 60
    with pytest.raises(imesde.ItemNotFoundError):
        engine.get(gone[0])
    for q in (vecs[gone[0]], vecs[gone[1]], vecs[keep[0]]):
        hits = engine.search_vector(q, k=10)
        if storage == "f32":
            assert [h.id for h in hits] == brute_force_ids(vecs[:n], keep, q, 10)
        assert not {h.id for h in hits} & set(gone)
        assert not set(engine.search_vectors(q[None, :], k=10)[1][0].tolist()) & set(gone)
        assert not {h.id for h in engine.search_vector(q, k=5, where={"n": str(gone[2])})}
    lexical = engine.lexical_search(texts[gone[3]], k=20)
    assert lexical
    assert not {h.id for h in lexical} & set(gone)
    assert not {i.id for i in engine.recent(n)} & set(gone)
    engine.save(tmp_path / "e.imesde")
    loaded = imesde.Engine.load(tmp_path / "e.imesde")
    assert len(loaded) == len(keep)
    assert {k: loaded.stats()[k] for k in ("deleted", "evicted", "ingested")} == {
        k: engine.stats()[k] for k in ("deleted", "evicted", "ingested")
    }
    assert not {h.id for h in loaded.lexical_search(texts[gone[3]], k=20)} & set(gone)
    assert [h.id for h in loaded.search_vector(vecs[gone[0]], k=10)] == [
        h.id for h in engine.search_vector(vecs[gone[0]], k=10)
    ]


def test_delete_by_filter_deletes_what_passes(golden: Golden, tmp_path: Path) -> None:
    """``delete(where=..., since=..., until=...)`` (chromadb's ``delete(where=...)``): exactly
    the held items that pass (of ``ids`` when given), gone from searches, BM25 and snapshots;
    no ids and no filter (or ``where={}``) deletes nothing and raises."""
    texts, vecs = golden
    n = 200
    engine = imesde.Engine(384, num_shards=2, shard_size=128, lexical=True)
    meta: list[dict[str, str | int]] = [{"host": f"h{i % 3}", "n": i} for i in range(n)]
    engine.ingest_vectors(vecs[:n], texts[:n], metadata=meta, timestamps=list(range(n)))
    held = {int(i.id): i for i in engine.recent(n)}
    # An empty "keep these" list ($nin: [], or $not of an empty $in) keeps everything too: a
    # "delete all but these" built from an empty list emptied the engine.
    keep: list[str] = []
    empty: list[dict[str, object]] = [
        {},
        {"where": {}},
        {"where": None},
        {"where": {"host": {"$nin": keep}}},
        {"where": {"$not": {"host": {"$in": keep}}}},
    ]
    for bad in empty:
        with pytest.raises(imesde.InvalidValueError, match="ids or a filter"):
            engine.delete(**bad)  # type: ignore[arg-type]
        with pytest.raises(imesde.InvalidValueError, match="ids or a filter"):
            engine.update_metadata(metadata={"x": 1}, **bad)  # type: ignore[arg-type]
    assert len(engine) == len(held)
    # chromadb's #id is not a metadata key no item has: {"#id": {"$nin": keep}} passed all.
    with pytest.raises(imesde.InvalidValueError, match="chromadb's key"):
        engine.delete(where={"#id": {"$nin": [0, 1]}})
    assert engine.count(where={"host": {"$nin": keep}}) == len(held)
    assert engine.count(where={"host": {"$in": keep}}) == 0
    assert len(engine) == len(held)
    with pytest.raises(imesde.InvalidValueError, match="where"):
        engine.delete(where=5)  # type: ignore[arg-type]
    assert len(engine) == len(held)

    def passes(item: imesde.Item, host: str, until: float) -> bool:
        return item.metadata is not None and item.metadata["host"] == host and item.ts < until

    want = {i for i, item in held.items() if passes(item, "h1", 150)}
    assert engine.delete(where={"host": "h1"}, until=150) == len(want) > 0
    left = {int(i.id) for i in engine.recent(n)}
    assert left == set(held) - want
    # With ids: only those of them that pass.
    some = sorted(left)[:30]
    want_ids = {i for i in some if held[i].metadata["n"] % 2 == 0}  # type: ignore[index]
    parity = {"n": {"$in": list(range(0, n, 2))}}
    assert engine.delete(some, where=parity) == len(want_ids)
    left -= want_ids
    assert {int(i.id) for i in engine.recent(n)} == left
    gone = set(held) - left
    for q in vecs[sorted(gone)[:5]]:
        assert not {h.id for h in engine.search_vector(q, k=20)} & gone
    assert not {h.id for h in engine.lexical_search(texts[sorted(gone)[0]], k=50)} & gone
    engine.save(tmp_path / "e.imesde")
    assert {int(i.id) for i in imesde.Engine.load(tmp_path / "e.imesde").recent(n)} == left
    assert engine.delete(where={"host": "nowhere"}) == 0


def test_bad_deletes_are_typed_errors_and_delete_nothing(golden: Golden) -> None:
    _, vecs = golden
    engine = imesde.Engine(384, num_shards=2, shard_size=16)
    engine.ingest_vectors(vecs[:10])
    with pytest.raises(imesde.OutOfRangeError):
        engine.delete([1, -1])
    with pytest.raises(imesde.DTypeError):
        engine.delete(["1"])  # type: ignore[list-item]
    with pytest.raises(imesde.DTypeError):
        engine.delete(1.0)  # type: ignore[arg-type]
    # A bool is an int to Python, never an id (True would delete item 1).
    for bad in (True, [False], np.array([True])):
        with pytest.raises(imesde.DTypeError, match="bool"):
            engine.delete(bad)
    for one in (True, np.array(True), np.True_):
        with pytest.raises(imesde.DTypeError, match="bool"):
            engine.get(one)  # type: ignore[arg-type]
    with pytest.raises(imesde.DTypeError, match="bool"):
        engine.delete(np.array(True))
    assert len(engine) == 10
    # An id as ingest returns it (a numpy integer), or a 0-d array of one, deletes that item.
    ids = engine.ingest_vectors(vecs[10:13])
    assert engine.delete(ids[0]) == 1
    assert engine.delete(np.array(ids[1])) == 1
    assert engine.delete(np.uint32(ids[2])) == 1
    assert len(engine) == 10
    assert not any(int(i) in engine for i in ids)
    # Text on an engine made with a dimension: a call it cannot take, typed.
    with pytest.raises(imesde.InvalidValueError, match="no model"):
        engine.upsert(5, "new text")
    with pytest.raises(imesde.InvalidValueError, match="no model"):
        engine.search("text")


def test_membership_follows_ingest_delete_upsert_and_the_window(golden: Golden) -> None:
    _, vecs = golden
    engine = imesde.Engine(384, num_shards=2, shard_size=4)
    ids = engine.ingest_vectors(vecs[:6])
    assert all(int(i) in engine for i in ids)
    assert np.int64(ids[2]) in engine
    engine.delete(int(ids[2]))
    assert ids[2] not in engine
    new = engine.upsert(int(ids[3]), vecs[10])
    assert new in engine
    assert ids[3] not in engine
    # An upsert of an id not held adds the item: membership tells beforehand.
    assert ids[2] not in engine
    assert engine.upsert(int(ids[2]), vecs[11]) in engine
    engine.ingest_vectors(vecs[12:20])  # the window (8 slots) turns over
    assert ids[0] not in engine
    for other in (-1, 2**64, "0", None, 1.0):
        assert other not in engine


@pytest.mark.parametrize("storage", ["f32", "int8"])
def test_get_batch_reads_each_id_as_get_does(golden: Golden, storage: _Storage) -> None:
    """``get_batch``: the items of a list or an id array in order, None where ``get`` raises
    (deleted, overwritten, never ingested, the ``-1`` padding of ``search_vectors``)."""
    texts, vecs = golden
    engine = imesde.Engine(384, num_shards=2, shard_size=8, storage=storage)
    ids = engine.ingest_vectors(vecs[:20], texts[:20], metadata=[{"n": i} for i in range(20)])
    engine.delete(int(ids[15]))
    _, found = engine.search_vectors(vecs[:3], k=10)
    # Rows as search_vectors pads them (-1) where a query finds fewer.
    padded = np.concatenate([found, np.full((3, 2), -1)], axis=1)
    for row in padded:
        items = engine.get_batch(row)
        assert len(items) == len(row)
        for i, item in zip(row, items, strict=True):
            if i < 0:
                assert item is None
                continue
            assert item is not None
            want = engine.get(int(i))
            assert (item.id, item.text, item.ts, item.metadata) == (
                want.id,
                want.text,
                want.ts,
                want.metadata,
            )
            np.testing.assert_array_equal(item.vector, want.vector)
    asked = [int(ids[19]), int(ids[0]), int(ids[15]), 10**6, int(ids[19]), -1, 2**64]
    got = engine.get_batch(asked)
    want_ids = [ids[19], None, None, None, ids[19], None, None]
    assert [None if it is None else it.id for it in got] == want_ids
    assert engine.get_batch([]) == []
    assert engine.get_batch(np.array([], dtype=np.int64)) == []
    for bad, match in (
        ("12", "got str"),
        (b"1", "got bytes"),
        ([1, "2"], r"ids\[1\]"),
        ([True], "bool"),
    ):
        with pytest.raises(imesde.DTypeError, match=match):
            engine.get_batch(bad)  # type: ignore[arg-type]
    assert len(engine) == 15


def test_deletes_do_not_fire_and_upserts_fire_as_new_items(golden: Golden) -> None:
    texts, vecs = golden
    engine = imesde.Engine(384, num_shards=2, shard_size=64)
    engine.ingest_vectors(vecs[:20], texts[:20], metadata={"src": "golden"})
    sub = engine.subscribe(vecs[5], threshold=0.99)
    engine.delete(5)
    assert sub.drain() == []
    new = engine.upsert(5, vecs[5])
    events = sub.drain()
    assert [e.id for e in events] == [new]
    assert new == 20
    item = engine.get(new)
    # A vector keeps the old text and metadata unless given.
    assert (item.text, item.metadata) == (None, None)  # 5 was deleted before the upsert
    newer = engine.upsert(6, vecs[7], metadata={"src": "fixed"}, ts=123.0)
    got = engine.get(newer)
    assert (got.text, got.metadata, got.ts) == (texts[6], {"src": "fixed"}, 123.0)
    np.testing.assert_allclose(got.vector, unit(vecs[7]), atol=1e-6)
    with pytest.raises(imesde.ItemNotFoundError):
        engine.get(6)
    kept = engine.upsert(8, vecs[9])
    assert engine.get(kept).metadata == {"src": "golden"}
    # A bad version leaves the old item as it was.
    with pytest.raises(imesde.DimensionMismatchError):
        engine.upsert(10, vecs[10][:100])
    with pytest.raises(imesde.ShapeError):
        engine.upsert(10, vecs[10:12])
    with pytest.raises(imesde.InvalidValueError):
        engine.upsert(10, np.zeros(384, np.float32))
    assert engine.get(10).text == texts[10]
    assert len(engine) == 20


def test_upserts_get_semantic_ids_like_any_new_item(golden: Golden) -> None:
    texts, vecs = golden
    sid = imesde.SemanticIdEngine(imesde.RQKMeans(2, [4, 4], random_state=0)).fit(vecs)
    engine = imesde.Engine(384, num_shards=2, shard_size=64)
    engine.attach_semantic_ids(sid)
    engine.ingest_vectors(vecs[:10], texts[:10])
    old = (engine.get(3).metadata or {})["semantic_id"]
    new = engine.upsert(3, vecs[3])
    label = (engine.get(new).metadata or {})["semantic_id"]
    assert label != old  # unique: the same code gets a fresh suffix
    assert label.split("-")[:2] == old.split("-")[:2]
    # A Python labeller's label joins the metadata the new version keeps.
    plain = imesde.Engine(384, num_shards=2, shard_size=64)
    plain.attach_semantic_ids(lambda v: [f"x{len(v)}"] * len(v))
    (i,) = plain.ingest_vectors(vecs[:1], metadata=[{"host": "db1"}])
    j = plain.upsert(int(i), vecs[1])
    assert plain.get(j).metadata == {"host": "db1", "semantic_id": "x1"}


@pytest.mark.model
def test_upsert_of_a_text_embeds_it(embedder: imesde.TextEmbedder) -> None:
    engine = imesde.Engine(embedder, num_shards=2, shard_size=16, lexical=True)
    engine.ingest_batch(["disk /dev/sda1 is 98% full", "sshd: accepted publickey"])
    new = engine.upsert(0, "disk /dev/sdb2 is 99% full", metadata={"host": "db1"})
    assert engine.search("storage running out", k=1)[0].id == new
    assert [h.id for h in engine.lexical_search("sdb2")] == [new]
    assert engine.lexical_search("sda1") == []
