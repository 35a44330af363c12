"""Pickling through the file formats: RQKMeans, BM25, TextEmbedder and Engine survive pickle,
copy.deepcopy and a spawn worker with equal results, and a damaged pickle is as refused as a
damaged file."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
import pytest

Golden = tuple[list[str], npt.NDArray[np.float32]]


def bm25_search(index: imesde.BM25, query: str) -> list[tuple[int, float]]:
    return [(h.id, h.score) for h in index.search(query, k=5)]


def test_rq_kmeans_and_bm25_pickle_with_equal_results(golden: Golden) -> None:
    texts, vecs = golden
    model = imesde.RQKMeans(3, [8, 16, 16], balanced=True, random_state=0).fit(vecs)
    for twin in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert isinstance(twin, imesde.RQKMeans)
        np.testing.assert_array_equal(twin.encode(vecs), model.encode(vecs))
        assert twin(vecs[:20]) == model(vecs[:20])
        assert twin.beam_width == model.beam_width
    assert pickle.loads(pickle.dumps(imesde.RQKMeans(2, 4))).is_fitted is False
    index = imesde.BM25(method="bm25+", stopwords=["the"])
    index.add_batch(list(range(len(texts))), texts)
    index.remove(7)
    for twin in (pickle.loads(pickle.dumps(index)), copy.deepcopy(index)):
        assert len(twin) == len(index)
        assert 7 not in twin
        for q in ("kernel memory", texts[3], "network driver fix"):
            assert bm25_search(twin, q) == bm25_search(index, q)
    assert repr(imesde.BM25.from_bytes(index.to_bytes())) == repr(index)


def test_a_damaged_pickle_is_refused_like_a_damaged_file(golden: Golden) -> None:
    texts, vecs = golden
    index = imesde.BM25()
    index.add_batch(list(range(50)), texts[:50])
    data = bytearray(index.to_bytes())
    data[len(data) // 2] ^= 0x40
    with pytest.raises(imesde.IndexCorruptError):
        imesde.BM25.from_bytes(bytes(data))
    books = imesde.RQKMeans(2, 4, random_state=0).fit(vecs)._fitted().to_bytes()
    with pytest.raises(imesde.IndexCorruptError):
        imesde._imesde.RQCodebooks.from_bytes(books[:-3])
    engine = imesde.Engine(384, num_shards=2, shard_size=8)
    engine.ingest_vectors(vecs[:10])
    snap = engine.to_bytes()
    with pytest.raises(imesde.IndexCorruptError):
        imesde.Engine.from_bytes(snap[:-1])
    # A pickle whose bytes were altered: the same check.
    forged = pickle.dumps(engine).replace(snap[40:60], bytes(20))
    with pytest.raises(imesde.IndexCorruptError):
        pickle.loads(forged)


def test_a_vector_engine_pickles_whole(golden: Golden) -> None:
    texts, vecs = golden
    engine = imesde.Engine(384, num_shards=4, shard_size=32, storage="int8", lexical=True)
    engine.ingest_vectors(vecs[:100], texts[:100], metadata=[{"n": str(i)} for i in range(100)])
    engine.delete([3, 4])
    twin = pickle.loads(pickle.dumps(engine))
    assert (len(twin), twin.storage, twin.lexical, twin.model) == (98, "int8", True, None)
    for q in vecs[:5]:
        assert [(h.id, h.score, h.metadata) for h in twin.search_vector(q, k=5)] == [
            (h.id, h.score, h.metadata) for h in engine.search_vector(q, k=5)
        ]
    assert [h.id for h in twin.lexical_search(texts[9])] == [
        h.id for h in engine.lexical_search(texts[9])
    ]


def _search_in_worker(args: tuple[Any, Any, npt.NDArray[np.float32]]) -> Any:
    engine, model, q = args
    return [h.id for h in engine.search_vector(q, k=5)], model.encode(q[None, :]).tolist()


def test_objects_cross_to_a_spawn_worker(golden: Golden) -> None:
    _, vecs = golden
    engine = imesde.Engine(384, num_shards=2, shard_size=64)
    engine.ingest_vectors(vecs[:100])
    model = imesde.RQKMeans(2, 8, random_state=0).fit(vecs)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        ids, codes = pool.map(_search_in_worker, [(engine, model, vecs[5])])[0]
    assert ids == [h.id for h in engine.search_vector(vecs[5], k=5)]
    assert codes == model.encode(vecs[5][None, :]).tolist()


@pytest.mark.model
def test_text_embedder_and_a_text_engine_pickle(embedder: imesde.TextEmbedder) -> None:
    twin = pickle.loads(pickle.dumps(embedder))
    assert (twin.model_path, twin.dim, twin.max_length, twin.pooling) == (
        embedder.model_path,
        embedder.dim,
        embedder.max_length,
        embedder.pooling,
    )
    texts = ["kernel: out of memory", "sshd: accepted publickey"]
    np.testing.assert_allclose(twin.embed(texts), embedder.embed(texts), atol=1e-6)
    engine = imesde.Engine(embedder, num_shards=2, shard_size=8)
    engine.ingest_batch(texts)
    copied = copy.deepcopy(engine)
    assert copied.model is not None
    assert copied.search("memory exhausted", k=1)[0].text == texts[0]
    # An alert crosses to another process (a Ray task, a worker pool) as its fields and its
    # query; the subscription stays with its engine.
    sub = engine.subscribe("memory exhausted", threshold=0.3)
    engine.ingest("kernel: out of memory: killed process 4242", metadata={"host": "db1"})
    (event,) = sub.drain()
    for back in (pickle.loads(pickle.dumps(event)), copy.deepcopy(event)):
        assert isinstance(back, imesde.Event)
        assert back.subscription is None
        fields = ("id", "text", "score", "ts", "metadata", "query")
        assert [getattr(back, f) for f in fields] == [getattr(event, f) for f in fields]
        assert back.query == "memory exhausted"
        assert back.hit == event.hit


def test_collision_stores_and_semantic_id_engines_pickle(golden: Golden, tmp_path: Any) -> None:
    _, vecs = golden
    store = imesde.InMemoryCollisionStore()
    assert store.claim(["a", "a", "b"]) == ["a", "a-1", "b"]
    assert store.claim(["c"], owners=["doc1"]) == ["c"]
    assert store.claim(["c"], owners=["doc2"]) == ["c-doc2"]
    assert store.next_suffix("z") == 0
    for copied in (pickle.loads(pickle.dumps(store)), copy.deepcopy(store)):
        # The copy hands out what the original would have: nothing twice, owners kept.
        assert len(copied) == len(store) == 6  # "z" too: next_suffix hands out its id
        assert copied.claim(["a", "b"]) == ["a-2", "b-1"]
        assert copied.claim(["c"], owners=["doc1"]) == ["c"]
        assert copied.next_suffix("z") == 1
    assert store.claim(["a"]) == ["a-2"]  # the original did not move
    sid = imesde.SemanticIdEngine(imesde.RQKMeans(2, 4, random_state=0).fit(vecs))
    first = sid.unique_ids(vecs[:20])
    twin = pickle.loads(pickle.dumps(sid))
    assert twin.unique_ids(vecs[20:40]) == sid.unique_ids(vecs[20:40])
    assert not set(first) & set(twin.unique_ids(vecs[:20]))
    sqlite = imesde.SQLiteCollisionStore(tmp_path / "ids.db", timeout=5)
    assert sqlite.claim(["k"]) == ["k"]
    again = pickle.loads(pickle.dumps(sqlite))
    assert (again.path, again.timeout) == (sqlite.path, 5.0)
    assert again.claim(["k"]) == ["k-1"]  # the same database

    # A relative path names the file where the store was made: a copy made after a chdir, or
    # in a process in another directory (a Ray worker), opens the same database.
    (tmp_path / "elsewhere").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        relative = imesde.SQLiteCollisionStore("rel.db", timeout=5)
        assert relative.claim(["k"]) == ["k"]
        mp.chdir(tmp_path / "elsewhere")  # before the pickle: still the file named then
        moved = pickle.loads(pickle.dumps(relative))
        assert moved.path == str(tmp_path / "rel.db")
        assert moved.claim(["k"]) == ["k-1"]
        moved.close()
        relative.close()


def test_hits_and_items_pickle_as_their_fields_and_bytes_like_data_loads(golden: Golden) -> None:
    texts, vecs = golden
    e = imesde.Engine(384, num_shards=2, shard_size=64)
    meta: list[dict[str, Any] | None] = [
        {"n": i, "tags": ["a", str(i)], "ok": i % 2 == 0} if i % 3 else None for i in range(50)
    ]
    e.ingest_vectors(vecs[:50], texts[:50], metadata=meta)
    for hits in (e.search_vector(vecs[3], k=5), [e.search_vector(vecs[4], k=1)[0]]):
        for twin in (pickle.loads(pickle.dumps(hits)), copy.deepcopy(hits)):
            assert [(h.id, h.score, h.text, h.ts, h.metadata) for h in twin] == [
                (h.id, h.score, h.text, h.ts, h.metadata) for h in hits
            ]
            assert all(isinstance(h, imesde.Hit) for h in twin)
            # Hits compare by their fields, as dataclasses do (and hash alike).
            assert twin == hits
            assert {hash(h) for h in twin} == {hash(h) for h in hits}
    # Items read back with get / recent carry their vector too.
    for item in (e.get(4), e.get(5), *e.recent(3)):
        for back in (pickle.loads(pickle.dumps(item)), copy.deepcopy(item)):
            assert isinstance(back, imesde.Item)
            assert (back.id, back.text, back.ts, back.metadata) == (
                item.id,
                item.text,
                item.ts,
                item.metadata,
            )
            assert back.vector.dtype == np.float32
            assert np.array_equal(back.vector, item.vector)
            assert back == item
            assert hash(back) == hash(item)
    index = imesde.BM25()
    index.add_batch(list(range(50)), texts[:50])
    lexical = index.search(texts[7], k=3)
    twin = pickle.loads(pickle.dumps(lexical))
    assert [(h.id, h.score, h.terms) for h in twin] == [(h.id, h.score, h.terms) for h in lexical]
    assert twin == lexical
    # Other fields, or another type: not equal.
    hits = e.search_vector(vecs[3], k=2)
    assert hits[0] != hits[1]
    assert hits[0] != e.get(hits[0].id)
    assert e.get(5) != e.get(6)
    assert lexical[0] != lexical[1]
    # -0.0 equals 0.0, so they hash alike.
    make = imesde.BM25Hit._from_fields  # type: ignore[attr-defined]
    zero, negative = (make(1, s, []) for s in (0.0, -0.0))
    assert zero == negative
    assert hash(zero) == hash(negative)
    assert hits[0] != (hits[0].text, hits[0].score)
    # Results of a restored engine equal the original's.
    restored = imesde.Engine.from_bytes(e.to_bytes())
    assert restored.search_vector(vecs[9], k=5) == e.search_vector(vecs[9], k=5)
    # Bytes held as a bytearray or memoryview (a buffer, a joblib store) load as bytes do.
    for data in (bytearray(e.to_bytes()), memoryview(e.to_bytes())):
        back = imesde.Engine.from_bytes(data)
        assert [h.id for h in back.search_vector(vecs[3], k=5)] == [
            h.id for h in e.search_vector(vecs[3], k=5)
        ]
    assert len(imesde.BM25.from_bytes(memoryview(index.to_bytes()))) == 50
