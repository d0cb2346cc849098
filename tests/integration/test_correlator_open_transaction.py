"""A worker's recovery reads past a transaction left open on the changelog, not up to it
(log_end.py).

A worker the group has replaced may have a transaction open on the changelog, its block states
acknowledged and its commit still on the way. Here a producer with the correlator's rights
leaves one open with a state for one block before the worker starts, and commits it only once
the worker has been running a while, with an event of that block waiting on ingress. Recovery
must wait for the commit and then recover that state: the worker correlates nothing meanwhile,
and afterwards its block's history is the committed state. The state is an unreadable one, so
that recovering it shows (the worker quarantines it, with a dead letter and a journalled reset,
when the block's event comes: test_correlator_changelog.py). Before log_end.py the recovery
took the changelog's last stable offset as its target, ended before the open transaction,
correlated the event on an empty block, and never saw the state committed after it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import pytest

from safehub.bus import make_producer
from safehub.consumers.deadletter import HEADER_SOURCE_OFFSET, HEADER_SOURCE_TOPIC
from safehub.schemas.vocabulary import AuditAction, Sector
from safehub.services.correlation.linking import block_key, block_subject
from safehub.services.correlator.processing import partition_for
from safehub.topics import changelog_topic
from tests.fixtures.correlator import PARTITIONS, Site, child_sign, wait_until

pytestmark = pytest.mark.integration
AGENCY = "health-open"
BLOCK = 1717
STATE = b"\x04" + hashlib.sha256(b"a state in a transaction left open").digest()
OPEN_S = 20.0  # how long the transaction stays open after the worker started


@pytest.mark.timeout(240)
def test_recovery_waits_for_a_transaction_left_open_on_the_changelog(
        correlator_site: Callable[..., Site]) -> None:
    site = correlator_site({AGENCY: Sector.HEALTH})
    out = site.out
    changelog = changelog_topic(site.prefix)
    key = block_key(BLOCK)
    event = child_sign("open transaction test child", AGENCY, Sector.HEALTH, 1, BLOCK)
    zombie = make_producer(site.ns.connection("correlator"), "test-open-transaction",
                           transactional_id=f"{site.prefix}correlator-zombie",
                           transaction_timeout_ms=120_000)
    try:
        zombie.init_transactions()
        zombie.begin_transaction()
        meta = zombie.send(changelog, STATE, key=key,
                           partition=partition_for(key, PARTITIONS)).get(timeout=30)
        worker = site.correlator()
        worker.start()
        site.send([event])
        opened = time.monotonic()
        while time.monotonic() - opened < OPEN_S:
            assert worker.alive(), worker.log.read_text(errors="replace")[-3000:]
            assert event.event_id not in out.accepted(), \
                "correlated while a transaction on the changelog was open"
            time.sleep(1)
        zombie.commit_transaction()
    finally:
        zombie.close(timeout=10)
    wait_until("the event, once the transaction is committed",
               lambda: event.event_id in out.accepted(), 90, worker)
    assert worker.stop() == 0
    quarantined = [dict(r.headers) for r in out.deadletter.read_to_end()
                   if dict(r.headers)[HEADER_SOURCE_TOPIC].decode() == changelog]
    assert [int(h[HEADER_SOURCE_OFFSET]) for h in quarantined] == [meta.offset], \
        "the state committed after the worker started was not recovered"
    order = [e.subject_id for e in out.entries()]
    resets = [e for e in out.entries() if e.action is AuditAction.BLOCK_STATE_RESET]
    assert [e.subject_id for e in resets] == [block_subject(BLOCK)]
    assert order.index(block_subject(BLOCK)) < order.index(event.event_id)
