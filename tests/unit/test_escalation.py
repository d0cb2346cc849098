"""Deadlines in working time, escalation with an injected clock, and acks that stop it."""

from __future__ import annotations

from datetime import UTC, datetime

from safehub.schemas.records import AlertAck, CorrelatedAlert, Evidence, ReidentificationRef
from safehub.schemas.vocabulary import AckAction, Decision, RouteReason, Sector, Sign, Tier
from safehub.schemas.vocabulary import SignificantIncident as SI
from safehub.services.router import core
from safehub.services.router.core import ClusterState, Status
from safehub.services.router.deadline import add_working_time
from safehub.services.router.table import load_routing_table

TABLE = load_routing_table()
HOURS = TABLE.routes["E08000035"].hours
HOUR = 3_600_000


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def alert(n: int, tier: Tier = Tier.ESCALATING, urgent: bool = False) -> CorrelatedAlert:
    indicator = SI.FOUND_IN_CAR_WITH_UNKNOWN_ADULTS if urgent else Sign.SELF_HARM
    return CorrelatedAlert(
        alert_id=f"{n:032x}", rules_version="a" * 64, cluster_id="c" * 32, linkage_block=1,
        tier=tier, rule="r", score=1.0, raised_at=ms(2026, 11, 16), age_years=13,
        local_authority="E08000035", placing_authority=None, agencies=("school-leeds",),
        evidence=(Evidence("e" * 32, "school-leeds", Sector.EDUCATION, indicator,
                           ms(2026, 11, 15), 1.0),),
        reidentification=(ReidentificationRef("school-leeds", "f" * 32),), identity_conflict=False)


def ack(n: int, agency: str, action: AckAction = AckAction.ACKNOWLEDGED) -> AlertAck:
    decision = Decision.NO_FURTHER_ACTION if action is AckAction.DECIDED else None
    return AlertAck("b" * 32, f"{n:032x}", agency, "sw-7", action, decision, 0)


def test_one_working_day_from_monday_morning_is_tuesday_morning() -> None:
    # Monday 16 Nov 2026 10:00 GMT + 8 working hours (09:00-17:00) -> Tuesday 10:00.
    assert add_working_time(ms(2026, 11, 16, 10), 8 * HOUR, HOURS) == ms(2026, 11, 17, 10)


def test_friday_afternoon_runs_over_the_weekend() -> None:
    assert add_working_time(ms(2026, 11, 20, 15), 8 * HOUR, HOURS) == ms(2026, 11, 23, 15)


def test_saturday_night_counts_from_monday_opening() -> None:
    assert add_working_time(ms(2026, 11, 21, 23), 8 * HOUR, HOURS) == ms(2026, 11, 23, 17)


def test_working_hours_follow_british_summer_time() -> None:
    # 1 July 2026: 09:00 BST is 08:00 UTC.
    assert add_working_time(ms(2026, 7, 1, 5), HOUR, HOURS) == ms(2026, 7, 1, 9)


def test_ordinary_alert_escalates_after_one_working_day() -> None:
    sent = ms(2026, 11, 16, 10)
    state, (first,) = core.receive(TABLE, ClusterState("c" * 32), alert(1), sent)
    assert first.routed.ack_deadline == ms(2026, 11, 17, 10)
    state, none = core.tick(TABLE, state, ms(2026, 11, 17, 9, 59))
    assert none == ()
    assert core.next_wakeup(TABLE, state) == ms(2026, 11, 17, 10)
    state, (esc,) = core.tick(TABLE, state, ms(2026, 11, 17, 10))
    assert esc.action.value == "ALERT_ESCALATED"
    assert esc.routed.receiver_agency == "csc-leeds-duty-manager"
    assert esc.routed.reason is RouteReason.ESCALATION
    assert esc.routed.escalation_level == 1
    assert esc.routed.notification_id == core.notification_id(
        f"{1:032x}", "csc-leeds-duty-manager", 1)
    # Escalated once only, however long it stays unacknowledged.
    state, later = core.tick(TABLE, state, ms(2026, 12, 30))
    assert later == ()


def test_significant_incident_escalates_within_hours_even_at_night() -> None:
    sent = ms(2026, 11, 21, 22)  # Saturday night
    state, (first,) = core.receive(TABLE, ClusterState("c" * 32), alert(1, Tier.HIGH, True),
                                   sent)
    assert first.routed.ack_deadline == sent + TABLE.urgent_ack_ms
    _, (esc,) = core.tick(TABLE, state, sent + TABLE.urgent_ack_ms)
    assert esc.routed.escalation_level == 1


def test_an_ack_stops_escalation() -> None:
    sent = ms(2026, 11, 16, 10)
    state, _ = core.receive(TABLE, ClusterState("c" * 32), alert(1), sent)
    state, ok = core.acknowledge(state, ack(1, "csc-leeds"))
    assert ok and state.alerts[0].status is Status.ACKNOWLEDGED
    state, notes = core.tick(TABLE, state, ms(2026, 11, 30))
    assert notes == ()
    assert core.next_wakeup(TABLE, state) is None


def test_an_ack_from_an_agency_never_sent_the_alert_is_refused() -> None:
    state, _ = core.receive(TABLE, ClusterState("c" * 32), alert(1), ms(2026, 11, 16, 10))
    state, ok = core.acknowledge(state, ack(1, "csc-bradford"))
    assert not ok
    # Nor may the escalation receiver act before it has been sent the alert.
    state, ok = core.acknowledge(state, ack(1, "csc-leeds-duty-manager"))
    assert not ok
    _, notes = core.tick(TABLE, state, ms(2026, 11, 17, 10))
    assert len(notes) == 1


def test_escalation_receiver_may_decide_after_escalation() -> None:
    state, _ = core.receive(TABLE, ClusterState("c" * 32), alert(1), ms(2026, 11, 16, 10))
    state, _ = core.tick(TABLE, state, ms(2026, 11, 17, 10))
    state, ok = core.acknowledge(state, ack(1, "csc-leeds-duty-manager", AckAction.DECIDED))
    assert ok and state.alerts[0].status is Status.DECIDED
    # A later plain acknowledgement does not undo a decision.
    state, _ = core.acknowledge(state, ack(1, "csc-leeds"))
    assert state.alerts[0].status is Status.DECIDED


def test_inhibited_alert_does_not_escalate() -> None:
    state, _ = core.receive(TABLE, ClusterState("c" * 32), alert(1), ms(2026, 11, 16, 10))
    state, _ = core.receive(TABLE, state, alert(2, Tier.HIGH), ms(2026, 11, 16, 11))
    state, _ = core.acknowledge(state, ack(2, "csc-leeds"))
    _, notes = core.tick(TABLE, state, ms(2026, 11, 30))
    assert notes == ()
