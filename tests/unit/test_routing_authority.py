"""Golden scenarios of placed children (tests/golden/authority/) through the correlation core
and the routing core: the alerts, the authorities they name, and where they are sent."""

from __future__ import annotations

import pytest

from safehub.schemas.records import CorrelatedAlert
from safehub.services.correlation.core import initial_state, step
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from safehub.services.router import core as router
from safehub.services.router.core import ClusterState
from safehub.services.router.table import load_routing_table
from tests.golden.authority import (
    AuthorityScenario,
    ExpectedAuthority,
    ExpectedRoute,
    authority_scenarios,
)
from tests.golden.scenarios import describe

SCENARIOS = authority_scenarios()


def run_core(s: AuthorityScenario) -> list[tuple[int, CorrelatedAlert]]:
    rules = load_rules(DEFAULT_RULES_PATH)
    state = initial_state()
    emitted = []
    for row in s.scenario.rows:
        state, alerts = step(rules, state, row.event)
        emitted.extend((row.number, a) for a in alerts)
    return emitted


def authorities_of(emitted: list[tuple[int, CorrelatedAlert]]) -> list[ExpectedAuthority]:
    return [ExpectedAuthority(after, a.local_authority, a.placing_authority, a.authority_conflict)
            for after, a in emitted]


def test_there_are_authority_scenarios() -> None:
    assert {s.name for s in SCENARIOS} >= {"placed-child-routed-to-placing-authority",
                                           "placing-authority-disputed"}


@pytest.mark.parametrize("s", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_alerts_and_their_authorities_through_the_core(s: AuthorityScenario) -> None:
    emitted = run_core(s)
    assert describe(s.scenario, emitted) == list(s.scenario.expected)
    assert authorities_of(emitted) == list(s.authorities)


@pytest.mark.parametrize("s", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_routes_through_the_routing_core(s: AuthorityScenario) -> None:
    table = load_routing_table()
    state: dict[str, ClusterState] = {}
    got = []
    for after, alert in run_core(s):
        cluster = state.get(alert.cluster_id, ClusterState(alert.cluster_id))
        # The router receives each alert an hour after the event that raised it.
        cluster, notes = router.receive(table, cluster, alert, alert.raised_at + 3_600_000)
        state[alert.cluster_id] = cluster
        got.extend(ExpectedRoute(after, n.routed.receiver_agency, n.routed.reason.value,
                                 n.routed.lead_authority) for n in notes)
    assert got == list(s.routes)
