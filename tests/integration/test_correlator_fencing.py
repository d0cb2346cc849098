"""A correlator worker restarted with the same SAFEHUB_CORRELATOR_WORKER_ID ends what its
predecessor left (outputs.py): an open transaction is aborted at once, not after the broker's
transaction timeout, and a predecessor still running (a zombie) can commit nothing more.

The predecessor is a process of its own (fenced_worker.py), killed or paused as a real worker
would be. Every worker here is the `correlator` principal of a secure namespace, with its ACLs'
transactional ids (`<prefix>correlator-...`) and topics; test readers are the admin."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from safehub.connection import KafkaConnection
from safehub.services.correlator.outputs import (
    TRANSACTION_TIMEOUT_MS,
    OutputWriter,
    fence,
    transactional_id,
)
from safehub.topics import changelog_topic, correlator_group
from tests.conftest import Namespace
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration
# Without the fencing, committed readers wait for the broker to time the transaction out:
# TRANSACTION_TIMEOUT_MS at least (10-20 s measured).
PROMPTLY_S = TRANSACTION_TIMEOUT_MS / 1000 / 2


class Topics:
    """The correlator's output topics in a secure namespace, and a worker's transactional id."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.correlator = ns.connection("correlator")
        self.admin = ns.kafka
        self.correlated, self.audit = ns.correlated, ns.audit
        self.states = changelog_topic(ns.prefix)
        self.tid = transactional_id(correlator_group(ns.prefix), "w1")


@pytest.fixture
def topics(secure_namespace: Callable[..., Namespace]) -> Topics:
    return Topics(secure_namespace(agencies={"police-a": "POLICE"}, hubs=["csc-a"]))


@pytest.fixture
def spawn(topics: Topics) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    made: list[subprocess.Popen[str]] = []
    env = {**os.environ, **topics.ns.env("correlator")}

    def start(*args: str, first_line: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-m", "tests.integration.fenced_worker", *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                env=env)
        made.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == first_line
        return proc

    yield start
    for proc in made:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait(30)


def restart(topics: Topics, value: bytes) -> float:
    """Fence as a restarted worker does, then write `value`; returns when fencing began."""
    kafka = topics.correlator

    async def run() -> None:
        await fence(kafka, "test", topics.tid)
        writer = OutputWriter(kafka, "test", topics.correlated, topics.audit, topics.tid)
        await writer.write([], [value], topics.states, [])
        await writer.close()

    started = time.monotonic()
    asyncio.run(run())
    return started


def committed(kafka: KafkaConnection, topic: str, expected: int,
              timeout_s: float = 30) -> list[bytes]:
    """What a committed reader sees on `topic`, once it sees `expected` records or times out."""
    reader = TopicReader(kafka, topic)
    deadline = time.monotonic() + timeout_s
    while len(reader.poll()) < expected and time.monotonic() < deadline:
        pass
    return [r.value for r in reader.poll()]


def answer(proc: subprocess.Popen[str], line: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


@pytest.mark.timeout(120)
def test_a_restarted_worker_aborts_its_killed_predecessors_transaction_at_once(
    topics: Topics, spawn
) -> None:
    predecessor = spawn("open", topics.audit, topics.tid, first_line="open")
    predecessor.kill()  # mid-transaction, as a SIGKILL mid-batch leaves it
    predecessor.wait(30)
    started = restart(topics, b"after the restart")
    seen = committed(topics.admin, topics.audit, 1)
    waited = time.monotonic() - started
    assert seen == [b"after the restart"]
    assert waited < PROMPTLY_S, f"committed readers waited {waited:.1f} s"


@pytest.mark.timeout(120)
def test_a_paused_predecessor_is_fenced_off_and_cannot_commit_when_it_resumes(
    topics: Topics, spawn
) -> None:
    zombie = spawn("open", topics.audit, topics.tid, first_line="open")
    zombie.send_signal(signal.SIGSTOP)  # a long pause: the group has moved on without it
    started = restart(topics, b"after the restart")
    assert committed(topics.admin, topics.audit, 1) == [b"after the restart"]
    assert time.monotonic() - started < PROMPTLY_S
    zombie.send_signal(signal.SIGCONT)
    assert answer(zombie, "commit") == "fenced"
    assert committed(topics.admin, topics.audit, 2, timeout_s=3) == [b"after the restart"]


@pytest.mark.timeout(120)
def test_a_worker_fenced_by_another_with_its_id_refuses_to_write_and_says_why(
    topics: Topics, spawn
) -> None:
    first = spawn("writer", topics.correlated, topics.audit, topics.states, topics.tid,
                  first_line="ready")
    restart(topics, b"second")
    refused = answer(first, "from the fenced worker")
    assert refused.startswith("refused: ") and "SAFEHUB_CORRELATOR_WORKER_ID" in refused
    assert committed(topics.admin, topics.audit, 2) == [b"first", b"second"]


def test_without_a_worker_id_every_process_has_its_own_transactional_id() -> None:
    assert transactional_id("app", None) != transactional_id("app", None)
    assert transactional_id("app", "w1") == transactional_id("app", "w1") == "app-worker-w1"
