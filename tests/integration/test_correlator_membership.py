"""A correlator worker that the group may already have replaced commits nothing (membership.py,
outputs.py): its transaction is aborted between its sends and its commit, so no state can
reach the changelog after another worker has recovered it.

Real broker, real consumer group, real timeouts, as the `correlator` principal of a secure
namespace. Worker A's event loop stalls for longer than its session timeout (a long pause, as
a loaded machine gives one); meanwhile worker B joins, and the group gives B every partition.
When A resumes, its transaction is refused, and committed readers never see it. And a batch A
took before it joined the group again (B joining: A keeps a member, with fewer partitions) is
refused too, while one taken after that commits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer

from safehub.bus import make_aio_consumer
from safehub.connection import KafkaConnection
from safehub.errors import BrokerError
from safehub.services.correlator import membership
from safehub.services.correlator.outputs import OutputWriter, transactional_id
from safehub.services.correlator.transport import GroupCoordinator
from safehub.topics import changelog_topic, correlator_group
from tests.conftest import Namespace
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration
SESSION_MS = 6000


def worker(kafka: KafkaConnection, name: str, group: str, topic: str) -> AIOKafkaConsumer:
    consumer = make_aio_consumer(kafka, f"membership-{name}", group,
                                 session_timeout_ms=SESSION_MS, heartbeat_interval_ms=1000)
    consumer.subscribe([topic])
    return consumer


async def assigned(consumer: AIOKafkaConsumer, want: int, timeout_s: float = 40) -> None:
    deadline = time.monotonic() + timeout_s
    while len(consumer.assignment()) != want:
        assert time.monotonic() < deadline, f"assignment {consumer.assignment()}"
        await consumer.getmany(timeout_ms=200)


def second_worker(kafka: KafkaConnection, group: str, topic: str, partitions: int,
                  took_all: threading.Event, stop: threading.Event) -> None:
    """Worker B joins, and sets `took_all` once it has `partitions` partitions."""
    async def run() -> None:
        b = worker(kafka, "b", group, topic)
        await b.start()
        try:
            await assigned(b, partitions)
            took_all.set()
            while not stop.is_set():
                await b.getmany(timeout_ms=200)
        finally:
            await b.stop()

    asyncio.run(run())


class Workers:
    """Worker A on this event loop (a consumer of the group and the correlator's OutputWriter,
    its membership watched), and worker B on a thread of its own once `join_b` is called."""

    def __init__(self, ns: Namespace, agency: str) -> None:
        self.ns = ns
        self.kafka = ns.connection("correlator")
        self.group, self.topic = correlator_group(ns.prefix), ns.ingress(agency)
        self.b_assigned, self._stop = threading.Event(), threading.Event()
        self._b: threading.Thread | None = None
        self.partitions = 0

    async def __aenter__(self) -> Workers:
        membership.watch(GroupCoordinator)
        self.a = worker(self.kafka, "a", self.group, self.topic)
        await self.a.start()
        self.writer = OutputWriter(self.kafka, "membership-test", self.ns.correlated,
                                   self.ns.audit, transactional_id(self.group, "a"),
                                   ownership=membership.for_group(self.group))
        self.partitions = len(self.a.partitions_for_topic(self.topic) or ())
        await assigned(self.a, self.partitions)
        return self

    def join_b(self, partitions: int) -> None:
        """B joins; `b_assigned` is set once the group has given it `partitions`."""
        self._b = threading.Thread(target=second_worker, args=(
            self.kafka, self.group, self.topic, partitions, self.b_assigned, self._stop))
        self._b.start()

    async def write(self, entry: bytes, joins: int | None = None) -> None:
        await self.writer.write([], [entry], changelog_topic(self.ns.prefix), [], joins=joins)

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await self.writer.close()
        await self.a.stop()
        if self._b is not None:
            self._b.join(30)

    def journalled(self) -> list[bytes]:
        """What committed readers of `audit` see."""
        reader = TopicReader(self.ns.kafka, self.ns.audit)
        deadline = time.monotonic() + 5
        seen: list[bytes] = []
        while time.monotonic() < deadline:
            seen = [r.value for r in reader.poll()]
        return seen


@pytest.mark.timeout(180)
def test_a_worker_stalled_past_its_session_aborts_instead_of_committing(
    secure_namespace: Callable[..., Namespace],
) -> None:
    workers = Workers(secure_namespace(agencies={"police-a": "POLICE"}, hubs=["csc-a"]),
                      "police-a")

    async def run() -> None:
        async with workers:
            assert membership.for_group(workers.group).lost() is None
            await workers.write(b"while a member")
            # The batch is taken now, as the pipeline takes one: with the generation it was
            # taken in. Once A's loop runs again its coordinator may join the group again
            # before the write asks (a CI failure, session 30): the write must still abort.
            taken = workers.writer.joins
            workers.join_b(workers.partitions)
            time.sleep(SESSION_MS / 1000 + 3)  # the loop stalls: no heartbeat from A
            assert workers.b_assigned.wait(60), \
                "the group never gave B the stalled worker's partitions"
            with pytest.raises(BrokerError, match="transaction aborted, not committed"):
                await workers.write(b"after the group moved on", joins=taken)

    asyncio.run(run())
    assert workers.journalled() == [b"while a member"]


@pytest.mark.timeout(180)
def test_a_batch_taken_before_the_worker_joined_again_is_not_committed(
    secure_namespace: Callable[..., Namespace],
) -> None:
    workers = Workers(secure_namespace(agencies={"police-r": "POLICE"}, hubs=["csc-r"]),
                      "police-r")

    async def run() -> None:
        async with workers:
            taken = workers.writer.joins  # a batch taken now, in this generation
            half = workers.partitions // 2
            workers.join_b(half)
            await assigned(workers.a, workers.partitions - half)  # A polls: it joins again
            assert workers.b_assigned.wait(60), "B was never given half the partitions"
            assert workers.writer.joins > taken
            assert membership.for_group(workers.group).lost() is None  # in good standing
            with pytest.raises(BrokerError, match="transaction aborted, not committed"):
                await workers.write(b"taken before the rejoin", joins=taken)
            await workers.write(b"taken after it", joins=workers.writer.joins)

    asyncio.run(run())
    assert workers.journalled() == [b"taken after it"]
