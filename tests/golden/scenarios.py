"""Golden scenarios: Markdown tables a safeguarding lead can review, turned into events.

Each `tests/golden/*.md` file has an `## Events` table, in arrival order:

| # | ref | day | agency | child | keys | age | indicator |

- `ref` is the agency's own record reference; the event id is derived from agency + ref, so a
  row repeating an earlier agency + ref is a duplicate delivery of the same event.
- `day` is event time, in days after Monday 6 January 2025 (rows may arrive out of day order).
- `child` names the real child; `keys` lists the match keys the agency could make (mk1 = NHS
  number, mk2 = names + date of birth, mk3 = phonetic, mk4 = surname + date of birth +
  postcode). `mk1:B` means the agency's record carries child B's NHS number (a data error).
- `indicator` is a Sign, Vulnerability or SignificantIncident symbol, or MISSING_EPISODE.

A MISSING_EPISODE row is an episode of type MISSING that ended 12 hours after it began, with a
return home interview offered but not (yet) done, recorded a day after it began, unless an
optional `## Missing episodes` table says otherwise for that row:

| # | type | missing for | return interview | recorded on day |

- `type`: MISSING or ABSENT; `missing for`: hours (`30 h`) or `still missing`;
  `return interview`: `done`, `not done` or `not offered`; `recorded on day`: when the agency
  recorded this version, as a day like the events' (an update of an episode is a later row
  with the same agency and ref, recorded later).

and an `## Expected alerts` table, in emission order ("none" rows mean: no alert at all):

| after # | child | tier | rule | score | agencies | evidence | conflict |

optionally with a last column `why`: the alert's plain-words explanation, exactly.

and optionally a `## Dead letters` table: the rows the correlator must refuse (dead-letter with
the reason, journal as dead-lettered, never feed to the core), e.g. beyond the history limit:

| # | reason |
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from safehub.samples.records import subject as sample_subject
from safehub.schemas.records import (
    CorrelatedAlert,
    IngressEvent,
    MatchKeys,
    MissingEpisodeEvent,
    WarningSignEvent,
)
from safehub.schemas.vocabulary import MissingType, Sector, indicator_from_symbol

GOLDEN_DIR = Path(__file__).parent
EPOCH_MS = 1_736_121_600_000  # 2025-01-06T00:00:00Z
DAY_MS = 86_400_000
BLOCK = 2424  # below the producers' 4096 blocks (validation refuses others)
LOCAL_AUTHORITY = "E08000035"

_SECTORS = {
    "police": Sector.POLICE, "school": Sector.EDUCATION, "health": Sector.HEALTH,
    "social-care": Sector.SOCIAL_CARE, "youth-justice": Sector.YOUTH_JUSTICE,
    "voluntary": Sector.VOLUNTARY,
}


@dataclass(frozen=True)
class Row:
    number: int
    ref: str
    agency: str
    child: str
    event: IngressEvent


@dataclass(frozen=True)
class Expected:
    after: int
    child: str
    tier: str
    rule: str
    score: float
    agencies: tuple[str, ...]
    evidence: tuple[str, ...]  # agency/ref labels, in event-time order
    conflict: bool
    why: str | None = None  # the explanation, when the table has the column


@dataclass(frozen=True)
class Scenario:
    name: str
    rows: tuple[Row, ...]
    expected: tuple[Expected, ...]
    deadletters: tuple[int, ...] = ()  # row numbers refused by the correlator
    with_why: bool = False  # the expected alerts table has the `why` column

    def fed(self) -> tuple[Row, ...]:
        """The rows the correlator feeds to the core (all but the dead letters)."""
        return tuple(r for r in self.rows if r.number not in self.deadletters)


def _hex(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def event_id(agency: str, ref: str) -> str:
    return _hex("event", agency, ref)


def _sector(agency: str) -> Sector:
    for prefix, sector in _SECTORS.items():
        if agency.startswith(prefix + "-"):
            return sector
    raise ValueError(f"agency {agency} has no known sector prefix")


def _match_keys(scenario: str, child: str, spec: str) -> MatchKeys:
    # Keys are salted by the scenario, so scenarios run side by side never link to each other.
    values: dict[str, bytes] = {}
    for item in spec.split():
        kind, _, owner = item.partition(":")
        values[kind] = hashlib.sha256(f"{scenario}:{kind}:{owner or child}".encode()).digest()
    return MatchKeys(**values)


def table(lines: list[str], heading: str) -> list[list[str]]:
    """The body rows (cells stripped) of the markdown table under `heading`."""
    start = lines.index(heading)
    rows = []
    for line in lines[start + 1:]:
        if line.startswith("## "):
            break
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows[1:]  # drop the header row


@dataclass(frozen=True)
class _Episode:
    missing_type: MissingType
    hours: float | None  # None: still missing
    offered: bool
    done: bool
    recorded_day: float


_INTERVIEW = {"done": (True, True), "not done": (True, False), "not offered": (False, False)}


def _episodes(lines: list[str]) -> dict[int, _Episode]:
    if "## Missing episodes" not in lines:
        return {}
    out = {}
    for number, kind, missing_for, interview, recorded in table(lines, "## Missing episodes"):
        hours = (None if missing_for == "still missing"
                 else float(missing_for.removesuffix("h").strip()))
        offered, done = _INTERVIEW[interview]
        out[int(number)] = _Episode(MissingType[kind], hours, offered, done, float(recorded))
    return out


def load(path: Path, block: int = BLOCK) -> Scenario:
    """The scenario in `path`, its events in linkage block `block`."""
    lines = [line.rstrip() for line in path.read_text().splitlines()]
    episodes = _episodes(lines)
    rows = []
    for cells in table(lines, "## Events"):
        number, ref, day, agency, child, keys, age, indicator = cells
        occurred = EPOCH_MS + int(float(day) * DAY_MS)
        # The sample subject's key epoch (1) and placing authority (none); the rest from here.
        subject = sample_subject(
            match_keys=_match_keys(path.stem, child, keys), linkage_block=block,
            age_years=int(age), local_authority=LOCAL_AUTHORITY,
            reid_handle=_hex("reid", agency, ref),
        )
        common = dict(event_id=event_id(agency, ref), agency_id=agency, sector=_sector(agency),
                      occurred_at=occurred, reported_at=occurred + DAY_MS, subject=subject)
        event: IngressEvent
        episode = episodes.get(int(number))
        if indicator == "MISSING_EPISODE" and episode is not None:
            common["reported_at"] = EPOCH_MS + int(episode.recorded_day * DAY_MS)
            event = MissingEpisodeEvent(
                **common, missing_type=episode.missing_type,
                ended_at=(None if episode.hours is None
                          else occurred + int(episode.hours * 3_600_000)),
                return_interview_offered=episode.offered,
                return_interview_done=episode.done,
            )
        elif indicator == "MISSING_EPISODE":
            event = MissingEpisodeEvent(
                **common, ended_at=occurred + DAY_MS // 2, missing_type=MissingType.MISSING,
                return_interview_offered=True, return_interview_done=False,
            )
        else:
            event = WarningSignEvent(**common, indicator=indicator_from_symbol(indicator))
        rows.append(Row(int(number), ref, agency, child, event))
    expected = []
    header = next(line for line in lines[lines.index("## Expected alerts"):]
                  if line.startswith("|"))
    with_why = header.strip().strip("|").split("|")[-1].strip() == "why"
    for cells in table(lines, "## Expected alerts"):
        if cells[0].lower() == "none":
            continue
        after, child, tier, rule, score, agencies, evidence, conflict = cells[:8]
        expected.append(Expected(
            int(after), child, tier, rule, float(score), tuple(agencies.split()),
            tuple(evidence.split()), conflict.lower() == "yes",
            cells[8] if with_why else None,
        ))
    dead = (tuple(int(cells[0]) for cells in table(lines, "## Dead letters"))
            if "## Dead letters" in lines else ())
    return Scenario(path.stem, tuple(rows), tuple(expected), dead, with_why)


def all_scenarios(first_block: int = BLOCK, spread: int = 0) -> list[Scenario]:
    """Every scenario; with `spread`, scenario i is put in block first_block + i * spread."""
    paths = sorted(GOLDEN_DIR.glob("*.md"))
    return [load(p, first_block + i * spread) for i, p in enumerate(paths)]


def describe(scenario: Scenario, emitted: list[tuple[int, CorrelatedAlert]]) -> list[Expected]:
    """Turn emitted (after-row, alert) pairs into the table's terms, for comparison."""
    label = {event_id(r.agency, r.ref): (f"{r.agency.split('-')[0]}/{r.ref}", r.child)
             for r in scenario.rows}
    out = []
    for after, alert in emitted:
        children = {label[e.event_id][1] for e in alert.evidence}
        out.append(Expected(
            after, "+".join(sorted(children)), alert.tier.value, alert.rule, alert.score,
            alert.agencies, tuple(label[e.event_id][0] for e in alert.evidence),
            alert.identity_conflict, alert.explanation if scenario.with_why else None,
        ))
    return out
