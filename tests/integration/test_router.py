"""The router against the real secure broker and both databases: routing cases, escalation with
an injected clock, an ack that stops it, redelivery and restart producing no duplicates. The
router runs as its own principal; acks are written by each hub as itself to its own topic.

Attacks: a hub cannot write another hub's ack topic; a hub that writes, on its own topic, an ack
claiming to be another hub is dead-lettered and does not stop the other hub's escalation; no one
but the router can write `alerts.<hub>`; the router refuses to start without its topics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from safehub.bus import make_consumer, make_producer, send_all, send_and_confirm
from safehub.connection import KafkaConnection
from safehub.consumers.deadletter import (
    HEADER_ERROR_MESSAGE,
    HEADER_SOURCE_TOPIC,
    DeadLetterSink,
)
from safehub.consumers.inbox.database import make_engine
from safehub.errors import BrokerError, ConfigError
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import (
    AlertAck,
    AuditEntry,
    CorrelatedAlert,
    RoutedAlert,
)
from safehub.schemas.vocabulary import AckAction, AuditAction, RouteReason
from safehub.services.audit.journal import AuditJournal
from safehub.services.router.command import RouterSettings, build
from safehub.services.router.service import Router, input_topics
from safehub.services.router.store import RouterStore
from safehub.topics import acks, alerts, service_group
from tests.conftest import Namespace
from tests.fixtures.databases import fresh_postgres_schema
from tests.fixtures.router import BRADFORD, HOUR, LEEDS, MON_10, correlated_alert, routing_table
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration
TABLE = routing_table(LEEDS, BRADFORD)


def alert(n: int, la: str, placing: str | None = None) -> CorrelatedAlert:
    return correlated_alert("router", n, la, placing)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'router.db'}"
        return
    yield from fresh_postgres_schema(request.getfixturevalue("postgres_url"))


class Harness:
    def __init__(self, ns: Namespace, url: str) -> None:
        self.ns, self.prefix, self.url = ns, ns.prefix, url
        self.now = MON_10
        # Only the correlator may write `correlated`; each hub writes its own acks.
        self.producers = {p: make_producer(ns.connection(p), f"test-{p}")
                          for p in ("correlator", *sorted(TABLE.receivers()))}
        self.reader = TopicReader(ns.connection("auditor"),
                                  *(alerts(ns.prefix, a) for a in sorted(TABLE.receivers())),
                                  f"{ns.prefix}audit")
        self.routed: list[RoutedAlert] = []
        self.audit: list[AuditEntry] = []

    def router(self) -> Router:
        store = RouterStore(make_engine(self.url))
        store.migrate()
        kafka = self.ns.connection("router")
        producer = make_producer(kafka, "test-router")
        consumer = make_consumer(kafka, service_group(self.prefix, "router"),
                                 input_topics(TABLE, self.prefix), client_id="test-router")
        return Router(TABLE, consumer, producer, store,
                      AuditJournal(producer, f"{self.prefix}audit", "router"),
                      DeadLetterSink(producer, f"{self.prefix}deadletter"), self.prefix,
                      lambda: self.now)

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """An alert on `correlated`, as the correlator."""
        assert topic == "correlated"
        send_all(self.producers["correlator"], [(self.prefix + topic, key, value, None)])

    def ack(self, hub: str, ack: AlertAck) -> None:
        """An ack written by `hub`, as itself, to its own ack topic."""
        send_all(self.producers[hub],
                 [(acks(self.prefix, hub), ack.alert_id.encode(), encode(ack), None)])

    def close(self) -> None:
        self.reader.close()
        for producer in self.producers.values():
            producer.close()

    def run_until(self, router: Router, consumed: int, seconds: float = 30) -> None:
        """Step until `consumed` input records were processed, then once more (a tick)."""
        done = 0
        end = time.monotonic() + seconds
        while done < consumed:
            assert time.monotonic() < end, "router did not consume its input in time"
            done += router.step(timeout_ms=200)
        router.step(timeout_ms=50)

    def collect(self, settle_s: float = 0.5) -> None:
        """Read the outputs to their end offsets as they are now (the router has flushed its
        sends when a step returns), then for `settle_s` more: a duplicate it should not have
        sent would be there already, so that is only a margin."""
        seen = len(self.reader.records)
        self.reader.read_to_end()
        settled = time.monotonic() + settle_s
        while time.monotonic() < settled:
            self.reader.poll()
        for r in self.reader.records[seen:]:
            if r.topic.endswith("audit"):
                self.audit.append(decode(r.value, AuditEntry))
            else:
                self.routed.append(decode(r.value, RoutedAlert))


def dead_letters(ns: Namespace) -> list[tuple[dict[str, bytes], bytes]]:
    """(headers, value) of everything on `deadletter` (only the admin may read it)."""
    reader = TopicReader(ns.kafka, f"{ns.prefix}deadletter")
    try:
        return [(dict(r.headers), r.value) for r in reader.read_to_end()]
    finally:
        reader.close()


def refused(kafka: KafkaConnection, topic: str) -> str:
    """Write one record to `topic` as `kafka`'s principal; the error it must get."""
    producer = make_producer(kafka, f"attack-{kafka.principal}", enable_idempotence=False,
                             max_block_ms=10_000)
    try:
        with pytest.raises(BrokerError) as caught:
            send_and_confirm(producer, topic, b"forged", key=b"k", timeout=15)
    finally:
        producer.close(timeout=5)
    return str(caught.value)


@pytest.fixture
def namespace(secure_namespace: Callable[..., Namespace]) -> Namespace:
    return secure_namespace(agencies={"police-wy": "POLICE"}, hubs=sorted(TABLE.receivers()))


@pytest.fixture
def harness(namespace: Namespace, database: str) -> Iterator[Harness]:
    h = Harness(namespace, database)
    yield h
    h.close()


def test_routes_escalates_stops_on_ack_and_survives_restart(harness: Harness) -> None:
    leeds, placed, unknown = (alert(1, "E08000035"), alert(2, "E08000035", "E08000032"),
                              alert(3, "E06000999"))
    for a in (leeds, placed, unknown):
        harness.publish("correlated", a.cluster_id.encode(), encode(a))
    harness.publish("correlated", b"bad", b"not an alert")
    router = harness.router()
    harness.run_until(router, 4)
    harness.collect()
    # The placed child's alert goes to the placing authority, and to the host for information.
    assert sorted((r.alert.alert_id, r.receiver_agency, r.reason) for r in harness.routed) == \
        sorted([(leeds.alert_id, "csc-leeds", RouteReason.RESPONSIBLE_AUTHORITY),
                (placed.alert_id, "csc-bradford", RouteReason.PLACING_AUTHORITY),
                (placed.alert_id, "csc-leeds", RouteReason.HOST_AUTHORITY),
                (unknown.alert_id, "hub-duty", RouteReason.FALLBACK)])
    routed_audit = [e for e in harness.audit if e.action is AuditAction.ALERT_ROUTED]
    assert {e.subject_id for e in routed_audit} == {leeds.alert_id, placed.alert_id,
                                                    unknown.alert_id}
    assert {e.actor for e in routed_audit} == {"csc-leeds", "csc-bradford", "hub-duty"}

    # Bradford acknowledges; then the router restarts and the same alerts are redelivered.
    # Bradford also tries to silence Leeds's alert: with its own name (it was never sent
    # that alert), and claiming to be Leeds on its own topic (the only one it can write).
    ack = AlertAck(uuid.uuid4().hex, placed.alert_id, "csc-bradford", "sw-1",
                   AckAction.ACKNOWLEDGED, None, MON_10 + HOUR)
    not_sent = AlertAck(uuid.uuid4().hex, leeds.alert_id, "csc-bradford", "sw-9",
                        AckAction.ACKNOWLEDGED, None, MON_10 + HOUR)
    posing = AlertAck(uuid.uuid4().hex, leeds.alert_id, "csc-leeds", "sw-9",
                      AckAction.ACKNOWLEDGED, None, MON_10 + HOUR)
    for a in (ack, not_sent, posing):
        harness.ack("csc-bradford", a)
    # Leeds acknowledges the copy it was sent for information: noted, not refused.
    host_ack = AlertAck(uuid.uuid4().hex, placed.alert_id, "csc-leeds", "sw-2",
                        AckAction.ACKNOWLEDGED, None, MON_10 + HOUR)
    harness.ack("csc-leeds", host_ack)
    harness.run_until(router, 4)
    assert router.refused_acks == 2
    dead = [(h, v) for h, v in dead_letters(harness.ns)
            if ".alert-acks." in h[HEADER_SOURCE_TOPIC].decode()]
    assert [(h[HEADER_SOURCE_TOPIC].decode(), v) for h, v in dead] == [
        (acks(harness.prefix, "csc-bradford"), encode(posing))]
    reason = dead[0][0][HEADER_ERROR_MESSAGE].decode()
    assert "agency_id" in reason and "alert-acks.csc-bradford" in reason, reason
    router.close()
    for a in (leeds, placed, unknown):
        harness.publish("correlated", a.cluster_id.encode(), encode(a))
    harness.now = MON_10 + 2 * HOUR
    router = harness.router()
    harness.run_until(router, 3)
    harness.collect()
    assert len(harness.routed) == 4, "redelivery after a restart sent a duplicate"

    # One working day later: the unacknowledged ones escalate, the acknowledged one does not.
    harness.now = MON_10 + 24 * HOUR
    router.step(timeout_ms=100)
    harness.now += HOUR
    router.step(timeout_ms=100)
    harness.collect()
    escalated = {r.alert.alert_id: r for r in harness.routed if r.escalation_level == 1}
    assert set(escalated) == {leeds.alert_id, unknown.alert_id}
    assert escalated[leeds.alert_id].receiver_agency == "leeds-manager"
    assert escalated[unknown.alert_id].receiver_agency == "hub-manager"
    assert all(r.reason is RouteReason.ESCALATION for r in escalated.values())
    esc_audit = [e for e in harness.audit if e.action is AuditAction.ALERT_ESCALATED]
    assert {e.subject_id for e in esc_audit} == set(escalated)
    router.close()
    # And after another restart nothing escalates twice.
    router = harness.router()
    harness.now += 48 * HOUR
    router.step(timeout_ms=300)
    harness.collect()
    assert len([r for r in harness.routed if r.escalation_level == 1]) == 2
    router.close()


def test_clusters_with_nothing_left_to_do_are_forgotten_a_year_on(harness: Harness) -> None:
    day = 24 * HOUR

    def stored() -> set[str]:
        engine = make_engine(harness.url)
        try:
            with engine.connect() as conn:
                return {r[0] for r in conn.execute(sa.text("SELECT cluster_id FROM router_alert"))}
        finally:
            engine.dispose()

    acked, ignored = alert(11, "E08000035"), alert(12, "E08000032")
    for a in (acked, ignored):
        harness.publish("correlated", a.cluster_id.encode(), encode(a))
    router = harness.router()
    harness.run_until(router, 2)
    ack = AlertAck(uuid.uuid4().hex, acked.alert_id, "csc-leeds", "sw-1",
                   AckAction.ACKNOWLEDGED, None, MON_10 + HOUR)
    harness.ack("csc-leeds", ack)
    harness.run_until(router, 1)
    assert stored() == {acked.cluster_id, ignored.cluster_id}

    # Within the year both are kept; the ignored one escalates.
    harness.now = MON_10 + 300 * day
    router.step(timeout_ms=100)
    harness.collect()
    assert [r.alert.alert_id for r in harness.routed if r.escalation_level == 1] == \
        [ignored.alert_id]
    assert stored() == {acked.cluster_id, ignored.cluster_id}
    # A year after their alerts, with nothing more to do for either (one acknowledged, one
    # escalated), both are forgotten.
    harness.now = MON_10 + 366 * day
    router.step(timeout_ms=100)
    assert stored() == set()
    router.close()

    # A later alert about the same child starts afresh, after a restart too.
    router = harness.router()
    again = replace(alert(13, "E08000035"), cluster_id=acked.cluster_id)
    harness.publish("correlated", acked.cluster_id.encode(), encode(again))
    harness.run_until(router, 1)
    harness.collect()
    assert [r.alert.alert_id for r in harness.routed if r.alert.cluster_id == acked.cluster_id
            and r.escalation_level == 0] == [acked.alert_id, again.alert_id]
    assert stored() == {acked.cluster_id}
    router.close()


def test_a_hub_cannot_write_another_hubs_acks(namespace: Namespace) -> None:
    """So Bradford cannot forge Leeds's acknowledgement: the broker refuses the write."""
    error = refused(namespace.connection("csc-bradford"), acks(namespace.prefix, "csc-leeds"))
    assert "TopicAuthorizationFailed" in error, error
    # Its own ack topic it may write.
    producer = make_producer(namespace.connection("csc-bradford"), "own-acks")
    send_and_confirm(producer, acks(namespace.prefix, "csc-bradford"), b"x", key=b"k")
    producer.close()


def test_no_one_but_the_router_writes_alerts(namespace: Namespace) -> None:
    target = alerts(namespace.prefix, "csc-leeds")
    for principal in ("police-wy", "csc-leeds", "csc-bradford", "correlator"):
        error = refused(namespace.connection(principal), target)
        assert "TopicAuthorizationFailed" in error, (principal, error)


def test_the_router_creates_no_topic_and_names_the_missing_ones(
    namespace: Namespace, tmp_path: Path
) -> None:
    table = tmp_path / "routing.toml"
    table.write_text(
        '[fallback]\nagency = "hub-duty"\nescalation = "hub-manager"\n'
        '[[route]]\nlocal_authority = "E08000035"\nagency = "csc-leeds"\n'
        'escalation = "csc-nowhere"\n')
    settings = RouterSettings(namespace.connection("router"), namespace.prefix, table,
                              f"sqlite:///{tmp_path / 'router.db'}",
                              service_group(namespace.prefix, "router"))
    with pytest.raises(ConfigError) as caught:
        build(settings)
    message = str(caught.value)
    assert alerts(namespace.prefix, "csc-nowhere") in message
    assert acks(namespace.prefix, "csc-nowhere") in message
    assert alerts(namespace.prefix, "csc-leeds") not in message
    assert "safehub topics create" in message
    admin = make_consumer(namespace.kafka, None, client_id="probe")
    try:
        assert alerts(namespace.prefix, "csc-nowhere") not in admin.topics()
    finally:
        admin.close()
