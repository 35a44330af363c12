"""Bulk calls in chunks: generators are read a chunk at a time (one chunk's texts held),
per-item timestamps and metadata are read in step, and a progress bar is drawn on request."""

from __future__ import annotations

import io
import sys
import types
from collections.abc import Iterator
from typing import Any

import imesde
import numpy as np
import pytest


def texts_of(stream: list[dict[str, str]], n: int) -> list[str]:
    return [item["text"] for item in stream[:n]]


def test_a_generator_is_ingested_a_chunk_at_a_time(
    stream: list[dict[str, str]], embedder: imesde.TextEmbedder
) -> None:
    engine = imesde.Engine(embedder, num_shards=2, shard_size=512)
    texts = texts_of(stream, 700)
    seen_while_reading: list[int] = []

    def source() -> Iterator[str]:
        for i, t in enumerate(texts):
            if i % 100 == 0:
                seen_while_reading.append(len(engine))
            yield t

    ids = engine.ingest_batch(
        source(),
        batch_size=100,
        timestamps=(float(i) for i in range(700)),
        metadata=({"i": i} for i in range(700)),
    )
    assert ids.dtype == np.int64
    assert ids.tolist() == list(range(700))
    # Before item 100 k was read, the k chunks before it were in the engine already.
    assert seen_while_reading == [0, *range(100, 700, 100)]
    item = engine.get(345)
    assert (item.text, item.ts, item.metadata) == (texts[345], 345.0, {"i": 345})
    # The same texts in one list give the same vectors.
    np.testing.assert_allclose(item.vector, embedder.embed_one(texts[345]), atol=1e-5)


def test_ids_of_many_small_chunks_are_kept_whole_and_in_order(
    stream: list[dict[str, str]], embedder: imesde.TextEmbedder
) -> None:
    """A long input in small chunks: their id arrays are joined in runs as it goes (one array
    per chunk cost ~150 bytes an item); the ids returned, or listed with an error, are all of
    them in order."""
    engine = imesde.Engine(embedder, num_shards=1, shard_size=256)
    texts = texts_of(stream, 20)

    def source(n: int, bad_at: int | None = None) -> Iterator[str]:
        for i in range(n):
            if i == bad_at:
                raise OSError("the socket closed")
            yield texts[i % 20]

    ids = engine.ingest_batch(source(1000), batch_size=3)
    assert ids.tolist() == list(range(1000))
    with pytest.raises(OSError, match="closed") as gone:
        engine.ingest_batch(source(900, bad_at=700), batch_size=1)
    assert gone.value.ingested_ids.tolist() == list(range(1000, 1700))  # type: ignore[attr-defined]
    assert engine.get(1699).text == texts[699 % 20]


def test_chunks_check_per_item_lengths_and_a_bad_chunk_keeps_the_ones_before(
    stream: list[dict[str, str]], embedder: imesde.TextEmbedder
) -> None:
    engine = imesde.Engine(embedder, num_shards=1, shard_size=256)
    texts = texts_of(stream, 50)
    with pytest.raises(imesde.ShapeError) as short:
        engine.ingest_batch(iter(texts), timestamps=iter([1.0] * 49), batch_size=20)
    assert len(engine) == 40  # the two whole chunks before the short one
    # What was stored comes with the error: the caller can find (or delete) it.
    stored = short.value.ingested_ids  # typed on ImesdeError: an array here, None elsewhere
    assert stored is not None
    assert [engine.get(int(i)).text for i in stored] == texts[:40]
    with pytest.raises(imesde.ShapeError, match="more entries") as long:
        engine.ingest_batch(iter(texts[:5]), metadata=iter([{}] * 6), batch_size=2)
    ids = long.value.ingested_ids
    assert ids is not None
    assert len(ids) == 5
    assert engine.delete(ids) == 5

    # The input's own error (or Ctrl-C) between chunks: the ids go with it too.
    def failing() -> Iterator[str]:
        yield from texts[:3]
        raise OSError("the log rotated away")

    with pytest.raises(OSError, match="rotated") as gone:
        engine.ingest_batch(failing(), batch_size=2)
    assert engine.delete(gone.value.ingested_ids) == 2  # type: ignore[attr-defined]
    with pytest.raises(imesde.ShapeError):
        engine.ingest_batch(texts, metadata=[{}] * 49, batch_size=20)
    assert len(engine) == 40  # lengths known up front: nothing added
    bad = [*texts[:25], 7, *texts[25:]]
    # The error names the item by its place in the whole input, not in its chunk.
    with pytest.raises(imesde.DTypeError, match=r"texts\[25\]"):
        engine.ingest_batch(iter(bad), batch_size=20)  # type: ignore[arg-type]
    assert len(engine) == 60
    with pytest.raises(imesde.TextEncodingError, match=r"texts\[21\]"):
        engine.ingest_batch(iter([*texts[:21], "\ud800"]), batch_size=20)
    bad_meta: list[Any] = [*([{}] * 22), {"a": {}}]
    with pytest.raises(imesde.DTypeError, match=r"metadata\[22\]"):
        engine.ingest_batch(iter(texts[:23]), metadata=bad_meta, batch_size=20)
    assert len(engine) == 100
    # Bytes iterate as ints, a set in an order of its own: in chunks as in one batch, no
    # column of times.
    for stamps in (b"ab", {2.0, 1.0}, {1.0: 2.0}):
        for chunks in (None, 1):
            with pytest.raises(imesde.DTypeError, match="timestamps must be a list or array"):
                engine.ingest_batch(texts[:2], timestamps=stamps, batch_size=chunks)
    for chunks in (None, 1):
        with pytest.raises(imesde.ShapeError, match="timestamps must be 1-D"):
            engine.ingest_batch(texts[:2], timestamps=np.ones((2, 1)), batch_size=chunks)
        with pytest.raises(imesde.ShapeError, match=r"timestamps has 0 entries|fewer entries"):
            engine.ingest_batch(texts[:2], timestamps=[], batch_size=chunks)
    assert len(engine) == 100
    for size, error in ((0, imesde.InvalidValueError), ("8", imesde.DTypeError)):
        with pytest.raises(error):
            engine.ingest_batch(texts, batch_size=size)  # type: ignore[arg-type]
    with pytest.raises(imesde.DTypeError):
        engine.ingest_batch(texts, show_progress_bar="yes")  # type: ignore[arg-type]
    assert len(engine) == 100


def test_progress_bars_on_request_and_off_by_default(
    stream: list[dict[str, str]], embedder: imesde.TextEmbedder, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = imesde.Engine(embedder, num_shards=2, shard_size=512)
    texts = texts_of(stream, 300)
    engine.ingest_batch(texts)
    vectors = embedder.embed(iter(texts), batch_size=64)
    np.testing.assert_allclose(vectors, embedder.embed(texts), atol=1e-6)
    assert capsys.readouterr().err == ""  # not a terminal: no bar
    engine.ingest_batch(texts, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "imesde: ingest" in err
    assert "300" in err
    embedder.embed(texts, show_progress_bar=True)
    assert "imesde: embed" in capsys.readouterr().err
    assert len(engine) == 600


def test_a_tqdm_that_cannot_draw_the_bar_gives_lines(
    stream: list[dict[str, str]],
    embedder: imesde.TextEmbedder,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``tqdm`` folder in the working directory imports as a namespace package, and a tqdm
    of another API raises on the bar: both were raw errors out of ``ingest_batch``."""
    engine = imesde.Engine(embedder, num_shards=1, shard_size=64)
    texts = texts_of(stream, 10)

    def old_tqdm(**kwargs: Any) -> None:
        raise TypeError("unexpected keyword argument 'dynamic_ncols'")

    for broken in (types.ModuleType("tqdm"), types.SimpleNamespace(tqdm=old_tqdm)):
        monkeypatch.setitem(sys.modules, "tqdm", broken)
        ids = engine.ingest_batch(texts, show_progress_bar=True)
        assert len(ids) == 10
        assert "imesde: ingest: 10 / 10" in capsys.readouterr().err
    assert len(engine) == 20


def test_a_closed_stderr_never_fails_an_ingest(
    stream: list[dict[str, str]],
    embedder: imesde.TextEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host application that closed stderr: a generator's ingest asked it whether it is a
    terminal and raised ``ValueError: I/O operation on closed file``."""
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)
    engine = imesde.Engine(embedder, num_shards=1, shard_size=64)
    texts = texts_of(stream, 5)
    assert len(engine.ingest_batch(iter(texts))) == 5
    from imesde._bulk import wants_bar

    assert wants_bar(None, None) is False


def test_rq_fit_progress_bar_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)
    plain = imesde.RQKMeans(2, 16, random_state=3).fit(x)
    assert capsys.readouterr().err == ""
    shown = imesde.RQKMeans(2, 16, random_state=3).fit(x, show_progress_bar=True)
    assert "imesde: RQKMeans.fit" in capsys.readouterr().err
    np.testing.assert_array_equal(plain.encode(x), shown.encode(x))
