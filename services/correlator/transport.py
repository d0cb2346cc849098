"""faust's aiokafka transport with a short fetch wait, and no commit past skipped offsets.

faust-streaming builds its aiokafka consumer with `fetch_max_wait_ms=1500`, fixed in its
driver. aiokafka keeps at most one fetch in flight per broker and leaves out of it every
partition whose records are still buffered; so after the worker takes a batch from the busy
partitions, the fetch already in flight asks only for the quiet ones and the broker holds it
for up to 1.5 s before the busy partitions can be fetched again. Measured at 1,000 events/s in
bench/latency_bench.py: batches waited up to 2-3 s for records already on the broker. Here the
wait is FETCH_MAX_WAIT_MS; an idle worker then sends a few more (empty) fetches a second.
"""

from __future__ import annotations

import logging
from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)
FETCH_MAX_WAIT_MS = 100


class PromptConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when the consumer starts and builds its fetcher.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class PromptConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return PromptConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        """Refuse to treat skipped offsets of an acked topic as done.

        faust counts offsets it never received as acknowledged ("gaps", for compacted or
        transactional topics), so its commit moves past them. Our ingress topics are neither,
        so a gap is messages lost inside faust during a rebalance: seen in
        tests/integration/test_correlator_workers.py, two events committed past and never
        correlated. Left unrecorded, the gap holds the commit at the first missing offset, and
        stalls.StallWatch re-reads the partition from there.
        """
        log.warning("%s[%d]: offsets %d-%d skipped by the consumer; not committing past them",
                    tp.topic, tp.partition, offset_from, offset_to)


class PromptTransport(faust_aiokafka.Transport):
    Consumer = PromptConsumer


def install(app: Any) -> None:
    """Give `app` the prompt transport; call before anything asks the app for topics."""
    app.transport = PromptTransport(app.conf.broker_consumer, app)
