"""Sample records of every contract type, for the codec and schema tests and the codec benchmark.

Builders that cover every field shape (present and absent optionals, every indicator family,
empty and non-empty collections); each takes keyword changes to its defaults.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

from safehub import topics
from safehub.schemas.codec import HEADER_BYTES, encode
from safehub.schemas.records import (
    AlertAck,
    AuditEntry,
    CorrelatedAlert,
    DeadLetter,
    EpochKeys,
    Evidence,
    MatchKeys,
    MissingEpisodeEvent,
    ReidentificationRef,
    ReidRequest,
    ReidResponse,
    RoutedAlert,
    Subject,
    WarningSignEvent,
)
from safehub.schemas.vocabulary import (
    AckAction,
    AuditAction,
    Decision,
    DeclineReason,
    LawfulBasis,
    MissingType,
    Rationale,
    ReidOutcome,
    ReidPurpose,
    RouteReason,
    Sector,
    Sign,
    SignificantIncident,
    Tier,
    Vulnerability,
)
from safehub.services.correlation.linking import block_key

T0 = 1_700_000_000_000  # 2023-11-14, ms


def hex32(n: int) -> str:
    return f"{n:032x}"


def subject(**changes: Any) -> Subject:
    values: dict[str, Any] = {
        "match_keys": MatchKeys(mk1=b"\x01" * 32, mk2=b"\x02" * 32, mk3=None, mk4=b"\x04" * 32),
        "key_epoch": 1,
        "linkage_block": 4_000_000_000,
        "age_years": 14,
        "local_authority": "E08000035",
        "placing_authority": None,
        "reid_handle": hex32(7),
    }
    values.update(changes)
    return Subject(**values)


def sign_event(**changes: Any) -> WarningSignEvent:
    values: dict[str, Any] = {
        "event_id": hex32(1),
        "agency_id": "police-west-yorkshire",
        "sector": Sector.POLICE,
        "occurred_at": T0,
        "reported_at": T0 + 3_600_000,
        "subject": subject(),
        "indicator": Sign.MISSING_FROM_HOME_OR_CARE,
    }
    values.update(changes)
    return WarningSignEvent(**values)


def missing_episode(**changes: Any) -> MissingEpisodeEvent:
    values: dict[str, Any] = {
        "event_id": hex32(2),
        "agency_id": "leeds-childrens-social-care",
        "sector": Sector.SOCIAL_CARE,
        "occurred_at": T0,
        "reported_at": T0 + 1000,
        "subject": subject(placing_authority="E09000033", match_keys=MatchKeys()),
        "ended_at": T0 + 86_400_000,
        "missing_type": MissingType.ABSENT,
        "return_interview_offered": True,
        "return_interview_done": False,
    }
    values.update(changes)
    return MissingEpisodeEvent(**values)


def correlated_alert(**changes: Any) -> CorrelatedAlert:
    values: dict[str, Any] = {
        "alert_id": hex32(3),
        "rules_version": "ab" * 32,
        "cluster_id": hex32(4),
        "linkage_block": 17,
        "tier": Tier.HIGH,
        "rule": "three-distinct-signs",
        "score": 3.5,
        "raised_at": T0,
        "age_years": 12,
        "local_authority": "E06000001",
        "placing_authority": "E10000002",
        "agencies": ("police-west-yorkshire", "leeds-school-12"),
        "evidence": (
            Evidence(hex32(1), "police-west-yorkshire", Sector.POLICE,
                     SignificantIncident.ABDUCTION, T0, 3.0),
            Evidence(hex32(5), "leeds-school-12", Sector.EDUCATION,
                     Vulnerability.YOUNG_CARER, T0 - 5, 0.5),
            Evidence(hex32(6), "leeds-school-12", Sector.EDUCATION,
                     Sign.ABSENT_FROM_SCHOOL, T0 - 9, 1.0),
        ),
        "reidentification": (ReidentificationRef("police-west-yorkshire", hex32(9)),),
        "identity_conflict": False,
    }
    values.update(changes)
    return CorrelatedAlert(**values)


def routed_alert(**changes: Any) -> RoutedAlert:
    values: dict[str, Any] = {
        "notification_id": hex32(10),
        "alert": correlated_alert(),
        "receiver_agency": "leeds-mash",
        "lead_authority": "E08000035",
        "reason": RouteReason.PLACING_AUTHORITY,
        "escalation_level": 0,
        "ack_deadline": T0 + 86_400_000,
    }
    values.update(changes)
    return RoutedAlert(**values)


def alert_ack(**changes: Any) -> AlertAck:
    values: dict[str, Any] = {
        "ack_id": hex32(11),
        "alert_id": hex32(3),
        "agency_id": "leeds-mash",
        "user_ref": "staff-0042",
        "action": AckAction.DECIDED,
        "decision": Decision.STRATEGY_MEETING,
        "at": T0,
    }
    values.update(changes)
    return AlertAck(**values)


def audit_entry(**changes: Any) -> AuditEntry:
    values: dict[str, Any] = {
        "entry_id": hex32(12),
        "service": "correlator",
        "action": AuditAction.EVENT_ACCEPTED,
        "subject_id": hex32(1),
        "actor": "police-west-yorkshire",
        "at": T0,
        "digest": bytes(range(32)),
    }
    values.update(changes)
    return AuditEntry(**values)


def dead_letter(**changes: Any) -> DeadLetter:
    values: dict[str, Any] = {
        "source_topic": topics.ingress("", "police-west-yorkshire"),
        "partition": 3,
        "offset": 123456,
        "error_class": "ValidationError",
        "error_message": "subject.age_years: must be 0-25",
        "at": T0,
        "raw": b"\xc3\x01garbage\x00\xff",
    }
    values.update(changes)
    return DeadLetter(**values)


def reid_request(**changes: Any) -> ReidRequest:
    values: dict[str, Any] = {
        "request_id": hex32(21),
        "alert_id": hex32(3),
        "hub_id": "csc-leeds",
        "agency_id": "police-west-yorkshire",
        "reid_handles": (hex32(7), hex32(8)),
        "lawful_basis": LawfulBasis.DPA_SCH8_PARA4_SAFEGUARDING,
        "purpose": ReidPurpose.STRATEGY_MEETING,
        "hub_public_key": bytes(range(32, 64)),
        "user_ref": "staff-0042",
        "requested_at": T0,
    }
    values.update(changes)
    return ReidRequest(**values)


def reid_response(**changes: Any) -> ReidResponse:
    values: dict[str, Any] = {
        "response_id": hex32(22),
        "request_id": hex32(21),
        "alert_id": hex32(3),
        "hub_id": "csc-leeds",
        "agency_id": "police-west-yorkshire",
        "outcome": ReidOutcome.APPROVED,
        "decline_reason": None,
        "sealed_identity": b"\x01" * 80,
        "user_ref": "officer-7",
        "decided_at": T0 + 1,
    }
    values.update(changes)
    return ReidResponse(**values)


def every_record() -> list[Any]:
    """At least one of each top-level type, with optional fields both set and unset."""
    return [
        sign_event(),
        sign_event(indicator=Vulnerability.HOMELESS,
                   subject=subject(placing_authority="W06000015", age_years=0)),
        sign_event(indicator=SignificantIncident.FOUND_IN_EXPLOITATION_PREMISES),
        missing_episode(),
        missing_episode(ended_at=None, missing_type=MissingType.MISSING,
                        return_interview_offered=False),
        correlated_alert(),
        correlated_alert(placing_authority=None, agencies=(), evidence=(),
                         reidentification=(), identity_conflict=True, tier=Tier.EMERGING),
        routed_alert(),
        routed_alert(lead_authority=None, reason=RouteReason.FALLBACK, escalation_level=2),
        alert_ack(),
        alert_ack(action=AckAction.ACKNOWLEDGED, decision=None),
        alert_ack(lawful_basis=LawfulBasis.CONSENT, rationale=Rationale.MULTI_AGENCY_PATTERN),
        audit_entry(),
        dead_letter(),
        dead_letter(raw=b""),
        sign_event(subject=subject(transition_keys=EpochKeys(2, MatchKeys(mk2=bytes(32))))),
        reid_request(),
        reid_request(reid_handles=()),
        reid_response(),
        reid_response(outcome=ReidOutcome.DECLINED, sealed_identity=None,
                      decline_reason=DeclineReason.BASIS_NOT_MET),
    ]


def malformed_ingress(n: int) -> tuple[bytes | None, bytes]:
    """(key, value) of the n-th record of a malformed flood: garbage under a block key, garbage
    without a key, or an empty value; each breaks the contract at decoding."""
    garbage = hashlib.sha256(f"flood {n}".encode()).digest() * (1 + n % 4)
    kind = n % 3
    if kind == 0:
        return block_key(n % 4096), garbage
    if kind == 1:
        return None, garbage
    return block_key(n % 4096), b""


def malformed_past_the_look(n: int, agency: str) -> tuple[bytes, bytes]:
    """(key, value) of the n-th record of a flood made to pass the correlator's cheap look (a
    linkage block key and an ingress event's schema header, processing.may_be_event), each
    refused by the contract whenever it arrives on `agency`'s topic: bytes after the header that
    do not decode, an event of another agency, or an event reported before it occurred."""
    block = n % 4096
    event = sign_event(event_id=hex32(n), agency_id=agency, occurred_at=T0 + n,
                       reported_at=T0 + n, subject=subject(linkage_block=block))
    kind = n % 3
    if kind == 0:
        good = encode(event)
        return block_key(block), good[:HEADER_BYTES] + hashlib.sha256(good).digest()
    if kind == 1:
        return block_key(block), encode(replace(event, agency_id=f"not-{agency}"))
    return block_key(block), encode(replace(event, reported_at=event.occurred_at - 1))
