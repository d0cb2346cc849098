"""The inbox under faults, against the real secure broker and PostgreSQL (issue 21, "Hub inbox").

A record the database refuses for its data (a value too long for a column) is dead-lettered
with the reason and does not block the alerts behind it; a broker error while dead-lettering
loses nothing: the batch is read again and the refused record reaches the dead-letter topic.
The web service's ack outbox outlives a database cut and a broker error, then publishes."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from safehub.bus import Delivery, make_consumer, make_producer
from safehub.consumers.deadletter import (
    HEADER_ERROR_CLASS,
    HEADER_ERROR_MESSAGE,
    HEADER_SOURCE_TOPIC,
    DeadLetterSink,
)
from safehub.consumers.inbox.consumer import InboxConsumer, RetryPolicy
from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.store import InboxStore, RecordRefused
from safehub.errors import BrokerError, StoreError
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import AlertAck, RoutedAlert
from safehub.schemas.vocabulary import AckAction
from safehub.services.web.acks import KafkaAckPublisher, publish_pending, republish
from safehub.topics import acks, alerts, service_group
from tests.conftest import Namespace
from tests.fixtures.databases import fresh_postgres_schema
from tests.fixtures.inbox import AGENCY, NOW, committed, publish, routed
from tests.fixtures.netproxy import TcpProxy
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """An empty inbox database in a schema of its own on the real PostgreSQL."""
    yield from fresh_postgres_schema(postgres_url)


@dataclasses.dataclass(frozen=True)
class Hub:
    ns: Namespace
    alerts: str
    deadletter: str
    group: str


@pytest.fixture
def hub(secure_namespace: Callable[..., Namespace]) -> Hub:
    ns = secure_namespace(hubs=[AGENCY])
    return Hub(ns, alerts(ns.prefix, AGENCY), ns.deadletter,
               service_group(ns.prefix, AGENCY))


def too_long(n: int) -> RoutedAlert:
    """A valid record whose agencies column (1024 characters) cannot hold it: permanent."""
    good = routed(n)
    many = tuple(f"agency-number-{i:04d}" for i in range(80))  # 1,519 characters joined
    return dataclasses.replace(good, alert=dataclasses.replace(good.alert, agencies=many))


class FlakySink(DeadLetterSink):
    """The real dead-letter sink, whose first `failures` sends fail as a broker outage would."""

    def __init__(self, inner: DeadLetterSink, failures: int) -> None:
        super().__init__(inner._producer, inner.topic)
        self.failures = failures

    def send(self, *args: Any, **kwargs: Any) -> Delivery:
        if self.failures > 0:
            self.failures -= 1
            raise BrokerError("dead letter not acknowledged: KafkaTimeoutError")
        return super().send(*args, **kwargs)


def make_inbox(h: Hub, url: str, failures: int = 0) -> InboxConsumer:
    """The hub's inbox as its own principal, in its own group (as `hub_inbox` builds it)."""
    store = InboxStore(make_engine(url))
    migrate(store.engine)
    kafka = h.ns.connection(AGENCY)
    consumer = make_consumer(kafka, h.group, [h.alerts], client_id="test-inbox-faults")
    producer = make_producer(kafka, "test-inbox-faults-dl")
    sink = FlakySink(DeadLetterSink(producer, h.deadletter), failures)
    return InboxConsumer(consumer, store, sink, h.ns.prefix, lambda: NOW,
                         RetryPolicy(initial_s=0.1, max_s=0.5), producer=producer)


# Bounds, not expectations: a run takes ~2 s alone, but once took over 30 s late in a full
# suite on the shared 2-core machine (a fresh group's first join behind many others).
CATCH_UP_S = 120.0


def drain(inbox: InboxConsumer, until: Callable[[], bool], seconds: float = CATCH_UP_S) -> None:
    """Step the inbox as `InboxConsumer.run` does (a BrokerError is logged and retried)."""
    stop = threading.Event()
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "inbox did not catch up in time"
        try:
            inbox.step(stop, timeout_ms=200)
        except BrokerError:
            stop.wait(0.1)


def dead_letters(h: Hub) -> list[dict[str, bytes]]:
    reader = TopicReader(h.ns.kafka, h.deadletter)  # only the admin reads dead letters
    try:
        return [dict(r.headers) | {"value": r.value} for r in reader.read_to_end()]
    finally:
        reader.close()


def test_store_tells_refused_data_from_an_outage(pg_url: str) -> None:
    store = InboxStore(make_engine(pg_url))
    migrate(store.engine)
    bad = too_long(1)
    with pytest.raises(RecordRefused) as refused:
        store.save([(bad, encode(bad))], NOW)
    assert str(refused.value) == "inbox database: DataError"  # the class, never a value
    ok = routed(2)
    assert store.save([(ok, encode(ok))], NOW) == 1
    assert store.save([(ok, encode(ok))], NOW) == 0  # a redelivery is still a no-op
    # An outage is not "refused": the consumer must wait for it, not dead-letter.
    down = InboxStore(make_engine(sa.make_url(pg_url).set(port=1).render_as_string(False)))
    with pytest.raises(StoreError) as outage:
        down.save([(ok, encode(ok))], NOW)
    assert not isinstance(outage.value, RecordRefused)


def test_value_too_long_is_dead_lettered_and_later_alerts_stored(pg_url: str, hub: Hub) -> None:
    before = [routed(n) for n in range(5)]
    bad = too_long(5)
    after = [routed(n) for n in range(6, 12)]
    records = [*before, bad, *after]
    publish(hub.ns, hub.alerts, [(r.alert.alert_id.encode(), encode(r)) for r in records])
    inbox = make_inbox(hub, pg_url)
    try:
        drain(inbox, lambda: committed(hub.ns.kafka, hub.group, hub.alerts) == len(records))
    finally:
        inbox.close()
    store = InboxStore(make_engine(pg_url))
    assert store.count(AGENCY) == len(records) - 1
    assert store.alert(AGENCY, bad.notification_id) is None
    assert all(store.alert(AGENCY, r.notification_id) for r in before + after)
    assert inbox.deadlettered == 1 and inbox.outages == 0
    (letter,) = dead_letters(hub)
    assert letter["value"] == encode(bad)
    assert letter[HEADER_SOURCE_TOPIC] == hub.alerts.encode()
    assert letter[HEADER_ERROR_CLASS] == b"RecordRefused"
    assert letter[HEADER_ERROR_MESSAGE] == b"inbox database: DataError"


def test_broker_error_while_dead_lettering_loses_nothing(pg_url: str, hub: Hub) -> None:
    good = [routed(n) for n in range(4)]
    bad = too_long(4)
    records = [(r.alert.alert_id.encode(), encode(r)) for r in [*good, bad]]
    records.append((b"junk", b"\x00not avro"))
    publish(hub.ns, hub.alerts, records)
    inbox = make_inbox(hub, pg_url, failures=2)  # the first two dead letters fail
    stop = threading.Event()
    try:
        deadline = time.monotonic() + CATCH_UP_S
        while inbox.deadlettered == 0:
            assert time.monotonic() < deadline, "inbox did not catch up in time"
            try:
                inbox.step(stop, timeout_ms=200)
            except BrokerError:
                stop.wait(0.1)
            if inbox._deadletters.failures > 0:  # type: ignore[attr-defined]
                # No offset moves past a record that is in neither the inbox nor a topic.
                assert committed(hub.ns.kafka, hub.group, hub.alerts) == 0
        drain(inbox, lambda: committed(hub.ns.kafka, hub.group, hub.alerts) == len(records))
    finally:
        inbox.close()
    assert InboxStore(make_engine(pg_url)).count(AGENCY) == len(good)
    sent = [d["value"] for d in dead_letters(hub)]
    assert sorted(set(sent)) == sorted({encode(bad), b"\x00not avro"})


def test_ack_outbox_survives_a_database_cut_and_a_broker_error(pg_url: str, hub: Hub) -> None:
    """The ack is published, then the database goes before it is marked so (the error that
    killed the outbox thread); then the broker refuses twice. The thread goes on, and once
    both are back the ack is on the hub's ack topic and marked published."""
    url = sa.make_url(pg_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    store = InboxStore(make_engine(through))
    migrate(store.engine)
    alert = routed(1)
    store.save([(alert, encode(alert))], NOW)
    ack = AlertAck(ack_id="a" * 32, alert_id=alert.alert.alert_id, agency_id=AGENCY,
                   user_ref="sw-leeds-1", action=AckAction.ACKNOWLEDGED, decision=None, at=NOW)
    store.record_ack(alert.notification_id, ack)
    producer = make_producer(hub.ns.connection(AGENCY), "test-ack-outbox")
    topic = acks(hub.ns.prefix, AGENCY)
    kafka_publisher = KafkaAckPublisher(producer, topic)
    events = {"published": 0, "refused": 0}

    class CutAfterPublishing:
        def publish(self, ack: AlertAck) -> None:
            if events["published"] == 1 and events["refused"] < 2:
                events["refused"] += 1
                raise BrokerError("ack not acknowledged: KafkaTimeoutError")
            kafka_publisher.publish(ack)
            events["published"] += 1
            if events["published"] == 1:
                proxy.cut()  # published, and now the mark cannot be stored

    rounds = [lambda: publish_pending(store, {AGENCY: CutAfterPublishing()}, lambda: NOW + 1)]
    stop = threading.Event()
    thread = threading.Thread(target=republish, args=(stop, rounds, 0.05), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while events["published"] == 0:
            assert time.monotonic() < deadline, "the ack was never published"
            time.sleep(0.05)
        time.sleep(0.5)  # rounds against the cut database
        assert thread.is_alive(), "the outbox thread died on a store error"
        proxy.restore()
        while store.unpublished_acks():
            assert time.monotonic() < deadline, "the ack was never marked published"
            assert thread.is_alive(), "the outbox thread died"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(5)
        producer.close()
        proxy.close()
    assert events["refused"] == 2
    reader = TopicReader(hub.ns.kafka, topic)
    sent = {decode(r.value, AlertAck) for r in reader.read_to_end()}
    reader.close()
    assert sent == {ack}  # once or twice on the topic: the router takes a repeat as a no-op
