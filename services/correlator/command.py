"""`safehub correlator`: run the correlation stream processor (one faust worker).

Settings (environment): the Kafka connection (SAFEHUB_KAFKA_BOOTSTRAP, SAFEHUB_KAFKA_PRINCIPAL,
default "correlator", SAFEHUB_KAFKA_PASSWORD_FILE or SAFEHUB_KAFKA_SECRETS, SAFEHUB_KAFKA_CA_FILE:
safehub.connection), SAFEHUB_TOPIC_PREFIX, SAFEHUB_RULES_PATH (default: the rules kept in
services/correlation/rules/default-v3.toml), SAFEHUB_CORRELATOR_APP_ID (consumer group, prefix of
the transactional ids and of the table's changelog topic; default "<prefix>correlator", the only
one the ACLs of `safehub access apply` allow), SAFEHUB_CORRELATOR_PARTITIONS (the ingress and
changelog topics' partition count, default 6), SAFEHUB_CORRELATOR_REPLICATION (changelog
replication, default 1),
SAFEHUB_CORRELATOR_DATA_DIR (faust's local data, default ./safehub-correlator-data),
SAFEHUB_CORRELATOR_BATCH (most events per batch and transaction, default 1000),
SAFEHUB_CORRELATOR_FAIR_SHARE (most records of one ingress partition handed to faust per fetch
round, default 100: fairness.py),
SAFEHUB_CORRELATOR_HELD_MIB (most MiB of encoded block states the worker's correlation process
keeps decoded, least recently used let go first; default 24, about 270 MiB at worst: residency.py),
SAFEHUB_CORRELATOR_WEB_PORT (faust's web server; off unless set),
SAFEHUB_CORRELATOR_TOPIC_CHECK_S (how often to warn of ingress topics created since the worker
started, which it reads only after a restart; default 300), SAFEHUB_CORRELATOR_WORKER_ID (this
worker's name, stable across its restarts and different for every worker: a restarted worker
then aborts what its killed predecessor left open and fences it off (outputs.py), and takes its
partitions back at once as a static group member (transport.py), though a worker stopped for
good hands its partitions on only after the group's 10 s session timeout; unset, each process is
anonymous). Start several with the same app id to share the partitions.

The worker creates no topic (only the admin principal may): the ingress topics and the table's
changelog `<app id>-blocks-changelog` are made by `safehub topics create`.

Health, metrics and JSON logs: as every service (SAFEHUB_HEALTH_PORT, SAFEHUB_LOG_FORMAT; see
safehub.observability).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import uvloop

from safehub.connection import KafkaConnection
from safehub.errors import ConfigError
from safehub.observability.watch import ServiceWatch
from safehub.services.correlation.rules import load_rules
from safehub.services.correlator.app import CorrelatorSettings, build_app
from safehub.services.correlator.ingress import (
    ingress_pattern,
    matching_ingress,
    partition_counts,
)
from safehub.services.correlator.outputs import fence, transactional_id
from safehub.services.correlator.processing import SERVICE
from safehub.settings import CorrelatorEnv, LogEnv, TopicsEnv, load
from safehub.topics import correlator_group
from safehub.topics import table_changelog as changelog_topic

log = logging.getLogger(__name__)
READY = "tables recovered, correlating"
# A batch is what one agency's flood can put ahead of another agency's event, several times
# over: faust's queue holds a batch (app.py), and up to Pipeline.DEPTH more are in flight.
# With 1,000, another agency's event waited 0.46 and 0.58 s behind a 100,000-record malformed
# flood (bench/flood_bench.py), and 3.1 s once, behind a whole fetch round (which fairness.py
# now cuts to a share); with 3,000 (and faust's queue at 6,000), 1.45 s. The price is
# throughput under a backlog: larger batches mean fewer transactions and fewer block states
# logged per event, and 1,000 gave ~0.9x the events/s of 3,000 (bench/correlation_bench.py,
# 5,571 and 5,465 against 6,380 and 5,820, alternated in one session). At low rates a batch
# holds what arrived within 0.1 s, so the size does not add latency.
DEFAULT_BATCH = 1000
DEFAULT_HELD_MIB = 24


def settings_from_env() -> CorrelatorSettings:
    prefix = load(TopicsEnv).prefix
    env = load(CorrelatorEnv)
    app_id = env.app_id or correlator_group(prefix)
    return CorrelatorSettings(
        kafka=KafkaConnection.from_env("correlator"),
        prefix=prefix,
        app_id=app_id,
        rules_path=env.rules_path,
        partitions=env.partitions,
        replication=env.replication,
        data_dir=env.data_dir,
        batch_max=env.batch,
        batch_within_s=0.1,
        web_port=env.web_port,
        topic_check_s=env.topic_check_s,
        worker_id=env.worker_id,
        transactional_id=transactional_id(app_id, env.worker_id),
        held_bytes=env.held_mib * 1024 * 1024,
        fair_share=env.fair_share,
    )


# 0.5 s apart, 20 s in all: a broker killed and restarted is usually back within that. Each
# attempt is a new client, which may ask another broker: a killed one stays in the metadata
# until its session expires, and 2 s apart cost a restarted worker 6 s whenever it started
# while one of three was down (bench/fault_bench.py).
START_ATTEMPTS = 40
START_PAUSE_S = 0.5


def ingress_topics(settings: CorrelatorSettings) -> list[str]:
    """The ingress topics to read, once the topics the worker needs are known to be there.

    The worker may not create topics, and faust, told not to, would otherwise start without
    its table's changelog and fail later and obscurely; so a missing topic stops it here."""
    counts = partition_counts(settings.kafka, attempts=START_ATTEMPTS, pause_s=START_PAUSE_S)
    who = settings.kafka.principal
    found = matching_ingress(counts, settings.prefix)
    if not found:
        raise ConfigError(f"no topic matches {ingress_pattern(settings.prefix).pattern} that "
                          f"{who} may read: create the agencies' ingress topics first (safehub "
                          "topics create, then safehub access apply)")
    changelog = changelog_topic(settings.app_id)
    if changelog not in counts:
        raise ConfigError(f"the correlator's table changelog topic {changelog} is missing (or "
                          f"{who} may not read it): run `safehub topics create` (and `safehub "
                          "access apply`) as the admin principal first; the correlator may not "
                          "create topics")
    if counts[changelog] != settings.partitions:
        raise ConfigError(f"the changelog topic {changelog} has {counts[changelog]} partitions, "
                          f"SAFEHUB_CORRELATOR_PARTITIONS is {settings.partitions}: they must be "
                          "equal (and equal to the ingress topics' partitions)")
    check_co_partitioned(counts, found, settings.partitions)
    return found


def check_co_partitioned(counts: Mapping[str, int], topics: Iterable[str], partitions: int) -> None:
    """Refuse ingress topics whose partition count is not the table's.

    The processor takes a record only on the partition Kafka's default partitioner gives its
    key among `partitions` (the table's, where the block's state lives): with another count,
    most of a topic's records would be dead-lettered as on the wrong partition. Said at start.
    """
    wrong = sorted(t for t in topics if counts.get(t) != partitions)
    if wrong:
        raise ConfigError(f"ingress topic(s) {', '.join(wrong)} do not have "
                          f"SAFEHUB_CORRELATOR_PARTITIONS ({partitions}) partitions: every "
                          "ingress topic must have as many as the table's changelog")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (parser.description or "") + (
        ". Reads every ingress topic, writes correlated alerts and audit entries.")
    # The settings are environment variables: the module's docstring lists them.
    parser.epilog = " ".join((__doc__ or "").split("\n\n", 1)[1].split())


def run(args: argparse.Namespace) -> int:
    del args
    # uvloop's event loop, before faust makes its own: the worker's main thread (faust's
    # per-record tasks and callbacks, TLS to the brokers) sets how fast a malformed flood is
    # refused, and asyncio's loop machinery in Python was a large part of it (flood_bench.py).
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    settings = settings_from_env()
    # Refuse bad rules before connecting to anything.
    rules = load_rules(settings.rules_path)
    log.info("correlator %s: rules version %s; connecting as %s", settings.app_id,
             rules.version, settings.kafka.principal)
    topics = ingress_topics(settings)
    log.info("correlator %s: reading %d ingress topic(s)", settings.app_id, len(topics))
    if settings.worker_id is not None:
        # Before the worker reads or writes anything: what a killed predecessor left open is
        # aborted, and a paused one can commit nothing more once it resumes.
        loop = asyncio.new_event_loop()  # not installed as the current loop: faust makes its own
        try:
            loop.run_until_complete(fence(settings.kafka, SERVICE, settings.transactional_id))
        finally:
            loop.close()
        log.info("correlator %s: earlier processes of this worker fenced off (%s)",
                 settings.app_id, settings.transactional_id)
    watch = ServiceWatch(SERVICE)
    # Ready once the worker holds ingress partitions (after its tables' recovery) and its
    # broker answers; live while its batches complete.
    watch.serve(settings.kafka, consumers=[SERVICE])
    app = build_app(settings, rules, topics, wall_clock_ms, watch)
    import faust

    class Worker(faust.Worker):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # faust's terminal spinner writes cursor escapes into the service's log.
            self.spinner = None

        async def on_startup_finished(self) -> None:
            await super().on_startup_finished()
            # For operators: the worker's tables are recovered and it is correlating.
            log.info("correlator %s: %s", settings.app_id, READY)

    # SAFEHUB_FAUST_LOGLEVEL=INFO shows faust's rebalances and recovery, for diagnosis.
    worker = Worker(app, loglevel=(load(LogEnv).faust_level or "warning").upper(),
                    quiet=True, redirect_stdouts=False, override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        watch.close()
    return 0
