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

Not a hole: the message at the committed offset still on its way. A batch whose transaction
is slow to commit (a broker down, seen in every fault run) holds its messages unacked for
seconds, and faust's commit of acked offsets can wait as long for a group coordinator that is
failing over. Re-reading then delivered again ~600 messages a partition that were already in
flight, on a worker already slowed by the outage (bench/results/fault-100k.json, run T). So a
partition whose committed offset is held by a message faust still tracks (handed to the agent
and not acked, or acked and not yet committed), or held while an offset commit is under way
(faust drops the acked offsets it commits before it has the answer, so they are nowhere else),
is given up to `IN_FLIGHT_CHECKS` more checks: as long as a batch's transaction is retried
(outputs.RETRY_FOR_S). A message faust lost without letting go of it is still re-read, only
that much later. Acked and not yet committed was taken for lost until session 32: a check that
came between a 30 s transaction's acks and the next offset commit re-read 9 partitions, 25 ms
after the transaction ended (bench/results/fault-100k.json, run Y).

All of this reaches into faust's consumer internals, so the checks act only when faust says no
rebalance or recovery is in progress, and log what they do. A hole is re-read by seeking the
partition back to its committed offset: the messages after it are processed again, which the
design makes harmless (same events and states give the same alert and audit entry ids;
duplicates are dropped by every sink, and faust ignores a second ack of an offset).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from safehub.services.correlator.outputs import RETRY_FOR_S

log = logging.getLogger(__name__)

STALL_CHECK_S = 10.0
# checks a commit held by a message on its way is waited for, at most
IN_FLIGHT_CHECKS = math.ceil(RETRY_FOR_S / STALL_CHECK_S)


def on_its_way(consumer: Any, tp: Any, offset: int) -> bool:
    """Whether the message at `tp`/`offset` may still be committed without a re-read: faust
    tracks it (handed to the agent, not yet acked), it is acked and waits for the next offset
    commit, or an offset commit is under way."""
    if consumer._commit_fut is not None:
        return True
    if offset in consumer._acked_index.get(tp, ()):
        return True
    return any(m.offset == offset and m.tp == tp for m in list(consumer._unacked_messages))


class StallWatch:
    def __init__(self) -> None:
        # committed offset per partition at the previous check, for partitions with a hole
        self._held: dict[Any, int] = {}
        # checks each held partition's commit has been waited for, its message on its way
        self._waited: dict[Any, int] = {}

    async def check(self, app: Any) -> None:
        if getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False):
            self._held.clear()
            self._waited.clear()
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
        waited: dict[Any, int] = {}
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
                checks = self._waited.get(tp, 0)
                if checks < IN_FLIGHT_CHECKS and on_its_way(consumer, tp, committed):
                    log.info("%s: committed offset %d not moved for %.0f s; its message is on "
                             "its way (a slow commit), not re-read yet", _names({tp})[0],
                             committed, STALL_CHECK_S * (checks + 1))
                    held[tp] = committed
                    waited[tp] = checks + 1
                    continue
                log.warning("re-reading %s from offset %d: messages up to %d were read but "
                            "this one was never acknowledged (faust rebalance)",
                            _names({tp})[0], committed, position - 1)
                await consumer.seek(tp, committed)
            else:
                held[tp] = committed
        self._held = held
        self._waited = waited


def _names(tps: set[Any]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in tps)
