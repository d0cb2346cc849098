"""The router stops (exit 75, to be restarted with fresh clients) when its producer neither
acknowledges nor fails a notification well past its delivery timeout, instead of waiting for
ever with its heartbeat beating (services/router/service.py, WEDGED_AFTER_DELIVERY_S).

Seen in the fault run: a router waited 8 minutes after a broker kill, although kafka-python
fails a send once its delivery timeout (120 s) has passed. Such a producer cannot be made on
demand, so this drives the router's wait with a stand-in producer whose flush never finishes:
what is under test is the router's bound, not Kafka's behaviour."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from safehub.consuming import EXIT_TEMPORARY, ServiceStopped
from safehub.services.router import service
from safehub.services.router.service import Router


class NeverDone:
    """A producer whose sends are never acknowledged nor failed."""

    def __init__(self, delivery_timeout_ms: int) -> None:
        self.config = {"delivery_timeout_ms": delivery_timeout_ms}
        self.flushes = 0

    def send(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        return SimpleNamespace(failed=lambda: False)

    def flush(self, timeout: float) -> None:
        self.flushes += 1
        raise KafkaTimeoutError("Timeout waiting for future")


def router_with(producer: NeverDone) -> Any:
    troubles: list[str] = []
    beats: list[str] = []
    return SimpleNamespace(_producer=producer, _trouble=troubles.append, troubles=troubles,
                           watch=SimpleNamespace(heartbeat=SimpleNamespace(beat=beats.append)),
                           beats=beats)


def test_a_producer_stuck_past_its_delivery_timeout_stops_the_router(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "WEDGED_AFTER_DELIVERY_S", 0.2)
    producer = NeverDone(delivery_timeout_ms=0)
    router = router_with(producer)
    with pytest.raises(ServiceStopped) as stopped:
        Router._deliver(router, [("t", b"k", b"v", None)])
    assert stopped.value.exit_code == EXIT_TEMPORARY
    assert "delivery timeout" in str(stopped.value)
    assert producer.flushes >= 2 and router.troubles  # it waited, and said why


def test_within_the_delivery_timeout_the_router_keeps_waiting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "WEDGED_AFTER_DELIVERY_S", 0.0)
    producer = NeverDone(delivery_timeout_ms=60_000)
    router = router_with(producer)
    done = {"flushes": 0}

    def flush(timeout: float) -> None:
        done["flushes"] += 1
        if done["flushes"] < 5:
            raise KafkaTimeoutError("Timeout waiting for future")

    producer.flush = flush  # type: ignore[method-assign]
    Router._deliver(router, [("t", b"k", b"v", None)])  # the broker answered at the 5th wait
    assert done["flushes"] == 5 and len(router.beats) == 4


def test_closing_the_stuck_producer_keeps_the_exit_code_the_router_chose(
        caplog: pytest.LogCaptureFixture) -> None:
    # Fault run H: the router stopped with exit 75 as above, then closing its stuck producer
    # raised kafka-python's KafkaTimeoutError (its close flushes, bounded) out of close(), and
    # the process ended with a traceback and exit 1 instead.
    producer = NeverDone(delivery_timeout_ms=0)
    producer.close = lambda timeout=None: producer.flush(timeout)  # type: ignore[attr-defined]
    router = SimpleNamespace(_consumer=SimpleNamespace(close=lambda: None), _producer=producer)
    Router.close(router)  # type: ignore[arg-type]
    assert producer.flushes == 1
    assert "router: its producer did not close within 10 s" in caplog.text
