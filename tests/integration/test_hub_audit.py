"""A decision takes effect only once the audit log holds it, and an ack the broker could not
take is published later, with its own hub's producer (real secure broker, real SQLite). Every
write is made as the acting user's hub, to that hub's own ack topic."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from safehub.bus import make_producer
from safehub.connection import KafkaConnection
from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.store import InboxStore
from safehub.deploy.access import apply
from safehub.deploy.registry import Kind, Party, Registry, validate
from safehub.deploy.topics import create_topics, registry_specs
from safehub.errors import BrokerError
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import AlertAck, AuditEntry
from safehub.schemas.vocabulary import AuditAction, Decision
from safehub.services.audit.journal import AuditJournal
from safehub.services.web.acks import AckPublisher, KafkaAckPublisher, publish_pending
from safehub.services.web.hub import Hub, Outlet
from safehub.services.web.users import User
from safehub.topics import acks
from tests.conftest import SERVICES, Namespace
from tests.fixtures.inbox import AGENCY, NOW, OTHER, routed
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration


class Published:
    """Where acks would go; the router's topic is not what this test is about."""

    def __init__(self) -> None:
        self.acks: list[AlertAck] = []

    def publish(self, ack: AlertAck) -> None:
        self.acks.append(ack)


def test_a_decision_whose_audit_entry_is_refused_is_not_stored(
    secure_namespace: Callable[..., Namespace], tmp_path: Path,
) -> None:
    ns = secure_namespace(hubs=[AGENCY])
    store = InboxStore(make_engine(f"sqlite:///{tmp_path / 'inbox.db'}"))
    migrate(store.engine)
    note = routed(1)
    store.save([(note, encode(note))], NOW)
    user = User("sw-leeds-1", AGENCY, "unused")
    publisher: AckPublisher = Published()

    # A topic the hub may not write (here: one that does not exist): no entry is taken.
    missing = ns.topic("audit-missing")
    producer = make_producer(ns.connection(AGENCY), "test-hub-audit", max_block_ms=2000)
    refusing = Hub(store, {AGENCY: Outlet(AuditJournal(producer, missing, "web"), publisher)},
                   lambda: NOW)
    with pytest.raises(BrokerError):
        refusing.act(user, note.notification_id, Decision.STRATEGY_MEETING)
    row = store.alert(AGENCY, note.notification_id)
    assert row is not None and row.status == "NEW" and row.decision is None
    assert store.unpublished_acks() == []

    # With the log reachable, the same decision is logged, then stored.
    audit_topic = ns.audit
    hub = Hub(store, {AGENCY: Outlet(AuditJournal(producer, audit_topic, "web"), publisher)},
              lambda: NOW)
    outcome = hub.act(user, note.notification_id, Decision.STRATEGY_MEETING)
    row = store.alert(AGENCY, note.notification_id)
    assert row is not None and row.status == "DECIDED"
    reader = TopicReader(ns.connection("auditor"), audit_topic)
    deadline = time.monotonic() + 20
    while not reader.poll() and time.monotonic() < deadline:
        pass
    entries = [decode(r.value, AuditEntry) for r in reader.poll()]
    reader.close()
    producer.close()
    assert [(e.action, e.subject_id) for e in entries] == [
        (AuditAction.ALERT_DECIDED, outcome.ack.alert_id)]


def test_a_decision_the_broker_could_not_take_is_published_once_it_can(
    kafka: KafkaConnection, tmp_path: Path,
) -> None:
    """The outbox: a decision stored and logged, whose ack the broker refused, reaches its
    hub's ack topic on a later `publish_pending`, with that hub's producer, and is then no
    longer pending; another hub's acks meanwhile go out as usual.

    At least once, not exactly once: a send that times out after the broker took the record
    is sent again (seen in this test while the new topic's leader was being elected). The
    router's `acknowledge` is idempotent, so a repeated ack changes nothing."""
    # Two hubs with their ACLs, but Leeds's ack topic not created yet (the admin's job).
    registry = Registry(validate((Party(AGENCY, Kind.HUB), Party(OTHER, Kind.HUB), *SERVICES),
                                 "test registry"))
    prefix = "t" + uuid.uuid4().hex[:10] + "."
    ns = Namespace(kafka, prefix, registry)
    leeds_acks, bradford_acks = acks(prefix, AGENCY), acks(prefix, OTHER)
    specs = registry_specs(registry, 1, prefix)
    create_topics(ns.kafka, [s for s in specs if s.name != leeds_acks])
    apply(ns.kafka, registry, prefix)

    store = InboxStore(make_engine(f"sqlite:///{tmp_path / 'inbox.db'}"))
    migrate(store.engine)
    leeds_note, bradford_note = routed(1), routed(2, agency_la="E08000032")
    store.save([(n, encode(n)) for n in (leeds_note, bradford_note)], NOW)
    leeds_user, bradford_user = User("sw-leeds-1", AGENCY, "-"), User("sw-brad-1", OTHER, "-")
    producers = {h: make_producer(ns.connection(h), f"test-hub-outbox-{h}", max_block_ms=2000)
                 for h in (AGENCY, OTHER)}
    outlets = {h: Outlet(AuditJournal(p, ns.audit, "web"),
                         KafkaAckPublisher(p, acks(prefix, h), timeout_s=5))
               for h, p in producers.items()}
    hub = Hub(store, outlets, lambda: NOW)

    outcome = hub.act(leeds_user, leeds_note.notification_id, Decision.STRATEGY_MEETING)
    assert outcome.published is False
    row = store.alert(AGENCY, leeds_note.notification_id)
    assert row is not None and row.status == "DECIDED"
    assert [a.ack_id for a in store.unpublished_acks()] == [outcome.ack.ack_id]
    assert publish_pending(store, hub.publishers, lambda: NOW + 1) == 0  # still refused: kept
    other = hub.act(bradford_user, bradford_note.notification_id, Decision.NO_FURTHER_ACTION)
    assert other.published is True

    create_topics(ns.kafka, [s for s in specs if s.name == leeds_acks])
    deadline = time.monotonic() + 30
    sent = 0
    while not sent and time.monotonic() < deadline:  # until the producer sees the new topic
        sent = publish_pending(store, hub.publishers, lambda: NOW + 2)
    assert sent == 1 and store.unpublished_acks() == []
    assert publish_pending(store, hub.publishers, lambda: NOW + 3) == 0  # nothing sent twice
    got: dict[str, list[AlertAck]] = {}
    for topic in (leeds_acks, bradford_acks):
        reader = TopicReader(ns.connection("router"), topic)
        got[topic] = [decode(r.value, AlertAck) for r in reader.read_to_end()]
        reader.close()
    for p in producers.values():
        p.close()
    assert got[leeds_acks] and all(ack == outcome.ack for ack in got[leeds_acks])
    assert got[bradford_acks] and all(ack == other.ack for ack in got[bradford_acks])
