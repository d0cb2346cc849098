"""The core's state stays bounded: events age out, and so do the ids kept for duplicates."""

from __future__ import annotations

import hashlib

from safehub.schemas.records import MatchKeys, Subject, WarningSignEvent
from safehub.schemas.vocabulary import Sector, Sign
from safehub.services.correlation import snapshot
from safehub.services.correlation.core import initial_state, step
from safehub.services.correlation.rules import DAY_MS, DEFAULT_RULES_PATH, load_rules

RULES = load_rules(DEFAULT_RULES_PATH)
SIGNS = list(Sign)
T0 = 1_700_000_000_000


def _event(child: int, n: int, day: float) -> WarningSignEvent:
    keys = MatchKeys(*(hashlib.sha256(f"{child}{k}".encode()).digest() for k in "1234"))
    # One handle per child, as the agency's vault gives it (its own person reference).
    subject = Subject(keys, 1, 9, 14, "E08000035", "E09000001",
                      hashlib.md5(f"{child}".encode()).hexdigest())
    return WarningSignEvent(hashlib.md5(f"{child}/{n}".encode()).hexdigest(), "police-a",
                            Sector.POLICE, T0 + int(day * DAY_MS), T0, subject,
                            SIGNS[n % len(SIGNS)])


def test_state_stops_growing_once_events_age_out_and_stays_under_2kb_per_child() -> None:
    """Ten children, each with an event every 9 days for three years, in event-time order."""
    state = initial_state()
    sizes = []
    for n in range(120):
        for child in range(10):
            state, _ = step(RULES, state, _event(child, n, n * 9 + child * 0.1))
        sizes.append(len(snapshot.encode(state)))
    horizon_steps = (RULES.horizon_ms // DAY_MS) // 9 + 1
    assert max(sizes[horizon_steps + 5:]) <= max(sizes[: horizon_steps + 5])
    assert len(state.clusters) == 10
    per_child = sizes[-1] / len(state.clusters)
    assert per_child <= 2048, per_child
    assert len(state.event_ids) == sum(len(c.observations) for c in state.clusters)


def test_a_child_whose_events_all_aged_out_is_forgotten() -> None:
    state, _ = step(RULES, initial_state(), _event(1, 0, 0))
    state, _ = step(RULES, state, _event(2, 0, 500))
    assert len(state.clusters) == 1
    assert _event(1, 0, 0).event_id not in state.event_ids
    # A redelivery of the forgotten event is too late to count: nothing changes.
    again, alerts = step(RULES, state, _event(1, 0, 0))
    assert again == state and alerts == ()
