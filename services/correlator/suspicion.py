"""Partitions suspected of a flood made to pass the cheap look, and which of their records go
to the refusals lane (refusals.py) rather than to faust.

A flood made to pass `may_be_event` (a block key and an ingress schema header before bytes that
do not decode, or decodable events that break a rule) is told apart by its effect: once three
in four of the first SAMPLE records of a fetch that passed the look are refused by every rule
that does not depend on the time, or a batch refuses SUSPECT_AFTER or more of them, the
partition is suspected for SUSPECT_FOR_S, renewed while it goes on, and its records are also
checked by every rule that does not depend on the time (`BatchProcessor.refused_at_any_time`,
~10 us a record where the cheap look takes 0.3 us); those it refuses go to the lane too. An
agency's valid events pay that check only while its partition is suspected.

A record is judged when the fair share holds it (fairness.py: whether it may be an event decides
how much stands ahead of it) and again when faust reads it (whether it goes to the lane). The
verdict of the full check is kept from the first to the second, so a record pays it once. The
cheap look (0.3 us) is taken again instead, here and in the pipeline (app.py): keeping it would
save ~0.2 us a record, a few times over, against ~170 us for correlating an event, and cost a
dict entry for each of up to ~100,000 records held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any

from safehub.services.correlator.processing import Incoming, may_be_event

log = logging.getLogger(__name__)
SUSPECT_AFTER = 50  # records of a partition that passed the cheap look, refused in one batch
SAMPLE = 16  # records of a fetch that passed the cheap look, checked before the fetch is held
SUSPECT_FOR_S = 10.0


class Suspicion:
    def __init__(self, refused_at_any_time: Callable[[Incoming], bool] | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # None where the transport has no processor to ask (a client-only app): no suspicion.
        self._refused_at_any_time = refused_at_any_time
        self._clock = clock
        self._suspects: dict[Any, float] = {}  # (topic, partition) -> suspected until (clock)
        # (topic, partition, offset) -> refused at any time, judged when the record was held
        self._checked: dict[tuple[str, int, int], bool] = {}

    def suspected(self, tp: Any) -> bool:
        """Whether `tp`'s records are to be checked by every rule before faust sees them."""
        until = self._suspects.get(tp)
        if until is None:
            return False
        if until < self._clock():
            del self._suspects[tp]
            return False
        return True

    def refused(self, tp: Any, count: int) -> bool:
        """A batch refused `count` records of `tp` that passed the cheap look; True if that
        makes `tp` suspected, where it was not."""
        if count < SUSPECT_AFTER:
            return False
        return self._suspect(tp, f"{count} records that look like events refused in one batch")

    def sampled(self, tp: Any, looked: int, refused: int) -> bool:
        """Of the first `looked` records of a fetch of `tp` that passed the cheap look, every
        rule that ignores the time refuses `refused`; True if that makes `tp` suspected."""
        if looked < SAMPLE or refused * 4 < looked * 3:
            return False
        return self._suspect(tp, f"{refused} of the first {looked} records of a fetch that "
                                 "look like events refused")

    def sample(self, tp: Any, fetched: Sequence[Any]) -> bool:
        """Check the first records of a fetch of `tp` (aiokafka's) that pass the cheap look by
        every rule, unless `tp` is suspected already; True if that makes it suspected."""
        if self._refused_at_any_time is None or self.suspected(tp):
            return False
        looks = list(islice((r for r in fetched if may_be_event(r.key, r.value)), SAMPLE))
        return self.sampled(tp, len(looks), sum(map(self._refused_anyway, looks)))

    def may_be_event(self, record: Any) -> bool:
        """Whether a fetched record (aiokafka's) goes to faust rather than to the refusals lane:
        it passes the cheap look and, on a suspected partition, every rule that does not depend
        on the time. The verdict of that check is kept for `to_lane`."""
        if not may_be_event(record.key, record.value):
            return False
        if not self.suspected((record.topic, record.partition)):
            return True
        refused = self._checked[(record.topic, record.partition, record.offset)] = (
            self._refused_anyway(record))
        return not refused

    def to_lane(self, message: Any) -> bool:
        """Whether a message faust read goes to the refusals lane: as `may_be_event` judged its
        record when it was held, or, held before its partition was suspected, as judged now."""
        if not may_be_event(message.key, message.value):
            return True
        refused = self._checked.pop((message.topic, message.partition, message.offset), None)
        if refused is None:
            if not self.suspected((message.topic, message.partition)):
                return False
            refused = self._refused_anyway(message)
        return refused

    def forget(self, tps: Iterable[Any] | None = None) -> None:
        """Drop the kept verdicts of partitions `tps` (all if None): their records are read
        again, or are no longer this worker's."""
        if tps is None:
            self._checked.clear()
            return
        gone = set(tps)
        for key in [key for key in self._checked if key[:2] in gone]:
            del self._checked[key]

    def _refused_anyway(self, record: Any) -> bool:
        check = self._refused_at_any_time
        return check is not None and check(Incoming(record.topic, record.partition,
                                                    record.offset, record.key, record.value))

    def _suspect(self, tp: Any, why: str) -> bool:
        new = not self.suspected(tp)
        if new:
            log.warning("%s[%d]: %s; its records are checked by every rule before they are "
                        "queued, those refused go to the refusals lane", tp[0], tp[1], why)
        self._suspects[tp] = self._clock() + SUSPECT_FOR_S
        return new
