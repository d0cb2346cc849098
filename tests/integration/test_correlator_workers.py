"""Two correlator workers share the ingress partitions; when one is killed, the other takes its
partitions over, recovers those blocks' states from the table's changelog, and carries on with
no event's effect lost."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from kafka.errors import CoordinatorLoadInProgressError, CoordinatorNotAvailableError

from safehub.bus import make_admin
from safehub.connection import KafkaConnection
from safehub.topics import correlator_group
from tests.fixtures.correlator import (
    Correlator,
    Site,
    check_no_effect_lost,
    population,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
@pytest.mark.parametrize("ids", [("", ""), ("a", "b")], ids=["anonymous", "worker-ids"])
def test_two_workers_share_partitions_and_survive_losing_one(
        correlator_site: Callable[..., Site], ids: tuple[str, str]) -> None:
    events = population(children=300, events_per_child=12, seed=23)
    site = correlator_site()
    out = site.out

    # With worker ids, both are static members of the group, and fence by transactional id.
    a, b = (site.correlator(SAFEHUB_CORRELATOR_BATCH="40", SAFEHUB_CORRELATOR_WORKER_ID=i)
            for i in ids)
    a.start()
    b.start()
    # Both in the group before the data arrives, so that the two share the partitions.
    wait_for_members(site.ns.kafka, correlator_group(site.prefix), 2, 90, (a, b))
    half = len(events) // 2
    site.send(events[:half])
    wait_until("the first half", lambda: len(out.accepted()) >= half, 120, a)
    a.kill()
    site.send(events[half:])
    wait_until("every event, on the surviving worker", lambda: len(out.accepted()) == len(events),
               180, b)
    assert b.stop() == 0
    check_no_effect_lost(events, *out.final())


def wait_for_members(kafka: KafkaConnection, group: str, members: int, timeout: float,
                     procs: tuple[Correlator, ...]) -> None:
    """Until the consumer group is stable with `members` members (asked as the admin)."""
    admin = make_admin(kafka, "test-workers-admin")
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                info = admin.describe_groups([group])[group]
                state, joined = info["group_state"], len(info["members"])
            except (CoordinatorNotAvailableError, CoordinatorLoadInProgressError) as exc:
                # A new group's coordinator may still be loading (seen on a loaded machine).
                state, joined = type(exc).__name__, 0
            if state == "Stable" and joined == members:
                return
            assert all(p.alive() for p in procs), "a correlator exited while joining"
            assert time.monotonic() < deadline, (
                f"group {group} not stable with {members} members in {timeout} s: "
                f"{state}, {joined} members")
            time.sleep(0.5)
    finally:
        admin.close()
