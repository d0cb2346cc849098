"""The agency's own records: who the child behind each of its record references is.

The vault maps a handle to the agency's record references and holds no identity; the identity
lives in the agency's own system. Here that system is its export files, read with the same
column mapping the publisher used, or records handed over in memory (the demo). A case file
exists only inside the agency's re-identification process: it is never logged, and its `repr`
says how many records it holds, nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from safehub.producers.exports import ColumnMapping, LineError, read_export
from safehub.producers.records import AgencyRecord, ChildIdentity

log = logging.getLogger(__name__)


class CaseFile:
    """record_ref -> the identity as the agency's system holds it."""

    def __init__(self, identities: Mapping[str, ChildIdentity] | None = None) -> None:
        self._by_ref: dict[str, ChildIdentity] = dict(identities or {})

    @classmethod
    def from_records(cls, records: Iterable[AgencyRecord]) -> CaseFile:
        return cls({r.record_ref: r.identity for r in records})

    @classmethod
    def from_export(cls, path: Path, mapping: ColumnMapping) -> CaseFile:
        """Every usable line of an export; a line that cannot be read is counted, and only its
        line number and rule are logged (never a value)."""
        case = cls()
        case.add_export(path, mapping)
        return case

    def add_export(self, path: Path, mapping: ColumnMapping) -> None:
        unusable = 0
        for _line, parsed in read_export(path, mapping):
            if isinstance(parsed, LineError):
                unusable += 1
                continue
            self._by_ref[parsed.record_ref] = parsed.identity
        if unusable:
            log.warning("case file %s: %d line(s) could not be read", path.name, unusable)

    def add(self, record_ref: str, identity: ChildIdentity) -> None:
        self._by_ref[record_ref] = identity

    def identity(self, record_ref: str) -> ChildIdentity | None:
        return self._by_ref.get(record_ref)

    def identity_for(self, record_refs: Iterable[str]) -> ChildIdentity | None:
        """The identity behind the first of these references the case file holds (references
        in sorted order, so the answer does not depend on the order they were given in)."""
        for ref in sorted(record_refs):
            found = self._by_ref.get(ref)
            if found is not None:
                return found
        return None

    def __len__(self) -> int:
        return len(self._by_ref)

    def __repr__(self) -> str:
        return f"CaseFile(<{len(self._by_ref)} record(s) hidden>)"

    __str__ = __repr__
