"""Placed children through the running pipeline (issue 20): the golden scenarios of
tests/golden/authority/ published by each agency as itself, correlated by `safehub correlator`,
routed by `safehub router` (separate processes, real secure broker, the shipped routing table).
The alert reaches the placing authority's hub, the host's hub gets it for information, and both
copies carry the alert the pure core raises, its authority conflict included."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from safehub.schemas.records import CorrelatedAlert, RoutedAlert
from safehub.services.correlation.core import initial_state, step
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from safehub.services.router.table import load_routing_table
from safehub.topics import alerts
from tests.conftest import Namespace
from tests.fixtures.cli import SAFEHUB
from tests.fixtures.correlator import (
    PARTITIONS,
    Agencies,
    Correlator,
    accepted_count,
    ingress_message,
    wait_until,
)
from tests.fixtures.topics import TopicReader
from tests.golden.authority import authority_scenarios

pytestmark = pytest.mark.integration


@pytest.fixture
def correlator_of(tmp_path: Path) -> Iterator[Callable[[Namespace], Correlator]]:
    made: list[Correlator] = []

    def make(ns: Namespace) -> Correlator:
        made.append(Correlator(ns, tmp_path))
        return made[-1]

    yield make
    for c in made:
        if c.alive():
            c.kill()


@pytest.mark.timeout(300)
def test_placed_children_are_routed_to_the_placing_authority_and_the_host_informed(
    secure_namespace: Callable[..., Namespace], correlator_of: Callable[[Namespace], Correlator],
    tmp_path: Path,
) -> None:
    rules = load_rules(DEFAULT_RULES_PATH)
    scenarios = authority_scenarios(first_block=3600, spread=3)
    table = load_routing_table()
    ns = secure_namespace(
        agencies={r.event.agency_id: r.event.sector.value for s in scenarios
                  for r in s.scenario.rows},
        hubs=sorted(table.receivers()), partitions=PARTITIONS)
    prefix = ns.prefix

    expected_alerts: dict[str, CorrelatedAlert] = {}
    expected_routes: set[tuple[str, str, str, str | None]] = set()
    for s in scenarios:
        state = initial_state()
        raised: dict[int, list[CorrelatedAlert]] = {}
        for row in s.scenario.rows:
            state, out = step(rules, state, row.event)
            raised.setdefault(row.number, []).extend(out)
        for route in s.routes:
            for a in raised[route.after]:
                expected_alerts[a.alert_id] = a
                expected_routes.add((a.alert_id, route.receiver, route.reason,
                                     route.lead_authority))
    assert expected_routes

    correlator = correlator_of(ns)
    correlator.start()
    router_env = {**{k: v for k, v in os.environ.items() if not k.startswith("SAFEHUB_")},
                  **ns.env("router"),
                  "SAFEHUB_ROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'router.db'}"}
    router = subprocess.Popen([*SAFEHUB, "router"], env=router_env, stderr=subprocess.PIPE)
    agencies = Agencies(ns)
    audit = TopicReader(ns.kafka, f"{prefix}audit")
    receivers = sorted({r[1] for r in expected_routes})
    delivered = TopicReader(ns.kafka, *(alerts(prefix, hub) for hub in receivers))
    try:
        sent = 0
        for r in range(max(len(s.scenario.rows) for s in scenarios)):
            batch = [ingress_message(prefix, s.scenario.rows[r].event) for s in scenarios
                     if r < len(s.scenario.rows)]
            agencies.send(batch)
            sent += len(batch)
            wait_until(f"round {r} journalled",
                       lambda n=sent: accepted_count(audit) >= n, 90, correlator)

        def routed() -> list[RoutedAlert]:
            assert router.poll() is None, "the router exited"
            return delivered.decoded(RoutedAlert)

        wait_until("routed alerts", lambda: len(routed()) >= len(expected_routes), 120,
                   correlator)
        time.sleep(1)  # anything more (an unexpected copy) would arrive by now
        got = routed()
    finally:
        agencies.close()
        router.send_signal(signal.SIGTERM)
        code = router.wait(30)
        correlator.stop()
    assert code == 0, router.stderr.read().decode()[-2000:] if router.stderr else ""

    assert {(n.alert.alert_id, n.receiver_agency, n.reason.value, n.lead_authority)
            for n in got} == expected_routes
    assert len(got) == len(expected_routes)  # each notification once
    for n in got:
        assert n.alert == expected_alerts[n.alert.alert_id]
        assert n.escalation_level == 0
    disputed = [n for n in got if n.alert.authority_conflict]
    assert {n.alert.authority_conflict for n in disputed} == {("E08000032", "E09000033")}
