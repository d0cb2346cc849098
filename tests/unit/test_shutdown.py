"""SIGINT and SIGTERM ask a service to stop by setting its Event (safehub.shutdown)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from safehub.shutdown import stop_on_signals


@pytest.fixture(autouse=True)
def _restored_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_sets_the_stop_event(signum: int) -> None:
    stop = stop_on_signals()
    assert not stop.is_set()
    signal.raise_signal(signum)
    assert stop.is_set()


def test_a_given_event_is_the_one_set() -> None:
    mine = threading.Event()
    assert stop_on_signals(mine) is mine
    signal.raise_signal(signal.SIGTERM)
    assert mine.is_set()
