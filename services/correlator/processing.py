"""One batch of ingress messages through the contract, the core, the journal and the outputs.

Kept apart from faust so the same code is timed by the benchmark and read in one place. Per
message, in arrival order: the agency is taken from the topic; the bytes are decoded and
validated (a failure goes to `deadletter` with its reason and an EVENT_DEADLETTERED entry); the
message key must be the event's linkage block, and the message must be on the partition Kafka's
default partitioner gives that key (else the block's events could be split between workers:
the worker owning a partition holds the state of the blocks keyed to it); an event beyond the
history limit (more than the rules' `lateness_days` behind the newest event of its block, see
core.py) goes to `deadletter` with that reason and an
EVENT_DEADLETTERED entry naming the event and its agency, and is not fed to `step`; so is an
event that would take its block's state past the core's caps (`block_full`); otherwise
`step` runs on the block's state, an EVENT_ACCEPTED entry is journalled, and each alert is sent
to `correlated` keyed by its cluster id with an ALERT_EMITTED entry. An accepted event whose id
another agency's held event already has (ids are predictable: a careless or hostile agency
can reuse one) counts like any other, and is also reported on `deadletter` with that reason
(but journalled as accepted only, so replay feeds it as the processor did).

`process` does no output: it returns the batch's dead letters, alerts and audit entries (the
last two encoded) for the shell to send; the shell has them acknowledged, dead letters first,
then saves the blocks' states, and only then lets the input offsets be committed. A crash at
any point therefore re-runs messages whose effects may already be out: the same state and
events give the same alert ids and audit entry ids, which every sink drops as duplicates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from kafka.partitioner.default import murmur2

from safehub.errors import ValidationError
from safehub.schemas.codec import (
    HEADER_BYTES,
    MARKER,
    decode,
    encode,
    known_fingerprints,
    schema_name,
)
from safehub.schemas.records import IngressEvent, MissingEpisodeEvent, WarningSignEvent
from safehub.schemas.validation import LINKAGE_BLOCKS, agency_from_topic, validate_ingress
from safehub.schemas.vocabulary import AuditAction
from safehub.services.audit.journal import make_entry
from safehub.services.correlation.core import (
    MAX_BLOCK_EPOCHS,
    MAX_BLOCK_EVENTS,
    MAX_BLOCK_KEYS,
    BlockState,
    block_full,
    id_collision,
    step,
    too_late,
)
from safehub.services.correlation.linking import block_key, block_subject
from safehub.services.correlation.rules import Rules

SERVICE = "correlator"
DAY_MS = 86_400_000
FAR_FUTURE_MS = 2**62  # a `now` after every time a record can carry
LATE_RULE = "is beyond the history limit ({days} days behind the newest event of its block)"
UNKNOWN_AGENCY = "unknown"
FULL_RULE = (f"its linkage block holds the most the hub keeps for one block ({MAX_BLOCK_EVENTS} "
             f"events, {MAX_BLOCK_KEYS} match keys, {MAX_BLOCK_EPOCHS} key epochs within the "
             "history limit)")
COLLISION_RULE = ("is also the id of another agency's event in this block: both events are "
                  "correlated; reported so that the agencies can check how they make ids")


# Incoming and Rejected say how they are pickled (`__reduce__`): one of each crosses the pipe
# to the child process (offload.py) for every record of a batch, and a slotted dataclass's own
# pickling looks its fields up again for each one (~8% of the worker's main loop under a
# malformed flood, bench/flood_bench.py; 3.3 ms against 1.0 ms to pickle and unpickle 1,000).
@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def __reduce__(self) -> tuple[type[Incoming], tuple[Any, ...]]:
        return Incoming, (self.topic, self.partition, self.offset, self.key, self.value)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message of the batch that breaks the contract: it goes to `deadletter`."""

    index: int  # in the batch
    field: str
    rule: str
    detail: str

    def error(self) -> ValidationError:
        return ValidationError(self.field, self.rule, self.detail)

    def __reduce__(self) -> tuple[type[Rejected], tuple[Any, ...]]:
        return Rejected, (self.index, self.field, self.rule, self.detail)


@dataclass(frozen=True, slots=True)
class BatchResult:
    states: dict[int, BlockState]  # the blocks this batch changed (or touched), by block
    rejected: list[Rejected]  # to dead-letter before any audit entry is sent
    alerts: list[tuple[bytes, bytes]]  # (cluster id key, encoded alert), in emission order
    audit: list[bytes]  # encoded audit entries, in processing order
    accepted: int
    tiers: dict[str, int]  # alerts raised by tier (for the worker's metrics)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java's and kafka-python's, which faust's
    table uses too) gives `key` among `partitions`: murmur2, made positive, modulo."""
    # kafka-python has no type hints: murmur2 returns an int.
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@cache
def _ingress_headers() -> frozenset[bytes]:
    names = {schema_name(WarningSignEvent), schema_name(MissingEpisodeEvent)}
    return frozenset(MARKER + fp for name, fp in known_fingerprints() if name in names)


def may_be_event(key: bytes | None, value: bytes | None) -> bool:
    """Whether a record could pass `admit`, by a look at its key (a linkage block) and at its
    schema header (an ingress event's, of any version the codec reads), without decoding it.
    Every malformed record of a flood that is not made to pass this fails it; a record that
    passes may still be refused. For fairness.py, which serves partitions holding events first."""
    return (key is not None and len(key) == 4 and int.from_bytes(key, "big") < LINKAGE_BLOCKS
            and value is not None and value[:HEADER_BYTES] in _ingress_headers())


class BatchProcessor:
    def __init__(self, rules: Rules, prefix: str, partitions: int | None = None) -> None:
        """`partitions`: the ingress topics' (and the state table's) partition count, to check
        that each record is on its key's partition; None skips the check (one partition, or
        tests of the rest)."""
        self._rules = rules
        self._prefix = prefix
        self._partitions = partitions
        # topic -> its agency: parsed once per topic, not once per record (a flood is many
        # records on one topic). A name that is no ingress topic is not kept: it raises.
        self._agencies: dict[str, str] = {}

    def agency_of(self, topic: str) -> str:
        """The agency whose ingress topic this is (ValidationError if it is not one)."""
        agency = self._agencies.get(topic)
        if agency is None:
            agency = self._agencies[topic] = agency_from_topic(topic, self._prefix)
        return agency

    def admit(self, message: Incoming, now_ms: int) -> IngressEvent:
        """The event in `message`, or ValidationError saying which rule it breaks."""
        agency = self.agency_of(message.topic)
        record = decode(message.value)
        if not isinstance(record, WarningSignEvent | MissingEpisodeEvent):
            raise ValidationError("value", "is not an ingress event")
        validate_ingress(record, agency, now_ms)
        if message.key != block_key(record.subject.linkage_block):
            raise ValidationError("key", "is not the event's linkage block (4 bytes big-endian)")
        if (self._partitions is not None
                and message.partition != partition_for(message.key, self._partitions)):
            # Written by a producer with another partitioner: its block's state lives with
            # the worker of the key's partition, which would never see this event.
            raise ValidationError("partition", "is not the partition Kafka's default "
                                               "partitioner gives the record's key")
        return record

    def refused_at_any_time(self, message: Incoming) -> bool:
        """Whether `admit` refuses `message` whenever it is asked: for a reason other than a
        time in the future, the one rule that depends on when (schemas/validation.py)."""
        try:
            self.admit(message, FAR_FUTURE_MS)
        except ValidationError:
            return True
        return False

    def process(
        self, batch: Sequence[Incoming], load: Callable[[int], BlockState], now: int
    ) -> BatchResult:
        """Run the batch at time `now`: new block states, and what to send."""
        states: dict[int, BlockState] = {}
        rejected: list[Rejected] = []
        alerts: list[tuple[bytes, bytes]] = []
        audit: list[bytes] = []
        tiers: dict[str, int] = {}
        accepted = 0
        for index, message in enumerate(batch):
            digest = hashlib.sha256(message.value or b"").digest()
            try:
                event = self.admit(message, now)
            except ValidationError as exc:
                rejected.append(Rejected(index, exc.field, exc.rule, exc.detail))
                audit.append(self._deadletter_entry(message, digest, now))
                continue
            block = event.subject.linkage_block
            state = states.get(block)
            if state is None:
                state = load(block)
            if too_late(self._rules, state, event):
                days = self._rules.lateness_ms // DAY_MS
                behind = -(-(state.watermark - event.occurred_at) // DAY_MS)
                rejected.append(Rejected(
                    index, "occurred_at", LATE_RULE.format(days=days),
                    f"it is {behind} days behind its linkage block's newest event"))
                # Named by the event and its agency, so the agency can be told which record.
                audit.append(_entry(AuditAction.EVENT_DEADLETTERED, event.event_id,
                                    event.agency_id, digest, now))
                continue
            if block_full(self._rules, state, event):
                rejected.append(Rejected(index, "subject.linkage_block", FULL_RULE,
                                         "a flood into one block, or a broken producer"))
                audit.append(_entry(AuditAction.EVENT_DEADLETTERED, event.event_id,
                                    event.agency_id, digest, now))
                continue
            if id_collision(state, event):
                rejected.append(Rejected(index, "event_id", COLLISION_RULE,
                                         "reported, not refused: the event is accepted"))
            states[block], raised = step(self._rules, state, event)
            audit.append(_entry(AuditAction.EVENT_ACCEPTED, event.event_id, event.agency_id,
                                digest, now))
            accepted += 1
            for alert in raised:
                data = encode(alert)
                alerts.append((alert.cluster_id.encode("ascii"), data))
                tiers[alert.tier.value] = tiers.get(alert.tier.value, 0) + 1
                audit.append(_entry(AuditAction.ALERT_EMITTED, alert.alert_id, SERVICE,
                                    hashlib.sha256(data).digest(), now))
        return BatchResult(states, rejected, alerts, audit, accepted, tiers)

    def _deadletter_entry(self, message: Incoming, digest: bytes, now: int) -> bytes:
        try:
            actor = self.agency_of(message.topic)
        except ValidationError:
            actor = UNKNOWN_AGENCY
        # The event id may be unreadable; the entry is about the bytes, named by their digest.
        return _entry(AuditAction.EVENT_DEADLETTERED, digest.hex()[:32], actor, digest, now)


def reset_entry(block: int, unreadable: bytes, now: int) -> bytes:
    """The journal entry for a block whose saved state could not be read and that goes on
    empty: replay must empty its own copy of the block at the same point, or the alerts it
    re-derives would count history the worker no longer had. The digest is the unreadable
    record's, which the dead-letter topic keeps."""
    return _entry(AuditAction.BLOCK_STATE_RESET, block_subject(block), SERVICE,
                  hashlib.sha256(unreadable).digest(), now)


def _entry(action: AuditAction, subject_id: str, actor: str, digest: bytes, now: int) -> bytes:
    return encode(make_entry(SERVICE, action, subject_id, actor, digest, now))
