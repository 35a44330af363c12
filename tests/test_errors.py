"""Bad input gets a clear, typed exception and leaves the engine exactly as it was."""

from __future__ import annotations

import copy
import errno
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imesde
import numpy as np
import pytest


@pytest.fixture
def engine() -> imesde.Engine:
    e = imesde.Engine(8, num_shards=2, shard_size=8)
    e.ingest_vectors(np.eye(8, dtype=np.float32), [f"t{i}" for i in range(8)])
    return e


def snapshot(e: imesde.Engine) -> tuple[int, int, list[int]]:
    hits = e.search_vector(np.arange(1, 9, dtype=np.float32), k=16)
    return len(e), int(e.stats()["ingested"]), [h.id for h in hits]


GOOD = np.ones((2, 8), dtype=np.float32)

BAD_INGEST: list[tuple[str, Any, dict[str, Any], type[Exception]]] = [
    ("wrong dim", np.ones((2, 7), np.float32), {}, imesde.DimensionMismatchError),
    ("float64", np.ones((2, 8)), {}, imesde.DTypeError),
    ("int", np.ones((2, 8), dtype=np.int32), {}, imesde.DTypeError),
    ("list", [[1.0] * 8], {}, imesde.DTypeError),
    ("non-contiguous", np.ones((2, 16), np.float32)[:, ::2], {}, imesde.ShapeError),
    ("3-D", np.ones((1, 2, 8), np.float32), {}, imesde.ShapeError),
    # An empty batch ([0, 8]) adds nothing; vectors of no dimensions are no vectors.
    ("empty", np.ones((0,), np.float32), {}, imesde.ShapeError),
    ("no dims", np.ones((2, 0), np.float32), {}, imesde.ShapeError),
    ("nan", np.array([[np.nan] + [1.0] * 7] * 2, np.float32), {}, imesde.InvalidValueError),
    ("inf", np.array([[np.inf] + [1.0] * 7] * 2, np.float32), {}, imesde.InvalidValueError),
    ("zero vector", np.vstack([GOOD[0], np.zeros(8, np.float32)]), {}, imesde.InvalidValueError),
    ("texts too short", GOOD, {"texts": ["a"]}, imesde.ShapeError),
    ("texts not str", GOOD, {"texts": ["a", 3]}, imesde.DTypeError),
    ("texts a str", GOOD, {"texts": "ab"}, imesde.DTypeError),
    ("metadata too long", GOOD, {"metadata": [{}, {}, {}]}, imesde.ShapeError),
    ("metadata value bytes", GOOD, {"metadata": {"a": b"x"}}, imesde.DTypeError),
    ("metadata value nested", GOOD, {"metadata": {"a": [[1]]}}, imesde.DTypeError),
    ("metadata key int", GOOD, {"metadata": [{1: "a"}, None]}, imesde.DTypeError),
    ("metadata not dict", GOOD, {"metadata": ["a", "b"]}, imesde.DTypeError),
    ("timestamps short", GOOD, {"timestamps": [1.0]}, imesde.ShapeError),
    ("timestamp nan", GOOD, {"timestamps": [1.0, float("nan")]}, imesde.InvalidValueError),
    ("timestamp str", GOOD, {"timestamps": [1.0, "x"]}, imesde.DTypeError),
]


@pytest.mark.parametrize(
    ("vectors", "kwargs", "exc"), [c[1:] for c in BAD_INGEST], ids=[c[0] for c in BAD_INGEST]
)
def test_bad_ingest_raises_and_changes_nothing(
    engine: imesde.Engine, vectors: Any, kwargs: dict[str, Any], exc: type[Exception]
) -> None:
    before = snapshot(engine)
    with pytest.raises(exc) as info:
        engine.ingest_vectors(vectors, **kwargs)
    assert isinstance(info.value, imesde.ImesdeError)
    assert str(info.value)
    assert snapshot(engine) == before


def test_a_file_that_cannot_be_read_carries_its_errno_and_name(tmp_path: Path) -> None:
    """A ``StorageError`` is an ``OSError`` whose ``errno`` and ``filename`` were None: a
    process waiting for a snapshot another one writes could not tell a missing file."""
    missing = tmp_path / "not-yet.imesde"
    calls: list[Callable[[], object]] = [
        lambda: imesde.Engine.load(missing),
        lambda: imesde.BM25.load(missing),
        lambda: imesde.RQKMeans.load(missing),
        lambda: imesde.Engine(4).save(tmp_path / "no-such-dir" / "e.imesde"),
    ]
    for call in calls:
        with pytest.raises(imesde.StorageError) as caught:
            call()
        assert caught.value.errno == errno.ENOENT
        assert caught.value.strerror == os.strerror(errno.ENOENT)
        assert caught.value.filename is not None
        assert str(tmp_path) in caught.value.filename
        assert "No such file" in str(caught.value)
        # As an OSError's, they go with it through a pickle (a worker's error) or a copy.
        again = pickle.loads(pickle.dumps(caught.value))
        assert type(again) is imesde.StorageError
        assert (again.errno, again.strerror, again.filename, str(again)) == (
            caught.value.errno,
            caught.value.strerror,
            caught.value.filename,
            str(caught.value),
        )


def test_error_classes_also_subclass_the_builtins() -> None:
    assert issubclass(imesde.ShapeError, ValueError)
    assert issubclass(imesde.DimensionMismatchError, imesde.ShapeError)
    assert issubclass(imesde.InvalidValueError, ValueError)
    assert issubclass(imesde.DTypeError, TypeError)
    assert issubclass(imesde.CapacityError, MemoryError)
    assert issubclass(imesde.ItemNotFoundError, KeyError)
    from imesde import exceptions

    assert exceptions.ImesdeError is imesde.ImesdeError


def test_every_error_crosses_a_process_boundary() -> None:
    """A worker's error goes back pickled: ``ShardUnavailableError`` (its ``shard`` keyword
    only) did not unpickle, and broke the ``multiprocessing.Pool`` that carried it."""
    from imesde import exceptions

    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        if name == "ShardUnavailableError":
            e = cls("shard 3 is down", shard=3)
        elif name == "TextEncodingError":
            e = cls("utf-8", "a\ud800", 1, 2, "surrogates not allowed")
        else:
            e = cls("boom")
        e.add_note("a note")
        for again in (pickle.loads(pickle.dumps(e)), copy.deepcopy(e)):
            assert type(again) is cls
            assert again.args == e.args
            assert again.__notes__ == ["a note"]
            assert getattr(again, "shard", None) == getattr(e, "shard", None)
        assert e.ingested_ids is None  # set only where a chunked ingest stored some


def test_messages_say_what_was_wrong_and_what_was_expected(engine: imesde.Engine) -> None:
    with pytest.raises(imesde.DimensionMismatchError, match="768 dims, the engine holds 8-dim"):
        engine.search_vector(np.ones(768, np.float32))
    with pytest.raises(imesde.DTypeError, match="float64"):
        engine.search_vector(np.ones(8))  # type: ignore[arg-type]


def test_a_wrongly_typed_number_shows_its_value() -> None:
    # PyO3 names the argument only in a note (left out of str(e)); with several ints in one
    # call the value says which was wrong.
    with pytest.raises(imesde.DTypeError, match="expected an int, got str '64'"):
        imesde.Engine(8, num_shards=2, shard_size="64")  # type: ignore[arg-type]
    with pytest.raises(imesde.DTypeError, match=r"expected an int, got float 2\.5"):
        imesde.Engine(8, num_shards=2.5)  # type: ignore[arg-type]
    with pytest.raises(imesde.DTypeError, match="expected an int, got bool True"):
        imesde.Engine(8, num_shards=True)
    with pytest.raises(imesde.DTypeError, match=r"expected a number, got str 'x{39}\.\.\.\n"):
        imesde.BM25(k1="x" * 100)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [0, -1])
def test_k_must_be_positive(engine: imesde.Engine, k: int) -> None:
    with pytest.raises(imesde.InvalidValueError, match="k must be at least 1"):
        engine.search_vector(np.ones(8, np.float32), k=k)
    with pytest.raises(imesde.InvalidValueError):
        engine.search_vectors(np.ones((2, 8), np.float32), k=k)


def test_bad_queries(engine: imesde.Engine) -> None:
    before = snapshot(engine)
    q = np.ones(8, np.float32)
    with pytest.raises(imesde.InvalidValueError):
        engine.search_vector(np.zeros(8, np.float32))
    with pytest.raises(imesde.InvalidValueError):
        engine.search_vector(np.full(8, np.nan, np.float32))
    with pytest.raises(imesde.ShapeError):
        engine.search_vector(np.ones((2, 8), np.float32))
    with pytest.raises(imesde.InvalidValueError):
        engine.search_vector(q, since=10.0, until=5.0)
    with pytest.raises(imesde.InvalidValueError):
        engine.search_vector(q, where={"a": {"$gt": None}})
    with pytest.raises(imesde.DTypeError):
        engine.search_vector(q, since="yesterday")  # type: ignore[arg-type]
    with pytest.raises(imesde.DimensionMismatchError):
        engine.search_vectors(np.ones((3, 9), np.float32))
    assert snapshot(engine) == before


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"num_shards": 0}, imesde.InvalidValueError),
        ({"shard_size": 0}, imesde.InvalidValueError),
        ({"num_shards": -3}, imesde.InvalidValueError),
        ({"storage": "f16"}, imesde.InvalidValueError),
        ({"num_shards": 1 << 20, "shard_size": 1 << 30}, imesde.CapacityError),
        ({"num_shards": 1 << 40, "shard_size": 1 << 40}, imesde.CapacityError),
    ],
)
def test_bad_construction(kwargs: dict[str, Any], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        imesde.Engine(384, **kwargs)


def test_a_ring_larger_than_the_machine_is_refused_when_made() -> None:
    """Slots are touched as items arrive: a ring whose slots need more than the machine's
    memory and swap was accepted (one shard's array fit in the address space) and its
    process killed once the stream filled it."""
    if not Path("/proc/meminfo").exists():
        pytest.skip("the machine's memory is read from /proc/meminfo (Linux)")
    # 2^36 slots (109 TB of f32, within the address space): beyond any machine; the message
    # names its limit (its memory and swap, or its cgroup's).
    with pytest.raises(imesde.CapacityError, match="more than this machine can hold") as far:
        imesde.Engine(384, num_shards=1 << 14, shard_size=1 << 22)
    found = re.search(r"\((\d+) bytes of memory and swap", str(far.value))
    assert found is not None, far.value
    machine = int(found.group(1))
    slot = imesde.Engine(384, num_shards=1, shard_size=1).stats()["memory_bytes"]
    shard_size = machine // (64 * slot) + 1  # 64 shards: each one's array small
    with pytest.raises(imesde.CapacityError, match="more than this machine can hold"):
        imesde.Engine(384, num_shards=64, shard_size=shard_size)
    # A sixteenth of that is made (and costs what it holds).
    small = imesde.Engine(384, num_shards=4, shard_size=shard_size)
    assert small.capacity == 4 * shard_size
    assert len(small) == 0


def test_zero_dim_and_huge_int8_dim() -> None:
    with pytest.raises(imesde.InvalidValueError):
        imesde.Engine(0)
    with pytest.raises(imesde.InvalidValueError, match="too large for int8"):
        imesde.Engine(100_000, num_shards=1, shard_size=1, storage="int8")


def test_flags_paths_and_data_of_the_wrong_type_are_dtype_errors(
    engine: imesde.Engine, tmp_path: Any
) -> None:
    before = snapshot(engine)
    q = np.ones(8, np.float32)
    for call in (
        lambda: engine.search_vector(q, exact="yes"),  # type: ignore[arg-type]
        lambda: engine.search_vectors(q, exact=1),  # type: ignore[arg-type]
        lambda: imesde.Engine(8, lexical="no"),  # type: ignore[arg-type]
        lambda: engine.save(None),  # type: ignore[arg-type]
        lambda: imesde.Engine.load(3),  # type: ignore[arg-type]
        lambda: imesde.BM25.load(None),  # type: ignore[arg-type]
        lambda: imesde.Engine.from_bytes("not bytes"),  # type: ignore[arg-type]
        lambda: imesde.BM25.from_bytes(7),  # type: ignore[arg-type]
    ):
        with pytest.raises(imesde.DTypeError):
            call()
    assert snapshot(engine) == before
    # numpy's bool is a bool; a bytes path is a path, as open() takes it.
    assert engine.search_vector(q, k=1, exact=np.bool_(True))[0].id == before[2][0]  # type: ignore[arg-type]
    path = str(tmp_path / "e.imesde").encode()
    engine.save(path)
    assert snapshot(imesde.Engine.load(path)) == before

    class BytesPath:
        def __fspath__(self) -> bytes:
            return path

    assert snapshot(imesde.Engine.load(BytesPath())) == before
    # A path the file system cannot name (a lone surrogate) is a TextEncodingError: an
    # imesde error, and the UnicodeEncodeError open() raises. Nothing is written.
    bad = str(tmp_path / "x\ud800")
    refused: list[Callable[[], object]] = [
        lambda: engine.save(bad),
        lambda: imesde.Engine.load(Path(bad)),
        lambda: imesde.BM25().save(bad),
        lambda: imesde.RQKMeans.load(bad),
    ]
    for refuse in refused:
        with pytest.raises(imesde.TextEncodingError, match="the path") as e:
            refuse()
        assert isinstance(e.value, UnicodeEncodeError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.imesde"]
    assert snapshot(engine) == before
    with pytest.raises(imesde.DTypeError, match="use search for one query"):
        imesde.Engine(8).search_batch("alpha")
