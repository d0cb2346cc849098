"""Which authority an alert names: placing authority kept when later events omit it, social
care's word before the police's before the latest, an agency's own latest word, disputes shown."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from safehub.schemas.vocabulary import Sector
from safehub.services.correlation.authority import Authorities, authorities

HOST, PLACER, OTHER = "E08000035", "E09000033", "E08000032"
DAY = 86_400_000


@dataclass(frozen=True)
class Said:
    agency_id: str
    sector: Sector
    occurred_at: int
    event_id: str
    local_authority: str
    placing_authority: str | None


def said(agency: str, day: int, la: str = HOST, placing: str | None = None) -> Said:
    sector = {"police": Sector.POLICE, "csc": Sector.SOCIAL_CARE, "school": Sector.EDUCATION,
              "health": Sector.HEALTH}[agency.split("-")[0]]
    return Said(agency, sector, day * DAY, f"{agency}-{day}".ljust(32, "0"), la, placing)


def test_placing_authority_named_by_police_only_is_kept_when_later_events_omit_it() -> None:
    got = authorities([said("police-wy", 1, placing=PLACER), said("school-leeds", 5),
                       said("health-leeds", 9)])
    assert got == Authorities(HOST, PLACER, None)


def test_no_event_names_a_placing_authority() -> None:
    assert authorities([said("school-leeds", 1), said("police-wy", 2)]) == Authorities(
        HOST, None, None)


@pytest.mark.parametrize(("statements", "placing"), [
    pytest.param([said("csc-westminster", 1, placing=PLACER), said("police-wy", 4, placing=OTHER),
                  said("school-leeds", 8)], PLACER,
                 id="social care's word over a later police word"),
    pytest.param([said("police-wy", 1, placing=PLACER), said("school-leeds", 4, placing=OTHER)],
                 PLACER, id="police word over a later school word"),
    pytest.param([said("school-leeds", 1, placing=PLACER), said("health-leeds", 4, placing=OTHER)],
                 OTHER, id="otherwise the latest word"),
    pytest.param([said("csc-westminster", 4, placing=PLACER),
                  said("csc-bradford", 1, placing=OTHER)],
                 PLACER, id="among one sector the latest word"),
])
def test_the_placing_authority_goes_by_precedence_and_the_dispute_is_shown(
    statements: list[Said], placing: str
) -> None:
    got = authorities(statements)
    assert got.placing == placing and got.conflict == (OTHER, PLACER)


def test_an_agency_that_changes_its_word_does_not_disagree_with_itself() -> None:
    got = authorities([said("csc-westminster", 1, placing=OTHER),
                       said("csc-westminster", 6, placing=PLACER), said("school-leeds", 8)])
    assert got == Authorities(HOST, PLACER, None)


def test_local_authority_by_the_same_precedence_and_its_dispute_shown() -> None:
    got = authorities([said("police-wy", 1, la=OTHER), said("school-leeds", 5, la=HOST)])
    assert got.local == OTHER
    assert got.conflict == (OTHER, HOST)


def test_placing_and_local_disputes_are_listed_together() -> None:
    got = authorities([said("csc-westminster", 1, la=HOST, placing=PLACER),
                       said("police-wy", 2, la=OTHER, placing=HOST)])
    assert got == Authorities(HOST, PLACER, (OTHER, HOST, PLACER))


def test_order_of_the_statements_does_not_matter() -> None:
    items = [said("police-wy", 1, placing=PLACER), said("school-leeds", 5, placing=OTHER),
             said("health-leeds", 5, la=OTHER)]
    assert authorities(items) == authorities(reversed(items))


def test_an_empty_window_is_refused() -> None:
    with pytest.raises(ValueError):
        authorities([])
