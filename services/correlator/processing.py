"""One batch of ingress messages through the contract, the core, the journal and the outputs.

Kept apart from faust so the same code is timed by the benchmark and read in one place. Per
message, in arrival order: the agency is taken from the topic; the bytes are decoded and
validated (a failure goes to `deadletter` with its reason and an EVENT_DEADLETTERED entry); the
message key must be the event's linkage block (else the block's events could be split between
workers); then `step` runs on the block's state, an EVENT_ACCEPTED entry is journalled, and each
alert is sent to `correlated` keyed by its cluster id with an ALERT_EMITTED entry.

`process` returns only after every alert and audit entry of the batch is acknowledged; the
caller then saves the blocks' states and only then lets the input offsets be committed. A crash
at any point therefore re-runs messages whose effects may already be out: the same state and
events give the same alert ids and audit entry ids, which every sink drops as duplicates.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from safehub.consumers.deadletter import DeadLetterSink
from safehub.errors import BrokerError, ValidationError
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import IngressEvent, MissingEpisodeEvent, WarningSignEvent
from safehub.schemas.validation import agency_from_topic, validate_ingress
from safehub.schemas.vocabulary import AuditAction
from safehub.services.audit.journal import AuditJournal
from safehub.services.correlation.core import BlockState, step
from safehub.services.correlation.rules import Rules

log = logging.getLogger(__name__)

SERVICE = "correlator"
UNKNOWN_AGENCY = "unknown"


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class BatchResult:
    states: dict[int, BlockState]  # the blocks this batch changed (or touched), by block
    accepted: int
    deadlettered: int
    alerts: int


def block_key(block: int) -> bytes:
    """The Kafka key of a linkage block: 4 bytes big-endian (as the producers write it)."""
    return block.to_bytes(4, "big")


class BatchProcessor:
    def __init__(
        self,
        rules: Rules,
        prefix: str,
        producer: KafkaProducer,
        correlated_topic: str,
        journal: AuditJournal,
        deadletters: DeadLetterSink,
        clock_ms: Callable[[], int],
    ) -> None:
        self._rules = rules
        self._prefix = prefix
        self._producer = producer
        self._correlated = correlated_topic
        self._journal = journal
        self._deadletters = deadletters
        self._clock_ms = clock_ms
        self._sent: list[Any] = []

    def admit(self, message: Incoming, now_ms: int) -> IngressEvent:
        """The event in `message`, or ValidationError saying which rule it breaks."""
        agency = agency_from_topic(message.topic, self._prefix)
        record = decode(message.value)
        if not isinstance(record, WarningSignEvent | MissingEpisodeEvent):
            raise ValidationError("value", "is not an ingress event")
        validate_ingress(record, agency, now_ms)
        if message.key != block_key(record.subject.linkage_block):
            raise ValidationError("key", "is not the event's linkage block (4 bytes big-endian)")
        return record

    def process(
        self, batch: Sequence[Incoming], load: Callable[[int], BlockState]
    ) -> BatchResult:
        """`prepare` then `confirm`: the whole batch, acknowledged."""
        result = self.prepare(batch, load)
        self.confirm()
        return result

    def prepare(
        self, batch: Sequence[Incoming], load: Callable[[int], BlockState]
    ) -> BatchResult:
        """Run the batch and queue its outputs (dead letters are confirmed one by one)."""
        now = self._clock_ms()
        states: dict[int, BlockState] = {}
        sent: list[Any] = []
        accepted = deadlettered = 0
        for message in batch:
            digest = hashlib.sha256(message.value or b"").digest()
            try:
                event = self.admit(message, now)
            except ValidationError as exc:
                self._deadletter(message, exc, digest, now)
                deadlettered += 1
                continue
            block = event.subject.linkage_block
            state = states.get(block)
            if state is None:
                state = load(block)
            states[block], alerts = step(self._rules, state, event)
            self._journal.record(AuditAction.EVENT_ACCEPTED, event.event_id, event.agency_id,
                                 digest, now)
            accepted += 1
            for alert in alerts:
                data = encode(alert)
                try:
                    sent.append(self._producer.send(
                        self._correlated, key=alert.cluster_id.encode("ascii"), value=data))
                except KafkaError as exc:
                    raise BrokerError(f"alert to {self._correlated} not queued: {exc}") from exc
                self._journal.record(AuditAction.ALERT_EMITTED, alert.alert_id, SERVICE,
                                     hashlib.sha256(data).digest(), now)
        self._sent.extend(sent)
        return BatchResult(states, accepted, deadlettered, len(sent))

    def confirm(self) -> None:
        """Block until every alert and audit entry queued by `prepare` is acknowledged."""
        sent, self._sent = self._sent, []
        self._confirm(sent)
        self._journal.flush()

    def _deadletter(self, message: Incoming, error: ValidationError, digest: bytes,
                    now: int) -> None:
        self._deadletters.send_record(message, error, now)
        try:
            actor = agency_from_topic(message.topic, self._prefix)
        except ValidationError:
            actor = UNKNOWN_AGENCY
        # The event id may be unreadable; the entry is about the bytes, named by their digest.
        self._journal.record(AuditAction.EVENT_DEADLETTERED, digest.hex()[:32], actor, digest,
                             now)

    def _confirm(self, sent: list[Any]) -> None:
        if not sent:
            return
        try:
            self._producer.flush(60)
            for fut in sent:
                fut.get(0)
        except KafkaError as exc:
            raise BrokerError(f"alert to {self._correlated} not acknowledged: {exc}") from exc
