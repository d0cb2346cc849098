"""A running service writes every thread's stack to its log on SIGUSR1 and goes on (cli.py):
how an operator, or bench/fault_bench.py, finds where a service that stopped making progress
is waiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Namespace

pytestmark = pytest.mark.integration


def _log_says(log: Path, text: str, within_s: float, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def test_a_running_service_dumps_its_threads_on_sigusr1_and_goes_on(
        secure_namespace: Callable[..., Namespace], tmp_path: Path) -> None:
    ns = secure_namespace()  # the project's registry: the routing table's receivers
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHUB_")}
    env = {**inherited, **ns.env("router"), "PYTHONUNBUFFERED": "1",
           "SAFEHUB_ROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'router.db'}"}
    log = tmp_path / "router.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "safehub.cli", "router"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        assert _log_says(log, "router running with", 60, proc), log.read_text()
        proc.send_signal(signal.SIGUSR1)
        assert _log_says(log, "most recent call first", 10, proc), log.read_text()
        text = log.read_text()
        assert "Current thread" in text and "safehub" in text
        time.sleep(1)
        assert proc.poll() is None, "the dump stopped the service"
    finally:
        proc.terminate()
        proc.wait(30)
