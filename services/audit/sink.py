"""The audit sink: reads `audit` from the start into the SQL ledger and signs checkpoints.

Every record on the topic becomes a leaf, byte for byte, in offset order, including one that
does not decode (it is also dead-lettered with the reason): leaving it out would make the log
and the topic disagree and hide exactly what an auditor must see.

The ledger, not a consumer group, holds the position: on restart the sink resumes after the last
stored offset, so a crash between the SQL commit and anything else can neither skip nor
duplicate a leaf. That is also its error policy (POLICY, run by safehub.consuming's loop): a
broker or database failure stops the sink (exit 75) rather than being retried in-process, and
the restarted sink resumes from its ledger.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from nacl.signing import SigningKey

from safehub.bus import close_producer, make_consumer, make_producer, send_and_confirm
from safehub.clock import wall_clock_ms
from safehub.connection import KafkaConnection
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consuming import EXIT_TEMPORARY, Action, Batch, ConsumeLoop, ErrorPolicy, Rule
from safehub.errors import BrokerError, StoreError, ValidationError
from safehub.observability.watch import ServiceWatch
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import AuditEntry
from safehub.schemas.vocabulary import AuditAction
from safehub.services.audit.checkpoint import SignedCheckpoint, TreeHead, sign
from safehub.services.audit.journal import make_entry
from safehub.services.audit.ledger import (
    Ledger,
    NewEntry,
    StoredCheckpoint,
    create_schema,
    open_engine,
)
from safehub.services.audit.merkle import CompactRange, leaf_hash

log = logging.getLogger(__name__)

SERVICE = "audit-sink"
CHECKPOINT_HEADER = "safehub-checkpoint"
# A record that does not decode is kept as a leaf all the same and dead-lettered before it is
# stored (by the sink itself, so that a failure re-reads it: the ledger holds the position).
# The broker or the database failing stops the sink with 75: restarted, it resumes after its
# last stored leaf, and nothing in memory (the tree, the checkpoint count) can drift from the
# ledger. Anything else is a bug (70).
POLICY = ErrorPolicy(
    SERVICE,
    (Rule((ValidationError,), Action.DEAD_LETTER),
     Rule((BrokerError, StoreError, KafkaError, OSError), Action.STOP, EXIT_TEMPORARY)),
)


@dataclass(frozen=True, slots=True)
class SinkSettings:
    kafka: KafkaConnection  # as `audit-sink`: reads and writes `audit`, writes `deadletter`
    audit_topic: str
    deadletter_topic: str
    database_url: str
    origin: str  # names the log in every checkpoint, e.g. "safehub.example/audit"
    key_file: Path | None
    checkpoint_every: int  # entries
    checkpoint_interval_ms: int


def parse_entry(raw: bytes) -> AuditEntry:
    return decode(raw, AuditEntry)


def new_entry(offset: int, raw: bytes) -> tuple[NewEntry, AuditEntry | None, Exception | None]:
    """What the ledger stores for one topic record; pure."""
    try:
        entry: AuditEntry | None = parse_entry(raw)
        error: Exception | None = None
    except ValidationError as exc:
        entry, error = None, exc
    return (
        NewEntry(
            topic_offset=offset,
            entry_id=entry.entry_id if entry else None,
            service=entry.service if entry else None,
            action=str(entry.action) if entry else None,
            subject_id=entry.subject_id if entry else None,
            at_ms=entry.at if entry else None,
            raw=raw,
            leaf_hash=leaf_hash(raw),
        ),
        entry,
        error,
    )


class AuditSink:
    """One partition in, ledger rows and signed checkpoints out."""

    def __init__(self, settings: SinkSettings, key: SigningKey, ledger: Ledger,
                 consumer: KafkaConsumer, producer: KafkaProducer,
                 now_ms: Callable[[], int], watch: ServiceWatch | None = None) -> None:
        self._s = settings
        self.watch = watch or ServiceWatch(SERVICE)
        self._key = key
        self._ledger = ledger
        self._consumer = consumer
        self._producer = producer
        self._now_ms = now_ms
        self._tree = CompactRange()
        for h in ledger.leaf_hashes():
            self._tree.append(h)
        self._since_checkpoint = 0  # entries other than our own checkpoints
        self._last_checkpoint_ms = now_ms()
        self._part = TopicPartition(settings.audit_topic, 0)
        consumer.assign([self._part])
        nxt = ledger.next_offset()
        if nxt is None:
            consumer.seek_to_beginning(self._part)
        else:
            consumer.seek(self._part, nxt)
        self._deadletter = DeadLetterSink(producer, settings.deadletter_topic)
        # No dead letters through the loop and no commit: see POLICY.
        self._loop = ConsumeLoop(consumer, self, POLICY, None, self.watch, SERVICE, log,
                                 commits=False)

    @property
    def size(self) -> int:
        return self._tree.size

    def poll_once(self, timeout_ms: int = 500) -> int:
        """Store whatever arrived; checkpoint if due. Returns how many entries were stored.
        Raises ServiceStopped (exit 75) if the broker or the database failed."""
        return self._loop.step(None, timeout_ms)

    def handle(self, batch: Batch) -> None:
        batches = batch.batches
        records = [r for part in sorted(batches, key=lambda p: p.partition)
                   for r in batches[part]]
        stored: list[NewEntry] = []
        for rec in records:
            raw = rec.value if rec.value is not None else b""
            row, entry, error = new_entry(rec.offset, raw)
            if error is not None:
                self._dead_letter(rec.value, rec.key, rec.partition, rec.offset, error)
            if entry is None or entry.action != AuditAction.CHECKPOINT:
                self._since_checkpoint += 1
            stored.append(row)
            # Checkpoint every N entries exactly, even inside one large batch: the finer the
            # checkpoints, the narrower the interval verify can name without the topic.
            if self._since_checkpoint >= self._s.checkpoint_every:
                self._store(stored)
                stored = []
                self.checkpoint()
        self._store(stored)
        if self._checkpoint_due():
            self.checkpoint()

    def reset(self) -> None:
        """Never called: POLICY retries nothing in-process (a restart rebuilds from the ledger)."""

    def _store(self, rows: list[NewEntry]) -> int:
        self._ledger.append(self._tree.size, rows)
        for row in rows:
            self._tree.append(row.leaf_hash)
        return len(rows)

    @property
    def unsigned_entries(self) -> int:
        """Entries stored since the last signed checkpoint (our own checkpoints excluded)."""
        return self._since_checkpoint

    def close(self) -> None:
        self._consumer.close(autocommit=False)
        close_producer(self._producer, 30, "audit sink")

    def _checkpoint_due(self) -> bool:
        if self._since_checkpoint == 0:
            return False
        if self._since_checkpoint >= self._s.checkpoint_every:
            return True
        return self._now_ms() - self._last_checkpoint_ms >= self._s.checkpoint_interval_ms

    def checkpoint(self) -> SignedCheckpoint:
        """Sign the current head, keep it in the ledger, and publish it on `audit`."""
        now = self._now_ms()
        signed = sign(TreeHead(self._s.origin, self._tree.size, self._tree.root()), self._key)
        note = signed.note()
        self._ledger.add_checkpoint(
            StoredCheckpoint(signed.head.size, signed.head.root, note, now))
        # The entry puts the checkpoint's digest into the log itself; the header carries the
        # note so a verifier can recover every checkpoint from the topic alone.
        entry = make_entry(SERVICE, AuditAction.CHECKPOINT, signed.head.root.hex()[:32],
                           SERVICE, hashlib.sha256(note.encode()).digest(), now)
        send_and_confirm(self._producer, self._s.audit_topic, encode(entry),
                         headers=[(CHECKPOINT_HEADER, note.encode())])
        self.watch.metrics.produced(self._s.audit_topic)
        self._since_checkpoint = 0
        self._last_checkpoint_ms = now
        log.info("checkpoint: tree size %d", signed.head.size)
        return signed

    def _dead_letter(self, value: bytes | None, key: bytes | None, partition: int,
                     offset: int, error: Exception) -> None:
        self._deadletter.send(value, key, self._s.audit_topic, partition, offset, error)
        self.watch.metrics.dead_letter(self._s.audit_topic, error)
        log.warning("audit record at offset %d did not decode: %s", offset, error)


def open_sink(settings: SinkSettings, key: SigningKey,
              watch: ServiceWatch | None = None) -> AuditSink:
    engine = open_engine(settings.database_url)
    create_schema(engine)
    # No consumer group (the ledger holds the position): the sink's principal has none.
    consumer = make_consumer(settings.kafka, None, client_id=SERVICE)
    producer = make_producer(settings.kafka, SERVICE)
    sink = AuditSink(settings, key, Ledger(engine), consumer, producer,
                     wall_clock_ms, watch)
    if watch is not None:
        watch.serve(settings.kafka, engine, consumers=[SERVICE])
    return sink


def run_until_stopped(sink: AuditSink, stop: threading.Event) -> None:
    while not stop.is_set():
        sink.poll_once()
    # A clean stop signs what arrived since the last checkpoint, so that verify can hold every
    # stored entry to a signature, not only to the topic.
    if sink.unsigned_entries:
        sink.checkpoint()

