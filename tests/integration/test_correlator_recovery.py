"""Killing the correlator mid-stream (SIGKILL) and restarting it loses no event's effect and
puts no second, different copy of any alert id on `correlated`."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from safehub.connection import KafkaConnection
from safehub.schemas.codec import decode
from safehub.schemas.records import (
    AuditEntry,
    CorrelatedAlert,
    IngressEvent,
    MatchKeys,
    MissingEpisodeEvent,
    Subject,
    WarningSignEvent,
)
from safehub.schemas.vocabulary import (
    AuditAction,
    MissingType,
    Sector,
    Sign,
    SignificantIncident,
    Vulnerability,
)
from safehub.services.correlation.core import BlockState, initial_state, standing_alerts, step
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, Rules, load_rules
from safehub.services.correlator.app import EXIT_UNRECOVERABLE
from tests.conftest import Namespace
from tests.integration.test_correlator_golden import (  # noqa: F401 (fixtures)
    Agencies,
    TopicReader,
    audit_entries,
    correlator_factory,
    correlator_namespace,
    ingress_message,
    wait_until,
)

pytestmark = pytest.mark.integration
AGENCIES = {"police-x": Sector.POLICE, "health-y": Sector.HEALTH, "school-z": Sector.EDUCATION}
DAY = 86_400_000
T0 = 1_780_000_000_000  # June 2026
INDICATORS: list = [*Sign, *list(Vulnerability)[:4], SignificantIncident.ABDUCTION,
                    "MISSING"]


def population(children: int, events_per_child: int, seed: int) -> list[IngressEvent]:
    """Children spread over blocks (several per block), events within 25 days, shuffled.

    Every event carries the child's NHS-number key (so a child is one cluster from its first
    event) plus some of the others; all events fit in the lateness horizon, so the final alerts
    do not depend on the order the processor happens to see them in.
    """
    rnd = random.Random(seed)
    out: list[IngressEvent] = []
    for c in range(children):
        keys = {k: hashlib.sha256(f"{seed}:{c}:{k}".encode()).digest()
                for k in ("mk1", "mk2", "mk3", "mk4")}
        for n in range(events_per_child):
            agency = rnd.choice(sorted(AGENCIES))
            chosen = {"mk1"} | set(rnd.sample(["mk2", "mk3", "mk4"], rnd.randint(0, 3)))
            subject = Subject(MatchKeys(**{k: keys[k] for k in chosen}), 1, c % 97,
                              rnd.randint(11, 16), "E08000035", None,
                              hashlib.md5(f"r{seed}:{c}:{n}".encode()).hexdigest())
            eid = hashlib.md5(f"e{seed}:{c}:{n}".encode()).hexdigest()
            when = T0 + rnd.randint(0, 25 * 24) * 3_600_000
            indicator = rnd.choice(INDICATORS)
            if indicator == "MISSING":
                out.append(MissingEpisodeEvent(eid, agency, AGENCIES[agency], when, when,
                                               subject, when + DAY, MissingType.MISSING, True,
                                               False))
            else:
                out.append(WarningSignEvent(eid, agency, AGENCIES[agency], when, when, subject,
                                            indicator))
    rnd.shuffle(out)
    return out


class Outputs:
    """Readers of a test correlator's audit journal and alerts, from the beginning."""

    def __init__(self, kafka: KafkaConnection, topic_prefix: str) -> None:
        self.audit = TopicReader(kafka, f"{topic_prefix}audit")
        self.correlated = TopicReader(kafka, f"{topic_prefix}correlated")

    def accepted(self) -> set[str]:
        """Ids of the events the correlator has journalled as accepted so far."""
        return {e.subject_id for e in audit_entries(self.audit)
                if e.action == AuditAction.EVENT_ACCEPTED}

    def final(self) -> tuple[list, list[AuditEntry]]:
        """Every alert record and audit entry on the topics (once the correlator has stopped)."""
        self.audit.read_to_end()
        return self.correlated.read_to_end(), audit_entries(self.audit)

    def close(self) -> None:
        self.audit.close()
        self.correlated.close()


def correlator_topics(secure_namespace: Callable[..., Namespace]) -> tuple[Namespace, Outputs]:
    """A namespace with AGENCIES and the correlator's topics and ACLs; readers of its outputs
    (as the admin)."""
    ns = correlator_namespace(secure_namespace, ((a, s.value) for a, s in AGENCIES.items()))
    return ns, Outputs(ns.kafka, ns.prefix)


@pytest.mark.timeout(300)
def test_kill_mid_stream_and_restart_loses_nothing_and_duplicates_no_alert(
    secure_namespace: Callable[..., Namespace],
    correlator_factory: Callable,  # noqa: F811
) -> None:
    rules = load_rules(DEFAULT_RULES_PATH)
    events = population(children=400, events_per_child=12, seed=11)
    ns, out = correlator_topics(secure_namespace)
    prefix = ns.prefix
    producer = Agencies(ns)

    first, second = events[: len(events) * 2 // 3], events[len(events) * 2 // 3:]
    producer.send([ingress_message(prefix, e) for e in first])
    # Small batches, so that the kill lands between many committed and uncommitted ones. A
    # worker id, as a process manager would give: the restarted worker fences its predecessor
    # and takes its place in the group at once (the other recovery test runs anonymous workers).
    correlator = correlator_factory(ns, SAFEHUB_CORRELATOR_BATCH="40",
                                    SAFEHUB_CORRELATOR_WORKER_ID="w1")
    correlator.start()
    # Killed well before the first part is done (4,800 events, 3,200 sent before the kill),
    # however far the correlator runs ahead of this loop's reads on a busy machine.
    wait_until("ten batches", lambda: len(out.accepted()) >= 400, 120, correlator)
    correlator.kill()
    at_kill = len(out.accepted())
    assert at_kill < len(first), "the kill came too late to be mid-stream"
    producer.send([ingress_message(prefix, e) for e in second])
    producer.close()

    restarted = time.monotonic()
    correlator.start()
    wait_until("every event", lambda: len(out.accepted()) == len(events), 180, correlator)
    caught_up = time.monotonic() - restarted
    assert correlator.stop() == 0
    assert correlator.log.read_text().count("earlier processes of this worker fenced off") == 2

    records, entries = out.final()
    refed = check_no_effect_lost(rules, events, records, entries)
    print(f"killed after {at_kill} events; {refed} re-fed after restart; "
          f"{len(records)} alert records; all accepted {caught_up:.1f} s after the restart")
    out.close()


def check_no_effect_lost(rules: Rules, events: list[IngressEvent], records: list,
                         entries: list[AuditEntry]) -> int:
    """The recovery guarantees, checked on what is on the topics; returns how many events the
    journal shows fed twice (redelivered after a crash)."""
    by_id = {e.event_id: e for e in events}
    accepted_ids = {e.subject_id for e in entries if e.action == AuditAction.EVENT_ACCEPTED}
    assert accepted_ids == set(by_id)
    # 1. No second copy a sink would keep: every copy of an alert id is the same alert.
    copies: dict[str, set[bytes]] = defaultdict(set)
    for rec in records:
        copies[decode(rec.value, CorrelatedAlert).alert_id].add(rec.value)
    assert all(len(v) == 1 for v in copies.values())
    alerts = {aid: decode(next(iter(v)), CorrelatedAlert) for aid, v in copies.items()}

    # 2. No event's effect lost. The core's final alerts do not depend on arrival order here,
    # so for every child the highest tier on `correlated` is the tier a clean, uninterrupted
    # run over all events reaches, and the final (standing) alert was emitted at that tier.
    states: dict[int, BlockState] = defaultdict(initial_state)
    for e in events:
        states[e.subject.linkage_block], _ = step(rules, states[e.subject.linkage_block], e)
    checked = 0
    for block, state in states.items():
        for final in standing_alerts(rules, block, state):
            on_topic = [a for a in alerts.values() if a.cluster_id == final.cluster_id]
            assert max(a.tier.rank for a in on_topic) == final.tier.rank
            checked += 1
    assert checked > 50

    # 3. The auditors' replay of the journal (every event in the order the processor fed
    # them, across both runs) raises only alerts that are on the topic.
    replay: dict[int, BlockState] = defaultdict(initial_state)
    replayed: set[str] = set()
    for entry in entries:
        if entry.action == AuditAction.EVENT_ACCEPTED:
            e = by_id[entry.subject_id]
            block = e.subject.linkage_block
            replay[block], raised = step(rules, replay[block], e)
            replayed.update(a.alert_id for a in raised)
    assert replayed <= set(alerts)
    emitted_entries = {e.subject_id for e in entries
                       if e.action == AuditAction.ALERT_EMITTED}
    assert emitted_entries == set(alerts)
    return sum(e.action == AuditAction.EVENT_ACCEPTED for e in entries) - len(events)


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
    secure_namespace: Callable[..., Namespace],
    correlator_factory: Callable,  # noqa: F811
) -> None:
    rules = load_rules(DEFAULT_RULES_PATH)
    events = population(children=300, events_per_child=12, seed=23)
    ns, out = correlator_topics(secure_namespace)
    producer = Agencies(ns)
    producer.send([ingress_message(ns.prefix, e) for e in events])
    producer.close()

    correlator = correlator_factory(ns, SAFEHUB_CORRELATOR_BATCH="40")
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
    check_no_effect_lost(rules, events, *out.final())
    out.close()
