"""Killing the correlator mid-stream (SIGKILL) and restarting it loses no event's effect and
puts no second, different copy of any alert id on `correlated`."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from safehub.services.correlator.app import EXIT_UNRECOVERABLE
from tests.fixtures.correlator import Site, check_no_effect_lost, population, wait_until

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_kill_mid_stream_and_restart_loses_nothing_and_duplicates_no_alert(
        correlator_site: Callable[..., Site]) -> None:
    events = population(children=400, events_per_child=12, seed=11)
    site = correlator_site()
    out = site.out

    first, second = events[: len(events) * 2 // 3], events[len(events) * 2 // 3:]
    site.send(first)
    # Small batches, so that the kill lands between many committed and uncommitted ones. A
    # worker id, as a process manager would give: the restarted worker fences its predecessor
    # and takes its place in the group at once (the other recovery test runs anonymous workers).
    correlator = site.correlator(SAFEHUB_CORRELATOR_BATCH="40", SAFEHUB_CORRELATOR_WORKER_ID="w1")
    correlator.start()
    # Killed well before the first part is done (4,800 events, 3,200 sent before the kill),
    # however far the correlator runs ahead of this loop's reads on a busy machine.
    wait_until("ten batches", lambda: len(out.accepted()) >= 400, 120, correlator)
    correlator.kill()
    at_kill = len(out.accepted())
    assert at_kill < len(first), "the kill came too late to be mid-stream"
    site.send(second)

    restarted = time.monotonic()
    correlator.start()
    wait_until("every event", lambda: len(out.accepted()) == len(events), 180, correlator)
    caught_up = time.monotonic() - restarted
    assert correlator.stop() == 0
    assert correlator.log.read_text().count("earlier processes of this worker fenced off") == 2

    records, entries = out.final()
    refed = check_no_effect_lost(events, records, entries)
    print(f"killed after {at_kill} events; {refed} re-fed after restart; "
          f"{len(records)} alert records; all accepted {caught_up:.1f} s after the restart")


def correlation_child(correlator_pid: int) -> int:
    """The pid of the worker's correlation child process (offload.py), once it is running."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                # /proc/<pid>/stat: "pid (name) state ppid ..."; the name may hold spaces.
                ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
                cmdline = (proc / "cmdline").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if ppid == correlator_pid and b"spawn_main" in cmdline:
                return int(proc.name)
        time.sleep(0.1)
    raise AssertionError("the correlator started no correlation child")


def gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status  # exited, not yet reaped by its (killed) parent


@pytest.mark.timeout(300)
def test_a_dead_correlation_child_stops_the_worker_and_a_killed_worker_leaves_no_child(
        correlator_site: Callable[..., Site]) -> None:
    events = population(children=300, events_per_child=12, seed=23)
    site = correlator_site()
    out = site.out
    site.send(events)

    correlator = site.correlator(SAFEHUB_CORRELATOR_BATCH="40")
    correlator.start()
    child = correlation_child(correlator.proc.pid)
    wait_until("a quarter of the events", lambda: len(out.accepted()) >= len(events) // 4, 120,
               correlator)
    os.kill(child, signal.SIGKILL)
    # The worker cannot correlate without its child: it stops at once, committing nothing more.
    assert correlator.proc.wait(30) == EXIT_UNRECOVERABLE
    # Whether the worker was writing to the child or reading from it when it died.
    log = correlator.log.read_text()
    assert "correlation child exited" in log or "correlation child not reachable" in log, log
    at_first_stop = len(out.accepted())
    assert at_first_stop < len(events), "the child was killed too late to be mid-stream"

    correlator.start()
    child = correlation_child(correlator.proc.pid)
    wait_until("half of the events", lambda: len(out.accepted()) >= len(events) // 2, 120,
               correlator)
    correlator.kill()
    deadline = time.monotonic() + 15
    while not gone(child):
        assert time.monotonic() < deadline, "the correlation child outlived its killed worker"
        time.sleep(0.1)

    correlator.start()
    wait_until("every event", lambda: len(out.accepted()) == len(events), 180, correlator)
    assert correlator.stop() == 0
    check_no_effect_lost(events, *out.final())
