"""The correlator's commit point (PromptConsumer._new_offset and _add_gap, transport.py), on
faust's own bookkeeping code: a single message lost inside faust is never committed past, and
a gap in the log at the committed offset itself still lets the commit move.

The consumer is built without starting it (no broker is needed to compute a commit offset);
its attributes are the ones faust's __init__ makes, listed in faust_contract.py."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from faust.transport.drivers.aiokafka import Consumer as FaustConsumer
from faust.types import TP
from intervaltree import IntervalTree

from safehub.services.correlator.in_flight import InFlight
from safehub.services.correlator.transport import NextOffsets, PromptConsumer

TP0 = TP("p.ingress.police", 0)


def bookkeeping(cls: type, committed: int, acked: list[int]) -> Any:
    consumer = object.__new__(cls)
    consumer._acked = defaultdict(list, {TP0: sorted(acked)})
    consumer._acked_index = defaultdict(set, {TP0: set(acked)})
    consumer._gap = defaultdict(IntervalTree)
    consumer._committed_offset = defaultdict(lambda: None, {TP0: committed})
    consumer.next_offsets = NextOffsets()
    consumer.in_flight = InFlight()
    return consumer


def found_twice(consumer: Any, committed: int, delivered: int) -> None:
    """NextOffsets meets `delivered` after the committed offset, re-reads, and meets it again:
    the log has no record in between."""
    offsets = consumer.next_offsets
    offsets.reset(TP0, committed)
    assert offsets.admit(TP0, delivered) == committed
    offsets.reset(TP0, committed)
    assert offsets.admit(TP0, delivered) is None


def commits(consumer: Any) -> list[int]:
    """The offsets successive commit ticks would commit, as faust's _commit_offsets applies them."""
    out = []
    while (offset := consumer._new_offset(TP0)) is not None:
        out.append(offset)
        consumer._committed_offset[TP0] = offset
    return out


def test_faust_alone_commits_past_a_single_lost_message() -> None:
    # Why the correction exists: offset 150 never acked, everything around it acked.
    faust_own = bookkeeping(FaustConsumer, 100, [*range(100, 150), *range(151, 200)])
    assert commits(faust_own) == [150, 200]


def test_a_single_lost_message_holds_the_commit_at_it() -> None:
    consumer = bookkeeping(PromptConsumer, 100, [*range(100, 150), *range(151, 200)])
    assert commits(consumer) == [150]
    assert consumer._committed_offset[TP0] == 150


def test_a_lost_message_at_the_committed_offset_holds_the_commit() -> None:
    consumer = bookkeeping(PromptConsumer, 100, list(range(101, 200)))
    assert commits(consumer) == []


def test_acked_in_order_the_commit_moves_as_before() -> None:
    mine = bookkeeping(PromptConsumer, 100, list(range(100, 200)))
    theirs = bookkeeping(FaustConsumer, 100, list(range(100, 200)))
    assert commits(mine) == commits(theirs) == [200]


def test_a_gap_in_the_log_reported_by_faust_lets_the_commit_move() -> None:
    # Transaction markers at 100-101, found in the log itself by NextOffsets (re-read once),
    # and reported by faust's fetch loop as a gap up to the record after them.
    consumer = bookkeeping(PromptConsumer, 100, list(range(102, 200)))
    found_twice(consumer, 100, 102)
    asyncio.run(consumer._add_gap(TP0, 100, 102))  # as faust calls it: up to the record
    assert commits(consumer)[-1] == 200  # (faust's merge takes two ticks over the overlap)


def test_a_marker_right_at_the_committed_offset_lets_the_commit_move() -> None:
    # A transaction committed just before the worker's commit leaves its marker at the
    # committed offset; after a seek there faust sees offset 101 one past the offset it read
    # from and reports no gap: NextOffsets' finding lets the commit through.
    consumer = bookkeeping(PromptConsumer, 100, list(range(101, 200)))
    found_twice(consumer, 100, 101)
    assert commits(consumer) == [200]
    assert consumer.next_offsets.take_hole_at(TP0, 100) is None  # taken by the commit


def test_a_gap_the_log_does_not_have_is_not_recorded() -> None:
    consumer = bookkeeping(PromptConsumer, 100, list(range(101, 200)))
    asyncio.run(consumer._add_gap(TP0, 100, 100))  # not found in the log: messages lost
    assert commits(consumer) == []


def handed_and_acked(cls: type, committed: int | None, event: int, refusals: range) -> Any:
    """An event handed to faust at `event`, never acked (dropped from faust's queue in a
    rebalance), and `refusals` behind it acked out of order by the refusals lane."""
    consumer = bookkeeping(cls, 0, list(refusals))
    consumer._committed_offset = defaultdict(lambda: None, {TP0: committed})
    if committed is None:
        del consumer._committed_offset[TP0]  # faust pops a revoked partition's
    consumer.in_flight.handed(TP0, event)
    for offset in refusals:
        consumer.in_flight.handed(TP0, offset)
        consumer.in_flight.acked(TP0, offset)
    return consumer


def test_refusals_acked_behind_an_event_faust_dropped_in_a_rebalance_are_not_committed_past(
) -> None:
    # faust forgets a revoked partition's committed offset while its wait_empty still commits.
    faust_own = handed_and_acked(FaustConsumer, None, 100, range(101, 150))
    assert commits(faust_own) == [150]  # the event at 100 is committed past, never correlated
    consumer = handed_and_acked(PromptConsumer, None, 100, range(101, 150))
    assert commits(consumer) == []


def test_a_partition_never_committed_holds_its_commit_at_an_event_not_yet_acked() -> None:
    consumer = handed_and_acked(PromptConsumer, None, 0, range(1, 50))
    assert commits(consumer) == []
    consumer.in_flight.acked(TP0, 0)
    consumer._acked[TP0].insert(0, 0)
    consumer._acked_index[TP0].add(0)
    assert commits(consumer) == [50]


def test_refusals_acked_before_an_event_further_on_are_committed_up_to_it() -> None:
    consumer = handed_and_acked(PromptConsumer, 100, 150, range(100, 150))
    assert commits(consumer) == [150]


def test_in_flight_forgets_what_is_read_again_and_skips_what_is_acked() -> None:
    flight = InFlight()
    for offset in range(10):
        flight.handed(TP0, offset)
    for offset in (0, 1, 3):
        flight.acked(TP0, offset)
    assert flight.first(TP0) == 2
    flight.forget_from(TP0, 2)  # sought back to 2: handed again from there
    assert flight.first(TP0) is None
    flight.handed(TP0, 2)
    assert flight.first(TP0) == 2
    flight.forget()
    assert flight.first(TP0) is None
