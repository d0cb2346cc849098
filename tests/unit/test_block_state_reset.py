"""A quarantined block state is journalled, and replay follows it (issue 21, "Correlator").

When the worker cannot read a block's saved state (a poisoned changelog record), the child
process starts the block afresh (offload.py). Replay used to keep the block's whole history,
so every alert the worker raised for the block afterwards was reported as a difference, and the
auditor was not told that the worker had lost history. The child now journals a
BLOCK_STATE_RESET entry ahead of the batch's own entries, and replay empties the block there.

The child's real request loop (`serve`) runs in a thread over a pipe, fed as the worker feeds
it: the first half of a golden scenario, then the rest with the block's state replaced by
unreadable bytes.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
from collections.abc import Iterator
from multiprocessing import Pipe
from multiprocessing.connection import Connection

import pytest

from safehub.schemas.codec import decode, encode
from safehub.schemas.records import AuditEntry, IngressEvent
from safehub.schemas.vocabulary import AuditAction
from safehub.services.audit.replay import (
    ReplayReport,
    correlator_entries,
    replay_events,
    summary,
)
from safehub.services.audit.sharding import ShardJob, contract_decoders, replay_shard, split
from safehub.services.correlation.linking import block_subject
from safehub.services.correlation.rules import DEFAULT_RULES_PATH, load_rules
from safehub.services.correlator.offload import Reply, serve
from safehub.services.correlator.processing import Incoming, block_key
from tests.golden.scenarios import DAY_MS, EPOCH_MS, all_scenarios

RULES = load_rules(DEFAULT_RULES_PATH)
PREFIX = "t."
NOW = EPOCH_MS + 500 * DAY_MS
POISON = b"\x04" + hashlib.sha256(b"not a block state").digest()
DECODERS = contract_decoders()


def _events() -> list[IngressEvent]:
    (scenario,) = [s for s in all_scenarios() if s.name == "exploitation-across-agencies"]
    return [r.event for r in scenario.rows]


def _message(event: IngressEvent, offset: int) -> Incoming:
    return Incoming(f"{PREFIX}ingress.{event.agency_id}", 0, offset,
                    block_key(event.subject.linkage_block), encode(event))


@pytest.fixture
def child() -> Iterator[Connection]:
    ours, theirs = Pipe(duplex=True)
    thread = threading.Thread(target=serve, args=(theirs, RULES, PREFIX), daemon=True)
    thread.start()
    yield ours
    ours.close()
    thread.join(5)


def _submit(conn: Connection, shipped: dict[int, bytes | None],
            batch: list[Incoming]) -> Reply:
    conn.send_bytes(pickle.dumps((NOW, shipped, batch, [])))
    kind, reply = pickle.loads(conn.recv_bytes())
    assert kind == "ok", reply
    assert isinstance(reply, Reply)
    return reply


def _worker_run(child: Connection) -> tuple[list[Incoming], list[Reply], int]:
    events = _events()
    block = events[0].subject.linkage_block
    messages = [_message(e, i) for i, e in enumerate(events)]
    before = _submit(child, {}, messages[:3])
    assert before.quarantined == {} and len(before.alerts) == 2
    after = _submit(child, {block: POISON}, messages[3:])
    return messages, [before, after], block


def test_the_reset_is_journalled_first_and_replay_matches_the_worker(
        child: Connection) -> None:
    messages, replies, block = _worker_run(child)
    after = replies[1]
    assert list(after.quarantined) == [block]
    first = decode(after.audit[0], AuditEntry)
    assert (first.action, first.subject_id) == (AuditAction.BLOCK_STATE_RESET,
                                                block_subject(block))
    assert first.digest == hashlib.sha256(POISON).digest()
    assert AuditAction.BLOCK_STATE_RESET not in {
        decode(e, AuditEntry).action for e in after.audit[1:]}

    ingress = {hashlib.sha256(m.value or b"").digest(): (m.value or b"", m.key)
               for m in messages}
    journal = [e for r in replies for e in r.audit]
    emitted = [data for r in replies for _, data in r.alerts]

    report = ReplayReport()
    entries, _ = correlator_entries(journal, DECODERS)
    replayed = replay_events(entries, ingress, lambda _: RULES, report, DECODERS)
    assert report.ok, report.differences
    assert [encode(a) for a in replayed] == emitted
    assert report.blocks_reset == [block]
    assert "reset 1 linkage block state(s)" in summary(report, other_rules=False)

    # Without the entry, replay counts the history the worker had lost: the test can fail.
    without = ReplayReport()
    kept = [e for e in entries if e.action != AuditAction.BLOCK_STATE_RESET]
    assert [encode(a) for a in replay_events(kept, ingress, lambda _: RULES, without,
                                            DECODERS)] != emitted


def test_the_sharded_replay_routes_the_reset_to_its_block(child: Connection) -> None:
    messages, replies, block = _worker_run(child)
    ingress = {hashlib.sha256(m.value or b"").digest(): (m.value or b"", m.key)
               for m in messages}
    journal = [e for r in replies for e in r.audit]
    alerts = [(f"correlated@{i}", data)
              for i, data in enumerate(d for r in replies for _, d in r.alerts)]
    report = ReplayReport()
    shards = split(journal, alerts, ingress, 7, None, report)
    outcomes = [replay_shard(ShardJob(s, None, RULES.version, None)) for s in shards.shards]
    assert all(o.report.ok for o in outcomes), [o.report.differences for o in outcomes]
    assert sum(o.report.matches for o in outcomes) == len(alerts)
    assert [b for o in outcomes for b in o.report.blocks_reset] == [block]
    # The reset names no ingress record: it is not counted as a journalled event.
    assert sum(o.journalled_events for o in outcomes) == len(messages)


def test_a_reset_naming_no_block_is_reported() -> None:
    entry = AuditEntry("a" * 32, "correlator", AuditAction.BLOCK_STATE_RESET, "not a block",
                       "correlator", NOW, bytes(32))
    report = ReplayReport()
    replay_events([entry], {}, lambda _: RULES, report, DECODERS)
    assert [d.kind for d in report.differences] == ["altered-entry"]
