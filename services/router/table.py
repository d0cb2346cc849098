"""The routing table (deploy/routing.toml): local authority -> lead agency, escalation receiver,
working hours; plus the fallback receiver for areas with no route.

Loaded once by the router's command and passed down; the routing core only reads it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from safehub.errors import ConfigError

DEFAULT_ROUTING_PATH = Path(__file__).resolve().parents[2] / "deploy" / "routing.toml"

_DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class WorkingHours:
    timezone: str
    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start_minute: int  # minutes after local midnight
    end_minute: int  # exclusive; 1440 means midnight at the end of the day

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass(frozen=True, slots=True)
class Route:
    agency: str  # the receiver: its alerts land on alerts.<agency>
    escalation: str  # who gets an alert nobody acknowledged by its deadline
    hours: WorkingHours


@dataclass(frozen=True, slots=True)
class RoutingTable:
    routes: Mapping[str, Route]  # GSS code -> route
    fallback: Route
    ack_working_hours: float  # ordinary alerts: working hours of the receiver
    urgent_ack_ms: int  # significant incidents: wall-clock, around the clock
    repeat_interval_ms: int
    # A cluster with nothing left to do is forgotten this long after its newest alert arrived.
    forget_after_ms: int = 365 * 24 * _HOUR_MS

    def receivers(self) -> frozenset[str]:
        """Every agency the router may write to (their alert topics must exist)."""
        names = {self.fallback.agency, self.fallback.escalation}
        for route in self.routes.values():
            names.update((route.agency, route.escalation))
        return frozenset(names)

    def hours_for(self, agency: str) -> WorkingHours:
        for route in (*self.routes.values(), self.fallback):
            if agency in (route.agency, route.escalation):
                return route.hours
        return self.fallback.hours


def _minute(text: Any, where: str) -> int:
    try:
        hh, mm = str(text).split(":")
        value = int(hh) * 60 + int(mm)
    except ValueError as exc:
        raise ConfigError(f"{where}: time must be HH:MM, got {text!r}") from exc
    if not 0 <= value <= 1440 or not 0 <= int(mm) < 60:
        raise ConfigError(f"{where}: time out of range: {text!r}")
    return value


def _hours(entry: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> WorkingHours:
    merged = {**defaults, **entry}
    tz = str(merged.get("timezone", "Europe/London"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{where}: unknown timezone {tz!r}") from exc
    days_raw = merged.get("working_days", list(_DAYS[:5]))
    try:
        days = frozenset(_DAYS.index(str(d).upper()) for d in days_raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: working_days must be among {_DAYS}") from exc
    start = _minute(merged.get("start", "09:00"), where)
    end = _minute(merged.get("end", "17:00"), where)
    if not days or end <= start:
        raise ConfigError(f"{where}: working hours must be a non-empty window")
    return WorkingHours(tz, days, start, end)


def _route(entry: Mapping[str, Any], defaults: Mapping[str, Any], where: str) -> Route:
    try:
        agency = str(entry["agency"])
        escalation = str(entry["escalation"])
    except KeyError as exc:
        raise ConfigError(f"{where}: missing {exc.args[0]!r}") from exc
    if agency == escalation:
        # The inbox keeps one row per (agency, alert): a receiver cannot be its own escalation.
        raise ConfigError(f"{where}: escalation receiver must differ from the agency")
    return Route(agency, escalation, _hours(entry, defaults, where))


def parse_routing_table(raw: Mapping[str, Any], source: str = "routing table") -> RoutingTable:
    defaults = raw.get("defaults", {})
    hour_keys = ("timezone", "working_days", "start", "end")
    hour_defaults = {k: defaults[k] for k in hour_keys if k in defaults}
    if "fallback" not in raw:
        raise ConfigError(f"{source}: a [fallback] receiver is required")
    fallback = _route(raw["fallback"], hour_defaults, f"{source} [fallback]")
    routes: dict[str, Route] = {}
    for i, entry in enumerate(raw.get("route", [])):
        where = f"{source} route #{i + 1}"
        code = str(entry.get("local_authority", ""))
        if len(code) != 9 or code[:3] not in ("E06", "E07", "E08", "E09", "E10"):
            raise ConfigError(f"{where}: local_authority must be a 9-character GSS code")
        if code in routes:
            raise ConfigError(f"{where}: duplicate route for {code}")
        routes[code] = _route(entry, hour_defaults, where)
    try:
        ack_hours = float(defaults.get("ack_working_hours", 8))
        urgent = float(defaults.get("urgent_ack_hours", 4))
        repeat = float(defaults.get("repeat_interval_hours", 24))
        forget_days = float(defaults.get("forget_settled_after_days", 365))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: hour and day settings must be numbers") from exc
    if ack_hours <= 0 or urgent <= 0 or repeat < 0:
        raise ConfigError(f"{source}: hour settings must be positive")
    if forget_days * 24 <= repeat:
        raise ConfigError(f"{source}: forget_settled_after_days must be longer than the "
                          "repeat interval")
    return RoutingTable(routes, fallback, ack_hours, int(urgent * _HOUR_MS), int(repeat * _HOUR_MS),
                        int(forget_days * 24 * _HOUR_MS))


def load_routing_table(path: Path = DEFAULT_ROUTING_PATH) -> RoutingTable:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return parse_routing_table(raw, str(path))
