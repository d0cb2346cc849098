"""What a service's main loop touches so that it can be watched: its metrics, its heartbeat,
the partitions its consumers hold; and the health server built from them (`serve`).

Every long-running service makes one `ServiceWatch` in its composition root, passes it down
to its loop, and calls `serve` with the dependencies `/readyz` should ask about.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from safehub.connection import KafkaConnection
from safehub.observability.health import (
    Check,
    HealthServer,
    Heartbeat,
    port_from_env,
    serve_from_env,
)
from safehub.observability.metrics import ServiceMetrics
from safehub.observability.readiness import Assignments, Probe, broker_probe, database_probe


@dataclass
class ServiceWatch:
    service: str
    metrics: ServiceMetrics = field(init=False)
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    assignments: Assignments = field(default_factory=Assignments)
    probes: list[Probe] = field(default_factory=list)
    server: HealthServer | None = None

    def __post_init__(self) -> None:
        self.metrics = ServiceMetrics(self.service)

    def polled(self, part: str, consumer: Any, batches: Mapping[Any, Sequence[Any]]) -> None:
        """After each poll of a kafka-python consumer: progress, assignment and lag."""
        self.heartbeat.beat(part)
        # Duck-typed: the unit tests' stand-in consumers have no assignment or offsets.
        if hasattr(consumer, "assignment"):
            self.assignments.saw(part, len(consumer.assignment()))
            if batches and hasattr(consumer, "highwater"):
                self.metrics.consumer_lag(consumer)

    def processed(self, batches: Mapping[Any, Sequence[Any]], started: float) -> None:
        """Once a polled batch is done for good (outputs acknowledged, offsets committed)."""
        if not batches:
            return
        self.metrics.consumed_batches(batches)
        self.metrics.latency_since(getattr(r, "timestamp", 0) for records in batches.values()
                                   for r in records)
        self.metrics.batch(time.perf_counter() - started)

    def serve(self, kafka: KafkaConnection | None = None, engine: Any = None,
              consumers: Sequence[str] = (), extra: Sequence[tuple[str, Check]] = ()
              ) -> HealthServer | None:
        """Start the health server if SAFEHUB_HEALTH_PORT is set: ready when the broker (as
        `kafka`), the database (`engine`) answer and each named consumer holds partitions."""
        if port_from_env() is None:
            return None  # no server, and no probe threads asking for nobody
        if kafka is not None:
            self.probes.append(broker_probe(kafka))
        if engine is not None:
            self.probes.append(database_probe(engine))
        checks: list[tuple[str, Check]] = [(p.name, p.check) for p in self.probes]
        if consumers:
            for part in consumers:
                self.assignments.expect(part)
            checks.append(("partitions", self.assignments.check))
        checks.extend(extra)
        self.server = serve_from_env(self.service, self.heartbeat, checks)
        return self.server

    def close(self) -> None:
        for probe in self.probes:
            probe.stop()
        if self.server is not None:
            self.server.stop()
            self.server = None


def beating_server(config: Any, watch: ServiceWatch) -> Any:
    """A uvicorn server whose event loop beats `watch`'s heartbeat on each of its ticks
    (every 0.1 s): an HTTP service is live while its loop turns."""
    import uvicorn

    class Server(uvicorn.Server):
        async def on_tick(self, counter: int) -> bool:
            watch.heartbeat.beat(watch.service)
            return bool(await super().on_tick(counter))

    # uvicorn gave its loggers handlers of their own when `config` was made: hand their
    # records to the root handler instead, so that they come out in the service's format
    # (one JSON object per line under SAFEHUB_LOG_FORMAT=json) like every other line.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    return Server(config)
