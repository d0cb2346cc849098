"""The faust-streaming shell around the correlation core.

- Consumes every ingress topic (those matching `^<prefix>ingress\\..*`) as raw bytes; decoding
  and validation are ours (processing.py), not faust's. The topics are those on the broker
  when the worker starts; one created later is read after a restart, and until then the worker
  warns of it (ingress.py).
- Each linkage block's state lives in a changelog-backed faust Table keyed by the block's
  4-byte key. A block's state is logged to the changelog partition its events arrived on, so
  whichever worker owns the ingress partition recovers exactly that block's state.
- Messages are taken in batches (`take_events`) and correlated in a child process on the
  machine's other core (offload.py). Records that cannot be events skip faust's channels: the
  transport puts them in the refusals lane (refusals.py), from which `refuse` hands them to the
  same pipeline in batches of their own, after any batch of events waiting for room. For each
  batch, in order: dead letters, alerts, audit entries and the blocks' states (for the table's
  changelog) are sent as one transaction and committed (outputs.py); the states are put in the
  table's store (changelog.py); and only then are the events acked; faust buffers the next
  batch meanwhile (`Pipeline`). Input offsets are committed by faust afterwards, outside the
  transaction (faust's exactly_once mode is not used): an event redelivered after a crash is
  either in its block's committed state, and changes nothing, or in nothing committed, and is
  correlated again.
- A block state the table cannot give back readable (a poisoned changelog record) is
  quarantined, not fatal: the block starts afresh (offload.py), the record goes to `deadletter`
  with the reason and its changelog partition and offset, an ERROR names the block and the
  record (never its bytes), and the dead-letter count of the changelog topic goes up.
- An error we cannot recover from (the broker not acknowledging, the child process gone) ends
  the process at once, without committing, so that the batch is redelivered on restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import faust

from safehub import topics
from safehub.connection import KafkaConnection
from safehub.consumers.deadletter import (
    Reason,
    dead_letter_message,
    error_text,
    reason_headers,
)
from safehub.errors import SafehubError, StoreError, ValidationError
from safehub.observability.watch import ServiceWatch
from safehub.services.correlation.linking import block_key
from safehub.services.correlation.rules import Rules
from safehub.services.correlator import membership, transport
from safehub.services.correlator.changelog import BlockStates
from safehub.services.correlator.fairness import SHARE
from safehub.services.correlator.ingress import warn_of_unread_topics
from safehub.services.correlator.offload import Child, Reply
from safehub.services.correlator.outputs import DeadLetterRecord, OutputWriter
from safehub.services.correlator.processing import (
    SERVICE,
    BatchProcessor,
    Incoming,
    may_be_event,
)
from safehub.services.correlator.residency import DEFAULT_BUDGET_BYTES, Residency
from safehub.services.correlator.stalls import STALL_CHECK_S, StallWatch
from safehub.services.correlator.turns import WriteTurns
from safehub.settings import CorrelatorEnv, load
from safehub.topics import CORRELATOR_TABLE

log = logging.getLogger(__name__)
EXIT_UNRECOVERABLE = 70
# A batch of events takes up to batch_max // this of the refusals lane with it: enough that the
# lane keeps moving under a steady flow of events, few enough not to slow the events down.
RIDERS = 4
TABLE = CORRELATOR_TABLE  # its changelog topic is topics.table_changelog(app id)


@dataclass(frozen=True, slots=True)
class CorrelatorSettings:
    kafka: KafkaConnection  # as the correlator principal
    prefix: str
    app_id: str
    rules_path: Path
    partitions: int  # must equal the ingress topics' partition count (co-partitioned table)
    replication: int
    data_dir: Path
    batch_max: int
    batch_within_s: float
    web_port: int | None  # None: faust's web server is off
    topic_check_s: float  # how often to look for ingress topics this worker does not read
    worker_id: str | None  # SAFEHUB_CORRELATOR_WORKER_ID; None: an anonymous worker
    transactional_id: str  # of its outputs (outputs.transactional_id)
    # most encoded bytes of block states the correlation child holds decoded (residency.py)
    held_bytes: int = DEFAULT_BUDGET_BYTES
    # most records of one ingress partition handed to faust per fetch round (fairness.py)
    fair_share: int = SHARE


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
        self.send_s = 0.0
        self.save_s = 0.0
        self.lag_s = 0.0
        self.since = time.monotonic()

    def add(self, events: int, process_s: float, send_s: float, save_s: float,
            lag_s: float = 0.0) -> None:
        self.events += events
        self.batches += 1
        self.process_s += process_s
        self.send_s += send_s
        self.save_s += save_s
        self.lag_s = max(self.lag_s, lag_s)
        now = time.monotonic()
        if now - self.since >= self.every_s:
            log.info("correlated %d events in %d batches in %.1f s (%.0f/s): processing %.1f s, "
                     "committing alerts, audit entries and block states %.1f s, storing "
                     "states and acking %.1f s, largest lag %.2f s", self.events, self.batches,
                     now - self.since, self.events / (now - self.since), self.process_s,
                     self.send_s, self.save_s, self.lag_s)
            self._reset()


def build_app(
    settings: CorrelatorSettings, rules: Rules, ingress_topics: Sequence[str],
    clock_ms: Callable[[], int], watch: ServiceWatch | None = None,
) -> faust.App:
    watch = watch or ServiceWatch(SERVICE)
    web: dict[str, Any] = (
        {"web_enabled": False} if settings.web_port is None
        else {"web_enabled": True, "web_port": settings.web_port, "web_bind": "127.0.0.1"}
    )
    app = faust.App(
        settings.app_id,
        **settings.kafka.faust(),
        # Only the admin principal may create topics: the table's changelog is made with the
        # others (deploy/topics.toml), and faust's leader topic is not used.
        topic_allow_declare=False,
        topic_disable_leader=True,
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
        # At most a batch waits in faust's queue ahead of the one being taken: what an event
        # of one agency's topic can find ahead of it there when another agency floods its own
        # (command.py, DEFAULT_BATCH).
        stream_buffer_maxsize=settings.batch_max,
        table_cleanup_interval=3600.0,
        # No standby copies: a worker taking over a partition replays its changelog instead.
        # Promoting a standby to active stalled the surviving worker in our failover test.
        table_standby_replicas=0,
        **web,
    )
    transport.install(app, None if settings.worker_id is None
                      else transport.static_member_id(settings.worker_id, ingress_topics),
                      settings.fair_share,
                      BatchProcessor(rules, settings.prefix, settings.partitions)
                      .refused_at_any_time)
    ingress = app.topic(
        *ingress_topics,
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
    )
    table = app.Table(
        # bytes key and value types make faust use its "raw" codec for the changelog.
        TABLE, default=None, key_type=bytes, value_type=bytes,
        partitions=settings.partitions, use_partitioner=True,
    )
    states = BlockStates(table)
    holder: dict[str, Any] = {}
    # Its producer is made on first use inside the running worker, never at import or build.
    outputs = OutputWriter(settings.kafka, SERVICE, topics.correlated(settings.prefix),
                           topics.audit(settings.prefix), settings.transactional_id,
                           topics.deadletter(settings.prefix),
                           ownership=membership.for_group(app.conf.id))

    async def close_outputs(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        if "pipeline" in holder:
            holder["pipeline"].close()
        await outputs.close()

    app.on_before_shutdown.connect(close_outputs)

    stalls = StallWatch()

    async def watchdog() -> None:
        await stalls.check(app)

    app.timer(STALL_CHECK_S)(watchdog)
    warn_of_unread_topics(app, settings.kafka, settings.prefix, ingress_topics,
                          settings.topic_check_s)

    async def observe() -> None:
        await observe_worker(app, watch, holder.get("pipeline"))

    app.timer(OBSERVE_S)(observe)

    stats = Throughput(load(CorrelatorEnv).stats_every_s)

    def pipeline() -> Pipeline:
        # Made on first use inside the running worker: it starts the correlation child.
        if "pipeline" not in holder:
            child = Child(rules, settings.prefix, settings.partitions)
            holder["pipeline"] = Pipeline(app, table, child, outputs, states, clock_ms, stats,
                                          watch, Residency(settings.held_bytes))
        made: Pipeline = holder["pipeline"]
        return made

    @app.agent(ingress)
    async def correlate(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, settings.batch_within_s):
            messages = [e.message for e in events]
            for message in messages:
                # take_events acks each event when this body returns; the extra reference
                # holds the offset until the batch's outputs and states are acknowledged.
                message.incref()
            # Refusals ride along: a batch of refusals (`refuse`) is submitted only while the
            # pipeline has room, so under a steady flow of events the lane would never be
            # refused, and the commits of its partitions would wait for it (found in review).
            consumer: Any = app.consumer  # transport.PromptConsumer
            riders = consumer.refusals.take(settings.batch_max // RIDERS)
            await pipeline().submit(messages, riders)

    async def refuse() -> None:
        """The refusals lane (refusals.py) to the pipeline, a batch at a time, after events."""
        try:
            while True:
                consumer: Any = app.consumer  # transport.PromptConsumer
                lane = consumer.refusals
                await lane.wait()
                await pipeline().room()
                messages = lane.take(settings.batch_max)
                if messages:
                    await pipeline().submit(messages, refusals=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a lane no longer drained holds every commit
            _stop(exc)

    app.task(refuse)
    return app


OBSERVE_S = 2.0


async def observe_worker(app: Any, watch: ServiceWatch, pipeline: Pipeline | None) -> None:
    """Every few seconds on faust's loop: the heartbeat (while no batch is outstanding; a
    batch that never completes stops it, so /livez sees a wedged pipeline), the ingress
    partitions held, and the lag of each (end offset - position)."""
    if pipeline is None or pipeline.idle:
        watch.heartbeat.beat(SERVICE)
    try:
        consumer = app.consumer
        changelogs = app.tables.changelog_topics
        assigned = [tp for tp in consumer.assignment() if tp.topic not in changelogs]
    except Exception:  # noqa: BLE001 - not started yet, or mid-rebalance: next time
        return
    watch.assignments.saw(SERVICE, len(assigned))
    for tp in assigned:
        try:
            end = consumer.highwater(tp)
            position = await consumer.position(tp)
        except Exception:  # noqa: BLE001 - a lag figure is never worth a crash
            continue
        if end is not None and position is not None:
            watch.metrics.lag(tp.topic, tp.partition, end - position)


def _stop(exc: BaseException) -> NoReturn:
    # Exit without acking or committing: the batch is redelivered on restart.
    log.critical("correlator stopping, batch not committed: %s", exc)
    os._exit(EXIT_UNRECOVERABLE)


class Pipeline:
    """Batches through the child process (offload.py), then out to the broker, in order.

    While the child works on a batch, faust buffers the next one and the previous batch's
    results are sent. Per batch, strictly in this order: dead letters, alerts, audit entries
    and the blocks' states in one committed transaction (a dead letter is thus never visible
    after its EVENT_DEADLETTERED entry, and no round trip is paid per dead letter); then the
    states go into the table's store; only then are the batch's events acked (so their offsets
    may be committed). Batches write one at a time; batches of events in submission order, so
    audit entries and states keep the processing order, and likewise batches from the refusals
    lane, which change no state: a batch of events waiting to write goes before them
    (turns.py). At most `DEPTH` batches of each kind are outstanding.

    Throughput under a flood. faust adds nothing to the next batch while `submit` waits (its
    `take_events` buffer is closed until the body returns), so a slow commit (~140 ms a batch
    on a loaded machine) holds each batch to what arrived in the 0.1 s before it: 100,000
    malformed records went at ~430 records/s there (bench/flood_bench.py). Committing the
    batches waiting behind a commit together in one transaction would lift that; tried, and
    left out until it has been through the recovery tests more than once.
    """

    DEPTH = 2

    def __init__(self, app: Any, table: Any, child: Child, outputs: OutputWriter,
                 states: BlockStates, clock_ms: Callable[[], int], stats: Throughput,
                 watch: ServiceWatch | None = None, residency: Residency | None = None) -> None:
        self._app = app
        self._watch = watch or ServiceWatch(SERVICE)
        self._table = table
        self._child = child
        self._outputs = outputs
        self._states = states
        self._clock_ms = clock_ms
        self._stats = stats
        # The blocks the child holds decoded, within a memory budget (residency.py).
        self._residency = residency or Residency()
        # Flushes not yet done, oldest first, each with whether it is of refusals (refusals.py);
        # each waits for the one before it of its kind, and for its turn to write.
        self._flushes: list[tuple[asyncio.Future[None], bool]] = []
        self._turns = WriteTurns()

    def _outstanding(self, refusals: bool | None = None) -> list[asyncio.Future[None]]:
        """The flushes not yet done, oldest first: of refusals, of events, or (None) all."""
        self._flushes = [(f, r) for f, r in self._flushes if not f.done()]
        return [f for f, r in self._flushes if refusals is None or r is refusals]

    async def room(self) -> None:
        """Until a batch of refusals (refusals.py) can be submitted without waiting: fewer than
        `DEPTH` batches of either kind outstanding, and a batch of events woken by the same
        flush has been submitted first."""
        while True:
            if len(self._outstanding()) < self.DEPTH:
                await asyncio.sleep(0)  # an agent woken by the same flush submits first
                if len(self._outstanding()) < self.DEPTH:
                    return
            await asyncio.wait([self._outstanding()[0]])

    async def submit(self, messages: Sequence[Any], riders: Sequence[Any] = (),
                     refusals: bool = False) -> None:
        """Correlate faust's `messages` (ConsumerMessage) and `riders`, acking each once its
        batch's outputs are committed and states stored. `riders`, and with `refusals` every
        message: from the refusals lane, refused whatever the state (refusals.py)."""
        # A batch of events waits only for batches of events: it writes before the refusals.
        ahead = self._outstanding(None if refusals else False)
        if len(ahead) >= self.DEPTH:
            await ahead[0]
        events = () if refusals else messages
        messages = [*messages, *riders]
        # faust gives the record's timestamp in seconds (CreateTime: the producer's clock).
        lag = time.time() - min(m.timestamp for m in messages)
        batch = [Incoming(m.topic, m.partition, m.offset, m.key, m.value) for m in messages]
        # Only a record that may be an event is correlated on its block's state; any other,
        # the lane's included, is refused before its state is looked at (processing.py), and no
        # state is held for it (a flood of random keys would otherwise fill the worker with
        # empty blocks).
        touched = {m.key for m in events if m.key is not None and may_be_event(m.key, m.value)}
        seq, shipped, drop = self._residency.plan(
            (int.from_bytes(key, "big"), self._table.get(key)) for key in touched)
        reply = self._child.submit(self._clock_ms(), shipped, batch, drop)
        same_kind = self._outstanding(refusals)
        previous = same_kind[-1] if same_kind else None
        # The group generation the batch was taken in: a flush that starts after the worker
        # has joined again (its partitions perhaps another's by then) must not commit.
        joins = self._outputs.joins
        self._flushes.append((asyncio.ensure_future(
            self._flush(messages, batch, seq, shipped, reply, previous, lag,
                        time.perf_counter(), joins, refusals)), refusals))

    async def _flush(self, messages: Sequence[Any], batch: Sequence[Incoming], seq: int,
                     shipped: dict[int, bytes | None], reply_future: asyncio.Future[Reply],
                     previous: asyncio.Future[None] | None, lag_s: float,
                     started: float, joins: int, refusals: bool) -> None:
        try:
            reply = await reply_future
            if previous is not None:
                await previous
            # A block's state goes to the partition of its events; a refused record on another
            # partition (a foreign partitioner) must not move it there.
            refused = {r.index for r in reply.rejected if r.field != "event_id"}
            partition_of = {m.key: m.partition for i, m in enumerate(batch) if i not in refused}
            for m in batch:
                partition_of.setdefault(m.key, m.partition)
            self._suspect(batch, reply)
            dead = self._dead_letters(batch, reply)
            dead += [self._quarantine(block, why, shipped.get(block), partition_of)
                     for block, why in reply.quarantined.items()]
            keys = {block: block_key(block) for block in reply.states}
            records = [(partition_of[keys[b]], keys[b], raw) for b, raw in reply.states.items()]
            async with self._turns.turn(refusals):
                t1 = time.perf_counter()
                await self._outputs.write(reply.alerts, reply.audit, self._states.topic,
                                          records, dead, joins)
                self._states.store(records)
                self._residency.committed(seq, reply.states)
                t2 = time.perf_counter()
        except asyncio.CancelledError:
            raise  # shutting down: the batch is not acked, so it is redelivered
        except (SafehubError, OSError) as exc:
            _stop(exc)
        consumer = self._app.consumer
        for message in messages:
            if message.ack(consumer):
                self._app.sensors.on_message_out(message.tp, message.offset, message)
        self._stats.add(len(batch), reply.process_s, t2 - t1, time.perf_counter() - t2, lag_s)
        self._count(messages, batch, reply, started)

    def _suspect(self, batch: Sequence[Incoming], reply: Reply) -> None:
        """Tell the refusals lane how many records of each partition that passed its cheap
        look this batch refused: a flood made to pass it (suspicion.py)."""
        counts: Counter[tuple[str, int]] = Counter()
        for rejected in reply.rejected:
            m = batch[rejected.index]
            if rejected.field != "event_id" and may_be_event(m.key, m.value):
                counts[(m.topic, m.partition)] += 1  # a collision is reported, not refused
        consumer = self._app.consumer  # transport.PromptConsumer
        for tp, count in counts.items():
            consumer.suspect(tp, count)

    def _dead_letters(self, batch: Sequence[Incoming], reply: Reply) -> list[DeadLetterRecord]:
        """The batch's refused records as dead letters, logged once per source partition and
        reason (a flood of malformed records is one line a batch, not one per record)."""
        dead: list[DeadLetterRecord] = []
        seen: dict[tuple[str, int, str], list[int]] = {}
        # A flood is mostly one or two reasons: each one's error and headers are made once.
        reasons: dict[tuple[str, str, str], tuple[ValidationError, Reason, str]] = {}
        for rejected in reply.rejected:
            m = batch[rejected.index]
            why = (rejected.field, rejected.rule, rejected.detail)
            if why not in reasons:
                error = rejected.error()
                reasons[why] = (error, reason_headers(error), error_text(error))
            error, reason, text = reasons[why]
            dead.append(dead_letter_message(m.value, m.key, m.topic, m.partition, m.offset,
                                            error, reason=reason))
            seen.setdefault((m.topic, m.partition, text), []).append(m.offset)
        for (topic, partition, said), offsets in seen.items():
            log.warning("dead-lettering %d record(s) of %s[%d] (offsets %d-%d): %s",
                        len(offsets), topic, partition, offsets[0], offsets[-1], said)
        return dead

    def _quarantine(self, block: int, why: str, raw: bytes | None,
                    partition_of: dict[bytes | None, int]) -> DeadLetterRecord:
        """Report a block state the child could not read: a poisoned changelog record."""
        key = block_key(block)
        partition, offset = self._states.origin.get(key, (partition_of[key], -1))
        topic = self._states.topic
        error = StoreError(f"block state quarantined: {why}; the block starts afresh")
        log.error("linkage block %d: its state from %s[%d]@%s cannot be read (%s): quarantined "
                  "to the dead-letter topic, and the block starts afresh without its history",
                  block, topic, partition, offset if offset >= 0 else "unknown offset", why)
        self._watch.metrics.dead_letter(topic, error)
        return dead_letter_message(raw, key, topic, partition, offset, error)

    @property
    def idle(self) -> bool:
        return not self._outstanding()

    def _count(self, messages: Sequence[Any], batch: Sequence[Incoming], reply: Reply,
               started: float) -> None:
        metrics = self._watch.metrics
        for topic, n in Counter(m.topic for m in batch).items():
            metrics.consumed(topic, n)
        refusals = Counter((batch[r.index].topic, r.field) for r in reply.rejected)
        for (topic, field), n in refusals.items():
            metrics.dead_letter(topic, ValidationError(field, ""), n)
        for tier, n in reply.tiers.items():
            metrics.alert(tier, count=n)
        metrics.produced(self._outputs.alerts_topic, len(reply.alerts))
        metrics.produced(self._outputs.audit_topic, len(reply.audit))
        # faust gives the record's timestamp in seconds
        metrics.latency_since(int(m.timestamp * 1000) for m in messages)
        metrics.batch(time.perf_counter() - started)
        self._watch.heartbeat.beat(SERVICE)

    def close(self) -> None:
        self._child.close()
