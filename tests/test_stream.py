"""Standing queries: events on ingest, thresholds, running top-k, callbacks, queues, and the
replay check (standing queries fire exactly for what a search afterwards finds); streams of
any pace micro-batched into an engine."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import types
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import imesde
import numpy as np
import numpy.typing as npt
import pytest
from helpers import DATA, run_script, unit

if TYPE_CHECKING:
    from imesde._imesde import _Storage

Golden = tuple[list[str], npt.NDArray[np.float32]]


def vector_engine(golden: Golden, n: int = 0) -> imesde.Engine:
    engine = imesde.Engine(384, num_shards=4, shard_size=256)
    if n:
        texts, vecs = golden
        engine.ingest_vectors(vecs[:n], texts[:n])
    return engine


def test_threshold_events_match_scores(golden: Golden) -> None:
    texts, vecs = golden
    engine = vector_engine(golden)
    q = vecs[10]
    sub = engine.subscribe(q, threshold=0.5)
    assert sub.active
    assert sub.threshold == pytest.approx(0.5)
    assert engine.subscriptions()[0].id == sub.id
    ids = engine.ingest_vectors(vecs[:200], texts[:200], metadata={"src": "golden"})
    events = sub.drain()
    want = {int(i): float(s) for i, s in zip(ids, unit(vecs[:200]) @ unit(q), strict=True)}
    fired = {e.id: e.score for e in events}
    assert fired.keys() == {i for i, s in want.items() if s >= 0.5}
    for i, s in fired.items():
        assert s == pytest.approx(want[i], abs=1e-5)
    assert 10 in fired
    e = next(e for e in events if e.id == 10)
    assert e.text == texts[10]
    assert e.metadata == {"src": "golden"}
    assert e.subscription is not None
    assert e.subscription.id == sub.id
    assert e.hit.score == e.score
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert sub.delivered == len(events)
    assert sub.pending == 0


def test_running_top_k_and_filters(golden: Golden) -> None:
    texts, vecs = golden
    engine = vector_engine(golden)
    top = engine.subscribe(vecs[0], top_k=3)
    only_b = engine.subscribe(vecs[0], threshold=-1.0, where={"part": "b"})
    engine.ingest_vectors(vecs[:50], texts[:50], metadata={"part": "a"})
    engine.ingest_vectors(vecs[50:100], texts[50:100], metadata={"part": "b"})
    scores = unit(vecs[:100]) @ unit(vecs[0])
    # An item fires when it enters the top-3 of everything seen so far.
    fired = [e.id for e in top.drain()]
    best: list[float] = []
    expect = []
    for i, s in enumerate(scores):
        if len(best) < 3 or s > min(best):
            expect.append(i)
            best = sorted([*best, float(s)], reverse=True)[:3]
    assert fired == expect
    assert [e.id for e in only_b.drain()] == list(range(50, 100))


def test_callbacks_errors_and_queue_overflow(
    golden: Golden, caplog: pytest.LogCaptureFixture
) -> None:
    texts, vecs = golden
    engine = vector_engine(golden)
    seen: list[imesde.Event] = []
    cb = engine.subscribe(vecs[1], threshold=-1.0, callback=seen.append)

    def broken(event: imesde.Event) -> None:
        raise RuntimeError(f"boom {event.id}")

    bad = engine.subscribe(vecs[1], threshold=-1.0, callback=broken)
    small = engine.subscribe(vecs[1], threshold=-1.0, queue_size=3)
    with caplog.at_level(logging.ERROR, logger="imesde"):
        engine.ingest_vectors(vecs[:10], texts[:10])
    assert [e.id for e in seen] == list(range(10))
    assert cb.pending == 0  # callback subscriptions do not queue
    assert bad.errors == 10
    assert "boom" in caplog.text
    assert len(engine) == 10  # ingestion went on
    assert small.dropped == 7
    assert [e.id for e in small.drain()] == [7, 8, 9]  # the newest are kept


def test_callback_may_use_the_engine(golden: Golden) -> None:
    texts, vecs = golden
    engine = vector_engine(golden)
    found: list[int] = []

    def react(event: imesde.Event) -> None:
        found.append(engine.search_vector(vecs[2], k=1)[0].id)

    engine.subscribe(vecs[2], threshold=0.99, callback=react)
    engine.ingest_vectors(vecs[:5], texts[:5])
    assert found == [2]


def test_iterating_in_another_thread_and_unsubscribe(golden: Golden) -> None:
    texts, vecs = golden
    engine = vector_engine(golden)
    sub = engine.subscribe(vecs[3], threshold=-1.0)
    got: list[int] = []

    def consume() -> None:
        for event in sub:
            got.append(event.id)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(0, 40, 10):
        engine.ingest_vectors(vecs[i : i + 10], texts[i : i + 10])
    deadline = 0
    while len(got) < 40 and deadline < 100:
        threading.Event().wait(0.05)
        deadline += 1
    assert engine.unsubscribe(sub)
    t.join(timeout=10)
    assert not t.is_alive()
    assert got == list(range(40))
    assert not sub.active
    assert engine.subscriptions() == []
    assert not engine.unsubscribe(sub.id)
    engine.ingest_vectors(vecs[40:50])
    assert sub.pending == 0
    assert sub.get(timeout=0.01) is None
    with engine.subscribe(vecs[3], threshold=-1.0) as ctx:
        engine.ingest_vectors(vecs[50:52])
        assert ctx.get(timeout=1) is not None
    assert not ctx.active


def test_percentile_threshold_and_recent(golden: Golden) -> None:
    texts, vecs = golden
    engine = vector_engine(golden)
    with pytest.raises(imesde.InvalidValueError, match="empty"):
        engine.subscribe(vecs[0], threshold="p99")
    engine.ingest_vectors(vecs[:300], texts[:300])
    sub = engine.subscribe(vecs[0], threshold="p90")
    scores = np.sort(unit(vecs[:300]) @ unit(vecs[0]))[::-1]
    assert sub.threshold == pytest.approx(float(scores[29]), abs=1e-5)
    assert [i.id for i in engine.recent(3)] == [299, 298, 297]
    assert engine.recent(3)[0].text == texts[299]
    assert len(engine.recent(10_000)) == 300
    # With `where`, on the items the query would match (a third here), not on all of them.
    engine = vector_engine(golden)
    engine.ingest_vectors(vecs[:300], metadata=[{"n": i % 3} for i in range(300)])
    sub = engine.subscribe(vecs[0], threshold="p90", where={"n": 1})
    kept = np.sort(unit(vecs[1:300:3]) @ unit(vecs[0]))[::-1]
    assert sub.threshold == pytest.approx(float(kept[9]), abs=1e-5)
    with pytest.raises(imesde.InvalidValueError, match="passes the filter"):
        engine.subscribe(vecs[0], threshold="p90", where={"n": 7})


@pytest.mark.parametrize(
    "shape", [{"index": "ivf", "nlist": 64, "nprobe": 2}, {"storage": "binary"}]
)
def test_percentiles_calibrate_on_every_item_whatever_the_search(shape: dict[str, Any]) -> None:
    # An index (or sign bits) would see only some items: the percentile is of them all.
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((32, 32)).astype(np.float32)
    x = centres[rng.integers(0, 32, 8192)] + 0.5 * rng.standard_normal((8192, 32)).astype(
        np.float32
    )
    engine = imesde.Engine(32, num_shards=4, shard_size=2048, **shape)
    engine.ingest_vectors(x)
    engine.train_index()
    q = rng.standard_normal(32).astype(np.float32)
    sub = engine.subscribe(q, threshold="p90")
    scores = np.sort(unit(x) @ unit(q))[::-1]
    assert sub.threshold is not None
    tolerance = 1e-5 if "index" in shape else 1e-3  # binary: its int8 copy's scores
    assert sub.threshold == pytest.approx(float(scores[819]), abs=tolerance)


def test_bad_subscriptions_are_typed_errors(golden: Golden) -> None:
    _, vecs = golden
    engine = vector_engine(golden, n=20)
    with pytest.raises(imesde.InvalidValueError, match="threshold, a top_k"):
        engine.subscribe(vecs[0])
    with pytest.raises(imesde.InvalidValueError):
        engine.subscribe(vecs[0], top_k=0)
    with pytest.raises(imesde.InvalidValueError, match="percentile"):
        engine.subscribe(vecs[0], threshold="high")
    with pytest.raises(imesde.OutOfRangeError, match="never fire"):
        engine.subscribe(vecs[0], threshold=1.5)
    with engine.subscribe(vecs[0], threshold=1.0) as top:
        assert top.threshold == 1.0
    with pytest.raises(imesde.DTypeError):
        engine.subscribe(vecs[0], threshold=0.5, callback=42)  # type: ignore[arg-type]
    with pytest.raises(imesde.DimensionMismatchError):
        engine.subscribe(vecs[0][:100], threshold=0.5)
    with pytest.raises(imesde.InvalidValueError):
        engine.subscribe(np.zeros(384, dtype=np.float32), threshold=0.5)
    with pytest.raises(imesde.ImesdeError, match="no model"):
        engine.subscribe("memory leak", threshold=0.5)
    with pytest.raises(imesde.InvalidValueError):
        engine.recent(0)
    assert engine.subscriptions() == []
    assert len(engine) == 20


@pytest.mark.model
def test_replay_fires_exactly_what_search_finds_afterwards(
    embedder: imesde.TextEmbedder, stream: list[dict[str, str]]
) -> None:
    queries = [
        json.loads(line)["query"]
        for line in (DATA / "debtags_queries.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    threshold = 0.45
    engine = imesde.Engine(embedder, num_shards=4, shard_size=1024)
    subs = [engine.subscribe(q, threshold=threshold) for q in queries]
    texts = [s["text"] for s in stream[:2000]]
    for i in range(0, len(texts), 250):
        engine.ingest_batch(texts[i : i + 250])
    fired = {(s.query, e.id) for s in subs for e in s.drain()}
    assert len(fired) > 20
    afterwards = set()
    for q in queries:
        for hit in engine.search(q, k=len(engine)):
            if hit.score >= threshold:
                afterwards.add((q, hit.id))
    assert fired == afterwards


def paced(items: list[str], pause_after: int, pause: float) -> Iterator[str]:
    """``items``, with a pause of ``pause`` seconds after the first ``pause_after``."""
    for i, item in enumerate(items):
        if i == pause_after:
            time.sleep(pause)
        yield item


def test_micro_batches_fill_up_or_go_after_the_wait() -> None:
    items = [f"line {i}" for i in range(9)]
    start = time.monotonic()
    seen: list[tuple[list[str], float]] = []
    for batch in imesde.micro_batches(paced(items, 5, 1.5), size=4, wait=0.2):
        seen.append((batch, time.monotonic() - start))
    assert [b for b, _ in seen] == [items[:4], items[4:5], items[5:9]]
    # The lone fifth item did not wait for the slow rest of the stream.
    assert seen[1][1] < 1.0
    assert seen[2][1] >= 1.5
    assert list(imesde.micro_batches([], size=3)) == []
    # A wait beyond what the clock takes (~292 years) is no deadline, not an OverflowError.
    for wait in (1e10, 1e300):
        assert list(imesde.micro_batches(iter(items[:3]), size=5, wait=wait)) == [items[:3]]


def test_micro_batches_raise_what_the_source_raised_after_its_items() -> None:
    def broken() -> Iterator[int]:
        yield 1
        yield 2
        raise OSError("the pipe broke")

    batches = imesde.micro_batches(broken(), size=10, wait=5)
    assert next(batches) == [1, 2]
    with pytest.raises(OSError, match="the pipe broke"):
        next(batches)
    for size, wait in [(0, 0.1), (-1, 0.1), (2, -1.0), (2, float("nan")), (2, float("inf"))]:
        with pytest.raises(imesde.InvalidValueError):
            list(imesde.micro_batches([1], size=size, wait=wait))
    with pytest.raises(imesde.DTypeError):
        list(imesde.micro_batches([1], size=2.5))  # type: ignore[arg-type]
    # A numpy integer is a size, as everywhere.
    assert list(imesde.micro_batches([1, 2, 3], size=np.int64(2))) == [[1, 2], [3]]


def test_leaving_micro_batches_early_stops_its_reader_and_bounds_what_it_read() -> None:
    """A consumer that stops after one batch: the reading thread ends (one per abandoned loop
    would pile up), having read at most ``size + 1`` items past what was handed out."""
    source = iter(range(1000))
    before = threading.active_count()
    for _ in range(5):
        for batch in imesde.micro_batches(source, size=10, wait=5):
            assert len(batch) == 10
            break
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
    left = next(source)
    assert left <= 5 * (10 + 10 + 1)


def test_ingest_stream_refuses_what_is_not_a_stream_of_str() -> None:
    engine = imesde.Engine(4, num_shards=1, shard_size=8)
    with pytest.raises(imesde.DTypeError, match="single str"):
        imesde.ingest_stream(engine, "abc")
    for bad in ([b"bytes\n"], ["ok", None]):
        with pytest.raises(imesde.DTypeError, match="must yield str"):
            imesde.ingest_stream(engine, bad)  # type: ignore[arg-type]


@pytest.mark.model
def test_ingest_stream_stores_a_paced_stream_in_batches(
    embedder: imesde.TextEmbedder, stream: list[dict[str, str]]
) -> None:
    texts = [s["text"] + "\n" for s in stream[:40]] + ["   \n"]
    engine = imesde.Engine(embedder, num_shards=2, shard_size=64)
    batches: list[int] = []
    n = imesde.ingest_stream(
        engine, paced(texts, 30, 0.5), size=16, wait=0.1, on_batch=lambda b: batches.append(len(b))
    )
    assert n == 40
    assert len(engine) == 40
    assert batches[:2] == [16, 14]  # full, then what came before the pause
    assert sum(batches) == 40
    want = texts[35].rstrip("\n")
    assert engine.search(want, k=1)[0].text == want


def test_async_for_yields_events_then_stops_when_closed() -> None:
    import asyncio

    engine = imesde.Engine(4)
    sub = engine.subscribe(np.array([1, 0, 0, 0], np.float32), threshold=0.5)

    async def main() -> list[int]:
        async def produce() -> None:
            await asyncio.sleep(0.05)
            engine.ingest_vectors(np.eye(4, dtype=np.float32))
            await asyncio.sleep(0.05)
            engine.ingest_vectors(np.eye(4, dtype=np.float32)[:1])
            await asyncio.sleep(0.05)
            sub.close()

        task = asyncio.create_task(produce())
        got = [event.hit.id async for event in sub]
        await task
        return got

    assert asyncio.run(main()) == [0, 4]


def test_a_cancelled_or_timed_out_wait_loses_no_event() -> None:
    import asyncio

    engine = imesde.Engine(4)
    sub = engine.subscribe(np.array([1, 0, 0, 0], np.float32), threshold=0.5)
    one = np.eye(4, dtype=np.float32)[:1]

    async def main() -> list[int]:
        # A consumer cancelled while it waits, then an event: the event stays queued.
        async def consume() -> None:
            async for _ in sub:
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        engine.ingest_vectors(one)
        await asyncio.sleep(0.3)  # longer than a wait's slice
        assert sub.pending == 1
        got = [(await anext(sub)).id]
        # Short timeouts around each wait, events arriving between them: none is lost.
        for _ in range(10):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(anext(sub), 0.02)
            engine.ingest_vectors(one)
            got.append((await asyncio.wait_for(anext(sub), 5)).id)
        return got

    assert asyncio.run(main()) == list(range(11))
    assert sub.delivered == 11


_FREED_UNDER_THE_ENGINE = """
import gc, imesde, numpy as np
gc.disable()  # plain reference counting: each object is freed where its last reference goes
v = np.ones(8, np.float32)
engine = imesde.Engine(8)

class Handler:
    # Its last reference goes inside the engine; freeing it calls the engine.
    def __call__(self, event):
        pass
    def __del__(self):
        engine.subscriptions()
        engine.unsubscribe(10**6)

# A closed subscription pruned by the next subscribe.
s = engine.subscribe(v, threshold=0.5, callback=Handler())
s.close()
del s
engine.subscribe(v, threshold=0.5)
# One unsubscribed by id.
s = engine.subscribe(v, threshold=0.5, callback=Handler())
sid = s.id
del s
assert engine.unsubscribe(sid)
# A semantic-id function replaced.
class Labeler(Handler):
    def __call__(self, vectors):
        return ["x"] * len(vectors)
engine.attach_semantic_ids(Labeler())
engine.attach_semantic_ids(None)
engine.ingest_vectors(v[None])
print("done", len(engine))
"""


def test_freeing_a_callback_that_calls_its_engine_does_not_hang() -> None:
    """A subscription's callback or a semantic-id function whose last reference goes inside
    the engine (pruned, unsubscribed, replaced) is freed after the engine's locks are
    released: a ``__del__`` that calls the engine hung the process for good."""
    out = run_script(_FREED_UNDER_THE_ENGINE, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["done", "1"]


def test_a_subscription_made_while_others_ingest_gets_every_event() -> None:
    """The subscription is listed before its query can match: an ingest on another thread
    between the two lost the new query's first events (uncounted), and a running top-1 then
    held an item it never delivered."""
    engine = imesde.Engine(16, num_shards=2, shard_size=512)
    rng = np.random.default_rng(7)
    stop = threading.Event()

    def ingest() -> None:
        local = np.random.default_rng(threading.get_ident() % 2**32)
        while not stop.is_set():
            engine.ingest_vectors(local.standard_normal((4, 16)).astype(np.float32))

    threads = [threading.Thread(target=ingest) for _ in range(2)]
    for t in threads:
        t.start()
    subs = []
    try:
        for _ in range(200):
            sub = engine.subscribe(rng.standard_normal(16).astype(np.float32), top_k=1)
            # An item stored after subscribe returned: the first item matched enters a top-1.
            engine.ingest_vectors(rng.standard_normal((1, 16)).astype(np.float32))
            subs.append(sub)
    finally:
        stop.set()
        for t in threads:
            t.join()
    for sub in subs:
        events = sub.drain()
        assert events, f"subscription {sub.id} got no event"
        assert sub.delivered == len(events)
        assert sub.dropped == 0


@pytest.mark.parametrize("storage", ["f32", "int8"])
def test_the_first_subscription_matches_a_batch_written_after_it(storage: _Storage) -> None:
    """With no standing query registered when a batch began, it was written unmatched: the
    engine's first subscription, made while another thread's batch was in flight, missed
    its items (the same subscription with any other one registered got them all)."""
    dim, n = 64, 200_000
    rows = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
    tried = 0
    for _ in range(20):
        engine = imesde.Engine(dim, num_shards=16, shard_size=16_384, storage=storage)
        started = threading.Event()

        def ingest(engine: imesde.Engine = engine, started: threading.Event = started) -> None:
            started.set()
            engine.ingest_vectors(rows)

        writer = threading.Thread(target=ingest)
        writer.start()
        started.wait()
        time.sleep(0.002)
        sub = engine.subscribe(np.ones(dim, np.float32), threshold=-1.0, queue_size=n)
        # Nothing held yet: the batch is written, then matched, after subscribe returned.
        before = len(engine) == 0
        writer.join()
        if before:
            tried += 1
            assert sub.delivered == n, (storage, sub.delivered)
            assert sorted(e.id for e in sub.drain()) == list(range(n))
        if tried >= 3:
            break
    assert tried, "subscribe never returned before the batch was written"


def test_async_for_waits_without_the_executor() -> None:
    """``async for`` waits on a future the next event resolves: it holds no executor thread
    (each idle iterator held one of the loop's default pool in slices, so a few dozen idle
    subscriptions starved ``asyncio.to_thread`` and each other)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    engine = imesde.Engine(4)
    subs = [engine.subscribe(np.eye(4, dtype=np.float32)[i % 4], threshold=0.9) for i in range(40)]
    used: list[object] = []

    class Counting(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            used.append(fn)
            return super().submit(fn, *args, **kwargs)

    async def main() -> list[int]:
        asyncio.get_running_loop().set_default_executor(Counting(max_workers=2))

        async def first(sub: imesde.Subscription) -> int:
            return (await anext(sub)).id

        tasks = [asyncio.create_task(first(s)) for s in subs]
        await asyncio.sleep(0.3)
        assert used == []
        # An event from another thread wakes the waiting tasks of the queries it matches.
        await asyncio.get_running_loop().run_in_executor(
            None, engine.ingest_vectors, np.eye(4, dtype=np.float32)
        )
        used.clear()
        got = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        for s in subs:
            s.close()
        return got

    got = asyncio.run(main())
    assert got == [i % 4 for i in range(40)]
    assert used == []


def test_get_or_iterate_on_a_callback_subscription_is_refused() -> None:
    engine = imesde.Engine(4)
    seen: list[int] = []
    sub = engine.subscribe(
        np.eye(4, dtype=np.float32)[0], threshold=0.5, callback=lambda e: seen.append(e.id)
    )
    engine.ingest_vectors(np.eye(4, dtype=np.float32))
    assert seen == [0]
    with pytest.raises(imesde.InvalidValueError, match="callback"):
        sub.get()
    with pytest.raises(imesde.InvalidValueError, match="callback"):
        sub.get(0.1)
    with pytest.raises(imesde.InvalidValueError, match="callback"):
        next(iter(sub))
    assert sub.drain() == []


def test_async_callbacks_are_refused_and_their_coroutines_counted_as_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An ``async def`` callback was taken, called, and its coroutine dropped unrun: no event
    handled, ``errors`` 0, one "never awaited" warning from a thread of the interpreter's."""
    import functools
    import gc
    import warnings

    engine = imesde.Engine(4)
    q = np.eye(4, dtype=np.float32)[0]
    handled: list[int] = []

    async def alert(event: imesde.Event) -> None:
        handled.append(event.id)

    for callback in (alert, functools.partial(alert)):
        with pytest.raises(imesde.DTypeError, match=r"async def.*async for event in sub"):
            engine.subscribe(q, threshold=0.5, callback=callback)
    assert engine.subscriptions() == []
    # A wrapper that returns the coroutine: closed, counted and logged, never run.
    sub = engine.subscribe(q, threshold=0.5, callback=lambda e: alert(e))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR):
        warnings.simplefilter("always")
        engine.ingest_vectors(np.tile(q, (3, 1)))
        gc.collect()
    assert (sub.delivered, sub.errors, handled) == (3, 3, [])
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert "returned a coroutine" in caplog.text
    engine.unsubscribe(sub)

    # An async generator function is refused too; one a wrapper returns, and a coroutine
    # whose closing raises, are the callback's errors (the closing error escaped the ingest,
    # and the other subscriptions got no events).
    async def updates(event: imesde.Event) -> Any:
        yield event.id

    with pytest.raises(imesde.DTypeError, match="async def"):
        engine.subscribe(q, threshold=0.5, callback=updates)

    @types.coroutine
    def suspend() -> Any:
        yield

    async def stubborn(event: imesde.Event) -> None:
        try:
            await suspend()
        finally:
            raise ValueError("cleanup failed")

    def started(event: imesde.Event) -> Any:
        coroutine = stubborn(event)
        coroutine.send(None)
        return coroutine

    subs = [
        engine.subscribe(q, threshold=0.5, callback=lambda e: updates(e)),
        engine.subscribe(q, threshold=0.5, callback=started),
    ]
    plain = engine.subscribe(q, threshold=0.5)
    with caplog.at_level(logging.ERROR):
        engine.ingest_vectors(np.tile(q, (2, 1)))
    assert [s.errors for s in subs] == [2, 2]
    assert len(plain.drain()) == 2
    assert "cleanup failed" in caplog.text
    for s in (*subs, plain):
        engine.unsubscribe(s)
    # A threshold reads back as the float32 scores are compared with: an event's score at
    # the threshold (a percentile calibrated on one item is its score) is >= it. (Read back
    # as its shortest decimal, 0.3 for 0.30000001192092896, half of these failed.)
    rng = np.random.default_rng(0)
    for v in rng.standard_normal((40, 4)).astype(np.float32):
        one = imesde.Engine(4)
        one.ingest_vectors(v[None])
        calibrated = one.subscribe(q, threshold="p50")
        one.ingest_vectors(v[None])
        event = calibrated.get(0)
        assert event is not None
        assert calibrated.threshold is not None
        assert event.score >= calibrated.threshold
    assert engine.subscribe(q, threshold=0.3).threshold == np.float32(0.3)


def test_reprs_show_a_long_text_s_start_and_its_length() -> None:
    engine = imesde.Engine(4)
    q = np.eye(4, dtype=np.float32)[0]
    sub = engine.subscribe(q, threshold=0.5)
    long, short = "x" * 65_536 + "END", "disk full"
    engine.ingest_vectors(np.eye(4, dtype=np.float32)[:2], [long, short])
    for record in (engine.search_vector(q, k=1)[0], engine.get(0), sub.get(0)):
        assert record is not None
        shown = repr(record)
        assert len(shown) < 400
        assert "'" + "x" * 200 + "'... (65539 chars)" in shown
        assert "END" not in shown
        assert record.text == long
    assert "text='disk full'" in repr(engine.get(1))


def test_unsubscribe_takes_numpy_ids_and_refuses_bools() -> None:
    engine = imesde.Engine(4)
    q = np.eye(4, dtype=np.float32)[0]
    subs = [engine.subscribe(q, threshold=0.5) for _ in range(3)]
    assert subs[1].id == 1
    with pytest.raises(imesde.DTypeError):
        engine.unsubscribe(True)
    assert all(s.active for s in subs)
    assert engine.unsubscribe(np.int64(subs[1].id))
    assert not subs[1].active
    assert not engine.unsubscribe(np.uint8(subs[1].id))
    assert not engine.unsubscribe(-1)
    with pytest.raises(imesde.DTypeError):
        engine.unsubscribe("0")  # type: ignore[arg-type]


_EVENT_OUTLIVES_ENGINE = """
import gc, imesde, numpy as np

def resident_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

# Shards of 50 MB: above glibc's largest mmap threshold (32 MB), so freeing one returns it to
# the system.
engine = imesde.Engine(384, num_shards=4, shard_size=32_768)
sub = engine.subscribe(np.ones(384, np.float32), threshold=-1.0, queue_size=4)
rng = np.random.default_rng(3)
for _ in range(16):
    engine.ingest_vectors(rng.standard_normal((8_192, 384)).astype(np.float32))
event = sub.get(0)
gc.collect()
held = resident_mb()
del engine
gc.collect()
print(held - resident_mb(), event.score > -1.0, event.text, sub.active)
sub.close()
"""


def test_an_event_kept_after_its_engine_does_not_keep_its_items() -> None:
    """Events and subscriptions refer to their engine's ring weakly: one event kept after the
    engine was deleted held the whole ring (200 MB here). Measured in a process of its own."""
    from pathlib import Path

    if not Path("/proc/self/statm").exists():
        pytest.skip("resident memory is read from /proc/self/statm (Linux)")
    out = run_script(_EVENT_OUTLIVES_ENGINE)
    assert out.returncode == 0, out.stderr
    freed, scored, text, active = out.stdout.split()
    assert float(freed) > 150
    assert (scored, text, active) == ("True", "None", "False")


def test_micro_batches_checks_its_arguments_when_called_and_counts_wait_from_arrival() -> None:
    for bad in (5, None, object()):
        with pytest.raises(imesde.DTypeError, match="iterable"):
            imesde.micro_batches(bad)  # type: ignore[arg-type]
        with pytest.raises(imesde.DTypeError, match="iterable"):
            imesde.ingest_stream(imesde.Engine(4), bad)  # type: ignore[arg-type]
    with pytest.raises(imesde.InvalidValueError):
        imesde.micro_batches([1], size=0)
    assert list(imesde.micro_batches([1, 2, 3], size=2, wait=np.float32(0.05))) == [[1, 2], [3]]
    # Reading starts at the call; a loop never started stops its reader when dropped.
    before = threading.active_count()
    unstarted = imesde.micro_batches(iter(range(1000)), size=10)
    del unstarted
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before

    # One item, then a source that waits: a consumer that comes back after the item has
    # waited longer than `wait` gets it at once (the wait counted from its dequeue).
    release = threading.Event()

    def source() -> Iterator[int]:
        yield 1
        release.wait(30)

    batches = imesde.micro_batches(source(), size=8, wait=1.0)
    try:
        time.sleep(1.2)
        start = time.monotonic()
        assert next(batches) == [1]
        assert time.monotonic() - start < 0.9
    finally:
        release.set()
