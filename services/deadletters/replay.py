"""Sending dead letters back to their source topic, once the cause is fixed; audited and marked.

Which letters may go (`plan`, pure): only to a topic the operator principal may write
(deploy/acl.py `replay_targets`: the ingress topics and `correlated`), and a letter already
replayed only when the operator says `--again`. Copies of one refused record (letters.py,
"Repeats") go once, and a replay of any copy counts as the record's. The topic a replay goes
to is the one the record was refused from, so every check of the consumer applies again: the
correlator still takes the agency from the topic and refuses an event whose payload names
another.

Per letter (`Replayer`), in this order, each acknowledged before the next: the original key and
value to the source topic, partitioned by the key as a producer's default partitioner does
(never pinned to the partition it came from: a record refused for being on the wrong partition
then lands where its key belongs), with a header naming the dead letter; a DEADLETTER_REPLAYED
audit entry; a replay marker on `deadletter`, which is how the next replay knows. A failure
between the first and the last leaves no marker, so running the replay again may send the record
twice: the consumers' idempotence (the correlator's per-event dedup, alert ids derived from
their cause, sinks keyed by id) makes that harmless, as for any redelivery.

The audit entry answers who, which dead letter and to where within AuditEntry's fields: the
service is the principal that sent it, the actor the operator (`--by`), the subject the replay
(`replay_id`: the dead letter's topic, partition, offset and how many replays came before), the
digest the SHA-256 of the value sent. An auditor, who may read the ingress topics but not
`deadletter`, finds the copy by its `safehub.replay.of` header (from which `replay_id` is
recomputed) and its value's digest, which is also the digest the correlator journals for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaProducer

from safehub.bus import send_and_confirm
from safehub.schemas.vocabulary import AuditAction
from safehub.services.audit.journal import AuditJournal
from safehub.services.deadletters.letters import (
    HEADER_REPLAY_AT,
    HEADER_REPLAY_BY,
    HEADER_REPLAY_OF,
    HEADER_REPLAY_TO,
    Contents,
    Letter,
    Position,
    RecordId,
    replay_reference,
)


@dataclass(frozen=True, slots=True)
class Refusal:
    position: Position
    why: str


@dataclass(frozen=True, slots=True)
class Plan:
    send: tuple[Letter, ...]
    refused: tuple[Refusal, ...]


@dataclass(frozen=True, slots=True)
class Replayed:
    letter: Letter
    topic: str
    partition: int
    offset: int
    marker: Position


def plan(contents: Contents, chosen: Iterable[Letter], targets: Iterable[str],
         again: bool) -> Plan:
    """What a replay of `chosen` would send, and what it refuses with the reason."""
    writable = set(targets)
    send: list[Letter] = []
    refused: list[Refusal] = []
    seen: set[RecordId] = set()
    for letter in chosen:
        if letter.record in seen:
            continue  # the same letter twice, or another copy of its record: sent once
        seen.add(letter.record)
        before = contents.record_replays(letter)
        if letter.source not in writable:
            refused.append(Refusal(letter.position, f"its source topic {letter.source} is not "
                                   "one a replay may write (the ingress topics and correlated)"))
        elif letter.key is None and letter.value is None:
            refused.append(Refusal(letter.position, "it has neither key nor value, which "
                                   "Kafka does not take"))
        elif before and not again:
            last = before[-1]
            refused.append(Refusal(letter.position, f"already replayed {len(before)} time(s), "
                                   f"last by {last.by} to {last.to}; --again sends it once more"))
        else:
            send.append(letter)
    return Plan(tuple(send), tuple(refused))


def replay_id(topic: str, letter: Letter, earlier: int) -> str:
    """The audit entry's subject: this dead letter's `earlier`+1-th replay. The same replay run
    again after a crash (no marker yet) gets the same id, so the audit sink drops the copy."""
    h = hashlib.sha256(b"safehub-deadletter-replay-v1")
    h.update(replay_reference(topic, letter.position))
    h.update(earlier.to_bytes(4, "big"))
    return h.hexdigest()[:32]


class Replayer:
    def __init__(self, producer: KafkaProducer, journal: AuditJournal, deadletter_topic: str,
                 actor: str, timeout_s: float = 60.0) -> None:
        self._producer = producer
        self._journal = journal
        self._topic = deadletter_topic
        self._actor = actor
        self._timeout_s = timeout_s

    def replay(self, letter: Letter, contents: Contents, now_ms: int) -> Replayed:
        """Send one dead letter back (BrokerError if the broker refuses or does not answer)."""
        ref = replay_reference(self._topic, letter.position)
        # kafka-python sends a None value as a Kafka null; the bus helper is typed for bytes.
        sent = send_and_confirm(self._producer, letter.source,
                                letter.value,  # type: ignore[arg-type]
                                key=letter.key, headers=[(HEADER_REPLAY_OF, ref)],
                                timeout=self._timeout_s)
        earlier = len(contents.replays_of(letter.position))
        self._journal.record(AuditAction.DEADLETTER_REPLAYED,
                             replay_id(self._topic, letter, earlier), self._actor,
                             hashlib.sha256(letter.value or b"").digest(), now_ms)
        self._journal.flush(self._timeout_s)
        to = f"{sent.topic}:{sent.partition}:{sent.offset}"
        marker = send_and_confirm(
            self._producer, self._topic, b"", key=None,
            headers=[(HEADER_REPLAY_OF, ref), (HEADER_REPLAY_TO, to.encode("ascii")),
                     (HEADER_REPLAY_BY, self._actor.encode("ascii")),
                     (HEADER_REPLAY_AT, str(now_ms).encode("ascii"))],
            timeout=self._timeout_s)
        return Replayed(letter, sent.topic, sent.partition, sent.offset,
                        Position(marker.partition, marker.offset))
