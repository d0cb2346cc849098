"""A poisoned changelog record is quarantined: the worker keeps running (issue 21).

A block's state that cannot be read used to stop the worker on every restart, since recovery
put the same bytes back each time. Here the admin writes two unreadable states for two blocks
into the table's changelog (one truncated binary state, one JSON nested past the parser's
depth) before the worker starts (so that it recovers them, as a restarted worker would; one
start instead of two keeps the test short); the worker comes up, says so in an ERROR naming
the block and the record, puts each on `deadletter` with the reason and the record's partition
and offset, starts those blocks afresh and correlates their next events, journals each reset
(BLOCK_STATE_RESET, which replay follows) ahead of the block's next event, and writes readable
states over the poison (so the next start finds those and quarantines nothing more: checked on
the changelog, without another start).
"""

from __future__ import annotations

import hashlib
import urllib.request
from collections.abc import Callable

import pytest

from safehub.bus import make_producer
from safehub.consumers.deadletter import (
    HEADER_ERROR_MESSAGE,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
)
from safehub.deploy.kafka.launcher import free_port
from safehub.schemas.records import WarningSignEvent
from safehub.schemas.vocabulary import AuditAction, Sector
from safehub.services.correlation import snapshot
from safehub.services.correlation.linking import block_key, block_subject
from safehub.services.correlator.processing import partition_for
from safehub.topics import changelog_topic
from tests.fixtures.correlator import PARTITIONS, Site, child_sign, wait_until
from tests.fixtures.topics import TopicReader

pytestmark = pytest.mark.integration
AGENCY = "health-c"
BLOCKS = (321, 2345)
POISON = {
    321: b"\x04" + hashlib.sha256(b"truncated state").digest(),
    2345: b"[" * 200_000,
}


def _event(block: int, n: int) -> WarningSignEvent:
    return child_sign(f"changelog test child {block}", AGENCY, Sector.HEALTH, n, block)


@pytest.mark.timeout(180)
def test_a_poisoned_changelog_record_is_quarantined_and_the_worker_keeps_running(
        correlator_site: Callable[..., Site]) -> None:
    site = correlator_site({AGENCY: Sector.HEALTH})
    ns, out = site.ns, site.out
    changelog = changelog_topic(site.prefix)
    admin = make_producer(ns.kafka, "test-poisoner")

    def accepted(*events: WarningSignEvent) -> Callable[[], bool]:
        ids = {e.event_id for e in events}
        return lambda: ids <= out.accepted()

    poisoned: dict[int, tuple[int, int]] = {}  # block -> (partition, offset) of the poison
    try:
        for block, garbage in POISON.items():
            key = block_key(block)
            meta = admin.send(changelog, garbage, key=key,
                              partition=partition_for(key, PARTITIONS)).get(timeout=30)
            poisoned[block] = (meta.partition, meta.offset)

        port = free_port()
        worker = site.correlator(SAFEHUB_HEALTH_PORT=str(port))
        worker.start()
        site.send(_event(b, 1) for b in BLOCKS)
        wait_until("the events after the poison", accepted(*(_event(b, 1) for b in BLOCKS)),
                   90, worker)
        wait_until("the quarantined states", lambda: len(out.deadletter.poll()) >= len(BLOCKS),
                   30, worker)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            metrics = answer.read().decode()
        assert worker.stop() == 0
        states = TopicReader(ns.kafka, changelog)
        latest = {r.key: r.value for r in states.read_to_end()}
        states.close()
    finally:
        admin.close()
    log = worker.log.read_text(errors="replace")
    quarantined = {}
    for record in out.deadletter.read_to_end():
        headers = dict(record.headers)
        assert headers[HEADER_SOURCE_TOPIC].decode() == changelog
        origin = (int(headers[HEADER_SOURCE_PARTITION]), int(headers[HEADER_SOURCE_OFFSET]))
        block = int.from_bytes(record.key, "big")
        assert block not in quarantined, "quarantined twice: the readable state was not saved"
        quarantined[block] = origin
        assert record.value == POISON[block]  # kept as it was, for an operator to inspect
        assert "quarantined" in headers[HEADER_ERROR_MESSAGE].decode()
    assert quarantined == poisoned
    for block, (partition, offset) in poisoned.items():
        line = f"ERROR safehub.services.correlator.app: linkage block {block}: its state from "
        assert log.count(line) == 1
        assert f"{line}{changelog}[{partition}]@{offset}" in log
    assert POISON[321][1:].hex() not in log
    counted = [line for line in metrics.splitlines()
               if line.startswith("safehub_dead_letters_total{")
               and f'topic="{changelog}"' in line and 'reason="StoreError"' in line]
    assert [float(line.rsplit(" ", 1)[1]) for line in counted] == [len(BLOCKS)]
    # The poison is superseded by a readable state, with each block's event after it.
    for block in BLOCKS:
        state = snapshot.decode(latest[block_key(block)])
        assert [o.event_id for c in state.clusters for o in c.observations] == \
            [_event(block, 1).event_id]
    # Nothing refused (the events after the poison are not measured against a lost history).
    entries = out.entries()
    refused = [e for e in entries if e.action is AuditAction.EVENT_DEADLETTERED]
    assert not refused
    # Each reset is journalled, with the poison's digest, before the block's next event, so
    # that replay empties the block where the worker did (tests/unit/test_block_state_reset.py).
    resets = {e.subject_id: e.digest for e in entries
              if e.action is AuditAction.BLOCK_STATE_RESET}
    assert resets == {block_subject(b): hashlib.sha256(POISON[b]).digest() for b in BLOCKS}
    order = [e.subject_id for e in entries]
    for block in BLOCKS:
        assert order.index(block_subject(block)) < order.index(_event(block, 1).event_id)
