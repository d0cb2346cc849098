"""`safehub router`: route correlated alerts to the lead agency's inbox topic, escalate overdue.

Settings (environment): the Kafka connection (SAFEHUB_KAFKA_BOOTSTRAP, SAFEHUB_KAFKA_PRINCIPAL,
default `router`, SAFEHUB_KAFKA_PASSWORD_FILE or SAFEHUB_KAFKA_SECRETS, SAFEHUB_KAFKA_CA_FILE; see
safehub.connection), SAFEHUB_TOPIC_PREFIX, SAFEHUB_ROUTING_TABLE (default deploy/routing.toml),
SAFEHUB_ROUTER_DATABASE_URL (router state, default sqlite:///safehub-router.db),
SAFEHUB_ROUTER_GROUP (default `<prefix>router`, the one group the router's ACLs allow).

The router creates no topic (only the admin principal may): every topic it reads or writes must
exist when it starts (`safehub topics create`), or it stops at once naming the missing ones.

Health, metrics and JSON logs: as every service (SAFEHUB_HEALTH_PORT, SAFEHUB_LOG_FORMAT; see
safehub.observability).

Failure policy. The router commits an input offset only once everything that record caused is
acknowledged by the broker and saved in its database, so a failure anywhere before that is
recovered by re-reading; every notification keeps its id, and every inbox drops a repeat.

| What fails                                   | What the router does                          |
|----------------------------------------------|-----------------------------------------------|
| A record that cannot be read (not an alert   | Dead-lettered (`deadletter`, with the reason),|
| or ack, an ack claiming another hub)         | its offset committed; the rest carry on.      |
| The broker (down, not acknowledging, offset  | Retried: state reloaded from the database,    |
| commit refused, a rebalance)                 | input re-read from the committed offsets (the |
| The database (down, refusing a write)        | beginning for a group that committed nothing),|
|                                              | backoff 1 s doubling to 30 s. Logged once per |
|                                              | outage (WARNING) and on recovery (INFO);      |
|                                              | /readyz says "waiting: ..." meanwhile, /livez |
|                                              | stays live.                                   |
| Either, for longer than                      | Exit 75 (EX_TEMPFAIL): the supervisor or the  |
| SAFEHUB_ROUTER_MAX_OUTAGE_S (default 900 s;  | deployment restarts it with fresh clients;    |
| 0 waits for ever)                            | nothing uncommitted is lost.                  |
| A missing topic, ACL or setting at start     | Exit 1 naming it (fix the deployment).        |
| Anything else (a bug)                        | Exit 70 (EX_SOFTWARE) with the traceback in   |
|                                              | the log; restarted, it re-reads and goes on.  |
| SIGTERM / SIGINT                             | Finishes the step, exits 0.                   |
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from kafka.errors import KafkaError

from safehub.bus import make_consumer, make_producer
from safehub.clock import wall_clock_ms
from safehub.connection import KafkaConnection
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consumers.inbox.database import make_engine
from safehub.consuming import EXIT_BUG, EXIT_TEMPORARY, run_service
from safehub.deploy.registry import Service
from safehub.errors import BrokerError, ConfigError
from safehub.observability.watch import ServiceWatch
from safehub.services.audit.journal import AuditJournal
from safehub.services.router.service import (
    CONSUMER_SETTINGS,
    PRODUCER_SETTINGS,
    Router,
    input_topics,
    output_topics,
)
from safehub.services.router.store import RouterStore
from safehub.services.router.table import load_routing_table
from safehub.settings import RouterEnv, TopicsEnv, load
from safehub.settings.hub import ROUTER_MAX_OUTAGE_S
from safehub.shutdown import stop_on_signals
from safehub.topics import audit, deadletter, service_group

log = logging.getLogger(__name__)
TOPIC_WAIT_S = 10.0
DEFAULT_MAX_OUTAGE_S = ROUTER_MAX_OUTAGE_S
EXIT_OUTAGE = EXIT_TEMPORARY  # 75: a dependency outlasted SAFEHUB_ROUTER_MAX_OUTAGE_S


@dataclass(frozen=True, slots=True)
class RouterSettings:
    kafka: KafkaConnection
    prefix: str
    routing_table: Path
    database_url: str
    group_id: str
    max_outage_s: float | None = DEFAULT_MAX_OUTAGE_S  # None: wait for ever

    @classmethod
    def from_env(cls) -> RouterSettings:
        prefix = load(TopicsEnv).prefix
        env = load(RouterEnv)
        return cls(
            kafka=KafkaConnection.from_env(Service.ROUTER),
            prefix=prefix,
            routing_table=env.routing_table,
            database_url=env.database_url,
            group_id=env.group or service_group(prefix, Service.ROUTER),
            max_outage_s=env.max_outage_s or None,  # 0: wait for ever
        )


def check_topics(visible: set[str], needed: list[str], principal: str) -> None:
    """Every topic the router reads or writes must exist before it starts: a notification for a
    receiver without its alerts topic could not be delivered, an ack on a missing ack topic could
    never stop an escalation. The broker shows a principal only the topics it may use, so a
    missing ACL looks the same as a missing topic; the message names both remedies."""
    missing = [t for t in needed if t not in visible]
    if missing:
        raise ConfigError(
            f"missing Kafka topic(s) for the routing table: {', '.join(missing)}. Only the admin "
            f"principal creates topics: run `safehub topics create` (and `safehub access apply` "
            f"if {principal} may not yet use them) for every receiver, then start the router")


def build(settings: RouterSettings, watch: ServiceWatch | None = None) -> Router:
    table = load_routing_table(settings.routing_table)
    store = RouterStore(make_engine(settings.database_url))
    store.migrate()
    consumer = make_consumer(settings.kafka, settings.group_id, client_id="safehub-router",
                             **CONSUMER_SETTINGS)
    needed = [*input_topics(table, settings.prefix), *output_topics(table, settings.prefix)]
    try:
        # ACLs applied a moment ago may not have reached the broker's authorizer yet (a
        # router started right after `safehub access apply`): look again for a short while.
        deadline = time.monotonic() + TOPIC_WAIT_S
        while True:
            try:
                visible = set(consumer.topics())
            except KafkaError as exc:
                raise BrokerError(f"cannot list topics as {settings.kafka.principal}: "
                                  f"{type(exc).__name__}") from exc
            if set(needed) <= visible or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        check_topics(visible, needed, settings.kafka.principal)
        consumer.subscribe(input_topics(table, settings.prefix))
    except BaseException:
        consumer.close()
        raise
    producer = make_producer(settings.kafka, "safehub-router", **PRODUCER_SETTINGS)
    router = Router(table, consumer, producer, store,
                    AuditJournal(producer, audit(settings.prefix), "router"),
                    DeadLetterSink(producer, deadletter(settings.prefix)),
                    settings.prefix, wall_clock_ms, watch)
    router.max_outage_s = settings.max_outage_s
    return router


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (parser.description or "") + (
        ". Settings come from SAFEHUB_* environment variables: SAFEHUB_KAFKA_BOOTSTRAP, "
        "SAFEHUB_KAFKA_PRINCIPAL (default router), SAFEHUB_KAFKA_PASSWORD_FILE or "
        "SAFEHUB_KAFKA_SECRETS, SAFEHUB_KAFKA_CA_FILE, SAFEHUB_TOPIC_PREFIX, "
        "SAFEHUB_ROUTING_TABLE, SAFEHUB_ROUTER_DATABASE_URL, SAFEHUB_ROUTER_GROUP, "
        "SAFEHUB_ROUTER_MAX_OUTAGE_S. Every topic must exist first (`safehub topics create`). "
        f"Exits {EXIT_OUTAGE} when the broker or database stayed unreachable for longer than "
        f"SAFEHUB_ROUTER_MAX_OUTAGE_S, {EXIT_BUG} on an unexpected error: restart it.")


def run(args: argparse.Namespace) -> int:
    del args
    settings = RouterSettings.from_env()
    stop = stop_on_signals()
    watch = ServiceWatch("router")
    router = build(settings, watch)
    watch.serve(settings.kafka, router.engine, consumers=["router"],
                extra=[("router", router.not_ready)])
    log.info("router running with %s", settings.routing_table)
    try:
        # OutageTooLong -> EXIT_OUTAGE, a bug -> EXIT_BUG (service.POLICY).
        return run_service(lambda: router.run(stop), log, "router")
    finally:
        watch.close()
        router.close()
