"""The simulated agencies' records in the form the agency-side publisher takes.

The simulator does not pseudonymise anything itself: it hands each agency's records to
`safehub.producers` exactly as a real case system would, so the demo and the benchmarks
exercise the real normalisation, match keys and linkage blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import fields

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
    """One simulated record as the agency's publisher input: the publisher's record of the
    same kind, every field copied (the agency and sector are the publisher's own settings, not
    part of the record), the identity in the form an agency's case system hands over."""
    kind = (agency.MissingEpisodeRecord if isinstance(record, MissingRecord)
            else agency.SignRecord)
    copied = {f.name: getattr(record, f.name) for f in fields(kind) if f.name != "identity"}
    return kind(identity=child_identity(record.identity), **copied)


def by_agency(records: Iterable[AgencyRecord]) -> Iterator[tuple[str, list[AgencyRecord]]]:
    """Records grouped per agency, each group in arrival order, agencies sorted."""
    groups: dict[str, list[AgencyRecord]] = {}
    for r in records:
        groups.setdefault(r.agency_id, []).append(r)
    for agency_id in sorted(groups):
        yield agency_id, groups[agency_id]
