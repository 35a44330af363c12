"""Writers and readers share one engine: every hit is an ingested item, the capacity holds,
nothing hangs (a timeout fails the test instead of stalling CI)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

import imesde
import numpy as np
import numpy.typing as npt
import pytest

if TYPE_CHECKING:
    from imesde._imesde import _IndexKind, _Storage

DIM = 32


def vector_for(item_id: int) -> np.ndarray:
    # The vector is a function of a tag stored in the text, so readers can verify each hit.
    return np.random.default_rng(item_id).standard_normal(DIM, dtype=np.float32)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("storage", ["f32", "int8", "binary"])
def test_four_writers_four_readers(storage: _Storage) -> None:
    engine = imesde.Engine(DIM, num_shards=8, shard_size=64, storage=storage)
    stop = threading.Event()
    errors: list[BaseException] = []
    written = [0] * 4
    searches = [0] * 4

    def writer(w: int) -> None:
        try:
            tag = w * 1_000_000
            while not stop.is_set():
                tags = list(range(tag, tag + 16))
                vecs = np.stack([vector_for(t) for t in tags])
                engine.ingest_vectors(vecs, [str(t) for t in tags], metadata={"writer": str(w)})
                tag += 16
                written[w] += 16
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader(r: int) -> None:
        try:
            rng = np.random.default_rng(r)
            while not stop.is_set():
                hits = engine.search_vector(rng.standard_normal(DIM, dtype=np.float32), k=10)
                for h in hits:
                    assert h.text is not None
                    stored = engine_vector(h.text)
                    assert h.metadata == {"writer": str(int(h.text) // 1_000_000)}
                    # The score is the cosine with the vector that was ingested under this text.
                    assert np.isfinite(h.score)
                    assert stored is not None
                assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
                assert len(engine) <= engine.capacity
                searches[r] += 1
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def engine_vector(text: str) -> np.ndarray | None:
        return vector_for(int(text))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(3.0)
    stop.set()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), "a thread hung"
    assert not errors, errors[0]
    assert len(engine) == engine.capacity
    assert min(written) > 0
    assert min(searches) > 0
    # Every held item is one that was ingested, with its own vector.
    q = vector_for(0)
    for h in engine.search_vector(q, k=engine.capacity):
        assert h.text is not None
        expect = float(vector_for(int(h.text)) @ q) / float(
            np.linalg.norm(vector_for(int(h.text))) * np.linalg.norm(q)
        )
        assert h.score == pytest.approx(expect, abs=1e-5 if storage == "f32" else 5e-3)


@pytest.mark.timeout(60)
def test_gil_is_released_during_search() -> None:
    engine = imesde.Engine(384, num_shards=16, shard_size=4096)
    rng = np.random.default_rng(0)
    engine.ingest_vectors(rng.standard_normal((65_536, 384), dtype=np.float32))
    q = rng.standard_normal(384, dtype=np.float32)
    ticks = 0
    done = threading.Event()

    def searcher() -> None:
        for _ in range(30):
            engine.search_vector(q)
        done.set()

    t = threading.Thread(target=searcher)
    t.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0)
    t.join()
    # A pure-Python loop kept running while the searches ran in native code.
    assert ticks > 30


@pytest.mark.timeout(60)
@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX")
def test_search_works_in_a_forked_child() -> None:
    # Large enough that searches use the thread pool (small scans stay on the caller).
    engine = imesde.Engine(64, num_shards=8, shard_size=1024)
    engine.ingest_vectors(np.random.default_rng(1).standard_normal((8192, 64), dtype=np.float32))
    engine.search_vector(np.ones(64, np.float32))  # start the thread pool in the parent
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ok = len(engine.search_vector(np.ones(64, np.float32), k=5)) == 5
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX")
def test_parallel_work_completes_in_a_forked_child() -> None:
    # The parent's rayon threads are gone in a fork child: a BM25 batch big enough to be
    # analysed on all cores, and an RQ-KMeans fit and encoding, must still complete there.
    x = np.random.default_rng(2).standard_normal((5_000, 32)).astype(np.float32)
    texts = [f"item {i} kernel panic number {i % 97}" for i in range(6_000)]
    imesde.RQKMeans(2, 16, random_state=0).fit(x)  # start the thread pool in the parent
    imesde.BM25().add_batch(list(range(len(texts))), texts)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        signal.alarm(60)  # a hang fails the test instead of blocking it
        index = imesde.BM25()
        index.add_batch(list(range(len(texts))), texts)
        model = imesde.RQKMeans(2, 16, random_state=0).fit(x)
        ok = index.document_count == len(texts) and model.encode(x).shape == (5_000, 2)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == 0


_EXIT_PRELUDE = """
import asyncio, logging, sys, threading, time
from multiprocessing.pool import ThreadPool
import numpy as np
import imesde

x = np.random.default_rng(0).standard_normal((64, 32)).astype("f4")
engine = imesde.Engine(32, num_shards=4, shard_size=256, lexical=True)

def forever(f):
    while True:
        f()

def background(f):
    threading.Thread(target=f, daemon=True).start()
"""

# Each: daemon threads inside imesde when the program ends (then it returns or exits).
_EXIT_SCENARIOS = {
    "a callback that sleeps": """
engine.subscribe(x[0], threshold=0.0, callback=lambda ev: time.sleep(0))
background(lambda: forever(lambda: engine.ingest_vectors(x)))
""",
    "a callback that prints": """
engine.subscribe(x[0], threshold=0.0, callback=lambda ev: print(ev.hit.id, file=sys.stderr))
background(lambda: forever(lambda: engine.ingest_vectors(x)))
""",
    "an async for": """
sub = engine.subscribe(x[0], threshold=0.9)

async def consume():
    async for _ in sub:
        pass

background(lambda: asyncio.run(consume()))
background(lambda: forever(lambda: engine.ingest_vectors(x)))
""",
    "a semantic-id function that sleeps": """
engine.attach_semantic_ids(lambda v: [f"s{time.sleep(0) or 0}"] * len(v))
background(lambda: forever(lambda: engine.ingest_vectors(x[:16])))
""",
    # Exit handlers that run after imesde's and need a thread inside imesde: logging's
    # shutdown takes the handler's lock; an open ThreadPool joins its result thread.
    "a logging handler": """
class Index(logging.Handler):
    def emit(self, record):
        engine.ingest_vectors(x[:1], [self.format(record)])

log = logging.getLogger("app")
log.addHandler(Index())
log.setLevel(logging.INFO)
background(lambda: forever(lambda: log.info("tick")))
""",
    "a thread pool": """
pool = ThreadPool(2)

def feed():
    while True:
        pool.apply_async(lambda: x[:4], callback=lambda v: engine.ingest_vectors(v))
        time.sleep(0.001)

background(feed)
""",
}

_EXIT_END = """
time.sleep(0.4)
print("exiting", flush=True)
if sys.argv[1] == "exit":
    sys.exit(3)
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("scenario", list(_EXIT_SCENARIOS))
def test_the_program_ends_while_daemon_threads_are_inside_imesde(scenario: str) -> None:
    """Python (3.13 and older) ends a daemon thread that takes the GIL during the exit with
    pthread_exit, whose unwinding through Rust aborted the process (status 134, at times a
    segfault) when the thread was in a callback that slept or printed, a semantic-id function
    or an ``async for`` wake-up (every run, for a sleeping callback). Such threads are now
    parked once the interpreter finalizes and held back a while before; exit handlers that
    need them (logging's shutdown, a ThreadPool's join) must not hang, nor wait long."""
    import subprocess

    script = _EXIT_PRELUDE + _EXIT_SCENARIOS[scenario] + _EXIT_END
    for how, status in [("return", 0), ("exit", 3)]:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", script, how],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Fatal Python error" not in proc.stderr, proc.stderr[-2000:]
        assert proc.returncode == status, (how, proc.returncode, proc.stderr[-2000:])
        assert proc.stdout.strip() == "exiting"
        assert time.perf_counter() - start < 30, how


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("storage", "index"), [("int8", None), ("binary", None), ("f32", "ivf"), ("int8", "ivf")]
)
def test_a_full_ring_overwritten_meanwhile_still_gives_k_hits(
    storage: _Storage, index: _IndexKind | None
) -> None:
    # A scan that ranks candidates (int8, binary, the index) reads its best back from the
    # ring once the ranking is done; a writer overwriting a ranked item in between left the
    # search short of k (3 % of searches here), though k items always pass. A small ring
    # turns over whole while a search waits for a core: a binary scan's candidates were all
    # dropped as overwritten, and the search (1 in 2,000) or the batch (1 in 1,000) came back
    # short without trying again.
    engine = imesde.Engine(
        64, num_shards=4, shard_size=64, storage=storage, index=index, nlist=4 if index else None
    )
    rng = np.random.default_rng(0)
    engine.ingest_vectors(rng.standard_normal((512, 64), dtype=np.float32))
    if index:
        engine.train_index()
    stop = threading.Event()

    def overwrite(seed: int) -> None:
        more = np.random.default_rng(seed)
        while not stop.is_set():
            engine.ingest_vectors(more.standard_normal((8, 64), dtype=np.float32))

    writers = [threading.Thread(target=overwrite, args=(seed,)) for seed in (1, 2)]
    for w in writers:
        w.start()
    short = batch_short = searches = 0
    try:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            q = rng.standard_normal(64, dtype=np.float32)
            short += len(engine.search_vector(q, k=20)) < 20
            _, ids = engine.search_vectors(np.stack([q, -q]), k=20)
            batch_short += bool((ids < 0).any())
            searches += 1
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert len(engine) == engine.capacity
    assert short == 0, f"{short} of {searches} searches came back short"
    assert batch_short == 0, f"{batch_short} of {searches} batches came back short"


@pytest.mark.timeout(120)
def test_int8_batch_scores_are_cosines_while_items_are_overwritten() -> None:
    """An int8 candidate overwritten or deleted between the scan and its rescoring kept its
    scan score in ``search_vectors``: off by up to 5e-3 (an item rescored is within 2e-4)."""
    dim, n = 32, 64
    engine = imesde.Engine(dim, num_shards=4, shard_size=1024, storage="int8")
    rng = np.random.default_rng(11)
    stored: dict[int, npt.NDArray[np.float32]] = {}
    lock = threading.Lock()

    def ingest(count: int) -> None:
        rows = rng.standard_normal((count, dim), dtype=np.float32)
        ids = engine.ingest_vectors(rows)
        unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        with lock:
            stored.update(zip(ids.tolist(), unit, strict=True))

    ingest(engine.capacity)
    stop = threading.Event()

    def overwrite() -> None:
        while not stop.is_set():
            ingest(500)

    writer = threading.Thread(target=overwrite)
    writer.start()
    queries = rng.standard_normal((n, dim), dtype=np.float32)
    unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    found = []
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            found.append(engine.search_vectors(queries, k=10))
    finally:
        stop.set()
        writer.join()
    # Checked once the writer is done: an item can be found before its ingest returns.
    vectors = np.stack([stored[i] for i in range(max(stored) + 1)])
    for scores, ids in found:
        exact = np.einsum("jkd,jd->jk", vectors[ids], unit_q)
        assert np.abs(scores - exact).max() < 1e-3
    assert len(found) > 10


def test_stats_under_writers_count_only_what_happened() -> None:
    """``evicted`` was ``ingested - len - deleted`` read amid writes: a batch's ids are handed
    out before its items are held, and a delete lowered ``len`` before ``deleted``, so a ring
    that never turned over showed thousands evicted, then fewer (a counter going back)."""
    engine = imesde.Engine(8, num_shards=4, shard_size=8192)
    rows = np.random.default_rng(0).standard_normal((500, 8), dtype=np.float32)
    stop = threading.Event()

    def write() -> None:
        try:
            for _ in range(40):
                ids = engine.ingest_vectors(rows)
                engine.delete(ids[:10])
        finally:
            stop.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen = []
    while not stop.is_set():
        s = engine.stats()
        seen.append((s["evicted"], s["ingested"], s["len"], s["deleted"]))
    writer.join()
    assert len(seen) > 10
    for evicted, ingested, held, deleted in seen:
        assert evicted == 0  # 20,000 ingested into 32,768 slots: nothing overwritten
        assert ingested == held + deleted
    assert [d for *_, d in seen] == sorted(d for *_, d in seen)
    assert engine.stats()["ingested"] == 20_000


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("storage", "index"), [("f32", None), ("int8", None), ("binary", None), ("f32", "ivf")]
)
def test_reads_of_every_shard_see_what_was_held_throughout(
    storage: _Storage, index: _IndexKind | None
) -> None:
    """Every batch of 4 holds one item with ``g == 0``, so the ring holds 64 of them at every
    moment, in a shard that changes every 64 batches. A read takes one shard's lock after
    another: writers put such items into shards it had read and replaced them in shards it
    had not, and a filtered search, ``count`` or ``recent`` missed items held throughout (a
    search came back empty, a count 0; 1 in 1,000 to 1 in 15,000 calls)."""
    dim = 32
    engine = imesde.Engine(
        dim, num_shards=4, shard_size=64, storage=storage, index=index, nlist=8 if index else None
    )
    rows = np.random.default_rng(0).standard_normal((4, dim), dtype=np.float32)
    lock = threading.Lock()
    batches = [0]

    def batch() -> None:
        with lock:
            at = (batches[0] // 64) % 4
            batches[0] += 1
            groups = [0 if i == at else 1 for i in range(4)]
            engine.ingest_vectors(
                rows, [f"g{g}" for g in groups], metadata=[{"g": g} for g in groups]
            )

    for _ in range(64):
        batch()
    if index:
        engine.train_index()
    stop = threading.Event()

    def overwrite() -> None:
        while not stop.is_set():
            batch()

    writers = [threading.Thread(target=overwrite) for _ in range(2)]
    for w in writers:
        w.start()
    where = {"g": 0}
    short: dict[str, int] = dict.fromkeys(("search", "batch", "count", "recent"), 0)
    calls = 0
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            short["search"] += len(engine.search_vector(rows[1], 10, where=where)) < 10
            _, ids = engine.search_vectors(rows[1:3], 10, where=where)
            short["batch"] += bool((ids < 0).any())
            short["count"] += engine.count(where=where) != 64
            short["recent"] += len(engine.recent(10, where=where)) < 10
            calls += 1
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert batches[0] > 64 * 4, "the writers turned the ring over"
    assert short == dict.fromkeys(short, 0), f"short answers in {calls} rounds: {short}"


_MODEL_AT_EXIT = """
import sys, threading, time
from multiprocessing.pool import ThreadPool
import imesde

texts = [f"text number {i} about disk space and other long words " * 3 for i in range(64)]
models = [imesde.TextEmbedder() for _ in range(3)]

def run(model):
    i = 0
    while True:
        i += 1
        model.embed([t + str(i) for t in texts])

for model in models[:2]:
    threading.Thread(target=run, args=(model,), daemon=True).start()
pool = ThreadPool(1)  # joined by an exit handler of multiprocessing's
pool.apply_async(run, (models[2],))
time.sleep(1.2)
print("exiting", flush=True)
"""


@pytest.mark.model
@pytest.mark.timeout(300)
def test_the_program_ends_while_threads_run_the_model() -> None:
    """Daemon threads (and a thread pool's worker) embedding when the program ends: their
    model runs overlapped ONNX Runtime's static destructors, which logged errors from freed
    state ("GetElementType is not implemented", most runs here) and could crash. The exit
    now waits for the runs in flight and starts none on those threads."""
    import subprocess

    for _ in range(3):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _MODEL_AT_EXIT], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip() == "exiting"
        assert "onnxruntime" not in proc.stderr, proc.stderr[-2000:]
        assert time.perf_counter() - start < 30


_MODEL_IN_EXIT_HANDLERS = """
import atexit, sys, threading

def flush():
    # Registered before imesde was imported: runs after imesde's own exit hook.
    print(model.embed_one("last buffered text").shape, flush=True)
    engine.ingest("one more line")
    done = []
    t = threading.Thread(target=lambda: done.append(model.embed_one("from a thread").shape))
    t.start()
    t.join()
    print(done[0], len(engine), flush=True)

atexit.register(flush)
import imesde

model = imesde.TextEmbedder()
engine = imesde.Engine(model)
model.embed_one("warm")
# A harness that runs the exit handlers and goes on (pytest plugins, reloaders).
atexit._run_exitfuncs()
print(model.embed_one("after the handlers").shape, flush=True)
atexit.register(flush)
"""


@pytest.mark.model
@pytest.mark.timeout(300)
def test_the_model_runs_in_exit_handlers_and_after_them() -> None:
    """Model runs at the process's end are closed only once the interpreter has finalized:
    closed in imesde's atexit hook, an exit handler that ran after it (registered before
    imesde was imported) failed to embed after 3 s, and so did every call after a harness ran
    the handlers and went on."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", _MODEL_IN_EXIT_HANDLERS], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:-1] == ["(384,)", "(384,) 1", "(384,)", "(384,)", "(384,) 2"]
    assert "Error" not in proc.stderr, proc.stderr[-2000:]
