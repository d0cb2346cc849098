"""The routing table (deploy/routing.toml): local authority -> lead agency, escalation receiver,
working hours; plus the fallback receiver for areas with no route, and the register of every
children's services authority in England and Wales (GSS code -> name), so that a route names a
real authority and an alert for an authority without a hub of its own is reported by name.

Loaded once by the router's command and passed down; the routing core only reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from safehub.config_files import read_toml
from safehub.errors import ConfigError

DEFAULT_ROUTING_PATH = Path(__file__).resolve().parents[2] / "deploy" / "routing.toml"

# Children's services authorities: English unitary (E06), metropolitan (E08), London (E09) and
# county (E10) councils, and Welsh principal areas (W06). E07 districts hold no children's
# services.
AUTHORITY_PREFIXES = ("E06", "E08", "E09", "E10", "W06")
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
    # Every authority the table knows (GSS code -> name); a known authority with no route goes
    # to the fallback like an unknown code, but is reported by name.
    authorities: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def name_of(self, code: str | None) -> str:
        return self.authorities.get(code or "", "unknown area")

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
    authorities = _authorities(raw.get("authorities", {}), source)
    routes: dict[str, Route] = {}
    for i, entry in enumerate(raw.get("route", [])):
        where = f"{source} route #{i + 1}"
        code = str(entry.get("local_authority", ""))
        if not _is_authority_code(code):
            raise ConfigError(f"{where}: local_authority must be the 9-character GSS code of a "
                              f"children's services authority ({', '.join(AUTHORITY_PREFIXES)})")
        if authorities and code not in authorities:
            raise ConfigError(f"{where}: {code} is not in [authorities]")
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
                        int(forget_days * 24 * _HOUR_MS), MappingProxyType(authorities))


def _is_authority_code(code: str) -> bool:
    return len(code) == 9 and code[:3] in AUTHORITY_PREFIXES and code[3:].isdigit()


def _authorities(raw: Any, source: str) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source} [authorities]: must be a table of GSS code = name")
    out: dict[str, str] = {}
    for code, name in raw.items():
        if not _is_authority_code(str(code)):
            raise ConfigError(f"{source} [authorities]: {code!r} is not the GSS code of a "
                              "children's services authority")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{source} [authorities]: {code} needs a name")
        out[str(code)] = name
    return out


def load_routing_table(path: Path = DEFAULT_ROUTING_PATH) -> RoutingTable:
    raw = read_toml(path)
    return parse_routing_table(raw, str(path))
