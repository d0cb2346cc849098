"""The router under faults, on real brokers and a real PostgreSQL: nothing is lost.

- A fresh consumer group (nothing committed yet) whose first save fails (the database cut
  behind a TCP relay): once the database is back, the same batch is re-read and saved, and
  routed once (a re-sent notification keeps its id).
- The demo's supervisor restarts a router killed with SIGKILL, which then carries on; and it
  gives up, naming the service, on one that keeps failing.
- Its own single broker (the launcher's, never the session's shared cluster) stopped for
  ~70 s while escalations are due and new alerts are waiting in a producer: the router waits,
  says so once, reports not ready, and afterwards every notification is there exactly once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from safehub.bus import make_consumer, make_producer, send_all
from safehub.connection import KafkaConnection
from safehub.consumers.deadletter import DeadLetterSink
from safehub.consumers.inbox.database import make_engine
from safehub.deploy.kafka.launcher import Cluster, ClusterState
from safehub.deploy.topics import TopicSpec, create_topics
from safehub.errors import SafehubError
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import CorrelatedAlert, RoutedAlert
from safehub.services.audit.journal import AuditJournal
from safehub.services.router.service import (
    CONSUMER_SETTINGS,
    PRODUCER_SETTINGS,
    OutageTooLong,
    Router,
    input_topics,
    output_topics,
)
from safehub.services.router.store import RouterStore
from safehub.services.supervisor import RestartPolicy, ServiceSpec, Supervisor, python_env
from safehub.topics import alerts, service_group
from tests.conftest import Namespace
from tests.fixtures.brokers import own_cluster
from tests.fixtures.clock import ManualClock
from tests.fixtures.netproxy import TcpProxy
from tests.fixtures.router import HOUR, MON_10, correlated_alert, routing_table
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration
TABLE = routing_table()
OUTAGE_S = 70.0
CATCH_UP_S = 60.0


def make_router(kafka: KafkaConnection, prefix: str, url: str, clock: ManualClock[int],
                client: str) -> Router:
    store = RouterStore(make_engine(url))
    store.migrate()
    producer = make_producer(kafka, client, **PRODUCER_SETTINGS)
    consumer = make_consumer(kafka, service_group(prefix, "router"),
                             input_topics(TABLE, prefix), client_id=client,
                             **CONSUMER_SETTINGS)
    return Router(TABLE, consumer, producer, store,
                  AuditJournal(producer, f"{prefix}audit", "router"),
                  DeadLetterSink(producer, f"{prefix}deadletter"), prefix, clock)


def stored_ids(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            # The router creates the SQLite file before its tables: between the two, nothing
            # has been saved yet.
            if not sa.inspect(conn).has_table("router_alert"):
                return set()
            return {r[0] for r in conn.execute(sa.text("SELECT alert_id FROM router_alert"))}
    finally:
        engine.dispose()


def wait_for(what: str, done: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"{what}: not within {seconds} s"
        time.sleep(0.2)


@contextmanager
def running(router: Router) -> Iterator[threading.Thread]:
    """The router running in a thread for the block; then stopped and closed."""
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True, name="router")
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(30)
        router.close()


def notifications(reader: TopicReader) -> list[RoutedAlert]:
    return [decode(r.value, RoutedAlert) for r in reader.read_to_end()
            if ".alerts." in r.topic]


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    schema = "t" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_fresh_group_rereads_a_batch_whose_save_failed(
        secure_namespace: Callable[..., Namespace], postgres_url: str, pg_schema: str,
        caplog: pytest.LogCaptureFixture) -> None:
    ns = secure_namespace(agencies={"police-wy": "POLICE"}, hubs=sorted(TABLE.receivers()))
    pg = urlsplit(postgres_url)
    proxy = TcpProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    direct = f"{postgres_url}?options=-csearch_path%3D{pg_schema}"
    relayed = direct.replace(f"{pg.hostname}:{pg.port}", f"127.0.0.1:{proxy.port}", 1)
    router = make_router(ns.connection("router"), ns.prefix, relayed, ManualClock(MON_10),
                         "faults-router")
    router.backoff_s = (0.2, 1.0)
    sent = [correlated_alert("fresh", n) for n in range(5)]
    correlator = make_producer(ns.connection("correlator"), "faults-correlator")
    reader = TopicReader(ns.connection("auditor"),
                         *(alerts(ns.prefix, h) for h in sorted(TABLE.receivers())))
    caplog.set_level(logging.INFO, logger="safehub.services.router.service")
    proxy.cut()  # the first batch of a group that has committed nothing cannot be saved
    send_all(correlator, [(f"{ns.prefix}correlated", a.cluster_id.encode(), encode(a), None)
                          for a in sent])
    try:
        with running(router) as thread:
            wait_for("a failed save", lambda: router.failures > 0, 30)
            proxy.restore()
            want = {a.alert_id for a in sent}
            wait_for("every alert saved", lambda: want <= stored_ids(direct), CATCH_UP_S)
            assert thread.is_alive()
    finally:
        correlator.close(timeout=5)
        proxy.close()
    routed = notifications(reader)
    reader.close()
    assert {r.alert.alert_id for r in routed} == want
    # Sent before the save failed and again after the re-read: the same ids, which every
    # inbox drops; never a second id for one alert.
    assert len({r.notification_id for r in routed}) == len(want)
    waits = [r for r in caplog.records if "waiting" in r.getMessage()]
    assert len(waits) == 1, [r.getMessage() for r in caplog.records]


def test_router_gives_up_when_an_outage_outlasts_its_bound(
        secure_namespace: Callable[..., Namespace], postgres_url: str, pg_schema: str) -> None:
    """`safehub router` turns OutageTooLong into exit code 75, for a restart."""
    ns = secure_namespace(agencies={"police-wy": "POLICE"}, hubs=sorted(TABLE.receivers()))
    pg = urlsplit(postgres_url)
    proxy = TcpProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    relayed = (f"{postgres_url}?options=-csearch_path%3D{pg_schema}"
               .replace(f"{pg.hostname}:{pg.port}", f"127.0.0.1:{proxy.port}", 1))
    router = make_router(ns.connection("router"), ns.prefix, relayed, ManualClock(MON_10),
                         "bounded-router")
    router.backoff_s, router.max_outage_s = (0.2, 0.5), 3.0
    correlator = make_producer(ns.connection("correlator"), "bounded-correlator")
    a = correlated_alert("bounded", 0)
    send_all(correlator, [(f"{ns.prefix}correlated", a.cluster_id.encode(), encode(a), None)])
    proxy.cut()
    started = time.monotonic()
    try:
        with pytest.raises(OutageTooLong) as caught:
            router.run(threading.Event())
    finally:
        router.close()
        correlator.close(timeout=5)
        proxy.close()
    assert time.monotonic() - started < 30
    assert "router database" in str(caught.value)
    assert "gave up after" in str(caught.value)


@pytest.fixture
def own_broker() -> Iterator[tuple[Cluster, ClusterState]]:
    with own_cluster("router-faults") as running:
        yield running


@pytest.mark.slow
def test_broker_outage_longer_than_a_minute_loses_nothing(
        own_broker: tuple[Cluster, ClusterState], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    cluster, state = own_broker
    admin = state.connection()
    prefix = "rf."
    create_topics(admin, [TopicSpec(t, 1, 1, {}) for t in
                          [*input_topics(TABLE, prefix), *output_topics(TABLE, prefix)]])
    clock = ManualClock(MON_10)
    router = make_router(admin, prefix, f"sqlite:///{tmp_path}/router.db", clock, "outage")
    router.backoff_s = (0.5, 5.0)
    before = [correlated_alert("before", n) for n in range(5)]
    during = [correlated_alert("during", n) for n in range(5)]
    correlator = make_producer(admin, "outage-correlator", delivery_timeout_ms=300_000,
                               request_timeout_ms=10_000, reconnect_backoff_max_ms=2_000)
    caplog.set_level(logging.INFO, logger="safehub.services.router.service")
    send_all(correlator, [(f"{prefix}correlated", a.cluster_id.encode(), encode(a), None)
                          for a in before])
    reader: TopicReader | None = None
    try:
        with running(router) as thread:
            wait_for("the first alerts stored", lambda: len(stored_ids(
                f"sqlite:///{tmp_path}/router.db")) == len(before), CATCH_UP_S)
            time.sleep(1.0)  # past the commit of that batch
            cluster.kill_node(1)
            killed = time.monotonic()
            # While the broker is gone: the first alerts become overdue (escalations to send) and
            # new alerts wait in the correlator's producer.
            clock.now = MON_10 + 48 * HOUR
            futures = [correlator.send(f"{prefix}correlated", key=a.cluster_id.encode(),
                                       value=encode(a)) for a in during]
            wait_for("the router to notice the outage", lambda: router.outage is not None, 40)
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - killed)))
            assert thread.is_alive(), "the router died during the outage"
            assert (router.not_ready() or "").startswith("waiting: broker"), router.not_ready()
            cluster.restart_node(1)
            back = time.monotonic()
            for f in futures:
                f.get(120)
            delivered = time.monotonic()
            want = {(a.alert_id, 0) for a in before + during} | {(a.alert_id, 1) for a in before}
            reader = TopicReader(admin, *(alerts(prefix, h) for h in sorted(TABLE.receivers())))
            seen: list[RoutedAlert] = []

            def all_routed() -> bool:
                seen[:] = notifications(reader) if reader is not None else []
                return {(r.alert.alert_id, r.escalation_level) for r in seen} >= want

            wait_for("every notification after the outage", all_routed, CATCH_UP_S)
            caught_up = time.monotonic()
            wait_for("the router to recover", lambda: router.not_ready() is None, CATCH_UP_S)
            assert thread.is_alive()
    finally:
        correlator.close(timeout=5)
        if reader is not None:
            reader.close()
    assert {(r.alert.alert_id, r.escalation_level) for r in seen} == want
    # One notification id for each alert and level: what every inbox keeps once.
    ids = {(r.alert.alert_id, r.escalation_level): r.notification_id for r in seen}
    assert len({r.notification_id for r in seen}) == len(ids) == len(want)
    print(f"broker down {back - killed:.0f} s; the new alerts delivered {delivered - back:.0f} "
          f"s and routed {caught_up - back:.0f} s later; {len(seen)} notification records for "
          f"{len(want)} notifications")
    waits = [r for r in caplog.records if "waiting" in r.getMessage()]
    assert len(waits) == 1, [r.getMessage() for r in caplog.records]
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_supervisor_restarts_a_killed_router(
        secure_namespace: Callable[..., Namespace], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    ns = secure_namespace(agencies={"police-wy": "POLICE"}, hubs=sorted(TABLE.receivers()))
    routing = tmp_path / "routing.toml"
    routing.write_text(
        '[fallback]\nagency = "hub-duty"\nescalation = "hub-manager"\n'
        '[[route]]\nlocal_authority = "E08000035"\nagency = "csc-leeds"\n'
        'escalation = "leeds-manager"\n')
    db = tmp_path / "router.db"
    supervisor = Supervisor(tmp_path, python_env(), RestartPolicy(first_delay_s=0.5))
    first = [correlated_alert("sup-first", n) for n in range(3)]
    then = [correlated_alert("sup-then", n) for n in range(3)]
    correlator = make_producer(ns.connection("correlator"), "sup-correlator")
    try:
        running = supervisor.start(ServiceSpec("router", ("router",), {
            **ns.env("router"), "SAFEHUB_ROUTING_TABLE": str(routing),
            "SAFEHUB_ROUTER_DATABASE_URL": f"sqlite:///{db}"}))
        send_all(correlator, [(f"{ns.prefix}correlated", a.cluster_id.encode(), encode(a), None)
                              for a in first])

        def saved(alerts_: list[CorrelatedAlert]) -> Callable[[], bool]:
            def done() -> bool:
                supervisor.check()
                return db.exists() and {a.alert_id for a in alerts_} <= stored_ids(
                    f"sqlite:///{db}")
            return done

        wait_for("the router saving the first alerts", saved(first), 60)
        killed = running.process.pid
        os.kill(killed, signal.SIGKILL)
        running.process.wait(10)
        send_all(correlator, [(f"{ns.prefix}correlated", a.cluster_id.encode(), encode(a), None)
                              for a in then])
        wait_for("the router back, saving the next alerts", saved(then), 60)
        assert running.process.pid != killed and running.process.poll() is None
        assert len(running.restarts) == 1
    finally:
        stopped = supervisor.stop_all()
        correlator.close(timeout=5)
    assert stopped == [("router", 0)], stopped  # the restarted router stops cleanly
    out = capsys.readouterr().out
    assert f"service router exited with code {-signal.SIGKILL}; restarting it" in out, out
    assert "service router restarted" in out
    assert "supervisor: service router restarted" in (tmp_path / "logs" / "router.log").read_text()


def test_supervisor_gives_up_on_a_service_that_keeps_failing(tmp_path: Path) -> None:
    # A command that does not exist: the child exits 2 at once, every time.
    supervisor = Supervisor(tmp_path, python_env(),
                            RestartPolicy(first_delay_s=0.1, max_delay_s=0.2, max_restarts=2))
    running = supervisor.start(ServiceSpec("broken", ("no-such-command",), {}))
    deadline = time.monotonic() + 60
    with pytest.raises(SafehubError) as caught:
        while time.monotonic() < deadline:
            supervisor.check()
            time.sleep(0.05)
    supervisor.stop_all()
    assert len(running.restarts) == 2
    assert "exited with code 2 after 2 restart(s)" in str(caught.value)
