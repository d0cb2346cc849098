"""`safehub inbox`: store the alerts sent to one or more hubs in their hub inbox database.

Settings (environment): the Kafka connection (SAFEHUB_KAFKA_BOOTSTRAP, SAFEHUB_KAFKA_SECRETS, a
folder holding each served hub's `<hub>.password`, SAFEHUB_KAFKA_CA_FILE; see safehub.connection),
SAFEHUB_TOPIC_PREFIX, SAFEHUB_INBOX_AGENCIES (comma-separated hub ids, or --agency),
SAFEHUB_INBOX_DATABASE_URL (default sqlite:///safehub-inbox.db).

Each hub is read by its own consumer, authenticated as that hub's principal, in the hub's own
consumer group `<prefix><hub>`: no hub's credentials can read another hub's alerts, whichever
process serves them. SAFEHUB_KAFKA_PRINCIPAL may be left unset; if set, it must be one of the
served hubs (a process serving one hub may be given its password file directly).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType

from safehub.bus import make_consumer, make_producer
from safehub.connection import KafkaConnection, connections_from_env
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consumers.inbox.consumer import Clock, HubInboxes, InboxConsumer, RetryPolicy
from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.store import InboxStore
from safehub.deploy.acl import alerts, service_group
from safehub.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboxSettings:
    kafka: Mapping[str, KafkaConnection]  # hub -> its own principal's connection
    prefix: str
    agencies: tuple[str, ...]
    database_url: str

    @classmethod
    def from_env(cls, agencies: list[str] | None = None) -> InboxSettings:
        named = agencies or [a.strip() for a in
                             os.environ.get("SAFEHUB_INBOX_AGENCIES", "").split(",") if a.strip()]
        if not named:
            raise ConfigError("no agency: pass --agency or set SAFEHUB_INBOX_AGENCIES")
        hubs = tuple(sorted(set(named)))
        return cls(
            kafka=connections_from_env(hubs),
            prefix=os.environ.get("SAFEHUB_TOPIC_PREFIX", ""),
            agencies=hubs,
            database_url=os.environ.get("SAFEHUB_INBOX_DATABASE_URL",
                                        "sqlite:///safehub-inbox.db"),
        )


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def hub_inbox(kafka: KafkaConnection, hub: str, store: InboxStore, prefix: str,
              clock: Clock = wall_clock_ms, retry: RetryPolicy | None = None) -> InboxConsumer:
    """Hub `hub`'s consumer and dead-letter producer, both as `kafka` (that hub's principal)."""
    consumer = make_consumer(kafka, service_group(prefix, hub), [alerts(prefix, hub)],
                             client_id=f"safehub-inbox-{hub}")
    try:
        producer = make_producer(kafka, f"safehub-inbox-deadletter-{hub}")
    except BaseException:
        consumer.close()
        raise
    deadletters = DeadLetterSink(producer, f"{prefix}deadletter")
    return InboxConsumer(consumer, store, deadletters, prefix, clock, retry or RetryPolicy(),
                         producer=producer)


def build(settings: InboxSettings) -> HubInboxes:
    store = InboxStore(make_engine(settings.database_url))
    migrate(store.engine)
    inboxes: dict[str, InboxConsumer] = {}
    try:
        for hub in settings.agencies:
            inboxes[hub] = hub_inbox(settings.kafka[hub], hub, store, settings.prefix)
    except BaseException:
        for inbox in inboxes.values():
            inbox.close()
        raise
    return HubInboxes(inboxes)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agency", action="append", default=[], metavar="ID",
                        help="hub whose alerts to store (repeatable)")


def run(args: argparse.Namespace) -> int:
    settings = InboxSettings.from_env(args.agency)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    inboxes = build(settings)
    log.info("inbox storing alerts for %s", ", ".join(settings.agencies))
    try:
        inboxes.run(stop)
    finally:
        inboxes.close()
    return 0
