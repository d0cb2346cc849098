"""Acknowledgements and decisions: stored first (an outbox row), then published to the acting
hub's `alert-acks.<hub>` for the router, as that hub's principal. A row whose publication failed
is published later by `publish_pending` with the publisher of the row's hub, so a decision is
never lost to a broker outage and never sent with another hub's credentials."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol

from kafka import KafkaProducer

from safehub.bus import send_and_confirm
from safehub.consumers.inbox.models import InboxAck
from safehub.consumers.inbox.store import InboxStore
from safehub.errors import BrokerError, StoreError
from safehub.schemas.codec import encode
from safehub.schemas.records import AlertAck
from safehub.schemas.vocabulary import AckAction, Decision, LawfulBasis, Rationale

log = logging.getLogger(__name__)


class AckPublisher(Protocol):
    def publish(self, ack: AlertAck) -> None: ...


class KafkaAckPublisher:
    def __init__(self, producer: KafkaProducer, topic: str, timeout_s: float = 10.0) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s

    def publish(self, ack: AlertAck) -> None:
        # Keyed by alert id, like the alerts, so one alert's acks stay in order.
        send_and_confirm(self._producer, self._topic, encode(ack),
                         key=ack.alert_id.encode("ascii"), timeout=self._timeout_s)


def ack_from_row(row: InboxAck) -> AlertAck:
    return AlertAck(ack_id=row.ack_id, alert_id=row.alert_id, agency_id=row.agency_id,
                    user_ref=row.user_ref, action=AckAction(row.action),
                    decision=Decision(row.decision) if row.decision else None, at=row.at,
                    lawful_basis=LawfulBasis(row.lawful_basis) if row.lawful_basis else None,
                    rationale=Rationale(row.rationale) if row.rationale else None)


def publish_one(store: InboxStore, publisher: AckPublisher, ack: AlertAck, now: int) -> bool:
    """Publish a stored ack; False (and the row kept for later) if the broker is unavailable."""
    try:
        publisher.publish(ack)
    except BrokerError as exc:
        log.warning("ack %s not yet published, will retry: %s", ack.ack_id, exc)
        return False
    store.mark_published(ack.ack_id, now)
    return True


def publish_pending(store: InboxStore, publishers: Mapping[str, AckPublisher],
                    clock: Callable[[], int]) -> int:
    """Publish every stored ack not yet acknowledged by the broker, each with its own hub's
    publisher; return how many went. A hub whose publication fails is left for the next round
    (its later acks too, to keep their order); the other hubs' go on. Rows of a hub this
    process does not serve are left for the process that does."""
    sent = 0
    try:
        rows = store.unpublished_acks(agencies=set(publishers))
    except StoreError as exc:
        log.warning("cannot read unpublished acks: %s", exc)
        return 0
    stalled: set[str] = set()
    for row in rows:
        publisher = publishers.get(row.agency_id)
        if publisher is None or row.agency_id in stalled:
            continue
        if not publish_one(store, publisher, ack_from_row(row), clock()):
            stalled.add(row.agency_id)
            continue
        sent += 1
    return sent
