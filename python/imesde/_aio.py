"""``async for event in subscription``: a step that finds the queue empty waits on a future of
the running loop, which the subscription resolves (thread-safely) when an event queues or it
closes; no thread is held while waiting. The coroutine takes the event itself, so an event is
never lost to a wait that was cancelled (or timed out, as with ``asyncio.wait_for``)."""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imesde._imesde import Event, Subscription


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _wake(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    """Called by the subscription, on whichever thread queued the event."""
    if not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            loop.call_soon_threadsafe(_resolve, future)


async def next_event(sub: Subscription) -> Event:
    """The subscription's next event; ``StopAsyncIteration`` once it is closed and drained."""
    loop = asyncio.get_running_loop()
    while True:
        event = sub.get(0)
        if event is not None:
            return event
        if not sub.active and sub.pending == 0:
            raise StopAsyncIteration
        future: asyncio.Future[None] = loop.create_future()
        wake: Any = partial(_wake, loop, future)
        if not sub._add_waiter(wake):
            continue  # an event queued, or the subscription closed, since the look above
        try:
            await future
        finally:
            sub._remove_waiter(wake)
