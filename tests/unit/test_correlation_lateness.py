"""Late events through the batch processor (issue 20): counted where they belong within the
history limit; beyond it dead-lettered with the reason and journalled as dead-lettered, never
as accepted. Every golden scenario goes through `BatchProcessor` one message at a time."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from safehub.schemas.codec import decode, encode
from safehub.schemas.records import AuditEntry, CorrelatedAlert
from safehub.schemas.vocabulary import AuditAction
from safehub.services.audit.replay import ReplayReport, correlator_entries, replay_events
from safehub.services.audit.sharding import contract_decoders
from safehub.services.correlation.core import BlockState, initial_state, step, too_late
from safehub.services.correlation.linking import block_key
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from safehub.services.correlator.processing import BatchProcessor, Incoming
from tests.golden.scenarios import DAY_MS, EPOCH_MS, Scenario, all_scenarios, describe

DECODERS = contract_decoders()

RULES = load_rules(DEFAULT_RULES_PATH)
PREFIX = "t."
NOW = EPOCH_MS + 500 * DAY_MS
SCENARIOS = all_scenarios()


def _through_processor(scenario: Scenario) -> tuple[list[tuple[int, CorrelatedAlert]],
                                                     list[tuple[int, str]], list[AuditEntry]]:
    processor = BatchProcessor(RULES, PREFIX)
    states: dict[int, BlockState] = {}
    emitted: list[tuple[int, CorrelatedAlert]] = []
    dead: list[tuple[int, str]] = []
    audit: list[AuditEntry] = []
    for offset, row in enumerate(scenario.rows):
        e = row.event
        message = Incoming(f"{PREFIX}ingress.{e.agency_id}", 0, offset,
                           block_key(e.subject.linkage_block), encode(e))
        result = processor.process(
            [message], lambda b: states.get(b, initial_state()), NOW)
        states.update(result.states)
        emitted += [(row.number, decode(v, CorrelatedAlert)) for _, v in result.alerts]
        dead += [(row.number, str(r.error())) for r in result.rejected]
        audit += [decode(a, AuditEntry) for a in result.audit]
    return emitted, dead, audit


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_golden_scenarios_through_the_processor(scenario: Scenario) -> None:
    emitted, dead, audit = _through_processor(scenario)
    assert describe(scenario, emitted) == list(scenario.expected)
    assert [n for n, _ in dead] == list(scenario.deadletters)
    for _, reason in dead:
        assert reason.startswith("occurred_at: is beyond the history limit (30 days")
    accepted = [e for e in audit if e.action is AuditAction.EVENT_ACCEPTED]
    refused = [e for e in audit if e.action is AuditAction.EVENT_DEADLETTERED]
    by_number = {r.number: r.event for r in scenario.rows}
    assert [e.subject_id for e in accepted] == [r.event.event_id for r in scenario.fed()]
    assert [(e.subject_id, e.actor) for e in refused] == [
        (by_number[n].event_id, by_number[n].agency_id) for n in scenario.deadletters]


def test_there_are_late_scenarios_within_and_beyond_the_limit() -> None:
    late = [s for s in SCENARIOS if s.deadletters]
    assert {s.name for s in late} >= {"late-batch", "history-backfill"}


def test_too_late_matches_what_step_ignores() -> None:
    (scenario,) = [s for s in SCENARIOS if s.name == "history-backfill"]
    state = initial_state()
    for row in scenario.rows:
        late = too_late(RULES, state, row.event)
        assert late == (row.number in scenario.deadletters)
        after, alerts = step(RULES, state, row.event)
        if late:
            assert after == state and alerts == ()
        state = after
    # A duplicate of a held event is never too late, however old.
    first = scenario.rows[2].event  # day 30, held
    assert not too_late(RULES, state, first)


def _journal(scenario: Scenario) -> tuple[list[AuditEntry], dict[bytes, tuple[bytes, bytes]]]:
    """The correlator's journal of the scenario (one message per batch) and its ingress."""
    processor = BatchProcessor(RULES, PREFIX)
    states: dict[int, BlockState] = {}
    audit: list[bytes] = []
    ingress: dict[bytes, tuple[bytes, bytes]] = {}
    for offset, row in enumerate(scenario.rows):
        e = row.event
        key, value = block_key(e.subject.linkage_block), encode(e)
        ingress[hashlib.sha256(value).digest()] = (value, key)
        result = processor.process([Incoming(f"{PREFIX}ingress.{e.agency_id}", 0, offset, key,
                                             value)],
                                   lambda b: states.get(b, initial_state()), NOW)
        states.update(result.states)
        audit += result.audit
    entries, _ = correlator_entries(audit, DECODERS)
    return entries, ingress


def test_replay_accounts_for_refused_events_and_checks_the_refusal() -> None:
    (scenario,) = [s for s in SCENARIOS if s.name == "history-backfill"]
    entries, ingress = _journal(scenario)
    report = ReplayReport()
    alerts = replay_events(entries, ingress, lambda _: RULES, report, DECODERS)
    assert report.ok and report.events_replayed == len(scenario.fed())
    assert len({e.digest for e in entries}) == len(scenario.rows)  # every event accounted for
    assert [a.tier.value for a in alerts] == [x.tier for x in scenario.expected]
    # An accepted event journalled as refused instead is caught.
    forged = [replace(e, action=AuditAction.EVENT_DEADLETTERED)
              if e.action is AuditAction.EVENT_ACCEPTED and e.subject_id
              == scenario.rows[2].event.event_id else e for e in entries]
    report = ReplayReport()
    replay_events(forged, ingress, lambda _: RULES, report, DECODERS)
    assert report.count("wrongly-refused") == 1
