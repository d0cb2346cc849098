"""The hub inbox's tables (SQLAlchemy 2). Schema changes go through migrations/ (Alembic).

A notification (RoutedAlert) is one row, unique by notification id, so a redelivered record is
a no-op. Nothing here can hold a child's identity: only match-key-free facts of the alert,
coded indicators, agency slugs and the opaque re-identification handles.
"""

from __future__ import annotations

from typing import Annotated

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


# The notification a row of an alert's evidence, handles, acks or requests belongs to.
OfAlert = Annotated[
    str, mapped_column(String(32), ForeignKey("inbox_alert.notification_id"), index=True)
]


class InboxAlert(Base):
    __tablename__ = "inbox_alert"

    notification_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    alert_id: Mapped[str] = mapped_column(String(32), index=True)
    agency_id: Mapped[str] = mapped_column(String(64))  # the receiver: only it may see the row
    cluster_id: Mapped[str] = mapped_column(String(32))
    tier: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    raised_at: Mapped[int] = mapped_column(BigInteger)
    age_years: Mapped[int] = mapped_column(Integer)
    local_authority: Mapped[str] = mapped_column(String(9))
    placing_authority: Mapped[str | None] = mapped_column(String(9))
    lead_authority: Mapped[str | None] = mapped_column(String(9))
    reason: Mapped[str] = mapped_column(String(32))
    escalation_level: Mapped[int] = mapped_column(Integer)
    ack_deadline: Mapped[int] = mapped_column(BigInteger)
    rules_version: Mapped[str] = mapped_column(String(64))
    agencies: Mapped[str] = mapped_column(String(1024))  # space-separated slugs
    identity_conflict: Mapped[bool] = mapped_column(Boolean)
    # GSS codes, space-separated, that agencies gave where they disagree about the child's
    # placing or local authority; None when they agree.
    authority_conflict: Mapped[str | None] = mapped_column(String(512))
    # Why the alert fired, in plain words, as the correlator made it from coded evidence (counts,
    # sign names, the rules' numbers); None for alerts of rules that predate it.
    explanation: Mapped[str | None] = mapped_column(String(2000))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32))  # SHA-256 of the record as received
    received_at: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="NEW")
    decision: Mapped[str | None] = mapped_column(String(40))
    acknowledged_at: Mapped[int | None] = mapped_column(BigInteger)
    decided_at: Mapped[int | None] = mapped_column(BigInteger)

    evidence: Mapped[list[InboxEvidence]] = relationship(
        back_populates="alert", order_by="InboxEvidence.occurred_at", cascade="all, delete-orphan"
    )
    reidentification: Mapped[list[InboxReidentification]] = relationship(
        cascade="all, delete-orphan"
    )
    acks: Mapped[list[InboxAck]] = relationship(
        order_by="InboxAck.at", cascade="all, delete-orphan"
    )

    __table_args__ = (Index("ix_inbox_alert_queue", "agency_id", "status", "raised_at"),)


class InboxEvidence(Base):
    __tablename__ = "inbox_evidence"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notification_id: Mapped[OfAlert]
    event_id: Mapped[str] = mapped_column(String(32))
    agency_id: Mapped[str] = mapped_column(String(64))
    sector: Mapped[str] = mapped_column(String(32))
    indicator: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[int] = mapped_column(BigInteger)
    weight: Mapped[float] = mapped_column(Float)

    alert: Mapped[InboxAlert] = relationship(back_populates="evidence")


class InboxReidentification(Base):
    __tablename__ = "inbox_reidentification"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notification_id: Mapped[OfAlert]
    agency_id: Mapped[str] = mapped_column(String(64))
    reid_handle: Mapped[str] = mapped_column(String(32))


class InboxAck(Base):
    """An acknowledgement or decision; an outbox row until `alert-acks` has acknowledged it."""

    __tablename__ = "inbox_ack"

    ack_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    notification_id: Mapped[OfAlert]
    alert_id: Mapped[str] = mapped_column(String(32))
    agency_id: Mapped[str] = mapped_column(String(64))
    user_ref: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    decision: Mapped[str | None] = mapped_column(String(40))
    at: Mapped[int] = mapped_column(BigInteger)
    published_at: Mapped[int | None] = mapped_column(BigInteger, index=True)
    lawful_basis: Mapped[str | None] = mapped_column(String(40))
    rationale: Mapped[str | None] = mapped_column(String(40))


class InboxReidRequest(Base):
    """One re-identification request this hub sent to one agency, and its answer.

    Also an outbox row until `reid-requests.<agency>` has acknowledged it. The answer's identity
    is kept only as the agency sealed it (HPKE to this hub's key): no column holds it in
    plaintext, and it is dropped when it expires unless a decision to keep it is recorded.
    """

    __tablename__ = "inbox_reid_request"

    request_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    notification_id: Mapped[OfAlert]
    alert_id: Mapped[str] = mapped_column(String(32))
    hub_id: Mapped[str] = mapped_column(String(64))
    agency_id: Mapped[str] = mapped_column(String(64))  # the agency asked
    reid_handles: Mapped[str] = mapped_column(String(2048))  # space-separated
    lawful_basis: Mapped[str] = mapped_column(String(40))
    # For basis OTHER the hub records why; it stays here and never travels.
    basis_reason: Mapped[str | None] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(40))
    user_ref: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[int] = mapped_column(BigInteger)
    published_at: Mapped[int | None] = mapped_column(BigInteger, index=True)
    request_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    status: Mapped[str] = mapped_column(String(16), default="REQUESTED")
    response_id: Mapped[str | None] = mapped_column(String(32))
    decline_reason: Mapped[str | None] = mapped_column(String(40))
    responder_ref: Mapped[str | None] = mapped_column(String(64))
    answered_at: Mapped[int | None] = mapped_column(BigInteger)
    sealed_identity: Mapped[bytes | None] = mapped_column(LargeBinary)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, index=True)
    kept_by: Mapped[str | None] = mapped_column(String(64))
    kept_at: Mapped[int | None] = mapped_column(BigInteger)


class InboxReidView(Base):
    """Who opened a sealed identity, when, and the reason they gave (also in the audit log)."""

    __tablename__ = "inbox_reid_view"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("inbox_reid_request.request_id"), index=True
    )
    user_ref: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(40))
    at: Mapped[int] = mapped_column(BigInteger)
