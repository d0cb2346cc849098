"""Records the contract refuses whatever else holds, dead-lettered beside the events, not ahead.

A record whose key is no linkage block or whose value carries no ingress event's schema header
fails `may_be_event` (processing.py), and `BatchProcessor.admit` refuses every such record
before it looks at any state: its refusal depends on its own bytes alone. It changes no block's
state, so nothing requires it to be correlated in its partition's order: the auditors' replay
feeds only accepted events, and checks a refusal against its block only when it names an
event, which such a record's entry never does (it is named by its digest).

Under a malformed flood such records went through faust's per-record path (its channel, stream
and events: about a third of the worker's main thread, bench/flood_bench.py) one at a time in
their partition's order, so the flooding agency's own valid event waited for every refusal
ahead of it on its partition: 1.04 s behind ~8,500 of them in session 29, 0.22 s with the lane
(bench/results/flood.json). Here the transport takes such records out as faust reads them
(`PromptConsumer.getmany`): they are tracked and acked as faust's own messages are, so that
their offsets are committed only once their dead letters are, and are handed to the pipeline in
batches of their own (app.py), while the events behind them go on through faust at once.

A flood made to pass that cheap look is told apart by its effect, and the records of its
partition checked by every rule that does not depend on the time before faust sees them
(suspicion.py); those it refuses come to the lane too.

The lane holds at most `LANE_MAX` bytes (a record's key, value and what faust's message costs),
and AHEAD_TIMES that for records standing ahead of a possible event; the fair share hands it no
more while it is full, each partition in turn (fairness.py), so the lane bounds memory and a
flood waits on the broker, not in the worker. Records of a partition that is sought (read again
from an earlier offset) or no longer assigned are dropped: they are read again.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

LANE_MAX = 16 * 1024 * 1024  # bytes held, ~25,000 small records
# For records ahead of a possible event, which are held in memory already and must all reach
# the lane before the event reaches faust: ~100,000 small ones, more than the fair share holds
# of one partition (fairness.HOLD_MAX).
AHEAD_TIMES = 4
MESSAGE_COST = 600  # bytes a held record costs besides its key and value (faust's and aiokafka's)


def message_size(message: Any) -> int:
    """What holding `message` (faust's Message) costs, in bytes."""
    return MESSAGE_COST + len(message.key or b"") + len(message.value or b"")


class Refusals:
    def __init__(self, most: int = LANE_MAX) -> None:
        self._most = most
        self._held: deque[Any] = deque()
        self._size = 0
        self._count: Counter[Any] = Counter()  # records held per partition
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._held)

    def room(self) -> tuple[int, int]:
        """Bytes the lane takes before it is full, and before it is full for records ahead of a
        possible event (fairness.py): AHEAD_TIMES as many, as those are held in memory already
        and are all that stands between the event and faust."""
        return (max(self._most - self._size, 0),
                max(AHEAD_TIMES * self._most - self._size, 0))

    def add(self, message: Any) -> None:
        self._held.append(message)
        self._size += message_size(message)
        self._count[message.tp] += 1
        self._ready.set()

    async def wait(self) -> None:
        """Until the lane holds a record."""
        while not self._held:
            self._ready.clear()
            await self._ready.wait()

    def take(self, most: int) -> list[Any]:
        """Up to `most` records, oldest first."""
        held = self._held
        taken = [held.popleft() for _ in range(min(most, len(held)))]
        self._size -= sum(map(message_size, taken))
        self._count.subtract(m.tp for m in taken)
        return taken

    def drop(self, tps: Iterable[Any], from_offset: int = 0) -> list[Any]:
        """Forget the records of partitions `tps` from `from_offset` on, and return them."""
        # Asked every fetch round: only a partition that holds records costs a look at each.
        gone = {tp for tp in tps if self._count[tp] > 0}
        if not gone:
            return []

        def dropped_(m: Any) -> bool:
            return m.tp in gone and m.offset >= from_offset

        dropped = [m for m in self._held if dropped_(m)]
        self._held = deque(m for m in self._held if not dropped_(m))
        self._size -= sum(map(message_size, dropped))
        self._count.subtract(m.tp for m in dropped)
        return dropped

    def keep_only(self, tps: Iterable[Any]) -> list[Any]:
        """Forget the records of partitions not in `tps`, and return them."""
        keep = set(tps)
        return self.drop([tp for tp in self._count if tp not in keep])
