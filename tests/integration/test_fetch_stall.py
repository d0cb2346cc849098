"""A kafka-python consume loop that stops fetching while records wait stops its service with
EXIT_TEMPORARY (restarted with new clients), and one that has read everything never does,
transaction markers and aborted records included (fetch_stall.py, consuming.py).

Real broker. The wedge seen in fault runs cannot be made on demand, so a paused partition
stands in for it: to the loop, both are polls that return nothing while records wait."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest
from kafka import TopicPartition

from safehub.bus import make_aio_producer, make_consumer
from safehub.connection import KafkaConnection
from safehub.consuming import (
    EXIT_TEMPORARY,
    Action,
    Batch,
    ConsumeLoop,
    ErrorPolicy,
    Rule,
    ServiceStopped,
)
from safehub.errors import BrokerError
from safehub.fetch_stall import FetchStall
from safehub.observability.watch import ServiceWatch

pytestmark = pytest.mark.integration
POLICY = ErrorPolicy("stall-test", (Rule((BrokerError,), Action.RETRY),))


class Collect:
    def __init__(self) -> None:
        self.values: list[bytes] = []

    def handle(self, batch: Batch) -> None:
        self.values += [r.value for r in batch]

    def reset(self) -> None:
        pass


def write_in_transactions(kafka: KafkaConnection, topic: str) -> None:
    """Two committed transactions and an aborted one: the log ends in markers."""

    async def run() -> None:
        producer = make_aio_producer(kafka, "stall-test", transactional_id=f"stall-{topic}",
                                     enable_idempotence=True)
        await producer.start()
        try:
            for values in ((b"a", b"b"), (b"c",)):
                async with producer.transaction():
                    for v in values:
                        await producer.send_and_wait(topic, v, partition=0)
            await producer.begin_transaction()
            await producer.send_and_wait(topic, b"aborted", partition=0)
            await producer.abort_transaction()
        finally:
            await producer.stop()

    asyncio.run(run())


def loop_for(kafka: KafkaConnection, topic: str, after_s: float) -> tuple[ConsumeLoop, Collect]:
    consumer = make_consumer(kafka, f"stall-{topic}", client_id="stall-test",
                             isolation_level="read_committed")
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    handler = Collect()
    loop = ConsumeLoop(consumer, handler, POLICY, None, ServiceWatch("stall-test"), "stall",
                       logging.getLogger("stall-test"), stall=FetchStall(after_s))
    return loop, handler


@pytest.mark.timeout(120)
def test_a_consumer_that_read_everything_is_never_taken_for_stuck(
    kafka: KafkaConnection, topic_names: Callable[[str], str],
    create_topics_fn: Callable[..., list[str]],
) -> None:
    (topic,) = create_topics_fn(topic_names("stall.idle"))
    write_in_transactions(kafka, topic)
    loop, handler = loop_for(kafka, topic, after_s=1.0)
    try:
        deadline = time.monotonic() + 8  # eight times the stall bound, idle after the reads
        while time.monotonic() < deadline:
            loop.step(timeout_ms=200)
        assert handler.values == [b"a", b"b", b"c"]
    finally:
        loop.consumer.close()


@pytest.mark.timeout(120)
def test_a_consumer_that_stops_fetching_while_records_wait_stops_its_service(
    kafka: KafkaConnection, topic_names: Callable[[str], str],
    create_topics_fn: Callable[..., list[str]],
) -> None:
    (topic,) = create_topics_fn(topic_names("stall.stuck"))
    write_in_transactions(kafka, topic)
    loop, handler = loop_for(kafka, topic, after_s=1.0)
    try:
        loop.consumer.pause(TopicPartition(topic, 0))  # fetches nothing from now on
        started = time.monotonic()
        with pytest.raises(ServiceStopped) as stopped:
            while time.monotonic() - started < 30:
                loop.step(timeout_ms=200)
        assert stopped.value.exit_code == EXIT_TEMPORARY
        assert f"record(s) wait on 1 partition(s) ({topic}[0])" in str(stopped.value)
        assert handler.values == []
    finally:
        loop.consumer.close()
