"""`safehub router`: route correlated alerts to the lead agency's inbox topic, escalate overdue.

Settings (environment): SAFEHUB_KAFKA_BOOTSTRAP, SAFEHUB_TOPIC_PREFIX, SAFEHUB_ROUTING_TABLE
(default deploy/routing.toml), SAFEHUB_ROUTER_DATABASE_URL (router state, default
sqlite:///safehub-router.db), SAFEHUB_ROUTER_GROUP (default safehub-router).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from safehub.bus import make_consumer, make_producer
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consumers.inbox.database import make_engine
from safehub.deploy.topics import broker_count, create_topics, load_specs
from safehub.services.audit.journal import AuditJournal
from safehub.services.router.service import Router
from safehub.services.router.store import RouterStore
from safehub.services.router.table import DEFAULT_ROUTING_PATH, load_routing_table

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RouterSettings:
    bootstrap: str
    prefix: str
    routing_table: Path
    database_url: str
    group_id: str

    @classmethod
    def from_env(cls) -> RouterSettings:
        return cls(
            bootstrap=os.environ.get("SAFEHUB_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
            prefix=os.environ.get("SAFEHUB_TOPIC_PREFIX", ""),
            routing_table=Path(os.environ.get("SAFEHUB_ROUTING_TABLE", str(DEFAULT_ROUTING_PATH))),
            database_url=os.environ.get("SAFEHUB_ROUTER_DATABASE_URL",
                                        "sqlite:///safehub-router.db"),
            group_id=os.environ.get("SAFEHUB_ROUTER_GROUP", "safehub-router"),
        )


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def build(settings: RouterSettings) -> Router:
    table = load_routing_table(settings.routing_table)
    # The router owns its output topics: every receiver in the table must have one, or a
    # notification for it could not be delivered.
    specs = [s for s in load_specs(sorted(table.receivers()), broker_count(settings.bootstrap),
                                   prefix=settings.prefix)
             if s.name.startswith(f"{settings.prefix}alerts.")]
    created = create_topics(settings.bootstrap, specs)
    if created:
        log.info("created %d alert topic(s) for the routing table's receivers", len(created))
    store = RouterStore(make_engine(settings.database_url))
    store.migrate()
    producer = make_producer(settings.bootstrap, "safehub-router")
    consumer = make_consumer(
        settings.bootstrap, settings.group_id,
        [f"{settings.prefix}correlated", f"{settings.prefix}alert-acks"],
        client_id="safehub-router")
    return Router(table, consumer, producer, store,
                  AuditJournal(producer, f"{settings.prefix}audit", "router"),
                  DeadLetterSink(producer, f"{settings.prefix}deadletter"),
                  settings.prefix, wall_clock_ms)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (parser.description or "") + (
        ". Settings come from SAFEHUB_* environment variables: SAFEHUB_KAFKA_BOOTSTRAP, "
        "SAFEHUB_TOPIC_PREFIX, SAFEHUB_ROUTING_TABLE, SAFEHUB_ROUTER_DATABASE_URL, "
        "SAFEHUB_ROUTER_GROUP.")


def run(args: argparse.Namespace) -> int:
    del args
    settings = RouterSettings.from_env()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    router = build(settings)
    log.info("router running with %s", settings.routing_table)
    try:
        router.run(stop)
    finally:
        router.close()
    return 0
