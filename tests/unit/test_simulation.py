"""The synthetic population: deterministic, realistic in shape, and honest about its mess."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import fields
from datetime import date
from itertools import pairwise

import pytest

from safehub.producers.linkagekey import LinkageKey
from safehub.producers.pseudonymisation import prepare_many
from safehub.producers.simulation.export import publisher_record
from safehub.producers.simulation.trajectories import (
    MissingRecord,
    Population,
    SignRecord,
    simulate,
)
from safehub.producers.simulation.world import nhs_check_digit
from safehub.schemas.vocabulary import Sector, SignificantIncident

GSS = re.compile(r"^E(06|07|08|09|10)\d{6}$")
SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@pytest.fixture(scope="module")
def population() -> Population:
    return simulate(11, children=3000, authorities=4, months=12)


def test_same_seed_same_population_and_another_seed_differs() -> None:
    a = simulate(5, children=300)
    b = simulate(5, children=300)
    c = simulate(6, children=300)
    assert a.records == b.records
    assert a.truth == b.truth
    assert a.records != c.records


def test_world_has_real_shaped_codes_ids_and_valid_nhs_numbers(population: Population) -> None:
    world = population.world
    assert all(GSS.match(a.gss) for a in world.authorities)
    assert all(SLUG.match(a) for a in world.agency_ids)
    assert {a.sector for a in world.agencies} == set(Sector)
    for child in world.children:
        nhs = child.identity.nhs_number
        assert nhs is not None and len(nhs) == 10
        assert nhs_check_digit(nhs[:9]) == int(nhs[9])


def test_ground_truth_is_kept_apart_from_what_agencies_publish(population: Population) -> None:
    names = {f.name for f in fields(SignRecord)} | {f.name for f in fields(MissingRecord)}
    assert not any("child" in n or "exploit" in n or "truth" in n for n in names)
    for r in population.records:
        assert (r.agency_id, r.record_ref) in population.truth.record_child


def test_most_children_have_no_or_one_event_and_a_small_share_are_exploited(
    population: Population,
) -> None:
    per_child = Counter(population.truth.record_child.values())
    n = len(population.world.children)
    quiet = sum(1 for c in population.world.children if per_child[c.child_id] <= 1)
    assert quiet / n > 0.7
    share = len(population.truth.exploited) / n
    assert 0.01 < share < 0.06


def test_exploited_children_are_seen_in_parts_by_several_agencies(
    population: Population,
) -> None:
    agencies_per_child: dict[int, set[str]] = defaultdict(set)
    for (agency, _ref), child in population.truth.record_child.items():
        agencies_per_child[child].add(agency)
    exploited = population.truth.exploited
    spread = [len(agencies_per_child[c]) for c in exploited]
    assert sorted(spread)[len(spread) // 2] >= 3  # the median child is seen by 3+ agencies
    assert all(c.first_sign_at is not None for c in population.truth.children if c.exploited)


def test_realistic_mess(population: Population) -> None:
    records = population.records
    refs = Counter((r.agency_id, r.record_ref) for r in records)
    assert any(n > 1 for n in refs.values()), "resent duplicates"
    assert any(r.identity.nhs_number is None for r in records), "missing NHS numbers"
    assert any(r.identity.postcode is None for r in records), "missing postcodes"
    truth_ids = {c.child_id: c.identity for c in population.world.children}
    typos = sum(
        1 for r in records
        if r.identity.first_name != truth_ids[
            population.truth.record_child[(r.agency_id, r.record_ref)]].first_name
    )
    assert typos > 0, "typos in names"
    assert any(r.reported_at - r.occurred_at > 30 * 86_400_000 for r in records), "late batches"
    assert all(r.reported_at >= r.occurred_at for r in records)
    assert [r.reported_at for r in records] == sorted(r.reported_at for r in records)


def test_police_rarely_hold_nhs_numbers_and_health_nearly_always(population: Population) -> None:
    def missing(sector: Sector) -> float:
        rs = [r for r in population.records if r.sector is sector]
        return sum(r.identity.nhs_number is None for r in rs) / len(rs)

    assert missing(Sector.POLICE) > 0.6
    assert missing(Sector.HEALTH) < 0.1


def test_looked_after_children_placed_out_of_area(population: Population) -> None:
    placed = [c for c in population.world.children if c.placing_authority is not None]
    assert placed
    assert all(c.placing_authority != c.home_authority for c in placed)
    tagged = [r for r in population.records if r.placing_authority is not None]
    assert tagged and all(r.placing_authority != r.local_authority for r in tagged)


def test_missing_episodes_escalate_and_incidents_occur(population: Population) -> None:
    assert any(isinstance(r, SignRecord) and isinstance(r.indicator, SignificantIncident)
               for r in population.records)
    for r in population.records:
        if isinstance(r, MissingRecord):
            assert r.ended_at is None or r.ended_at > r.occurred_at
            assert r.return_interview_offered or not r.return_interview_done


def test_a_run_over_years_keeps_events_coming() -> None:
    p = simulate(3, children=400, months=36)
    years = Counter((r.occurred_at - p.start_ms) // (365 * 86_400_000) for r in p.records)
    assert min(years[y] for y in range(3)) > 0.5 * max(years[y] for y in range(3))


def test_the_noisy_world_has_the_clean_worlds_records_with_noisier_identities() -> None:
    clean = simulate(12, children=1500, months=12)
    noisy = simulate(12, children=1500, months=12, noise=True)
    assert noisy.records == simulate(12, children=1500, months=12, noise=True).records
    # Same trajectories and records: only who the records say they are about differs.
    assert [r.record_ref for r in noisy.records] == [r.record_ref for r in clean.records]
    assert noisy.truth.record_child == clean.truth.record_child
    kids = noisy.world.children
    twins = sum(a.identity.surname == b.identity.surname
                and a.identity.date_of_birth == b.identity.date_of_birth
                and a.identity.first_name != b.identity.first_name
                and a.identity.nhs_number != b.identity.nhs_number
                for a, b in pairwise(kids))
    assert 5 <= twins <= 60  # 1.5 % of children are followed by a twin
    truth = {c.child_id: c.identity for c in kids}
    entered = [(r.identity, truth[noisy.truth.record_child[(r.agency_id, r.record_ref)]], r)
               for r in noisy.records]
    # Every record's identity is entered afresh: some carry a wrong birth date or another name.
    assert any(i.date_of_birth != t.date_of_birth for i, t, _ in entered)
    assert any(i.first_name != t.first_name for i, t, _ in entered)
    assert all(i.date_of_birth <= date(2025, 1, 1) for i, _, _ in entered)
    police = [i for i, _, r in entered if r.sector is Sector.POLICE]
    held = sum(i.nhs_number is not None for i in police) / len(police)
    assert 0.35 < held < 0.55  # police hold the NHS number 45 % of the time


def test_a_noisy_run_over_years_enters_only_birth_dates_the_publisher_accepts() -> None:
    pop = simulate(3, children=300, months=36, noise=True)
    key = LinkageKey(bytes(range(32)), epoch=3)
    prepared = prepare_many([publisher_record(r) for r in pop.records], "agency", key)
    assert not [p for p in prepared if isinstance(p, Exception)]


def test_episode_updates_add_an_earlier_open_version_of_the_same_record() -> None:
    plain = simulate(13, children=800, months=12)
    updated = simulate(13, children=800, months=12, episode_updates=True)
    assert set(plain.records) <= set(updated.records)  # every record of the run is still sent
    extra = [r for r in updated.records if r not in set(plain.records)]
    assert extra and all(isinstance(r, MissingRecord) for r in extra)
    final = {(r.agency_id, r.record_ref): r for r in plain.records}
    for r in extra:
        later = final[(r.agency_id, r.record_ref)]
        assert isinstance(later, MissingRecord)
        assert r.occurred_at < r.reported_at < later.reported_at
        assert r.ended_at is None and not r.return_interview_done
