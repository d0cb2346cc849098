"""membership.py: until when the group must still count a worker as a member, from the send
times of its heartbeats and joins (session timeout 10 s, rebalance timeout 60 s, margin 1 s)."""

from __future__ import annotations

from safehub.services.correlator.membership import Membership


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def joined_at_zero() -> tuple[Membership, Clock]:
    clock = Clock()
    m = Membership(clock)
    m.joined(0.0, session_s=10.0, rebalance_s=60.0)
    return m, clock


def test_not_a_member_before_the_first_join() -> None:
    assert Membership(Clock()).lost() == "not a member of the group yet"


def test_a_join_holds_for_the_session_timeout_less_the_margin() -> None:
    m, clock = joined_at_zero()
    clock.now = 8.9
    assert m.lost() is None
    clock.now = 9.0
    assert "no heartbeat answered for 9.0 s" in (m.lost() or "")


def test_only_answered_heartbeats_count_from_their_send_time() -> None:
    m, clock = joined_at_zero()
    m.heartbeat(5.0, ok=False, rebalancing=False)  # sent, never answered
    clock.now = 9.5
    assert m.lost() is not None
    m.heartbeat(4.0, ok=True, rebalancing=False)  # sent at 4 s, answered late
    assert m.lost() is None
    clock.now = 13.0
    assert m.lost() is not None


def test_a_rebalance_is_bounded_by_the_rebalance_timeout_however_alive_the_session() -> None:
    m, clock = joined_at_zero()
    m.heartbeat(2.0, ok=True, rebalancing=False)  # the group was stable then
    for t in range(4, 62, 2):  # every heartbeat after says a rebalance is under way
        m.heartbeat(float(t), ok=True, rebalancing=True)
        clock.now = t + 0.5
        if clock.now < 2.0 + 60.0 - 1.0:
            assert m.lost() is None, t
    clock.now = 61.0
    assert "rebalance under way" in (m.lost() or "")
    m.joined(61.0, session_s=10.0, rebalance_s=60.0)  # joined the new generation
    assert m.lost() is None


def test_a_member_the_coordinator_forgot_is_lost_until_it_joins_again() -> None:
    m, clock = joined_at_zero()
    m.left("the group coordinator no longer knows this member")
    clock.now = 1.0
    assert m.lost() == "the group coordinator no longer knows this member"
    m.heartbeat(1.0, ok=True, rebalancing=False)  # an answer does not make it a member
    assert m.lost() is not None
    m.joined(1.0, session_s=10.0, rebalance_s=60.0)
    assert m.lost() is None


def test_a_new_generation_is_not_the_one_a_transaction_began_in() -> None:
    m, clock = joined_at_zero()
    began_in = m.joins
    m.left("the group coordinator no longer knows this member")
    m.joined(5.0, session_s=10.0, rebalance_s=60.0)  # back, but the partitions may have moved
    clock.now = 6.0
    assert m.lost() is None
    assert "joined the group again" in (m.lost(began_in) or "")
    assert m.lost(m.joins) is None
