"""A decision takes effect only once the audit log holds it (real broker, real SQLite)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from safehub.bus import make_producer
from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.store import InboxStore
from safehub.errors import BrokerError
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import AlertAck, AuditEntry
from safehub.schemas.vocabulary import AuditAction, Decision
from safehub.services.audit.journal import AuditJournal
from safehub.services.web.acks import AckPublisher, KafkaAckPublisher, publish_pending
from safehub.services.web.hub import Hub
from safehub.services.web.users import User
from tests.integration.test_correlator_golden import TopicReader
from tests.integration.test_inbox import AGENCY, NOW, routed

pytestmark = pytest.mark.integration


class Published:
    """Where acks would go; the router's topic is not what this test is about."""

    def __init__(self) -> None:
        self.acks: list[AlertAck] = []

    def publish(self, ack: AlertAck) -> None:
        self.acks.append(ack)


def test_a_decision_whose_audit_entry_is_refused_is_not_stored(
    kafka_bootstrap: str, topic_names: Callable[[str], str],
    create_topics_fn: Callable[..., list[str]], tmp_path: Path,
) -> None:
    store = InboxStore(make_engine(f"sqlite:///{tmp_path / 'inbox.db'}"))
    migrate(store.engine)
    note = routed(1)
    store.save([(note, encode(note))], NOW)
    user = User("sw-leeds-1", AGENCY, "unused")
    publisher: AckPublisher = Published()

    # The audit topic does not exist (the broker creates none by itself): no entry is taken.
    missing = topic_names("audit-missing")
    producer = make_producer(kafka_bootstrap, "test-hub-audit", max_block_ms=2000)
    refusing = Hub(store, AuditJournal(producer, missing, "web"), publisher, lambda: NOW)
    with pytest.raises(BrokerError):
        refusing.act(user, note.notification_id, Decision.STRATEGY_MEETING)
    row = store.alert(AGENCY, note.notification_id)
    assert row is not None and row.status == "NEW" and row.decision is None
    assert store.unpublished_acks() == []

    # With the log reachable, the same decision is logged, then stored.
    (audit_topic,) = create_topics_fn(topic_names("audit"))
    hub = Hub(store, AuditJournal(producer, audit_topic, "web"), publisher, lambda: NOW)
    outcome = hub.act(user, note.notification_id, Decision.STRATEGY_MEETING)
    row = store.alert(AGENCY, note.notification_id)
    assert row is not None and row.status == "DECIDED"
    reader = TopicReader(kafka_bootstrap, audit_topic)
    deadline = time.monotonic() + 20
    while not reader.poll() and time.monotonic() < deadline:
        pass
    entries = [decode(r.value, AuditEntry) for r in reader.poll()]
    reader.close()
    producer.close()
    assert [(e.action, e.subject_id) for e in entries] == [
        (AuditAction.ALERT_DECIDED, outcome.ack.alert_id)]


def test_a_decision_the_broker_could_not_take_is_published_once_it_can(
    kafka_bootstrap: str, topic_names: Callable[[str], str],
    create_topics_fn: Callable[..., list[str]], tmp_path: Path,
) -> None:
    """The outbox: a decision stored and logged, whose ack the broker refused, reaches the
    router's topic on a later `publish_pending`, and is then no longer pending.

    At least once, not exactly once: a send that times out after the broker took the record
    is sent again (seen in this test while the new topic's leader was being elected). The
    router's `acknowledge` is idempotent, so a repeated ack changes nothing."""
    store = InboxStore(make_engine(f"sqlite:///{tmp_path / 'inbox.db'}"))
    migrate(store.engine)
    note = routed(1)
    store.save([(note, encode(note))], NOW)
    user = User("sw-leeds-1", AGENCY, "unused")
    (audit_topic,) = create_topics_fn(topic_names("audit"))
    acks_topic = topic_names("alert-acks")  # not created yet: the broker refuses the ack
    producer = make_producer(kafka_bootstrap, "test-hub-outbox", max_block_ms=2000)
    publisher = KafkaAckPublisher(producer, acks_topic, timeout_s=5)
    hub = Hub(store, AuditJournal(producer, audit_topic, "web"), publisher, lambda: NOW)

    outcome = hub.act(user, note.notification_id, Decision.STRATEGY_MEETING)
    assert outcome.published is False
    row = store.alert(AGENCY, note.notification_id)
    assert row is not None and row.status == "DECIDED"
    assert [a.ack_id for a in store.unpublished_acks()] == [outcome.ack.ack_id]
    assert publish_pending(store, publisher, lambda: NOW + 1) == 0  # still refused: kept

    create_topics_fn(acks_topic)
    deadline = time.monotonic() + 30
    sent = 0
    while not sent and time.monotonic() < deadline:  # until the producer sees the new topic
        sent = publish_pending(store, publisher, lambda: NOW + 2)
    assert sent == 1 and store.unpublished_acks() == []
    assert publish_pending(store, publisher, lambda: NOW + 3) == 0  # nothing sent twice
    reader = TopicReader(kafka_bootstrap, acks_topic)
    got: list[AlertAck] = []
    deadline = time.monotonic() + 20
    while not got and time.monotonic() < deadline:
        got = [decode(r.value, AlertAck) for r in reader.poll()]
    reader.close()
    producer.close()
    assert got and all(ack == outcome.ack for ack in got)
