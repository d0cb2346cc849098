"""Acknowledgements and decisions: stored first (an outbox row), then published to the acting
hub's `alert-acks.<hub>` for the router, as that hub's principal. A row whose publication failed
is published later by `publish_pending` with the publisher of the row's hub, so a decision is
never lost to a broker outage and never sent with another hub's credentials. `republish` runs
those rounds on the web service's outbox thread, which must outlive any store or broker error:
if it died, every ack stored during an outage would stay unpublished and its alert escalate."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
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
    try:
        store.mark_published(ack.ack_id, now)
    except StoreError as exc:
        # Published but not marked: the next round sends it again, and a second copy of an
        # ack changes nothing at the router (the status it sets is already set). Reported as
        # sent, because it was.
        log.warning("ack %s published but not yet marked so: %s", ack.ack_id, exc)
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
        try:
            ack = ack_from_row(row)
        except ValueError:
            # A row no longer in the vocabulary can never be sent; it must not hold back the
            # acks of every other alert. The id is ours (a random hex ack id), not a person's.
            log.error("ack %s cannot be read back (not in the vocabulary): skipped", row.ack_id)
            continue
        if not publish_one(store, publisher, ack, clock()):
            stalled.add(row.agency_id)
            continue
        sent += 1
    return sent


def republish(stop: threading.Event, rounds: Sequence[Callable[[], object]],
              every_s: float = 5.0) -> None:
    """Run each round every `every_s` seconds until `stop`, whatever a round raises.

    A round that fails is logged (its error's class only: a library's message may quote row
    values) and tried again next time; the other rounds still run.
    """
    while not stop.wait(every_s):
        for round_ in rounds:
            try:
                round_()
            except Exception as exc:  # noqa: BLE001 - this thread must not die
                log.warning("outbox round failed (%s); retrying in %.0fs",
                            type(exc).__name__, every_s)
