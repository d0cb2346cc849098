"""The golden scenarios through the running correlator (`safehub correlator`, a real faust worker)
on the real, secure broker: the alerts on `correlated` are identical to the pure core's.

The correlator runs as the `correlator` principal with exactly its ACLs, in a namespace of its
own (conftest.secure_namespace); events are published by the agencies' own principals.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from safehub.bus import Headers, make_consumer, make_producer, send_all
from safehub.connection import KafkaConnection
from safehub.schemas.codec import decode, encode
from safehub.schemas.records import AuditEntry, CorrelatedAlert, IngressEvent
from safehub.schemas.vocabulary import AuditAction
from safehub.services.correlation.core import initial_state, step
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from safehub.services.correlator.command import READY
from tests.conftest import Namespace
from tests.golden.scenarios import all_scenarios, describe

pytestmark = pytest.mark.integration
PARTITIONS = 3
HUBS = ["csc-a"]
Message = tuple[str, bytes | None, bytes, Headers | None]


class Correlator:
    """`safehub correlator` as a child process, as the demo and an operator run it: as the
    `correlator` principal of `ns`, with nothing but that principal's rights."""

    def __init__(self, ns: Namespace, workdir: Path, **env: str) -> None:
        self.log = workdir / "correlator.log"
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(("SAFEHUB_KAFKA_", "SAFEHUB_CORRELATOR_"))}
        self.env = {
            **inherited,
            **ns.env("correlator"),
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

    def __init__(self, kafka: KafkaConnection, *topics: str) -> None:
        self.consumer: KafkaConsumer = make_consumer(kafka, None, client_id="test-reader")
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


def handled_count(reader: TopicReader) -> int:
    """Events journalled so far, accepted or dead-lettered."""
    return sum(e.action in (AuditAction.EVENT_ACCEPTED, AuditAction.EVENT_DEADLETTERED)
               for e in audit_entries(reader))


def correlator_namespace(secure_namespace: Callable[..., Namespace],
                         agencies: Iterable[tuple[str, str]]) -> Namespace:
    """A namespace with these (agency, sector) pairs, a hub, and the correlator's topics (its
    ingress topics and table changelog with PARTITIONS partitions), credentials and ACLs."""
    return secure_namespace(agencies=dict(agencies), hubs=HUBS, partitions=PARTITIONS)


@pytest.fixture
def correlator_factory(tmp_path: Path) -> Iterator[Callable[..., Correlator]]:
    made: list[Correlator] = []

    def make(ns: Namespace, **env: str) -> Correlator:
        c = Correlator(ns, tmp_path, **env)
        made.append(c)
        return c

    yield make
    for c in made:
        if c.alive():
            c.kill()


class Agencies:
    """Publishes ingress messages as the agency each topic belongs to (one producer each)."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self._producers: dict[str, KafkaProducer] = {}

    def send(self, messages: Sequence[Message]) -> None:
        by_agency: dict[str, list[Message]] = defaultdict(list)
        ingress = self.ns.topic("ingress.")
        for m in messages:
            assert m[0].startswith(ingress), m[0]
            by_agency[m[0].removeprefix(ingress)].append(m)
        for agency, batch in by_agency.items():
            if agency not in self._producers:
                self._producers[agency] = make_producer(self.ns.connection(agency),
                                                        f"test-{agency}")
            send_all(self._producers[agency], batch)

    def close(self) -> None:
        for producer in self._producers.values():
            producer.close()


def ingress_message(prefix: str, event: IngressEvent) -> Message:
    key = event.subject.linkage_block.to_bytes(4, "big")
    return (f"{prefix}ingress.{event.agency_id}", key, encode(event), None)


@pytest.mark.timeout(240)
def test_golden_scenarios_through_the_processor_give_the_cores_alerts(
    secure_namespace: Callable[..., Namespace], correlator_factory: Callable[..., Correlator],
) -> None:
    rules = load_rules(DEFAULT_RULES_PATH)
    scenarios = all_scenarios(first_block=3000, spread=7)
    ns = correlator_namespace(secure_namespace, {
        (r.event.agency_id, r.event.sector.value) for s in scenarios for r in s.rows})
    prefix = ns.prefix
    agencies = list(ns.registry.agencies)

    expected: dict[str, list[CorrelatedAlert]] = {}
    for s in scenarios:
        state = initial_state()
        emitted = []
        for row in s.rows:
            state, alerts = step(rules, state, row.event)
            emitted.extend((row.number, a) for a in alerts)
        assert describe(s, emitted) == list(s.expected), s.name
        expected[s.name] = [a for _, a in emitted]

    correlator = correlator_factory(ns)
    correlator.start()
    producer = Agencies(ns)
    # The test reads as the admin: it looks at everything, dead letters included.
    audit = TopicReader(ns.kafka, f"{prefix}audit")
    correlated = TopicReader(ns.kafka, f"{prefix}correlated")
    deadletter = TopicReader(ns.kafka, f"{prefix}deadletter")
    # Events beyond the history limit are dead-lettered, not accepted (issue 20).
    late = {s.rows[n - 1].event.event_id for s in scenarios for n in s.deadletters}
    assert late, "the golden scenarios include late events beyond the history limit"
    try:
        sent = 0
        for r in range(max(len(s.rows) for s in scenarios)):
            batch = [ingress_message(prefix, s.rows[r].event) for s in scenarios
                     if r < len(s.rows)]
            producer.send(batch)
            sent += len(batch)
            wait_until(f"round {r} journalled",
                       lambda n=sent: handled_count(audit) >= n, 90, correlator)
        # A message that is not an event goes to the dead-letter topic, with its reason.
        producer.send([(f"{prefix}ingress.{agencies[0]}", b"\0\0\0\1", b"not avro", None)])
        wait_until("dead letter", lambda: len(deadletter.poll()) >= len(late) + 1, 60,
                   correlator)
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
    assert actions[AuditAction.EVENT_ACCEPTED] == sent - len(late)
    assert actions[AuditAction.ALERT_EMITTED] == len(records)
    assert actions[AuditAction.EVENT_DEADLETTERED] == len(late) + 1
    assert late <= {e.subject_id for e in entries
                    if e.action is AuditAction.EVENT_DEADLETTERED}
    assert not late & {e.subject_id for e in entries if e.action is AuditAction.EVENT_ACCEPTED}
    dead_letters = deadletter.poll()
    assert all(dict(d.headers)["safehub.error.class"] == b"ValidationError"
               for d in dead_letters)
    late_letters = [d for d in dead_letters if d.value != b"not avro"]
    assert len(late_letters) == len(late) and len(dead_letters) == len(late) + 1
    for d in late_letters:
        assert decode(d.value).event_id in late
        assert dict(d.headers)["safehub.error.message"].startswith(
            b"occurred_at: is beyond the history limit")
    for reader in (audit, correlated, deadletter):
        reader.close()
