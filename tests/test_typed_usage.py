"""Code a user type-checks strictly (mypy --strict runs over this file in ``make lint``), run
for real: each case was rejected by the stubs although the runtime takes it."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import imesde
import numpy as np
import numpy.typing as npt
import pytest
from imesde.stream import ingest_stream, micro_batches

DIM = 8


def vectors(n: int, seed: int = 0) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def test_typed_tag_lists_go_in_as_metadata() -> None:
    e = imesde.Engine(DIM, num_shards=2, shard_size=8)
    tags: list[str] = ["prod", "eu"]
    codes: list[int] = [3, 4]
    (i,) = e.ingest_vectors(vectors(1), metadata={"tags": tags})
    e.update_metadata([int(i)], {"codes": codes})
    assert e.get(int(i)).metadata == {"tags": ["prod", "eu"], "codes": [3, 4]}


class _At:
    """A time that only tells its seconds since the epoch (as pandas' Timestamp does)."""

    def timestamp(self) -> float:
        return 1_700_000_000.5


def test_numpy_numbers_and_timestamp_objects_are_times() -> None:
    e = imesde.Engine(DIM, num_shards=2, shard_size=8)
    ids = e.ingest_vectors(vectors(3), timestamps=[np.int64(100), np.float32(200), _At()])
    assert [e.get(int(i)).ts for i in ids] == [100.0, 200.0, 1_700_000_000.5]
    hits = e.search_vector(vectors(1)[0], 3, since=np.int64(150), until=np.float64(250))
    assert [h.ts for h in hits] == [200.0]
    utc = datetime.datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=datetime.timezone.utc)
    assert [h.ts for h in e.search_vector(vectors(1)[0], 3, since=utc)] == [1_700_000_000.5]


def test_iterables_and_arrays_where_a_batch_is_taken() -> None:
    e = imesde.Engine(DIM, num_shards=2, shard_size=8, lexical=True)
    texts = np.array(["disk full", "cpu hot"])
    ids = e.ingest_vectors(vectors(2), texts, metadata=({"n": n} for n in range(2)))
    assert [e.get(int(i)).text for i in ids] == ["disk full", "cpu hot"]
    bm = imesde.BM25(stopwords=frozenset({"the"}))
    bm.add_batch(np.array([7, 9]), (t for t in ["the disk is full", "the cpu is hot"]))
    assert [h.id for h in bm.search("the disk")] == [7]
    assert imesde.RQKMeans(2, np.array([4, 8])).n_clusters == [4, 8]


def test_fuse_takes_any_ranked_results_from_any_iterable() -> None:
    e = imesde.Engine(DIM, num_shards=2, shard_size=8, lexical=True)
    e.ingest_vectors(vectors(4), ["disk full", "cpu hot", "disk slow", "net down"])
    dense = e.search_vector(vectors(1, seed=1)[0], 4)
    lexical = e.lexical_search("disk", 4)
    fused = imesde.fuse(ranked for ranked in [dense, lexical])
    assert fused == imesde.fuse([[(h.id, h.score) for h in dense], list(lexical)])
    # The two "disk" items are in both lists: they lead the fused ranking.
    assert {i for i, _ in fused[:2]} == {h.id for h in lexical}


class _MyRQ(imesde.RQKMeans):
    def describe(self) -> str:
        return f"{len(self.n_clusters)} levels"


def test_fit_and_load_give_back_the_subclass(tmp_path: Path) -> None:
    fitted: _MyRQ = _MyRQ(2, 4, random_state=0).fit(vectors(200))
    assert fitted.describe() == "2 levels"
    fitted.save(tmp_path / "rq.bin")
    loaded: _MyRQ = _MyRQ.load(tmp_path / "rq.bin")
    assert type(loaded) is _MyRQ
    assert loaded.semantic_id(loaded.encode(vectors(5))) == fitted.semantic_id(
        fitted.encode(vectors(5))
    )
    engine: imesde.SemanticIdEngine = imesde.SemanticIdEngine(fitted).fit(vectors(200))
    assert len(engine.unique_ids(vectors(3), item_ids=np.arange(3))) == 3


class _SignEncoder:
    """An encoder of its own: the sign of each of the first three dimensions."""

    def fit(self, X: Any, *, device: str = "cpu") -> _SignEncoder:  # noqa: N803
        return self

    def encode(self, X: Any) -> npt.NDArray[np.int64]:  # noqa: N803
        return (np.asarray(X)[:, :3] > 0).astype(np.int64)

    def semantic_id(self, codes: Any, **_: Any) -> list[str]:
        return ["-".join(map(str, row)) for row in np.asarray(codes)]


def test_a_duck_typed_encoder_labels_items() -> None:
    x = vectors(4)
    want = ["-".join("1" if v > 0 else "0" for v in row[:3]) for row in x]
    sid = imesde.SemanticIdEngine(_SignEncoder()).fit(x)
    assert [u.rsplit("-", 1)[0] if u.count("-") > 2 else u for u in sid.unique_ids(x)] == want


def test_micro_batches_close_stops_the_reader() -> None:
    batches = micro_batches(iter(range(100)), size=10)
    assert next(batches) == list(range(10))
    batches.close()
    with pytest.raises(StopIteration):
        next(batches)


class _Sink:
    """A user's own sink: anything with ``ingest_batch`` is fed, as ``Engine`` and
    ``ShardedEngine`` are."""

    def __init__(self) -> None:
        self.got: list[str] = []

    def ingest_batch(self, texts: list[str]) -> None:
        self.got += texts


def test_ingest_stream_feeds_anything_with_ingest_batch() -> None:
    sink = _Sink()
    assert ingest_stream(sink, iter(["disk full\n", "\n", "cpu hot"]), size=2) == 2
    assert sink.got == ["disk full", "cpu hot"]
