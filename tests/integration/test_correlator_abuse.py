"""The correlator against careless or hostile agencies, on the real broker (issue 21).

Each agency publishes as its own principal. One agency sends an event with another agency's
event id first; one sends a block no producer makes; one writes a record to a partition other
than the one Kafka's default partitioner gives its key. The running correlator accepts both
colliding events and reports the collision, and dead-letters the other two with their reasons.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace

import pytest

from safehub.bus import make_producer
from safehub.consumers.deadletter import HEADER_ERROR_MESSAGE
from safehub.schemas.codec import encode
from safehub.schemas.records import EpochKeys, MatchKeys, Subject, WarningSignEvent
from safehub.schemas.vocabulary import AuditAction, Sector, Sign
from safehub.services.correlation.core import MAX_BLOCK_EVENTS
from safehub.services.correlation.linking import block_key
from safehub.services.correlator.processing import partition_for
from safehub.topics import changelog_topic
from tests.conftest import Namespace
from tests.fixtures.correlator import (
    PARTITIONS,
    Agencies,
    Correlator,
    audit_entries,
    correlator_namespace,
    handled_count,
    ingress_message,
    wait_until,
)
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration
AGENCIES = {"police-h": Sector.POLICE, "school-h": Sector.EDUCATION}
BLOCK = 1234


def _event(agency: str, n: int, block: int = BLOCK) -> WarningSignEvent:
    key = hashlib.sha256(b"abuse test child").digest()
    at = 1_780_000_000_000 + n * 86_400_000
    subject = Subject(MatchKeys(mk1=key), 1, block, 14, "E08000035", None, "c" * 32)
    return WarningSignEvent(hashlib.md5(f"abuse{agency}{n}".encode()).hexdigest(), agency,
                            AGENCIES[agency], at, at, subject, Sign.MISSING_FROM_HOME_OR_CARE)


@pytest.mark.timeout(300)
def test_hostile_and_careless_agencies_on_the_real_broker(
    secure_namespace: Callable[..., Namespace],
    correlator_factory: Callable[..., Correlator],
) -> None:
    ns = correlator_namespace(secure_namespace, ((a, s.value) for a, s in AGENCIES.items()))
    prefix = ns.prefix
    correlator = correlator_factory(ns)
    correlator.start()
    agencies = Agencies(ns)
    audit = TopicReader(ns.kafka, f"{prefix}audit")
    deadletter = TopicReader(ns.kafka, f"{prefix}deadletter")
    school = _event("school-h", 1)
    # The police send first, with the school's event id (ids are predictable).
    attack = replace(_event("police-h", 0), event_id=school.event_id)
    out_of_range = _event("police-h", 2, block=4096)
    misplaced = _event("school-h", 3)
    key = block_key(BLOCK)
    wrong = (partition_for(key, PARTITIONS) + 1) % PARTITIONS
    producer = make_producer(ns.connection("school-h"), "test-misplaced")
    try:
        agencies.send([ingress_message(prefix, attack)])
        wait_until("the attack", lambda: handled_count(audit) >= 1, 120, correlator)
        agencies.send([ingress_message(prefix, school), ingress_message(prefix, out_of_range)])
        producer.send(f"{prefix}ingress.school-h", encode(misplaced), key=key,
                      partition=wrong).get(timeout=30)
        wait_until("every event journalled", lambda: handled_count(audit) >= 4, 120, correlator)
        wait_until("three dead letters", lambda: len(deadletter.poll()) >= 3, 60, correlator)
        assert correlator.stop() == 0
    finally:
        producer.close()
        agencies.close()
    entries = [e for e in audit_entries(audit)
               if e.action in (AuditAction.EVENT_ACCEPTED, AuditAction.EVENT_DEADLETTERED)]
    accepted = [(e.subject_id, e.actor) for e in entries
                if e.action is AuditAction.EVENT_ACCEPTED]
    # Both events with the shared id count; neither suppressed the other.
    assert accepted == [(attack.event_id, "police-h"), (school.event_id, "school-h")]
    assert sum(e.action is AuditAction.EVENT_DEADLETTERED for e in entries) == 2
    reasons = sorted(dict(r.headers)[HEADER_ERROR_MESSAGE].decode()
                     for r in deadletter.read_to_end())
    assert len(reasons) == 3, reasons
    assert any(r.startswith("event_id: is also the id of another agency's event") for r in reasons)
    assert any(r.startswith("subject.linkage_block: must be 0-4095") for r in reasons)
    assert any(r.startswith("partition: is not the partition") for r in reasons)


def _flood_event(n: int) -> WarningSignEvent:
    """A distinct child per event, every key under two epochs: the most state per event."""
    keys = MatchKeys(*(hashlib.sha256(f"flood{n}:{k}".encode()).digest() for k in range(4)))
    moved = MatchKeys(*(hashlib.sha256(f"flood{n}:{k}:2".encode()).digest() for k in range(4)))
    at = 1_780_000_000_000 + n
    subject = Subject(keys, 1, BLOCK, 14, "E08000035", None, f"{n:032x}", EpochKeys(2, moved))
    return WarningSignEvent(f"{n + 1:032x}", "police-h", Sector.POLICE, at, at, subject,
                            Sign.MISSING_FROM_HOME_OR_CARE)


@pytest.mark.timeout(300)
def test_a_flood_into_one_block_is_capped_and_its_state_is_saved_and_recovered(
    secure_namespace: Callable[..., Namespace],
    correlator_factory: Callable[..., Correlator],
) -> None:
    ns = correlator_namespace(secure_namespace, ((a, s.value) for a, s in AGENCIES.items()))
    prefix = ns.prefix
    extra = 40
    flood = [_flood_event(n) for n in range(MAX_BLOCK_EVENTS + extra)]
    agencies = Agencies(ns)
    audit = TopicReader(ns.kafka, f"{prefix}audit")
    changelog = TopicReader(ns.kafka, changelog_topic(prefix))
    correlator = correlator_factory(ns)
    correlator.start()
    try:
        agencies.send([ingress_message(prefix, e) for e in flood])
        wait_until("the flood journalled", lambda: handled_count(audit) >= len(flood), 180,
                   correlator)
        assert correlator.stop() == 0
        # A second worker recovers the full block from the changelog (its largest record).
        again = correlator_factory(ns)
        again.start()
        late = _event("school-h", 5)
        agencies.send([ingress_message(prefix, late)])
        wait_until("an event after the restart", lambda: handled_count(audit) >= len(flood) + 1,
                   120, again)
        assert again.stop() == 0
    finally:
        agencies.close()
    # A redelivered batch journals again under the same entry ids (the sink drops repeats).
    entries = list({e.entry_id: e for e in audit_entries(audit)}.values())
    refused = [e.subject_id for e in entries if e.action is AuditAction.EVENT_DEADLETTERED]
    # Still full after the restart (nothing aged out): the recovered state is the whole block.
    assert refused == [e.event_id for e in flood[MAX_BLOCK_EVENTS:]] + [late.event_id]
    sizes = [len(r.value) for r in changelog.read_to_end() if r.value is not None]
    assert sizes and max(sizes) < 1_000_000
