"""Reading the dead-letter topic, bounded: from the beginning to the end offsets it had when the
read began, then stop. An operator's command never waits for dead letters still to come.

Read by assignment, without a consumer group: the operator principal has none, and reading
commits nothing, so two operators can look at once.
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, TopicAuthorizationFailedError

from safehub.bus import make_consumer
from safehub.connection import KafkaConnection
from safehub.errors import BrokerError
from safehub.services.deadletters.letters import Consumed

METADATA_WAIT_S = 15.0


def _partitions(consumer: KafkaConsumer, topic: str, kafka: KafkaConnection) -> list[int]:
    deadline = time.monotonic() + METADATA_WAIT_S
    while True:
        try:
            found = consumer.partitions_for_topic(topic)
        except TopicAuthorizationFailedError:
            found = None
        if found:
            return sorted(found)
        if time.monotonic() > deadline:
            raise BrokerError(f"topic {topic} not found, or {kafka.principal} may not read it "
                              f"(at {kafka.bootstrap})")
        time.sleep(0.2)
        consumer.topics()  # refreshes the metadata


def read_all(kafka: KafkaConnection, topic: str, values: bool = True,
             timeout_s: float = 120.0) -> list[Consumed]:
    """Every record on `topic` up to its end offsets as of now, in partition and offset order.

    `values=False` keeps no value (each is None): a listing needs only the headers, and a
    backlog of dead letters (90 days' retention) need not be held in memory to be listed."""
    consumer = make_consumer(kafka, None, client_id="safehub-deadletter")
    try:
        parts = [TopicPartition(topic, p) for p in _partitions(consumer, topic, kafka)]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(parts)
        out: list[Consumed] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise BrokerError(f"{topic} not read to its end in {timeout_s:.0f} s")
            for tp, batch in consumer.poll(timeout_ms=500).items():
                out += [Consumed(tp.partition, r.offset, r.key, r.value if values else None,
                                 tuple((k, bytes(v)) for k, v in (r.headers or [])),
                                 r.timestamp)
                        for r in batch if r.offset < ends[tp]]
    except TopicAuthorizationFailedError as exc:
        raise BrokerError(f"{kafka.principal} may not read {topic}") from exc
    except KafkaError as exc:
        raise BrokerError(f"reading {topic}: {type(exc).__name__}: {exc}") from exc
    finally:
        consumer.close(autocommit=False)
    return sorted(out, key=lambda c: (c.partition, c.offset))
