"""The refusals lane: what it holds, its room, and what it forgets; that a record it takes is one
the contract refuses whatever else holds; and the suspicion of a flood made to pass the cheap
look: when a partition is suspected, and that each of its records is checked once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safehub import topics
from safehub.errors import ValidationError
from safehub.samples.records import malformed_ingress, malformed_past_the_look
from safehub.schemas.codec import encode
from safehub.schemas.vocabulary import Sector
from safehub.services.correlation.linking import block_key
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from safehub.services.correlator.processing import (
    BatchProcessor,
    Incoming,
    may_be_event,
    partition_for,
)
from safehub.services.correlator.refusals import MESSAGE_COST, Refusals, message_size
from safehub.services.correlator.suspicion import (
    SAMPLE,
    SUSPECT_AFTER,
    SUSPECT_FOR_S,
    Suspicion,
)
from tests.fixtures.correlator import child_sign


@dataclass(frozen=True)
class Message:
    tp: str
    offset: int
    key: bytes | None = None
    value: bytes | None = b"x" * 10


def test_the_lane_gives_its_records_oldest_first_and_frees_their_room() -> None:
    lane = Refusals(most=10 * (MESSAGE_COST + 10))
    for n in range(4):
        lane.add(Message("a", n))
    assert lane.room() == (6 * (MESSAGE_COST + 10), 36 * (MESSAGE_COST + 10))
    assert [m.offset for m in lane.take(3)] == [0, 1, 2]
    assert [m.offset for m in lane.take(3)] == [3]
    assert lane.take(3) == []
    assert lane.room() == (10 * (MESSAGE_COST + 10), 40 * (MESSAGE_COST + 10))


def test_a_full_lane_has_no_room_and_large_records_count_their_bytes() -> None:
    lane = Refusals(most=2 * MESSAGE_COST)
    big = Message("a", 0, b"k", b"v" * 9 * MESSAGE_COST)
    lane.add(big)
    assert message_size(big) == MESSAGE_COST + 1 + 9 * MESSAGE_COST
    assert lane.room() == (0, 0)


def test_records_of_a_sought_or_revoked_partition_are_dropped_and_returned() -> None:
    lane = Refusals()
    for tp, n in [("a", 0), ("b", 0), ("a", 1), ("c", 0)]:
        lane.add(Message(tp, n))
    assert [(m.tp, m.offset) for m in lane.drop({"a"})] == [("a", 0), ("a", 1)]
    assert [(m.tp, m.offset) for m in lane.keep_only({"b"})] == [("c", 0)]
    assert [(m.tp, m.offset) for m in lane.take(10)] == [("b", 0)]
    assert lane.room()[0] == Refusals().room()[0]


def test_waiting_for_the_lane_returns_once_it_holds_a_record() -> None:
    async def scenario() -> list[int]:
        lane = Refusals()
        waiter = asyncio.ensure_future(lane.wait())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        lane.add(Message("a", 7))
        await asyncio.wait_for(waiter, 1)
        return [m.offset for m in lane.take(1)]

    assert asyncio.run(scenario()) == [7]


EVENT = child_sign("refusals test child", "police-r", Sector.POLICE, 1, 300)
PREFIX = "safehub."
TOPIC = topics.ingress(PREFIX, "police-r")
PROCESSOR = BatchProcessor(load_rules(DEFAULT_RULES_PATH), PREFIX, 6)


def _values() -> st.SearchStrategy[bytes | None]:
    good = encode(EVENT)
    return st.one_of(
        st.none(), st.binary(max_size=64), st.just(good),
        st.integers(0, len(good) - 1).map(lambda n: good[:n]),
        st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)).map(
            lambda c: good[:c[0]] + bytes([c[1]]) + good[c[0] + 1:]),
        st.sampled_from([malformed_ingress(n)[1] for n in range(6)]))


def _keys() -> st.SearchStrategy[bytes | None]:
    return st.one_of(st.none(), st.binary(max_size=6), st.just(block_key(300)),
                     st.integers(0, 2**32 - 1).map(lambda n: n.to_bytes(4, "big")))


@given(_keys(), _values())
def test_a_record_that_cannot_be_an_event_is_refused_by_the_contract(
        key: bytes | None, value: bytes | None) -> None:
    # The lane's premise: such a record is refused whatever the state, so its refusal may be
    # journalled out of its partition's order.
    if may_be_event(key, value):
        return
    with pytest.raises(ValidationError):
        PROCESSOR.admit(Incoming(TOPIC, 0, 0, key, value), EVENT.reported_at + 60_000)


def test_the_contract_admits_the_event_the_property_above_mutates() -> None:
    message = Incoming(TOPIC, partition_for(block_key(300), 6), 0, block_key(300), encode(EVENT))
    assert may_be_event(message.key, message.value)
    assert PROCESSOR.admit(message, EVENT.reported_at + 60_000) == EVENT


def test_a_flood_made_to_pass_the_cheap_look_is_refused_by_the_rules_that_ignore_the_time(
) -> None:
    for n in range(300):
        key, value = malformed_past_the_look(n, "police-r")
        message = Incoming(TOPIC, partition_for(key, 6), n, key, value)
        assert may_be_event(key, value)
        assert PROCESSOR.refused_at_any_time(message)
    assert not PROCESSOR.refused_at_any_time(
        Incoming(TOPIC, partition_for(block_key(300), 6), 0, block_key(300), encode(EVENT)))


def test_only_a_time_in_the_future_is_left_to_the_time_of_correlation() -> None:
    # An event from a clock running ahead is refused now and may be admitted later: it must not
    # be taken for a refusal at any time, and goes through faust in its partition's order.
    ahead = replace(EVENT, occurred_at=EVENT.reported_at + 10**9, reported_at=EVENT.reported_at
                    + 10**9)
    message = Incoming(TOPIC, partition_for(block_key(300), 6), 0, block_key(300), encode(ahead))
    with pytest.raises(ValidationError, match="future"):
        PROCESSOR.admit(message, EVENT.reported_at)
    assert not PROCESSOR.refused_at_any_time(message)


def test_a_partition_is_suspected_after_a_batch_refusing_many_that_passed_the_look() -> None:
    now = [0.0]
    suspicion = Suspicion(None, clock=lambda: now[0])
    suspicion.refused(("t", 0), SUSPECT_AFTER - 1)
    assert not suspicion.suspected(("t", 0))
    suspicion.refused(("t", 0), SUSPECT_AFTER)
    assert suspicion.suspected(("t", 0)) and not suspicion.suspected(("t", 1))
    now[0] = SUSPECT_FOR_S - 1
    suspicion.refused(("t", 0), SUSPECT_AFTER)  # the flood goes on: renewed
    now[0] = SUSPECT_FOR_S + 1
    assert suspicion.suspected(("t", 0))
    now[0] = 2 * SUSPECT_FOR_S
    assert not suspicion.suspected(("t", 0))


def test_a_partition_sought_forward_keeps_the_records_before_the_offset() -> None:
    # NextOffsets re-reads from the first offset it missed: the lane's records before it are
    # not read again, so they stay to be refused.
    lane = Refusals()
    for n in range(5):
        lane.add(Message("a", n))
    assert [m.offset for m in lane.drop({"a"}, 3)] == [3, 4]
    assert [m.offset for m in lane.take(10)] == [0, 1, 2]


def test_a_fetch_mostly_refused_by_every_rule_makes_its_partition_suspected_at_once() -> None:
    # Before the fetch reaches faust's queue: a batch's verdict comes only after faust has
    # queued a batch or more of the flood ahead of the events behind it.
    suspicion = Suspicion(None)
    assert not suspicion.sampled(("t", 0), SAMPLE - 1, SAMPLE - 1)  # too few to tell
    assert not suspicion.sampled(("t", 0), SAMPLE, SAMPLE * 3 // 4 - 1)
    assert suspicion.sampled(("t", 0), SAMPLE, SAMPLE * 3 // 4)
    assert suspicion.suspected(("t", 0))
    assert not suspicion.sampled(("t", 0), SAMPLE, SAMPLE)  # already suspected: renewed, not new


@dataclass(frozen=True)
class Fetched:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def _counting() -> tuple[Suspicion, list[int]]:
    """A suspicion asking the real processor, and the offsets it asked about."""
    asked: list[int] = []

    def check(message: Incoming) -> bool:
        asked.append(message.offset)
        return PROCESSOR.refused_at_any_time(message)

    return Suspicion(check), asked


P = partition_for(block_key(300), 6)  # where the valid event is on its own partition


def _flood(first: int, n: int) -> list[Fetched]:
    return [Fetched(TOPIC, P, first + i, *malformed_past_the_look(first + i, "police-r"))
            for i in range(n)]


def test_a_fetch_of_a_flood_is_sampled_then_each_record_checked_once_on_its_way() -> None:
    suspicion, asked = _counting()
    good = Fetched(TOPIC, P, 99, block_key(300), encode(EVENT))
    assert suspicion.may_be_event(good) and not suspicion.to_lane(good)  # not suspected: free
    assert asked == []
    assert suspicion.sample((TOPIC, P), _flood(0, 40))
    assert len(asked) == SAMPLE and not suspicion.sample((TOPIC, P), _flood(40, 40))
    asked.clear()
    # Suspected: held (the fair share's look), then read (faust's), checked once in all.
    flood = _flood(100, 5)
    assert not any(map(suspicion.may_be_event, flood))
    assert all(map(suspicion.to_lane, flood))
    assert asked == [100, 101, 102, 103, 104]
    # The partition's valid event pays the check, and still goes to faust.
    good = replace(good, offset=105)
    assert suspicion.may_be_event(good) and not suspicion.to_lane(good)
    assert asked[-1] == 105 and len(asked) == 6
    # A record held before its partition was suspected is judged when faust reads it.
    assert suspicion.to_lane(_flood(200, 1)[0]) and asked[-1] == 200
    # A record that cannot be an event goes to the lane without being asked about.
    assert suspicion.to_lane(Fetched(TOPIC, P, 300, None, b"junk")) and asked[-1] == 200


def test_a_partition_sought_again_forgets_its_verdicts_and_only_its() -> None:
    suspicion, asked = _counting()
    for partition in (P, P + 1):
        assert suspicion.sample((TOPIC, partition), [replace(f, partition=partition)
                                                     for f in _flood(0, SAMPLE)])
    held = [replace(f, partition=p) for p in (P, P + 1) for f in _flood(500, 2)]
    assert not any(map(suspicion.may_be_event, held))
    asked.clear()
    suspicion.forget({(TOPIC, P)})
    assert all(map(suspicion.to_lane, held))
    assert asked == [500, 501]  # partition 0's judged again, partition 1's kept


def test_without_a_processor_nothing_is_suspected_by_sampling() -> None:
    assert not Suspicion(None).sample((TOPIC, P), _flood(0, 40))
