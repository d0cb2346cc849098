"""The agency's consumer of `reid-requests.<agency>`: requests -> its store, rows before offsets.

Each record is decoded and checked (desk.check_request); one that fails is dead-lettered with
its reason, never dropped. A good one is stored (a redelivery is a no-op), its receipt audited,
and if none of its handles is this agency's it is answered NOT_FOUND at once. Offsets are
committed only after that: if the database or the broker fails, the consumer seeks back to the
batch's first offsets, waits with back-off, and reads the same records again.

Runs as the agency's principal, in the agency's own consumer group.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from safehub.bus import commit_batches
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consumers.inbox.consumer import RetryPolicy
from safehub.errors import BrokerError, StoreError, ValidationError
from safehub.observability.watch import ServiceWatch
from safehub.schemas.codec import decode
from safehub.schemas.records import ReidRequest
from safehub.services.reid import desk
from safehub.services.reid.office import Office

log = logging.getLogger(__name__)
PENDING_EVERY_S = 5.0  # how often the desk's pending requests are counted for the metric


class RequestListener:
    def __init__(self, consumer: KafkaConsumer, office: Office, deadletters: DeadLetterSink,
                 hubs: Collection[str], retry: RetryPolicy | None = None,
                 watch: ServiceWatch | None = None) -> None:
        self._consumer = consumer
        self.watch = watch or ServiceWatch("reid")
        self._next_count = 0.0
        self._office = office
        self._deadletters = deadletters
        self._hubs = frozenset(hubs)
        self._retry = retry or RetryPolicy()
        self._backoff = self._retry.initial_s
        self.received = 0
        self.deadlettered = 0
        self.outages = 0

    def step(self, stop: threading.Event, timeout_ms: int = 500) -> int:
        """Poll once and handle the batch; return how many records were consumed for good."""
        batches: Mapping[TopicPartition, list[Any]] = self._consumer.poll(timeout_ms=timeout_ms)
        started = time.perf_counter()
        self.watch.polled(self._office.agency_id, self._consumer, batches)
        self._count_pending()
        if not batches:
            return 0
        prefix = self._office.prefix
        try:
            done = 0
            for tp, records in batches.items():
                for rec in records:
                    try:
                        request = decode(rec.value, ReidRequest)
                        desk.check_request(request, desk.agency_from_topic(tp.topic, prefix),
                                           self._hubs, self._office.registered_key)
                        self._office.receive(request, rec.value)
                        self.received += 1
                    except ValidationError as exc:
                        self._deadletters.send_record(rec, exc)
                        self.watch.metrics.dead_letter(rec.topic, exc)
                        self.deadlettered += 1
                    done += 1
        except (StoreError, BrokerError) as exc:
            # Nothing of this batch is committed: it is read again once the outage is over;
            # what was stored or answered already is a no-op the second time.
            self.outages += 1
            log.warning("re-identification requests of %s not handled (%s); retrying in %.1fs",
                        self._office.agency_id, exc, self._backoff)
            for tp, records in batches.items():
                self._consumer.seek(tp, records[0].offset)
            stop.wait(self._backoff)
            self._backoff = min(self._backoff * 2, self._retry.max_s)
            return 0
        self._backoff = self._retry.initial_s
        commit_batches(self._consumer, batches, f"reid {self._office.agency_id}")
        self.watch.processed(batches, started)
        self._next_count = 0.0  # a new request is pending: say so now
        self._count_pending()
        return done

    def _count_pending(self) -> None:
        """Requests awaiting this agency's officer, every few seconds (the officer decides on
        the desk's page, not through this loop)."""
        now = time.monotonic()
        if now < self._next_count:
            return
        self._next_count = now + PENDING_EVERY_S
        try:
            pending = len(self._office.pending())
        except StoreError:
            return  # the batch's own handling reports the outage
        self.watch.metrics.reid_pending(self._office.agency_id, pending)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.step(stop)
            except BrokerError as exc:
                log.warning("%s; retrying", exc)
                self.watch.heartbeat.beat(self._office.agency_id)  # waiting, not wedged
                stop.wait(self._retry.initial_s)

    def close(self) -> None:
        self._consumer.close()
