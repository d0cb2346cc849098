"""Where a changelog partition's log ends, open transactions included: the offset a worker's
recovery must read up to before it may correlate.

Why not what faust asks for. faust takes a recovery's target from the consumer's end offsets,
and the worker's consumer reads committed records only (transport.py), so the broker answers
with the last stable offset: the first offset of the oldest transaction still open. A worker
the group has just replaced (membership.py) may have such a transaction open on the changelog,
its records already acknowledged and its commit on the way (a commit can take seconds while a
broker fails over). Recovery would end before those records, the commit would land after it,
and the new owner would correlate on states that lack events the journal shows accepted: what
run N of bench/fault_bench.py found, by another route.

The log's end (its high watermark) counts every acknowledged record, committed or not. Reading
committed records up to it, recovery cannot pass an open transaction until it is committed (its
states are then recovered) or aborted (they are skipped): transport.py's `recovery_complete`
ends a recovery only once a fetch has returned a position past the target. A transaction that
neither ends nor is ended by its writer is aborted by the broker after the transaction timeout
(outputs.py), so the wait is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError, KafkaTimeoutError, for_code
from aiokafka.protocol.offset import OffsetRequest

log = logging.getLogger(__name__)
READ_UNCOMMITTED = 0  # ListOffsets' isolation level that answers with the high watermark
LATEST = -1  # ListOffsets' timestamp for "the end of the log"
REPLICA = -1  # a client, not a follower
RETRY_S = 0.5


async def log_ends(consumer: AIOKafkaConsumer, partitions: Iterable[Any],
                   timeout_s: float = 30.0) -> dict[Any, int]:
    """Partition -> the offset after its last acknowledged record, for `partitions` (each a
    (topic, partition) tuple, keyed as given). A partition whose leader is unknown or away is
    asked again, after a metadata refresh, until `timeout_s`; then KafkaTimeoutError, as
    aiokafka's own `end_offsets` raises."""
    client = consumer._client  # the consumer's own connections and metadata
    wanted = list(partitions)
    ends: dict[Any, int] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        problem = await _ask_leaders(client, [tp for tp in wanted if tp not in ends], ends)
        pending = [tp for tp in wanted if tp not in ends]
        if not pending:
            return ends
        problem = problem or "not in the leaders' answers"
        if time.monotonic() >= deadline:
            raise KafkaTimeoutError(f"the end of changelog partitions {pending} not known "
                                    f"within {timeout_s:.0f} s: {problem}")
        log.info("asking again for the end of %d changelog partition(s): %s",
                 len(pending), problem)
        await client.force_metadata_update()
        await asyncio.sleep(RETRY_S)


async def _ask_leaders(client: Any, partitions: Sequence[Any], ends: dict[Any, int]) -> str | None:
    """Ask each partition's leader for its log end and add the answers to `ends`; None if
    every partition was answered, else why not."""
    by_leader: dict[int, dict[str, list[tuple[int, int]]]] = {}
    asked: dict[tuple[str, int], Any] = {}
    for tp in partitions:
        leader = client.cluster.leader_for_partition(tp)
        if leader is None or leader < 0:
            return f"{tp[0]}[{tp[1]}] has no known leader"
        by_leader.setdefault(leader, {}).setdefault(tp[0], []).append((tp[1], LATEST))
        asked[(tp[0], tp[1])] = tp
    try:
        answers = await asyncio.gather(*(
            client.send(leader, OffsetRequest(REPLICA, READ_UNCOMMITTED, list(topics.items())))
            for leader, topics in by_leader.items()))
    except KafkaError as exc:
        return f"{type(exc).__name__}: {exc}"
    return _read(answers, asked, ends)


def _read(answers: Sequence[Any], asked: Mapping[tuple[str, int], Any],
          ends: dict[Any, int]) -> str | None:
    problem = None
    for answer in answers:
        for topic, partitions in answer.topics:
            # v1-v3: (partition, error, timestamp, offset); v4+: and the leader epoch
            for partition, error_code, _timestamp, offset, *_ in partitions:
                tp = asked.get((topic, partition))
                if tp is None:
                    continue
                if error_code:
                    problem = f"{topic}[{partition}]: {for_code(error_code).__name__}"
                    continue
                ends[tp] = offset
    return problem
