"""Streams into an engine: micro-batching for sources that deliver items at their own pace.

An engine ingests fastest in batches, and a stream's items should be searchable soon after
they arrive. :func:`micro_batches` gives both: it reads the source on a thread of its own and
hands out a batch when it is full or ``wait`` seconds after its first item, whichever comes
first, so a busy stream is ingested in full batches and a quiet one without delay::

    import sys
    import imesde

    engine = imesde.Engine()
    for batch in imesde.micro_batches(sys.stdin, size=64, wait=0.2):
        engine.ingest_batch([line.rstrip("\\n") for line in batch])

:func:`ingest_stream` does exactly that (skipping blank texts) and returns the count.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from imesde._args import iterate, number, positive
from imesde.exceptions import DTypeError, InvalidValueError

__all__ = ["ingest_stream", "micro_batches"]

T = TypeVar("T")

_END = object()


class _Failed:
    """The source raised: carried through the queue and raised again by the consumer."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _check(size: int, wait: float) -> tuple[int, float]:
    size = positive(size, "size")
    seconds = number(wait, "wait")
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise InvalidValueError(f"wait must be a finite number of seconds >= 0, got {wait}")
    return size, seconds


def micro_batches(
    items: Iterable[T], size: int = 64, wait: float = 0.2
) -> Generator[list[T], None, None]:
    """The items of ``items`` in lists of at most ``size``: a list is handed out when it is
    full, or ``wait`` seconds after its first item arrived. ``items`` (a file, a pipe, a
    generator over a socket or a queue) is read on a daemon thread from the call on, at most
    ``size`` items ahead of the consumer; when it ends, the last partial list is handed out. An
    exception
    raised by ``items`` is raised here, after the items before it. Leaving the loop early
    stops the reading thread (once the item it waits for arrives); the items it had read
    ahead, at most ``size + 1``, are not handed out. Bad arguments raise here, before the
    first list is asked for."""
    source = iterate(items, "items")
    size, seconds = _check(size, wait)
    ahead: queue.Queue[Any] = queue.Queue(maxsize=size)
    stop = threading.Event()
    threading.Thread(
        target=_read, args=(source, ahead, stop), name="imesde-micro-batches", daemon=True
    ).start()
    batches = _batches(ahead, size, seconds, stop)
    # A loop never started (or dropped unfinished) stops the reader when it is freed.
    weakref.finalize(batches, stop.set)
    return batches


def _read(items: Iterator[Any], ahead: queue.Queue[Any], stop: threading.Event) -> None:
    """The reading thread: each item with the time it arrived (a list's wait counts from its
    first item's), then what ended the source."""

    def put(item: Any) -> bool:
        """Hands `item` over unless the consumer has gone; whether it was."""
        while not stop.is_set():
            try:
                ahead.put(item, timeout=_PUT_SLICE)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in items:
            if not put((time.monotonic(), item)):
                return
    except BaseException as e:
        put(_Failed(e))
    finally:
        put(_END)


def _batches(
    ahead: queue.Queue[Any], size: int, wait: float, stop: threading.Event
) -> Generator[list[Any], None, None]:
    """The lists ``micro_batches`` hands out, from the reading thread's queue; leaving the
    loop stops the reader."""
    try:
        yield from _lists(ahead, size, wait)
    finally:
        stop.set()


def _lists(ahead: queue.Queue[Any], size: int, wait: float) -> Iterator[list[Any]]:
    while True:
        batch: list[Any] = []
        deadline: float | None = None
        while len(batch) < size:
            # A wait beyond what the platform's clock takes (~292 years) is no deadline.
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            timeout = None if left is None or left > threading.TIMEOUT_MAX else left
            try:
                item = ahead.get(timeout=timeout)
            except queue.Empty:
                break
            if item is _END or isinstance(item, _Failed):
                if batch:
                    yield batch
                if isinstance(item, _Failed):
                    raise item.error
                return
            arrived, value = item
            batch.append(value)
            if deadline is None:
                deadline = arrived + wait
        yield batch


# Seconds the reading thread waits on a full queue before it looks whether to stop.
_PUT_SLICE = 0.1


class _Ingests(Protocol):
    """What ``ingest_stream`` needs of an engine: ``Engine`` and ``ShardedEngine`` have it."""

    def ingest_batch(self, texts: list[str]) -> object: ...


def ingest_stream(
    engine: _Ingests,
    texts: Iterable[str],
    *,
    size: int = 64,
    wait: float = 0.2,
    on_batch: Callable[[list[str]], object] | None = None,
) -> int:
    """Ingests ``texts`` (a stream of any pace) into ``engine`` in :func:`micro_batches`,
    each text stripped of its trailing newline and blank ones skipped; ``on_batch`` is called
    with each batch after it is stored. Returns the number of texts ingested."""
    batches = micro_batches(iterate(texts, "texts"), size, wait)
    done = 0
    for batch in batches:
        for t in batch:
            if not isinstance(t, str):
                raise DTypeError(f"texts must yield str, got {type(t).__name__}")
        kept = [t.rstrip("\r\n") for t in batch]
        kept = [t for t in kept if t.strip()]
        if kept:
            engine.ingest_batch(kept)
            done += len(kept)
            if on_batch is not None:
                on_batch(kept)
    return done
