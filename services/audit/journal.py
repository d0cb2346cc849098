"""What every service uses to append to the `audit` topic.

An entry's id is derived from what it is about, not from when it was sent: a service that
redelivers after a crash writes the same entry id again, so the sink and the verifier can tell a
redelivered duplicate from a second, genuinely distinct decision.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError

from safehub.errors import BrokerError, ValidationError
from safehub.schemas.codec import encode
from safehub.schemas.records import AuditEntry
from safehub.schemas.vocabulary import AuditAction

DIGEST_BYTES = 32


def entry_id_for(
    service: str, action: AuditAction, subject_id: str, actor: str, digest: bytes
) -> str:
    """32 hex chars over the entry's cause; length-prefixed so no two field splits collide."""
    h = hashlib.sha256(b"safehub-audit-entry-v1")
    for part in (service.encode(), str(action).encode(), subject_id.encode(), actor.encode(),
                 digest):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.hexdigest()[:32]


def make_entry(
    service: str, action: AuditAction, subject_id: str, actor: str, digest: bytes, at_ms: int
) -> AuditEntry:
    if len(digest) != DIGEST_BYTES:
        raise ValidationError("digest", "must be a 32-byte SHA-256")
    return AuditEntry(
        entry_id=entry_id_for(service, action, subject_id, actor, digest),
        service=service,
        action=action,
        subject_id=subject_id,
        actor=actor,
        at=at_ms,
        digest=digest,
    )


class Audit(Protocol):
    """What a service needs of its journal (tests may pass a recording fake)."""

    def record(self, action: AuditAction, subject_id: str, actor: str, digest: bytes,
               at_ms: int) -> None: ...

    def flush(self, timeout: float = 60.0) -> None: ...


class AuditJournal:
    """Appends AuditEntry records for one service.

    `record` only queues the send; call `flush` before committing the input offsets, so that an
    offset is never committed for a decision whose audit entry the broker has not acknowledged.
    """

    def __init__(self, producer: KafkaProducer, topic: str, service: str) -> None:
        self._producer = producer
        self._topic = topic
        self._service = service
        self._pending: list[Any] = []

    @property
    def topic(self) -> str:
        return self._topic

    def record(
        self, action: AuditAction, subject_id: str, actor: str, digest: bytes, at_ms: int
    ) -> None:
        entry = make_entry(self._service, action, subject_id, actor, digest, at_ms)
        try:
            # No key: `audit` has one partition, so arrival order is the log's total order.
            self._pending.append(self._producer.send(self._topic, value=encode(entry)))
        except KafkaError as exc:
            raise BrokerError(f"audit entry to {self._topic} not queued: {exc}") from exc

    def flush(self, timeout: float = 60.0) -> None:
        """Block until every recorded entry is acknowledged; raise BrokerError if any is not."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            self._producer.flush(timeout)
        except KafkaError as exc:
            raise BrokerError(f"audit entries to {self._topic} not flushed: {exc}") from exc
        failed = 0
        first: Exception | None = None
        for fut in pending:
            try:
                fut.get(0)
            except KafkaError as exc:
                failed += 1
                first = first or exc
        if failed:
            raise BrokerError(
                f"{failed} of {len(pending)} audit entries to {self._topic} not acknowledged: "
                f"{first}"
            )
