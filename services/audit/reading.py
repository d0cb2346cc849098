"""Read-only access to topics for auditors: no consumer group, no commits, no writes.

Every client here is built from the caller's KafkaConnection: the `auditor` principal, which
may read every topic but deadletter, write none and join no group.

A topic is read from its beginning (or from a time) up to the end offsets it had when reading
started, so a run is a well-defined snapshot even while the live system keeps writing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from aiokafka import TopicPartition as AioTopicPartition
from aiokafka.errors import KafkaError as AioKafkaError
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from safehub.bus import make_aio_consumer, make_consumer
from safehub.connection import KafkaConnection
from safehub.consumers.deadletter import ConsumedRecord
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
    """Reads fixed topics from start (or a time) to the end offsets seen at construction.

    `source` is the connection to read with, or a client to borrow (plan_snapshot's)."""

    def __init__(self, source: KafkaConnection | KafkaConsumer, topics: Sequence[str], *,
                 from_ms: int | None = None, client_id: str = "safehub-auditor") -> None:
        # group_id=None: the auditor has no group, commits nothing, and cannot disturb any
        # live consumer's position.
        self._consumer = (source if isinstance(source, KafkaConsumer)
                          else make_consumer(source, None, client_id=client_id,
                                             max_poll_records=10_000))
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

    @property
    def bounds(self) -> dict[TopicPartition, tuple[int, int]]:
        """Start and end offset of every partition in the snapshot."""
        return {tp: (self._start[tp], self._end[tp]) for tp in self._end}

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class Fetched(ConsumedRecord, Protocol):
    """A record as read_fast hands it on (aiokafka's ConsumerRecord, not copied: replay reads
    hundreds of thousands, and building a Record for each cost a fifth of its reading time)."""

    @property
    def timestamp(self) -> int: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


def plan_snapshot(consumer: KafkaConsumer, groups: Sequence[tuple[Sequence[str], int | None]]
                  ) -> dict[TopicPartition, tuple[int, int]]:
    """Start and end offsets of each group of topics (read from a time, or from the beginning
    when it is None), planned in the order given with one client: a group's end offsets are
    taken after the previous group's, so a record the earlier group refers to cannot fall
    after the later group's end."""
    bounds: dict[TopicPartition, tuple[int, int]] = {}
    for topics, from_ms in groups:
        bounds.update(SnapshotReader(consumer, topics, from_ms=from_ms).bounds)
    return bounds


@contextmanager
def auditor_client(kafka: KafkaConnection) -> Iterator[KafkaConsumer]:
    """A kafka-python client that lists and plans: no group, no commits. Closed on leaving,
    which ends its thread."""
    consumer = make_consumer(kafka, None, client_id="safehub-auditor")
    try:
        yield consumer
    finally:
        consumer.close(autocommit=False)


def list_topics(consumer: KafkaConsumer) -> set[str]:
    try:
        return set(consumer.topics())
    except KafkaError as exc:
        raise BrokerError(f"cannot list topics: {exc}") from exc


def fetch(kafka: KafkaConnection, bounds: dict[TopicPartition, tuple[int, int]],
          on_batch: Callable[[list[Fetched]], None]) -> int:
    """The planned snapshot, fetched with aiokafka: bench/replay_bench.py measured it an order
    of magnitude faster for bulk reads than kafka-python (its record parsing is compiled;
    kafka-python parses every record in Python). Calls `on_batch` for each batch (within a
    partition in offset order); returns how many records were read."""
    try:
        return asyncio.run(_fetch(kafka, bounds, on_batch))
    except (AioKafkaError, OSError) as exc:
        topics = sorted({tp.topic for tp in bounds})
        raise BrokerError(f"reading {', '.join(topics)} failed: {exc}") from exc


def read_fast(kafka: KafkaConnection, topics: Sequence[str],
              on_batch: Callable[[list[Fetched]], None], *, from_ms: int | None = None) -> int:
    """The same snapshot as SnapshotReader, planned by kafka-python and fetched by aiokafka."""
    with auditor_client(kafka) as consumer:
        bounds = plan_snapshot(consumer, [(topics, from_ms)])
    return fetch(kafka, bounds, on_batch)


async def _fetch(kafka: KafkaConnection, bounds: dict[TopicPartition, tuple[int, int]],
                 on_batch: Callable[[list[Fetched]], None]) -> int:
    if all(start >= end for start, end in bounds.values()):
        # Nothing to fetch. Not started at all: aiokafka's consumer stopped right after it
        # started (before its own tasks first ran) raises CancelledError from stop().
        return 0
    consumer = make_aio_consumer(kafka, "safehub-auditor")
    await consumer.start()
    try:
        parts = {AioTopicPartition(tp.topic, tp.partition): b for tp, b in bounds.items()}
        consumer.assign(list(parts))
        for tp, (start, _end) in parts.items():
            consumer.seek(tp, start)
        pending = {tp for tp, (start, end) in parts.items() if start < end}
        count, idle = 0, 0
        while pending:
            got = await consumer.getmany(*pending, timeout_ms=1000, max_records=20_000)
            idle = 0 if got else idle + 1
            if idle > 30:
                raise BrokerError("topic snapshot stopped arriving before its end")
            out: list[Fetched] = []
            for tp, recs in got.items():
                end = parts[tp][1]
                if recs and recs[-1].offset >= end:
                    recs = [r for r in recs if r.offset < end]
                out += recs
            for tp in list(pending):
                if await consumer.position(tp) >= parts[tp][1]:
                    pending.discard(tp)
            if out:
                count += len(out)
                on_batch(out)
        return count
    finally:
        await consumer.stop()


def read_all(kafka: KafkaConnection, topics: Sequence[str]) -> list[Record]:
    out: list[Record] = []

    def keep(batch: list[Fetched]) -> None:
        out.extend(Record(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value,
                          tuple((k, bytes(v)) for k, v in r.headers or ()))
                   for r in batch)

    read_fast(kafka, topics, keep)
    return out
