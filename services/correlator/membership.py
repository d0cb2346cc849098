"""Whether the consumer group still counts this worker as the owner of its partitions.

Why. A worker's transaction writes block states to the changelog partitions of the ingress
partitions it owns. If the group has already given those partitions to another worker, and
that worker has recovered their changelog, a state committed now is never seen by it: the
journal shows events accepted that the new owner's states lack, and the alerts it raises
differ from what replay derives. Seen in fault run N (bench/fault_bench.py): one worker was
still committing its last batches while the other had been given, and had recovered, all six
partitions; replay then found 19 alerts that differed.

Kafka fences such a "zombie" through the group generation sent with the offsets in the
transaction (KIP-447), which aiokafka 0.14 does not send (its TxnOffsetCommit is version 0).
What is used instead is what the protocol guarantees about time. The coordinator takes a
member's partitions away only after it has left the group: its session expired (no heartbeat
received for the session timeout) or, in a rebalance, it did not join again within the
rebalance timeout. Neither can happen before:
- the session timeout after the send time of the last heartbeat that succeeded (the
  coordinator received it later than it was sent), nor
- while a rebalance is under way, the rebalance timeout after the send time of the last
  heartbeat that found the group stable (the rebalance began after that one was answered).
`lost` answers None until the earlier of those two, less a margin. A transaction whose records
are all acknowledged before then is safe to commit at any later time: the records are in the
changelog before any new owner begins its recovery, and that recovery reads to the changelog's
end, so it waits for their open transaction until the commit or abort is written (log_end.py;
until session 28 it read to the last stable offset, and ended before such a transaction). So the
worker checks after its sends and before its commit (outputs.py). One that has run out
waits a few seconds for a heartbeat sent after its sends: answered OK, the group still had it
then, in the same generation, with no rebalance under way, so no one else had its partitions
(a rebalance it took part in would have waited for this very batch). Otherwise it aborts and
stops (exit 70, restarted: it then reads from the committed offsets). A coordinator that was
away for a while (a killed broker) thus costs a short wait, not a restart. The generation is
the one the batch was taken in (app.py): a batch flushed after the worker joined again is
refused even if the worker is still a member, as its partitions may have moved meanwhile.

The times come from aiokafka's group coordinator (`watch`): every heartbeat's send time and
answer, every join. It runs on faust's consumer thread; the pipeline asks on the worker's
event loop, hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

MARGIN_S = 1.0


class Membership:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._session_s = self._rebalance_s = 0.0  # the group's, told with each join
        self._now = clock
        self._guard = threading.Lock()
        self._member = False
        self._alive_from = 0.0  # send time of the last heartbeat or join that succeeded
        self._stable_from = 0.0  # ... of the last one that found the group stable
        self._rebalancing = False
        self._why = "not a member of the group yet"
        self._joins = 0

    def joined(self, sent_at: float, session_s: float, rebalance_s: float) -> None:
        """A join begun at `sent_at` completed: a member of the new generation, whose
        coordinator times it out after `session_s` without a heartbeat, and after
        `rebalance_s` of a rebalance without joining again."""
        with self._guard:
            self._session_s, self._rebalance_s = session_s, rebalance_s
            self._member, self._rebalancing = True, False
            self._alive_from = self._stable_from = sent_at
            self._joins += 1

    @property
    def joins(self) -> int:
        """How many times this worker has joined: a new one is a new generation."""
        with self._guard:
            return self._joins

    def heartbeat(self, sent_at: float, ok: bool, rebalancing: bool) -> None:
        """A heartbeat sent at `sent_at` was answered OK (or said a rebalance is under way)."""
        if not ok:
            return  # not answered: only time tells, in `lost`
        with self._guard:
            self._alive_from = max(self._alive_from, sent_at)
            if rebalancing:
                self._rebalancing = True
            else:
                self._rebalancing = False
                self._stable_from = max(self._stable_from, sent_at)

    def left(self, why: str) -> None:
        """The coordinator no longer knows this member (unknown member id, old generation)."""
        with self._guard:
            self._member, self._why = False, why

    def lost(self, joins: int | None = None, margin_s: float = MARGIN_S) -> str | None:
        """None while the group must still count this worker as a member (and, given `joins`,
        of the generation it was in then); else why not."""
        now = self._now()
        with self._guard:
            if not self._member:
                return self._why
            if joins is not None and self._joins != joins:
                return "joined the group again since: its partitions may have been moved"
            if now >= self._alive_from + self._session_s - margin_s:
                return (f"no heartbeat answered for {now - self._alive_from:.1f} s (the group's "
                        f"session timeout is {self._session_s:.0f} s)")
            if self._rebalancing and now >= self._stable_from + self._rebalance_s - margin_s:
                return (f"a rebalance under way for up to {now - self._stable_from:.1f} s, "
                        f"longer than the group's rebalance timeout of {self._rebalance_s:.0f} s")
            return None


_GROUPS: dict[str, Membership] = {}
_GROUPS_LOCK = threading.Lock()


def for_group(group_id: str) -> Membership:
    """This process's membership of `group_id` (faust's group id is the app id)."""
    with _GROUPS_LOCK:
        return _GROUPS.setdefault(group_id, Membership())


def _of(coordinator: Any) -> Membership:
    return for_group(coordinator.group_id)


def watch(coordinator_class: Any) -> None:
    """Record the heartbeats and joins of every group coordinator of `coordinator_class`
    (aiokafka's GroupCoordinator; its private methods, checked by faust_contract.py)."""
    if getattr(coordinator_class, "_safehub_watched", False):
        return
    heartbeat, rejoin, reset = (coordinator_class._do_heartbeat,
                                coordinator_class._do_rejoin_group,
                                coordinator_class.reset_generation)

    async def _do_heartbeat(self: Any) -> bool:
        sent_at = time.monotonic()
        ok = await heartbeat(self)
        # aiokafka answers True for a rebalance under way too, after asking to rejoin.
        _of(self).heartbeat(sent_at, ok, rebalancing=ok and self._rejoin_needed_fut.done())
        return bool(ok)

    async def _do_rejoin_group(self: Any, subscription: Any) -> bool:
        sent_at = time.monotonic()
        done = await rejoin(self, subscription)
        if done:
            _of(self).joined(sent_at, self._session_timeout_ms / 1000,
                             self._rebalance_timeout_ms / 1000)
        return bool(done)

    def reset_generation(self: Any) -> None:
        _of(self).left("the group coordinator no longer knows this member (its session "
                       "expired or its generation is old)")
        reset(self)

    coordinator_class._do_heartbeat = _do_heartbeat
    coordinator_class._do_rejoin_group = _do_rejoin_group
    coordinator_class.reset_generation = reset_generation
    coordinator_class._safehub_watched = True
