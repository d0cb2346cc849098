"""`safehub inbox`: store the alerts sent to one or more hubs in their hub inbox database.

Settings (environment): the Kafka connection (SAFEHUB_KAFKA_BOOTSTRAP, SAFEHUB_KAFKA_SECRETS, a
folder holding each served hub's `<hub>.password`, SAFEHUB_KAFKA_CA_FILE; see safehub.connection),
SAFEHUB_TOPIC_PREFIX, SAFEHUB_INBOX_AGENCIES (comma-separated hub ids, or --agency),
SAFEHUB_INBOX_DATABASE_URL (default sqlite:///safehub-inbox.db), SAFEHUB_REID_KEYS (folder of
each hub's re-identification private key `<hub>.key`, 0600; without it the hubs' answers are
not read), SAFEHUB_REID_RETENTION_DAYS (how long an answer's identity is kept, default 30).

Each hub is read by its own consumer, authenticated as that hub's principal, in the hub's own
consumer group `<prefix><hub>`: no hub's credentials can read another hub's alerts, whichever
process serves them. SAFEHUB_KAFKA_PRINCIPAL may be left unset; if set, it must be one of the
served hubs (a process serving one hub may be given its password file directly).

Health, metrics and JSON logs: as every service (SAFEHUB_HEALTH_PORT, SAFEHUB_LOG_FORMAT; see
safehub.observability).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safehub.bus import make_consumer, make_producer
from safehub.clock import wall_clock_ms
from safehub.connection import KafkaConnection, connections_from_env
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consumers.inbox.answers import AnswerDesk
from safehub.consumers.inbox.consumer import Clock, HubInboxes, InboxConsumer, RetryPolicy
from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.requests import ReidRequests
from safehub.consumers.inbox.store import InboxStore
from safehub.consuming import run_service
from safehub.errors import ConfigError
from safehub.observability.watch import ServiceWatch
from safehub.services.audit.journal import AuditJournal
from safehub.services.reid.sealing import load_private_key
from safehub.settings import InboxEnv, TopicsEnv, load
from safehub.shutdown import stop_on_signals
from safehub.topics import alerts, audit, deadletter, reid_responses, service_group

log = logging.getLogger(__name__)
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class InboxSettings:
    kafka: Mapping[str, KafkaConnection]  # hub -> its own principal's connection
    prefix: str
    agencies: tuple[str, ...]
    database_url: str
    reid_keys: Path | None = None
    retention_ms: int = 30 * DAY_MS

    @classmethod
    def from_env(cls, agencies: list[str] | None = None) -> InboxSettings:
        env = load(InboxEnv)
        named = agencies or list(env.agencies)
        if not named:
            raise ConfigError("no agency: pass --agency or set SAFEHUB_INBOX_AGENCIES")
        hubs = tuple(sorted(set(named)))
        return cls(
            kafka=connections_from_env(hubs),
            prefix=load(TopicsEnv).prefix,
            agencies=hubs,
            database_url=env.database_url,
            reid_keys=env.reid_keys,
            retention_ms=int(env.retention_days * DAY_MS),
        )


def hub_inbox(kafka: KafkaConnection, hub: str, store: InboxStore, prefix: str,
              clock: Clock = wall_clock_ms, retry: RetryPolicy | None = None,
              reid_key: X25519PrivateKey | None = None,
              retention_ms: int = 30 * DAY_MS, watch: ServiceWatch | None = None
              ) -> InboxConsumer:
    """Hub `hub`'s consumer and producer (dead letters, audit), both as `kafka` (that hub's
    principal). With the hub's re-identification key it also reads the hub's answers."""
    topics = [alerts(prefix, hub)] + ([reid_responses(prefix, hub)] if reid_key else [])
    consumer = make_consumer(kafka, service_group(prefix, hub), topics,
                             client_id=f"safehub-inbox-{hub}")
    try:
        producer = make_producer(kafka, f"safehub-inbox-deadletter-{hub}")
    except BaseException:
        consumer.close()
        raise
    deadletters = DeadLetterSink(producer, deadletter(prefix))
    desk = None if reid_key is None else AnswerDesk(
        hub, ReidRequests(store.engine), reid_key, retention_ms,
        AuditJournal(producer, audit(prefix), "inbox"))
    return InboxConsumer(consumer, store, deadletters, prefix, clock, retry or RetryPolicy(),
                         producer=producer, answers=desk, watch=watch, part=hub)


def build(settings: InboxSettings, watch: ServiceWatch | None = None) -> HubInboxes:
    store = InboxStore(make_engine(settings.database_url))
    migrate(store.engine)
    inboxes: dict[str, InboxConsumer] = {}
    try:
        for hub in settings.agencies:
            key = (load_private_key(settings.reid_keys, hub)
                   if settings.reid_keys is not None else None)
            inboxes[hub] = hub_inbox(settings.kafka[hub], hub, store, settings.prefix,
                                     reid_key=key, retention_ms=settings.retention_ms,
                                     watch=watch)
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
    stop = stop_on_signals()
    watch = ServiceWatch("inbox")
    inboxes = build(settings, watch)
    first = next(iter(inboxes.inboxes.values()))
    # The broker as the first hub served: every hub's principal reaches the same brokers.
    watch.serve(settings.kafka[settings.agencies[0]], first.engine,
                consumers=list(settings.agencies))
    log.info("inbox storing alerts for %s", ", ".join(settings.agencies))
    try:
        # Exit 75 or 70 as consumer.POLICY says (docs/error-policies.md); 0 once stopped.
        return run_service(lambda: inboxes.run(stop), log, "inbox")
    finally:
        watch.close()
        inboxes.close()
