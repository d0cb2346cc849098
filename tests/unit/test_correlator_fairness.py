"""FairShare: each ingress partition handed to faust a share at a time, in order, nothing lost."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safehub.services.correlator.fairness import FairShare


def test_a_flooded_partition_is_handed_over_a_share_at_a_time_and_a_quiet_one_at_once() -> None:
    share = FairShare(100)
    first = share.take({"flood": list(range(10_000))}, ["flood", "quiet"])
    assert first == {"flood": list(range(100))}
    assert share.holding() == {"flood"}
    # The quiet partition's event arrives while the flood is held: it goes in the next round,
    # behind one more share of the flood, not behind the other 9,900 records.
    second = share.take({"quiet": ["event"]}, ["flood", "quiet"])
    assert second == {"flood": list(range(100, 200)), "quiet": ["event"]}
    assert share.holding() == {"flood"}


def test_held_records_of_an_inactive_partition_wait_and_are_not_lost() -> None:
    share = FairShare(2)
    assert share.take({"a": [1, 2, 3]}, []) == {}
    assert share.take({}, ["a"]) == {"a": [1, 2]}
    assert share.take({}, ["a"]) == {"a": [3]}
    assert share.holding() == set()


def test_a_sought_or_revoked_partition_forgets_what_it_held() -> None:
    share = FairShare(1)
    share.take({"a": [1, 2], "b": [1, 2], "c": [1, 2]}, [])
    share.drop("a")
    share.keep_only(["a", "b"])
    assert share.holding() == {"b"}
    share.clear()
    assert share.holding() == set()


def test_a_share_is_at_least_one_record() -> None:
    with pytest.raises(ValueError):
        FairShare(0)


@given(st.integers(1, 7),
       st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 12)), max_size=30))
def test_every_record_is_handed_over_once_in_order_and_at_most_a_share_per_round(
        size: int, arrivals: list[tuple[str, int]]) -> None:
    share = FairShare(size)
    sent: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    got: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    for tp, n in arrivals:
        # As the consumer does: a partition holding records is not fetched.
        fetched = {} if tp in share.holding() else {tp: list(range(len(sent[tp]),
                                                                   len(sent[tp]) + n))}
        sent[tp] += fetched.get(tp, [])
        for p, records in share.take(fetched, "abc").items():
            assert 0 < len(records) <= size
            got[p] += records
    while share.holding():
        for p, records in share.take({}, "abc").items():
            got[p] += records
    assert got == sent
