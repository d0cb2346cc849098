"""Missing episodes: how the rules weigh one, and how an update replaces the version held.

Pure: episodes.py and the core with the default rules (v2) and the version 1 rules.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from safehub.schemas.codec import decode, encode
from safehub.schemas.records import (
    CorrelatedAlert,
    IngressEvent,
    MissingEpisodeEvent,
)
from safehub.schemas.vocabulary import MissingType, Sign
from safehub.services.audit.replay import (
    ReplayReport,
    compare,
    correlator_entries,
    replay_events,
)
from safehub.services.audit.sharding import contract_decoders
from safehub.services.correlation import episodes, snapshot
from safehub.services.correlation.core import (
    BlockState,
    initial_state,
    observation_weight,
    standing_alerts,
    step,
)
from safehub.services.correlation.episodes import Episode, version_key
from safehub.services.correlation.linking import block_key
from safehub.services.correlation.rules import (
    RULES_DIR,
    load_rules,
)
from safehub.services.correlator.processing import BatchProcessor, Incoming
from tests.fixtures.episodes import (
    BLOCK,
    DAY,
    HOUR,
    RULES,
    T0,
    episode_event,
    in_two_orders,
    run,
    sign_event,
)

DECODERS = contract_decoders()

V1 = load_rules(RULES_DIR / "default-v1.toml")
assert RULES.episodes is not None
EP = RULES.episodes


# -- one episode's weight ---------------------------------------------------------------------

def _weight(e: MissingEpisodeEvent) -> float:
    return episodes.weight(EP, e.occurred_at, episodes.episode_of(e))


def test_missing_weighs_more_than_absent() -> None:
    assert _weight(episode_event("a", T0)) == EP.missing_weight == 2.0
    assert _weight(episode_event("a", T0, kind=MissingType.ABSENT)) == EP.absent_weight == 1.0


def test_a_long_episode_weighs_more_also_while_still_open() -> None:
    assert _weight(episode_event("a", T0, hours=30)) == 2.5
    assert _weight(episode_event("a", T0, hours=23)) == 2.0
    # Still missing, recorded 26 hours after it began: a night or more away.
    assert _weight(episode_event("a", T0, hours=None, recorded=T0 + 26 * HOUR)) == 2.5
    assert _weight(episode_event("a", T0, hours=None, recorded=T0 + 2 * HOUR)) == 2.0


def test_no_return_interview_counts_only_once_72_hours_have_passed_as_recorded() -> None:
    returned = T0 + 8 * HOUR
    overdue = episode_event("a", T0, recorded=returned + 72 * HOUR)
    assert episodes.without_interview(EP, episodes.episode_of(overdue))
    assert _weight(overdue) == 3.0
    not_yet = episode_event("a", T0, recorded=returned + 71 * HOUR)
    assert not episodes.without_interview(EP, episodes.episode_of(not_yet))
    done = episode_event("a", T0, recorded=returned + 96 * HOUR, done=True)
    assert _weight(done) == 2.0
    # An absent child is not offered one: no weight for its absence.
    absent = episode_event("a", T0, recorded=returned + 96 * HOUR, kind=MissingType.ABSENT)
    assert _weight(absent) == 1.0
    # Still missing: nothing is due yet.
    open_ = episode_event("a", T0, hours=None, recorded=T0 + 10 * HOUR)
    assert not episodes.without_interview(EP, episodes.episode_of(open_))


def test_one_episode_never_alerts_on_its_own() -> None:
    worst = episode_event("a", T0, hours=50, recorded=T0 + 10 * DAY)
    assert _weight(worst) == 3.5 < RULES.emerging
    assert run([worst])[1] == []


def test_the_latest_version_is_the_latest_recorded_then_the_one_that_knows_more() -> None:
    base = Episode(MissingType.MISSING, None, False, False, T0)
    ended = replace(base, ended_at=T0 + HOUR)
    done = replace(ended, interview_offered=True, interview_done=True)
    later = replace(base, reported_at=T0 + 1)
    assert version_key(None) < version_key(base) < version_key(ended) < version_key(done)
    assert version_key(done) < version_key(later)  # recorded later wins, whatever it says


# -- updates in the core ----------------------------------------------------------------------

def test_an_update_replaces_the_episode_instead_of_counting_twice() -> None:
    first = episode_event("p1", T0, hours=None, recorded=T0 + HOUR)
    found = episode_event("p1", T0, hours=30, recorded=T0 + 31 * HOUR)
    other = episode_event("p2", T0 + 5 * DAY)
    state, alerts = run([first, other, found])
    (cluster,) = state.clusters
    assert len(cluster.observations) == 2
    held = next(o for o in cluster.observations if o.event_id == first.event_id)
    assert held.episode == episodes.episode_of(found)
    assert observation_weight(RULES, held) == 2.5
    # 2.0 + 2.5: emerging once (after `other`), and not re-alerted by the update.
    assert [a.score for a in alerts] == [4.0]
    assert standing_alerts(RULES, BLOCK, state)[0].score == 4.5


def test_an_older_version_arriving_late_changes_nothing_and_order_does_not_matter() -> None:
    v1 = episode_event("p1", T0, hours=None, recorded=T0 + HOUR)
    v2 = episode_event("p1", T0, hours=10, recorded=T0 + 5 * DAY)  # overdue interview
    other = episode_event("p2", T0 + DAY)
    a, _ = run([v1, v2, other])
    b, _ = run([v2, other, v1])
    assert a == b
    assert standing_alerts(RULES, BLOCK, a) == standing_alerts(RULES, BLOCK, b)
    assert standing_alerts(RULES, BLOCK, a)[0].score == 5.0


def test_an_exact_resend_of_an_update_changes_nothing() -> None:
    v1 = episode_event("p1", T0)
    v2 = episode_event("p1", T0, hours=30, recorded=T0 + 2 * DAY)
    state, _ = run([v1, v2])
    again, more = step(RULES, state, v2)
    assert again == state and more == ()


def test_an_update_that_lowers_the_weight_keeps_the_alert_already_raised() -> None:
    returned = T0 + 8 * HOUR
    a1 = episode_event("a1", T0, recorded=returned + 4 * DAY)
    a2 = episode_event("a2", T0 + 6 * DAY, recorded=T0 + 6 * DAY + 8 * HOUR + 4 * DAY)
    state, alerts = run([a1, a2])
    assert [a.tier.value for a in alerts] == ["ESCALATING"]  # 3.0 + 3.0
    done = episode_event("a1", T0, recorded=returned + 9 * DAY, done=True)
    state, more = step(RULES, state, done)
    assert more == ()
    (final,) = standing_alerts(RULES, BLOCK, state)
    assert (final.tier.value, final.score) == ("EMERGING", 5.0)


def test_version_1_rules_read_an_update_as_a_duplicate_and_every_episode_alike() -> None:
    v1 = episode_event("p1", T0, kind=MissingType.ABSENT)
    v2 = episode_event("p1", T0, hours=30, recorded=T0 + 5 * DAY)
    other = episode_event("p2", T0 + DAY, kind=MissingType.ABSENT)
    state, alerts = run([v1, other, v2], rules=V1)
    assert [(a.score, a.explanation) for a in alerts] == [(4.0, None)]
    (cluster,) = state.clusters
    assert next(o for o in cluster.observations
                if o.event_id == v1.event_id).episode == episodes.episode_of(v1)


def test_absent_episodes_are_no_distinct_sign_and_no_pattern() -> None:
    absent = [episode_event(f"a{i}", T0 + i * DAY, kind=MissingType.ABSENT) for i in range(3)]
    assert run(absent)[1] == []
    missing = [episode_event(f"m{i}", T0 + i * DAY) for i in range(3)]
    alerts = run(missing)[1]
    assert [(a.tier.value, a.rule) for a in alerts] == [
        ("EMERGING", "score"), ("ESCALATING", "repeated-missing")]
    # Two other signs and an absent episode are two different signs, not three.
    signs = [sign_event("s1", T0, Sign.DRUG_OR_ALCOHOL_MISUSE),
             sign_event("s2", T0 + DAY, Sign.SELF_HARM), absent[0]]
    assert all(a.rule != "distinct-signs" for a in run(signs)[1])


def test_the_pattern_counts_episodes_within_its_days() -> None:
    spread = [episode_event(f"m{i}", T0 + i * 44 * DAY) for i in range(3)]  # 88 days
    assert "repeated-missing" in {a.rule for a in run(spread)[1]}
    wider = [episode_event(f"m{i}", T0 + i * 46 * DAY) for i in range(3)]  # 92 days
    assert "repeated-missing" not in {a.rule for a in run(wider)[1]}


# -- snapshots --------------------------------------------------------------------------------

def test_episodes_survive_a_snapshot_and_a_format_3_snapshot_still_reads() -> None:
    stream: list[IngressEvent] = [
        episode_event("p1", T0, hours=None, recorded=T0 + HOUR),
        episode_event("p2", T0 + DAY, hours=40, done=True, recorded=T0 + 5 * DAY,
                      kind=MissingType.ABSENT),
        sign_event("s1", T0 + 2 * DAY, Sign.SELF_HARM),
    ]
    state, _ = run(stream)
    data = snapshot.encode(state)
    assert data[:1] == b"\x04" and snapshot.decode(data) == state
    # Format 3 is format 4 without the flags byte after each observation; a one-observation
    # state without an episode ends with that byte.
    plain, _ = run([sign_event("s1", T0, Sign.SELF_HARM)])
    four = snapshot.encode(plain)
    assert four.endswith(b"\x00")
    three = b"\x03" + four[1:-1]
    assert snapshot.decode(three) == plain


# -- any arrival order of versions ------------------------------------------------------------

@st.composite
def versioned_streams(draw: st.DrawFn) -> list[IngressEvent]:
    """Episodes of one or two children, each with one to three versions, and a few signs."""
    out: list[IngressEvent] = []
    for i in range(draw(st.integers(1, 5))):
        child = draw(st.integers(0, 1))
        start = T0 + draw(st.integers(0, 20 * 24)) * HOUR
        kind = draw(st.sampled_from(list(MissingType)))
        for _ in range(draw(st.integers(1, 3))):
            hours = draw(st.one_of(st.none(), st.integers(1, 60)))
            recorded = start + draw(st.integers(0, 10 * 24)) * HOUR
            out.append(episode_event(f"e{i}", start, hours=hours, recorded=recorded,
                                     done=draw(st.booleans()), kind=kind, child=child))
    for j in range(draw(st.integers(0, 3))):
        out.append(sign_event(f"s{j}", T0 + draw(st.integers(0, 20 * 24)) * HOUR,
                              draw(st.sampled_from([Sign.SELF_HARM, Sign.OFFENDING])),
                              child=draw(st.integers(0, 1))))
    return out


@settings(max_examples=120, deadline=None)
@given(versioned_streams(), st.randoms(use_true_random=False))
def test_any_arrival_order_of_versions_gives_the_same_final_alerts(stream, rnd) -> None:
    runs = in_two_orders(stream, rnd, run, RULES, BLOCK)
    state_a = runs[0][0]
    # Each episode is held once, as its latest version.
    latest: dict[str, MissingEpisodeEvent] = {}
    for e in stream:
        if isinstance(e, MissingEpisodeEvent):
            known = latest.get(e.event_id)
            if known is None or version_key(episodes.episode_of(e)) > version_key(
                    episodes.episode_of(known)):
                latest[e.event_id] = e
    held = {o.event_id: o.episode for c in state_a.clusters for o in c.observations
            if o.episode is not None}
    assert held == {i: episodes.episode_of(e) for i, e in latest.items()}
    # An update may lower a picture, never hide an escalation: what was emitted reaches at
    # least the final tier.
    for state, emitted in runs:
        final = standing_alerts(RULES, BLOCK, state)
        for alert in final:
            ids = {e.event_id for e in alert.evidence}
            mine = [a for a in emitted if {e.event_id for e in a.evidence} & ids]
            assert max(a.tier.rank for a in mine) >= alert.tier.rank
    assert snapshot.decode(snapshot.encode(state_a)) == state_a


# -- the processor and the auditors' replay ---------------------------------------------------

def test_updates_go_through_the_processor_and_replay_re_derives_their_alerts() -> None:
    """Each version is its own record (its own digest): the processor journals each as accepted,
    and replay, feeding the journalled versions in journal order, raises the same alerts."""
    returned = 8 * HOUR
    stream: list[IngressEvent] = [
        episode_event("p1", T0, hours=None, recorded=T0 + HOUR),
        episode_event("p2", T0 + 5 * DAY, recorded=T0 + 5 * DAY + returned + 4 * DAY),
        episode_event("p1", T0, hours=30, recorded=T0 + 2 * DAY),
        episode_event("p1", T0, hours=30, recorded=T0 + 2 * DAY),  # an exact resend
        episode_event("p1", T0, hours=30, recorded=T0 + 30 * HOUR + 4 * DAY),
        sign_event("s1", T0 + 10 * DAY, Sign.SELF_HARM),
    ]
    processor = BatchProcessor(RULES, "")
    messages = [Incoming(f"ingress.{e.agency_id}", 0, i, block_key(BLOCK), encode(e))
                for i, e in enumerate(stream)]
    states: dict[int, BlockState] = {}
    result = processor.process(messages, lambda b: states.get(b) or initial_state(), T0 + 40 * DAY)
    assert result.accepted == len(stream) and not result.rejected
    emitted = [decode(value, CorrelatedAlert) for _, value in result.alerts]
    # 2 + 3 = 5; the update to 30 h: 5.5; then no interview recorded: 6.5; then a second
    # agency's sign: (3.5 + 3 + 1.5) * 1.5 = 12.0 (self-harm weighs 1.5 under rules v3).
    assert [(a.tier.value, a.score) for a in emitted] == [
        ("EMERGING", 5.0), ("ESCALATING", 6.5), ("HIGH", 12.0)]
    entries, journalled = correlator_entries(result.audit, DECODERS)
    assert {hashlib.sha256(v).digest() for _, v in result.alerts} == journalled
    ingress = {hashlib.sha256(m.value or b"").digest(): (m.value or b"", m.key)
               for m in messages}
    report = ReplayReport()
    replayed = replay_events(entries, ingress, lambda _block: RULES, report, DECODERS)
    compare(replayed, emitted, report, other_rules=False)
    assert report.ok and report.matches == len(emitted) == 3
