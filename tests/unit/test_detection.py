"""The detection benchmark's machinery: real pseudonymisation and the pure core, scored honestly."""

from __future__ import annotations

import pytest

from bench import detection_bench as bench
from safehub.producers.simulation.trajectories import Population, simulate
from safehub.schemas.vocabulary import Tier
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, Rules, load_rules


@pytest.fixture(scope="module")
def rules() -> Rules:
    return load_rules(DEFAULT_RULES_PATH)


@pytest.fixture(scope="module")
def population() -> Population:
    return simulate(21, children=1500, months=12)


@pytest.fixture(scope="module")
def arrivals(population: Population) -> list[bench.Arrival]:
    return bench.pseudonymise(population)


def test_pseudonymised_events_carry_no_identity(
    population: Population, arrivals: list[bench.Arrival]
) -> None:
    assert len(arrivals) == len(population.records)
    text = repr([a.event for a in arrivals[:300]])
    for child in population.world.children[:300]:
        ident = child.identity
        assert ident.surname not in text
        assert ident.nhs_number is not None and ident.nhs_number not in text
        assert ident.date_of_birth.isoformat() not in text


def test_one_childs_events_share_a_block_despite_typos_and_gaps(
    arrivals: list[bench.Arrival],
) -> None:
    blocks: dict[int, set[int]] = {}
    for a in arrivals:
        blocks.setdefault(a.child_id, set()).add(a.event.subject.linkage_block)
    assert all(len(b) == 1 for b in blocks.values())


def test_safehub_finds_exploited_children_earlier_than_any_single_agency(
    rules: Rules, population: Population, arrivals: list[bench.Arrival]
) -> None:
    event_child = {a.event.event_id: a.child_id for a in arrivals}
    hub = bench.correlate(rules, arrivals, lambda a: a.event.subject.linkage_block, event_child)
    single = bench.correlate(
        rules, arrivals, lambda a: (a.event.agency_id, a.event.subject.linkage_block), event_child
    )
    hub_score = bench.score(population, hub)
    single_score = bench.score(population, single)
    assert hub_score["recall"] >= single_score["recall"]
    assert hub_score["true_positives"] > 0
    lead = bench.lead_time(population, hub, single)
    assert lead["median_days_ahead_of_best_single_agency"] > 0
    # No alert mixes two children's events: linking held on typos and missing NHS numbers.
    for r in hub:
        assert len({event_child[e.event_id] for e in r.alert.evidence}) == 1


def test_score_counts_children_and_false_alerts_as_defined(
    rules: Rules, population: Population, arrivals: list[bench.Arrival]
) -> None:
    event_child = {a.event.event_id: a.child_id for a in arrivals}
    hub = bench.correlate(rules, arrivals, lambda a: a.event.subject.linkage_block, event_child)
    s = bench.score(population, hub, Tier.ESCALATING)
    flagged = bench.flagged_first(hub, Tier.ESCALATING)
    exploited = population.truth.exploited
    assert s["flagged"] == len(flagged)
    assert s["true_positives"] == len(set(flagged) & exploited)
    assert s["precision"] == round(len(set(flagged) & exploited) / len(flagged), 4)
    false_ids = {r.alert.alert_id for r in hub
                 if r.alert.tier.rank >= 2 and r.child_id not in exploited}
    assert s["false_alerts"] == len(false_ids)
    # Nothing flagged at escalating can be flagged at high before it was flagged at escalating.
    high = bench.flagged_first(hub, Tier.HIGH)
    assert all(flagged[c] <= t for c, t in high.items())


def test_state_levels_off_once_events_age_out(rules: Rules) -> None:
    growth = bench.state_growth(rules, seed=5, children=8000, months=24)
    assert growth["max_bytes_per_tracked_child"] <= 2048
    by_month = {s["month"]: s["state_bytes"] for s in growth["samples"]}
    # Before the horizon the state fills up; after it, what enters balances what ages out
    # (up to the residue of blocks that see no further event).
    assert by_month[12] > 2 * by_month[4]
    assert growth["growth_after_horizon_pct"] is not None
    assert growth["growth_after_horizon_pct"] < 15


def test_an_episode_update_replaces_its_first_version_in_every_alert(rules: Rules) -> None:
    pop = simulate(21, children=1500, months=12, episode_updates=True)
    arrivals = bench.pseudonymise(pop)
    event_child = {a.event.event_id: a.child_id for a in arrivals}
    assert len(event_child) < len(arrivals)  # versions share their record's event id
    hub = bench.correlate(rules, arrivals, lambda a: a.event.subject.linkage_block, event_child)
    assert hub
    for r in hub:
        ids = [e.event_id for e in r.alert.evidence]
        assert len(ids) == len(set(ids))
