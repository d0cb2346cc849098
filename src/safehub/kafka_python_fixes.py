"""Two fixes to kafka-python 3.0.12's network loop, applied once when a client is first built.

Why. With TLS and several clients per process (a hub inbox serving many hubs, the ACL matrix
test), a client sometimes stopped for good: its caller waited on a task that its IO thread never
ran, while the IO thread slept in select() with no timeout (seen with py-spy: the inbox's
consumer for one hub in `ensure_coordinator_ready`, another in `Fetcher.fetch_records`).
Reading the loop (kafka/net/selector.py) shows two ways a ready task can be missed:
- `call_soon` from a thread other than the IO thread (a future resolved there resumes its
  waiting task with `call_soon`) appends the task without waking the loop, which then sleeps
  until some socket or timer happens to fire; on an idle connection, never;
- `_add_ready_task` appends the task before marking it READY, so the IO thread can run it and
  suspend it before the other thread's late write marks it READY again.
The fixes: the loop never sleeps longer than MAX_SLEEP_S, so a missed wake-up costs at most
that; and a task is marked READY before it becomes visible to the IO thread. Both only change
when the loop looks again, never what it does.

The version is pinned exactly in pyproject.toml; `apply` checks that the private names it
relies on still exist, and refuses to run on another version rather than patch blindly.
"""

from __future__ import annotations

from typing import Any

import kafka
from kafka.net import selector

from safehub.errors import SafehubError

PINNED = "3.0.12"
MAX_SLEEP_S = 0.5
_applied = False


def apply() -> None:
    global _applied
    if _applied:
        return
    if kafka.__version__ != PINNED:
        raise SafehubError(f"kafka-python {kafka.__version__} installed; safehub is tested with "
                           f"{PINNED} and patches its network loop (safehub.kafka_python_fixes)")
    loop = selector.NetworkSelector
    for name in ("_next_scheduled_timeout", "_add_ready_task"):
        if not hasattr(loop, name):
            raise SafehubError(f"kafka-python's NetworkSelector has no {name}: re-check "
                               "safehub.kafka_python_fixes")
    if not hasattr(selector, "TaskState") or not hasattr(selector.TaskState, "READY"):
        raise SafehubError("kafka-python's TaskState.READY is gone: re-check "
                           "safehub.kafka_python_fixes")
    scheduled = loop._next_scheduled_timeout

    def next_timeout(self: Any, now: float) -> float:
        timeout = scheduled(self, now)
        return MAX_SLEEP_S if timeout is None else min(timeout, MAX_SLEEP_S)

    def add_ready(self: Any, task: Any) -> None:
        task.state = selector.TaskState.READY
        self._ready.append(task)

    loop._next_scheduled_timeout = next_timeout
    loop._add_ready_task = add_ready
    _applied = True
