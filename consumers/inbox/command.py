"""`safehub inbox`: store the alerts sent to one or more agencies in their hub inbox database.

Settings (environment): SAFEHUB_KAFKA_BOOTSTRAP, SAFEHUB_TOPIC_PREFIX, SAFEHUB_INBOX_AGENCIES
(comma-separated agency ids), SAFEHUB_INBOX_DATABASE_URL (default sqlite:///safehub-inbox.db),
SAFEHUB_INBOX_GROUP (consumer group, default safehub-inbox).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType

from safehub.bus import make_consumer, make_producer
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consumers.inbox.consumer import InboxConsumer
from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.store import InboxStore
from safehub.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboxSettings:
    bootstrap: str
    prefix: str
    agencies: tuple[str, ...]
    database_url: str
    group_id: str

    @classmethod
    def from_env(cls, agencies: list[str] | None = None) -> InboxSettings:
        named = agencies or [a.strip() for a in
                             os.environ.get("SAFEHUB_INBOX_AGENCIES", "").split(",") if a.strip()]
        if not named:
            raise ConfigError("no agency: pass --agency or set SAFEHUB_INBOX_AGENCIES")
        return cls(
            bootstrap=os.environ.get("SAFEHUB_KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
            prefix=os.environ.get("SAFEHUB_TOPIC_PREFIX", ""),
            agencies=tuple(sorted(set(named))),
            database_url=os.environ.get("SAFEHUB_INBOX_DATABASE_URL",
                                        "sqlite:///safehub-inbox.db"),
            group_id=os.environ.get("SAFEHUB_INBOX_GROUP", "safehub-inbox"),
        )


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def build(settings: InboxSettings) -> InboxConsumer:
    store = InboxStore(make_engine(settings.database_url))
    migrate(store.engine)
    topics = [f"{settings.prefix}alerts.{a}" for a in settings.agencies]
    consumer = make_consumer(settings.bootstrap, settings.group_id, topics,
                             client_id="safehub-inbox")
    producer = make_producer(settings.bootstrap, "safehub-inbox-deadletter")
    deadletters = DeadLetterSink(producer, f"{settings.prefix}deadletter")
    return InboxConsumer(consumer, store, deadletters, settings.prefix, wall_clock_ms)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agency", action="append", default=[], metavar="ID",
                        help="agency whose alerts to store (repeatable)")


def run(args: argparse.Namespace) -> int:
    settings = InboxSettings.from_env(args.agency)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    inbox = build(settings)
    log.info("inbox storing alerts for %s", ", ".join(settings.agencies))
    try:
        inbox.run(stop)
    finally:
        inbox.close()
    return 0
