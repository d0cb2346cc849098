"""The faust-streaming shell around the correlation core.

- Consumes every ingress topic (those matching `^<prefix>ingress\\..*`) as raw bytes; decoding
  and validation are ours (processing.py), not faust's. faust-streaming's `pattern=` topics
  subscribe to nothing (faust-streaming issue #62, "XXX pattern does not work" in its aiokafka
  driver), so the pattern is resolved against the broker's topic list when the worker starts;
  a topic for a newly onboarded agency is picked up by restarting the workers.
- Each linkage block's state lives in a changelog-backed faust Table keyed by the block's
  4-byte key. The table uses the producer's partitioner, which is the same murmur2 partitioner
  the agencies' producers use for ingress, so a block's changelog partition is its ingress
  partition: whichever worker owns the ingress partition recovers exactly that block's state.
- Messages are processed in batches (`take_events`). For each batch: alerts and audit entries
  are sent and acknowledged, then the blocks' states are written to the table, and only then
  are the events acked; faust flushes its producer (the changelog) before it commits offsets.
  Faust's exactly_once mode is not used: duplicates after a crash are harmless by design.
- An error we cannot recover from (the broker not acknowledging) ends the process at once,
  without committing, so that the batch is redelivered when it is restarted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from safehub.bus import make_producer
from safehub.consumers.deadletter import DeadLetterSink
from safehub.errors import SafehubError
from safehub.services.audit.journal import AuditJournal
from safehub.services.correlation import snapshot
from safehub.services.correlation.core import BlockState, initial_state
from safehub.services.correlation.rules import Rules
from safehub.services.correlator import transport
from safehub.services.correlator.processing import (
    SERVICE,
    BatchProcessor,
    Incoming,
    block_key,
)

log = logging.getLogger(__name__)
EXIT_UNRECOVERABLE = 70


@dataclass(frozen=True, slots=True)
class CorrelatorSettings:
    bootstrap: str
    prefix: str
    app_id: str
    rules_path: Path
    partitions: int  # must equal the ingress topics' partition count (co-partitioned table)
    replication: int
    data_dir: Path
    batch_max: int
    batch_within_s: float
    web_port: int | None  # None: faust's web server is off


class StateCache:
    """Decoded block states, valid only while the table still holds the bytes they came from.

    Decoding a block's JSON for every batch would dominate the cost; the check against the
    table's current bytes keeps the cache honest across rebalances and recovery.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[bytes, BlockState]] = {}

    def load(self, table: Any, block: int) -> BlockState:
        raw = table.get(block_key(block))
        if raw is None:
            return initial_state()
        cached = self._entries.get(block)
        if cached is not None and (cached[0] is raw or cached[0] == raw):
            return cached[1]
        state = snapshot.decode(raw)
        self._entries[block] = (raw, state)
        return state

    def save(self, table: Any, block: int, raw: bytes, state: BlockState) -> None:
        table[block_key(block)] = raw
        self._entries[block] = (raw, state)


class Throughput:
    """Logs, every 30 s, events processed and where the time went (for operators).

    `lag`: how long the oldest event of each batch waited between its producer's send
    (the record's CreateTime) and the start of the batch; the largest in the period is logged.
    """

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self._reset()

    def _reset(self) -> None:
        self.events = 0
        self.batches = 0
        self.process_s = 0.0
        self.save_s = 0.0
        self.lag_s = 0.0
        self.since = time.monotonic()

    def add(self, events: int, process_s: float, save_s: float, lag_s: float = 0.0) -> None:
        self.events += events
        self.batches += 1
        self.process_s += process_s
        self.save_s += save_s
        self.lag_s = max(self.lag_s, lag_s)
        now = time.monotonic()
        if now - self.since >= self.every_s:
            log.info("correlated %d events in %d batches in %.1f s (%.0f/s): processing %.1f s, "
                     "saving block states %.1f s, largest lag %.2f s", self.events, self.batches,
                     now - self.since, self.events / (now - self.since), self.process_s,
                     self.save_s, self.lag_s)
            self._reset()


def resume_stalled_partitions(app: faust.App) -> None:
    """Resume ingress partitions faust left paused after a rebalance.

    With two workers, losing one sometimes left the survivor with a partition assigned but
    never fetched again (its committed offset stuck, no error). This reaches into faust's
    consumer internals, so it only acts when faust itself says no rebalance or recovery is in
    progress, and says so in the log.
    """
    if getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False):
        return
    consumer: Any = app.consumer
    changelogs = app.tables.changelog_topics
    assigned = {tp for tp in consumer.assignment() if tp.topic not in changelogs}
    active = consumer._get_active_partitions()
    stalled = {tp for tp in assigned if tp not in active
               and tp not in consumer._buffered_partitions}
    if stalled:
        log.warning("resuming %d ingress partition(s) left paused after a rebalance: %s",
                    len(stalled), sorted(f"{tp.topic}[{tp.partition}]" for tp in stalled))
        consumer.resume_partitions(stalled)


def ingress_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(prefix) + r"ingress\..*")


def build_app(
    settings: CorrelatorSettings, rules: Rules, ingress_topics: Sequence[str],
    clock_ms: Callable[[], int],
) -> faust.App:
    web: dict[str, Any] = (
        {"web_enabled": False} if settings.web_port is None
        else {"web_enabled": True, "web_port": settings.web_port, "web_bind": "127.0.0.1"}
    )
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
        store="memory://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # A killed worker's partitions move to the others after 10 s, not faust's default 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        stream_buffer_maxsize=max(4096, settings.batch_max * 2),
        table_cleanup_interval=3600.0,
        # No standby copies: a worker taking over a partition replays its changelog instead.
        # Promoting a standby to active stalled the surviving worker in our failover test.
        table_standby_replicas=0,
        **web,
    )
    transport.install(app)
    ingress = app.topic(
        *ingress_topics,
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
    )
    table = app.Table(
        # bytes key and value types make faust use its "raw" codec for the changelog.
        "blocks", default=None, key_type=bytes, value_type=bytes,
        partitions=settings.partitions, use_partitioner=True,
    )
    cache = StateCache()
    holder: dict[str, BatchProcessor] = {}

    def processor() -> BatchProcessor:
        # Clients are made on first use inside the running worker, never at import or build.
        if "p" not in holder:
            producer = make_producer(settings.bootstrap, SERVICE, linger_ms=2)
            holder["p"] = BatchProcessor(
                rules, settings.prefix, producer, settings.prefix + "correlated",
                AuditJournal(producer, settings.prefix + "audit", SERVICE),
                DeadLetterSink(producer, settings.prefix + "deadletter"),
                clock_ms,
            )
        return holder["p"]

    async def watchdog() -> None:
        resume_stalled_partitions(app)

    app.timer(10.0)(watchdog)

    stats = Throughput(float(os.environ.get("SAFEHUB_CORRELATOR_STATS_EVERY_S", "30")))

    @app.agent(ingress)
    async def correlate(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(settings.batch_max, settings.batch_within_s):
            t0 = time.perf_counter()
            # faust gives the record's timestamp in seconds (CreateTime: the producer's clock).
            lag = time.time() - min(e.message.timestamp for e in events)
            batch = [
                Incoming(e.message.topic, e.message.partition, e.message.offset,
                         e.message.key, e.message.value)
                for e in events
            ]
            try:
                # The CPU-bound part runs on the loop (fewer threads contending for the GIL);
                # waiting for the broker's acknowledgements does not.
                result = processor().prepare(batch, lambda b: cache.load(table, b))
                await loop.run_in_executor(None, processor().confirm)
                t1 = time.perf_counter()
                for block, state in result.states.items():
                    cache.save(table, block, snapshot.encode(state), state)
                stats.add(len(batch), t1 - t0, time.perf_counter() - t1, lag)
            except (SafehubError, OSError) as exc:
                # Exit without acking or committing: the batch is redelivered on restart.
                log.critical("correlator stopping, batch not committed: %s", exc)
                os._exit(EXIT_UNRECOVERABLE)

    return app
