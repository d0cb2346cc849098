"""WriteTurns (services/correlator/turns.py): one write at a time; of the batches waiting, those
of events first, but never twice in a row while refusals wait; each kind in the order it asked;
a waiter cancelled never holds the turn."""

from __future__ import annotations

import asyncio

import pytest

from safehub.services.correlator.turns import WriteTurns


async def write(turns: WriteTurns, name: str, refusals: bool, log: list[str],
                gate: asyncio.Event | None = None) -> None:
    async with turns.turn(refusals):
        log.append(f"{name} starts")
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(0)
        log.append(f"{name} ends")


async def started(log: list[str], name: str) -> None:
    while f"{name} starts" not in log:
        await asyncio.sleep(0)


def test_events_waiting_write_before_refusals_waiting_and_each_kind_keeps_its_order() -> None:
    """E1 goes before R2, which was waiting longer; then R2, as events had the turn before."""
    async def scenario() -> list[str]:
        turns, log, gate = WriteTurns(), [], asyncio.Event()
        first = asyncio.ensure_future(write(turns, "R1", True, log, gate))
        await started(log, "R1")
        # While R1 writes: two more of refusals ask, then two of events.
        rest = [asyncio.ensure_future(write(turns, name, refusals, log))
                for name, refusals in (("R2", True), ("R3", True), ("E1", False),
                                       ("E2", False))]
        await asyncio.sleep(0)
        assert log == ["R1 starts"]  # nobody writes beside it
        gate.set()
        await asyncio.gather(first, *rest)
        return log

    log = asyncio.run(scenario())
    order = [line.split()[0] for line in log if line.endswith("starts")]
    assert order == ["R1", "E1", "R2", "E2", "R3"]
    # One at a time: every write ends before the next starts.
    assert log == [f"{n} {w}" for n in order for w in ("starts", "ends")]


def test_a_steady_flow_of_events_leaves_every_other_turn_to_refusals() -> None:
    async def scenario() -> list[str]:
        turns, log, gate = WriteTurns(), [], asyncio.Event()
        first = asyncio.ensure_future(write(turns, "E0", False, log, gate))
        await started(log, "E0")
        names = [("R1", True), ("R2", True), *((f"E{i}", False) for i in range(1, 7))]
        rest = [asyncio.ensure_future(write(turns, n, r, log)) for n, r in names]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, *rest)
        return [line.split()[0] for line in log if line.endswith("starts")]

    assert asyncio.run(scenario()) == ["E0", "R1", "E1", "R2", "E2", "E3", "E4", "E5", "E6"]


def test_a_waiter_cancelled_before_or_as_it_is_handed_the_turn_never_keeps_it() -> None:
    async def scenario() -> list[str]:
        turns, log = WriteTurns(), []
        held = turns.turn(False)
        await held.__aenter__()  # this coroutine writes
        gone = asyncio.ensure_future(write(turns, "E2", False, log))
        handed = asyncio.ensure_future(write(turns, "R1", True, log))
        last = asyncio.ensure_future(write(turns, "R2", True, log))
        await asyncio.sleep(0)  # all three wait
        gone.cancel()  # cancelled while it waits
        await asyncio.sleep(0)
        await held.__aexit__(None, None, None)  # hands the turn to R1, which has not run yet
        handed.cancel()  # cancelled as it is handed the turn
        with pytest.raises(asyncio.CancelledError):
            await gone
        with pytest.raises(asyncio.CancelledError):
            await handed
        await asyncio.wait_for(last, 5)  # the turn reached R2 all the same
        async with turns.turn(False):  # and is free again afterwards
            log.append("after")
        return log

    assert asyncio.run(scenario()) == ["R2 starts", "R2 ends", "after"]
