"""FairShare: each ingress partition handed to faust a share at a time, in order, nothing lost;
partitions holding a possible event first."""

from __future__ import annotations

import pytest
from aiokafka.structs import ConsumerRecord
from hypothesis import given
from hypothesis import strategies as st

from safehub.samples.records import malformed_ingress
from safehub.schemas.codec import encode
from safehub.schemas.vocabulary import Sector
from safehub.services.correlation.linking import block_key
from safehub.services.correlator.fairness import LAGGARD_SHARE, FairShare
from safehub.services.correlator.processing import may_be_event
from tests.fixtures.correlator import child_sign


def test_a_flooded_partition_is_handed_over_a_share_at_a_time_and_a_quiet_one_at_once() -> None:
    share = FairShare(100, size=lambda r: 1)
    first = share.take({"flood": list(range(10_000))}, ["flood", "quiet"])
    assert first == {"flood": list(range(100))}
    assert share.holding() == {"flood"}
    # The quiet partition's event arrives while the flood is held: it goes in the next round,
    # behind one more share of the flood, not behind the other 9,900 records.
    second = share.take({"quiet": ["event"]}, ["flood", "quiet"])
    assert second == {"flood": list(range(100, 200)), "quiet": ["event"]}
    assert share.holding() == {"flood"}


def test_held_records_of_an_inactive_partition_wait_and_are_not_lost() -> None:
    share = FairShare(2, size=lambda r: 1)
    assert share.take({"a": [1, 2, 3]}, []) == {}
    assert share.take({}, ["a"]) == {"a": [1, 2]}
    assert share.take({}, ["a"]) == {"a": [3]}
    assert share.holding() == set()


def test_a_sought_or_revoked_partition_forgets_what_it_held() -> None:
    share = FairShare(1, size=lambda r: 1)
    share.take({"a": [1, 2], "b": [1, 2], "c": [1, 2]}, [])
    share.drop("a")
    share.keep_only(["a", "b"])
    assert share.holding() == {"b"}
    share.clear()
    assert share.holding() == set()


def test_a_share_is_at_least_one_record() -> None:
    with pytest.raises(ValueError):
        FairShare(0)


@given(st.integers(1, 7), st.integers(1, 30), st.integers(1, 12),
       st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 12)), max_size=30))
def test_every_record_is_handed_over_once_in_order_and_at_most_a_share_per_round(
        each: int, hold_max: int, every: int, arrivals: list[tuple[str, int]]) -> None:
    # Every `every`-th record may be an event: partitions holding one go first.
    share = FairShare(each, urgent=lambda r: r % every == 0, size=lambda r: 1,
                      hold_max=hold_max, hold_total=40)
    sent: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    got: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    for tp, n in arrivals:
        # As the consumer does: a partition holding its most is not fetched.
        fetched = {} if tp in share.full() else {tp: list(range(len(sent[tp]),
                                                                len(sent[tp]) + n))}
        sent[tp] += fetched.get(tp, [])
        for p, records in share.take(fetched, "abc").items():
            assert 0 < len(records) <= each
            got[p] += records
    while share.holding():
        for p, records in share.take({}, "abc").items():
            got[p] += records
    assert got == sent


def event_or_garbage(record: str) -> bool:
    return record.startswith("event")


def test_a_partition_holding_an_event_is_handed_a_share_while_the_others_get_a_laggards() -> None:
    share = FairShare(100, urgent=event_or_garbage, size=len)
    garbage = [f"g{i}" for i in range(1000)]
    own = [*garbage[:250], "event", *garbage[250:]]  # the flooder's own event, behind 250
    first = share.take({"own": own, "other": garbage, "third": garbage}, ["own", "other",
                                                                          "third"])
    assert first == {"own": own[:100], "other": garbage[:LAGGARD_SHARE],
                     "third": garbage[:LAGGARD_SHARE]}
    share.take({}, ["own", "other", "third"])
    third = share.take({}, ["own", "other", "third"])
    assert third["own"][50] == "event"
    # Handed over: every partition is served alike again.
    assert share.take({}, ["own", "other", "third"]) == {
        "own": own[300:400], "other": garbage[3:103], "third": garbage[3:103]}


def test_an_inactive_partition_holding_an_event_does_not_slow_the_active_ones() -> None:
    share = FairShare(10, urgent=event_or_garbage, size=len)
    assert share.take({"paused": ["event"], "a": ["g"] * 50}, ["a"]) == {"a": ["g"] * 10}


def test_a_partition_is_fetched_while_it_holds_less_than_its_most_and_all_hold_less_than_theirs(
) -> None:
    share = FairShare(1, size=lambda r: 1, hold_max=3, hold_total=6)
    share.take({"a": [1, 2], "b": [1, 2]}, [])
    assert share.full() == set()  # both may be fetched again: an event behind is seen
    share.take({"a": [3]}, [])
    assert share.full() == {"a"}
    share.take({"c": [1]}, [])
    assert share.full() == {"a", "b", "c"}  # six held in all
    share.take({}, ["a"])
    assert share.full() == set()


def test_an_event_may_be_one_and_no_record_of_a_malformed_flood_may() -> None:
    event = child_sign("fairness test child", "police-x", Sector.POLICE, 1, 4095)
    assert may_be_event(block_key(4095), encode(event))
    for n in range(300):
        assert not may_be_event(*malformed_ingress(n))
    assert not may_be_event(b"\x00\x00\x10\x00", encode(event))  # block 4096: none makes it
    assert not may_be_event(None, encode(event))
    assert not may_be_event(block_key(1), encode(event)[:9])


def test_the_bounds_are_in_bytes_so_large_records_are_held_few_at_a_time() -> None:
    share = FairShare(100, hold_max=8 * 1024 * 1024)
    large = [ConsumerRecord("t", 0, i, 0, 0, b"k", b"x" * 1_000_000, None, 1, 1_000_000, [])
             for i in range(9)]
    share.take({"big": large}, [])
    assert share.full() == {"big"}  # nine of 1 MB: fetched no more
    share.take({}, ["big"])
    assert share.full() == set()


# With the refusals lane (refusals.py): records that cannot be events are handed over beside the
# share while the lane has room; `lane_size` is what the lane counts for one.
def lane_share(share: int) -> FairShare:
    return FairShare(share, urgent=event_or_garbage, size=len, lane_size=lambda r: 1)


def test_with_the_lane_a_flood_goes_beside_the_share_and_an_event_behind_it_at_once() -> None:
    share = lane_share(2)
    garbage = [f"g{i}" for i in range(1000)]
    own = [*garbage[:700], "event", "event2", "event3", *garbage[700:]]
    first = share.take({"own": own, "other": garbage}, ["own", "other"], (1000, 2000))
    # Its share of possible events (2), everything that cannot be one ahead of them, and the
    # refusals after them while the lane has room: the partition holding an event goes first.
    assert first["own"] == own[:702]
    assert first["other"] == garbage[:300]  # the room the own partition left: 1000 - 700
    second = share.take({}, ["own", "other"], (1000, 2000))
    assert second == {"own": own[702:], "other": garbage[300:]}
    assert share.holding() == set()


def test_a_full_lane_takes_only_what_stands_ahead_of_an_event_and_then_nothing() -> None:
    share = lane_share(1)
    garbage = [f"g{i}" for i in range(100)]
    own = [*garbage[:30], "event", *garbage[30:]]
    # No room, but room for 40 ahead of an event: the 30 ahead go, the event, no more.
    assert share.take({"own": own, "other": garbage}, ["own", "other"], (0, 40)) == {
        "own": own[:31], "other": []}
    # Less room ahead than stands ahead: as much as fits, the event waits.
    share = lane_share(1)
    assert share.take({"own": own}, ["own"], (0, 10)) == {"own": own[:10]}
    assert share.take({}, ["own"], (0, 0)) == {"own": []}
    assert share.holding() == {"own"}


@given(st.integers(1, 5), st.integers(0, 12), st.integers(0, 30),
       st.lists(st.tuples(st.sampled_from("abc"), st.lists(st.booleans(), max_size=12)),
                max_size=25))
def test_with_the_lane_every_record_is_handed_over_once_in_order_within_the_bounds(
        each: int, room: int, ahead: int, arrivals: list[tuple[str, list[bool]]]) -> None:
    share = lane_share(each)
    sent: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    got: dict[str, list[str]] = {"a": [], "b": [], "c": []}

    def take(fetched: dict[str, list[str]]) -> None:
        used = 0
        for p, records in share.take(fetched, "abc", (room, room + ahead)).items():
            assert sum(event_or_garbage(r) for r in records) <= each
            used += sum(not event_or_garbage(r) for r in records)
            got[p] += records
        assert used <= room + ahead

    for tp, kinds in arrivals:
        start = len(sent[tp])
        fetched = [f"event{start + i}" if event else f"g{start + i}"
                   for i, event in enumerate(kinds)]
        sent[tp] += fetched
        take({tp: fetched})
    for _ in range(200):
        if not share.holding():
            break
        room = max(room, 1)  # the lane drains
        take({})
    assert got == sent
