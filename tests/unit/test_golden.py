"""The golden scenarios (tests/golden/*.md) through the pure core."""

from __future__ import annotations

import pytest

from safehub.schemas.records import CorrelatedAlert
from safehub.services.correlation.core import initial_state, step
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, Rules, load_rules
from tests.golden.scenarios import Scenario, all_scenarios, describe

SCENARIOS = all_scenarios()


def run_core(rules: Rules, scenario: Scenario) -> list[tuple[int, CorrelatedAlert]]:
    state = initial_state()
    emitted = []
    for row in scenario.rows:
        state, alerts = step(rules, state, row.event)
        emitted.extend((row.number, a) for a in alerts)
    return emitted


def test_there_are_scenarios_of_both_kinds() -> None:
    assert len(SCENARIOS) >= 8
    assert any(not s.expected for s in SCENARIOS)
    assert any(s.expected for s in SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_golden_scenario(scenario: Scenario) -> None:
    rules = load_rules(DEFAULT_RULES_PATH)
    emitted = run_core(rules, scenario)
    assert describe(scenario, emitted) == list(scenario.expected)
    for _, alert in emitted:
        assert alert.rules_version == rules.version
        assert len(alert.reidentification) >= 1
        assert alert.raised_at == max(e.occurred_at for e in alert.evidence)
    # Every alert id is distinct: a re-issued alert has a different cause.
    assert len({a.alert_id for _, a in emitted}) == len(emitted)
