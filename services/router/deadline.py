"""Acknowledgement deadlines: working time for ordinary alerts, wall-clock for urgent ones.

Pure: the caller passes the moment the clock is read elsewhere; the time zone rules come from
the system's tz database, which is data, not a clock.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from safehub.services.router.table import WorkingHours

_MS_PER_MINUTE = 60_000
# A window that never opens within a year is a configuration error, not a loop to spin on.
_MAX_DAYS = 400


def _local_ms(day: datetime, minute: int, hours: WorkingHours) -> int:
    """UTC milliseconds of `minute` after local midnight on `day` (1440 = the next midnight)."""
    base = day.date() + timedelta(days=minute // 1440)
    moment = datetime.combine(base, time(minute % 1440 // 60, minute % 60), tzinfo=hours.zone)
    return int(moment.timestamp() * 1000)


def add_working_time(start_ms: int, working_ms: int, hours: WorkingHours) -> int:
    """The moment `working_ms` of working time after `start_ms` has elapsed."""
    remaining = working_ms
    current = start_ms
    day = datetime.fromtimestamp(start_ms / 1000, tz=hours.zone)
    for _ in range(_MAX_DAYS):
        if day.weekday() in hours.days:
            opens = _local_ms(day, hours.start_minute, hours)
            closes = _local_ms(day, hours.end_minute, hours)
            if current < closes:
                begin = max(current, opens)
                if remaining <= closes - begin:
                    return begin + remaining
                remaining -= closes - begin
        next_midnight = datetime.combine(day.date() + timedelta(days=1), time(0), tzinfo=hours.zone)
        current = max(current, int(next_midnight.timestamp() * 1000))
        day = next_midnight
    raise ValueError("working hours never open: check the routing table")


def ack_deadline(
    sent_at: int, urgent: bool, hours: WorkingHours, working_hours: float, urgent_ms: int
) -> int:
    """When an alert sent at `sent_at` is overdue if nobody acknowledged it."""
    if urgent:
        return sent_at + urgent_ms
    return add_working_time(sent_at, int(working_hours * 60 * _MS_PER_MINUTE), hours)
