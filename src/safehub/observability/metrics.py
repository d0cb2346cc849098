"""Every metric safehub exports, in one registry, with one set of label names.

Labels are chosen from: service, topic, partition, tier, reason, hub. A reason is an error's
class (and, for a ValidationError, the field it names), never its message: a library's message
may quote the data, and a label is kept and shipped elsewhere for as long as the metric lives.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from safehub.errors import ValidationError

# A `_created` series beside every counter and histogram doubles what is scraped and stored
# for a figure nobody here reads (a restart shows as the counter going back to zero).
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_IN = Counter(
    "safehub_events_in", "Records consumed from a topic (each counted once it is processed)",
    ["service", "topic"], registry=REGISTRY)
EVENTS_OUT = Counter(
    "safehub_events_out", "Records a service wrote to a topic and the broker acknowledged",
    ["service", "topic"], registry=REGISTRY)
ALERTS = Counter(
    "safehub_alerts", "Alerts by tier: raised (correlator), routed (router), stored (inbox); "
    "hub is the receiving agency, empty where there is none yet",
    ["service", "tier", "hub"], registry=REGISTRY)
DEAD_LETTERS = Counter(
    "safehub_dead_letters", "Records sent to the dead-letter topic, by source topic and reason "
    "(an error class, never a message)", ["service", "topic", "reason"], registry=REGISTRY)
ESCALATIONS = Counter(
    "safehub_escalations", "Unacknowledged alerts escalated to the next agency",
    ["service", "hub"], registry=REGISTRY)
# From the record's Kafka timestamp (the producer's send) to the moment its outcome is
# durable: how far behind the service runs. An event's own time can be weeks old by design
# (late batches), so it would measure the agencies, not the pipeline.
EVENT_LATENCY = Histogram(
    "safehub_event_latency_seconds", "Record timestamp (producer send) to processed",
    ["service"], registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))
BATCH_SECONDS = Histogram(
    "safehub_batch_seconds", "Time to process one polled batch, outputs acknowledged",
    ["service"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
CONSUMER_LAG = Gauge(
    "safehub_consumer_lag", "Records behind: the partition's end offset minus the position",
    ["service", "topic", "partition"], registry=REGISTRY)
REID_PENDING = Gauge(
    "safehub_reid_requests_pending", "Re-identification requests awaiting an answer (hub side) "
    "or an officer's decision (agency desk)", ["service", "hub"], registry=REGISTRY)
REQUESTS = Counter(
    "safehub_requests", "Requests an HTTP service answered, by coded outcome (ok, or the "
    "refusal's status: http_401, http_429, ...)", ["service", "reason"], registry=REGISTRY)
HEARTBEAT_AGE = Gauge(
    "safehub_heartbeat_age_seconds", "Seconds since the main loop last made progress",
    ["service"], registry=REGISTRY)
READY = Gauge(
    "safehub_ready", "1 if the last /readyz answer was ready, else 0", ["service"],
    registry=REGISTRY)


def reason_of(error: BaseException) -> str:
    """A coded reason for a label: the error's class, with the field of a ValidationError."""
    name = type(error).__name__
    if isinstance(error, ValidationError) and error.field.isidentifier():
        return f"{name}:{error.field}"
    return name


def _now_s() -> float:
    return time.time()


class ServiceMetrics:
    """The metrics above, bound to one service's name."""

    def __init__(self, service: str) -> None:
        self.service = service

    def consumed(self, topic: str, count: int = 1) -> None:
        if count:
            EVENTS_IN.labels(self.service, topic).inc(count)

    def consumed_batches(self, batches: Mapping[object, Iterable[object]]) -> None:
        """Count a kafka-python poll result (TopicPartition -> records) as consumed."""
        for tp, records in batches.items():
            self.consumed(str(getattr(tp, "topic", tp)), len(list(records)))

    def produced(self, topic: str, count: int = 1) -> None:
        if count:
            EVENTS_OUT.labels(self.service, topic).inc(count)

    def alert(self, tier: str, hub: str = "", count: int = 1) -> None:
        ALERTS.labels(self.service, tier, hub).inc(count)

    def dead_letter(self, topic: str, error: BaseException, count: int = 1) -> None:
        DEAD_LETTERS.labels(self.service, topic, reason_of(error)).inc(count)

    def escalation(self, hub: str) -> None:
        ESCALATIONS.labels(self.service, hub).inc()

    def latency_since(self, timestamps_ms: Iterable[int], now_s: float | None = None) -> None:
        """Observe each record's latency from its Kafka timestamp (ms) to now."""
        now = _now_s() if now_s is None else now_s
        child = EVENT_LATENCY.labels(self.service)
        for ts in timestamps_ms:
            if ts > 0:
                child.observe(max(0.0, now - ts / 1000))

    def batch(self, seconds: float) -> None:
        BATCH_SECONDS.labels(self.service).observe(seconds)

    def lag(self, topic: str, partition: int, records_behind: int) -> None:
        CONSUMER_LAG.labels(self.service, topic, str(partition)).set(max(0, records_behind))

    def consumer_lag(self, consumer: object) -> None:
        """Lag of every partition a kafka-python consumer holds, from what its fetches already
        know (no request to the broker: highwater comes with each fetch response)."""
        for tp in consumer.assignment():  # type: ignore[attr-defined]
            end = consumer.highwater(tp)  # type: ignore[attr-defined]
            if end is None:
                continue
            try:
                position = consumer.position(tp, timeout_ms=0)  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - a lag figure must never stop the loop
                continue
            if position is not None:
                self.lag(tp.topic, tp.partition, end - position)

    def request(self, reason: str) -> None:
        REQUESTS.labels(self.service, reason).inc()

    def reid_pending(self, hub: str, count: int) -> None:
        REID_PENDING.labels(self.service, hub).set(count)
