"""The key service's audit trail on Kafka: quota refusals as AuditEntry records on `audit`,
written as the `keyservice` principal (its only right on the cluster). A thin shell: the entry
is built by the journal from what server.refusal_subject and refusal_digest derive."""

from __future__ import annotations

import logging
import threading

from kafka import KafkaProducer

from safehub import topics
from safehub.bus import make_producer
from safehub.connection import KafkaConnection
from safehub.deploy.registry import Service
from safehub.schemas.vocabulary import AuditAction
from safehub.services.audit.journal import AuditJournal
from safehub.services.keyservice.quota import Refusal
from safehub.services.keyservice.server import refusal_digest, refusal_subject

log = logging.getLogger(__name__)
FLUSH_TIMEOUT_S = 10.0


class KafkaAudit:
    """The server's `audit` callable. Each refusal is flushed before the 429 is answered, so a
    refusal the caller saw is one the broker acknowledged (refusals are rare: no batching)."""

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self._producer = producer
        self._journal = AuditJournal(producer, topic, Service.KEYSERVICE)
        self._lock = threading.Lock()  # the journal's pending list is not thread-safe

    @classmethod
    def connect(cls, kafka: KafkaConnection, prefix: str = "") -> KafkaAudit:
        return cls(make_producer(kafka, client_id=f"{prefix}keyservice"),
                   topics.audit(prefix))

    def __call__(self, refusal: Refusal, epoch: int) -> None:
        with self._lock:
            self._journal.record(
                AuditAction.KEY_QUOTA_REFUSED,
                refusal_subject(refusal.agency, epoch, refusal.at_ms),
                refusal.agency,
                refusal_digest(refusal, epoch),
                refusal.at_ms,
            )
            self._journal.flush(FLUSH_TIMEOUT_S)

    def close(self) -> None:
        self._producer.close(timeout=FLUSH_TIMEOUT_S)
