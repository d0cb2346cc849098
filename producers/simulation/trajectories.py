"""What happens to the children of a world over time, and what each agency gets to record.

Most children have no event or one routine one in a year. A small share (the ground truth)
follow an exploitation trajectory from shared/DOMAIN.md: grooming signs, escalating missing
episodes, school absence, sexual-health and injury presentations, offending alongside older
adults, self-harm, sometimes a significant incident; each sign is recorded (or not) by the one
agency that would see it, so each agency holds only part of the picture. Some children are
troubled without being exploited, which is what makes false alerts possible.

Output is what agencies would publish (`SignRecord`, `MissingRecord`, in arrival order, with the
mess of real systems: late batches, resent duplicates, typos in names, missing NHS numbers,
out-of-date postcodes) and, kept apart, the `GroundTruth` the benchmarks score against.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from enum import Enum

from safehub.producers.simulation import noise as identity_noise
from safehub.producers.simulation.world import (
    SURNAMES,
    Child,
    Identity,
    World,
    make_postcode,
    make_world,
    with_families,
)
from safehub.schemas.vocabulary import (
    Indicator,
    MissingType,
    Sector,
    Sign,
    SignificantIncident,
    Vulnerability,
)

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# How often each sector lacks the NHS number for a child it knows.
_NHS_MISSING = {
    Sector.POLICE: 0.8, Sector.EDUCATION: 0.3, Sector.HEALTH: 0.02,
    Sector.SOCIAL_CARE: 0.05, Sector.YOUTH_JUSTICE: 0.5, Sector.VOLUNTARY: 0.9,
}
# How often an agency outside the placing authority knows that a child was placed there.
_KNOWS_PLACEMENT = {
    Sector.POLICE: 0.6, Sector.EDUCATION: 0.8, Sector.HEALTH: 0.5,
    Sector.SOCIAL_CARE: 1.0, Sector.YOUTH_JUSTICE: 0.7, Sector.VOLUNTARY: 0.3,
}



class Episode(Enum):
    """Marks a step that is a missing episode rather than a sign."""

    MISSING = "MISSING"


MISSING = Episode.MISSING
What = Indicator | Episode
Step = tuple[float, Sector, What, float]  # (fraction of course, sector, what, p recorded)

# Exploitation courses: when in the course each thing happens, who would see it, and how likely
# that agency is to record it. Drawn from the OCC checklist and the patterns in DOMAIN.md.
PATTERNS: dict[str, tuple[Step, ...]] = {
    "missing-then-sexual-harm": (
        (0.00, Sector.EDUCATION, Sign.ABSENT_FROM_SCHOOL, 0.8),
        (0.08, Sector.EDUCATION, Sign.UNEXPLAINED_GIFTS_OR_MONEY, 0.5),
        (0.15, Sector.POLICE, MISSING, 0.9),
        (0.35, Sector.EDUCATION, Sign.CHANGE_IN_APPEARANCE, 0.5),
        (0.50, Sector.HEALTH, Sign.REPEAT_STI, 0.8),
        (0.60, Sector.POLICE, Sign.DRUG_OR_ALCOHOL_MISUSE, 0.6),
        (0.75, Sector.POLICE, Sign.ASSOCIATING_WITH_OLDER_ADULTS, 0.7),
        (0.85, Sector.HEALTH, Sign.PHYSICAL_INJURY, 0.7),
        (0.95, Sector.HEALTH, Sign.SELF_HARM, 0.6),
    ),
    "online-grooming": (
        (0.00, Sector.EDUCATION, Sign.ONLINE_VULNERABILITY, 0.6),
        (0.10, Sector.VOLUNTARY, Sign.ONLINE_VULNERABILITY, 0.4),
        (0.20, Sector.EDUCATION, Sign.SEXUAL_BULLYING, 0.6),
        (0.30, Sector.EDUCATION, Sign.ABSENT_FROM_SCHOOL, 0.8),
        (0.40, Sector.HEALTH, Sign.POOR_MENTAL_HEALTH, 0.7),
        (0.55, Sector.POLICE, MISSING, 0.8),
        (0.70, Sector.EDUCATION, Sign.UNEXPLAINED_GIFTS_OR_MONEY, 0.5),
        (0.80, Sector.HEALTH, Sign.SELF_HARM, 0.7),
        (0.90, Sector.HEALTH, Sign.REPEAT_STI, 0.5),
    ),
    "offending-with-older-adults": (
        (0.00, Sector.YOUTH_JUSTICE, Sign.OFFENDING, 0.8),
        (0.10, Sector.POLICE, Sign.ASSOCIATING_WITH_OLDER_ADULTS, 0.7),
        (0.20, Sector.POLICE, MISSING, 0.9),
        (0.30, Sector.HEALTH, Sign.DRUG_OR_ALCOHOL_MISUSE, 0.6),
        (0.45, Sector.EDUCATION, Sign.ABSENT_FROM_SCHOOL, 0.8),
        (0.60, Sector.HEALTH, Sign.PHYSICAL_INJURY, 0.7),
        (0.75, Sector.YOUTH_JUSTICE, Vulnerability.GANG_ASSOCIATION, 0.6),
        (0.85, Sector.HEALTH, Sign.REPEAT_STI, 0.6),
        (0.95, Sector.EDUCATION, Sign.RECRUITING_OTHERS, 0.4),
    ),
    "missing-from-care": (
        (0.00, Sector.SOCIAL_CARE, Vulnerability.IN_RESIDENTIAL_CARE, 0.9),
        (0.05, Sector.SOCIAL_CARE, MISSING, 0.9),
        (0.15, Sector.POLICE, MISSING, 0.8),
        (0.30, Sector.EDUCATION, Sign.ABSENT_FROM_SCHOOL, 0.8),
        (0.45, Sector.SOCIAL_CARE, Sign.UNEXPLAINED_GIFTS_OR_MONEY, 0.6),
        (0.60, Sector.POLICE, Sign.ASSOCIATING_WITH_OLDER_ADULTS, 0.6),
        (0.75, Sector.HEALTH, Sign.TERMINATION, 0.5),
        (0.85, Sector.HEALTH, Sign.REPEAT_STI, 0.6),
        (0.95, Sector.SOCIAL_CARE, Sign.ESTRANGED_FROM_FAMILY, 0.5),
    ),
}
_INCIDENTS = (
    SignificantIncident.FOUND_IN_CAR_WITH_UNKNOWN_ADULTS,
    SignificantIncident.FOUND_IN_UNEXPLAINED_TOWN_HOTEL_OR_CLUB,
    SignificantIncident.EXCHANGING_SEX,
    SignificantIncident.LINKS_TO_TAXI_OR_TAKEAWAY_PREMISES,
)
# One-off events that happen to ordinary children (sector, what), with relative frequency.
_ROUTINE: tuple[tuple[Sector, What, int], ...] = (
    (Sector.EDUCATION, Sign.ABSENT_FROM_SCHOOL, 30),
    (Sector.HEALTH, Sign.PHYSICAL_INJURY, 20),
    (Sector.POLICE, MISSING, 10),
    (Sector.YOUTH_JUSTICE, Sign.OFFENDING, 6),
    (Sector.HEALTH, Sign.DRUG_OR_ALCOHOL_MISUSE, 5),
    (Sector.HEALTH, Sign.POOR_MENTAL_HEALTH, 10),
    (Sector.SOCIAL_CARE, Vulnerability.CHAOTIC_HOUSEHOLD, 6),
    (Sector.VOLUNTARY, Vulnerability.LOW_SELF_ESTEEM, 4),
    (Sector.EDUCATION, Sign.SEXUAL_BULLYING, 3),
    (Sector.HEALTH, Sign.SELF_HARM, 4),
)
# Troubled, not exploited: a run of mental-health signs with school absence.
_TROUBLED: tuple[tuple[Sector, What], ...] = (
    (Sector.HEALTH, Sign.POOR_MENTAL_HEALTH),
    (Sector.HEALTH, Sign.SELF_HARM),
    (Sector.EDUCATION, Sign.ABSENT_FROM_SCHOOL),
    (Sector.SOCIAL_CARE, Sign.ESTRANGED_FROM_FAMILY),
    (Sector.VOLUNTARY, Vulnerability.LOW_SELF_ESTEEM),
)


@dataclass(frozen=True, slots=True)
class SignRecord:
    """One warning sign as an agency's case system exports it, identity included."""

    agency_id: str
    sector: Sector
    record_ref: str  # the agency's own reference for this record
    person_ref: str  # the agency's own reference for the child
    identity: Identity  # the agency's copy of the child's identity
    local_authority: str
    placing_authority: str | None
    occurred_at: int  # ms
    reported_at: int  # ms
    indicator: Indicator


@dataclass(frozen=True, slots=True)
class MissingRecord:
    agency_id: str
    sector: Sector
    record_ref: str
    person_ref: str
    identity: Identity
    local_authority: str
    placing_authority: str | None
    occurred_at: int  # ms, start of the episode
    reported_at: int
    ended_at: int | None
    missing_type: MissingType
    return_interview_offered: bool
    return_interview_done: bool


AgencyRecord = SignRecord | MissingRecord


@dataclass(frozen=True, slots=True)
class ChildTruth:
    child_id: int
    exploited: bool
    pattern: str | None  # exploitation course, or None
    first_sign_at: int | None  # ms: the first exploitation sign any agency recorded


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """What really happened; never published. Scores alerts against children."""

    children: tuple[ChildTruth, ...]
    record_child: Mapping[tuple[str, str], int]  # (agency id, record ref) -> child id

    @property
    def exploited(self) -> frozenset[int]:
        return frozenset(c.child_id for c in self.children if c.exploited)


@dataclass(frozen=True, slots=True)
class Population:
    world: World
    records: tuple[AgencyRecord, ...]  # in arrival order (reported_at), duplicates included
    truth: GroundTruth
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class _Happening:
    child: Child
    at: int  # ms
    sector: Sector
    what: What
    episode: int  # index within a run of missing episodes (escalation), else 0
    exploitation: bool


def simulate(
    seed: int,
    *,
    children: int = 2000,
    authorities: int = 4,
    months: int = 12,
    exploited_share: float = 0.03,
    start: date = date(2025, 1, 1),
    noise: bool = False,
    episode_updates: bool = False,
) -> Population:
    """A whole population over `months`: same seed, same population.

    With `noise`, the noisier world (issue 20): families (twins, siblings) and every record's
    identity entered with producers/simulation/noise.py's noise, as the linkage bench's. Those
    draws come from a second RNG and change identities only, so the noisy world has the same
    trajectories and records as the clean one of the same seed: what differs is who the
    records say they are about, and so what linkage makes of them. (A sibling's birth date
    moves, and so the age its records give; its trajectory is drawn from the clean age.)

    With `episode_updates`, half of the missing episodes are first recorded while the child is
    still missing (no end, no interview) and then updated, under the same record reference,
    with the version the run without updates sends: the correlator must replace, not add
    (issue 20). Drawn from a third RNG: every record of the run without updates is still there.
    """
    rng = random.Random(seed)
    world = make_world(rng, children=children, authorities=authorities, start=start)
    updates = random.Random(f"safehub episode updates {seed}") if episode_updates else None
    noise_rng = random.Random(f"safehub noise {seed}") if noise else None
    families = None if noise_rng is None else with_families(noise_rng, world, start)
    start_ms = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp() * 1000)
    horizon_days = int(months * 30.44)
    end_ms = start_ms + horizon_days * DAY_MS
    happenings: list[_Happening] = []
    truths: list[tuple[int, str | None]] = []
    for child in world.children:
        age = (start - child.identity.date_of_birth).days / 365.25
        pattern = None
        # Exploitation is rarest among the youngest children.
        if rng.random() < exploited_share * (1.3 if age >= 12 else 0.4):
            names = sorted(PATTERNS)
            pattern = "missing-from-care" if child.looked_after else rng.choice(names)
            happenings.extend(_exploitation(rng, child, pattern, start_ms, horizon_days))
        truths.append((child.child_id, pattern))
        happenings.extend(_routine(rng, child, start_ms, horizon_days))
    entry = (None if noise_rng is None or families is None
             else _DataEntry(noise_rng, families, start, -(-horizon_days // 365)))
    records, record_child, first_sign = _record(rng, world, happenings, entry, updates)
    truth = GroundTruth(
        tuple(ChildTruth(cid, p is not None, p, first_sign.get(cid)) for cid, p in truths),
        record_child,
    )
    return Population(world if families is None else families, records, truth, start_ms, end_ms)


def _exploitation(
    rng: random.Random, child: Child, pattern: str, start_ms: int, horizon_days: int
) -> list[_Happening]:
    course_days = rng.uniform(90, 240)
    # Onsets anywhere in the run, so a run over years sees children enter and leave the picture.
    onset = start_ms + int(rng.uniform(0, max(1.0, horizon_days - course_days * 0.5)) * DAY_MS)
    # Some children are far less visible to services than others (not registered with a GP,
    # missing episodes not reported): every recording chance is scaled by this.
    visibility = rng.uniform(0.4, 1.0)
    out: list[_Happening] = []
    for frac, sector, what, p_recorded in PATTERNS[pattern]:
        if what == MISSING:
            # Escalation: episodes come faster and last longer as the course goes on.
            count = rng.randint(3, 8)
            for i in range(count):
                pos = frac + (1.0 - frac) * ((i / count) ** 0.6)
                at = onset + int(pos * course_days * DAY_MS)
                if rng.random() < p_recorded * visibility:
                    out.append(_Happening(child, at, sector, MISSING, i + 1, True))
            continue
        if rng.random() < p_recorded * visibility:
            jitter = rng.uniform(-0.04, 0.04)
            at = onset + int(max(0.0, frac + jitter) * course_days * DAY_MS)
            out.append(_Happening(child, at, sector, what, 0, True))
    if rng.random() < 0.3:
        at = onset + int(rng.uniform(0.7, 1.0) * course_days * DAY_MS)
        out.append(_Happening(child, at, Sector.POLICE, rng.choice(_INCIDENTS), 0, True))
    return out


def _routine(
    rng: random.Random, child: Child, start_ms: int, horizon_days: int
) -> list[_Happening]:
    out: list[_Happening] = []
    weights = [w for _, _, w in _ROUTINE]
    for year_start in range(0, horizon_days, 365):
        span = min(365, horizon_days - year_start)
        base = start_ms + year_start * DAY_MS

        def some_day(span: int = span, base: int = base) -> int:
            return base + int(rng.uniform(0, span) * DAY_MS)

        roll = rng.random()
        if roll < 0.6:
            count = 0
        elif roll < 0.9:
            count = 1
        elif roll < 0.98:
            count = 2
        else:
            count = 3
        for _ in range(count):
            sector, what, _w = rng.choices(_ROUTINE, weights)[0]
            # A part-year at the end of the run gets its share of a year's events, no more.
            if rng.random() < span / 365:
                out.append(_Happening(child, some_day(), sector, what, 1, False))
        if child.looked_after:
            # Children in care go missing more often, without being exploited.
            for _ in range(rng.randint(0, 3)):
                out.append(_Happening(child, some_day(), Sector.SOCIAL_CARE, MISSING, 1, False))
        if rng.random() < 0.015:
            first = some_day()
            for sector, what in rng.sample(_TROUBLED, rng.randint(2, 4)):
                at = first + int(rng.uniform(0, 120) * DAY_MS)
                out.append(_Happening(child, at, sector, what, 0, False))
    return out


class _DataEntry:
    """The noisy world's data entry: each record's identity entered afresh, with noise."""

    def __init__(self, rng: random.Random, world: World, start: date, years: int) -> None:
        self._rng, self._world = rng, world
        # A mistyped birth date the publisher accepts: never after the run starts, and at most 25
        # years before its end (pseudonymisation refuses older), over a run of `years` years.
        self._births = (date(start.year - 26 + years, start.month, 1), start)

    def identity(self, child: Child, sector: Sector) -> Identity:
        # The child's identity in the world with families (the same child id and authority).
        true, rng = self._world.children[child.child_id].identity, self._rng
        assert true.nhs_number is not None and true.postcode is not None
        area = self._world.authority(child.home_authority).postcode_area
        e = identity_noise.entered(
            rng, first_name=true.first_name, surname=true.surname,
            date_of_birth=true.date_of_birth, nhs_number=true.nhs_number,
            postcode=true.postcode, sector=sector,
            other_surname=lambda: rng.choice(SURNAMES),
            other_postcode=lambda: make_postcode(rng, area), births=self._births)
        return Identity(e.first_name, e.surname, e.date_of_birth, e.nhs_number, e.postcode)


def _record(
    rng: random.Random, world: World, happenings: list[_Happening],
    entry: _DataEntry | None = None, updates: random.Random | None = None,
) -> tuple[tuple[AgencyRecord, ...], dict[tuple[str, str], int], dict[int, int]]:
    happenings.sort(key=lambda h: (h.at, h.child.child_id, h.what.value))
    copies: dict[tuple[str, int], tuple[Identity, str]] = {}
    counters: dict[str, int] = {}
    people: dict[str, int] = {}
    records: list[AgencyRecord] = []
    record_child: dict[tuple[str, str], int] = {}
    first_sign: dict[int, int] = {}
    for h in happenings:
        child = h.child
        agency = world.agency(h.sector, child.home_authority)
        if h.sector is Sector.SOCIAL_CARE and child.placing_authority is not None:
            agency = world.agency(Sector.SOCIAL_CARE, child.placing_authority)
        key = (agency.agency_id, child.child_id)
        if key not in copies:
            people[agency.agency_id] = people.get(agency.agency_id, 0) + 1
            person = f"{_initials(agency.agency_id)}-P{people[agency.agency_id]:06d}"
            # Drawn in the noisy world too (and unused there), so both worlds share this RNG.
            copies[key] = (_agency_copy(rng, world, child, h.sector), person)
        counters[agency.agency_id] = counters.get(agency.agency_id, 0) + 1
        ref = f"{_initials(agency.agency_id)}-{counters[agency.agency_id]:07d}"
        placing = None
        if child.placing_authority is not None and rng.random() < _KNOWS_PLACEMENT[h.sector]:
            placing = child.placing_authority
        reported = h.at + _delay(rng, h.sector, h.at)
        common = dict(
            agency_id=agency.agency_id, sector=h.sector, record_ref=ref, person_ref=copies[key][1],
            identity=copies[key][0] if entry is None else entry.identity(child, h.sector),
            local_authority=child.home_authority, placing_authority=placing,
            occurred_at=h.at, reported_at=reported,
        )
        record: AgencyRecord
        if h.what == MISSING:
            hours = 3 + 6 * h.episode ** 1.5 * rng.uniform(0.5, 1.5)
            offered = rng.random() < 0.85
            record = MissingRecord(
                **common,  # type: ignore[arg-type]
                ended_at=h.at + int(hours * HOUR_MS),
                missing_type=MissingType.ABSENT if h.episode == 1 and not h.exploitation
                else MissingType.MISSING,
                return_interview_offered=offered,
                return_interview_done=offered and rng.random() < (0.3 if h.exploitation else 0.7),
            )
        else:
            assert not isinstance(h.what, Episode)
            record = SignRecord(**common, indicator=h.what)  # type: ignore[arg-type]
        records.append(record)
        if (updates is not None and isinstance(record, MissingRecord)
                and record.reported_at > record.occurred_at + 1 and updates.random() < 0.5):
            # First recorded while the child is still missing; `record` is the update.
            opened = record.occurred_at + 1 + int(
                updates.uniform(0.1, 0.9) * (record.reported_at - record.occurred_at - 1))
            records.append(replace(record, reported_at=opened, ended_at=None,
                                   return_interview_offered=False,
                                   return_interview_done=False))
        record_child[(agency.agency_id, ref)] = child.child_id
        if h.exploitation:
            first_sign[child.child_id] = min(first_sign.get(child.child_id, h.at), h.at)
        if rng.random() < 0.02:
            # A batch resent by hand: the same record again, later.
            records.append(replace(record, reported_at=reported + int(rng.uniform(1, 10) * DAY_MS)))
    records.sort(key=lambda r: (r.reported_at, r.agency_id, r.record_ref))
    return tuple(records), record_child, first_sign


def _delay(rng: random.Random, sector: Sector, at: int) -> int:
    if sector is Sector.POLICE:
        delay = rng.uniform(0.02, 0.25) * DAY_MS
    elif sector is Sector.EDUCATION:
        # Schools send a weekly batch.
        delay = (7 - (at // DAY_MS) % 7 + rng.uniform(0, 0.5)) * DAY_MS
    elif sector is Sector.HEALTH:
        delay = rng.uniform(0.1, 3) * DAY_MS
    else:
        delay = rng.uniform(1, 14) * DAY_MS
    if rng.random() < 0.03:
        delay += rng.uniform(30, 90) * DAY_MS  # a late batch: it still counts where it belongs
    return int(delay)


def _agency_copy(rng: random.Random, world: World, child: Child, sector: Sector) -> Identity:
    """The identity as this agency recorded it: gaps, typos and stale postcodes included."""
    ident = child.identity
    nhs = None if rng.random() < _NHS_MISSING[sector] else ident.nhs_number
    first, surname = ident.first_name, ident.surname
    if rng.random() < 0.05:
        first = _typo(rng, first)
    if rng.random() < 0.03:
        surname = _typo(rng, surname)
    postcode = ident.postcode
    roll = rng.random()
    if roll < 0.1:
        postcode = None
    elif roll < 0.15:
        postcode = make_postcode(rng, world.authority(child.home_authority).postcode_area)
    return Identity(first, surname, ident.date_of_birth, nhs, postcode)


def _typo(rng: random.Random, name: str) -> str:
    if len(name) < 3:
        return name
    i = rng.randrange(1, len(name) - 1)
    kind = rng.randrange(3)
    if kind == 0:  # transposed letters
        return name[:i] + name[i + 1] + name[i] + name[i + 2:]
    if kind == 1:  # dropped letter
        return name[:i] + name[i + 1:]
    return name[:i] + name[i] + name[i:]  # doubled letter


def _initials(agency_id: str) -> str:
    return "".join(part[0] for part in agency_id.split("-")).upper()
