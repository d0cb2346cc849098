"""Each ingress partition's share of what the worker hands to faust per fetch round, events first.

One agency flooding its ingress topic must not hold up the others' events. faust hands the
records of one fetch round (everything aiokafka has buffered: up to 1 MiB a partition, some
11,000 small malformed records) to its queue one at a time, round-robin between partitions,
and asks for the next round only when the last record of this one is queued. An event of
another agency fetched meanwhile therefore waited for the whole round: with faust's queue and
the batches already cut to 1,000, 3.1 s behind a 100,000-record flood in one run of
bench/flood_bench.py and 0.5 s in two others, depending on when its fetch landed.

`FairShare` keeps what a round fetched and hands faust at most `share` records of each
partition per round, the rest in later rounds. What waits ahead of another agency's event is
then at most a share of each partition, faust's queue and the batches in flight (command.py,
DEFAULT_BATCH). Order within a partition is kept: held records go first, and records fetched
later are held after them.

Events first. A partition holding a record that may be an event (`urgent`: a cheap look at
the key and the schema header, which a malformed record fails; processing.py) is handed a full
share per round, and while any is, the partitions holding none get LAGGARD_SHARE each. Records
that fail the cheap look go to the refusals lane instead of faust's queue (refusals.py): they
are handed over beside the share, within the lane's room, the partitions holding a possible
event first, and always those standing ahead of a possible event that the share hands over
(within a larger room: they are held in memory already). So the flooding agency's own valid
event no longer waits for the refusals ahead of it on its own partition: 1.04 s behind ~8,500
of them in session 29, when they were refused in order through faust (bench/results/flood.json).
A flood made to pass the cheap look is served as before, a share per partition; the partitions
holding nothing that looks like an event still move, so their offsets are committed and no
stall is suspected (stalls.py).

For that, a partition holding records is fetched again while it holds less than `hold_max`
bytes not yet handed over, and the worker holds at most `hold_total` in all: an event behind a
held backlog is seen within a fetch, not once the backlog is handed over. The bounds are in
bytes (keys, values and a record's own cost), as a flood of large records must not fill the
worker's memory. Held records are dropped when the partition is sought (its position moves,
and aiokafka drops its own buffer too) or is no longer assigned.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from safehub.services.correlator.refusals import MESSAGE_COST

# Records of one partition handed over per round (SAFEHUB_CORRELATOR_FAIR_SHARE): six flooded
# partitions then put at most ~600 records in a round ahead of another agency's. A catch-up of
# 60,000 events ran at ~0.96x the events/s it reached with the share unlimited (5,412 against
# 5,645, medians of 5 alternated runs of bench/correlation_bench.py), once faust stopped pausing
# ingress partitions under queue pressure (transport.py); it was 0.59x before that.
SHARE = 100
LAGGARD_SHARE = 1  # per round, for a partition holding no event while another holds one
# Held and not yet handed over, in bytes: at most this much of one partition before it is
# fetched no more until some is handed over (~28,000 records of a malformed flood), and of all.
HOLD_MAX = 8 * 1024 * 1024
HOLD_TOTAL = 64 * 1024 * 1024
RECORD_COST = 200  # bytes a held record costs besides its key and value (aiokafka's object)


def _never(record: Any) -> bool:
    return False


def record_size(record: Any) -> int:
    """What holding `record` (aiokafka's ConsumerRecord) costs, in bytes."""
    return RECORD_COST + len(record.key or b"") + len(record.value or b"")


def lane_record_size(record: Any) -> int:
    """What the refusals lane counts for `record` once faust has made it a message."""
    return MESSAGE_COST + len(record.key or b"") + len(record.value or b"")


class _Held:
    __slots__ = ("records", "size", "taken", "urgent")

    def __init__(self) -> None:
        self.records: deque[Any] = deque()
        self.size = 0  # bytes
        self.taken = 0  # records handed over so far: the index of records[0] since holding began
        self.urgent: deque[int] = deque()  # indices (as above) of held records that may be events


class FairShare:
    def __init__(self, share: int = SHARE, urgent: Callable[[Any], bool] = _never,
                 size: Callable[[Any], int] = record_size, hold_max: int = HOLD_MAX,
                 hold_total: int = HOLD_TOTAL,
                 lane_size: Callable[[Any], int] = lane_record_size) -> None:
        if share < 1:
            raise ValueError("a share is at least one record")
        self.share = share
        self._urgent = urgent
        self._size = size
        self._lane_size = lane_size
        self._hold_max = hold_max
        self._hold_total = hold_total
        self._held: dict[Any, _Held] = {}
        self._total = 0  # bytes held in all
        self._round = 0

    def holding(self) -> set[Any]:
        """Partitions with records held back."""
        return set(self._held)

    def full(self) -> set[Any]:
        """Partitions not to be fetched until some of their held records are handed over: those
        holding `hold_max` bytes, or every partition holding any once `hold_total` are held."""
        if self._total >= self._hold_total:
            return set(self._held)
        return {tp for tp, held in self._held.items() if held.size >= self._hold_max}

    def take(self, fetched: Mapping[Any, Sequence[Any]], active: Iterable[Any],
             lane: tuple[int, int] | None = None) -> dict[Any, list[Any]]:
        """Hold `fetched` (partition -> records, after any it holds) and hand over, oldest first,
        a share of each `active` partition's held records: LAGGARD_SHARE of those holding no
        possible event while another active partition holds one.

        With `lane`, records that cannot be events go to the refusals lane (refusals.py), not
        to faust's queue: they are handed over beside the share, partitions holding a possible
        event first, within the lane's room in bytes: `lane[1]` for those ahead of a possible
        event the share hands over (they are held in memory already, and are all that stands
        between it and faust), `lane[0]` for the others."""
        for tp, records in fetched.items():
            if records:
                self._hold(tp, records)
        serving = [(tp, self._held[tp]) for tp in active if tp in self._held]
        urgent = any(held.urgent for _, held in serving)
        if lane is not None and serving:
            # The lane's room goes first to the partitions holding a possible event, and among
            # the others to each in turn: in a fixed order the first would take it every round.
            self._round += 1
            turn = self._round % len(serving)
            serving = serving[turn:] + serving[:turn]
            serving.sort(key=lambda item: not item[1].urgent)
        used = 0  # bytes handed to the lane this round
        out: dict[Any, list[Any]] = {}
        for tp, held in serving:
            n = self.share if not urgent or held.urgent else LAGGARD_SHARE
            if lane is None:
                records = held.records
                given = [records.popleft() for _ in range(min(n, len(records)))]
            else:
                given, used = self._with_lane(held, n, lane, used)
            out[tp] = given
            held.taken += len(given)
            size = sum(map(self._size, given))
            held.size -= size
            self._total -= size
            while held.urgent and held.urgent[0] < held.taken:
                held.urgent.popleft()
            if not held.records:
                del self._held[tp]
        return out

    def _with_lane(self, held: _Held, n: int, lane: tuple[int, int],
                   used: int) -> tuple[list[Any], int]:
        """Up to `n` possible events of `held` and the records that cannot be, in order, within
        the lane's room: the records handed over and the lane's bytes used after them."""
        room, room_ahead = lane
        records = held.records
        urgent = iter(held.urgent)
        next_urgent = next(urgent, None)
        given: list[Any] = []
        events = 0
        while records:
            at = held.taken + len(given)
            if at == next_urgent:
                if events >= n:
                    break
                events += 1
                next_urgent = next(urgent, None)
            else:
                cost = self._lane_size(records[0])
                ahead = next_urgent is not None and events < n
                if used + cost > (room_ahead if ahead else room):
                    break
                used += cost
            given.append(records.popleft())
        return given, used

    def _hold(self, tp: Any, records: Sequence[Any]) -> None:
        held = self._held.get(tp)
        if held is None:
            held = self._held[tp] = _Held()
        first = held.taken + len(held.records)
        held.records.extend(records)
        size = sum(map(self._size, records))
        held.size += size
        self._total += size
        look = self._urgent
        held.urgent.extend(first + i for i, record in enumerate(records) if look(record))

    def judge_again(self, tp: Any) -> None:
        """Tell again which of the records held of `tp` may be events: the judgement changed
        (a partition suspected of a flood made to pass the cheap look: suspicion.py)."""
        held = self._held.get(tp)
        if held is not None:
            look = self._urgent
            held.urgent = deque(held.taken + i for i, record in enumerate(held.records)
                                if look(record))

    def drop(self, tp: Any) -> None:
        """Forget what is held of `tp` (it was sought: it is read again from its new position)."""
        held = self._held.pop(tp, None)
        if held is not None:
            self._total -= held.size

    def keep_only(self, assigned: Iterable[Any]) -> None:
        """Forget what is held of partitions no longer assigned."""
        keep = set(assigned)
        for tp in [tp for tp in self._held if tp not in keep]:
            self.drop(tp)

    def clear(self) -> None:
        self._held.clear()
        self._total = 0
