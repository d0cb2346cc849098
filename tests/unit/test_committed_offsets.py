"""A group coordinator's error is not "no offset committed" (committed.py).

aiokafka's own `fetch_committed_offsets` and `_do_fetch_commit_offsets` run here, on a stand-in
for the coordinator's connection that answers as a broker does (OffsetFetch v3): a group-level
error at the top of an answer with no partitions, then the committed offset. Before the
correction the error came back as "nothing committed", and a restarted worker read its
partitions again from offset 0."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import GroupAuthorizationFailedError
from aiokafka.protocol.commit import OffsetFetchResponse_v3
from aiokafka.structs import TopicPartition

from safehub.services.correlator.committed import check_group_errors

TP = TopicPartition("ingress.health", 3)
LOADING, NOT_COORDINATOR, NO_RIGHT = 14, 16, 30
COMMITTED = OffsetFetchResponse_v3(0, [(TP.topic, [(TP.partition, 1094, "", 0)])], 0)


def group_error(code: int) -> OffsetFetchResponse_v3:
    return OffsetFetchResponse_v3(0, [], code)


def coordinator_class() -> type[Any]:
    class Coordinator:
        """As much of aiokafka's GroupCoordinator as fetching committed offsets uses."""

        group_id = "safehub.correlator"
        _retry_backoff_ms = 1
        fetch_committed_offsets = GroupCoordinator.fetch_committed_offsets
        _do_fetch_commit_offsets = GroupCoordinator._do_fetch_commit_offsets

        def __init__(self, *answers: OffsetFetchResponse_v3) -> None:
            self.answers = list(answers)
            self.found_again = 0

        async def ensure_coordinator_known(self) -> None:
            return None

        def coordinator_dead(self) -> None:
            self.found_again += 1

        async def _send_req(self, request: Any) -> OffsetFetchResponse_v3:
            return self.answers.pop(0)

    return Coordinator


def committed(coordinator: Any) -> dict[TopicPartition, int]:
    offsets = asyncio.run(coordinator.fetch_committed_offsets([TP]))
    return {tp: meta.offset for tp, meta in offsets.items()}


def test_without_the_check_a_loading_coordinator_reads_as_nothing_committed() -> None:
    assert committed(coordinator_class()(group_error(LOADING), COMMITTED)) == {}


def test_a_loading_or_moved_coordinator_is_asked_again_until_it_answers() -> None:
    cls = coordinator_class()
    check_group_errors(cls)
    check_group_errors(cls)  # installed once however often asked
    coordinator = cls(group_error(LOADING), group_error(NOT_COORDINATOR), COMMITTED)
    assert committed(coordinator) == {TP: 1094}
    assert coordinator.found_again == 1  # the moved one is looked for again
    assert coordinator.answers == []


def test_a_refusal_is_raised_not_taken_for_nothing_committed() -> None:
    cls = coordinator_class()
    check_group_errors(cls)
    with pytest.raises(GroupAuthorizationFailedError):
        committed(cls(group_error(NO_RIGHT)))
