"""A producer that stops settling records must not stop the agency's publisher (fault run M,
session 26: kafka-python 3.0.12 left 1,133 records neither acknowledged nor failed for 240 s
while brokers were killed). The batch reports them undelivered, to be sent again, after the
producer's own delivery timeout and a margin; the publisher then goes on with a new producer.

The stuck producer is a stand-in: the state cannot be produced on demand with a real broker.
What is under test is the publisher's bound and its replacement of the producer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from safehub.producers.publisher import DeliveryReport, Publisher, Undelivered
from safehub.producers.vault import Vault
from safehub.samples.children import KEY, children, sign_records
from safehub.schemas.vocabulary import Sector


class _Future:
    def __init__(self, meta: Any = None) -> None:
        self.is_done = meta is not None
        self._meta = meta

    def get(self, timeout: float) -> Any:
        assert self.is_done
        return self._meta


class _Meta:
    def __init__(self, topic: str, offset: int) -> None:
        self.topic, self.partition, self.offset = topic, 0, offset


class _Producer:
    def __init__(self, settles: bool) -> None:
        self.settles = settles
        self.config = {"delivery_timeout_ms": 1_000}
        self.flushed_with: list[float | None] = []
        self.closed_with: list[float | None] = []
        self.sent = 0

    def send(self, topic: str, key: bytes, value: bytes) -> _Future:
        self.sent += 1
        return _Future(_Meta(topic, self.sent) if self.settles else None)

    def flush(self, timeout: float | None = None) -> None:
        self.flushed_with.append(timeout)
        if not self.settles:
            raise KafkaTimeoutError("Timeout waiting for future")

    def close(self, timeout: float | None = None) -> None:
        self.closed_with.append(timeout)


@pytest.fixture
def vault(tmp_path: Path) -> Any:
    v = Vault.open(f"sqlite:///{tmp_path / 'vault.db'}")
    yield v
    v.close()


def test_a_stuck_producer_gives_undelivered_records_and_is_replaced(vault: Vault) -> None:
    stuck, fresh = _Producer(settles=False), _Producer(settles=True)
    made: list[_Producer] = []

    def renew() -> Any:
        made.append(fresh)
        return fresh

    records = sign_records(children(5, seed=3), "POL")
    publisher = Publisher(stuck, vault, KEY, "police-stuck", Sector.POLICE,  # type: ignore[arg-type]
                          batch_size=10, renew=renew)
    first = publisher.publish_many(records)
    # Bounded by the producer's delivery timeout (1 s here) and the margin, not for ever.
    assert stuck.flushed_with and stuck.flushed_with[0] is not None
    assert all(isinstance(o, Undelivered) and "not settled" in o.reason for o in first)
    assert made == [fresh] and publisher.producer is fresh
    deadline = time.monotonic() + 5
    while not stuck.closed_with and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stuck.closed_with == [0]  # closed on the side, without waiting for its IO thread
    again = publisher.publish_many(records)
    assert all(isinstance(o, DeliveryReport) for o in again)
    # The same events, sent again: their ids do not change.
    assert [o.event_id for o in again] == [o.event_id for o in first]


def test_without_a_way_to_renew_the_callers_producer_is_kept(vault: Vault) -> None:
    stuck = _Producer(settles=False)
    records = sign_records(children(2, seed=4), "POL")
    publisher = Publisher(stuck, vault, KEY, "police-stuck", Sector.POLICE)  # type: ignore[arg-type]
    outcomes = publisher.publish_many(records)
    assert all(isinstance(o, Undelivered) for o in outcomes)
    assert publisher.producer is stuck and stuck.closed_with == []
