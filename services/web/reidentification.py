"""The hub's side of re-identification: ask the contributing agencies who the child is, read
their answers, open an approved identity for a user who says why, keep one past retention.

Every step is in the audit log before it takes effect, written as the user's own hub. A request
goes only to agencies that contributed to the alert, with only that agency's own handles from
its evidence; a sealed identity is opened in memory for one page and never stored, logged or
put in an error message in the clear.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from kafka import KafkaProducer

from safehub.bus import send_and_confirm
from safehub.consumers.inbox.models import InboxReidRequest
from safehub.consumers.inbox.requests import ReidRequests
from safehub.errors import BrokerError, StoreError, ValidationError
from safehub.schemas.codec import encode
from safehub.schemas.records import ReidRequest
from safehub.schemas.vocabulary import AuditAction, LawfulBasis, ReidOutcome, ReidPurpose
from safehub.services.reid.sealing import SharedIdentity, binding, open_sealed
from safehub.services.web.hub import Hub
from safehub.services.web.users import User
from safehub.topics import reid_requests

MAX_BASIS_REASON = 500


class ViewReason(StrEnum):
    """Why a user opens a shared identity: recorded with the view and in the audit log."""

    STRATEGY_MEETING = "STRATEGY_MEETING"
    SECTION_47_ENQUIRY = "SECTION_47_ENQUIRY"
    CONTACTING_THE_CHILD_OR_FAMILY = "CONTACTING_THE_CHILD_OR_FAMILY"
    CHECKING_AN_IDENTITY_CONFLICT = "CHECKING_AN_IDENTITY_CONFLICT"
    IMMEDIATE_PROTECTION = "IMMEDIATE_PROTECTION"


class RequestPublisher(Protocol):
    def publish(self, request: ReidRequest) -> None: ...


class KafkaRequestPublisher:
    """Requests to `reid-requests.<agency>`, as the asking hub's principal, keyed by request."""

    def __init__(self, producer: KafkaProducer, prefix: str, timeout_s: float = 10.0) -> None:
        self._producer = producer
        self._prefix = prefix
        self._timeout_s = timeout_s

    def publish(self, request: ReidRequest) -> None:
        send_and_confirm(self._producer, reid_requests(self._prefix, request.agency_id),
                         encode(request), key=request.request_id.encode("ascii"),
                         timeout=self._timeout_s)


@dataclass(frozen=True, slots=True)
class HubKeys:
    """One hub's re-identification key pair and the publisher of its requests."""

    private_key: X25519PrivateKey
    publisher: RequestPublisher

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes_raw()


class NoSuchRequest(Exception):
    """No such request of this user's hub about this alert (answered 404)."""


def _digest(*parts: bytes) -> bytes:
    return hashlib.sha256(b"\x1f".join(parts)).digest()


def request_record(row: InboxReidRequest, public_key: bytes) -> ReidRequest:
    return ReidRequest(
        request_id=row.request_id, alert_id=row.alert_id, hub_id=row.hub_id,
        agency_id=row.agency_id, reid_handles=tuple(row.reid_handles.split()),
        lawful_basis=LawfulBasis(row.lawful_basis), purpose=ReidPurpose(row.purpose),
        hub_public_key=public_key, user_ref=row.user_ref, requested_at=row.requested_at)


class HubReidentification:
    def __init__(self, hub: Hub, requests: ReidRequests, keys: Mapping[str, HubKeys]) -> None:
        self.hub = hub
        self.store = hub.store
        self.requests = requests
        self.keys = dict(keys)
        self.clock = hub.clock
        # A request is sent by the request that made it or, if the broker was away, by the
        # outbox round; one at a time, so the round cannot send a row its maker is sending.
        self._sending = threading.Lock()

    def _record(self, user: User, entries: list[tuple[AuditAction, str, bytes]], now: int
                ) -> None:
        """Audit entries as the user's hub, flushed: the step happens only once logged."""
        out = self.hub.outlet(user)
        with out.lock:
            for action, subject, digest in entries:
                out.audit.record(action, subject, user.ref, digest, now)
            out.audit.flush()

    def _keys(self, user: User) -> HubKeys:
        try:
            return self.keys[user.agency]
        except KeyError:
            raise NoSuchRequest(user.agency) from None

    def ask(self, user: User, notification_id: str, agencies: Collection[str],
            basis: LawfulBasis, purpose: ReidPurpose, basis_reason: str | None
            ) -> list[InboxReidRequest]:
        """Ask each chosen contributing agency; return the stored requests (sent or queued)."""
        keys = self._keys(user)
        alert = self.store.alert(user.agency, notification_id)
        if alert is None:
            raise NoSuchRequest(notification_id)
        handles: dict[str, list[str]] = {}
        for ref in alert.reidentification:
            handles.setdefault(ref.agency_id, []).append(ref.reid_handle)
        if not agencies:
            raise ValidationError("agencies", "choose at least one agency")
        unknown = [a for a in agencies if a not in handles]
        if unknown:
            raise ValidationError("agencies", "only agencies that contributed to the alert")
        reason = (basis_reason or "").strip() or None
        if basis is LawfulBasis.OTHER and reason is None:
            raise ValidationError("basis_reason", "required when the basis is 'other'")
        if reason is not None and len(reason) > MAX_BASIS_REASON:
            raise ValidationError("basis_reason", f"at most {MAX_BASIS_REASON} characters")
        now = self.clock()
        rows = []
        for agency in sorted(set(agencies)):
            row = InboxReidRequest(
                request_id=uuid.uuid4().hex, notification_id=notification_id,
                alert_id=alert.alert_id, hub_id=user.agency, agency_id=agency,
                reid_handles=" ".join(sorted(set(handles[agency]))), lawful_basis=basis.value,
                basis_reason=reason if basis is LawfulBasis.OTHER else None,
                purpose=purpose.value, user_ref=user.ref, requested_at=now, published_at=None,
                request_digest=b"", status="REQUESTED")
            row.request_digest = hashlib.sha256(encode(request_record(row, keys.public_key))
                                                ).digest()
            rows.append(row)
        self._record(user, [(AuditAction.REIDENTIFICATION_REQUESTED, row.alert_id,
                             row.request_digest) for row in rows], now)
        self.requests.add(rows)
        with self._sending:
            for row in rows:
                self._send(row)
        return rows

    def _send(self, row: InboxReidRequest) -> bool:
        """Publish a stored request; False (kept for the next round) if the broker is away."""
        keys = self.keys.get(row.hub_id)
        if keys is None:
            return False
        try:
            keys.publisher.publish(request_record(row, keys.public_key))
        except BrokerError:
            return False
        self.requests.mark_published(row.request_id, self.clock())
        row.published_at = self.clock()
        return True

    def send_pending(self) -> int:
        with self._sending:
            try:
                rows = self.requests.unpublished(self.keys)
            except StoreError:
                return 0
            return sum(self._send(row) for row in rows)

    def of_alert(self, user: User, notification_id: str) -> list[InboxReidRequest]:
        return self.requests.for_alert(user.agency, notification_id)

    def _answered(self, user: User, notification_id: str, request_id: str) -> InboxReidRequest:
        row = self.requests.get(user.agency, request_id)
        if row is None or row.notification_id != notification_id:
            raise NoSuchRequest(request_id)
        return row

    def open(self, user: User, notification_id: str, request_id: str, reason: ViewReason
             ) -> SharedIdentity:
        """The approved identity, after the view (with its reason) is in the audit log."""
        row = self._answered(user, notification_id, request_id)
        if row.status != ReidOutcome.APPROVED.value or row.sealed_identity is None:
            raise NoSuchRequest(request_id)
        now = self.clock()
        self._record(user, [(AuditAction.REIDENTIFICATION_VIEWED, row.alert_id,
                             _digest(row.request_id.encode(), reason.value.encode(),
                                     now.to_bytes(8, "big")))], now)
        self.requests.record_view(row.request_id, user.ref, reason.value, now)
        info = binding(row.request_id, row.alert_id, row.hub_id, row.agency_id)
        return open_sealed(row.sealed_identity, self._keys(user).private_key, info)

    def keep(self, user: User, notification_id: str, request_id: str) -> None:
        """Record a decision to keep an identity past its retention period."""
        row = self._answered(user, notification_id, request_id)
        if row.sealed_identity is None:
            raise NoSuchRequest(request_id)
        now = self.clock()
        self._record(user, [(AuditAction.REIDENTIFICATION_KEPT, row.alert_id,
                             _digest(row.request_id.encode(), now.to_bytes(8, "big")))], now)
        self.requests.keep(user.agency, request_id, user.ref, now)
