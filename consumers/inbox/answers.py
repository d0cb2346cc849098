"""Answers to this hub's re-identification requests (`reid-responses.<hub>`): checked, stored
sealed, audited. A response is accepted only if it answers a request this hub sent, to the
agency that answers, about the same alert, and (when approved) its sealed identity opens with
this hub's key for exactly that request; anything else goes to the dead-letter topic with the
reason and an audit entry, and never reaches the inbox.

Any agency may write to a hub's response topic, so the request id is what authenticates an
answer: it is random, and only the hub and the agency asked ever saw it (`reid-requests.<agency>`
is readable by that agency alone).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safehub import topics
from safehub.consumers.inbox.models import InboxReidRequest
from safehub.consumers.inbox.requests import ReidRequests
from safehub.errors import ValidationError
from safehub.schemas.records import ReidResponse
from safehub.schemas.vocabulary import AuditAction, ReidOutcome
from safehub.services.audit.journal import Audit
from safehub.services.reid.sealing import SealError, binding, open_sealed


def topic_hub(topic: str, prefix: str) -> str:
    return topics.party_of(topic, topics.Family.REID_RESPONSES, prefix)


def check(response: ReidResponse, hub: str, request: InboxReidRequest | None,
          private_key: X25519PrivateKey) -> None:
    """Raise ValidationError (field and rule) unless `response` answers `request` of `hub`."""
    if response.hub_id != hub:
        raise ValidationError("hub_id", "differs from the topic's hub")
    if request is None:
        raise ValidationError("request_id", "answers no request of this hub")
    if response.agency_id != request.agency_id:
        raise ValidationError("agency_id", "not the agency the request went to")
    if response.alert_id != request.alert_id:
        raise ValidationError("alert_id", "not the alert of the request")
    if request.response_id is not None and request.response_id != response.response_id:
        raise ValidationError("request_id", "already answered")
    approved = response.outcome is ReidOutcome.APPROVED
    if approved != (response.sealed_identity is not None):
        raise ValidationError("sealed_identity", "present if and only if approved")
    if (response.outcome is ReidOutcome.DECLINED) != (response.decline_reason is not None):
        raise ValidationError("decline_reason", "present if and only if declined")
    if response.sealed_identity is not None:
        info = binding(request.request_id, request.alert_id, hub, request.agency_id)
        try:
            open_sealed(response.sealed_identity, private_key, info)  # checked, then forgotten
        except SealError:
            raise ValidationError(
                "sealed_identity",
                "does not open with this hub's key for this request (tampered or moved)",
            ) from None


@dataclass
class AnswerDesk:
    """One hub's answers: check, store, audit. Used by that hub's inbox consumer."""

    hub: str
    requests: ReidRequests
    private_key: X25519PrivateKey
    retention_ms: int
    audit: Audit

    def take(self, response: ReidResponse, raw: bytes, now: int) -> None:
        """Store a checked answer and audit its delivery; raise ValidationError (after auditing
        the rejection) for one that fails its checks."""
        digest = hashlib.sha256(raw).digest()
        request = self.requests.get(self.hub, response.request_id)
        try:
            check(response, self.hub, request, self.private_key)
        except ValidationError:
            subject = request.alert_id if request is not None else response.request_id
            self.audit.record(AuditAction.REIDENTIFICATION_REJECTED, subject,
                              _slug(response.agency_id), digest, now)
            raise
        answered = self.requests.answer(response, now, self.retention_ms)
        if answered.new:
            self.audit.record(AuditAction.REIDENTIFICATION_DELIVERED, response.alert_id,
                              response.agency_id, digest, now)

    def expire(self, now: int) -> int:
        """Drop the identities past retention (unless kept); audit each; return how many."""
        expired = self.requests.expire([self.hub], now)
        for row in expired:
            digest = hashlib.sha256(f"{row.request_id}:{row.expires_at}".encode()).digest()
            self.audit.record(AuditAction.REIDENTIFICATION_EXPIRED, row.alert_id, self.hub,
                              digest, now)
        if expired:
            self.audit.flush()
        return len(expired)


def _slug(agency_id: str) -> str:
    # The claimed agency of a rejected answer is only a claim, but the schema's pattern already
    # made it a registry-shaped slug; keep it within the audit field's bound.
    return agency_id[:64]

