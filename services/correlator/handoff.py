"""Handing each fetched record to faust's channels without four tasks per record.

faust's fetch loop (faust.transport.consumer.Consumer._drain_messages) hands every record over
with `await self.wait_first(callback(message), self.suspend_flow.wait())`, so that a rebalance
suspending the flow interrupts a callback that is waiting (on flow control, on a full producer
buffer, on a full queue). mode's `wait_first` makes a task of each, two more of the service's
stopped and crashed events, waits for the first to finish and cancels the other three. Nearly
every callback finishes without waiting: the four tasks and their cancellation were the
largest single cost of faust's per-record path on the worker's main thread under a malformed
flood (py-spy, bench/flood_bench.py), and that thread, not the correlation, sets how fast a
flood is refused.

`hand_over` runs the callback up to its first wait, at once. If it finishes there, nothing can
have changed meanwhile (the event loop did not run), so the race has only one possible winner
and is not run. If it waits, the rest of it (`Resumed`) races the suspend event through mode's
`wait_first`, exactly as before: a suspension cancels it where it waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from mode.services import WaitResults

WaitFirst = Callable[..., Awaitable[Any]]


class Resumed:
    """A coroutine already run up to its first wait, awaitable from there on.

    `waiting` is what it yielded there (the future it waits for, or None to be run again); the
    task that awaits this waits for it, then sends and throws into the coroutine as awaiting
    the coroutine itself would have (PEP 380's expansion of `yield from`): a cancellation
    reaches it where it waits, so its `finally` blocks and locks are released there.
    """

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self._coro, self._waiting
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - thrown in by the task: passed on
                try:
                    value = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as done:
                    return done.value


def is_wait_of(coro: object, event: asyncio.Event) -> bool:
    """Whether `coro` is `event.wait()`, not yet started."""
    frame = getattr(coro, "cr_frame", None)
    return (getattr(coro, "cr_code", None) is asyncio.Event.wait.__code__
            and frame is not None and frame.f_locals.get("self") is event)


async def hand_over(wait_first: WaitFirst, callback: Coroutine[Any, Any, Any],
                    suspend: Coroutine[Any, Any, Any]) -> Any:
    """`wait_first(callback, suspend)`, without it when `callback` finishes without waiting."""
    try:
        waiting = callback.send(None)
    except StopIteration as done:
        suspend.close()
        return WaitResults([callback], [done.value], False)
    except BaseException:
        suspend.close()
        raise
    return await wait_first(Resumed(callback, waiting), suspend)
