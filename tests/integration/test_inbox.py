"""The inbox consumer against the real broker and both databases: rows before offsets,
redelivery is a no-op, bad records are dead-lettered, a database outage loses nothing."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka import TopicPartition

from safehub.bus import make_consumer, make_producer, send_all
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consumers.inbox.consumer import InboxConsumer, RetryPolicy
from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.store import InboxStore, QueueFilter
from safehub.schemas.codec import encode
from safehub.schemas.records import CorrelatedAlert, Evidence, ReidentificationRef, RoutedAlert
from safehub.schemas.vocabulary import Sector, Sign, Tier
from safehub.services.router import core
from safehub.services.router.core import ClusterState
from safehub.services.router.table import load_routing_table

pytestmark = pytest.mark.integration
AGENCY = "csc-leeds"
NOW = 1_794_823_200_000  # Monday 16 Nov 2026, 10:00 UTC


def routed(n: int, agency_la: str = "E08000035") -> RoutedAlert:
    alert = CorrelatedAlert(
        alert_id=uuid.uuid5(uuid.NAMESPACE_OID, str(n)).hex, rules_version="a" * 64,
        cluster_id=f"{n:032x}", linkage_block=n % 100, tier=Tier.ESCALATING, rule="three-signs",
        score=3.0, raised_at=NOW - n, age_years=10 + n % 8, local_authority=agency_la,
        placing_authority=None, agencies=("police-wy", "school-leeds"),
        evidence=(Evidence("e" * 32, "police-wy", Sector.POLICE, Sign.OFFENDING, NOW - 9, 1.0),
                  Evidence("d" * 32, "school-leeds", Sector.EDUCATION, Sign.ABSENT_FROM_SCHOOL,
                           NOW - 5, 1.0)),
        reidentification=(ReidentificationRef("police-wy", "f" * 32),), identity_conflict=False)
    _, (note,) = core.receive(load_routing_table(), ClusterState(alert.cluster_id), alert, NOW)
    return note.routed


class TcpProxy:
    """A loopback TCP relay to PostgreSQL that a test can cut and restore: a real outage."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            server = socket.create_connection(self.target)
            self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        self.up.clear()
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        self.conns.clear()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(url, kind) of an empty inbox database of either kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'inbox.db'}", "sqlite"
        return
    base = request.getfixturevalue("postgres_url")
    schema = "t" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{base}?options=-csearch_path%3D{schema}", "postgresql"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def topics(topic_names: Callable[[str], str], create_topics_fn: Callable[..., list[str]]
           ) -> tuple[str, str, str]:
    prefix = topic_names("")
    alerts, deadletter = prefix + f"alerts.{AGENCY}", prefix + "deadletter"
    create_topics_fn(alerts, partitions=2)
    create_topics_fn(deadletter)
    return prefix, alerts, deadletter


def make_inbox(bootstrap: str, url: str, prefix: str, alerts: str, deadletter: str,
               group: str) -> InboxConsumer:
    store = InboxStore(make_engine(url, busy_timeout_s=0.2))
    migrate(store.engine)
    consumer = make_consumer(bootstrap, group, [alerts], client_id="test-inbox")
    sink = DeadLetterSink(make_producer(bootstrap, "test-inbox-dl"), deadletter)
    return InboxConsumer(consumer, store, sink, prefix, lambda: NOW,
                         RetryPolicy(initial_s=0.1, max_s=0.5))


def drain(inbox: InboxConsumer, until: Callable[[], bool], seconds: float = 40) -> None:
    stop = threading.Event()
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "inbox did not catch up in time"
        inbox.step(stop, timeout_ms=200)


def publish(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = make_producer(bootstrap, "test-alerts")
    send_all(producer, [(topic, k, v, None) for k, v in values])
    producer.close()


def committed(bootstrap: str, group: str, topic: str) -> int:
    probe = make_consumer(bootstrap, group, client_id="probe")
    try:
        return sum(probe.committed(TopicPartition(topic, p)) or 0 for p in (0, 1))
    finally:
        probe.close()


def test_rows_stored_redelivery_no_op_bad_records_dead_lettered(
    kafka_bootstrap: str, database: tuple[str, str], topics: tuple[str, str, str]
) -> None:
    url, _ = database
    prefix, alerts, deadletter = topics
    good = [routed(n) for n in range(20)]
    elsewhere = routed(99, agency_la="E08000032")  # for csc-bradford, on Leeds's topic
    values = [(r.alert.alert_id.encode(), encode(r)) for r in good]
    values += [(b"junk", b"\x00not avro"), (b"x", encode(elsewhere))]
    publish(kafka_bootstrap, alerts, values + values[:5])  # five redelivered at once
    group = "g-" + uuid.uuid4().hex
    inbox = make_inbox(kafka_bootstrap, url, prefix, alerts, deadletter, group)
    drain(inbox, lambda: committed(kafka_bootstrap, group, alerts) == len(values) + 5)
    store = InboxStore(make_engine(url))
    assert store.count(AGENCY) == 20
    assert inbox.deadlettered == 2
    row = store.alert(AGENCY, good[3].notification_id)
    assert row is not None and [e.indicator for e in row.evidence] == [
        "OFFENDING", "ABSENT_FROM_SCHOOL"]
    assert store.alert("csc-bradford", good[3].notification_id) is None
    assert len(store.queue(AGENCY, QueueFilter(tier="ESCALATING"), NOW)) == 20
    # A second consumer group reading everything again adds nothing.
    again = make_inbox(kafka_bootstrap, url, prefix, alerts, deadletter, group + "-2")
    drain(again, lambda: committed(kafka_bootstrap, group + "-2", alerts) == len(values) + 5)
    assert store.count() == 20
    dl = make_consumer(kafka_bootstrap, None, [deadletter], client_id="probe-dl")
    seen: list[bytes] = []
    end = time.monotonic() + 20
    while len(seen) < 2 and time.monotonic() < end:
        for recs in dl.poll(timeout_ms=500).values():
            seen += [r.value for r in recs]
    dl.close()
    assert b"\x00not avro" in seen


def test_database_outage_during_consumption_loses_nothing(
    kafka_bootstrap: str, database: tuple[str, str], topics: tuple[str, str, str]
) -> None:
    url, kind = database
    prefix, alerts, deadletter = topics
    group = "g-" + uuid.uuid4().hex
    proxy: TcpProxy | None = None
    lock: sqlite3.Connection | None = None
    if kind == "postgresql":
        parsed = sa.make_url(url)
        proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        url = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    inbox = make_inbox(kafka_bootstrap, url, prefix, alerts, deadletter, group)
    first = [routed(n) for n in range(10)]
    publish(kafka_bootstrap, alerts, [(r.alert.alert_id.encode(), encode(r)) for r in first])
    drain(inbox, lambda: committed(kafka_bootstrap, group, alerts) == 10)
    # The database goes away: SQLite is held locked by another writer, PostgreSQL's link is cut.
    if proxy is not None:
        proxy.cut()
    else:
        lock = sqlite3.connect(url.removeprefix("sqlite:///"))
        lock.execute("BEGIN EXCLUSIVE")
    second = [routed(n) for n in range(10, 40)]
    publish(kafka_bootstrap, alerts, [(r.alert.alert_id.encode(), encode(r)) for r in second])
    stop = threading.Event()
    end = time.monotonic() + 30
    while inbox.outages < 3:
        assert time.monotonic() < end
        inbox.step(stop, timeout_ms=200)
    assert committed(kafka_bootstrap, group, alerts) == 10  # no offset moved past unstored rows
    if proxy is not None:
        proxy.restore()
    else:
        assert lock is not None
        lock.rollback()
        lock.close()
    drain(inbox, lambda: committed(kafka_bootstrap, group, alerts) == 40)
    store = InboxStore(make_engine(url))
    assert store.count(AGENCY) == 40
    assert {r.notification_id for r in store.queue(AGENCY, QueueFilter(), NOW)} == {
        r.notification_id for r in first + second}
    if proxy is not None:
        proxy.close()
