"""Routing table cases: in area, placed out of area, unknown area; grouping and inhibition."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from safehub.errors import ConfigError
from safehub.schemas.records import AlertAck, CorrelatedAlert, Evidence, ReidentificationRef
from safehub.schemas.vocabulary import (
    AckAction,
    RouteReason,
    Sector,
    Sign,
    SignificantIncident,
    Tier,
)
from safehub.services.router import core
from safehub.services.router.core import ClusterState, Status
from safehub.services.router.table import load_routing_table, parse_routing_table

LEEDS, BRADFORD, NOWHERE = "E08000035", "E08000032", "E06000999"
TABLE = load_routing_table()
HOUR = 3_600_000
# Monday 2026-11-16 10:00 London (GMT in November).
MON_10 = int(datetime(2026, 11, 16, 10, tzinfo=UTC).timestamp() * 1000)


def alert(n: int, tier: Tier = Tier.ESCALATING, la: str = LEEDS, placing: str | None = None,
          cluster: str = "c" * 32, incident: bool = False) -> CorrelatedAlert:
    indicator = SignificantIncident.ABDUCTION if incident else Sign.MISSING_FROM_HOME_OR_CARE
    return CorrelatedAlert(
        alert_id=f"{n:032x}", rules_version="a" * 64, cluster_id=cluster, linkage_block=7,
        tier=tier, rule="three-distinct-signs", score=3.0, raised_at=MON_10 - HOUR + n,
        age_years=14, local_authority=la, placing_authority=placing,
        agencies=("police-wy",),
        evidence=(Evidence("e" * 32, "police-wy", Sector.POLICE, indicator, MON_10 - 2 * HOUR,
                           1.0),),
        reidentification=(ReidentificationRef("police-wy", "f" * 32),),
        identity_conflict=False,
    )


def test_shipped_routing_table_loads_with_a_fallback() -> None:
    assert TABLE.fallback.agency == "hub-duty-team"
    assert TABLE.routes[LEEDS].agency == "csc-leeds"
    assert "csc-leeds-duty-manager" in TABLE.receivers()


def test_in_area_routes_to_the_childs_local_authority() -> None:
    state, notes = core.receive(TABLE, ClusterState("c" * 32), alert(1), MON_10)
    (note,) = notes
    assert note.routed.receiver_agency == "csc-leeds"
    assert note.routed.reason is RouteReason.RESPONSIBLE_AUTHORITY
    assert note.routed.lead_authority == LEEDS
    assert note.routed.escalation_level == 0
    assert state.alerts[0].status is Status.NOTIFIED


def test_looked_after_child_placed_out_of_area_routes_to_the_placing_authority() -> None:
    _, (note, copy) = core.receive(TABLE, ClusterState("c" * 32), alert(1, placing=BRADFORD),
                                   MON_10)
    assert note.routed.receiver_agency == "csc-bradford"
    assert note.routed.reason is RouteReason.PLACING_AUTHORITY
    assert note.routed.lead_authority == BRADFORD
    # The host authority is informed: its own receiver, its own notification id.
    assert copy.routed.receiver_agency == "csc-leeds"
    assert copy.routed.reason is RouteReason.HOST_AUTHORITY
    assert copy.routed.lead_authority == LEEDS
    assert copy.routed.escalation_level == 0
    assert copy.routed.notification_id == core.notification_id("1".zfill(32), "csc-leeds", 0)
    assert copy.routed.alert == note.routed.alert


def test_the_host_copy_is_not_tracked_escalates_never_and_its_ack_changes_nothing() -> None:
    state, _ = core.receive(TABLE, ClusterState("c" * 32), alert(1, placing=BRADFORD), MON_10)
    assert [t.receiver for t in state.alerts] == ["csc-bradford"]
    _, notes = core.tick(TABLE, state, MON_10 + 72 * HOUR)
    assert [(n.routed.receiver_agency, n.routed.reason) for n in notes] == [
        ("csc-bradford-duty-manager", RouteReason.ESCALATION)]
    host_ack = AlertAck("a" * 32, "1".zfill(32), "csc-leeds", "staff-1", AckAction.ACKNOWLEDGED,
                        None, MON_10 + HOUR)
    assert core.informed(TABLE, state, host_ack)
    assert core.acknowledge(state, host_ack) == (state, False)
    stranger = replace(host_ack, agency_id="csc-kirklees")
    assert not core.informed(TABLE, state, stranger)


def test_the_host_is_informed_when_the_grouped_placing_alert_is_finally_sent() -> None:
    state, _ = core.receive(TABLE, ClusterState("c" * 32), alert(1, placing=BRADFORD), MON_10)
    state, notes = core.receive(TABLE, state, alert(2, placing=BRADFORD), MON_10 + HOUR)
    assert notes == ()  # grouped: waits for the repeat interval
    _, notes = core.tick(TABLE, state, MON_10 + 25 * HOUR)
    sent = [(n.routed.alert.alert_id, n.routed.receiver_agency, n.routed.reason) for n in notes
            if n.routed.escalation_level == 0]
    assert sent == [("2".zfill(32), "csc-bradford", RouteReason.PLACING_AUTHORITY),
                    ("2".zfill(32), "csc-leeds", RouteReason.HOST_AUTHORITY)]


@pytest.mark.parametrize("la, placing", [(NOWHERE, BRADFORD), (LEEDS, LEEDS), (LEEDS, None)])
def test_no_host_copy_without_a_placement_out_of_area_or_a_host_route(
        la: str, placing: str | None) -> None:
    _, notes = core.receive(TABLE, ClusterState("c" * 32), alert(1, la=la, placing=placing),
                            MON_10)
    assert [n.routed.reason for n in notes if n.routed.reason is RouteReason.HOST_AUTHORITY] == []
    assert len(notes) == 1


def test_placing_authority_equal_to_local_is_not_out_of_area() -> None:
    _, (note,) = core.receive(TABLE, ClusterState("c" * 32), alert(1, placing=LEEDS), MON_10)
    assert note.routed.reason is RouteReason.RESPONSIBLE_AUTHORITY


@pytest.mark.parametrize("la, placing", [(NOWHERE, None), (LEEDS, NOWHERE)])
def test_unknown_area_goes_to_the_fallback_never_dropped(la: str, placing: str | None) -> None:
    _, (note,) = core.receive(TABLE, ClusterState("c" * 32), alert(1, la=la, placing=placing),
                              MON_10)
    assert note.routed.receiver_agency == "hub-duty-team"
    assert note.routed.reason is RouteReason.FALLBACK
    assert note.routed.lead_authority is None


def test_redelivery_of_an_alert_changes_nothing() -> None:
    state, _ = core.receive(TABLE, ClusterState("c" * 32), alert(1), MON_10)
    again, notes = core.receive(TABLE, state, alert(1), MON_10 + 5 * HOUR)
    assert notes == () and again == state


def test_notification_id_is_derived_from_alert_receiver_and_level() -> None:
    _, (a,) = core.receive(TABLE, ClusterState("c" * 32), alert(1), MON_10)
    _, (b,) = core.receive(TABLE, ClusterState("c" * 32), alert(1), MON_10 + HOUR)
    assert a.routed.notification_id == b.routed.notification_id
    assert a.routed.notification_id == core.notification_id(f"{1:032x}", "csc-leeds", 0)
    assert len(a.routed.notification_id) == 32
    assert core.notification_id("1" * 32, "csc-leeds", 1) != a.routed.notification_id


def test_group_is_notified_once_per_repeat_interval_then_latest_picture_sent() -> None:
    state, first = core.receive(TABLE, ClusterState("c" * 32), alert(1), MON_10)
    state, second = core.receive(TABLE, state, alert(2), MON_10 + HOUR)
    state, third = core.receive(TABLE, state, alert(3), MON_10 + 2 * HOUR)
    assert len(first) == 1 and second == () and third == ()
    state, early = core.tick(TABLE, state, MON_10 + 2 * HOUR)
    assert early == ()
    wake = core.next_wakeup(TABLE, state)
    assert wake is not None and wake <= MON_10 + TABLE.repeat_interval_ms
    state, flushed = core.tick(TABLE, state, MON_10 + TABLE.repeat_interval_ms)
    sent = [n.routed for n in flushed if n.routed.escalation_level == 0]
    assert [r.alert.alert_id for r in sent] == [f"{3:032x}"]
    statuses = {t.alert.alert_id[-1]: t.status for t in state.alerts}
    assert statuses["2"] is Status.SUPERSEDED and statuses["3"] is Status.NOTIFIED


def test_a_higher_tier_is_sent_at_once_despite_the_repeat_interval() -> None:
    state, _ = core.receive(TABLE, ClusterState("c" * 32), alert(1, Tier.EMERGING), MON_10)
    state, notes = core.receive(TABLE, state, alert(2, Tier.ESCALATING), MON_10 + HOUR)
    assert [n.routed.alert.tier for n in notes] == [Tier.ESCALATING]
    assert state.find(f"{1:032x}").status is Status.SUPERSEDED  # type: ignore[union-attr]


def test_high_alert_inhibits_lower_ones_for_the_same_cluster_only() -> None:
    state, _ = core.receive(TABLE, ClusterState("c" * 32), alert(1, Tier.ESCALATING), MON_10)
    state, notes = core.receive(TABLE, state, alert(2, Tier.HIGH), MON_10 + HOUR)
    assert [n.routed.alert.tier for n in notes] == [Tier.HIGH]
    assert state.find(f"{1:032x}").status is Status.INHIBITED  # type: ignore[union-attr]
    later = MON_10 + 2 * TABLE.repeat_interval_ms
    state, notes = core.receive(TABLE, state, alert(3, Tier.EMERGING), later)
    assert notes == ()
    assert state.find(f"{3:032x}").status is Status.INHIBITED  # type: ignore[union-attr]
    # Another child's cluster is not silenced.
    _, other = core.receive(TABLE, ClusterState("d" * 32), alert(4, cluster="d" * 32), later)
    assert len(other) == 1


def test_inhibition_ends_once_the_high_alert_is_decided() -> None:
    from safehub.schemas.records import AlertAck
    from safehub.schemas.vocabulary import AckAction, Decision

    state, _ = core.receive(TABLE, ClusterState("c" * 32), alert(1, Tier.HIGH), MON_10)
    ack = AlertAck("a" * 32, f"{1:032x}", "csc-leeds", "sw-1", AckAction.DECIDED,
                   Decision.STRATEGY_MEETING, MON_10 + HOUR)
    state, ok = core.acknowledge(state, ack)
    assert ok
    later = MON_10 + 2 * TABLE.repeat_interval_ms
    _, notes = core.receive(TABLE, state, alert(2, Tier.ESCALATING), later)
    assert len(notes) == 1


def test_an_ack_delivered_twice_changes_nothing_the_second_time() -> None:
    """The hub's outbox sends at least once, so the same ack can arrive again, even after a
    later decision about the same alert."""
    from safehub.schemas.records import AlertAck
    from safehub.schemas.vocabulary import AckAction, Decision

    state, _ = core.receive(TABLE, ClusterState("c" * 32), alert(1, Tier.HIGH), MON_10)
    seen = AlertAck("a" * 32, f"{1:032x}", "csc-leeds", "sw-1", AckAction.ACKNOWLEDGED, None,
                    MON_10 + HOUR)
    decided = AlertAck("b" * 32, f"{1:032x}", "csc-leeds", "sw-1", AckAction.DECIDED,
                       Decision.STRATEGY_MEETING, MON_10 + 2 * HOUR)
    once, _ = core.acknowledge(state, seen)
    twice, ok = core.acknowledge(once, seen)
    assert ok and twice == once
    assert once.find(f"{1:032x}").status is Status.ACKNOWLEDGED  # type: ignore[union-attr]
    final, _ = core.acknowledge(once, decided)
    again, ok = core.acknowledge(final, seen)  # the earlier ack, redelivered late
    assert ok and again == final
    assert again.find(f"{1:032x}").status is Status.DECIDED  # type: ignore[union-attr]


def test_routing_table_rejects_missing_fallback_and_bad_codes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fallback"):
        parse_routing_table({"route": []})
    fb = {"agency": "a", "escalation": "b"}
    with pytest.raises(ConfigError, match="GSS"):
        parse_routing_table({"fallback": fb, "route": [{"local_authority": "X1",
                                                        "agency": "c", "escalation": "d"}]})
    with pytest.raises(ConfigError, match="differ"):
        parse_routing_table({"fallback": {"agency": "a", "escalation": "a"}})
    bad = tmp_path / "r.toml"
    bad.write_text("[fallback\n")
    with pytest.raises(ConfigError):
        load_routing_table(bad)


def test_a_cluster_is_forgotten_only_when_nothing_is_left_to_do_and_it_is_old() -> None:
    from safehub.schemas.records import AlertAck
    from safehub.schemas.vocabulary import AckAction

    year = TABLE.forget_after_ms
    assert year == 365 * 24 * HOUR  # the shipped table keeps the default
    state, _ = core.receive(TABLE, ClusterState("c" * 32), alert(1), MON_10)
    # Notified, not acknowledged: it can still escalate, however old.
    assert not core.forgettable(TABLE, state, MON_10 + 2 * year)
    # A second alert inside the repeat interval waits (PENDING): never forgotten either.
    pending, _ = core.receive(TABLE, state, alert(2), MON_10 + HOUR)
    acked, ok = core.acknowledge(pending, AlertAck("a" * 32, f"{1:032x}", "csc-leeds", "sw-1",
                                                  AckAction.ACKNOWLEDGED, None, MON_10 + HOUR))
    assert ok and not core.forgettable(TABLE, acked, MON_10 + 2 * year)
    # Acknowledged and nothing waiting: forgotten a year after its newest alert, not before.
    done, ok = core.acknowledge(state, AlertAck("a" * 32, f"{1:032x}", "csc-leeds", "sw-1",
                                                AckAction.ACKNOWLEDGED, None, MON_10 + HOUR))
    assert ok
    assert not core.forgettable(TABLE, done, MON_10 + year - 1)
    assert core.forgettable(TABLE, done, MON_10 + year)
    # Escalated and never acknowledged: nothing more the router can do, so it goes too.
    late = MON_10 + 10 * 24 * HOUR
    escalated, notes = core.tick(TABLE, state, late)
    assert [n.routed.escalation_level for n in notes] == [1]
    assert core.forgettable(TABLE, escalated, MON_10 + year)


def test_routing_table_forget_setting_must_outlast_the_repeat_interval() -> None:
    fb = {"agency": "a", "escalation": "b"}
    table = parse_routing_table({"fallback": fb, "defaults": {"forget_settled_after_days": 30}})
    assert table.forget_after_ms == 30 * 24 * HOUR
    with pytest.raises(ConfigError, match="forget_settled_after_days"):
        parse_routing_table({"fallback": fb, "defaults": {"forget_settled_after_days": 0.5}})
    with pytest.raises(ConfigError, match="numbers"):
        parse_routing_table({"fallback": fb, "defaults": {"forget_settled_after_days": "x"}})


def test_the_shipped_table_knows_every_authority_of_england_and_wales_by_name() -> None:
    codes = TABLE.authorities
    assert sum(c.startswith("E") for c in codes) == 153
    assert sum(c.startswith("W") for c in codes) == 22
    assert {c[:3] for c in codes} == {"E06", "E08", "E09", "E10", "W06"}
    assert all(name.strip() for name in codes.values())
    assert TABLE.name_of(LEEDS) == "Leeds" and TABLE.name_of("W06000015") == "Cardiff"
    # After the 2023 reorganisation: the new unitary codes, not the withdrawn county ones.
    assert "E06000065" in codes and "E10000023" not in codes  # North Yorkshire
    assert "E06000066" in codes and "E10000027" not in codes  # Somerset
    assert TABLE.name_of(NOWHERE) == "unknown area"
    # Every route is for a known authority.
    assert set(TABLE.routes) <= set(codes)


def test_an_authority_without_a_hub_of_its_own_goes_to_the_fallback() -> None:
    cardiff = "W06000015"
    assert cardiff in TABLE.authorities and cardiff not in TABLE.routes
    _, (note,) = core.receive(TABLE, ClusterState("c" * 32), alert(1, la=cardiff), MON_10)
    assert note.routed.receiver_agency == TABLE.fallback.agency
    assert note.routed.reason is RouteReason.FALLBACK


def test_routing_table_checks_its_authorities() -> None:
    fb = {"agency": "a", "escalation": "b"}
    route = {"local_authority": "W06000015", "agency": "csc-cardiff", "escalation": "m"}
    table = parse_routing_table({"fallback": fb, "route": [route],
                                 "authorities": {"W06000015": "Cardiff"}})
    assert table.routes["W06000015"].agency == "csc-cardiff"
    with pytest.raises(ConfigError, match="not in"):
        parse_routing_table({"fallback": fb, "route": [route],
                             "authorities": {"W06000001": "Isle of Anglesey"}})
    with pytest.raises(ConfigError, match="children's services"):
        parse_routing_table({"fallback": fb, "authorities": {"E07000178": "Oxford"}})
    with pytest.raises(ConfigError, match="needs a name"):
        parse_routing_table({"fallback": fb, "authorities": {"W06000015": " "}})
    with pytest.raises(ConfigError, match="children's services"):
        parse_routing_table({"fallback": fb, "route": [
            {"local_authority": "E07000178", "agency": "x", "escalation": "y"}]})
