"""Block states: logged to the faust table's changelog in the batch's transaction, then stored.

faust writes a table's changelog one message at a time: each `table[key] = value` makes a
FutureMessage, an asyncio task and a producer future. Profiled at ~1,800 events/s, that path
and the asyncio bookkeeping around it took about a quarter of the worker's main thread. Here a
batch's states go to the changelog as whole record batches, in the same transaction as the
batch's alerts and audit entries (outputs.py), and the table's store is updated once that
transaction is committed, without faust's per-key send. Recovery is unchanged: faust replays
the same changelog topic, with the same raw keys and values, into the store of whichever worker
is assigned the partition (reading committed records only: transport.py).

Each state goes to the partition its events arrived on, which is the partition that worker
owns; the ingress and changelog topics have the same partition count, so recovery of an
ingress partition restores exactly the blocks whose events are read from it.

Where a recovered state came from. When a state cannot be read (a poisoned changelog record:
offload.py), the operator needs the record's partition and offset; faust's store keeps values
only, so the recovery's batches are noted on their way in (`origin`: one entry per key, the last
record applied; a state this worker writes afterwards supersedes the record and its entry).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class BlockStates:
    def __init__(self, table: Any) -> None:
        self._table = table
        self.origin: dict[bytes, tuple[int, int]] = {}  # key -> (partition, offset) recovered
        apply = table.apply_changelog_batch

        def noting_origins(batch: Any) -> None:
            for event in batch:
                message = event.message
                self.origin[message.key] = (message.partition, message.offset)
            apply(batch)

        # faust's recovery calls the table's method with its buffered changelog events.
        table.apply_changelog_batch = noting_origins

    @property
    def topic(self) -> str:
        name: str = self._table.changelog_topic.get_topic_name()
        return name

    def store(self, records: Iterable[tuple[int, bytes, bytes]]) -> None:
        """Put committed (partition, key, value) states in the table's store."""
        store = self._table.data
        for _, key, value in records:
            store[key] = value
            self.origin.pop(key, None)
