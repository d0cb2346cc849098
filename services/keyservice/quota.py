"""Per-agency quotas on evaluated elements, per minute and per UTC day: the accounting.

Pure: no clock (times come in as int ms UTC); the only I/O is reading the configuration and
reading and replacing the saved counters (read_counts, write_counts), which the service keeps
so that a restart does not give every agency a fresh minute and day.
Windows are fixed (the current UTC minute and day), so an operator can say exactly when a
limit resets. A batch is charged whole or refused whole: a refused request evaluates nothing
and costs nothing, and the refusal says which limit and when it resets.

The quota stops an insider from dictionary-searching the key space through the service: with
every match-key input costing one element, a day's limit bounds how many guessed identities
an agency can test.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from safehub.errors import ConfigError

MINUTE_MS = 60_000
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Limit:
    per_minute: int
    per_day: int


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    default: Limit
    agencies: Mapping[str, Limit] = field(default_factory=dict)

    def limit_for(self, agency: str) -> Limit:
        return self.agencies.get(agency, self.default)


# Defaults sized for an agency's daily exports: a publish batch of a few thousand events makes
# about five elements per event.
DEFAULT_LIMIT = Limit(per_minute=200_000, per_day=5_000_000)


def _limit(table: object, where: str, base: Limit) -> Limit:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(table) - {"per_minute", "per_day"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    values = {}
    for name in ("per_minute", "per_day"):
        value = table.get(name, getattr(base, name))
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}.{name} must be an integer >= 0")
        values[name] = value
    return Limit(**values)


def parse_quota_config(text: str, where: str = "quota config") -> QuotaConfig:
    """TOML: `[default] per_minute = .. per_day = ..` and `[agencies.<id>]` overriding either."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    unknown = set(doc) - {"default", "agencies"}
    if unknown:
        raise ConfigError(f"{where}: unknown tables {sorted(unknown)}")
    default = _limit(doc.get("default", {}), f"{where}: [default]", DEFAULT_LIMIT)
    agencies = doc.get("agencies", {})
    if not isinstance(agencies, dict):
        raise ConfigError(f"{where}: [agencies] must be a table")
    return QuotaConfig(default, {a: _limit(t, f"{where}: [agencies.{a}]", default)
                                 for a, t in agencies.items()})


def load_quota_config(path: Path | None) -> QuotaConfig:
    if path is None:
        return QuotaConfig(DEFAULT_LIMIT)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"quota config {path}: {exc.strerror}") from None
    return parse_quota_config(text, str(path))


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Refusal:
    agency: str
    window: str  # "minute" or "day"
    limit: int
    used: int
    requested: int
    resets_at_ms: int
    at_ms: int

    @property
    def message(self) -> str:
        seconds = max(0, -(-(self.resets_at_ms - self.at_ms) // 1000))
        if self.requested > self.limit:
            return (f"agency {self.agency}: a batch of {self.requested} elements is more than "
                    f"the per-{self.window} limit of {self.limit}; send smaller batches")
        return (f"agency {self.agency}: per-{self.window} quota of {self.limit} elements "
                f"exceeded ({self.used} used, {self.requested} requested); it resets at "
                f"{iso(self.resets_at_ms)} (in {seconds} s)")


@dataclass(frozen=True, slots=True)
class WindowUsage:
    used: int
    limit: int
    resets_at_ms: int


@dataclass(frozen=True, slots=True)
class Usage:
    agency: str
    minute: WindowUsage
    day: WindowUsage


@dataclass
class _Counter:
    minute: int = -1  # which minute (ms // MINUTE_MS) `in_minute` counts
    in_minute: int = 0
    day: int = -1
    in_day: int = 0

    def roll(self, now_ms: int) -> None:
        if now_ms // MINUTE_MS != self.minute:
            self.minute, self.in_minute = now_ms // MINUTE_MS, 0
        if now_ms // DAY_MS != self.day:
            self.day, self.in_day = now_ms // DAY_MS, 0


class QuotaBook:
    """Counts per agency. Not thread-safe: the server serialises calls."""

    def __init__(self, config: QuotaConfig) -> None:
        self.config = config
        self._counters: dict[str, _Counter] = {}

    def charge(self, agency: str, count: int, now_ms: int) -> Refusal | None:
        """Charge `count` elements now, or refuse the whole batch (nothing charged)."""
        limit = self.config.limit_for(agency)
        counter = self._counters.setdefault(agency, _Counter())
        counter.roll(now_ms)
        # The day limit is checked first: if both are hit, the later reset is the true one.
        if counter.in_day + count > limit.per_day:
            return Refusal(agency, "day", limit.per_day, counter.in_day, count,
                           (counter.day + 1) * DAY_MS, now_ms)
        if counter.in_minute + count > limit.per_minute:
            return Refusal(agency, "minute", limit.per_minute, counter.in_minute, count,
                           (counter.minute + 1) * MINUTE_MS, now_ms)
        counter.in_minute += count
        counter.in_day += count
        return None

    def usage(self, agencies: set[str] | frozenset[str], now_ms: int) -> list[Usage]:
        """Usage now of these agencies and of every agency that has used the service."""
        out = []
        for agency in sorted(set(agencies) | set(self._counters)):
            limit = self.config.limit_for(agency)
            counter = self._counters.get(agency, _Counter())
            minute = counter.in_minute if counter.minute == now_ms // MINUTE_MS else 0
            day = counter.in_day if counter.day == now_ms // DAY_MS else 0
            out.append(Usage(
                agency,
                WindowUsage(minute, limit.per_minute, (now_ms // MINUTE_MS + 1) * MINUTE_MS),
                WindowUsage(day, limit.per_day, (now_ms // DAY_MS + 1) * DAY_MS),
            ))
        return out

    def counts(self) -> dict[str, list[int]]:
        """The counters as plain data: {agency: [minute, in minute, day, in day]}."""
        return {a: [c.minute, c.in_minute, c.day, c.in_day] for a, c in self._counters.items()}

    def restore(self, counts: Mapping[str, object]) -> None:
        """Counters saved by `counts` (a restart must not hand every agency a fresh day)."""
        for agency, row in counts.items():
            if (not isinstance(row, list) or len(row) != 4
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in row)):
                raise ConfigError(f"quota state: bad counters for {agency!r}")
            self._counters[agency] = _Counter(*row)


def read_counts(path: Path) -> dict[str, object]:
    """Saved counters, or none if the file does not exist yet."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"quota state {path}: unreadable ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"quota state {path}: must be a JSON object")
    return doc


def write_counts(path: Path, counts: Mapping[str, list[int]]) -> None:
    """Replace the file atomically, so that a crash mid-write keeps the previous counts."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(counts))
    os.replace(tmp, path)
