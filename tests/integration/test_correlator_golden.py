"""The golden scenarios through the running correlator (`safehub correlator`, a real faust worker)
on the real broker: the alerts on `correlated` are identical to the pure core's.

Each scenario gets its own linkage block; rows are produced round by round (row r of every
scenario, then wait until the correlator has journalled them), so the processor sees each
block's events in the table's order even though they arrive on different agencies' topics.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from safehub.bus import make_consumer, make_producer, send_all
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import AuditEntry, CorrelatedAlert, IngressEvent
from safehub.schemas.vocabulary import AuditAction
from safehub.services.correlation.core import initial_state, step
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from safehub.services.correlator.command import READY
from tests.golden.scenarios import all_scenarios, describe

pytestmark = pytest.mark.integration
PARTITIONS = 3


class Correlator:
    """`safehub correlator` as a child process, as the demo and an operator run it."""

    def __init__(self, bootstrap: str, prefix: str, workdir: Path, **env: str) -> None:
        self.log = workdir / "correlator.log"
        self.env = {
            **os.environ,
            "SAFEHUB_KAFKA_BOOTSTRAP": bootstrap,
            "SAFEHUB_TOPIC_PREFIX": prefix,
            "SAFEHUB_CORRELATOR_PARTITIONS": str(PARTITIONS),
            "SAFEHUB_CORRELATOR_DATA_DIR": str(workdir / "data"),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready_before = 0  # "ready" lines in the log before the latest start

    def start(self) -> None:
        self._ready_before = self._readies()
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "safehub.cli", "correlator"], env=self.env,
            stdout=out, stderr=subprocess.STDOUT)

    def _readies(self) -> int:
        return self.log.read_text(errors="replace").count(READY) if self.log.exists() else 0

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> int:
        """Stop the worker gracefully, once it is running: a SIGTERM that comes before faust
        has installed its signal handlers (say, right after a restart whose work was already
        done) kills the process instead."""
        assert self.proc is not None
        deadline = time.monotonic() + 120
        while self._readies() == self._ready_before and self.proc.poll() is None:
            assert time.monotonic() < deadline, "the correlator never finished starting"
            time.sleep(0.1)
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def partitions_of(consumer: KafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions; a topic created a moment ago may not be in the metadata yet."""
    deadline = time.monotonic() + 30
    while not (parts := consumer.partitions_for_topic(topic)):
        assert time.monotonic() < deadline, f"topic {topic} has no partitions"
        time.sleep(0.1)
        consumer.topics()  # refreshes the metadata
    return [TopicPartition(topic, p) for p in sorted(parts)]


class TopicReader:
    """Reads whole topics from the beginning, remembering its position between calls."""

    def __init__(self, bootstrap: str, *topics: str) -> None:
        self.consumer: KafkaConsumer = make_consumer(bootstrap, None, client_id="test-reader")
        self.consumer.assign([tp for t in topics for tp in partitions_of(self.consumer, t)])
        self.consumer.seek_to_beginning()
        self.records: list = []
        self._decoded: list = []

    def poll(self) -> list:
        for batch in self.consumer.poll(timeout_ms=200).values():
            self.records.extend(batch)
        return self.records

    def decoded(self, record_type: type) -> list:
        """poll(), each record decoded as `record_type` (once: waits call this many times)."""
        self.poll()
        self._decoded += [decode(r.value, record_type)
                          for r in self.records[len(self._decoded):]]
        return self._decoded

    def read_to_end(self, timeout_s: float = 60.0) -> list:
        """Everything on the topics up to their end offsets as of this call. One poll may
        return only part of what is there (a fetch per partition, up to a size), so a check of
        a whole topic reads to the end offsets instead."""
        ends = self.consumer.end_offsets(sorted(self.consumer.assignment()))
        assert ends, "the reader has no partitions"
        deadline = time.monotonic() + timeout_s
        while any(self.consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, f"topic not read to {ends} in {timeout_s} s"
            self.poll()
        return self.records

    def close(self) -> None:
        self.consumer.close()


def wait_until(what: str, done: Callable[[], bool], timeout: float, proc: Correlator) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if not proc.alive():
            raise AssertionError(f"correlator exited while waiting for {what}: "
                                 f"{proc.log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {proc.log.read_text()[-3000:]}")
        time.sleep(0.05)


def audit_entries(reader: TopicReader) -> list[AuditEntry]:
    return reader.decoded(AuditEntry)


def accepted_count(reader: TopicReader) -> int:
    """EVENT_ACCEPTED entries so far (each event's; ALERT_EMITTED entries are not counted)."""
    return sum(e.action is AuditAction.EVENT_ACCEPTED for e in audit_entries(reader))


@pytest.fixture
def prefix(topic_names: Callable[[str], str]) -> str:
    return topic_names("")


@pytest.fixture
def correlator_factory(kafka_bootstrap: str, prefix: str,
                       tmp_path: Path) -> Iterator[Callable[..., Correlator]]:
    made: list[Correlator] = []

    def make(**env: str) -> Correlator:
        c = Correlator(kafka_bootstrap, prefix, tmp_path, **env)
        made.append(c)
        return c

    yield make
    for c in made:
        if c.alive():
            c.kill()


def ingress_message(prefix: str, event: IngressEvent) -> tuple[str, bytes, bytes, None]:
    key = event.subject.linkage_block.to_bytes(4, "big")
    return (f"{prefix}ingress.{event.agency_id}", key, encode(event), None)


@pytest.mark.timeout(240)
def test_golden_scenarios_through_the_processor_give_the_cores_alerts(
    kafka_bootstrap: str, prefix: str, create_topics_fn, correlator_factory
) -> None:
    rules = load_rules(DEFAULT_RULES_PATH)
    scenarios = all_scenarios(first_block=5000, spread=7)
    agencies = sorted({r.agency for s in scenarios for r in s.rows})
    create_topics_fn(*(f"{prefix}ingress.{a}" for a in agencies), f"{prefix}correlated",
                     partitions=PARTITIONS)
    create_topics_fn(f"{prefix}audit", f"{prefix}deadletter")

    expected: dict[str, list[CorrelatedAlert]] = {}
    for s in scenarios:
        state = initial_state()
        emitted = []
        for row in s.rows:
            state, alerts = step(rules, state, row.event)
            emitted.extend((row.number, a) for a in alerts)
        assert describe(s, emitted) == list(s.expected), s.name
        expected[s.name] = [a for _, a in emitted]

    correlator = correlator_factory()
    correlator.start()
    producer = make_producer(kafka_bootstrap, "test-golden")
    audit = TopicReader(kafka_bootstrap, f"{prefix}audit")
    correlated = TopicReader(kafka_bootstrap, f"{prefix}correlated")
    deadletter = TopicReader(kafka_bootstrap, f"{prefix}deadletter")
    try:
        sent = 0
        for r in range(max(len(s.rows) for s in scenarios)):
            batch = [ingress_message(prefix, s.rows[r].event) for s in scenarios
                     if r < len(s.rows)]
            send_all(producer, batch)
            sent += len(batch)
            wait_until(f"round {r} journalled",
                       lambda n=sent: accepted_count(audit) >= n, 90, correlator)
        # A message that is not an event goes to the dead-letter topic, with its reason.
        send_all(producer, [(f"{prefix}ingress.{agencies[0]}", b"\0\0\0\1", b"not avro", None)])
        wait_until("dead letter", lambda: len(deadletter.poll()) >= 1, 60, correlator)
        total = sum(len(v) for v in expected.values())
        wait_until("alerts", lambda: len(correlated.poll()) >= total, 60, correlator)
        assert correlator.stop() == 0
        records = correlated.read_to_end()
        audit.read_to_end()
    finally:
        producer.close()

    # The same alerts, value for value, in the same order for each child.
    got: dict[int, list[CorrelatedAlert]] = defaultdict(list)
    for rec in sorted(records, key=lambda r: (r.partition, r.offset)):
        alert = decode(rec.value, CorrelatedAlert)
        assert rec.key == alert.cluster_id.encode("ascii")
        got[alert.linkage_block].append(alert)
    for s in scenarios:
        block = s.rows[0].event.subject.linkage_block
        mine = got.pop(block, [])
        by_cluster = lambda alerts: {  # noqa: E731
            c: [a for a in alerts if a.cluster_id == c] for c in {a.cluster_id for a in alerts}}
        assert by_cluster(mine) == by_cluster(expected[s.name]), s.name
    assert not got

    entries = audit_entries(audit)
    actions = Counter(e.action for e in entries)
    assert actions[AuditAction.EVENT_ACCEPTED] == sent
    assert actions[AuditAction.ALERT_EMITTED] == len(records)
    assert actions[AuditAction.EVENT_DEADLETTERED] == 1
    dead = deadletter.poll()[0]
    assert dict(dead.headers)["safehub.error.class"] == b"ValidationError"
    assert dead.value == b"not avro"
    for reader in (audit, correlated, deadletter):
        reader.close()
