"""Committed offsets as the group coordinator knows them, never "none" when it could not say.

aiokafka 0.14 reads only the partitions of an OffsetFetch answer. From version 2 on, an error of
the whole group (the coordinator still loading the group after a failover, or no longer its
coordinator) comes back at the top of an answer that lists no partitions, and aiokafka took it
for "nothing committed" on every partition asked. A worker that started while a broker was
down then found no committed offset for its partitions and, as transport.py's `perform_seek`
does for a partition never committed, read them again from the beginning: seen after worker
restarts in 6 of the 7 fault runs whose logs were kept ("offset 1094 delivered before 0-1093;
re-reading from 0", bench/README.md, run R), although the stall watch had logged those
partitions' committed offsets a minute before. Harmless to the results (the events were in
their blocks' states already) but slow, and in production a re-read of the whole retained
topic. Here such an answer raises its error instead, which aiokafka's
`fetch_committed_offsets` retries once it has found the coordinator again; an error that is
not retriable (a right withdrawn) is raised to the worker.
"""

from __future__ import annotations

from typing import Any

from aiokafka.errors import (
    GroupCoordinatorNotAvailableError,
    NotCoordinatorForGroupError,
    for_code,
)
from aiokafka.protocol.commit import OffsetFetchRequest

_MOVED = (NotCoordinatorForGroupError, GroupCoordinatorNotAvailableError)


def check_group_errors(coordinator_class: Any) -> None:
    """Make every OffsetFetch answer with a group error raise it, for each group coordinator of
    `coordinator_class` (aiokafka's GroupCoordinator; its `_send_req`, checked by
    faust_contract.py)."""
    if getattr(coordinator_class, "_safehub_group_errors_checked", False):
        return
    send = coordinator_class._send_req

    async def _send_req(self: Any, request: Any) -> Any:
        answer = await send(self, request)
        code = getattr(answer, "error_code", 0) if isinstance(request, OffsetFetchRequest) else 0
        if code:
            error = for_code(code)
            if issubclass(error, _MOVED):
                self.coordinator_dead()  # found again before the next attempt
            raise error(f"committed offsets of group {self.group_id} not read: "
                        f"{error.__name__}")
        return answer

    coordinator_class._send_req = _send_req
    coordinator_class._safehub_group_errors_checked = True
