"""From an agency's own record to a contract event that carries no identity.

Pure apart from the keyed PRF it is handed (see keying.py): the re-identification handle is
made by the caller (it is random) and passed in; the event id is derived from the agency and its
record reference, so the same record always yields the same event id and a re-sent export is a
no-op at the hub. `prepare_many` derives a whole batch's keys in a few PRF calls.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from safehub.errors import ValidationError
from safehub.producers import normalisation as norm
from safehub.producers.keying import Keying, as_keying
from safehub.producers.linkagekey import LinkageKey
from safehub.producers.matchkeys import DerivedKeys, derive
from safehub.producers.records import AgencyRecord, ChildIdentity, MissingEpisodeRecord
from safehub.schemas.records import (
    EpochKeys,
    IngressEvent,
    MatchKeys,
    MissingEpisodeEvent,
    Subject,
    WarningSignEvent,
)
from safehub.schemas.vocabulary import Sector

MAX_AGE_YEARS = 25  # the contract's bound: care leavers are supported up to 25
_EVENT_ID_TAG = b"safehub/event-id/v1"


def event_id(agency_id: str, record_ref: str) -> str:
    """32 hex from the agency and its record reference; the reference itself never leaves.

    Unkeyed on purpose: a key rotation must not change the ids of records already sent.
    """
    digest = hashlib.sha256(
        b"\x1f".join((_EVENT_ID_TAG, agency_id.encode(), record_ref.encode()))
    ).hexdigest()
    return digest[:32]


def normalise_identity(identity: ChildIdentity) -> norm.NormalisedIdentity:
    return norm.NormalisedIdentity(
        first_name=norm.name(identity.first_name, "first_name"),
        surname=norm.name(identity.surname, "surname"),
        date_of_birth=norm.calendar_date(
            identity.date_of_birth, "date_of_birth", identity.date_format
        ),
        nhs_number=norm.nhs_number(identity.nhs_number),
        postcode=norm.postcode(identity.postcode),
    )


def _utc_date(ms: int, field: str) -> datetime:
    try:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise ValidationError(field, "not a representable time") from None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated record: what the vault needs (references) and what the event needs."""

    record: AgencyRecord
    identity: norm.NormalisedIdentity
    event_id: str
    person_key: str  # how the vault recognises this child within the agency
    match_keys: MatchKeys
    linkage_block: int
    age_years: int
    key_epoch: int = 1  # the epoch of `match_keys`
    transition_keys: EpochKeys | None = None  # the keys under the next epoch, in a rotation


@dataclass(frozen=True, slots=True)
class _Checked:
    record: AgencyRecord
    identity: norm.NormalisedIdentity
    age_years: int


def _check(record: AgencyRecord) -> _Checked:
    """Validate and normalise; raise ValidationError naming the field and rule."""
    if not record.record_ref or not record.record_ref.strip():
        raise ValidationError("record_ref", "required")
    identity = normalise_identity(record.identity)
    occurred = _utc_date(record.occurred_at, "occurred_at").date()
    if identity.date_of_birth > occurred:
        raise ValidationError("date_of_birth", "after the event date")
    age = norm.age_in_years(identity.date_of_birth, occurred)
    if age > MAX_AGE_YEARS:
        raise ValidationError("date_of_birth", f"older than {MAX_AGE_YEARS} on the event date")
    norm.local_authority(record.local_authority, "local_authority")
    if record.placing_authority is not None:
        norm.local_authority(record.placing_authority, "placing_authority")
    if record.reported_at is not None and record.reported_at < record.occurred_at:
        raise ValidationError("reported_at", "before occurred_at")
    if isinstance(record, MissingEpisodeRecord) and record.ended_at is not None \
            and record.ended_at < record.occurred_at:
        raise ValidationError("ended_at", "before the episode started")
    return _Checked(record, identity, age)


def _prepared(checked: _Checked, keys: DerivedKeys, agency_id: str) -> Prepared:
    record = checked.record
    # Without the agency's own person reference the vault recognises the child by its strongest
    # match key; that key stays in the agency's vault like everything else there. After the NHS
    # number, the names key (mk3): mk2 needs a postcode and would change when the child moves.
    mk = keys.match_keys
    person_key = (
        "ref:" + record.person_ref.strip() if record.person_ref and record.person_ref.strip()
        else "mk:" + (mk.mk1 or mk.mk3 or mk.mk2 or b"").hex()
    )
    return Prepared(
        record=record,
        identity=checked.identity,
        event_id=event_id(agency_id, record.record_ref.strip()),
        person_key=person_key,
        match_keys=mk,
        linkage_block=keys.linkage_block,
        age_years=checked.age_years,
        key_epoch=keys.key_epoch,
        transition_keys=keys.transition_keys,
    )


def prepare_many(
    records: Sequence[AgencyRecord], agency_id: str, key: LinkageKey | Keying
) -> list[Prepared | ValidationError]:
    """Each record prepared, or the ValidationError that makes it unusable, in input order.

    The keys of all usable records are derived together (see matchkeys.derive)."""
    checked: list[_Checked | ValidationError] = []
    for record in records:
        try:
            checked.append(_check(record))
        except ValidationError as exc:
            checked.append(exc)
    usable = [c for c in checked if isinstance(c, _Checked)]
    derived = iter(derive([c.identity for c in usable], as_keying(key)))
    return [c if isinstance(c, ValidationError) else _prepared(c, next(derived), agency_id)
            for c in checked]


def prepare(record: AgencyRecord, agency_id: str, key: LinkageKey | Keying) -> Prepared:
    """Validate and normalise; raise ValidationError naming the field and rule."""
    checked = _check(record)
    (keys,) = derive([checked.identity], as_keying(key))
    return _prepared(checked, keys, agency_id)


def to_event(
    prepared: Prepared, agency_id: str, sector: Sector, key: LinkageKey | Keying | None,
    reid_handle: str,
) -> IngressEvent:
    """The contract event. `key` is unused (the epochs travel in `prepared`); it stays for
    callers written for version 1."""
    del key
    record = prepared.record
    subject = Subject(
        match_keys=prepared.match_keys,
        key_epoch=prepared.key_epoch,
        linkage_block=prepared.linkage_block,
        age_years=prepared.age_years,
        local_authority=norm.local_authority(record.local_authority, "local_authority"),
        placing_authority=(
            norm.local_authority(record.placing_authority, "placing_authority")
            if record.placing_authority is not None else None
        ),
        reid_handle=reid_handle,
        transition_keys=prepared.transition_keys,
    )
    reported_at = record.reported_at if record.reported_at is not None else record.occurred_at
    # What every ingress event starts with, whatever its kind (safehub.schemas.records).
    envelope = (prepared.event_id, agency_id, sector, record.occurred_at, reported_at, subject)
    if isinstance(record, MissingEpisodeRecord):
        return MissingEpisodeEvent(
            *envelope,
            ended_at=record.ended_at,
            missing_type=record.missing_type,
            return_interview_offered=record.return_interview_offered,
            return_interview_done=record.return_interview_done,
        )
    return WarningSignEvent(*envelope, indicator=record.indicator)
