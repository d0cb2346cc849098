"""Un-sticking ingress partitions that faust-streaming leaves stalled after a rebalance.

Two stalls were seen with two workers when one is killed, neither with an error:
- a partition assigned but left paused, never fetched again;
- a hole: messages faust read but that never reached the agent (dropped from faust's buffers
  during the rebalance). faust commits an offset only up to the first message not acked, so
  the partition's committed offset stops there for good, while later messages may be
  processed and acked behind it. Seen in tests/integration/test_correlator_workers.py:
  committed offset 187 while offsets up to 350 were read and 160 of them acked, forever.

transport.py now keeps faust from delivering a partition's records out of order (the cause of
most holes), and refuses to count offsets faust skipped as done; this watch remains the last
resort for a hole that still gets past both.

All of this reaches into faust's consumer internals, so the checks act only when faust says no
rebalance or recovery is in progress, and log what they do. A hole is re-read by seeking the
partition back to its committed offset: the messages after it are processed again, which the
design makes harmless (same events and states give the same alert and audit entry ids;
duplicates are dropped by every sink, and faust ignores a second ack of an offset).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

STALL_CHECK_S = 10.0


class StallWatch:
    def __init__(self) -> None:
        # committed offset per partition at the previous check, for partitions with a hole
        self._held: dict[Any, int] = {}

    async def check(self, app: Any) -> None:
        if getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False):
            self._held.clear()
            return
        consumer = app.consumer
        changelogs = app.tables.changelog_topics
        assigned = {tp for tp in consumer.assignment() if tp.topic not in changelogs}
        self._resume_paused(consumer, assigned)
        await self._reread_holes(consumer, assigned)

    def _resume_paused(self, consumer: Any, assigned: set[Any]) -> None:
        active = consumer._get_active_partitions()
        stalled = {tp for tp in assigned if tp not in active
                   and tp not in consumer._buffered_partitions}
        if stalled:
            log.warning("resuming %d ingress partition(s) left paused after a rebalance: %s",
                        len(stalled), _names(stalled))
            consumer.resume_partitions(stalled)

    async def _reread_holes(self, consumer: Any, assigned: set[Any]) -> None:
        held: dict[Any, int] = {}
        for tp in assigned:
            committed = consumer._committed_offset.get(tp)
            if committed is None:
                continue
            position = await consumer.position(tp)
            # Fetched past the committed offset, yet the commit has not moved since the last
            # check (commits run every second): a message was lost on its way to the agent.
            if position is None or position <= committed:
                continue
            if self._held.get(tp) == committed:
                log.warning("re-reading %s from offset %d: messages up to %d were read but "
                            "this one was never acknowledged (faust rebalance)",
                            _names({tp})[0], committed, position - 1)
                await consumer.seek(tp, committed)
            else:
                held[tp] = committed
        self._held = held


def _names(tps: set[Any]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)
