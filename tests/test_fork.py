"""fork() while other threads work inside imesde: the child never waits for a lock one of
them held (a prepare handler lets the work in flight finish first), and the parent goes on."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import imesde
import numpy as np
import pytest
from helpers import run_script

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX"),
    # Python 3.12+ warns that fork() in a threaded process may deadlock: that is the point.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

DIM = 64
FORKS = 60


def _child(
    engine: imesde.Engine,
    lexical: imesde.Engine,
    index: imesde.BM25,
    model: imesde.RQKMeans,
    x: np.ndarray,
) -> int:
    """Every entry point the parent's threads were in, once; 0 when all answered."""
    signal.alarm(20)  # a hang ends the child with SIGALRM instead of blocking the test
    q = x[0]
    ids = engine.ingest_vectors(x[:4])
    hits = engine.search_vector(q, k=5)
    scores, found = engine.search_vectors(x[:3], k=5)
    lexical.ingest_vectors(x[:2], ["nfs client fix", "kernel panic"])
    lex = lexical.lexical_search("nfs", k=3)
    index.add_batch([10**9 + i for i in range(300)], [f"child doc {i} nfs" for i in range(300)])
    bm = index.search("nfs", k=3)
    codes = model.encode(x[:50])
    snap = engine.recent(3)
    ok = (
        len(ids) == 4
        and len(hits) == 5
        and scores.shape == (3, 5)
        and len(lex) >= 1
        and len(bm) == 3
        and codes.shape == (50, 2)
        and len(snap) == 3
        and found.shape == (3, 5)
    )
    return 0 if ok else 1


@pytest.mark.timeout(600)
def test_children_forked_under_load_never_hang() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8192, DIM), dtype=np.float32)
    # Large enough that searches use the thread pool and writes take the shard locks often.
    engine = imesde.Engine(DIM, num_shards=8, shard_size=1024)
    engine.ingest_vectors(x)
    lexical = imesde.Engine(DIM, num_shards=4, shard_size=256, lexical=True)
    lexical.ingest_vectors(x[:512], [f"item {i} nfs client" for i in range(512)])
    index = imesde.BM25()
    texts = [f"package {i} fixes a memory leak in the nfs client {i % 97}" for i in range(5000)]
    model = imesde.RQKMeans(2, 16, random_state=0).fit(x[:2000])
    stop = threading.Event()
    errors: list[BaseException] = []
    work = [0, 0, 0, 0]

    def loop(i: int, step: Callable[[], object]) -> None:
        try:
            while not stop.is_set():
                step()
                work[i] += 1
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    batch = [0]

    def index_batch() -> None:
        # Big enough to be analysed on all cores (rayon) while holding the index's lock.
        base = 10_000 * batch[0]
        index.add_batch(list(range(base, base + len(texts))), texts)
        batch[0] += 1
        if batch[0] % 4 == 0:
            for j in range(4):
                for doc in range(10_000 * (batch[0] - 4 + j), 10_000 * (batch[0] - 4 + j) + 50):
                    index.remove(doc)

    steps: list[Callable[[], object]] = [
        lambda: engine.ingest_vectors(x[rng.integers(0, 8000) :][:64]),
        lambda: engine.search_vector(x[7], k=10),
        index_batch,
        lambda: (
            engine.search_vectors(x[:16], k=5),
            lexical.ingest_vectors(x[:8], ["nfs"] * 8),
            model.encode(x[:500]),
        ),
    ]
    threads = [threading.Thread(target=loop, args=(i, s)) for i, s in enumerate(steps)]
    for t in threads:
        t.start()
    failures: list[str] = []
    try:
        time.sleep(0.2)
        for n in range(FORKS):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                code = 1
                try:
                    code = _child(engine, lexical, index, model, x)
                finally:
                    os._exit(code)
            deadline = time.monotonic() + 60
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    status = -1
                    break
                time.sleep(0.01)
            if status != 0:
                failures.append(f"fork {n}: status {status}")
            time.sleep(0.01 * (n % 5))  # land at different moments of the threads' work
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert not errors, errors[0]
    assert not failures, failures
    assert all(w > 0 for w in work), work
    # The parent is unharmed.
    assert len(engine.search_vector(x[1], k=3)) == 3


@pytest.mark.timeout(300)
def test_a_child_forked_during_a_training_trains_its_own_index() -> None:
    # The engine trains its index on a thread of its own once it holds enough items; a child
    # forked meanwhile does not have that thread: the fork waits for the training (whose locks
    # the child would find held), and the child trains and searches without waiting.
    x = np.random.default_rng(1).standard_normal((1 << 17, 384), dtype=np.float32)
    engine = imesde.Engine(384, num_shards=8, shard_size=1 << 14, index="ivf", nlist=1024)
    engine.ingest_vectors(x)
    time.sleep(0.3)  # the training has started (it takes seconds at this size)
    assert not engine.stats()["index_trained"]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            # Had the fork not waited for the training, the child's train_index would wait
            # for a thread it does not have: the alarm kills it (a Python handler would only
            # run once the wait ended).
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(120)
            trained = engine.train_index() and engine.stats()["index_trained"]
            hits = engine.search_vector(x[5], k=3)
            code = 0 if trained and hits[0].id == 5 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    assert engine.train_index()
    assert engine.search_vector(x[9], k=3)[0].id == 9


def test_a_child_forked_while_a_thread_writes_an_sqlite_store(tmp_path: object) -> None:
    from imesde.semantic_ids import SQLiteCollisionStore, UniqueIdResolver

    store = SQLiteCollisionStore(os.path.join(str(tmp_path), "ids.db"), timeout=30)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            UniqueIdResolver(store).assign(["k"] * 20)
            time.sleep(0.001)  # room for the children's transactions

    t = threading.Thread(target=writer)
    t.start()
    statuses = []
    try:
        time.sleep(0.1)
        for _ in range(10):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                code = 1
                try:
                    signal.alarm(20)
                    got = UniqueIdResolver(store).assign(["child"])
                    code = 0 if len(got) == 1 else 1
                finally:
                    os._exit(code)
            deadline = time.monotonic() + 60
            while not (status := os.waitpid(pid, os.WNOHANG))[0]:
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    status = (pid, -1)
                    break
                time.sleep(0.01)
            statuses.append(status[1])
    finally:
        stop.set()
        t.join()
    # Before, a child that inherited the store's lock held by the writer waited forever.
    assert statuses == [0] * 10
    assert len(store) >= 10


_EXITS_AFTER_A_MODEL = """
import os, signal, sys
import imesde
engine = imesde.Engine(num_shards=2, shard_size=64)  # the default model, unused
model = imesde.TextEmbedder(threads=2)
model.embed([f"log line {i}: disk usage at {i} percent" for i in range(64)])
for how in ("sys.exit", "end", "del"):
    pid = os.fork()
    if pid == 0:
        signal.alarm(20)  # a hang ends the child with SIGALRM
        if how == "del":
            del engine, model
        if how == "sys.exit" or how == "del":
            sys.exit(3)
        raise SystemExit(3)  # as a script that ends with that status
    _, status = os.waitpid(pid, 0)
    print(how, os.waitstatus_to_exitcode(status), flush=True)
"""


def test_a_child_of_a_process_that_loaded_a_model_exits() -> None:
    # The child's interpreter dropped the parent's embedders, and the ONNX Runtime library
    # ran its static destructors: both waited for ever on thread pools whose threads the
    # child does not have (every child of a process with a model hung in exit).
    out = run_script(_EXITS_AFTER_A_MODEL)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["sys.exit", "3", "end", "3", "del", "3"]
