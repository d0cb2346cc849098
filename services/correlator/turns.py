"""Whose turn it is to write: one batch at a time, a batch of events before refusals.

The worker writes each batch's outputs in one transaction of its one transactional producer
(outputs.py), so batches write one at a time. They used to write strictly in the order they
were submitted. Under a flood the refusals lane (refusals.py) keeps both of the pipeline's
slots busy with batches of refusals, so a batch of events waited for the write under way and
for the next batch of refusals after it. A transaction took 0.05-0.1 s there on a quiet
machine, but 0.3-1.2 s while the broker shared the cores with the flood's producer
(bench/flood_bench.py --past-the-look), which put the flooding agency's own event past 1 s.

A batch of refusals changes no block's state, and its records are refused whatever the state
(refusals.py): where its entries fall in the journal relative to an event's changes nothing
that replay checks. So a batch of events waiting for the turn takes it before a batch of refusals
waiting too, unless the turn just before was also events': then the refusals go first. A steady
flow of events (a catch-up) would otherwise keep a submitted batch of refusals from writing for
as long as it lasts, and its offsets from being committed; the stall watch (stalls.py) would
read its partitions again. Batches of the same kind still write in the order they were
submitted (app.py chains each to the one before it of its kind): block states keep their order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class WriteTurns:
    def __init__(self) -> None:
        self._busy = False
        self._events_last = False  # whether the turn now held, or last held, is events'
        self._events: deque[asyncio.Future[None]] = deque()
        self._refusals: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def turn(self, refusals: bool) -> AsyncIterator[None]:
        """Hold the turn to write, once the writes before it are done: of the batches waiting,
        those of events first unless events held the turn just before, each kind in the order
        it asked."""
        if self._busy:
            waiter = asyncio.get_running_loop().create_future()
            (self._refusals if refusals else self._events).append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Handed the turn just as it was cancelled: pass it on, or no one writes again.
                if waiter.done() and not waiter.cancelled():
                    self._hand_on()
                raise
        else:
            self._busy = True
            self._events_last = not refusals
        try:
            yield
        finally:
            self._hand_on()

    def _hand_on(self) -> None:
        kinds = [(self._events, True), (self._refusals, False)]
        if self._events_last:
            kinds.reverse()
        for waiting, events in kinds:
            while waiting:
                waiter = waiting.popleft()
                if not waiter.done():  # else cancelled while it waited
                    waiter.set_result(None)
                    self._events_last = events
                    return
        self._busy = False
