"""The services' clock: wall-clock milliseconds since the Unix epoch, the unit of every
timestamp in the records (occurred_at, raised_at, acks, audit entries). Services take it as a
callable so that tests can hand them a clock of their own."""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000
