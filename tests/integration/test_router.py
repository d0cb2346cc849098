"""The router against the real broker and both databases: routing cases, escalation with an
injected clock, an ack that stops it, redelivery and restart producing no duplicates."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from safehub.bus import make_consumer, make_producer, send_all
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consumers.inbox.database import make_engine
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import (
    AlertAck,
    AuditEntry,
    CorrelatedAlert,
    Evidence,
    ReidentificationRef,
    RoutedAlert,
)
from safehub.schemas.vocabulary import AckAction, AuditAction, RouteReason, Sector, Sign, Tier
from safehub.services.audit.journal import AuditJournal
from safehub.services.router.service import Router
from safehub.services.router.store import RouterStore
from safehub.services.router.table import parse_routing_table
from tests.integration.test_correlator_golden import TopicReader

pytestmark = pytest.mark.integration
HOUR = 3_600_000
MON_10 = 1_794_823_200_000  # Monday 16 Nov 2026 10:00 UTC (GMT)
TABLE = parse_routing_table({
    "defaults": {"ack_working_hours": 8, "urgent_ack_hours": 4, "repeat_interval_hours": 24},
    "fallback": {"agency": "hub-duty", "escalation": "hub-manager"},
    "route": [
        {"local_authority": "E08000035", "agency": "csc-leeds", "escalation": "leeds-manager"},
        {"local_authority": "E08000032", "agency": "csc-bradford",
         "escalation": "bradford-manager"},
    ],
})


def alert(n: int, la: str, placing: str | None = None) -> CorrelatedAlert:
    return CorrelatedAlert(
        alert_id=uuid.uuid5(uuid.NAMESPACE_OID, f"router-{n}").hex, rules_version="a" * 64,
        cluster_id=f"{n:032x}", linkage_block=n, tier=Tier.ESCALATING, rule="three-signs",
        score=3.0, raised_at=MON_10 - HOUR, age_years=14, local_authority=la,
        placing_authority=placing, agencies=("police-wy",),
        evidence=(Evidence("e" * 32, "police-wy", Sector.POLICE, Sign.OFFENDING, MON_10 - HOUR,
                           1.0),),
        reidentification=(ReidentificationRef("police-wy", "f" * 32),), identity_conflict=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'router.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    schema = "t" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


class Harness:
    def __init__(self, bootstrap: str, prefix: str, url: str) -> None:
        self.bootstrap, self.prefix, self.url = bootstrap, prefix, url
        self.group = "router-" + uuid.uuid4().hex
        self.now = MON_10
        self.producer = make_producer(bootstrap, "test-router-in")
        self.reader = TopicReader(bootstrap, *(f"{prefix}alerts.{a}"
                                                for a in sorted(TABLE.receivers())),
                                  f"{prefix}audit")
        self.routed: list[RoutedAlert] = []
        self.audit: list[AuditEntry] = []

    def router(self) -> Router:
        store = RouterStore(make_engine(self.url))
        store.migrate()
        producer = make_producer(self.bootstrap, "test-router")
        consumer = make_consumer(self.bootstrap, self.group,
                                 [f"{self.prefix}correlated", f"{self.prefix}alert-acks"],
                                 client_id="test-router")
        return Router(TABLE, consumer, producer, store,
                      AuditJournal(producer, f"{self.prefix}audit", "router"),
                      DeadLetterSink(producer, f"{self.prefix}deadletter"), self.prefix,
                      lambda: self.now)

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        send_all(self.producer, [(self.prefix + topic, key, value, None)])

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


@pytest.fixture
def harness(kafka_bootstrap: str, database: str, topic_names: Callable[[str], str],
            create_topics_fn: Callable[..., list[str]]) -> Iterator[Harness]:
    prefix = topic_names("")
    create_topics_fn(*[f"{prefix}alerts.{a}" for a in sorted(TABLE.receivers())],
                     f"{prefix}correlated", f"{prefix}alert-acks", f"{prefix}audit",
                     f"{prefix}deadletter")
    h = Harness(kafka_bootstrap, prefix, database)
    yield h
    h.reader.close()
    h.producer.close()


def test_routes_escalates_stops_on_ack_and_survives_restart(harness: Harness) -> None:
    leeds, placed, unknown = (alert(1, "E08000035"), alert(2, "E08000035", "E08000032"),
                              alert(3, "E06000999"))
    for a in (leeds, placed, unknown):
        harness.publish("correlated", a.cluster_id.encode(), encode(a))
    harness.publish("correlated", b"bad", b"not an alert")
    router = harness.router()
    harness.run_until(router, 4)
    harness.collect()
    by_alert = {r.alert.alert_id: r for r in harness.routed}
    assert by_alert[leeds.alert_id].receiver_agency == "csc-leeds"
    assert by_alert[leeds.alert_id].reason is RouteReason.RESPONSIBLE_AUTHORITY
    assert by_alert[placed.alert_id].receiver_agency == "csc-bradford"
    assert by_alert[placed.alert_id].reason is RouteReason.PLACING_AUTHORITY
    assert by_alert[unknown.alert_id].receiver_agency == "hub-duty"
    assert by_alert[unknown.alert_id].reason is RouteReason.FALLBACK
    assert len(harness.routed) == 3
    routed_audit = [e for e in harness.audit if e.action is AuditAction.ALERT_ROUTED]
    assert {e.subject_id for e in routed_audit} == {leeds.alert_id, placed.alert_id,
                                                    unknown.alert_id}
    assert {e.actor for e in routed_audit} == {"csc-leeds", "csc-bradford", "hub-duty"}

    # Bradford acknowledges; then the router restarts and the same alerts are redelivered.
    ack = AlertAck(uuid.uuid4().hex, placed.alert_id, "csc-bradford", "sw-1",
                   AckAction.ACKNOWLEDGED, None, MON_10 + HOUR)
    forged = AlertAck(uuid.uuid4().hex, leeds.alert_id, "csc-bradford", "sw-9",
                      AckAction.ACKNOWLEDGED, None, MON_10 + HOUR)
    harness.publish("alert-acks", placed.alert_id.encode(), encode(ack))
    harness.publish("alert-acks", leeds.alert_id.encode(), encode(forged))
    harness.run_until(router, 2)
    assert router.refused_acks == 1
    router.close()
    for a in (leeds, placed, unknown):
        harness.publish("correlated", a.cluster_id.encode(), encode(a))
    harness.now = MON_10 + 2 * HOUR
    router = harness.router()
    harness.run_until(router, 3)
    harness.collect()
    assert len(harness.routed) == 3, "redelivery after a restart sent a duplicate"

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
    harness.publish("alert-acks", acked.alert_id.encode(), encode(ack))
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
