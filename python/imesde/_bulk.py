"""Bulk work in chunks, with a progress bar as sentence-transformers shows one: tqdm when it is
installed, on by default only when stderr is a terminal and the work is long.

``Engine.ingest_batch`` and ``TextEmbedder.embed`` hand their work here when it is given in
chunks (``batch_size``, a generator) or a bar is wanted; each chunk then goes back to them as an
ordinary list, so the texts held are one chunk's (an ingest's ids are kept for its result,
8 bytes an item: an endless stream goes to ``imesde.ingest_stream``, which keeps none).
"""

from __future__ import annotations

import importlib
import itertools
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from imesde._args import positive, python_values, time_column
from imesde._progress import stderr_is_terminal
from imesde.exceptions import DTypeError, ImesdeError, ShapeError

if TYPE_CHECKING:
    from imesde._imesde import Engine, TextEmbedder

T = TypeVar("T")

# Work of at least this many texts counts as long: a bar by default on a terminal.
LONG = 10_000
# Texts per chunk when a bar is shown and no batch_size was given.
CHUNK = 1024
# Chunks whose id arrays are joined into one as a long input goes on.
MERGE = 64


class Progress:
    """``update(n)`` as work gets done; ``close()`` at the end. Draws a tqdm bar, or (tqdm not
    installed, a bar asked for explicitly) a line on stderr every few seconds."""

    def __init__(self, total: int | None, desc: str, show: bool) -> None:
        self.total, self.desc, self.done = total, desc, 0
        self.bar: Any = None
        self.lines = False
        self.started = self.last = time.perf_counter()
        if not show or sys.stderr is None:  # pythonw and daemons may have no stderr
            return
        try:
            tqdm: Any = importlib.import_module("tqdm").tqdm
            self.bar = tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True)
        except Exception:  # no tqdm, or not one that makes this bar: lines on stderr
            self.lines = True

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.lines and time.perf_counter() - self.last >= 2.0:
            self.last = time.perf_counter()
            self._line()

    def _line(self) -> None:
        of = f" / {self.total:,}" if self.total is not None else ""
        took = time.perf_counter() - self.started
        print(f"{self.desc}: {self.done:,}{of} ({took:.1f} s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.lines:
            self._line()


def wants_bar(show: bool | None, total: int | None) -> bool:
    """``show``, or by default: stderr is a terminal and the work is long (or of unknown
    length)."""
    if show is not None:
        if not isinstance(show, bool):
            raise DTypeError(f"show_progress_bar must be a bool or None, got {type(show).__name__}")
        return show
    return stderr_is_terminal() and (total is None or total >= LONG)


def _chunk_size(batch_size: int | None) -> int:
    if batch_size is None:
        return CHUNK
    size = positive(batch_size, "batch_size")
    # A chunk is held in memory whole: more than sys.maxsize texts is never one.
    return min(size, sys.maxsize)


def _length(x: object) -> int | None:
    return len(x) if isinstance(x, Sized) and not isinstance(x, (str, bytes)) else None


def _texts_length(texts: object) -> int | None:
    """The number of texts, when known; a 0-d array or a DataFrame (whose iteration gives its
    column names) is refused."""
    if getattr(texts, "ndim", 1) == 0:
        raise DTypeError("texts must be a list of str, got a 0-d array")
    if type(texts).__name__ == "DataFrame":
        raise DTypeError("texts must be a list of str, got a DataFrame: pass one column")
    return _length(texts)


def _per_item(x: Any, what: str, total: int | None) -> Iterator[Any] | None:
    """Per-item values (timestamps, metadata) read in step with the texts; None when absent."""
    if x is None:
        return None
    if what == "timestamps":
        # Checked as one batch checks it; a pandas or pyarrow column of datetimes read whole
        # as its datetime64 values (its scalars one at a time cost microseconds each).
        column = time_column(x)
        if column is not None:
            x = column
    n = _length(x)
    if n is not None and total is not None and n != total:
        raise ShapeError(f"{what} has {n} entries, expected {total} (one per text)")
    try:
        values: Iterator[Any] = iter(x)
    except TypeError:
        raise DTypeError(f"{what} must be a list or an iterable, got {type(x).__name__}") from None
    return values


def _one_batch(texts: object, batch_size: int | None, show: bool) -> bool:
    """No chunks asked for, no bar, and a length known: the work goes in as one batch (which
    adds everything or nothing)."""
    return batch_size is None and not show and _length(texts) is not None


def _in_chunks(
    texts: object,
    batch_size: int | None,
    total: int | None,
    show: bool,
    desc: str,
    work: Callable[[list[str]], T],
) -> list[T]:
    """``work(chunk)`` for each chunk of ``texts`` (``batch_size`` texts, default ``CHUNK``),
    in order, with the bar advanced after each."""
    size = _chunk_size(batch_size)
    try:
        source: Iterator[str] = iter(texts)  # type: ignore[call-overload]
    except TypeError:
        raise DTypeError(
            f"texts must be a list or an iterable of str, got {type(texts).__name__}"
        ) from None
    out: list[T] = []
    bar = Progress(total, desc, show)
    done = 0
    try:
        while chunk := list(itertools.islice(source, size)):
            try:
                out.append(work(chunk))
            except ImesdeError as exc:
                _from_start(exc, done)
                raise
            bar.update(len(chunk))
            done += len(chunk)
    finally:
        bar.close()
    return out


_POSITION = re.compile(r"\b(texts|timestamps|metadata)\[(\d+)\]")


def _from_start(exc: ImesdeError, offset: int) -> None:
    """``exc``, raised for a chunk that starts at item ``offset``, naming its item by its place
    in the whole input (``texts[1027]``, not ``texts[3]``)."""
    if not offset:
        return

    def shift(message: str) -> str:
        return _POSITION.sub(lambda m: f"{m[1]}[{int(m[2]) + offset}]", message)

    if isinstance(exc, UnicodeEncodeError):  # TextEncodingError: its text is its reason
        exc.reason = shift(exc.reason)
    elif len(exc.args) == 1 and isinstance(exc.args[0], str):
        exc.args = (shift(exc.args[0]),)


def ingest_in_chunks(
    engine: Engine,
    texts: Iterable[str],
    timestamps: Any,
    metadata: Any,
    batch_size: int | None,
    show_progress_bar: bool | None,
) -> npt.NDArray[np.int64]:
    """``engine.ingest_batch`` a chunk at a time (see the module docs). Each chunk is checked and
    ingested whole; a bad chunk raises with the chunks before it ingested, their ids in the
    error's ``ingested_ids``."""
    if isinstance(texts, str):
        raise DTypeError("texts must be a list of str, got a single str (use ingest for one text)")
    texts = python_values(texts)
    total = _texts_length(texts)
    show = wants_bar(show_progress_bar, total)
    if _one_batch(texts, batch_size, show):
        return engine.ingest_batch(
            list(texts),
            timestamps=timestamps,
            metadata=metadata,
            batch_size=None,
            show_progress_bar=False,
        )
    shared = metadata if isinstance(metadata, Mapping) else None
    stamps = _per_item(timestamps, "timestamps", total)
    metas = None if shared is not None else _per_item(metadata, "metadata", total)

    stored: list[npt.NDArray[np.int64]] = []
    merged = 0  # `stored[:merged]` are runs of MERGE chunks' ids

    def ingest(chunk: list[str]) -> None:
        nonlocal merged
        if len(stored) - merged >= MERGE:
            # One array per small chunk costs ~100 bytes beside its ids: joined in runs, a
            # long stream's ids cost little more than their 8 bytes each.
            stored[merged:] = [np.concatenate(stored[merged:])]
            merged += 1
        ts = _take(stamps, len(chunk), "timestamps")
        meta = shared if shared is not None else _take(metas, len(chunk), "metadata")
        # The chunk's ids join `stored` inside the call: a Ctrl-C raised as it returns (the
        # chunk written) finds them there.
        engine._ingest_into(stored, chunk, ts, meta)

    def ids() -> npt.NDArray[np.int64]:
        return np.concatenate(stored) if stored else np.empty(0, dtype=np.int64)

    try:
        _in_chunks(texts, batch_size, total, show, "imesde: ingest", ingest)
        for extra, what in ((stamps, "timestamps"), (metas, "metadata")):
            if extra is not None and next(extra, _END) is not _END:
                raise ShapeError(f"{what} has more entries than there are texts")
    except BaseException as exc:  # the input's own error, Ctrl-C: the ids go with it too
        # What earlier chunks stored stays stored: the caller gets its ids with the error.
        done = ids()
        exc.ingested_ids = done  # type: ignore[attr-defined]
        if len(done) and hasattr(exc, "add_note"):  # Python 3.11+
            exc.add_note(f"{len(done):,} items of earlier chunks were stored: ids in ingested_ids")
        raise
    return ids()


_END = object()


def _take(values: Iterator[Any] | None, n: int, what: str) -> list[Any] | None:
    if values is None:
        return None
    got = list(itertools.islice(values, n))
    if len(got) != n:
        raise ShapeError(f"{what} has fewer entries than there are texts")
    return got


def embed_in_chunks(
    model: TextEmbedder,
    texts: Iterable[str],
    prompt: str | None,
    batch_size: int | None,
    show_progress_bar: bool | None,
) -> npt.NDArray[np.float32]:
    """``model.embed`` a chunk at a time, with a bar when one is wanted."""
    if isinstance(texts, str):
        return model.embed(texts, prompt, show_progress_bar=False)
    texts = python_values(texts)
    total = _texts_length(texts)
    show = wants_bar(show_progress_bar, total)
    if _one_batch(texts, batch_size, show):
        return model.embed(list(texts), prompt, show_progress_bar=False)
    out = _in_chunks(
        texts,
        batch_size,
        total,
        show,
        "imesde: embed",
        lambda chunk: model.embed(chunk, prompt, show_progress_bar=False),
    )
    if not out:
        return np.empty((0, model.dim), dtype=np.float32)
    return np.concatenate(out)
