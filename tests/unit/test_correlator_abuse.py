"""The correlator against careless or hostile agencies (issue 21, "Correlator").

Each test is an attack or a careless producer: an agency reusing another agency's event id, a
linkage block no producer makes, a record on a partition other than its key's."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from kafka.partitioner.default import murmur2

from safehub.schemas.codec import decode, encode
from safehub.schemas.records import (
    AuditEntry,
    EpochKeys,
    IngressEvent,
    MatchKeys,
    MissingEpisodeEvent,
)
from safehub.schemas.vocabulary import AuditAction
from safehub.services.audit.replay import ReplayReport, correlator_entries, replay_events
from safehub.services.audit.sharding import contract_decoders
from safehub.services.correlation import snapshot
from safehub.services.correlation.core import (
    MAX_BLOCK_EPOCHS,
    MAX_BLOCK_EVENTS,
    BlockState,
    block_full,
    initial_state,
    standing_alerts,
    step,
    too_late,
)
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from safehub.services.correlator.processing import (
    BatchProcessor,
    BatchResult,
    Incoming,
    block_key,
    partition_for,
)
from tests.golden.scenarios import DAY_MS, EPOCH_MS, all_scenarios

DECODERS = contract_decoders()

RULES = load_rules(DEFAULT_RULES_PATH)
PREFIX = "t."
NOW = EPOCH_MS + 500 * DAY_MS
PARTITIONS = 6


def _rows() -> list[IngressEvent]:
    (scenario,) = [s for s in all_scenarios() if s.name == "exploitation-across-agencies"]
    return [r.event for r in scenario.rows]


def _run(events: list[IngressEvent]) -> BlockState:
    state = initial_state()
    for e in events:
        state, _ = step(RULES, state, e)
    return state


def _message(event: IngressEvent, offset: int, partition: int | None = None,
             key: bytes | None = None) -> Incoming:
    key = block_key(event.subject.linkage_block) if key is None else key
    if partition is None:
        partition = partition_for(key, PARTITIONS)
    return Incoming(f"{PREFIX}ingress.{event.agency_id}", partition, offset, key, encode(event))


def _process(messages: list[Incoming], partitions: int | None = PARTITIONS) -> BatchResult:
    processor = BatchProcessor(RULES, PREFIX, partitions)
    states: dict[int, BlockState] = {}
    return processor.process(messages, lambda b: states.get(b, initial_state()), NOW)


# 1. Duplicates are per sending agency.

def _collision() -> tuple[list[IngressEvent], list[IngressEvent]]:
    """An honest stream, and the same with the school's event preceded by a police event
    that carries the school event's id (the attacker guessed it)."""
    events = _rows()
    school = events[2]
    assert school.agency_id == "school-leeds" and events[1].agency_id == "police-wy"
    attack = replace(events[1], event_id=school.event_id)
    honest = [events[0], events[1], school, *events[3:]]
    hostile = [events[0], attack, school, *events[3:]]
    return honest, hostile


def test_an_event_id_taken_by_another_agency_does_not_suppress_the_event() -> None:
    honest, hostile = _collision()
    fair, attacked = _run(honest), _run(hostile)
    held = sorted((o.agency_id, o.event_id) for c in attacked.clusters for o in c.observations)
    assert len(held) == len(hostile)  # both events with the shared id count
    assert [(a.tier, a.score, a.agencies) for a in standing_alerts(RULES, 1, attacked)] == [
        (a.tier, a.score, a.agencies) for a in standing_alerts(RULES, 1, fair)]


def test_a_true_duplicate_from_the_same_agency_still_counts_once() -> None:
    events = _rows()
    once = _run(events)
    twice = _run([e for e in events for _ in (0, 1)])
    assert twice == once


def test_a_colliding_event_is_never_too_late_as_a_duplicate() -> None:
    _, hostile = _collision()
    state = _run(hostile[:2])
    # The police event holds the school event's id; the school's own event is not held.
    late_school = replace(hostile[2], occurred_at=state.watermark - RULES.lateness_ms - DAY_MS)
    assert too_late(RULES, state, late_school)


def test_a_cross_agency_id_collision_is_reported_and_both_are_accepted() -> None:
    _, hostile = _collision()
    result = _process([_message(e, i) for i, e in enumerate(hostile)])
    assert result.accepted == len(hostile)
    (report,) = result.rejected
    assert report.index == 2 and report.field == "event_id"
    assert "another agency" in report.rule
    audit = [decode(a, AuditEntry) for a in result.audit]
    # Journalled as accepted (replay feeds it), never as dead-lettered.
    assert not [e for e in audit if e.action is AuditAction.EVENT_DEADLETTERED]
    accepted = [(e.subject_id, e.actor) for e in audit if e.action is AuditAction.EVENT_ACCEPTED]
    assert accepted == [(e.event_id, e.agency_id) for e in hostile]


def test_a_collision_within_one_batch_and_a_plain_duplicate_are_told_apart() -> None:
    events = _rows()
    result = _process([_message(e, i) for i, e in enumerate([events[0], events[0]])])
    assert result.rejected == [] and result.accepted == 2


# 2. Linkage blocks out of range.

def test_a_block_beyond_the_producers_range_is_dead_lettered() -> None:
    event = _rows()[0]
    for block in (4096, 2**32 - 1):
        bad = replace(event, subject=replace(event.subject, linkage_block=block))
        result = _process([_message(bad, 0)])
        (rejected,) = result.rejected
        assert rejected.field == "subject.linkage_block" and result.accepted == 0
    good = replace(event, subject=replace(event.subject, linkage_block=4095))
    assert _process([_message(good, 0)]).accepted == 1


def test_the_validation_range_is_the_producers() -> None:
    from safehub.producers.matchkeys import BLOCK_COUNT
    from safehub.schemas.validation import LINKAGE_BLOCKS
    assert LINKAGE_BLOCKS == BLOCK_COUNT


# 3. A record on another partition than its key's.

def test_partition_for_is_kafkas_default_partitioner() -> None:
    for block in (0, 1, 77, 4095):
        key = block_key(block)
        assert partition_for(key, PARTITIONS) == (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
    # The Java client's own vectors (Kafka's UtilsTest.testMurmur2, signed 32-bit results), so
    # the check does not only agree with kafka-python.
    java = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
            b"abc": 479470107}
    for key, signed in java.items():
        assert partition_for(key, 1000) == (signed & 0x7FFFFFFF) % 1000


def test_a_record_on_the_wrong_partition_is_dead_lettered() -> None:
    event = _rows()[0]
    right = partition_for(block_key(event.subject.linkage_block), PARTITIONS)
    wrong = (right + 1) % PARTITIONS
    result = _process([_message(event, 0, partition=wrong)])
    (rejected,) = result.rejected
    assert rejected.field == "partition" and result.accepted == 0
    audit = [decode(a, AuditEntry) for a in result.audit]
    assert [e.action for e in audit] == [AuditAction.EVENT_DEADLETTERED]
    assert _process([_message(event, 1, partition=right)]).accepted == 1


# 4. One block's state is bounded.

def _flood_event(n: int, day: int = 0) -> IngressEvent:
    """A distinct child per event, with every key under two epochs: the most a block's
    state can be made to hold per event."""
    base = _rows()[0]
    keys = MatchKeys(*(hashlib.sha256(f"flood{n}:{k}".encode()).digest() for k in range(4)))
    moved = MatchKeys(*(hashlib.sha256(f"flood{n}:{k}:2".encode()).digest() for k in range(4)))
    subject = replace(base.subject, match_keys=keys,
                      transition_keys=EpochKeys(base.subject.key_epoch + 1, moved))
    at = base.occurred_at + day * DAY_MS
    assert isinstance(base, MissingEpisodeEvent)  # its end moves with it
    return replace(base, event_id=f"{n:032x}", subject=subject, occurred_at=at, reported_at=at,
                   ended_at=at + DAY_MS)


def test_a_flood_into_one_block_is_capped_and_the_state_still_fits_a_record() -> None:
    flood = [_flood_event(n) for n in range(MAX_BLOCK_EVENTS + 50)]
    processor = BatchProcessor(RULES, PREFIX, PARTITIONS)
    states: dict[int, BlockState] = {}
    result = processor.process([_message(e, i) for i, e in enumerate(flood)],
                               lambda b: states.get(b, initial_state()), NOW)
    assert result.accepted == MAX_BLOCK_EVENTS
    assert [r.index for r in result.rejected] == list(range(MAX_BLOCK_EVENTS, len(flood)))
    assert {r.field for r in result.rejected} == {"subject.linkage_block"}
    audit = [decode(a, AuditEntry) for a in result.audit]
    refused = [(e.subject_id, e.actor) for e in audit
               if e.action is AuditAction.EVENT_DEADLETTERED]
    assert refused == [(e.event_id, e.agency_id) for e in flood[MAX_BLOCK_EVENTS:]]
    (state,) = result.states.values()
    data = snapshot.encode(state)
    # Kafka's default largest record (broker message.max.bytes, producers' max request size).
    assert len(data) < 1_000_000
    assert snapshot.decode(data) == state
    # A full block still takes events once its old ones age out: it is not stuck.
    later = _flood_event(10**6, day=RULES.lateness_ms // DAY_MS + 400)
    after = processor.process([_message(later, 0)], lambda b: state, NOW + 400 * DAY_MS)
    assert after.accepted == 1 and after.rejected == []


def test_the_cap_is_the_same_in_step_and_in_replay() -> None:
    state = initial_state()
    for n in range(MAX_BLOCK_EVENTS):
        state, _ = step(RULES, state, _flood_event(n))
    extra = _flood_event(MAX_BLOCK_EVENTS)
    assert block_full(RULES, state, extra)
    assert step(RULES, state, extra) == (state, ())
    # A duplicate of a held event is not refused as over the cap.
    assert not block_full(RULES, state, _flood_event(0))


def test_replay_accepts_a_refusal_over_the_cap_and_matches_the_alerts() -> None:
    flood = [_flood_event(n) for n in range(MAX_BLOCK_EVENTS + 5)]
    messages = [_message(e, i) for i, e in enumerate(flood)]
    result = _process(messages)
    ingress = {hashlib.sha256(m.value or b"").digest(): (m.value or b"", m.key or b"")
               for m in messages}
    entries, _ = correlator_entries(result.audit, DECODERS)
    report = ReplayReport()
    alerts = replay_events(entries, ingress, lambda _: RULES, report, DECODERS)
    assert report.ok, report.differences
    assert report.events_replayed == MAX_BLOCK_EVENTS
    assert [encode(a) for a in alerts] == [v for _, v in result.alerts]


def _true_size(state: BlockState) -> tuple[int, int, frozenset[int]]:
    return (sum(len(c.observations) for c in state.clusters),
            sum(len(c.keys) for c in state.clusters),
            frozenset(k[1] for c in state.clusters for k in c.keys))


def test_the_cached_size_of_a_state_is_its_true_size() -> None:
    streams = [[r.event for r in s.rows] for s in all_scenarios()]
    streams.append([_flood_event(n % 30, day=n // 3) for n in range(120)])  # re-sends, pruning
    _, hostile = _collision()
    streams.append(hostile)
    for stream in streams:
        state = initial_state()
        for e in stream:
            state, _ = step(RULES, state, e)
            assert state.size is None or state.size == _true_size(state)
        assert snapshot.decode(snapshot.encode(state)) == state


def test_a_worker_refuses_to_start_on_ingress_topics_not_co_partitioned() -> None:
    """Every record of an ingress topic with another partition count than the table's would be
    dead-lettered as on the wrong partition: the worker says so at start instead."""
    from safehub.errors import ConfigError
    from safehub.services.correlator.command import check_co_partitioned

    check_co_partitioned({"t.ingress.a": 6, "t.ingress.b": 6}, ["t.ingress.a", "t.ingress.b"], 6)
    with pytest.raises(ConfigError) as err:
        check_co_partitioned({"t.ingress.a": 6, "t.ingress.b": 3},
                             ["t.ingress.a", "t.ingress.b"], 6)
    assert "t.ingress.b" in str(err.value) and "t.ingress.a" not in str(err.value)


def test_a_flood_of_key_epochs_into_one_block_is_capped_before_the_snapshot_overflows() -> None:
    """The snapshot numbers a block's epochs with one byte: 300 epochs used to stop the worker
    (StoreError on every save, then on every restart)."""
    base = _flood_event(0)
    flood = [replace(_flood_event(n), subject=replace(_flood_event(n).subject, key_epoch=n + 10,
                                                      transition_keys=None))
             for n in range(300)]
    assert base.subject.transition_keys is not None
    result = _process([_message(e, i) for i, e in enumerate(flood)])
    assert result.accepted == MAX_BLOCK_EPOCHS
    assert {r.field for r in result.rejected} == {"subject.linkage_block"}
    (state,) = result.states.values()
    assert snapshot.decode(snapshot.encode(state)) == state
