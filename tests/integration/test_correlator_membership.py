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


@pytest.mark.timeout(180)
def test_a_worker_stalled_past_its_session_aborts_instead_of_committing(
    secure_namespace: Callable[..., Namespace],
) -> None:
    ns = secure_namespace(agencies={"police-a": "POLICE"}, hubs=["csc-a"])
    kafka = ns.connection("correlator")
    group, topic = correlator_group(ns.prefix), ns.ingress("police-a")
    membership.watch(GroupCoordinator)
    took_all, stop = threading.Event(), threading.Event()

    async def run() -> None:
        a = worker(kafka, "a", group, topic)
        await a.start()
        writer = OutputWriter(kafka, "membership-test", ns.correlated, ns.audit,
                              transactional_id(group, "a"),
                              ownership=membership.for_group(group))
        b: threading.Thread | None = None
        try:
            partitions = len(a.partitions_for_topic(topic) or ())
            await assigned(a, partitions)
            assert membership.for_group(group).lost() is None
            await writer.write([], [b"while a member"], changelog_topic(ns.prefix), [])
            b = threading.Thread(target=second_worker,
                                 args=(kafka, group, topic, partitions, took_all, stop))
            b.start()
            time.sleep(SESSION_MS / 1000 + 3)  # the loop stalls: no heartbeat from A
            assert took_all.wait(60), "the group never gave B the stalled worker's partitions"
            with pytest.raises(BrokerError, match="transaction aborted, not committed"):
                await writer.write([], [b"after the group moved on"],
                                   changelog_topic(ns.prefix), [])
        finally:
            stop.set()
            await writer.close()
            await a.stop()
            if b is not None:
                b.join(30)

    asyncio.run(run())
    reader = TopicReader(ns.kafka, ns.audit)
    deadline = time.monotonic() + 5
    seen: list[bytes] = []
    while time.monotonic() < deadline:
        seen = [r.value for r in reader.poll()]
    assert seen == [b"while a member"]


@pytest.mark.timeout(180)
def test_a_batch_taken_before_the_worker_joined_again_is_not_committed(
    secure_namespace: Callable[..., Namespace],
) -> None:
    ns = secure_namespace(agencies={"police-r": "POLICE"}, hubs=["csc-r"])
    kafka = ns.connection("correlator")
    group, topic = correlator_group(ns.prefix), ns.ingress("police-r")
    membership.watch(GroupCoordinator)
    took_half, stop = threading.Event(), threading.Event()

    async def run() -> None:
        a = worker(kafka, "a", group, topic)
        await a.start()
        writer = OutputWriter(kafka, "membership-test", ns.correlated, ns.audit,
                              transactional_id(group, "a"),
                              ownership=membership.for_group(group))
        b: threading.Thread | None = None
        try:
            partitions = len(a.partitions_for_topic(topic) or ())
            await assigned(a, partitions)
            taken = writer.joins  # a batch taken now, in this generation
            b = threading.Thread(target=second_worker,
                                 args=(kafka, group, topic, partitions // 2, took_half, stop))
            b.start()
            await assigned(a, partitions - partitions // 2)  # A polls: it joins again
            assert took_half.wait(60), "B was never given half the partitions"
            assert writer.joins > taken
            assert membership.for_group(group).lost() is None  # a member, in good standing
            with pytest.raises(BrokerError, match="transaction aborted, not committed"):
                await writer.write([], [b"taken before the rejoin"],
                                   changelog_topic(ns.prefix), [], joins=taken)
            await writer.write([], [b"taken after it"], changelog_topic(ns.prefix), [],
                               joins=writer.joins)
        finally:
            stop.set()
            await writer.close()
            await a.stop()
            if b is not None:
                b.join(30)

    asyncio.run(run())
    reader = TopicReader(ns.kafka, ns.audit)
    deadline = time.monotonic() + 5
    seen: list[bytes] = []
    while time.monotonic() < deadline:
        seen = [r.value for r in reader.poll()]
    assert seen == [b"taken after it"]
