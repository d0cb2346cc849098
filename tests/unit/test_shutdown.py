"""SIGINT and SIGTERM ask a service to stop by setting its Event (safehub.shutdown)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from safehub.shutdown import stop_on_signals, terminate


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


def _child(code: str) -> subprocess.Popen[bytes]:
    # Says "up" once its handlers are set, so that the signal does not beat them.
    child = subprocess.Popen([sys.executable, "-c", f"{code}\nprint('up', flush=True)\n"
                              "import time\ntime.sleep(60)"], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"up\n"
    return child


def test_terminate_stops_a_child_with_sigterm() -> None:
    with _child("") as child:
        assert terminate(child) == -signal.SIGTERM


def test_terminate_kills_a_child_that_outlives_its_grace() -> None:
    with _child("import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)") as child:
        assert terminate(child, grace_s=0.5) == -signal.SIGKILL
