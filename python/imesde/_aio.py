"""``async for event in subscription``: the wait runs on the loop's default executor in short
slices, so a cancelled task never leaves a thread blocked for long, and it takes no event: the
coroutine takes it itself, so an event is never lost to a wait that was cancelled (or timed
out, as with ``asyncio.wait_for``)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imesde._imesde import Event, Subscription

# Seconds one executor call waits for an event before the coroutine looks again.
SLICE = 0.1


async def next_event(sub: Subscription) -> Event:
    """The subscription's next event; ``StopAsyncIteration`` once it is closed and drained."""
    loop = asyncio.get_running_loop()
    while True:
        event = sub.get(0)
        if event is not None:
            return event
        if not sub.active and sub.pending == 0:
            raise StopAsyncIteration
        await loop.run_in_executor(None, sub._wait_ready, SLICE)
