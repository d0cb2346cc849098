"""Fixes to kafka-python 3.0.12, applied once when a client is first built: two to its network
loop, one to its idempotent producer.

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

The producer. Every safehub producer is idempotent and not transactional. kafka-python's
`TransactionManager.classify_batch_error` ends by calling any other non-retriable error FATAL
for such a producer, though its own comment there says it should only fail the batch, as the
Java client does. A fatal producer refuses every later send, so one refused write (an ACL
revoked a moment, then restored) left a service running with a producer that could never send
again (tests/integration/test_reid_agency.py found it). Such an error now bumps the producer's
epoch instead: the batch fails and its caller is told, the sequence numbers start again, and the
producer goes on. The errors kafka-python lists as fatal stay fatal.

The version is pinned exactly in pyproject.toml; `apply` checks that the private names it
relies on still exist, and refuses to run on another version rather than patch blindly.
"""

from __future__ import annotations

from typing import Any

import kafka
from kafka.net import selector
from kafka.producer.transaction_manager import TransactionManager

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
    for name in ("classify_batch_error", "is_transactional", "_supports_epoch_bump",
                 "_FATAL_ERRORS", "ERROR_CLASS_FATAL", "ERROR_CLASS_NEEDS_EPOCH_BUMP"):
        if not hasattr(TransactionManager, name):
            raise SafehubError(f"kafka-python's TransactionManager has no {name}: re-check "
                               "safehub.kafka_python_fixes")
    scheduled = loop._next_scheduled_timeout
    classify = TransactionManager.classify_batch_error

    def next_timeout(self: Any, now: float) -> float:
        timeout = scheduled(self, now)
        return MAX_SLEEP_S if timeout is None else min(timeout, MAX_SLEEP_S)

    def add_ready(self: Any, task: Any) -> None:
        task.state = selector.TaskState.READY
        self._ready.append(task)

    def classify_idempotent(self: Any, error: Any, batch: Any, log_start_offset: int = -1
                            ) -> str:
        verdict: str = classify(self, error, batch, log_start_offset)
        error_type = error if isinstance(error, type) else type(error)
        if (verdict == self.ERROR_CLASS_FATAL and not self.is_transactional()
                and error_type not in self._FATAL_ERRORS and self._supports_epoch_bump()):
            return str(self.ERROR_CLASS_NEEDS_EPOCH_BUMP)
        return verdict

    loop._next_scheduled_timeout = next_timeout
    TransactionManager.classify_batch_error = classify_idempotent
    loop._add_ready_task = add_ready
    _applied = True
