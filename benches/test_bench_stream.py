"""Live streams: what standing queries cost ingestion, and search latency while another thread
ingests.

Group "ingest": 20,000 stream items (2,000 in a smoke run) ingested as vectors with their
texts, in batches of 256, with 0 (the anchor), 1, 10 and 100 standing queries (the debtags
queries, threshold 0.45); each case records its events and their latency (ingest call start to
callback) in the report. Texts are embedded once up front: the vector rows isolate what
standing queries cost on top of ingestion (embedding a text costs far more).

Group "search": exact top-10 over the ingested items with 100 standing queries, idle (the
anchor) and while another thread ingests without pause.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
import pytest
from _data import debtags_query_texts, stream_texts
from _timing import percentile
from imesde._locate import packaged_model

BATCH = 256
THRESHOLD = 0.45


class Stream:
    def __init__(self, n: int) -> None:
        self.texts = stream_texts(n)
        model = imesde.TextEmbedder(*packaged_model())
        self.vectors: npt.NDArray[np.float32] = model.embed(self.texts)
        self.queries: npt.NDArray[np.float32] = model.embed(debtags_query_texts()[:100])

    def engine(self, subscriptions: int, on_event: Any) -> imesde.Engine:
        engine = imesde.Engine(384, num_shards=16, shard_size=2048)
        for q in self.queries[:subscriptions]:
            engine.subscribe(q, threshold=THRESHOLD, callback=on_event)
        return engine

    def ingest(self, engine: imesde.Engine, start: list[float]) -> None:
        for i in range(0, len(self.vectors), BATCH):
            start[0] = time.perf_counter()
            engine.ingest_vectors(self.vectors[i : i + BATCH], self.texts[i : i + BATCH])


@pytest.fixture(scope="module")
def stream(smoke: bool) -> Stream:
    return Stream(2_000 if smoke else 20_000)


@pytest.mark.benchmark(group="ingest 20k stream vectors with standing queries")
@pytest.mark.parametrize("subscriptions", [0, 1, 10, 100], ids=lambda n: f"{n} standing")
def test_ingest_with_standing_queries(benchmark: Any, stream: Stream, subscriptions: int) -> None:
    latencies: list[float] = []
    start = [0.0]

    def on_event(_: imesde.Event) -> None:
        latencies.append(time.perf_counter() - start[0])

    def ingest() -> imesde.Engine:
        latencies.clear()
        engine = stream.engine(subscriptions, on_event)
        stream.ingest(engine, start)
        return engine

    engine = benchmark.pedantic(ingest, rounds=9, warmup_rounds=2)
    assert len(engine) == len(stream.vectors)
    # Every event is an item that scores at least the threshold for its query (pairs within
    # float rounding of it may go either way).
    scores = stream.vectors @ stream.queries[:subscriptions].T
    surely, maybe = (scores >= THRESHOLD + 1e-5).sum(), (scores >= THRESHOLD - 1e-5).sum()
    assert surely <= len(latencies) <= maybe
    benchmark.extra_info["events"] = len(latencies)
    if latencies:
        benchmark.extra_info["event p50 ms"] = percentile(latencies, 50) * 1e3
        benchmark.extra_info["event p99 ms"] = percentile(latencies, 99) * 1e3


@pytest.fixture(scope="module")
def full(stream: Stream) -> imesde.Engine:
    engine = stream.engine(100, lambda _: None)
    engine.ingest_vectors(stream.vectors, stream.texts)
    return engine


def ingesting(engine: imesde.Engine, stream: Stream) -> Iterator[None]:
    """Another thread ingests the stream again and again while the caller runs."""
    stop = threading.Event()

    def ingest_forever() -> None:
        i = 0
        while not stop.is_set():
            j = i % len(stream.vectors)
            engine.ingest_vectors(stream.vectors[j : j + BATCH], stream.texts[j : j + BATCH])
            i += BATCH

    writer = threading.Thread(target=ingest_forever)
    writer.start()
    try:
        yield
    finally:
        stop.set()
        writer.join()


@pytest.mark.benchmark(group="search top-10 with 100 standing queries")
@pytest.mark.parametrize("writer", ["idle (anchor)", "while another thread ingests"])
def test_search_while_ingesting(
    benchmark: Any, stream: Stream, full: imesde.Engine, writer: str
) -> None:
    queries = iter(range(10**9))

    def search() -> list[imesde.Hit]:
        return full.search_vector(stream.queries[next(queries) % 100], k=10)

    if writer.startswith("idle"):
        hits = benchmark(search)
    else:
        busy = ingesting(full, stream)
        next(busy)
        try:
            hits = benchmark(search)
        finally:
            next(busy, None)
    assert len(hits) == 10
