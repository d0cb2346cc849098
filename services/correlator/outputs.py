"""The correlator's alerts and audit entries, sent a record batch at a time on faust's loop.

The other services send through kafka-python (safehub.bus), whose per-record `send` and
network thread run Python code for every record. In the correlator, which writes an audit
entry for every event, that path and its thread's share of the GIL took about a fifth of the
worker's time. Here an idempotent aiokafka producer (acks=all, as in safehub.bus) on the worker's
own event loop takes whole batches built by aiokafka's BatchBuilder (compiled code).

Order: the `audit` topic has one partition, and its order is the processing order the auditors'
replay follows. Entries go to partition 0 in the order given, and `write` returns only when
all are acknowledged, so one batch's entries are on the log before the next batch's are sent;
the idempotent producer keeps the order within a write across retries. Alerts go to the
partition of `correlated` that kafka-python's producers would pick for the same key (murmur2),
so one cluster's alerts stay in order on one partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from safehub.errors import BrokerError

AUDIT_PARTITION = 0


class OutputWriter:
    def __init__(self, bootstrap: str, client_id: str, correlated_topic: str,
                 audit_topic: str) -> None:
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._correlated = correlated_topic
        self._audit = audit_topic
        self._producer: AIOKafkaProducer | None = None
        self._partitions: list[int] = []
        self._partitioner = DefaultPartitioner()

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap, client_id=self._client_id,
                acks="all", enable_idempotence=True, linger_ms=0,
            )
            await producer.start()
            partitions = await producer.partitions_for(self._correlated)
            if not partitions:
                await producer.stop()
                raise BrokerError(f"topic {self._correlated} has no partitions")
            self._producer, self._partitions = producer, sorted(partitions)
        return self._producer

    async def write(self, alerts: Sequence[tuple[bytes, bytes]], audit: Sequence[bytes]) -> None:
        """Send alerts (key, value) and audit entries; return once all are acknowledged."""
        if not alerts and not audit:
            return
        try:
            producer = await self._started()
            by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
            for key, value in alerts:
                p = self._partitioner(key, self._partitions, self._partitions)
                by_partition.setdefault(p, []).append((key, value))
            delivered: list[Any] = []
            for p, records in by_partition.items():
                delivered += await send_in_batches(producer, self._correlated, p, records)
            delivered += await send_in_batches(producer, self._audit, AUDIT_PARTITION,
                                               [(None, v) for v in audit])
            await asyncio.gather(*delivered)
        except BrokerError:
            raise
        except Exception as exc:  # aiokafka's errors have no common base besides Exception
            raise BrokerError(f"alerts or audit entries not acknowledged: {exc}") from exc

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


async def send_in_batches(producer: AIOKafkaProducer, topic: str, partition: int,
                          records: Sequence[tuple[bytes | None, bytes]]) -> list[Any]:
    """Queue `records` on one partition as few record batches; return their delivery futures."""
    futures: list[Any] = []
    if not records:
        return futures
    batch = producer.create_batch()
    for key, value in records:
        # The first record always fits; a full batch is sent and a new one begun.
        if batch.append(key=key, value=value, timestamp=None) is None:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)
    futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures
