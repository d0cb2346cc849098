"""The hub inbox store's contract, on SQLite and PostgreSQL alike: a notification is stored
once, every read is scoped by the receiving hub, the queue pages neither repeat nor skip a row,
and acks wait in the outbox until the broker has them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from safehub.consumers.inbox.database import make_engine, migrate
from safehub.consumers.inbox.store import InboxStore, QueueFilter
from safehub.errors import StoreError
from safehub.schemas.codec import encode
from safehub.schemas.records import AlertAck, RoutedAlert
from safehub.schemas.vocabulary import AckAction, Decision, LawfulBasis, RouteReason, Tier
from tests.contract.samples import AT, correlated

pytestmark = pytest.mark.integration

HUB, OTHER = "csc-leeds", "csc-bradford"
HOUR = 3_600_000


def routed(n: int, hub: str = HUB, **alert: object) -> tuple[RoutedAlert, bytes]:
    r = RoutedAlert(hashlib.sha256(f"{n}|{hub}".encode()).hexdigest()[:32],
                    correlated(n, n, **alert),  # type: ignore[arg-type]
                    hub, "E08000035", RouteReason.RESPONSIBLE_AUTHORITY, 0, AT + n * HOUR)
    return r, encode(r)


def ack(r: RoutedAlert, n: int, action: AckAction = AckAction.ACKNOWLEDGED) -> AlertAck:
    decided = action is AckAction.DECIDED
    return AlertAck(f"{n:032x}", r.alert.alert_id, r.receiver_agency, "sw-1", action,
                    Decision.STRATEGY_MEETING if decided else None, AT + n,
                    LawfulBasis.DPA_SCH8_PARA4_SAFEGUARDING if decided else None)


@pytest.fixture
def store(store_url: str) -> Iterator[InboxStore]:
    s = InboxStore(make_engine(store_url))
    migrate(s.engine)
    yield s
    s.engine.dispose()


def test_a_notification_is_stored_once(store: InboxStore) -> None:
    batch = [routed(1), routed(2), routed(1)]
    assert store.save(batch, AT) == 2
    assert store.save(batch, AT) == 0  # a redelivery
    assert store.count() == 2 and store.count(HUB) == 2 and store.count(OTHER) == 0


def test_an_alert_is_read_only_by_the_hub_it_was_sent_to(store: InboxStore) -> None:
    r, raw = routed(1)
    store.save([(r, raw)], AT)
    row = store.alert(HUB, r.notification_id)
    assert row is not None
    assert row.alert_id == r.alert.alert_id and row.digest == hashlib.sha256(raw).digest()
    assert [e.event_id for e in row.evidence] == [e.event_id for e in r.alert.evidence]
    assert [x.reid_handle for x in row.reidentification] == ["f" * 32]
    assert store.alert(OTHER, r.notification_id) is None
    with pytest.raises(StoreError):
        store.record_ack(r.notification_id, ack(routed(1, OTHER)[0], 1))


def test_queue_pages_neither_repeat_nor_skip(store: InboxStore) -> None:
    # Equal raise times: only the id orders them, and that must be the same on both backends.
    store.save([routed(n, raised_at=AT) for n in range(23)], AT)
    store.save([routed(99, OTHER)], AT)
    seen = []
    for page in range(1, 4):
        p = store.queue_page(HUB, QueueFilter(), AT, page, 10)
        assert p.total == 23
        seen += [row.notification_id for row in p.rows]
    assert len(seen) == len(set(seen)) == 23
    assert seen == sorted(seen)


def test_queue_filters(store: InboxStore) -> None:
    store.save([routed(1, tier=Tier.HIGH, age_years=9), routed(2, age_years=15), routed(3)], AT)
    assert [r.tier for r in store.queue(HUB, QueueFilter(tier="HIGH"), AT)] == ["HIGH"]
    assert [r.age_years for r in store.queue(HUB, QueueFilter(max_age=10), AT)] == [9]
    overdue = store.queue(HUB, QueueFilter(overdue=True), AT + 2 * HOUR)
    assert sorted(r.ack_deadline for r in overdue) == [AT + HOUR, AT + 2 * HOUR]


def test_acks_wait_in_the_outbox_and_move_the_status_on(store: InboxStore) -> None:
    (r1, raw1), (r2, raw2) = routed(1), routed(2)
    store.save([(r1, raw1), (r2, raw2)], AT)
    store.record_ack(r1.notification_id, ack(r1, 1))
    store.record_ack(r2.notification_id, ack(r2, 2, AckAction.DECIDED))
    a1, a2 = store.alert(HUB, r1.notification_id), store.alert(HUB, r2.notification_id)
    assert a1 is not None and a1.status == "ACKNOWLEDGED" and a1.acknowledged_at == AT + 1
    assert a2 is not None and a2.status == "DECIDED" and a2.decided_at == AT + 2
    assert [a.ack_id for a in store.unpublished_acks()] == [f"{1:032x}", f"{2:032x}"]
    assert store.unpublished_acks(agencies=[OTHER]) == []
    store.mark_published(f"{1:032x}", AT + 10)
    store.mark_published("0" * 32, AT + 10)  # an unknown ack is not an error
    assert [a.ack_id for a in store.unpublished_acks()] == [f"{2:032x}"]
    # Decided rows sink to the bottom of the queue.
    assert store.queue(HUB, QueueFilter(), AT)[-1].notification_id == r2.notification_id
