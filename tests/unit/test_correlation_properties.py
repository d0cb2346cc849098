"""Property tests of the correlation core: arrival order and duplicates do not matter.

"Final alerts" are defined in safehub.services.correlation.core's docstring:
`standing_alerts(rules, block, state)` after the stream, plus the highest tier emitted per
final cluster.
"""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from safehub.samples.records import subject
from safehub.schemas.records import (
    CorrelatedAlert,
    IngressEvent,
    MatchKeys,
    MissingEpisodeEvent,
    WarningSignEvent,
)
from safehub.schemas.vocabulary import (
    MissingType,
    Sector,
    Sign,
    SignificantIncident,
    Vulnerability,
)
from safehub.services.correlation import snapshot
from safehub.services.correlation.core import (
    BlockState,
    assess,
    initial_state,
    standing_alerts,
    step,
)
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, Rules, parse_rules
from tests.fixtures.episodes import in_two_orders

BLOCK = 77
HOUR_MS = 3_600_000
T0 = 1_750_000_000_000


def _short_window_rules() -> Rules:
    # Windows shorter than the lateness horizon, so that which events share a window (and so
    # which anchor is the peak) really depends on event times in these tests.
    text = DEFAULT_RULES_PATH.read_text()
    text = text.replace("sign_days = 90", "sign_days = 5")
    text = text.replace("vulnerability_days = 365", "vulnerability_days = 9")
    return parse_rules(text.encode(), "short-windows")


RULES = _short_window_rules()
AGENCIES = {"police-a": Sector.POLICE, "health-b": Sector.HEALTH, "school-c": Sector.EDUCATION}
INDICATORS = [*Sign, *Vulnerability, SignificantIncident.ABDUCTION, "MISSING_EPISODE"]


def _key(child: int, kind: str) -> bytes:
    return hashlib.sha256(f"{child}:{kind}".encode()).digest()


@st.composite
def events(draw: st.DrawFn) -> list[IngressEvent]:
    """1-14 events about 1-3 children, all within the 30-day lateness horizon of each other."""
    n = draw(st.integers(1, 14))
    out: list[IngressEvent] = []
    for i in range(n):
        child = draw(st.integers(0, 2))
        kinds = draw(st.sets(st.sampled_from(["mk1", "mk2", "mk3", "mk4"]), min_size=1))
        keys = MatchKeys(**{k: _key(child, k) for k in kinds})
        agency = draw(st.sampled_from(sorted(AGENCIES)))
        when = T0 + draw(st.integers(0, 29 * 24)) * HOUR_MS
        child_subject = subject(match_keys=keys, linkage_block=BLOCK,
                                age_years=draw(st.integers(11, 16)),
                                reid_handle=hashlib.md5(f"r{i}".encode()).hexdigest())
        eid = hashlib.md5(f"e{i}".encode()).hexdigest()
        indicator = draw(st.sampled_from(INDICATORS))
        if indicator == "MISSING_EPISODE":
            out.append(MissingEpisodeEvent(eid, agency, AGENCIES[agency], when, when,
                                           child_subject, None, MissingType.MISSING, False,
                                           False))
        else:
            out.append(WarningSignEvent(eid, agency, AGENCIES[agency], when, when,
                                        child_subject, indicator))
    return out


def run(stream: list[IngressEvent]) -> tuple[BlockState, list[CorrelatedAlert]]:
    state = initial_state()
    emitted: list[CorrelatedAlert] = []
    for event in stream:
        state, alerts = step(RULES, state, event)
        emitted.extend(alerts)
        for cluster in state.clusters:
            # The incrementally kept peak is exactly the full assessment.
            if cluster.peak_known:
                assert cluster.peak == assess(RULES, cluster)
    return state, emitted


@settings(max_examples=150, deadline=None)
@given(events(), st.randoms(use_true_random=False))
def test_any_arrival_order_gives_the_same_final_alerts(stream, rnd) -> None:
    runs = in_two_orders(stream, rnd, run, RULES, BLOCK)
    final_a = standing_alerts(RULES, BLOCK, runs[0][0])
    # No order hides an escalation: for every final cluster, the highest tier emitted about
    # its events is its final tier, in both orders.
    for state, emitted in runs:
        for cluster in state.clusters:
            ids = {o.event_id for o in cluster.observations}
            mine = [a for a in emitted if {e.event_id for e in a.evidence} <= ids]
            final = [a for a in final_a if {e.event_id for e in a.evidence} <= ids]
            assert max((a.tier.rank for a in mine), default=0) == max(
                (a.tier.rank for a in final), default=0)


@settings(max_examples=150, deadline=None)
@given(events(), st.data())
def test_duplicating_any_event_changes_nothing(stream, data) -> None:
    with_dups = list(stream)
    for _ in range(data.draw(st.integers(1, 5))):
        original = data.draw(st.integers(0, len(stream) - 1))
        position = data.draw(st.integers(with_dups.index(stream[original]) + 1, len(with_dups)))
        with_dups.insert(position, stream[original])
    state_a, emitted_a = run(stream)
    state_b, emitted_b = run(with_dups)
    assert emitted_a == emitted_b
    assert state_a == state_b


@settings(max_examples=50, deadline=None)
@given(events())
def test_state_snapshot_round_trips(stream) -> None:
    state, _ = run(stream)
    assert snapshot.decode(snapshot.encode(state)) == state


def test_vulnerabilities_never_alert_alone() -> None:
    stream: list[IngressEvent] = []
    for i, v in enumerate(Vulnerability):
        child = subject(match_keys=MatchKeys(mk1=_key(0, "mk1")), linkage_block=BLOCK,
                        reid_handle="0" * 32)
        stream.append(WarningSignEvent(f"{i:032x}", "health-b", Sector.HEALTH, T0 + i * HOUR_MS,
                                       T0, child, v))
    state, emitted = run(stream)
    assert emitted == []
    assert standing_alerts(RULES, BLOCK, state) == ()
