"""The agency's re-identification decisions, as pure functions: no clock, no I/O, no randomness.

- `check_request`: whether a request may be considered at all (else it is dead-lettered): it
  must name the agency whose topic carried it, a hub in the registry, and that hub's registered
  public key, so an answer can only ever be sealed to a key the agency was given out of band.
- `known_records`: what the agency holds behind the request's handles. A handle the agency did
  not issue (unknown, or another agency's) is simply absent: never another child.
- `shared_identity`: what an approval shares: the child as the agency's case file holds them and
  the record references behind the known handles only.
- `answer`: the response records. The response id is derived from the request, so a response
  sent again after a crash is recognisably the same answer.

Errors say which rule failed, never a value.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from safehub import topics
from safehub.errors import ConfigError, SafehubError, ValidationError
from safehub.producers.records import ChildIdentity
from safehub.producers.vault import Reidentification
from safehub.schemas.records import ReidRequest, ReidResponse
from safehub.schemas.vocabulary import DeclineReason, ReidOutcome
from safehub.services.reid.casefile import CaseFile
from safehub.services.reid.sealing import SharedIdentity

# The officer who answered "not found": nobody did, the service answered at once.
AUTOMATIC = "reid-service"


class DeskError(SafehubError):
    """A decision that cannot be taken; the message is for the officer and holds no value."""


class AlreadyDecided(DeskError):
    """The request has been answered; a decision is never taken twice."""


class NoIdentity(DeskError):
    """Nothing to share: no known handle, or the case file lacks the records behind them."""


class AmbiguousIdentity(DeskError):
    """The handles lead to more than one child in the case file: the agency must not pick one."""


@dataclass(frozen=True, slots=True)
class HandleRecords:
    """One known handle: the agency's own references and the identity its case file holds."""

    reid_handle: str
    person_ref: str | None
    record_refs: tuple[str, ...]
    identity: ChildIdentity | None  # None: the case file has none of these records

    def __repr__(self) -> str:
        return (f"HandleRecords({self.reid_handle}, {len(self.record_refs)} record(s), "
                f"identity {'held' if self.identity else 'not held'})")


def agency_from_topic(topic: str, prefix: str) -> str:
    """The agency whose `reid-requests.<agency>` topic this is."""
    return topics.party_of(topic, topics.Family.REID_REQUESTS, prefix)


def check_request(request: ReidRequest, topic_agency: str, hubs: Collection[str],
                  registered_key: Callable[[str], bytes]) -> None:
    """Raise ValidationError unless the agency may consider this request.

    `registered_key(hub)` is the hub's key as the agency was given it (ConfigError if none).
    """
    if request.agency_id != topic_agency:
        raise ValidationError("agency_id", "differs from the agency of the topic it arrived on")
    if request.hub_id not in hubs:
        raise ValidationError("hub_id", "not a hub in the agency registry")
    try:
        expected = registered_key(request.hub_id)
    except ConfigError:
        raise ValidationError("hub_public_key", "the hub has no registered key here") from None
    if not hmac.compare_digest(expected, request.hub_public_key):
        raise ValidationError("hub_public_key", "differs from the hub's registered key")
    if not request.reid_handles:
        raise ValidationError("reid_handles", "empty")


def known_records(agency_id: str, handles: Iterable[str],
                  resolve: Callable[[str, str], Reidentification | None],
                  case_file: CaseFile) -> tuple[HandleRecords, ...]:
    """The handles this agency issued, each with its records; the others are left out.

    `resolve(agency_id, handle)` is the vault's, which answers only for the agency's own."""
    out: list[HandleRecords] = []
    for handle in sorted(set(handles)):
        found = resolve(agency_id, handle)
        if found is None:
            continue
        out.append(HandleRecords(handle, found.person_ref, found.record_refs,
                                 case_file.identity_for(found.record_refs)))
    return tuple(out)


def _same_child(a: ChildIdentity, b: ChildIdentity) -> bool:
    return (a.first_name, a.surname, a.date_of_birth, a.nhs_number, a.postcode) == (
        b.first_name, b.surname, b.date_of_birth, b.nhs_number, b.postcode)


def shared_identity(found: Iterable[HandleRecords]) -> SharedIdentity:
    """The identity an approval seals: one child, as the case file holds them, with the record
    references behind the known handles (all of them, whether or not the case file holds each).
    """
    known = tuple(found)
    identities = [h.identity for h in known if h.identity is not None]
    if not identities:
        raise NoIdentity("the agency's records hold no identity behind these handles")
    first = identities[0]
    if any(not _same_child(first, other) for other in identities[1:]):
        raise AmbiguousIdentity("the handles lead to more than one child in the agency's "
                                "records: decline, and share by another route if need be")
    refs = sorted({ref for h in known for ref in h.record_refs})
    return SharedIdentity(first_name=first.first_name, surname=first.surname,
                          date_of_birth=first.date_of_birth, nhs_number=first.nhs_number,
                          postcode=first.postcode, record_refs=tuple(refs))


def response_id_for(request_id: str, agency_id: str) -> str:
    """One answer per request and agency: derived, so a re-sent answer has the same id."""
    h = hashlib.sha256(b"safehub-reid-response-v1")
    for part in (request_id, agency_id):
        data = part.encode("ascii")
        h.update(len(data).to_bytes(2, "big") + data)
    return h.hexdigest()[:32]


def answer(request: ReidRequest, outcome: ReidOutcome, officer: str, at_ms: int,
           reason: DeclineReason | None = None, sealed: bytes | None = None) -> ReidResponse:
    if outcome is ReidOutcome.APPROVED and (sealed is None or reason is not None):
        raise ValueError("an approval carries a sealed identity and no reason")
    if outcome is ReidOutcome.DECLINED and (reason is None or sealed is not None):
        raise ValueError("a decline carries a reason and no identity")
    if outcome is ReidOutcome.NOT_FOUND and (reason is not None or sealed is not None):
        raise ValueError("not found carries neither a reason nor an identity")
    return ReidResponse(
        response_id=response_id_for(request.request_id, request.agency_id),
        request_id=request.request_id, alert_id=request.alert_id, hub_id=request.hub_id,
        agency_id=request.agency_id, outcome=outcome, decline_reason=reason,
        sealed_identity=sealed, user_ref=officer, decided_at=at_ms)


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
