"""The simulated agencies' records in the form the agency-side publisher takes.

The simulator does not pseudonymise anything itself: it hands each agency's records to
`safehub.producers` exactly as a real case system would, so the demo and the benchmarks
exercise the real normalisation, match keys and linkage blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from safehub.producers import records as agency
from safehub.producers.simulation.trajectories import AgencyRecord, MissingRecord
from safehub.producers.simulation.world import Identity


def child_identity(identity: Identity) -> agency.ChildIdentity:
    return agency.ChildIdentity(
        first_name=identity.first_name,
        surname=identity.surname,
        date_of_birth=identity.date_of_birth.isoformat(),
        nhs_number=identity.nhs_number,
        postcode=identity.postcode,
        date_format="ISO",
    )


def publisher_record(record: AgencyRecord) -> agency.AgencyRecord:
    """One simulated record as the agency's publisher input."""
    if isinstance(record, MissingRecord):
        return agency.MissingEpisodeRecord(
            record_ref=record.record_ref,
            identity=child_identity(record.identity),
            local_authority=record.local_authority,
            occurred_at=record.occurred_at,
            missing_type=record.missing_type,
            ended_at=record.ended_at,
            return_interview_offered=record.return_interview_offered,
            return_interview_done=record.return_interview_done,
            reported_at=record.reported_at,
            placing_authority=record.placing_authority,
            person_ref=record.person_ref,
        )
    return agency.SignRecord(
        record_ref=record.record_ref,
        identity=child_identity(record.identity),
        local_authority=record.local_authority,
        occurred_at=record.occurred_at,
        indicator=record.indicator,
        reported_at=record.reported_at,
        placing_authority=record.placing_authority,
        person_ref=record.person_ref,
    )


def by_agency(records: Iterable[AgencyRecord]) -> Iterator[tuple[str, list[AgencyRecord]]]:
    """Records grouped per agency, each group in arrival order, agencies sorted."""
    groups: dict[str, list[AgencyRecord]] = {}
    for r in records:
        groups.setdefault(r.agency_id, []).append(r)
    for agency_id in sorted(groups):
        yield agency_id, groups[agency_id]
