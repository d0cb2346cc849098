"""The inbox consumer against the real secure broker and both databases: rows before offsets,
redelivery is a no-op, bad records are dead-lettered, a database outage loses nothing. Each hub's
inbox runs as that hub's principal in its own group; one process may serve several hubs.

Attacks: no one but hub H can join H's consumer group, and a hub cannot read another hub's
alerts."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError

from safehub.bus import make_consumer, make_producer
from safehub.connection import KafkaConnection
from safehub.consumers.deadletter import HEADER_SOURCE_TOPIC, DeadLetterSink
from safehub.consumers.inbox.command import InboxSettings, build, hub_inbox
from safehub.consumers.inbox.consumer import InboxConsumer, RetryPolicy
from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.store import InboxStore, QueueFilter
from safehub.errors import ConfigError
from safehub.schemas.codec import encode
from safehub.schemas.records import RoutedAlert
from safehub.topics import alerts, service_group
from tests.conftest import Namespace
from tests.fixtures.access import assert_read_refused
from tests.fixtures.databases import fresh_postgres_schema
from tests.fixtures.inbox import AGENCY, NOW, OTHER, committed, publish, routed
from tests.fixtures.netproxy import TcpProxy
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(url, kind) of an empty inbox database of either kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'inbox.db'}", "sqlite"
        return
    for url in fresh_postgres_schema(request.getfixturevalue("postgres_url")):
        yield url, "postgresql"


@dataclass(frozen=True)
class Topics:
    ns: Namespace
    prefix: str
    alerts: str
    deadletter: str
    group: str  # the one group the hub's principal may use

    @property
    def hub(self) -> KafkaConnection:
        return self.ns.connection(AGENCY)

    def committed(self) -> int:
        """What the hub's group has committed on its alerts topic (asked as the hub)."""
        return committed(self.hub, self.group, self.alerts)

    def publish(self, notifications: list[RoutedAlert]) -> None:
        """The notifications on the hub's alerts topic, keyed as the router keys them."""
        publish(self.ns, self.alerts, [(r.alert.alert_id.encode(), encode(r))
                                       for r in notifications])


@pytest.fixture
def topics(secure_namespace: Callable[..., Namespace]) -> Topics:
    ns = secure_namespace(hubs=[AGENCY, OTHER])
    return Topics(ns, ns.prefix, alerts(ns.prefix, AGENCY), ns.deadletter,
                  service_group(ns.prefix, AGENCY))


def make_inbox(kafka: KafkaConnection, url: str, t: Topics, group: str | None = None
               ) -> InboxConsumer:
    """The hub's inbox as its command builds it (as `kafka`), or in another group."""
    store = InboxStore(make_engine(url, busy_timeout_s=0.2))
    migrate(store.engine)
    if group is None:
        return hub_inbox(kafka, AGENCY, store, t.prefix, lambda: NOW,
                         RetryPolicy(initial_s=0.1, max_s=0.5))
    consumer = make_consumer(kafka, group, [t.alerts], client_id="test-inbox")
    producer = make_producer(kafka, "test-inbox-dl")
    return InboxConsumer(consumer, store, DeadLetterSink(producer, t.deadletter), t.prefix,
                         lambda: NOW, RetryPolicy(initial_s=0.1, max_s=0.5), producer=producer)


def drain(inbox: InboxConsumer, until: Callable[[], bool], seconds: float = 40) -> None:
    stop = threading.Event()
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "inbox did not catch up in time"
        inbox.step(stop, timeout_ms=200)


def test_rows_stored_redelivery_no_op_bad_records_dead_lettered(
    database: tuple[str, str], topics: Topics
) -> None:
    url, _ = database
    t = topics
    good = [routed(n) for n in range(20)]
    elsewhere = routed(99, agency_la="E08000032")  # for csc-bradford, on Leeds's topic
    values = [(r.alert.alert_id.encode(), encode(r)) for r in good]
    values += [(b"junk", b"\x00not avro"), (b"x", encode(elsewhere))]
    publish(t.ns, t.alerts, values + values[:5])  # five redelivered at once
    inbox = make_inbox(t.hub, url, t)
    drain(inbox, lambda: t.committed() == len(values) + 5)
    store = InboxStore(make_engine(url))
    assert store.count(AGENCY) == 20
    assert inbox.deadlettered == 2
    row = store.alert(AGENCY, good[3].notification_id)
    assert row is not None and [e.indicator for e in row.evidence] == [
        "OFFENDING", "ABSENT_FROM_SCHOOL"]
    assert store.alert("csc-bradford", good[3].notification_id) is None
    assert len(store.queue(AGENCY, QueueFilter(tier="ESCALATING"), NOW)) == 20
    inbox.close()
    # A second consumer group reading everything again adds nothing (the hub may use only its
    # own group: an operator's replay runs as the admin).
    replay = "replay-" + uuid.uuid4().hex
    again = make_inbox(t.ns.kafka, url, t, group=replay)
    drain(again, lambda: committed(t.ns.kafka, replay, t.alerts) == len(values) + 5)
    again.close()
    assert store.count() == 20
    reader = TopicReader(t.ns.kafka, t.deadletter)  # only the admin reads dead letters
    seen = [(dict(r.headers)[HEADER_SOURCE_TOPIC].decode(), r.value)
            for r in reader.read_to_end()]
    reader.close()
    assert (t.alerts, b"\x00not avro") in seen


def test_database_outage_during_consumption_loses_nothing(
    database: tuple[str, str], topics: Topics
) -> None:
    url, kind = database
    t = topics
    proxy: TcpProxy | None = None
    lock: sqlite3.Connection | None = None
    if kind == "postgresql":
        parsed = sa.make_url(url)
        proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
        url = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    inbox = make_inbox(t.hub, url, t)
    first = [routed(n) for n in range(10)]
    t.publish(first)
    drain(inbox, lambda: t.committed() == 10)
    # The database goes away: SQLite is held locked by another writer, PostgreSQL's link is cut.
    if proxy is not None:
        proxy.cut()
    else:
        lock = sqlite3.connect(url.removeprefix("sqlite:///"))
        lock.execute("BEGIN EXCLUSIVE")
    second = [routed(n) for n in range(10, 40)]
    t.publish(second)
    stop = threading.Event()
    end = time.monotonic() + 30
    while inbox.outages < 3:
        assert time.monotonic() < end
        inbox.step(stop, timeout_ms=200)
    assert t.committed() == 10  # no offset moved past unstored rows
    if proxy is not None:
        proxy.restore()
    else:
        assert lock is not None
        lock.rollback()
        lock.close()
    drain(inbox, lambda: t.committed() == 40)
    store = InboxStore(make_engine(url))
    assert store.count(AGENCY) == 40
    assert {r.notification_id for r in store.queue(AGENCY, QueueFilter(), NOW)} == {
        r.notification_id for r in first + second}
    if proxy is not None:
        proxy.close()


def test_one_process_serves_several_hubs_each_as_itself(
    topics: Topics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the demo runs it: SAFEHUB_INBOX_AGENCIES lists the hubs, SAFEHUB_KAFKA_SECRETS holds
    their password files, and no principal is named: each hub is read as itself."""
    t = topics
    for name in [n for n in os.environ if n.startswith("SAFEHUB_")]:
        monkeypatch.delenv(name)
    env = t.ns.kafka.env()
    for name in ("SAFEHUB_KAFKA_BOOTSTRAP", "SAFEHUB_KAFKA_SECRETS", "SAFEHUB_KAFKA_CA_FILE"):
        monkeypatch.setenv(name, env[name])
    url = f"sqlite:///{tmp_path / 'inbox.db'}"
    monkeypatch.setenv("SAFEHUB_TOPIC_PREFIX", t.prefix)
    monkeypatch.setenv("SAFEHUB_INBOX_AGENCIES", f"{AGENCY}, {OTHER}")
    monkeypatch.setenv("SAFEHUB_INBOX_DATABASE_URL", url)
    settings = InboxSettings.from_env()
    assert {h: c.principal for h, c in settings.kafka.items()} == {AGENCY: AGENCY, OTHER: OTHER}
    leeds, bradford = routed(1), routed(2, agency_la="E08000032")
    publish(t.ns, t.alerts, [(b"1", encode(leeds)), (b"bad", b"junk")])
    publish(t.ns, alerts(t.prefix, OTHER), [(b"2", encode(bradford)), (b"bad", b"junk")])
    inboxes = build(settings)
    stop = threading.Event()
    runner = threading.Thread(target=inboxes.run, args=(stop,))
    runner.start()
    try:
        store = InboxStore(make_engine(url))
        deadline = time.monotonic() + 40
        while not (store.count(AGENCY) == 1 and store.count(OTHER) == 1
                   and all(committed(t.ns.connection(h), service_group(t.prefix, h),
                                     alerts(t.prefix, h)) == 2 for h in (AGENCY, OTHER))):
            assert time.monotonic() < deadline, "the hubs' alerts were not stored"
            assert runner.is_alive()
            time.sleep(0.3)
    finally:
        stop.set()
        runner.join(30)
        inboxes.close()
    assert [r.alert_id for r in store.queue(OTHER, QueueFilter(), NOW)] == [bradford.alert.alert_id]
    reader = TopicReader(t.ns.kafka, t.deadletter)
    sources = sorted(dict(r.headers)[HEADER_SOURCE_TOPIC].decode() for r in reader.read_to_end())
    reader.close()
    assert sources == sorted([t.alerts, alerts(t.prefix, OTHER)])


def test_a_principal_in_the_settings_must_be_a_served_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAFEHUB_KAFKA_PRINCIPAL", "router")
    monkeypatch.setenv("SAFEHUB_INBOX_AGENCIES", AGENCY)
    with pytest.raises(ConfigError, match="not one of the hubs served"):
        InboxSettings.from_env()


def test_no_one_but_the_hub_joins_its_group_or_reads_its_alerts(topics: Topics) -> None:
    """Bradford's principal may read its own alerts in its own group, and nothing of Leeds's:
    neither Leeds's consumer group (to take its partitions or move its offsets) nor its topic."""
    t = topics
    intruder = t.ns.connection(OTHER)
    publish(t.ns, t.alerts, [(b"1", encode(routed(1)))])
    # Leeds's group, on Bradford's own topic (which Bradford may read): the group is refused.
    consumer = make_consumer(intruder, t.group, [alerts(t.prefix, OTHER)], client_id="intruder")
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                consumer.poll(timeout_ms=500)
    finally:
        consumer.close()
    # Leeds's group on Leeds's topic: refused (group or topic, whichever the broker checks first).
    consumer = make_consumer(intruder, t.group, [t.alerts], client_id="intruder")
    try:
        with pytest.raises((GroupAuthorizationFailedError, TopicAuthorizationFailedError)):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                consumer.poll(timeout_ms=500)
    finally:
        consumer.close()
    # Leeds's topic without a group: refused.
    assert_read_refused(intruder, t.alerts)
    # Nor can it commit offsets for Leeds's group.
    probe = make_consumer(intruder, t.group, client_id="intruder")
    try:
        with pytest.raises((GroupAuthorizationFailedError, TopicAuthorizationFailedError)):
            probe.commit({TopicPartition(t.alerts, 0): OffsetAndMetadata(1, "", -1)})
    finally:
        probe.close()
    # Leeds's group is untouched: nothing was committed for it.
    assert t.committed() == 0


def fill_queue(url: str, n: int, decided: int) -> tuple[InboxStore, list[RoutedAlert]]:
    """`n` alerts for Leeds (alert k raised k ms before NOW: 0 is the newest) and one for
    Bradford; the `decided` newest of Leeds's decided, and the oldest with the earliest
    deadlines, as a backlog that must not hide the new ones."""
    store = InboxStore(make_engine(url))
    migrate(store.engine)
    mine = [routed(k) for k in range(n)]
    batch = [(r, encode(r)) for r in [*mine, routed(n, agency_la="E08000032")]]
    assert store.save(batch, NOW) == n + 1
    with store.engine.begin() as conn:
        table = sa.table("inbox_alert", sa.column("notification_id"), sa.column("status"),
                         sa.column("ack_deadline"), sa.column("raised_at"))
        conn.execute(table.update()
                     .where(table.c.notification_id.in_([r.notification_id
                                                         for r in mine[:decided]]))
                     .values(status="DECIDED"))
        conn.execute(table.update().values(ack_deadline=table.c.raised_at))
    return store, mine


def test_queue_pages_through_everything_newest_undecided_first(
    database: tuple[str, str]
) -> None:
    url, _ = database
    store, mine = fill_queue(url, 812, decided=100)
    pages = []
    page = store.queue_page(AGENCY, QueueFilter(), NOW, 1, 50)
    assert (page.total, page.first, page.last, page.pages) == (812, 1, 50, 17)
    while True:
        pages.append(page)
        if not page.has_next:
            break
        page = store.queue_page(AGENCY, QueueFilter(), NOW, page.page + 1, 50)
    assert (page.page, page.first, page.last) == (17, 801, 812)
    seen = [r.notification_id for p in pages for r in p.rows]
    # Every row exactly once: the 712 undecided newest first, then the 100 decided.
    expected = [r.notification_id for r in mine[100:]] + [r.notification_id for r in mine[:100]]
    assert seen == expected
    # By deadline: still every undecided one before any decided one, earliest deadline first.
    first = store.queue_page(AGENCY, QueueFilter(sort="deadline"), NOW, 1, 10)
    assert [r.notification_id for r in first.rows] == [r.notification_id
                                                       for r in mine[-1:-11:-1]]
    assert store.queue_page(AGENCY, QueueFilter(status="DECIDED"), NOW, 1, 500).total == 100
    assert store.queue_page(AGENCY, QueueFilter(), NOW, 18, 50).rows == []


def test_queue_page_and_api_say_what_they_show_of_how_many(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from safehub.services.web.app import create_app
    from safehub.services.web.hub import Hub
    from safehub.services.web.users import Directory, User, hash_password

    store, mine = fill_queue(f"sqlite:///{tmp_path / 'inbox.db'}", 812, decided=100)
    user = User("sw-leeds-1", AGENCY, hash_password("pw"))
    client = TestClient(create_app(Hub(store, {}, lambda: NOW), Directory({user.ref: user}),
                                   "s" * 32))
    assert client.post("/login", data={"ref": user.ref, "password": "pw"}).status_code == 200
    first = client.get("/alerts")
    assert first.status_code == 200
    assert "Showing 1-50 of 812 alert(s)" in first.text
    assert 'rel="next" href="/alerts?page=2"' in first.text and 'rel="prev"' not in first.text
    assert mine[100].notification_id in first.text  # the newest undecided leads
    last = client.get("/alerts", params={"page": 17, "sort": "deadline"})
    assert "Showing 801-812 of 812 alert(s)" in last.text
    assert 'href="/alerts?sort=deadline&amp;page=16"' in last.text and 'rel="next"' not in last.text
    beyond = client.get("/alerts", params={"page": 40})
    assert "No alerts on page 40: 812 alert(s) in all, on 17 page(s)" in beyond.text
    assert client.get("/alerts", params={"limit": 501}).status_code == 422
    # The API: a list as before, the total and the other pages in the headers.
    api = client.get("/api/alerts", params={"status": "NEW", "limit": 100, "page": 8})
    assert api.status_code == 200
    assert len(api.json()) == 12 and api.headers["X-Total-Count"] == "712"
    assert api.headers["Link"] == '</api/alerts?status=NEW&limit=100&page=7>; rel="prev"'
    everything = []
    for number in range(1, 10):
        got = client.get("/api/alerts", params={"limit": 100, "page": number}).json()
        everything += [a["notification_id"] for a in got]
    assert sorted(everything) == sorted(r.notification_id for r in mine)  # Bradford's: none
    assert client.get("/api/alerts", params={"page": 0}).status_code == 422
    assert client.get("/api/alerts", params={"limit": 0}).status_code == 422
