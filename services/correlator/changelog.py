"""Block states written to the faust table's changelog a record batch at a time.

faust writes a table's changelog one message at a time: each `table[key] = value` makes a
FutureMessage, an asyncio task and a producer future. Profiled at ~1,800 events/s, that path
and the asyncio bookkeeping around it took about a quarter of the worker's main thread. Here a
batch's states go to the changelog as whole record batches built by aiokafka's BatchBuilder
(compiled code) on faust's own producer, and the table's store is updated without faust's
per-key send. Recovery is unchanged: faust replays the same changelog topic, with the same raw
keys and values, into the store of whichever worker is assigned the partition.

Each state goes to the partition its events arrived on, which is the partition that worker
owns; the ingress and changelog topics have the same partition count, so recovery of an
ingress partition restores exactly the blocks whose events are read from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from safehub.errors import BrokerError
from safehub.services.correlator.outputs import send_in_batches


class ChangelogWriter:
    def __init__(self, app: Any, table: Any) -> None:
        self._app = app
        self._table = table

    async def write(self, records: Iterable[tuple[int, bytes, bytes]]) -> None:
        """Store and log every (partition, key, value); return once the broker acknowledged all.

        The caller lets the input offsets be committed only after this returns, so a state is
        never committed past unless it is in the changelog.
        """
        store = self._table.data
        by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
        for partition, key, value in records:
            store[key] = value
            by_partition.setdefault(partition, []).append((key, value))
        if not by_partition:
            return
        # faust's own aiokafka producer, so faust's flush-before-commit also covers these.
        producer = self._app.producer._ensure_producer()
        topic = self._table.changelog_topic.get_topic_name()
        try:
            delivered: list[Any] = []
            for partition, pairs in by_partition.items():
                delivered += await send_in_batches(producer, topic, partition, pairs)
            await asyncio.gather(*delivered)
        except Exception as exc:  # aiokafka's errors have no common base besides Exception
            raise BrokerError(f"block states to {topic} not acknowledged: {exc}") from exc
