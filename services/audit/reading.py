"""Read-only access to topics for auditors: no consumer group, no commits, no writes.

A topic is read from its beginning (or from a time) up to the end offsets it had when reading
started, so a run is a well-defined snapshot even while the live system keeps writing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from safehub.bus import make_consumer
from safehub.errors import BrokerError


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


class SnapshotReader:
    """Reads fixed topics from start (or a time) to the end offsets seen at construction."""

    def __init__(self, bootstrap: str, topics: Sequence[str], *, from_ms: int | None = None,
                 client_id: str = "safehub-auditor", consumer: KafkaConsumer | None = None
                 ) -> None:
        # group_id=None: the auditor has no group, commits nothing, and cannot disturb any
        # live consumer's position.
        self._consumer = consumer or make_consumer(bootstrap, None, client_id=client_id,
                                                   max_poll_records=10_000)
        try:
            parts: list[TopicPartition] = []
            for topic in topics:
                ids = self._consumer.partitions_for_topic(topic)
                if not ids:
                    raise BrokerError(f"topic {topic} does not exist")
                parts += [TopicPartition(topic, p) for p in sorted(ids)]
            self._consumer.assign(parts)
            self._end = {tp: off for tp, off in self._consumer.end_offsets(parts).items()}
            if from_ms is None:
                self._consumer.seek_to_beginning(*parts)
                self._start = self._consumer.beginning_offsets(parts)
            else:
                found = self._consumer.offsets_for_times({tp: from_ms for tp in parts})
                self._start = {}
                for tp in parts:
                    hit = found.get(tp)
                    offset = self._end[tp] if hit is None else hit.offset
                    self._consumer.seek(tp, offset)
                    self._start[tp] = offset
        except KafkaError as exc:
            raise BrokerError(f"cannot read {', '.join(topics)}: {exc}") from exc

    @property
    def total(self) -> int:
        """How many records the snapshot holds (an upper bound: offsets may have gaps)."""
        return sum(max(0, self._end[tp] - self._start[tp]) for tp in self._end)

    def batches(self, timeout_ms: int = 1000) -> Iterator[list[Record]]:
        """Records in batches; within a partition in offset order."""
        pending = {tp for tp in self._end if self._start[tp] < self._end[tp]}
        idle = 0
        try:
            while pending:
                polled = self._consumer.poll(timeout_ms=timeout_ms)
                if not polled:
                    idle += 1
                    if idle > 30:
                        raise BrokerError("topic snapshot stopped arriving before its end")
                    continue
                idle = 0
                out: list[Record] = []
                for tp, recs in polled.items():
                    end = self._end.get(tp, 0)
                    out.extend(
                        Record(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value,
                               tuple((k, bytes(v)) for k, v in r.headers or ()))
                        for r in recs if r.offset < end
                    )
                # Position, not the last record, says when a partition is done: the end may
                # sit behind control markers that never come out as records.
                for tp in list(pending):
                    if self._consumer.position(tp) >= self._end[tp]:
                        pending.discard(tp)
                        self._consumer.pause(tp)
                if out:
                    yield out
        except KafkaError as exc:
            raise BrokerError(f"reading the topic snapshot failed: {exc}") from exc

    def close(self) -> None:
        self._consumer.close(autocommit=False)


def read_all(bootstrap: str, topics: Sequence[str]) -> list[Record]:
    reader = SnapshotReader(bootstrap, topics)
    try:
        return [r for batch in reader.batches() for r in batch]
    finally:
        reader.close()
