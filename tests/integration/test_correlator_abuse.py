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
from tests.fixtures.correlator import PARTITIONS, Site, child_sign, wait_until
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration
AGENCIES = {"police-h": Sector.POLICE, "school-h": Sector.EDUCATION}
BLOCK = 1234


def _event(agency: str, n: int, block: int = BLOCK) -> WarningSignEvent:
    return child_sign("abuse test child", agency, AGENCIES[agency], n, block)


@pytest.mark.timeout(300)
def test_hostile_and_careless_agencies_on_the_real_broker(
        correlator_site: Callable[..., Site]) -> None:
    site = correlator_site(AGENCIES)
    correlator = site.correlator()
    correlator.start()
    out = site.out
    school = _event("school-h", 1)
    # The police send first, with the school's event id (ids are predictable).
    attack = replace(_event("police-h", 0), event_id=school.event_id)
    out_of_range = _event("police-h", 2, block=4096)
    misplaced = _event("school-h", 3)
    key = block_key(BLOCK)
    wrong = (partition_for(key, PARTITIONS) + 1) % PARTITIONS
    producer = make_producer(site.ns.connection("school-h"), "test-misplaced")
    try:
        site.send([attack])
        wait_until("the attack", lambda: out.handled() >= 1, 120, correlator)
        site.send([school, out_of_range])
        producer.send(site.ns.ingress("school-h"), encode(misplaced), key=key,
                      partition=wrong).get(timeout=30)
        wait_until("every event journalled", lambda: out.handled() >= 4, 120, correlator)
        wait_until("three dead letters", lambda: len(out.deadletter.poll()) >= 3, 60,
                   correlator)
        assert correlator.stop() == 0
    finally:
        producer.close()
    entries = [e for e in out.entries()
               if e.action in (AuditAction.EVENT_ACCEPTED, AuditAction.EVENT_DEADLETTERED)]
    accepted = [(e.subject_id, e.actor) for e in entries
                if e.action is AuditAction.EVENT_ACCEPTED]
    # Both events with the shared id count; neither suppressed the other.
    assert accepted == [(attack.event_id, "police-h"), (school.event_id, "school-h")]
    assert sum(e.action is AuditAction.EVENT_DEADLETTERED for e in entries) == 2
    reasons = sorted(dict(r.headers)[HEADER_ERROR_MESSAGE].decode()
                     for r in out.deadletter.read_to_end())
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
        correlator_site: Callable[..., Site]) -> None:
    site = correlator_site(AGENCIES)
    extra = 40
    flood = [_flood_event(n) for n in range(MAX_BLOCK_EVENTS + extra)]
    out = site.out
    changelog = TopicReader(site.ns.kafka, changelog_topic(site.prefix))
    correlator = site.correlator()
    correlator.start()
    site.send(flood)
    wait_until("the flood journalled", lambda: out.handled() >= len(flood), 180, correlator)
    assert correlator.stop() == 0
    # A second worker recovers the full block from the changelog (its largest record).
    again = site.correlator()
    again.start()
    late = _event("school-h", 5)
    site.send([late])
    wait_until("an event after the restart", lambda: out.handled() >= len(flood) + 1, 120,
               again)
    assert again.stop() == 0
    # A redelivered batch journals again under the same entry ids (the sink drops repeats).
    entries = list({e.entry_id: e for e in out.entries()}.values())
    refused = [e.subject_id for e in entries if e.action is AuditAction.EVENT_DEADLETTERED]
    # Still full after the restart (nothing aged out): the recovered state is the whole block.
    assert refused == [e.event_id for e in flood[MAX_BLOCK_EVENTS:]] + [late.event_id]
    sizes = [len(r.value) for r in changelog.read_to_end() if r.value is not None]
    assert sizes and max(sizes) < 1_000_000
