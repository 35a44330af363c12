"""Ctrl-C stops every long call: an RQ-KMeans fit and a BM25 batch stop within a moment,
raise ``KeyboardInterrupt`` and leave the object as it was (long embeddings are covered in
test_engine_text). A call on another thread runs to its end (Python hands signals to its main
thread only)."""

from __future__ import annotations

import _thread
import contextlib
import gzip
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator

import imesde
import numpy as np
import pytest
from helpers import DATA

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="SIGINT to oneself is a POSIX idiom"
)


@contextlib.contextmanager
def ctrl_c_soon() -> Iterator[None]:
    """Sends this process SIGINT 0.3 s from now (once the test's data is made: on a busy
    machine making it took longer than that)."""
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def random_rows(n: int, dim: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)


@pytest.mark.timeout(120)
def test_ctrl_c_stops_an_rq_fit() -> None:
    x = random_rows(60_000, 128)
    model = imesde.RQKMeans(3, 2048, max_iter=30, tol=0, random_state=0)  # ~7 s of work
    start = time.perf_counter()
    with ctrl_c_soon(), pytest.raises(KeyboardInterrupt):
        model.fit(x)
    assert time.perf_counter() - start < 3, "the interrupt is seen between k-means iterations"
    assert not model.is_fitted
    # The model still trains when asked again.
    small = imesde.RQKMeans(2, 16, random_state=0).fit(x[:2000])
    assert small.encode(x[:5]).shape == (5, 2)


@pytest.mark.data
@pytest.mark.timeout(120)
def test_ctrl_c_stops_a_bm25_batch_and_adds_nothing() -> None:
    with gzip.open(DATA / "debtags_docs.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f] * 50  # 400,000 documents, ~3 s
    index = imesde.BM25()
    index.add_batch([0], ["the package before"])
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            index.add_batch(list(range(1, len(docs) + 1)), docs)
    finally:
        timer.cancel()
    assert time.perf_counter() - start < 2, "the interrupt is seen while the batch is analysed"
    assert len(index) == 1
    assert [h.id for h in index.search("package before", k=5)] == [0]
    index.add_batch([1, 2], docs[:2])
    assert len(index) == 3


@pytest.mark.data
@pytest.mark.timeout(120)
def test_ctrl_c_stops_a_bm25_search_batch() -> None:
    with gzip.open(DATA / "debtags_docs.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f]
    lines = (DATA / "debtags_queries.jsonl").read_text(encoding="utf-8").splitlines()
    queries = [json.loads(line)["query_long"] for line in lines] * 2000  # 176,000, ~3 s
    index = imesde.BM25()
    index.add_batch(list(range(len(docs))), docs)
    start = time.perf_counter()
    with ctrl_c_soon(), pytest.raises(KeyboardInterrupt):
        index.search_batch(queries, k=10)
    assert time.perf_counter() - start < 2, "the interrupt is seen between queries"
    assert len(index.search_batch(queries[:3], k=10)) == 3


@pytest.mark.timeout(120)
def test_ctrl_c_reaches_the_main_thread_not_a_call_on_another() -> None:
    x = random_rows(30_000, 128)
    result: list[imesde.RQKMeans] = []
    worker = threading.Thread(
        target=lambda: result.append(
            imesde.RQKMeans(2, 1024, max_iter=20, tol=0, random_state=0).fit(x)
        )
    )
    with ctrl_c_soon():
        worker.start()
        with pytest.raises(KeyboardInterrupt):
            time.sleep(60)
    worker.join()
    assert result
    assert result[0].is_fitted


@pytest.mark.model
@pytest.mark.timeout(300)
def test_ctrl_c_in_a_chunked_ingest_lists_every_chunk_stored() -> None:
    # A chunked ingest interrupted: the error's ingested_ids are exactly the items stored. A
    # Ctrl-C raised as a chunk's call returned (the chunk written) left that chunk out (in
    # 60 of 60 tries here), and a caller who retried stored it twice.
    model = imesde.TextEmbedder()
    engine = imesde.Engine(model)
    texts = [f"cached text {i}" for i in range(64)]
    model.embed(texts)  # chunks then go fast: their writes are much of the time
    rng = random.Random(0)
    for _ in range(30):
        before = engine.stats()["ingested"]
        timer = threading.Timer(rng.uniform(0.0, 0.03), _thread.interrupt_main)
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt) as caught:
                engine.ingest_batch((texts[i % 64] for i in range(1_000_000)), batch_size=4)
        finally:
            timer.cancel()
        listed = getattr(caught.value, "ingested_ids", np.empty(0, dtype=np.int64))
        assert len(listed) == engine.stats()["ingested"] - before
        assert [engine.get(int(i)).id for i in listed[-4:]] == listed[-4:].tolist()


@pytest.mark.model
def test_a_callback_s_keyboard_interrupt_in_a_chunked_ingest_lists_the_chunk() -> None:
    # A chunk is stored, then its events delivered: a callback raising KeyboardInterrupt (a
    # Ctrl-C landing in it) left that chunk's ids out of ingested_ids.
    engine = imesde.Engine(imesde.TextEmbedder())
    calls = [0]

    def callback(event: imesde.Event) -> None:
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt

    engine.subscribe("cats", threshold=-1.0, callback=callback)
    with pytest.raises(KeyboardInterrupt) as caught:
        engine.ingest_batch((f"cat number {i}" for i in range(8)), batch_size=2)
    listed = getattr(caught.value, "ingested_ids", np.empty(0, dtype=np.int64))
    assert len(engine) == 4
    assert listed.tolist() == [0, 1, 2, 3]
