"""The web service's ack outbox under store and broker errors (issue 21, "Hub inbox"): the retry
thread must outlive every failing round, or acknowledged alerts escalate anyway."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from safehub.consumers.inbox.models import InboxAck
from safehub.errors import BrokerError, StoreError
from safehub.schemas.records import AlertAck
from safehub.services.web.acks import publish_pending, republish

HUB = "csc-leeds"


def row(n: int, action: str = "ACKNOWLEDGED") -> InboxAck:
    return InboxAck(ack_id=f"{n:032x}", notification_id="a" * 32, alert_id="b" * 32,
                    agency_id=HUB, user_ref="c" * 32, action=action, decision=None, at=n,
                    lawful_basis=None, rationale=None, published_at=None)


class FlakyStore:
    """An outbox whose reads and marks fail while `down` is set, as a database outage does."""

    def __init__(self, rows: list[InboxAck]) -> None:
        self.rows = rows
        self.down = False
        self.marked: list[str] = []

    def unpublished_acks(self, limit: int = 100,
                         agencies: Collection[str] | None = None) -> list[InboxAck]:
        if self.down:
            raise StoreError("inbox database: OperationalError")
        return [r for r in self.rows if r.ack_id not in self.marked]

    def mark_published(self, ack_id: str, at: int) -> None:
        if self.down:
            raise StoreError("inbox database: OperationalError")
        self.marked.append(ack_id)


class Publisher:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.fail_next = 0
        self.after_send: Callable[[], None] = lambda: None

    def publish(self, ack: AlertAck) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise BrokerError("ack not acknowledged: KafkaTimeoutError")
        self.sent.append(ack.ack_id)
        self.after_send()


def test_a_store_error_marking_an_ack_does_not_escape_the_round() -> None:
    store, publisher = FlakyStore([row(1), row(2)]), Publisher()

    def database_goes_down() -> None:
        store.down = True

    publisher.after_send = database_goes_down  # published, then the mark fails
    assert publish_pending(store, {HUB: publisher}, lambda: 0) == 2  # type: ignore[arg-type]
    assert store.marked == []
    store.down = False
    publisher.after_send = lambda: None
    publish_pending(store, {HUB: publisher}, lambda: 0)  # type: ignore[arg-type]
    assert store.marked == [row(1).ack_id, row(2).ack_id]  # sent again, then marked


def test_an_unreadable_row_does_not_hold_back_the_others() -> None:
    store, publisher = FlakyStore([row(1, action="NO-SUCH-ACTION"), row(2)]), Publisher()
    assert publish_pending(store, {HUB: publisher}, lambda: 0) == 1  # type: ignore[arg-type]
    assert publisher.sent == [row(2).ack_id]


def test_the_outbox_thread_survives_store_and_broker_errors() -> None:
    store, publisher = FlakyStore([row(1)]), Publisher()
    store.down = True
    calls = {"other": 0}

    def other_round() -> Any:
        calls["other"] += 1
        if calls["other"] <= 2:  # a round raising what no one planned for
            raise RuntimeError("unexpected")
        return 0

    def ack_round() -> int:
        return publish_pending(store, {HUB: publisher}, lambda: 0)  # type: ignore[arg-type]

    def marking_fails() -> None:
        raise StoreError("inbox database: OperationalError")

    stop = threading.Event()
    thread = threading.Thread(target=republish, args=(stop, [marking_fails, ack_round,
                                                             other_round], 0.01), daemon=True)
    thread.start()
    try:
        time.sleep(0.1)  # several rounds with the database down and a round raising
        assert thread.is_alive()
        publisher.fail_next = 3  # then the broker is away
        store.down = False
        deadline = time.monotonic() + 5
        while store.marked != [row(1).ack_id]:
            assert time.monotonic() < deadline, "the ack was never published"
            assert thread.is_alive(), "the outbox thread died"
            time.sleep(0.01)
        assert publisher.sent == [row(1).ack_id] and calls["other"] > 2
    finally:
        stop.set()
        thread.join(2)
    assert not thread.is_alive()
