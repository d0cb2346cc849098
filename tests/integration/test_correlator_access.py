"""Attacks on the running correlator from the other principals of its cluster (issue 17).

Before the secure transport, anyone who reached the broker could register the correlator's
transactional id and so fence the worker off (it exits 70, again and again), leave a
transaction open on `correlated` so that every committed reader stalls, or write forged alerts
to `correlated` and garbage to the table's changelog. Now the correlator runs as the
`correlator` principal, and only it holds ACLs on its transactional ids (PREFIXED
`<prefix>correlator-`), `correlated` and its changelog: every other principal of the
registry is refused with an authorization error, and the worker keeps correlating.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka.errors import TransactionalIdAuthorizationFailed
from kafka.errors import TopicAuthorizationFailedError

from safehub.bus import make_admin, make_aio_producer, make_producer, send_and_confirm
from safehub.connection import KafkaConnection
from safehub.deploy.topics import delete_topics_with_prefix
from safehub.errors import BrokerError
from safehub.schemas.records import WarningSignEvent
from safehub.schemas.vocabulary import Sector
from safehub.services.correlator.outputs import transactional_id
from safehub.topics import changelog_topic, correlator_group
from tests.fixtures.correlator import Site, child_sign, wait_until
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration
AGENCIES = {"police-a": Sector.POLICE, "health-a": Sector.HEALTH}
# Every principal of the namespace but the correlator (and the admin, a super user).
OTHERS = ("police-a", "health-a", "csc-a", "router", "audit-sink", "auditor")
WORKER_ID = "1"
FORGED = b"forged by another principal"


def _event(agency: str, n: int) -> WarningSignEvent:
    return child_sign("access test child", agency, AGENCIES[agency], n, 91)


async def open_transaction(kafka: KafkaConnection, tid: str, topic: str) -> None:
    """What an attacker does to fence the correlator or stall its readers: register its
    transactional id and leave a transaction open on `topic`."""
    producer = make_aio_producer(kafka, "attacker", enable_idempotence=True,
                                 transactional_id=tid)
    try:
        await producer.start()
        await producer.begin_transaction()
        await (await producer.send(topic, FORGED, partition=0))
    finally:
        await producer.stop()


def write(kafka: KafkaConnection, topic: str) -> None:
    # Not idempotent: a principal with no write right anywhere (the auditor) is otherwise
    # refused a producer id before the topic is even asked for.
    producer = make_producer(kafka, "attacker", enable_idempotence=False, max_block_ms=20_000)
    try:
        send_and_confirm(producer, topic, FORGED, key=b"\0\0\0\1", timeout=20)
    finally:
        producer.close(timeout=5)


@pytest.mark.timeout(300)
def test_no_one_else_can_use_the_correlators_transactional_ids_or_write_its_topics(
        correlator_site: Callable[..., Site]) -> None:
    site = correlator_site(AGENCIES)
    ns, prefix, out = site.ns, site.prefix, site.out
    group = correlator_group(prefix)
    mine = transactional_id(group, WORKER_ID)
    assert mine == f"{prefix}correlator-worker-1"
    correlator = site.correlator(SAFEHUB_CORRELATOR_WORKER_ID=WORKER_ID)
    correlator.start()
    changelog = TopicReader(ns.kafka, changelog_topic(prefix))
    try:
        before = _event("police-a", 0)
        site.send([before])
        wait_until("an event before the attacks", lambda: before.event_id in out.accepted(),
                   120, correlator)

        # The running worker's own transactional id, and any other the ACL prefix covers.
        for attacker in ("police-a", "csc-a", "router"):
            for tid in (mine, f"{group}-anything"):
                with pytest.raises(TransactionalIdAuthorizationFailed):
                    asyncio.run(open_transaction(ns.connection(attacker), tid,
                                                 ns.correlated))

        # Forged alerts, or garbage in the table's changelog that a recovering worker would
        # take for block states.
        for attacker in OTHERS:
            for topic in (ns.correlated, changelog_topic(prefix)):
                with pytest.raises(BrokerError) as refused:
                    write(ns.connection(attacker), topic)
                assert isinstance(refused.value.__cause__, TopicAuthorizationFailedError), \
                    (attacker, topic, refused.value)

        # The correlator was neither fenced nor stalled: it correlates what comes next.
        after = _event("health-a", 1)
        site.send([after])
        wait_until("an event after the attacks", lambda: after.event_id in out.accepted(),
                   120, correlator)
        assert correlator.alive()
        assert correlator.stop() == 0
        assert "another worker started with this worker's transactional id" \
            not in correlator.log.read_text()
        alerts, _ = out.final()
        assert all(r.value != FORGED for r in alerts)
        states = changelog.read_to_end()
        assert states and all(r.value != FORGED for r in states)
    finally:
        changelog.close()


@pytest.mark.timeout(120)
def test_without_its_changelog_topic_the_worker_stops_at_once_saying_what_to_run(
        correlator_site: Callable[..., Site]) -> None:
    """The correlator may not create topics (only the admin may), so its table's changelog is
    made with the others by `safehub topics create`; a worker started without it says so."""
    site = correlator_site(AGENCIES)
    ns = site.ns
    changelog = changelog_topic(ns.prefix)
    assert delete_topics_with_prefix(ns.kafka, changelog) == [changelog]
    admin = make_admin(ns.kafka)
    try:
        deadline = time.monotonic() + 30
        while changelog in admin.list_topics():
            assert time.monotonic() < deadline, f"{changelog} not deleted"
            time.sleep(0.2)
        correlator = site.correlator()
        correlator.start()
        assert correlator.proc is not None
        assert correlator.proc.wait(60) == 1
        log = correlator.log.read_text()
        assert changelog in log and "safehub topics create" in log, log
        assert "Traceback" not in log, log
        assert changelog not in admin.list_topics()  # nor did faust make it
    finally:
        admin.close()
