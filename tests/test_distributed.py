"""imesde on Ray: Ray Data embedding and the sharded engine against a single engine, on a
local Ray of two CPUs (marked ``ray``; skipped when Ray is not installed)."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import pickle
import time
import types
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
import pytest

ray = pytest.importorskip("ray")
dist = pytest.importorskip("imesde.distributed")

pytestmark = [pytest.mark.ray, pytest.mark.data]

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DIM = 384  # the default model's, so hashed vectors and embedded queries meet


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def stream_texts(n: int) -> list[str]:
    out = []
    with gzip.open(DATA / "changelog_stream.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            out.append(json.loads(line)["text"])
            if len(out) == n:
                break
    return out


def debtags_queries() -> list[str]:
    lines = (DATA / "debtags_queries.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["query"] for line in lines]


def hashed(texts: list[str]) -> npt.NDArray[np.float32]:
    """Bag-of-words vectors (each word hashed into DIM buckets), unit length: equal texts get
    equal vectors, so the stream's repeated items tie exactly as they do in real use."""
    x = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            x[i, zlib.crc32(w.encode()) % DIM] += 1.0
        x[i, DIM - 1] += 0.01  # no zero vector for an empty text
    out: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def same(a: list[Any], b: list[Any]) -> bool:
    """Item for item: text, score (exactly) and timestamp."""
    return [(h.text, h.score, h.ts) for h in a] == [(h.text, h.score, h.ts) for h in b]


def test_embed_dataset_equals_text_embedder(embedder: imesde.TextEmbedder) -> None:
    texts = stream_texts(300)
    ds = ray.data.from_items([{"text": t, "n": i} for i, t in enumerate(texts)])
    rows = dist.embed(ds, batch_size=64, concurrency=2, num_cpus=1).take_all()
    rows.sort(key=lambda r: r["n"])
    got = np.stack([r["embedding"] for r in rows])
    assert got.dtype == np.float32
    assert got.shape == (300, embedder.dim)
    assert [r["text"] for r in rows] == texts
    want = embedder.embed(texts)
    assert float(np.min(np.sum(got * want, axis=1))) > 0.99999
    with pytest.raises(ValueError, match="concurrency"):
        dist.embed(ds, concurrency=0)
    with pytest.raises(ValueError, match="batch_size"):
        dist.embed(ds, batch_size=0)
    # A cell that is not a str is an error, not the embedding of its repr ("None", "b'..'").
    for bad in (None, b"raw bytes"):
        odd = ray.data.from_items([{"text": "kernel panic"}, {"text": bad}])
        with pytest.raises(Exception, match="must hold str"):
            dist.embed(odd, batch_size=8, concurrency=1, num_cpus=1).take_all()


@pytest.fixture(scope="module")
def corpus(embedder: imesde.TextEmbedder) -> tuple[list[str], npt.NDArray[np.float32], list[float]]:
    """The first 20,000 stream items embedded once by the model (repeated texts get equal
    vectors, so their scores tie), and a timestamp each."""
    texts = stream_texts(20_000)
    ts = [1_600_000_000.0 + i for i in range(len(texts))]
    return texts, embedder.embed(texts), ts


def test_two_shards_answer_as_one_engine(
    corpus: tuple[list[str], npt.NDArray[np.float32], list[float]],
    embedder: imesde.TextEmbedder,
) -> None:
    """The bar: 2 shards over 20,000 stream items give one engine's top-10 for the 88 debtags
    queries, dense, lexical and hybrid, item for item. The items are embedded once and
    ingested as vectors on both sides (the shards embed queries themselves)."""
    texts, x, ts = corpus
    # Any mapping is metadata and a filter (a MappingProxyType could not go to a shard).
    meta = [
        {"n": i % 7} if i % 2 else types.MappingProxyType({"n": i % 7}) for i in range(len(texts))
    ]
    one = imesde.Engine(embedder, num_shards=16, shard_size=2048, lexical=True)
    sharded = dist.ShardedEngine(2, shard_size=16_384, lexical=True, num_cpus=1)
    one_id: dict[int, int] = {-1: -1}  # a global id's item in `one` (the padding as it is)
    for start in range(0, len(texts), 1000):
        end = start + 1000
        args: dict[str, Any] = {
            "texts": texts[start:end],
            "timestamps": ts[start:end],
            "metadata": meta[start:end],
        }
        a = one.ingest_vectors(x[start:end], **args)
        b = sharded.ingest_vectors(x[start:end], batch_size=256, **args)
        one_id.update(zip(b.tolist(), a.tolist(), strict=True))
        # Global ids increase in ingest order, and name their shard.
        assert np.all(np.diff(b) > 0)
        assert len(a) == len(b)
    assert len(sharded) == len(one) == len(texts)
    st = sharded.stats()
    assert (st["len"], st["ingested"], st["deleted"]) == (len(texts), len(texts), 0)
    assert (st["capacity"], st["num_shards"], st["dim"]) == (sharded.capacity, 2, one.dim)
    assert [shard["len"] for shard in st["shards"]] == sharded.shard_sizes()
    for key in ("memory_bytes", "total_bytes"):
        assert st[key] == sum(shard[key] for shard in st["shards"])
    sizes = sharded.shard_sizes()
    assert sum(sizes) == len(texts)
    assert all(s > 9_000 for s in sizes if s is not None)
    queries = debtags_queries()
    assert len(queries) == 88
    vectors = embedder.embed(queries)
    ties = 0
    where = types.MappingProxyType({"n": types.MappingProxyType({"$lt": 3})})
    window: dict[str, Any] = {"where": where, "since": ts[5000], "until": ts[15000]}
    for q, v in zip(queries, vectors, strict=True):
        want = one.search_vector(v, 10)
        assert same(sharded.search_vector(v, 10), want)
        ties += len(want) - len({h.score for h in want})
        assert same(sharded.search_vector(v, 10, **window), one.search_vector(v, 10, **window))
        assert same(sharded.search(q, 10), one.search(q, 10))
        assert same(sharded.lexical_search(q, 10), one.lexical_search(q, 10))
        assert same(sharded.lexical_search(q, 10, **window), one.lexical_search(q, 10, **window))
        assert same(sharded.hybrid_search(q, 10), one.hybrid_search(q, 10))
    for method in ("rrf", "combmnz"):
        q = queries[0]
        assert same(sharded.hybrid_search(q, 5, method), one.hybrid_search(q, 5, method))
    assert same(sharded.hybrid_search(q, 5, alpha=0.3), one.hybrid_search(q, 5, alpha=0.3))
    # A numpy number, as from a np.linspace sweep of alpha.
    a = np.float32(0.3)
    assert same(sharded.hybrid_search(q, 5, alpha=a), one.hybrid_search(q, 5, alpha=a))
    # The query's embedding given: the same fusion, the dense side searching that vector.
    other = vectors[1]
    want = one.hybrid_search(q, 5, vector=other)
    assert same(sharded.hybrid_search(q, 5, vector=other), want)
    assert [h.id for h in want] != [h.id for h in one.hybrid_search(q, 5)]
    # A query given as its analyzed terms (a generator too: read once, not once per shard).
    settings = one.lexical_settings
    assert settings is not None
    terms = settings.analyze(q)
    want = one.lexical_search(terms, 10, **window)
    assert same(sharded.lexical_search(iter(terms), 10, **window), want)
    assert same(want, one.lexical_search(q, 10, **window))
    assert same(
        sharded.hybrid_search(terms, 5, vector=other), one.hybrid_search(q, 5, vector=other)
    )
    with pytest.raises(imesde.DTypeError, match="without vector="):
        sharded.hybrid_search(terms, 5)
    with pytest.raises(imesde.DTypeError, match=r"query terms\[1\] must be str"):
        sharded.lexical_search(["kernel", 3], 5)
    assert ties > 0, "the stream's repeated items tie: the merge's tie order is exercised"
    # A batch of vectors, as faiss searches: the arrays one engine gives (ids, scores, ties).
    for opts in ({}, window):
        got_s, got_i = sharded.search_vectors(vectors, 10, **opts)
        want_s, want_i = one.search_vectors(vectors, 10, **opts)
        assert got_s.dtype == np.float32
        assert got_i.dtype == np.int64
        np.testing.assert_array_equal(np.vectorize(one_id.get)(got_i), want_i)
        np.testing.assert_array_equal(got_s, want_s)
    none_s, none_i = sharded.search_vectors(vectors[:3], 10, where={"n": 99})
    assert none_s.shape == none_i.shape == (3, 0)
    no_queries = vectors[:0]
    assert (
        sharded.search_vectors(no_queries, 10)[1].shape
        == one.search_vectors(no_queries, 10)[1].shape
    )
    # Engine's argument names and properties.
    assert same(sharded.search_vector(query=vectors[0], k=3), one.search_vector(vectors[0], 3))
    assert (sharded.dim, sharded.storage, sharded.lexical) == (one.dim, "f32", True)
    settings = sharded.lexical_settings
    assert settings is not None
    assert (settings.k1, settings.method, len(settings)) == (1.2, "lucene", 0)
    with pytest.raises(imesde.InvalidValueError, match="alpha"):
        sharded.hybrid_search(q, 5, alpha=1.5)
    # Deletes by filter, as one engine's (no ids and no filter deletes nothing and raises).
    by_filter: dict[str, Any] = {"where": {"n": 6}, "until": ts[3000]}
    assert sharded.delete(**by_filter) == one.delete(**by_filter) > 0
    assert len(sharded) == len(one)
    assert same(sharded.search_vector(vectors[0], 10), one.search_vector(vectors[0], 10))
    with pytest.raises(imesde.InvalidValueError, match="ids or a filter"):
        sharded.delete(where={})
    # get / delete route by id.
    best = sharded.search_vector(vectors[0], 1)[0]
    item = sharded.get(id=best.id)
    assert (item.text, item.ts) == (best.text, best.ts)
    # Several ids at once, from every shard, in order; None for ids no shard holds.
    top = [h.id for h in sharded.search_vector(vectors[0], 10)]
    rows = sharded.get_batch([*top, -1, 2**63 + 5, top[0]])
    assert [r.id if r else None for r in rows] == [*top, None, None, top[0]]
    for r in rows[:10]:
        assert r is not None
        one_by_one = sharded.get(r.id)
        assert (r.text, r.ts, r.metadata) == (one_by_one.text, one_by_one.ts, one_by_one.metadata)
        np.testing.assert_array_equal(r.vector, one_by_one.vector)
    assert len({sharded._shard_of(i) for i in top}) == 2
    assert best.id in sharded
    assert np.int64(best.id) in sharded
    assert sharded.delete([best.id, best.id + 2 * 10**9]) == 1
    with pytest.raises(KeyError):
        sharded.get(best.id)
    for gone in (best.id, best.id + 2 * 10**9, -1, "0", None):
        assert gone not in sharded
    assert best.id not in [h.id for h in sharded.search_vector(vectors[0], 10)]
    assert best.id not in [h.id for h in sharded.lexical_search(queries[0], 50)]


def test_text_search_and_standing_queries_on_shards(
    embedder: imesde.TextEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    # A model file whose tokenizer lives elsewhere (the packaged int8 file); its actor is gone
    # (its handle dropped) before the two below need both CPUs.
    from imesde._locate import packaged_model

    model, tokenizer = packaged_model()
    small = dist.ShardedEngine(1, model=model, tokenizer=tokenizer, shard_size=64, num_cpus=1)
    small.ingest_batch(["kernel panic on boot", "update the German translation"])
    assert small.search("the kernel crashed", 1)[0].text == "kernel panic on boot"
    ray.kill(small.actor(0))
    del small
    texts = stream_texts(600)
    one = imesde.Engine(embedder, num_shards=4, shard_size=256)
    sharded = dist.ShardedEngine(2, shard_size=512, num_cpus=1)
    for start in range(0, len(texts), 100):
        ts = [1_600_000_000.0 + start + i for i in range(100)]
        one.ingest_batch(texts[start : start + 100], timestamps=ts)
        sharded.ingest_batch(
            texts[start : start + 100], timestamps=ts, batch_size=50, show_progress_bar=start == 0
        )
    with pytest.raises(imesde.DTypeError, match="show_progress_bar"):
        sharded.ingest_batch(texts[:2], show_progress_bar="yes")
    assert sharded.lexical_settings is None
    queries = ["kernel panic", "memory leak fixed", "translation update"]
    for q, got in zip(queries, sharded.search_batch(queries, 5), strict=True):
        want = one.search(q, 5)
        assert [h.text for h in got] == [h.text for h in want]
        assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-6)
        assert [h.text for h in sharded.search(q, 5)] == [h.text for h in want]
    seen: list[Any] = []
    with sharded.subscribe("kernel security fix", threshold=0.3, callback=seen.append) as sub:
        polled = sharded.subscribe("kernel security fix", threshold=0.3)
        assert polled.query == "kernel security fix"
        new = ["Fix a kernel security hole", "Update the Spanish translation", "Kernel oops fixed"]
        ids = sharded.ingest_batch(new, batch_size=1)
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        events = [polled.get(timeout=10), polled.get(timeout=10)]
        # As on one engine: a callback's subscription queues nothing to get, both are
        # listed, and unsubscribe stops one.
        with pytest.raises(imesde.InvalidValueError, match="callback"):
            sub.get(timeout=1)
        assert sharded.subscriptions() == [sub, polled]
        assert sharded.unsubscribe(polled.id)  # by id too, as Engine.unsubscribe takes it
        assert not sharded.unsubscribe(polled)
        assert polled.get(timeout=0.1) is None
    assert not sub.active
    assert sharded.subscriptions() == []
    texts_seen = sorted(h.text for h in seen)
    assert texts_seen == sorted(e.text for e in events if e is not None)
    assert "Update the Spanish translation" not in texts_seen
    assert {h.id for h in seen} <= {int(i) for i in ids}
    assert all(h.score >= 0.3 for h in seen)

    # async for, holding no thread, ends once closed; a callback that raises is logged.
    async def read(subscription: Any) -> list[str | None]:
        return [hit.text async for hit in subscription]

    def fail(hit: Any) -> None:
        raise RuntimeError(f"alert sink down for {hit.id}")

    failing = sharded.subscribe("kernel security fix", threshold=0.3, callback=fail)
    streamed = sharded.subscribe("kernel security fix", threshold=0.3)
    sharded.ingest_batch(new, batch_size=1)
    deadline = time.monotonic() + 30
    while failing.errors < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    failing.close()
    streamed.close()
    assert sorted(t for t in asyncio.run(read(streamed)) if t is not None) == texts_seen
    assert failing.errors == 2
    assert "alert sink down" in caplog.text

    # Semantic ids on texts each shard embeds: the ids one engine gives the same stream.
    rq = imesde.RQKMeans(n_levels=2, n_clusters=8, random_state=0).fit(embedder.embed(texts))
    one.attach_semantic_ids(imesde.SemanticIdEngine(rq))
    sharded.attach_semantic_ids(imesde.SemanticIdEngine(rq))
    labelled = texts[:120]
    want_ids = one.ingest_batch(labelled)
    got_ids = sharded.ingest_batch(labelled, batch_size=25)
    want_labels = [semantic_id(one.get(int(i))) for i in want_ids]
    got_labels = [semantic_id(item) for item in sharded.get_batch(got_ids)]
    assert sorted(got_labels) == sorted(want_labels)


def semantic_id(item: Any) -> str:
    """An item's ``semantic_id`` (an ``Item`` or a ``ShardedItem``)."""
    return str(item.metadata["semantic_id"])


class _Unpicklable:
    """A labeller that cannot go to another process (it holds a lock)."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()

    def __call__(self, x: npt.NDArray[np.float32]) -> list[str]:
        return ["x"] * len(x)


def test_semantic_ids_are_unique_over_every_shard_and_survive_a_restore(tmp_path: Path) -> None:
    # Each shard labels its part of a batch; the ids are claimed in one store the shards
    # share, so they are the ids one engine gives the same stream (the same set), and a shard
    # restored from nothing labels what it takes next.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    rq = imesde.RQKMeans(n_levels=2, n_clusters=4, random_state=0).fit(x[:1000])
    sid = imesde.SemanticIdEngine(rq)
    sharded = dist.ShardedEngine(2, model=16, shard_size=4096, engine_shards=1, num_cpus=0.5)
    try:
        other_dim = imesde.RQKMeans(n_levels=2, n_clusters=4).fit(x[:500, :8])
        with pytest.raises(imesde.DimensionMismatchError):
            sharded.attach_semantic_ids(imesde.SemanticIdEngine(other_dim))
        with pytest.raises(imesde.InvalidValueError, match="not fitted"):
            sharded.attach_semantic_ids(imesde.SemanticIdEngine(imesde.RQKMeans(2, 4)))
        with pytest.raises(imesde.DTypeError, match="callable"):
            sharded.attach_semantic_ids(3)
        with pytest.raises(imesde.DTypeError, match="pickle"):
            sharded.attach_semantic_ids(_Unpicklable())
        assert sharded.semantic_id_store is None
        sharded.attach_semantic_ids(sid)
        first = sharded.ingest_vectors(x[:1500], batch_size=100)
        one = imesde.Engine(16, num_shards=1, shard_size=4096)
        one.attach_semantic_ids(imesde.SemanticIdEngine(rq))
        want = [semantic_id(one.get(int(i))) for i in one.ingest_vectors(x[:1500])]
        got = [semantic_id(item) for item in sharded.get_batch(first)]
        assert sorted(got) == sorted(want)
        assert len(set(want)) == 1500

        sharded.restore_shard(1)  # no snapshot: it comes back empty, and still labels
        rest = sharded.ingest_vectors(x[1500:], batch_size=100)
        store = sharded.semantic_id_store
        assert store is not None
        assert len(store) == 3000
        assert len(sid.unique_resolver.store) == 0  # the store given is copied, not updated
        held = [int(i) for i in np.concatenate([first, rest]) if int(i) in sharded]
        assert len(held) == 750 + 1500  # shard 1's first 750 went with its actor
        labels = [semantic_id(item) for item in sharded.get_batch(held)]
        assert len(set(labels)) == len(labels)
        codes = dict(
            zip(np.concatenate([first, rest]).tolist(), rq.semantic_id(rq.encode(x)), strict=True)
        )
        for item_id, label in zip(held, labels, strict=True):
            code = codes[item_id]
            assert label == code or label.startswith(code + "-")

        sharded.attach_semantic_ids(None)
        plain = sharded.ingest_vectors(x[:10])
        assert all(item.metadata is None for item in sharded.get_batch(plain))
        # Attached again, the same store goes on: no id handed out before comes again.
        sharded.attach_semantic_ids(sid)
        again = sharded.ingest_vectors(x[:100])
        relabelled = {semantic_id(item) for item in sharded.get_batch(again)}
        assert len(relabelled) == 100
        assert not relabelled & (set(want) | set(labels))
        assert len(store) == 3100
        sharded.save(tmp_path / "saved")
    finally:
        sharded.close()
    # Loaded (its labeller is not saved) and attached again: the same store goes on, so no
    # id the items held carry is handed out again.
    loaded = dist.ShardedEngine.load(tmp_path / "saved", num_cpus=0.5)
    try:
        loaded.attach_semantic_ids(sid)
        more = loaded.ingest_vectors(x[:300])
        fresh = [semantic_id(item) for item in loaded.get_batch(more)]
        assert not set(fresh) & (set(want) | set(labels) | relabelled)
        assert len(set(fresh)) == 300
        assert loaded.semantic_id_store is not None
        assert len(loaded.semantic_id_store) == 3400
    finally:
        loaded.close()


def test_a_dead_shard_raises_answers_partially_and_is_restored(tmp_path: Path) -> None:
    texts = stream_texts(3000)
    x = hashed(texts)
    sharded = dist.ShardedEngine(2, model=DIM, shard_size=4096, num_cpus=0.5)
    sharded.ingest_vectors(x[:2000], texts=texts[:2000], batch_size=500)
    sharded.save(tmp_path / "snap")
    saved_sizes = sharded.shard_sizes()
    before = sharded.search_vector(x[7], 10)
    # Acknowledged after the snapshot: gone from a shard that dies.
    later = sharded.ingest_vectors(x[2000:], texts=texts[2000:], batch_size=500)
    sub = sharded.subscribe(x[11], threshold=0.999)
    ray.kill(sharded.actor(1))
    # The kill is asynchronous: wait until the shard stops answering.
    deadline = time.monotonic() + 60
    while sharded.available()[1] and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(imesde.ShardUnavailableError, match="shard 1") as err:
        sharded.search_vector(x[7], 10)
    assert err.value.shard == 1
    assert isinstance(err.value, imesde.ImesdeError)
    with pytest.raises(imesde.ShardUnavailableError):
        sharded.ingest_vectors(x[:2], texts=texts[:2], batch_size=1)
    partial = sharded.search_vector(x[7], 10, allow_partial=True)
    assert partial
    assert all(h.id % 2 == 0 for h in partial)
    assert sharded.available() == [True, False]
    partial_sizes = sharded.shard_sizes(allow_partial=True)
    assert partial_sizes[1] is None
    partial_stats = sharded.stats(allow_partial=True)
    assert partial_stats["shards"][1] is None
    assert partial_stats["len"] == partial_sizes[0]
    assert partial_stats["lexical_bytes"] is None  # no BM25 index
    with pytest.raises(imesde.ShardUnavailableError):
        sharded.stats()
    sharded.restore_shard(1)
    assert sharded.available() == [True, True]
    # Shard 1 is back as it was saved; shard 0 kept everything.
    assert sharded.shard_sizes()[1] == saved_sizes[1]
    for h in before:
        assert sharded.get(h.id).text == h.text
    for i in later[:: len(later) // 20]:
        if i % 2 == 0:
            assert sharded.get(int(i)).text is not None
        else:
            with pytest.raises(KeyError):
                sharded.get(int(i))
    # The standing query runs on the restored shard too: one copy of the item to each shard.
    copies = sharded.ingest_vectors(np.stack([x[11], x[11]]), texts=["a", "b"], batch_size=1)
    events = [sub.get(timeout=20), sub.get(timeout=20)]
    sub.close()
    assert sorted(e.id for e in events if e is not None) == sorted(int(i) for i in copies)
    assert {int(i) % 2 for i in copies} == {0, 1}
    # A saved engine loads whole.
    loaded = dist.ShardedEngine.load(tmp_path / "snap", num_cpus=0.5)
    assert same(loaded.search_vector(x[7], 10), before)
    new = loaded.ingest_vectors(x[:4], texts=texts[:4], batch_size=2)
    assert int(new.min()) > max(h.id for h in before)


def test_ray_restarts_a_crashed_shard_from_its_snapshot(tmp_path: Path) -> None:
    texts = stream_texts(1200)
    x = hashed(texts)
    snap = tmp_path / "auto"
    sharded = dist.ShardedEngine(
        2,
        model=DIM,
        shard_size=2048,
        storage="binary",
        num_cpus=0.5,
        snapshot_dir=snap,
        max_restarts=1,
    )
    sharded.ingest_vectors(x[:800], texts=texts[:800], batch_size=200)
    sharded.save()
    saved = sharded.shard_sizes()
    # Set after the save: Ray restarts a shard with its first arguments and its snapshot,
    # neither of which holds it.
    sharded.k_factor = 7
    sharded.ingest_vectors(x[800:], texts=texts[800:], batch_size=200)
    sub = sharded.subscribe(x[0], threshold=-1.0)
    # A crash Ray may restart from (ray.kill with no_restart=False): __init__ runs again and
    # reads the shard's snapshot in snapshot_dir.
    ray.kill(sharded.actor(0), no_restart=False)
    # The kill is asynchronous: the old actor may answer once more, then calls fail while it
    # restarts, then the restarted one answers with its snapshot's items.
    deadline = time.monotonic() + 60
    sizes: list[int | None] = []
    while time.monotonic() < deadline:
        try:
            sizes = sharded.shard_sizes()
        except imesde.ShardUnavailableError:
            sizes = []
        if sizes and sizes[0] == saved[0]:
            break
        time.sleep(0.2)
    assert sizes == [saved[0], 600], "shard 0 came back from its snapshot"

    def k_factor(shard: int) -> int:
        got: int = ray.get(sharded.actor(shard).__ray_call__.remote(lambda s: s.engine.k_factor))
        return got

    assert (k_factor(0), k_factor(1)) == (20, 7)
    got = sharded.search_vector(x[3], 5)
    assert got[0].text == texts[3]
    # A search carries the driver's settings: the restarted shard takes them.
    assert (k_factor(0), k_factor(1), sharded.k_factor) == (7, 7, 7)
    # The standing query is registered again on the restarted shard: new items on both
    # shards fire (and the subscription says which shard came back).
    deadline = time.monotonic() + 30
    while 0 not in sub.restarted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sub.restarted == {0}
    new = sharded.ingest_vectors(x[:6], texts=texts[:6])
    fired: list[int] = []
    while len(fired) < 6 and time.monotonic() < deadline:
        hit = sub.get(timeout=1)
        if hit is not None:
            fired.append(hit.id)
    sub.close()
    assert sorted(fired) == sorted(int(i) for i in new)
    assert {i % 2 for i in fired} == {0, 1}


def test_uneven_batches_keep_one_engines_window_and_bad_items_store_nothing(
    tmp_path: Path,
) -> None:
    """Items go to the shards in turn whatever the batches (as micro-batching gives them):
    the shards hold the window one engine of their capacity holds. A bad item is refused
    before any shard stores anything; an error on a shard is the engine's own, unwrapped,
    with the ids the other shards stored."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((61, 8)).astype(np.float32)
    one = imesde.Engine(8, num_shards=2, shard_size=8)
    sharded = dist.ShardedEngine(2, model=8, shard_size=8, engine_shards=1, num_cpus=0.5)
    start = 0
    for size in [5, 1] * 10 + [1]:
        one.ingest_vectors(x[start : start + size])
        sharded.ingest_vectors(x[start : start + size])
        start += size
    assert sharded.shard_sizes() == [8, 8]
    held = sharded.search_vector(x[-1], 16, exact=True)
    # A sharded id is the item's place in the stream * shards + shard.
    assert sorted(h.id // 2 for h in held) == sorted(h.id for h in one.search_vector(x[-1], 16))
    before = len(sharded)
    for bad in (
        np.vstack([x[:3], np.full((1, 8), np.nan, np.float32)]),
        np.zeros((2, 8), np.float32),
    ):
        with pytest.raises(imesde.InvalidValueError):
            sharded.ingest_vectors(bad, batch_size=1)
    # As one Engine: float64, lists and float16 are refused, never cast.
    calls: list[Callable[[Any], object]] = [
        sharded.ingest_vectors,
        sharded.search_vector,
        one.ingest_vectors,
    ]
    for call in calls:
        for other in (x[:2].astype(np.float64), x[:2].tolist(), x[0].astype(np.float16)):
            with pytest.raises(imesde.DTypeError, match="float32"):
                call(other)
    with pytest.raises(imesde.DTypeError, match="float32"):
        sharded.subscribe(x[0].astype(np.float64), threshold=0.5)
    with pytest.raises(imesde.DTypeError, match="float32"):
        sharded.upsert(0, x[0].tolist())
    with pytest.raises(imesde.DTypeError):
        sharded.ingest_vectors(x[:3], texts="abc")
    with pytest.raises(imesde.DTypeError):
        sharded.search_vector("abc")
    with pytest.raises(imesde.DTypeError):
        sharded.hybrid_search("q", alpha="0.5")
    assert len(sharded) == before
    # One vector, as Engine takes it (the newest of equal scores first).
    (new,) = sharded.ingest_vectors(x[0])
    assert sharded.search_vector(x[0], 1)[0].id == new
    assert len(sharded) == before  # full: the oldest item made room
    # Metadata or a time an engine refuses: the engine's error, before any shard stored its
    # part (the other shard's part was stored, and its ids handed out).
    column: dict[str, Any]
    for column in ({"metadata": [{"a": 1}, {"b": object()}]}, {"timestamps": [1.0, 1.7e12]}):
        with pytest.raises((imesde.DTypeError, imesde.OutOfRangeError)) as err:
            sharded.ingest_vectors(x[:2], **column)
        assert err.value.ingested_ids is None  # nothing was stored
        with pytest.raises((imesde.DTypeError, imesde.OutOfRangeError)):
            sharded.ingest_batch(["a", "b"], **column)
    # A set's order is its own: refused as an Engine refuses it, not listed.
    with pytest.raises(imesde.DTypeError, match="timestamps must be a list or array"):
        sharded.ingest_vectors(x[:2], timestamps={1.0, 2.0})
    # One dict is every item's metadata, as for Engine; timestamps may be any iterable.
    ids = sharded.ingest_vectors(x[:2], metadata={"src": "x"}, timestamps=iter([1.0, 2.0]))
    assert int(ids[0]) == new + 1  # nothing stored, no id spent
    assert [sharded.get(int(i)).metadata for i in ids] == [{"src": "x"}] * 2
    assert [sharded.get(int(i)).ts for i in ids] == [1.0, 2.0]
    # Gaps as pandas marks them: no text, no key; results as rows, as an Engine gives them.
    ids = sharded.ingest_vectors(
        x[2:4], texts=["t", np.float32("nan")], metadata=[{"src": None, "n": 1}, {"src": "y"}]
    )
    assert [sharded.get(int(i)).text for i in ids] == ["t", None]
    assert [sharded.get(int(i)).metadata for i in ids] == [{"n": 1}, {"src": "y"}]
    hit = sharded.search_vector(x[2], 1)[0]
    assert hit.to_dict() == {
        "id": hit.id,
        "text": hit.text,
        "score": hit.score,
        "ts": hit.ts,
        "metadata": hit.metadata,
    }
    assert sharded.get(hit.id).to_dict()["text"] == hit.text
    # An empty batch stores nothing, of the engine's dimension only.
    assert len(sharded.ingest_vectors(np.empty((0, x.shape[1]), np.float32))) == 0
    with pytest.raises(imesde.DimensionMismatchError):
        sharded.ingest_vectors(np.empty((0, 3), np.float32))
    # Ids no item has (global ids stay below 2**63).
    assert 2**63 + 1 not in sharded
    assert sharded.delete([2**63 + 1]) == 0
    with pytest.raises(imesde.ItemNotFoundError):
        sharded.get(2**64 - 1)


def test_saves_are_whole_or_not_at_all(tmp_path: Path) -> None:
    """A save that fails on a shard leaves the last whole one (never a mix whose ids
    collide), and a new engine does not start over a directory holding a snapshot."""
    x = np.random.default_rng(4).standard_normal((40, 8)).astype(np.float32)
    d = tmp_path / "snap"
    sharded = dist.ShardedEngine(2, model=8, shard_size=64, engine_shards=1, num_cpus=0.5)
    sharded.ingest_vectors(x[:10])
    sharded.save(d)
    sharded.ingest_vectors(x[10:20])
    sharded.save(d)
    # Only the last save's files are kept.
    assert sorted(p.name for p in d.glob("shard-*.imesde")) == [
        "shard-0.g2.imesde",
        "shard-1.g2.imesde",
    ]
    # Generation-named files: the format says so (readers of the first format refuse it).
    assert json.loads((d / "manifest.json").read_text())["format"] == 2
    with pytest.raises(imesde.InvalidValueError, match="load"):
        dist.ShardedEngine(2, model=8, shard_size=64, engine_shards=1, snapshot_dir=d)
    sharded.ingest_vectors(x[20:30])
    ray.kill(sharded.actor(1))
    # The kill is asynchronous: wait until the shard stops answering (a save in between
    # could still be answered by it).
    deadline = time.monotonic() + 60
    while sharded.available()[1] and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(imesde.ShardUnavailableError):
        sharded.save(d)
    assert sorted(p.name for p in d.glob("shard-*.imesde")) == [
        "shard-0.g2.imesde",
        "shard-1.g2.imesde",
    ]
    back = dist.ShardedEngine.load(d, num_cpus=0.5)
    assert len(back) == 20
    new = back.ingest_vectors(x[30:40])
    held = back.search_vector(x[0], 40, exact=True)
    assert len({h.id for h in held}) == len(held) == 30
    assert set(int(i) for i in new) <= {h.id for h in held}
    (d / "manifest.json").write_text("[1, 2]")
    with pytest.raises(imesde.IndexCorruptError):
        dist.ShardedEngine.load(d)


def test_a_restored_empty_shard_keeps_a_percentile_subscription_going() -> None:
    """A shard restored empty cannot calibrate a percentile yet: the other shard keeps
    delivering, the restored one is asked again until it can, and ``dropped`` never falls."""
    x = np.random.default_rng(8).standard_normal((400, 8)).astype(np.float32)
    sharded = dist.ShardedEngine(2, model=8, shard_size=512, engine_shards=1, num_cpus=0.5)
    sharded.ingest_vectors(x[:200])
    sub = sharded.subscribe(x[0], threshold="p50", queue_size=3, poll_interval=0.05)
    sharded.ingest_vectors(x[200:300])
    deadline = time.monotonic() + 30
    while sub.dropped == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    before = sub.dropped
    sharded.restore_shard(0)  # no snapshot: it comes back empty
    sub.drain()
    sharded.ingest_vectors(x[300:400])
    # Once it holds items, the restored shard takes the query (its polls registered it).
    while 0 not in sub.restarted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 0 in sub.restarted
    assert sub.active
    assert sub.error is None
    assert sub.dropped >= before
    assert sharded.delete(int(sharded.recent(1)[0].id)) == 1  # one id, as Engine.delete takes
    sub.close()


def test_a_percentile_with_where_is_calibrated_as_one_engine_does() -> None:
    # Items go to the shards in turn: shard 0 holds every "a", shard 1 every "b". Each shard
    # calibrated alone before: the one without a match made the whole subscribe fail.
    x = np.random.default_rng(5).standard_normal((64, 8)).astype(np.float32)
    meta = [{"host": "a" if i % 2 == 0 else "b"} for i in range(64)]
    one = imesde.Engine(8, num_shards=1, shard_size=64)
    one.ingest_vectors(x, metadata=meta)
    sharded = dist.ShardedEngine(2, model=8, shard_size=32, engine_shards=1, num_cpus=0.5)
    sharded.ingest_vectors(x, metadata=meta)
    assert sharded.count(where={"host": "a"}) == one.count(where={"host": "a"}) == 32
    for where in ({"host": "a"}, {"host": "b"}, None):
        want = one.subscribe(x[1], threshold="p90", where=where)
        with sharded.subscribe(x[1], threshold="p90", where=where) as sub:
            assert sub.threshold == want.threshold
    with pytest.raises(imesde.InvalidValueError, match="passes the filter"):
        sharded.subscribe(x[1], threshold="p90", where={"host": "c"})
    with pytest.raises(imesde.InvalidValueError, match="percentile"):
        sharded.subscribe(x[1], threshold="p100")
    sharded.close()


def test_every_event_is_delivered_or_counted_dropped() -> None:
    """Events a shard's full queue drops count in ``dropped`` too; rounds come in stream
    order."""
    x = np.random.default_rng(6).standard_normal((12, 8)).astype(np.float32)
    sharded = dist.ShardedEngine(2, model=8, shard_size=64, engine_shards=1, num_cpus=0.5)
    sub = sharded.subscribe(x[0], threshold=-1.0, queue_size=2, poll_interval=5.0)
    time.sleep(0.5)  # the first poll round has run: the next is 5 s away
    sharded.ingest_vectors(x)
    deadline = time.monotonic() + 30
    while sub.delivered + sub.dropped < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.close()
    assert sub.delivered + sub.dropped == 12
    got = [h.id for h in sub]
    assert got == sorted(got)


def test_recent_upsert_close_and_pickling_as_on_one_engine() -> None:
    x = np.random.default_rng(7).standard_normal((20, 8)).astype(np.float32)
    one = imesde.Engine(8, num_shards=2, shard_size=32)
    with dist.ShardedEngine(2, model=8, shard_size=32, engine_shards=1, num_cpus=0.5) as sharded:
        ids = sharded.ingest_vectors(x[:10], [f"t{i}" for i in range(10)], metadata={"v": 1})
        one.ingest_vectors(x[:10], [f"t{i}" for i in range(10)], metadata={"v": 1})
        assert [i.text for i in sharded.recent(4)] == [i.text for i in one.recent(4)]
        assert [i.id for i in sharded.recent(3)] == sorted((int(i) for i in ids), reverse=True)[:3]
        # A new version: at the head, the old one's text and metadata kept, the old id gone.
        new = sharded.upsert(int(ids[2]), x[11])
        assert int(ids[2]) not in sharded
        got = sharded.get(new)
        assert (got.text, got.metadata) == ("t2", {"v": 1})
        assert sharded.recent(1)[0].id == new
        with pytest.raises(imesde.ShapeError):
            sharded.upsert(int(ids[3]), x[:2])
        assert int(ids[3]) in sharded
        with pytest.raises(TypeError, match="save"):
            pickle.dumps(sharded)
        # Metadata changed in place, as on one engine: merged or replaced, per id or for all;
        # bad metadata reaches no shard.
        held = [int(i) for i in ids if int(i) in sharded]
        local = [i for i in range(10) if i != 2]
        assert sharded.update_metadata([*held, 10**6], {"v": None, "w": 2}) == 9
        assert one.update_metadata(local, {"v": None, "w": 2}) == 9
        assert sharded.update_metadata(held[:3], [{"x": 1}, None, {}], merge=False) == 3
        one.update_metadata(local[:3], [{"x": 1}, None, {}], merge=False)
        with pytest.raises(imesde.DTypeError):
            sharded.update_metadata(held[3:5], [{"y": 1}, {"y": object()}])
        with pytest.raises(imesde.ShapeError):
            sharded.update_metadata(held[3:5], [{"y": 1}])
        assert sharded.update_metadata(np.array(held[5]), {"z": 0}) == 1  # one id, 0-d
        one.update_metadata(np.array(local[5]), {"z": 0})
        # Chosen by a filter, on every shard; never every item by default.
        assert sharded.update_metadata(metadata={"f": 1}, where={"w": 2}) == 6
        one.update_metadata(metadata={"f": 1}, where={"w": 2})
        assert sharded.update_metadata(held[:6], {"g": 1}, where={"w": 2}) == 3
        one.update_metadata(local[:6], {"g": 1}, where={"w": 2})
        with pytest.raises(imesde.InvalidValueError, match="ids or a filter"):
            sharded.update_metadata(metadata={"f": 2}, where={})
        assert [i.metadata for i in sharded.get_batch(held)] == [one.get(i).metadata for i in local]
        got_meta = [item.metadata for item in sharded.get_batch(held)]
        assert got_meta == [one.get(i).metadata for i in local]
        assert sharded.count(where={"w": 2}) == one.count(where={"w": 2}) == 6
        # One row of shape [1, dim], as Engine.upsert takes it.
        assert one.upsert(3, x[12][None]) == 10
        newer = sharded.upsert(int(ids[3]), x[12][None])
        assert int(ids[3]) not in sharded
        assert np.array_equal(sharded.get(newer).vector, one.get(10).vector)
        # search_vectors' -1 padding, or any id no item has, is not held: ItemNotFoundError
        # (a KeyError), as from Engine.get; ids in a 2-D array are a ShapeError.
        for absent in (-1, 2**64, 10**6):
            for engine in (one, sharded):
                with pytest.raises(imesde.ItemNotFoundError):
                    engine.get(absent)
        for engine in (one, sharded):
            with pytest.raises(imesde.ShapeError, match="ravel"):
                engine.get_batch(np.array([[0, 1]]))
            with pytest.raises(imesde.ShapeError, match="ravel"):
                engine.delete(np.array([[0, 1]]))
        # Items and hits compare and hash as Engine's do (dataclass's == raised on the vector
        # array, and a hit with metadata was unhashable).
        item = sharded.get(newer)
        assert item == sharded.get(newer)
        assert item != sharded.get(int(ids[0]))
        assert len({item, sharded.get(newer)}) == 1
        sharded.update_metadata([h.id for h in sharded.search_vector(x[0], 3)], {"h": 1})
        hits = sharded.search_vector(x[0], 3)
        assert all(h.metadata and h.metadata["h"] == 1 for h in hits)
        assert hits == sharded.search_vector(x[0], 3)
        assert len(set(hits + sharded.search_vector(x[0], 3))) == 3
        assert len(sharded.ingest_vectors(x[13:15], batch_size=None)) == 2
        sub = sharded.subscribe(x[0], threshold=0.3, top_k=4)
        # Read back as one engine's: the float32 compared with scores; the query (None for a
        # vector), the top k and the events pending.
        mine = one.subscribe(x[0], threshold=0.3, top_k=4)
        assert sub.threshold == mine.threshold == float(np.float32(0.3))
        assert (sub.query, sub.top_k, sub.pending) == (mine.query, mine.top_k, mine.pending)
    # Leaving the block closed the subscription and stopped the shards.
    assert not sub.active
    with pytest.raises(imesde.ShardUnavailableError):
        sharded.search_vector(x[0])


def test_shards_keep_a_bm25_of_the_settings_given(tmp_path: Path) -> None:
    """``lexical=BM25(...)`` reaches every shard, and a save keeps the settings."""
    texts = ["Die \u00dcbersetzungen der B\u00fccher", "Ein Hund", "Der Hund und die Katze"]
    settings = imesde.BM25(stemmer="german", stopwords=["der", "die"])
    sharded = dist.ShardedEngine(
        2, model=4, shard_size=16, engine_shards=1, num_cpus=0.5, lexical=settings
    )
    sharded.ingest_vectors(np.eye(4, dtype=np.float32)[:3], texts)
    found = [h.text for h in sharded.lexical_search("\u00dcbersetzung")]
    assert found == [texts[0]]
    sharded.save(tmp_path / "snap")
    back = dist.ShardedEngine.load(tmp_path / "snap", num_cpus=0.5)
    assert [h.text for h in back.lexical_search("\u00dcbersetzung")] == found
    with pytest.raises(imesde.DTypeError, match="lexical"):
        dist.ShardedEngine(1, model=4, lexical="german")


def test_bad_arguments_are_typed_errors_before_any_shard_starts(tmp_path: Path) -> None:
    bad: list[dict[str, Any]] = [{"num_shards": 0}, {"shard_size": 0}, {"engine_shards": -1}]
    for kwargs in bad:
        with pytest.raises(imesde.InvalidValueError):
            dist.ShardedEngine(**{"num_shards": 1, "model": 8, **kwargs})
    bad = [{"num_shards": 1.5}, {"num_shards": True}, {"shard_size": "16"}]
    for kwargs in bad:
        with pytest.raises(imesde.DTypeError):
            dist.ShardedEngine(**{"num_shards": 1, "model": 8, **kwargs})
    # A model: refused before any actor starts when it cannot be one, and a path that does
    # not load raises the shard's own error (it was a dead actor: ShardUnavailableError).
    for model in (1.5, True, imesde.TextEmbedder(cache_size=0)):
        with pytest.raises(imesde.DTypeError, match="model"):
            dist.ShardedEngine(1, model=model)
    with pytest.raises(imesde.ModelNotFoundError):
        dist.ShardedEngine(1, model=tmp_path / "no-model", num_cpus=0.5)
    # Each shard holds shard_size items exactly (100 in 16 ring shards held 112).
    hundred = dist.ShardedEngine(2, model=8, shard_size=100, num_cpus=0.5)
    assert (hundred.capacity, hundred.shard_size, hundred.num_shards) == (200, 100, 2)
    with pytest.raises(AttributeError):
        hundred.capacity = 5  # read-only, as Engine's
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(imesde.IndexCorruptError, match="not a ShardedEngine snapshot"):
        dist.ShardedEngine.load(tmp_path)
    ds = ray.data.from_items([{"text": "a"}])
    bad = [{"batch_size": 0}, {"concurrency": 0}, {"num_cpus": -1}, {"num_cpus": float("nan")}]
    for kwargs in bad:
        with pytest.raises(imesde.InvalidValueError):
            dist.embed(ds, **kwargs)
    # A column the dataset lacks: said when the pipeline is built, as imesde's own error.
    with pytest.raises(imesde.ShapeError, match="'body'"):
        dist.embed(ds, column="body")


def test_shards_that_cannot_start_raise_instead_of_waiting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(imesde.ShardUnavailableError, match="did not start") as err:
        dist.ShardedEngine(1, model=8, shard_size=16, num_cpus=64, start_timeout=1)
    assert err.value.shard == 0
    # More shards than the cluster's CPUs (2 here): said at once, with the num_cpus that fits.
    with caplog.at_level("WARNING", logger="imesde"), pytest.raises(imesde.ShardUnavailableError):
        dist.ShardedEngine(4, model=8, shard_size=16, engine_shards=1, start_timeout=1)
    assert "pass num_cpus=0.5" in caplog.text


def test_shards_keep_an_index(
    corpus: tuple[list[str], npt.NDArray[np.float32], list[float]],
    embedder: imesde.TextEmbedder,
    tmp_path: Path,
) -> None:
    """``index="ivf"`` reaches every shard: each trains its own over its items, searches
    read the probed lists (recall against ``exact=True``, which scans everything), and a
    saved engine loads with its index."""
    with pytest.raises(imesde.InvalidValueError, match="index must be"):
        dist.ShardedEngine(1, model=8, index="hnsw")
    with pytest.raises(imesde.InvalidValueError, match="nprobe"):
        dist.ShardedEngine(1, model=8, index="ivf", nlist=4, nprobe=5)
    plain = dist.ShardedEngine(1, model=8, shard_size=16, storage="float32")
    assert (plain.train_index(), plain.nlist, plain.nprobe) == (False, None, None)  # no index
    assert plain.storage == plain.stats()["storage"] == "f32"  # Engine's name for it
    assert plain.stats()["index_trained"] is False
    with pytest.raises(imesde.InvalidValueError, match="sign bits"):
        plain.k_factor = 40
    assert plain.k_factor == 20
    del plain
    _, x, _ = corpus
    sharded = dist.ShardedEngine(
        2, model=DIM, shard_size=16_384, storage="int8", index="ivf", nlist=32, nprobe=16
    )
    sharded.ingest_vectors(x)
    assert sharded.train_index()
    assert sharded.stats()["index_trained"]
    vectors = embedder.embed(debtags_queries())
    found = []
    for v in vectors:
        # Recall by score: the stream's repeated items tie, and either of two equal is right.
        floor = sharded.search_vector(v, 10, exact=True)[-1].score - 1e-6
        found.append(np.mean([h.score >= floor for h in sharded.search_vector(v, 10)]))
    # Half of each shard's lists probed; these short queries sit between the stream's
    # clusters (faiss IVF-Flat over the same items: 0.89 at 16 of 32 lists).
    assert np.mean(found) >= 0.8, np.mean(found)
    # nprobe set on the live engine reaches every shard (all 32 lists: recall up), and a
    # refused one changes nothing.
    assert (sharded.nlist, sharded.nprobe) == (32, 16)
    for bad in (0, 33, None):
        with pytest.raises((imesde.InvalidValueError, imesde.DTypeError), match="nprobe"):
            sharded.nprobe = bad
    assert sharded.nprobe == 16
    sharded.nprobe = 32
    sharded.k_factor = 40
    wide = [
        np.mean(
            [h.score >= sharded.search_vector(v, 10, exact=True)[-1].score - 1e-6 for h in hits]
        )
        for v, hits in ((v, sharded.search_vector(v, 10)) for v in vectors)
    ]
    assert np.mean(wide) > np.mean(found), (np.mean(wide), np.mean(found))
    before = [[h.id for h in sharded.search_vector(v, 10)] for v in vectors[:20]]
    sharded.save(tmp_path)
    for shard in range(2):  # their CPUs, for the loaded engine's actors
        ray.kill(sharded.actor(shard))
    del sharded
    loaded = dist.ShardedEngine.load(tmp_path)
    assert (loaded.nlist, loaded.nprobe, loaded.k_factor) == (32, 32, 40)
    assert loaded.train_index()
    assert [[h.id for h in loaded.search_vector(v, 10)] for v in vectors[:20]] == before
    # A shard restored from that save (nprobe 32 in its snapshot) probes what was set since,
    # and rescores as many candidates.
    loaded.nprobe = 4
    loaded.k_factor = 3
    narrow = [[h.id for h in loaded.search_vector(v, 10)] for v in vectors[:20]]
    assert narrow != before
    loaded.restore_shard(0)
    assert loaded.train_index()
    assert [[h.id for h in loaded.search_vector(v, 10)] for v in vectors[:20]] == narrow


def test_sharded_inputs_and_subscriptions_fail_cleanly() -> None:
    x = np.eye(8, dtype=np.float32)[:6] + 0.01
    sharded = dist.ShardedEngine(2, model=8, shard_size=16, engine_shards=2, num_cpus=0.5)
    ids = sharded.ingest_vectors(x, batch_size=3)
    # A str is not a list of ids (nor of texts): refused, not read as its characters.
    with pytest.raises(imesde.DTypeError):
        sharded.delete("12")
    for bad in (-1, 0):
        with pytest.raises(imesde.InvalidValueError):
            sharded.ingest_vectors(x, batch_size=bad)
    with pytest.raises(imesde.ShapeError):
        sharded.ingest_vectors(x, texts=["a"], batch_size=3)
    with pytest.raises(imesde.OutOfRangeError):
        sharded.delete([-1])
    with pytest.raises(imesde.ItemNotFoundError):
        sharded.get(2**40)
    assert len(sharded) == 6
    assert all(int(i) in sharded for i in ids)
    # A callback may close its own subscription: the shards stop queueing for it.
    got: list[int] = []

    def once(hit: Any) -> None:
        got.append(hit.id)
        sub.close()

    sub = sharded.subscribe(x[0], threshold=-1.0, callback=once)
    sharded.ingest_vectors(x[:1], batch_size=1)
    deadline = time.monotonic() + 20
    while sub.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sub.active
    assert sub.errors == 0
    assert len(got) == 1
    assert not sharded._standing
    # A threshold one shard cannot calibrate (it holds nothing) leaves no shard subscribed.
    empty = dist.ShardedEngine(2, model=8, shard_size=16, engine_shards=2, num_cpus=0.5)
    empty.ingest_vectors(x[:1])  # on shard 0 (items go to the shards in turn)
    with pytest.raises(imesde.InvalidValueError):
        empty.subscribe(x[0], threshold="p50")
    assert not empty._standing
    empty.ingest_vectors(x[:4], batch_size=1)  # both shards, x[0] among them
    for shard in range(2):
        assert ray.get(empty.actor(shard).poll.remote(empty._subscription_keys)) is None
    # Iteration ends once the subscription is closed, even with its queue full.
    full = sharded.subscribe(x[0], threshold=-1.0, queue_size=1)
    sharded.ingest_vectors(x[:3], batch_size=3)
    deadline = time.monotonic() + 20
    while full.dropped < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    full.close()
    assert len(list(full)) == 1
    with pytest.raises(imesde.InvalidValueError):
        full.get(timeout=-1)


def test_a_running_top_k_over_shards_fires_as_one_engine() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, 16)).astype(np.float32)
    q = x[0]
    one = imesde.Engine(16, num_shards=2, shard_size=64)
    sharded = dist.ShardedEngine(2, model=16, shard_size=64, engine_shards=2, num_cpus=0.5)
    want = one.subscribe(q, top_k=4)
    got = sharded.subscribe(q, top_k=4, poll_interval=0.01)
    # A batch at a time, each to one shard, its events read before the next: the order the
    # events reach the driver is the ingest order, so the running top-k is one engine's.
    for start in range(0, len(x), 5):
        batch = x[start : start + 5]
        # Ids differ (global ids name their shard): items are compared by their position.
        at_one = {int(i): start + n for n, i in enumerate(one.ingest_vectors(batch))}
        at_sharded = {
            int(i): start + n for n, i in enumerate(sharded.ingest_vectors(batch, batch_size=5))
        }
        expected = [at_one[e.id] for e in want.drain()]
        events = [got.get(timeout=20) for _ in expected]
        assert [at_sharded[e.id] for e in events if e is not None] == expected
        # Each shard fires for its own k best, a superset: the others are not delivered.
        assert got.get(timeout=0.2) is None
    got.close()
    # texts may be given in place, as to one Engine.
    ids = sharded.ingest_vectors(x[:2], ["a", "b"])
    assert [sharded.get(int(i)).text for i in ids] == ["a", "b"]
    with pytest.raises(imesde.InvalidValueError):
        sharded.subscribe(q, top_k=0)


def test_sharded_ids_are_checked_as_one_engine_checks_them() -> None:
    # What delete and update_metadata take, before any shard is asked (no Ray needed).
    from imesde.distributed import _sharded

    assert _sharded._item_ids(np.array(5)) == [5]
    assert _sharded._item_ids(np.array([1, 2], dtype=np.uint64)) == [1, 2]
    for bad in (np.timedelta64(1, "s"), np.array([1], dtype="m8[s]"), [True], [1.0], "12"):
        with pytest.raises(imesde.DTypeError):
            _sharded._item_ids(bad)
    with pytest.raises(imesde.OutOfRangeError):
        _sharded._item_ids([-1])


def test_a_shard_restored_from_damaged_ids_is_refused(tmp_path: Path) -> None:
    # A shard restarts from the save its directory's manifest names; its slot map (which
    # global id each ring slot holds) damaged or missing gave items wrong ids or an empty
    # shard without a word. (The actor class runs here in this process: no Ray needed.)
    from imesde.distributed import _sharded

    spec: dict[str, Any] = {"model": 4, "threads": None, "engine_shards": 1}
    spec |= {"ring_shard_size": 8, "storage": "f32", "lexical": False}
    shard = _sharded._Shard(0, spec, None)
    shard.ingest_vectors(np.eye(4, dtype=np.float32), None, None, None, [100, 101, 102, 103])
    snapshot = _sharded._snapshot_path(tmp_path, 0, 1)
    shard.save(snapshot)
    manifest = {"format": 2, "num_shards": 1, "next": 104, "generation": 1, "spec": spec}
    (tmp_path / _sharded.MANIFEST).write_text(json.dumps(manifest))
    restored = _sharded._Shard(0, spec, str(tmp_path))
    assert [r[0] for r in restored.recent(4, {})] == [103, 102, 101, 100]
    ids = Path(snapshot + ".ids.npz")
    good = ids.read_bytes()
    npy = io.BytesIO()
    np.save(npy, np.zeros(8, np.int64))
    i64 = np.int64
    damages: dict[str, Callable[[], object]] = {
        "not a zip": lambda: ids.write_bytes(b"PK\x03\x04garbage"),
        "an .npy": lambda: ids.write_bytes(npy.getvalue()),
        "missing": ids.unlink,
        "no ids": lambda: np.savez(ids, other=np.zeros(3)),
        "short": lambda: np.savez(ids, ids=np.array([100], i64), locals=np.array([0], i64)),
        "floats": lambda: np.savez(ids, ids=np.full(8, 0.5), locals=np.full(8, 0.5)),
        "2-D": lambda: np.savez(ids, ids=np.zeros((8, 8), i64), locals=np.zeros((8, 8), i64)),
        "one id twice": lambda: np.savez(
            ids, ids=np.array([7, 7] + [-1] * 6, i64), locals=np.array([0, 1] + [-1] * 6, i64)
        ),
        "a local id off its slot": lambda: np.savez(
            ids, ids=np.array([7] + [-1] * 7, i64), locals=np.array([3] + [-1] * 7, i64)
        ),
    }
    for why, damage in damages.items():
        ids.write_bytes(good)
        damage()
        # Raised by the first call the driver waits for (from the constructor, Ray would
        # report a dead actor without the error).
        with pytest.raises(imesde.IndexCorruptError):  # noqa: PT012 (`why` names the case)
            _sharded._Shard(0, spec, str(tmp_path)).capacity()
            pytest.fail(why)
    ids.write_bytes(good)
    # The manifest names a save whose shard file is gone: not an empty shard.
    (tmp_path / _sharded.MANIFEST).write_text(json.dumps(manifest | {"generation": 7}))
    with pytest.raises(imesde.IndexCorruptError, match="missing"):
        _sharded._Shard(0, spec, str(tmp_path)).capacity()
    # Through Ray: the shard's own error, not a dead actor's ShardUnavailableError.
    with pytest.raises(imesde.IndexCorruptError, match="missing"):
        dist.ShardedEngine.load(tmp_path)
