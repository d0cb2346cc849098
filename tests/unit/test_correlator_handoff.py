"""Handing records to faust's channels (services/correlator/handoff.py) against mode's own
`wait_first`: a callback that does not wait skips the race; one that waits races the suspend
event as before, and a suspension cancels it where it waits, releasing what it holds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mode import Service

from safehub.services.correlator.handoff import Resumed, hand_over, is_wait_of


class Recorder:
    """What a callback did: how far it got, and whether its cleanup ran."""

    def __init__(self) -> None:
        self.reached: list[str] = []
        self.cleaned = False


async def immediate(rec: Recorder) -> str:
    rec.reached.append("done")
    return "handed"


async def waits_for(rec: Recorder, gate: asyncio.Event, lock: asyncio.Lock) -> str:
    async with lock:  # as faust's on_message holds its callback lock while it waits
        try:
            rec.reached.append("waiting")
            await gate.wait()
            rec.reached.append("done")
            return "handed"
        finally:
            rec.cleaned = True


class Waiting:
    """A callback handed over and waiting at its gate, racing the suspend event."""

    def __init__(self) -> None:
        self.suspend, self.gate, self.lock = asyncio.Event(), asyncio.Event(), asyncio.Lock()
        self.rec = Recorder()
        self.handing = asyncio.ensure_future(hand_over(
            Service().wait_first, waits_for(self.rec, self.gate, self.lock),
            self.suspend.wait()))


def test_a_callback_that_does_not_wait_makes_no_task() -> None:
    async def scenario() -> None:
        service = Service()
        suspend = asyncio.Event()
        rec = Recorder()
        before = len(asyncio.all_tasks())
        calls: list[Any] = []

        async def wait_first(*coros: Any, **kw: Any) -> Any:
            calls.append(coros)
            return await service.wait_first(*coros, **kw)

        result = await hand_over(wait_first, immediate(rec), suspend.wait())
        assert rec.reached == ["done"]
        assert calls == []  # the race was not run
        assert list(result.results) == ["handed"] and not result.stopped
        assert len(asyncio.all_tasks()) == before

    asyncio.run(scenario())


def test_a_waiting_callback_finishes_through_the_race_when_its_wait_ends() -> None:
    async def scenario() -> None:
        w = Waiting()
        await asyncio.sleep(0.05)
        assert w.rec.reached == ["waiting"] and w.lock.locked() and not w.handing.done()
        w.gate.set()
        result = await asyncio.wait_for(w.handing, 5)
        assert w.rec.reached == ["waiting", "done"] and w.rec.cleaned and not w.lock.locked()
        assert list(result.results) == ["handed"] and not result.stopped

    asyncio.run(scenario())


def test_a_suspension_cancels_a_waiting_callback_where_it_waits() -> None:
    async def scenario() -> None:
        w = Waiting()
        await asyncio.sleep(0.05)
        w.suspend.set()  # a rebalance stops the flow
        await asyncio.wait_for(w.handing, 5)
        await asyncio.sleep(0.05)
        # Cancelled inside its wait: never handed over, its lock released, its finally run.
        assert w.rec.reached == ["waiting"] and w.rec.cleaned and not w.lock.locked()
        w.gate.set()
        await asyncio.sleep(0.05)
        assert w.rec.reached == ["waiting"]

    asyncio.run(scenario())


def test_a_callback_error_reaches_the_fetch_loop_either_way() -> None:
    async def fails_at_once() -> None:
        raise ValueError("at once")

    async def fails_later(gate: asyncio.Event) -> None:
        await gate.wait()
        raise ValueError("later")

    async def scenario() -> None:
        service = Service()
        suspend = asyncio.Event()
        with pytest.raises(ValueError, match="at once"):
            await hand_over(service.wait_first, fails_at_once(), suspend.wait())
        gate = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, gate.set)
        with pytest.raises(ValueError, match="later"):
            await hand_over(service.wait_first, fails_later(gate), suspend.wait())

    asyncio.run(scenario())


def test_resumed_passes_a_cancellation_into_the_coroutine() -> None:
    async def scenario() -> None:
        gate, lock = asyncio.Event(), asyncio.Lock()
        rec = Recorder()
        coro = waits_for(rec, gate, lock)
        task = asyncio.ensure_future(Resumed(coro, coro.send(None)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert rec.cleaned and not lock.locked()

    asyncio.run(scenario())


def test_only_the_wait_of_that_event_is_recognised() -> None:
    async def scenario() -> None:
        mine, other = asyncio.Event(), asyncio.Event()
        waits = [mine.wait(), other.wait(), immediate(Recorder())]
        assert [is_wait_of(c, mine) for c in waits] == [True, False, False]
        assert not is_wait_of(mine, mine)
        for c in waits:
            c.close()

    asyncio.run(scenario())
