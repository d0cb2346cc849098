"""Which authority leads for a child: the placing and local authority an alert names.

Pure: a function of the observations in the alert's window, nothing else.

For a looked-after child placed out of area the placing authority stays responsible, yet often
only police or children's social care know of the placement: a school or a clinic records the
child under the host authority and leaves the placing authority out. So an alert names a placing
authority whenever any event in its window names one; leaving it out is not a disagreement.

Each agency's word is the latest code it gave in the window (an agency that corrects itself, or
records a new placement, does not disagree with itself). When agencies' words differ, social
care's word is taken (it holds the care order), then the police's, then the latest; among
agencies of the same sector, the latest. The local (host) authority is chosen the same way. When
agencies' words differ, the alert lists every code they gave, so the hub sees the dispute.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from safehub.schemas.vocabulary import Sector

# Whose word about a child's authority counts first; any other sector ranks after these.
PRECEDENCE: tuple[Sector, ...] = (Sector.SOCIAL_CARE, Sector.POLICE)


class Statement(Protocol):
    """One event's word on the child's authorities: the core's Observation is one."""

    @property
    def agency_id(self) -> str: ...
    @property
    def sector(self) -> Sector: ...
    @property
    def occurred_at(self) -> int: ...
    @property
    def event_id(self) -> str: ...
    @property
    def local_authority(self) -> str: ...
    @property
    def placing_authority(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Authorities:
    local: str
    placing: str | None
    # The distinct codes agencies gave where they disagree (placing and/or local), sorted;
    # None when they agree.
    conflict: tuple[str, ...] | None


def _rank(sector: Sector) -> int:
    return PRECEDENCE.index(sector) if sector in PRECEDENCE else len(PRECEDENCE)


def _words(named: list[tuple[Statement, str]]) -> dict[str, tuple[Statement, str]]:
    """Each agency's latest (statement, code), by event time then event id."""
    words: dict[str, tuple[Statement, str]] = {}
    for s, code in sorted(named, key=lambda item: (item[0].occurred_at, item[0].event_id)):
        words[s.agency_id] = (s, code)
    return words


def _choose(named: list[tuple[Statement, str]]) -> tuple[str | None, frozenset[str]]:
    """The code taken and the distinct codes the agencies gave."""
    words = _words(named)
    if not words:
        return None, frozenset()
    _, code = max(words.values(),
                  key=lambda w: (-_rank(w[0].sector), w[0].occurred_at, w[0].event_id))
    return code, frozenset(c for _, c in words.values())


def authorities(statements: Iterable[Statement]) -> Authorities:
    """The authorities an alert over `statements` (its window's events, at least one) names."""
    items = list(statements)
    if not items:
        raise ValueError("an alert's window holds at least one event")
    local, locals_given = _choose([(s, s.local_authority) for s in items])
    placing, placings_given = _choose(
        [(s, s.placing_authority) for s in items if s.placing_authority is not None])
    disputed: set[str] = set()
    if len(locals_given) > 1:
        disputed |= locals_given
    if len(placings_given) > 1:
        disputed |= placings_given
    if local is None:  # unreachable: every statement names a local authority
        raise ValueError("no local authority named")
    return Authorities(local, placing, tuple(sorted(disputed)) if disputed else None)
