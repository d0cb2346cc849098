"""What an agency hands to the publisher: its own records, identities included.

These values live only inside the agency's process. The publisher turns them into contract
events (safehub.schemas.records) that carry match keys instead of identities. Their `repr`
hides the identity so that a debugger print, a log line or a traceback cannot leak it.
"""

from __future__ import annotations

from dataclasses import dataclass

from safehub.schemas.vocabulary import Indicator, MissingType


@dataclass(frozen=True, slots=True)
class ChildIdentity:
    """The identifiers as the agency's system holds them (any case, accents, spacing).

    `date_of_birth` is text in `date_format` (a key of normalisation.DATE_FORMATS).
    """

    first_name: str
    surname: str
    date_of_birth: str
    nhs_number: str | None = None
    postcode: str | None = None
    date_format: str = "ISO"

    def __repr__(self) -> str:
        return "ChildIdentity(<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class SignRecord:
    """One warning sign, vulnerability or significant incident the agency recorded."""

    record_ref: str  # the agency's own reference for this record (incident, case note, visit)
    identity: ChildIdentity
    local_authority: str  # GSS code of the child's responsible local authority
    occurred_at: int  # ms UTC
    indicator: Indicator
    reported_at: int | None = None  # ms UTC; defaults to occurred_at
    placing_authority: str | None = None
    person_ref: str | None = None  # the agency's own reference for the child, if it has one


@dataclass(frozen=True, slots=True)
class MissingEpisodeRecord:
    """One missing or absent episode. The record reference names the episode, so an update to it
    (the child came home, the interview was done) must be exported under a new reference."""

    record_ref: str
    identity: ChildIdentity
    local_authority: str
    occurred_at: int  # ms UTC, start of the episode
    missing_type: MissingType
    ended_at: int | None = None
    return_interview_offered: bool = False
    return_interview_done: bool = False
    reported_at: int | None = None
    placing_authority: str | None = None
    person_ref: str | None = None


AgencyRecord = SignRecord | MissingEpisodeRecord
