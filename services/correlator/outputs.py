"""A batch's dead letters, alerts, audit entries and block states, sent as one Kafka transaction.

Why one transaction. The auditors' replay follows the journal (`audit`): every event it shows
accepted must be in its block's state from then on. Sent separately, a worker killed after its
audit entries were acknowledged but before the block states were saved came back with states
that lacked events the journal shows accepted; the events were redelivered, but events of the
same block from other topics could overtake them, and were correlated without them (seen in
CI, test_correlator_recovery.py and test_correlator_workers.py). In one transaction the
journal, `correlated` and the table's changelog either all have the batch or none has it, so
the state a worker recovers is exactly what the journal says. Every reader of those topics reads
committed records only (safehub.bus, the auditor, the table's recovery: transport.py).

A worker killed mid-transaction leaves it open, and until it ends, committed readers of the
partitions it touched wait (the router, the auditors, a worker recovering the changelog). Who
ends it depends on the worker's transactional id:
- with SAFEHUB_CORRELATOR_WORKER_ID set (one per worker, stable across its restarts: a
  process manager's instance name), the id is the app id and the worker id, and a restarted
  worker fences its predecessor before it reads anything (`fence`): the broker aborts the open
  transaction at once, and the predecessor, if it still runs (a zombie, say after a long
  pause), can commit nothing more: its next commit fails and it stops. The worker id also
  makes the worker a static member of its consumer group (transport.py), so that it takes its
  partitions back at once rather than after the group has timed its predecessor out;
- without it, each process has a new random id, and the broker aborts the open transaction
  after TRANSACTION_TIMEOUT_MS (checked every 10 s by default: 10-20 s in all), and a zombie
  is not fenced off by a restart.
Two live workers given the same worker id fence each other in turn: each stops with an error
that says so.

A worker the group may have replaced. Fencing by transactional id stops a predecessor with
the same worker id, not a worker whose partitions the group gave to another (a long stall, a
session lost while its coordinator's broker was down). Such a worker's commit would put block
states in the changelog after the new owner had recovered it. Between its sends and its commit
a worker therefore checks that the group must still count it as a member of the same
generation (membership.py), and otherwise aborts the transaction and stops (exit 70).

Dead letters. A batch's refused records go to `deadletter` in the same transaction, so a
record's dead letter becomes visible together with its EVENT_DEADLETTERED entry, never after
it (every reader of `deadletter` reads committed records: safehub.bus), and is committed before
the record's offset is acked (app.py). They used to be sent first, one acknowledged round trip
each on the worker's event loop: a flood of malformed records then ran at the broker's latency
per record and held up the valid events behind it. The correlator principal may write
`deadletter` (deploy/acl.py), which is all a transactional write of a topic needs besides its
transactional id. Delivery: each refused record is in exactly one committed transaction unless
the worker dies after a commit and before its input offsets are committed; the batch is then
correlated again and its dead letters sent again, with the same source topic, partition and
offset headers (by which a reader tells a repeat), as its audit entries are journalled again
under the same entry ids.

Sending. The other services send through kafka-python (safehub.bus), whose per-record `send`
and network thread run Python code for every record. In the correlator, which writes an audit
entry for every event, that path and its thread's share of the GIL took about a fifth of the
worker's time. Here an aiokafka producer (acks=all) on the worker's own event loop takes whole
record batches built by aiokafka's BatchBuilder (compiled code).

A broker lost mid-transaction. When a broker dies, the sends of an open transaction fail (the
connection closed, the partition's leader moved, too few in-sync replicas) although the
cluster will take them again seconds later. Nothing of such a transaction is committed, so
`write` drops its producer, whose successor, registering the same transactional id, aborts
whatever it left open, and sends the same records again in a new transaction, for up to
RETRY_FOR_S. Only failures before the commit is asked for are retried: a commit that failed
may have taken effect, so that one still stops the worker (exit 70) and the batch is
redelivered to a restarted worker, which finds its events already in the block's state. A
worker stopped on every broker loss took 30-60 s to be back (bench/fault_bench.py); the fence
at start is retried the same way.

Order: the `audit` topic has one partition, and its order is the processing order the auditors'
replay follows. Entries go to partition 0 in the order given, and `write` returns only when the
transaction is committed, so one batch's entries are on the log before the next batch's are
sent. Alerts go to the partition of `correlated` that kafka-python's producers would pick for
the same key (murmur2), so one cluster's alerts stay in order on one partition. A block's state
goes to the changelog partition its events arrived on (app.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    ProducerFenced,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.partitioner import DefaultPartitioner

from safehub.bus import make_aio_producer
from safehub.connection import KafkaConnection
from safehub.errors import BrokerError
from safehub.services.correlator.membership import Membership

AUDIT_PARTITION = 0
# One record to send: key, value, headers.
Record = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]
# A dead letter: the original key and value, headers naming its origin and reason (deadletter.py).
DeadLetterRecord = Record
NO_HEADERS: Sequence[tuple[str, bytes]] = ()
# How long the broker lets a transaction stay open before it aborts it. Without a worker id
# nothing else ends a killed worker's open transaction, and committed readers wait for it:
# short. With one, a restarted worker ends it at once (`fence`), so the timeout need only
# outlast a broker's failover, and a transaction the broker times out fences the worker's own
# producer: the worker stops (exit 70; 4 such stops in 8 broker kills in a 100,000-event fault
# run) and is restarted, losing nothing. 60 s for workers with an id was tried and taken back:
# all three 100,000-event fault runs with it ended with the router and inbox no longer
# consuming (cause not found; bench/README.md), against none of three at 10 s.
TRANSACTION_TIMEOUT_MS = 10_000
# How long a send that failed for the broker's sake is tried again: a killed broker's
# partitions have new leaders within seconds, and a restarted one is back within about 30 s.
RETRY_FOR_S = 60.0
RETRY_DELAY_S = (0.5, 5.0)  # first, then doubling up to the second
# For a heartbeat to renew a membership that has run out (membership.py): half the
# transaction timeout, as the transaction stays open meanwhile; heartbeats go every 2 s.
OWNERSHIP_WAIT_S = TRANSACTION_TIMEOUT_MS / 1000 / 2
STOP_WAIT_S = 10.0  # for a failed producer to stop; it may wait on batches it cannot send
SLOW_TRANSACTION_S = 2.0  # a commit slower than this is logged with its steps

log = logging.getLogger(__name__)


def transactional_id(app_id: str, worker_id: str | None) -> str:
    """The worker's transactional id: stable with a worker id, else new for each process."""
    if worker_id is None:
        return f"{app_id}-{uuid.uuid4().hex}"
    return f"{app_id}-worker-{worker_id}"


def _producer(kafka: KafkaConnection, client_id: str, transactional: str) -> AIOKafkaProducer:
    return make_aio_producer(kafka, client_id, enable_idempotence=True, linger_ms=0,
                             transactional_id=transactional,
                             transaction_timeout_ms=TRANSACTION_TIMEOUT_MS)


def _refused(exc: BaseException) -> bool:
    """Whether the broker refused this principal (ACLs), as opposed to failing."""
    return isinstance(exc, (TransactionalIdAuthorizationFailed, TopicAuthorizationFailedError,
                            ClusterAuthorizationFailedError))


def _transient(exc: BaseException) -> bool:
    """Whether a failure is the broker's passing state (see "A broker lost mid-transaction"),
    as opposed to a refusal, a fenced producer or a record the broker will never take."""
    return (getattr(exc, "retriable", False) is True
            or isinstance(exc, (KafkaConnectionError, KafkaTimeoutError)))


class _Backoff:
    """Delays between attempts, doubling, until RETRY_FOR_S has passed."""

    def __init__(self) -> None:
        self._deadline = time.monotonic() + RETRY_FOR_S
        self._delay = RETRY_DELAY_S[0]

    async def wait(self) -> bool:
        """Sleep before the next attempt; False when there is no time left for one."""
        if time.monotonic() + self._delay > self._deadline:
            return False
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, RETRY_DELAY_S[1])
        return True


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), STOP_WAIT_S)
    except Exception as exc:  # noqa: BLE001 - it is being replaced; why it failed is logged
        log.warning("a failed transactional producer did not stop cleanly: %s", exc)


async def fence(kafka: KafkaConnection, client_id: str, transactional: str) -> None:
    """End what an earlier process with this transactional id left: its open transaction is
    aborted, and it can commit nothing more. Returns once the broker has done both."""
    backoff = _Backoff()
    while True:
        producer = _producer(kafka, client_id, transactional)
        try:
            # Starting a transactional producer registers the id, which is the fencing.
            await producer.start()
            return
        except Exception as exc:  # aiokafka's errors have no common base besides Exception
            if not _refused(exc) and _transient(exc):
                log.warning("could not fence earlier workers with transactional id %s yet "
                            "(%s); trying again", transactional, exc)
                if await backoff.wait():
                    continue
            why = (f"{kafka.principal} may not use it (ACLs allow the correlator principal its "
                   "app id's transactional ids only)" if _refused(exc) else str(exc))
            raise BrokerError(f"could not fence earlier workers with transactional id "
                              f"{transactional}: {why}") from exc
        finally:
            await _stop_quietly(producer)


class _Phases:
    """How long each step of one transaction took: a slow one is logged with its steps, so an
    operator sees whether the producer, the sends, the membership check or the commit held the
    output up (fault runs show gaps of 20-40 s after broker kills)."""

    def __init__(self) -> None:
        self._last = self._start = time.monotonic()
        self._steps: list[tuple[str, float]] = []

    def done(self, step: str) -> None:
        now = time.monotonic()
        self._steps.append((step, now - self._last))
        self._last = now

    def report(self) -> None:
        took = self._last - self._start
        if took >= SLOW_TRANSACTION_S:
            log.warning("a transaction took %.1f s to commit (%s)", took,
                        ", ".join(f"{step} {s:.1f} s" for step, s in self._steps))


class NotOwner(Exception):
    """The group may have given this worker's partitions to another (membership.py)."""


class OutputWriter:
    def __init__(self, kafka: KafkaConnection, client_id: str, correlated_topic: str,
                 audit_topic: str, transactional: str,
                 deadletter_topic: str | None = None,
                 ownership: Membership | None = None) -> None:
        # A producer is made anew after a failed transaction (`_drop_producer`), always alike.
        self._new_producer = partial(_producer, kafka, client_id, transactional)
        self._transactional_id = transactional
        self._correlated = correlated_topic
        self._audit = audit_topic
        self._deadletter = deadletter_topic
        self._deadletter_partitions: list[int] = []
        self._producer: AIOKafkaProducer | None = None
        self._partitions: list[int] = []
        self._partitioner = DefaultPartitioner()
        # Whether the group still counts this worker as the owner of its partitions
        # (membership.py); asked between a transaction's sends and its commit.
        self._ownership = ownership

    @property
    def alerts_topic(self) -> str:
        return self._correlated

    @property
    def audit_topic(self) -> str:
        return self._audit

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._new_producer()
            try:
                await producer.start()
                partitions = await producer.partitions_for(self._correlated)
                if not partitions:
                    raise BrokerError(f"topic {self._correlated} has no partitions")
                if self._deadletter is not None:
                    dead = await producer.partitions_for(self._deadletter)
                    if not dead:
                        raise BrokerError(f"topic {self._deadletter} has no partitions")
                    self._deadletter_partitions = sorted(dead)
            except BaseException:
                await _stop_quietly(producer)
                raise
            self._producer, self._partitions = producer, sorted(partitions)
        return self._producer

    @property
    def joins(self) -> int:
        """How many times the worker has joined its group so far (membership.py): taken when
        a batch is taken, and given back to `write` with the batch's outputs."""
        return self._ownership.joins if self._ownership is not None else 0

    async def write(self, alerts: Sequence[tuple[bytes, bytes]], audit: Sequence[bytes],
                    states_topic: str, states: Sequence[tuple[int, bytes, bytes]],
                    deadletters: Sequence[DeadLetterRecord] = (),
                    joins: int | None = None) -> None:
        """Send dead letters (key, value, headers), alerts (key, value), audit entries and
        block states (partition, key, value) in one transaction; return once it is committed.
        A transaction whose sends failed for the broker's sake is sent again (see the module's
        docstring). `joins`: `self.joins` when the batch was taken (by default, now); if the
        worker has joined its group again since, its partitions may have moved meanwhile, and
        the transaction is aborted."""
        if not alerts and not audit and not states and not deadletters:
            return
        if deadletters and self._deadletter is None:
            raise BrokerError("dead letters to send, but this writer has no dead-letter topic")
        backoff = _Backoff()
        phases = _Phases()
        while True:
            committing = False
            try:
                producer = await self._started()
                if joins is None:
                    joins = self.joins
                phases.done("producer")
                async with producer.transaction():
                    phases.done("begin")
                    await self._send(producer, alerts, audit, states_topic, states, deadletters)
                    phases.done("sends")
                    lost = await self._lost_ownership(joins)
                    if lost is not None:
                        raise NotOwner(lost)  # inside the transaction: its exit aborts it
                    phases.done("membership")
                    committing = True  # the context's exit asks for the commit
                phases.done("commit")
                phases.report()
                return
            except NotOwner as exc:
                raise BrokerError(
                    f"transaction aborted, not committed: this worker's partitions may already "
                    f"be another worker's ({exc}); its states would be lost to that worker") \
                    from exc
            except BrokerError:
                raise
            except ProducerFenced as exc:
                raise BrokerError(
                    f"fenced: either another worker started with this worker's transactional "
                    f"id ({self._transactional_id}), or the broker aborted the transaction "
                    f"after it was open {TRANSACTION_TIMEOUT_MS // 1000} s (a long broker outage); "
                    "this process may commit nothing more. If two workers run, give each "
                    "its own SAFEHUB_CORRELATOR_WORKER_ID") from exc
            except Exception as exc:  # aiokafka's errors have no common base besides Exception
                if not committing and _transient(exc) and not _refused(exc):
                    log.warning("transaction not sent (%s): sending it again with a new "
                                "producer", exc)
                    phases.done(f"failed ({type(exc).__name__})")
                    await self._drop_producer()
                    if await backoff.wait():
                        phases.done("backoff")
                        continue
                raise BrokerError(f"alerts, audit entries or block states not committed: "
                                  f"{exc}") from exc

    async def _lost_ownership(self, joins: int) -> str | None:
        """Why the group may no longer count this worker as a member of the generation it was
        in when the transaction began (`joins`), after waiting a little for a heartbeat to say
        it still does (a coordinator that was slow to answer, or moved with a killed broker);
        None while it does. Not longer than the transaction timeout allows: the transaction is
        open meanwhile."""
        if self._ownership is None:
            return None
        deadline = time.monotonic() + OWNERSHIP_WAIT_S
        while ((lost := self._ownership.lost(joins)) is not None
               and time.monotonic() < deadline):
            await asyncio.sleep(0.2)
        return lost

    async def _send(self, producer: AIOKafkaProducer, alerts: Sequence[tuple[bytes, bytes]],
                    audit: Sequence[bytes], states_topic: str,
                    states: Sequence[tuple[int, bytes, bytes]],
                    deadletters: Sequence[DeadLetterRecord]) -> None:
        by_partition: dict[tuple[str, int], list[Record]] = {}
        for key, value, headers in deadletters:
            assert self._deadletter is not None
            # As kafka-python's producers would place it: by key, a keyless one anywhere.
            p = self._partitioner(key, self._deadletter_partitions,
                                  self._deadletter_partitions)
            by_partition.setdefault((self._deadletter, p), []).append((key, value, headers))
        for key, value in alerts:
            p = self._partitioner(key, self._partitions, self._partitions)
            by_partition.setdefault((self._correlated, p), []).append(
                (key, value, NO_HEADERS))
        by_partition[(self._audit, AUDIT_PARTITION)] = [(None, v, NO_HEADERS) for v in audit]
        for p, key, value in states:
            by_partition.setdefault((states_topic, p), []).append((key, value, NO_HEADERS))
        delivered: list[Any] = []
        for (topic, p), records in by_partition.items():
            delivered += await send_in_batches(producer, topic, p, records)
        # Every future retrieved: a fenced producer fails them all with one exception.
        outcomes = await asyncio.gather(*delivered, return_exceptions=True)
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failed is not None:
            raise failed

    async def _drop_producer(self) -> None:
        # The next `_started` makes a producer with the same transactional id; registering
        # it aborts the transaction this one left open.
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await _stop_quietly(producer)

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()


async def send_in_batches(producer: AIOKafkaProducer, topic: str, partition: int,
                          records: Sequence[Record]) -> list[Any]:
    """Queue `records` (key, value, headers) on one partition as few record batches; return
    their delivery futures."""
    futures: list[Any] = []
    if not records:
        return futures
    batch = producer.create_batch()
    for key, value, headers in records:
        listed = list(headers)  # aiokafka's compiled batch builder takes a list only
        # The first record always fits; a full batch is sent and a new one begun.
        if batch.append(key=key, value=value, timestamp=None, headers=listed) is None:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None, headers=listed)
    futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures
