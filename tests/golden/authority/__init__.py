"""Golden scenarios about which authority an alert goes to (issue 20): placed children.

Each `tests/golden/authority/*.md` file is an ordinary golden scenario (see
tests/golden/scenarios.py: `## Events` and `## Expected alerts`) with three more tables:

- `## Authorities named by each event`: | # | local authority | placing authority |
  ("none": the event leaves the placing authority out);
- `## Expected authorities`: | after # | local authority | placing authority | agencies
  disagree about | for each expected alert ("none": the agencies agree);
- `## Expected routes`: | after # | receiver | reason | lead authority |, the notifications the
  router sends at once for the alerts raised after that row, with the shipped routing table.

They live in a folder of their own so that the other golden tests, which read the top folder's
tables only, are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from tests.golden.scenarios import Scenario, load, table

AUTHORITY_DIR = Path(__file__).parent


@dataclass(frozen=True)
class ExpectedAuthority:
    after: int
    local_authority: str
    placing_authority: str | None
    conflict: tuple[str, ...] | None


@dataclass(frozen=True)
class ExpectedRoute:
    after: int
    receiver: str
    reason: str
    lead_authority: str | None


@dataclass(frozen=True)
class AuthorityScenario:
    scenario: Scenario  # its events carry the authorities of their table
    authorities: tuple[ExpectedAuthority, ...]
    routes: tuple[ExpectedRoute, ...]

    @property
    def name(self) -> str:
        return self.scenario.name


def _none(cell: str) -> str | None:
    return None if cell.lower() == "none" else cell


def load_authority(path: Path, block: int) -> AuthorityScenario:
    base = load(path, block)
    lines = [line.rstrip() for line in path.read_text().splitlines()]
    named = {int(n): (la, _none(placing))
             for n, la, placing in table(lines, "## Authorities named by each event")}
    rows = []
    for row in base.rows:
        la, placing = named[row.number]
        subject = replace(row.event.subject, local_authority=la, placing_authority=placing)
        rows.append(replace(row, event=replace(row.event, subject=subject)))
    authorities = tuple(
        ExpectedAuthority(int(after), la, _none(placing),
                          None if _none(conflict) is None else tuple(conflict.split()))
        for after, la, placing, conflict in table(lines, "## Expected authorities"))
    routes = tuple(
        ExpectedRoute(int(after), receiver, reason, _none(lead))
        for after, receiver, reason, lead in table(lines, "## Expected routes"))
    return AuthorityScenario(replace(base, rows=tuple(rows)), authorities, routes)


def authority_scenarios(first_block: int = 1515, spread: int = 1) -> list[AuthorityScenario]:
    paths = sorted(AUTHORITY_DIR.glob("*.md"))
    return [load_authority(p, first_block + i * spread) for i, p in enumerate(paths)]
