"""Telling a kafka-python consumer that has stopped fetching from one with nothing to fetch.

Why. In fault runs with a broker killed every 15 s (bench/fault_bench.py: runs C-E, K and O),
the router sometimes stopped consuming for good: its thread sat in `poll`, which kept
returning nothing, while thousands of alerts waited on `correlated` and no error was ever
raised (stack dump of run O). kafka-python 3.0.12 is then wedged in a way its own timeouts do
not catch; a new process with new clients reads on from the committed offsets.

The check: every `after_s` of successful steps during which no assigned partition's position
has moved (a failed step, such as a broker outage the loop is waiting out, starts it afresh:
seen in CI, where a router back from a 71 s outage was at once taken for stuck), ask the
brokers for the partitions' end offsets (bounded by the client's request timeout). Records
waiting that the consumer has not fetched for that long mean it is stuck. A position is past
transaction markers and aborted records once the consumer has fetched them (kafka-python, read
committed: checked against the real broker), so a consumer that has read everything is level
with the end offsets and never taken for stuck.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

log = logging.getLogger(__name__)

STALL_AFTER_S = 60.0


class FetchStall:
    def __init__(self, after_s: float = STALL_AFTER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.after_s = after_s
        self._now = clock
        self._positions: dict[TopicPartition, int | None] = {}
        self._since = clock()

    def reset(self) -> None:
        """Start the bound afresh: a step failed (an outage is waited out by the loop's own
        policy, and a consumer that just reconnected has not had its `after_s` yet)."""
        self._positions, self._since = {}, self._now()

    def check(self, consumer: Any) -> str | None:
        """Why `consumer` is taken to be stuck, or None. Cheap unless its positions have not
        moved for `after_s`."""
        now = self._now()
        positions = {tp: consumer.position(tp, timeout_ms=0) for tp in consumer.assignment()}
        if positions != self._positions:
            self._positions, self._since = positions, now
            return None
        still_s = now - self._since
        if still_s < self.after_s or not positions:
            return None
        self._since = now  # asked at most once per `after_s`
        try:
            ends = consumer.end_offsets(list(positions))
        except KafkaError as exc:
            # The brokers cannot say now: asked again after another `after_s`.
            log.info("could not read end offsets to check that consumption moves: %s",
                     type(exc).__name__)
            return None
        waiting = {tp: ends[tp] - p for tp, p in positions.items()
                   if p is not None and ends.get(tp) is not None and ends[tp] > p}
        if not waiting:
            return None
        return (f"{sum(waiting.values())} record(s) wait on {len(waiting)} partition(s) "
                f"({', '.join(sorted(f'{tp.topic}[{tp.partition}]' for tp in waiting))}) and "
                f"the consumer has fetched none of them for {still_s:.0f} s")
