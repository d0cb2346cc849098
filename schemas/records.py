"""The contract's records as immutable Python values.

These are what every module passes around; `safehub.schemas.codec` turns them into Avro
single-object bytes and back. Times are integer milliseconds since the Unix epoch, UTC (the
event's own time, never the clock of whoever processes it). Identifiers are hex strings of a
fixed length so that no field can carry free text.

No record here has room for a name, date of birth, NHS number, address, postcode or free text:
a child appears only as match keys (keyed hashes), a linkage block, an age and an area.
"""

from __future__ import annotations

from dataclasses import dataclass

from safehub.schemas.frozen import quick_init
from safehub.schemas.vocabulary import (
    AckAction,
    AuditAction,
    Decision,
    DeclineReason,
    Indicator,
    LawfulBasis,
    MissingType,
    Rationale,
    ReidOutcome,
    ReidPurpose,
    RouteReason,
    Sector,
    Tier,
)


@quick_init
@dataclass(frozen=True, slots=True)
class MatchKeys:
    """Keyed hashes (HMAC-SHA256, 32 bytes each) of normalised identifiers; None if not derivable.

    mk1: NHS number; mk2: phonetic first name + date of birth + postcode (v1 of the key:
    first name + surname + date of birth);
    mk3: phonetic codes of the names + date of birth; mk4: surname + date of birth + postcode.
    """

    mk1: bytes | None = None
    mk2: bytes | None = None
    mk3: bytes | None = None
    mk4: bytes | None = None

    def present(self) -> tuple[tuple[str, bytes], ...]:
        return tuple(
            (name, value)
            for name, value in (("mk1", self.mk1), ("mk2", self.mk2), ("mk3", self.mk3),
                                ("mk4", self.mk4))
            if value is not None
        )


@quick_init
@dataclass(frozen=True, slots=True)
class EpochKeys:
    """A child's match keys under one key epoch (the other epoch, during a key rotation)."""

    key_epoch: int
    match_keys: MatchKeys


@quick_init
@dataclass(frozen=True, slots=True)
class Subject:
    """The child, as the hub may know them: linkable, not identifiable."""

    match_keys: MatchKeys
    key_epoch: int  # which linkage key made the match keys (rotation)
    linkage_block: int  # keyed bucket of the date of birth; also the Kafka message key
    age_years: int  # on the event date, 0-25
    local_authority: str  # GSS code of the responsible local authority, e.g. E08000035
    placing_authority: str | None  # GSS code of the placing authority for a looked-after child
    reid_handle: str  # random 32-hex handle; only the sending agency's vault can resolve it
    # While keys are rotated an agency sends the child's keys under both epochs, so the
    # correlator can join the child's old-epoch history to the new-epoch keys.
    transition_keys: EpochKeys | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class WarningSignEvent:
    event_id: str  # 32 hex, derived from agency + the agency's own record reference
    agency_id: str  # lower-case slug, e.g. "police-west-yorkshire"; must equal the topic's
    sector: Sector
    occurred_at: int  # ms, when it happened
    reported_at: int  # ms, when the agency recorded it
    subject: Subject
    indicator: Indicator


@quick_init
@dataclass(frozen=True, slots=True)
class MissingEpisodeEvent:
    event_id: str
    agency_id: str
    sector: Sector
    occurred_at: int  # ms, start of the episode
    reported_at: int
    subject: Subject
    ended_at: int | None  # ms; None while the child is still missing
    missing_type: MissingType
    return_interview_offered: bool
    return_interview_done: bool


IngressEvent = WarningSignEvent | MissingEpisodeEvent


@quick_init
@dataclass(frozen=True, slots=True)
class Evidence:
    """One event's contribution to an alert, so a practitioner can see why it fired."""

    event_id: str
    agency_id: str
    sector: Sector
    indicator: Indicator
    occurred_at: int
    weight: float


@quick_init
@dataclass(frozen=True, slots=True)
class ReidentificationRef:
    """Whom the lead agency may ask "who is this?", and with which handle."""

    agency_id: str
    reid_handle: str


@quick_init
@dataclass(frozen=True, slots=True)
class CorrelatedAlert:
    alert_id: str  # 32 hex, derived from the cause (cluster, tier, evidence set, rules version)
    rules_version: str  # 64 hex: SHA-256 of the rules file
    cluster_id: str  # 32 hex, stable id of the child cluster
    linkage_block: int
    tier: Tier
    rule: str  # id of the rule that fired, e.g. "three-distinct-signs"
    score: float
    raised_at: int  # ms, event time of the event that completed the evidence
    age_years: int
    local_authority: str
    placing_authority: str | None
    agencies: tuple[str, ...]
    evidence: tuple[Evidence, ...]
    reidentification: tuple[ReidentificationRef, ...]
    identity_conflict: bool  # two different NHS-number keys met in one cluster
    # The GSS codes agencies gave for the child's placing or local authority where they
    # disagree, sorted; None when they agree (see services/correlation/authority.py).
    authority_conflict: tuple[str, ...] | None = None
    # Why the alert fired, in plain words, from the evidence and rules that raised it
    # (services/correlation/reasons.py); None for alerts of rules that predate it.
    explanation: str | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class RoutedAlert:
    notification_id: str  # 32 hex, derived from alert id + receiver + escalation level
    alert: CorrelatedAlert
    receiver_agency: str
    lead_authority: str | None  # GSS code the route was chosen for; None for fallback
    reason: RouteReason
    escalation_level: int  # 0 for the first notification
    ack_deadline: int  # ms


@quick_init
@dataclass(frozen=True, slots=True)
class AlertAck:
    ack_id: str  # 32 hex
    alert_id: str
    agency_id: str
    user_ref: str  # the hub user's opaque staff reference (slug), not a child identifier
    action: AckAction
    decision: Decision | None
    at: int  # ms
    lawful_basis: LawfulBasis | None = None  # decisions record their basis ...
    rationale: Rationale | None = None  # ... and a coded reason


@quick_init
@dataclass(frozen=True, slots=True)
class AuditEntry:
    entry_id: str  # 32 hex
    service: str  # slug: correlator, router, inbox, web, audit-sink
    action: AuditAction
    subject_id: str  # 32 hex: the alert, event or ack the entry is about
    actor: str  # slug: agency or user reference
    at: int  # ms
    digest: bytes  # SHA-256 of the record the entry is about (32 bytes)


@quick_init
@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What could not be used, and why. The raw bytes are kept for operators to inspect."""

    source_topic: str
    partition: int
    offset: int
    error_class: str
    error_message: str
    at: int  # ms
    raw: bytes


@quick_init
@dataclass(frozen=True, slots=True)
class ReidRequest:
    """A hub asks one agency who the child behind its handles is; no free text travels."""

    request_id: str  # 32 hex, random: only the hub and the asked agency ever see it
    alert_id: str
    hub_id: str  # the requesting hub; its answer goes to reid-responses.<hub_id>
    agency_id: str  # the agency asked; must equal the topic's
    reid_handles: tuple[str, ...]  # the agency's own handles from the alert's evidence
    lawful_basis: LawfulBasis
    purpose: ReidPurpose
    hub_public_key: bytes  # X25519, 32 bytes; the agency checks it against the hub's registered key
    user_ref: str  # the hub user who asked (opaque staff reference)
    requested_at: int  # ms


@quick_init
@dataclass(frozen=True, slots=True)
class ReidResponse:
    """An agency's answer: the identity sealed to the hub's key (HPKE), or a coded refusal."""

    response_id: str
    request_id: str
    alert_id: str
    hub_id: str  # must equal the topic's
    agency_id: str  # must be the agency the request went to
    outcome: ReidOutcome
    decline_reason: DeclineReason | None
    sealed_identity: bytes | None  # approvals only; opened only with the hub's private key
    user_ref: str  # the agency's designated officer (opaque staff reference)
    decided_at: int  # ms
