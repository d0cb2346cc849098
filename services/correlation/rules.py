"""The correlation rules: a versioned data file (TOML) turned into one immutable value.

Format 2 adds `[missing_episodes]`: how a missing episode is weighed (missing above absent, a
long episode, no return home interview within 72 hours of the return) and when repeated
episodes are a pattern in themselves. A format 1 file (default-v1.toml) has no such section and
is read as it always was: every episode is the MISSING_FROM_HOME_OR_CARE sign at its sign
weight, an update of an episode is a duplicate, and alerts carry no explanation; so the
auditors' replay re-derives the alerts it raised exactly (see core.py).

Format 3 adds `high_at_once.distinct_sign_min_weight`: a sign weighing less (the rules' own
judgement that it says little on its own, e.g. absent from school) still adds its weight to the
score but is not one of the different warning signs that make an alert HIGH at once. Formats 1
and 2 count every sign, as they always did.

The version is the SHA-256 of the file's exact bytes, so an alert names precisely the rules
that raised it, and the auditors' replay finds them again with `rules_by_version`. A rules file
is checked completely when loaded: every Sign and Vulnerability must have a weight, every number
must make sense, and no unknown key is accepted (a typo would otherwise silently fall back to a
default). Anything wrong raises ConfigError naming the file and the key.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safehub.errors import ConfigError
from safehub.schemas.vocabulary import Indicator, Sign, SignificantIncident, Tier, Vulnerability

RULES_DIR = Path(__file__).with_name("rules")
DEFAULT_RULES_PATH = RULES_DIR / "default-v3.toml"
DAY_MS = 86_400_000
HOUR_MS = 3_600_000

# The ids of the rules an alert can name (CorrelatedAlert.rule).
RULE_INCIDENT = "significant-incident"
RULE_UNDER_13 = "sexual-activity-under-13"
RULE_DISTINCT = "distinct-signs"
RULE_SCORE = "score"
RULE_REPEATED_MISSING = "repeated-missing"

_SECTIONS: dict[str, frozenset[str]] = {
    "windows": frozenset({"sign_days", "vulnerability_days", "lateness_days"}),
    "tiers": frozenset({"emerging", "escalating", "high"}),
    "multi_agency": frozenset({"min_agencies", "factor"}),
    "high_at_once": frozenset({
        "distinct_signs", "sexual_activity_under_age", "sexual_activity_signs",
        "significant_incident_weight", "significant_incidents",
    }),
    "sign_weights": frozenset(Sign.__members__),
    "vulnerability_weights": frozenset(Vulnerability.__members__),
}
_EPISODE_KEYS = frozenset({
    "missing_weight", "absent_weight", "long_hours", "long_weight", "interview_hours",
    "no_interview_weight", "pattern_episodes", "pattern_days", "absent_is_sign",
    "pattern_tier",
})
_FORMATS = (1, 2, 3)
_FORMAT_3_HIGH_AT_ONCE = frozenset({"distinct_sign_min_weight"})


@dataclass(frozen=True, slots=True)
class EpisodeRules:
    """How missing episodes are read (format 2; see episodes.py)."""

    missing_weight: float  # an episode of type MISSING
    absent_weight: float  # an episode of type ABSENT
    long_ms: int  # an episode at least this long (or still open this long, as recorded) ...
    long_weight: float  # ... adds this
    interview_ms: int  # a return home interview is due within this of the return
    no_interview_weight: float  # added when a version recorded after that says it was not done
    pattern_episodes: int  # this many episodes ...
    pattern_ms: int  # ... starting within this (and within the sign window) are a pattern
    # Whether an ABSENT episode is the MISSING_FROM_HOME_OR_CARE sign (a distinct sign, and
    # towards the pattern); if not, it adds its weight to the score only.
    absent_is_sign: bool
    pattern_tier: Tier  # the least tier a pattern raises


@dataclass(frozen=True, slots=True)
class IndicatorRule:
    """What the rules say of one indicator (a sign, vulnerability or significant incident)."""

    weight: float
    window_ms: int  # how long it counts: the sign window, or the vulnerability window
    vulnerability: bool  # context only: never alerts alone, names no agency in the window
    sign: bool  # counts towards the distinct signs
    incident: bool  # a significant incident: HIGH at once
    sexual_activity: bool  # HIGH at once below the age limit


@dataclass(frozen=True, slots=True)
class Rules:
    version: str  # SHA-256 hex of the rules file's bytes
    sign_window_ms: int
    vulnerability_window_ms: int
    lateness_ms: int
    emerging: float
    escalating: float
    high: float
    multi_agency_min: int
    multi_agency_factor: float
    distinct_signs_high: int
    sexual_activity_under_age: int
    sexual_activity_signs: frozenset[Sign]
    significant_incidents: frozenset[SignificantIncident]
    significant_incident_weight: float
    sign_weights: Mapping[Sign, float]
    vulnerability_weights: Mapping[Vulnerability, float]
    episodes: EpisodeRules | None = None  # None: a format 1 file (see the module docstring)
    # Format 3: a sign weighing less is not one of the distinct signs (0: every sign is).
    distinct_sign_min_weight: float = 0.0

    # Derived from the fields above when the value is made: how the rules read each indicator,
    # in one lookup, because the core consults it for every event of every window it assesses.
    by_indicator: Mapping[Indicator, IndicatorRule] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        table: dict[Indicator, IndicatorRule] = {}
        for sign in Sign:
            table[sign] = IndicatorRule(
                self.sign_weights[sign], self.sign_window_ms, vulnerability=False,
                sign=self.sign_weights[sign] >= self.distinct_sign_min_weight,
                incident=False, sexual_activity=sign in self.sexual_activity_signs,
            )
        for vulnerability in Vulnerability:
            table[vulnerability] = IndicatorRule(
                self.vulnerability_weights[vulnerability], self.vulnerability_window_ms,
                vulnerability=True, sign=False, incident=False, sexual_activity=False,
            )
        for incident in SignificantIncident:
            table[incident] = IndicatorRule(
                self.significant_incident_weight, self.sign_window_ms, vulnerability=False,
                sign=False, incident=incident in self.significant_incidents,
                sexual_activity=False,
            )
        # The enums are StrEnums: a symbol shared by two of them would make one key of both.
        assert len(table) == len(Sign) + len(Vulnerability) + len(SignificantIncident)
        object.__setattr__(self, "by_indicator", table)

    @property
    def horizon_ms(self) -> int:
        """How far behind a block's newest event anything can still matter (for pruning)."""
        return max(self.sign_window_ms, self.vulnerability_window_ms) + self.lateness_ms


def load_rules(path: Path | str) -> Rules:
    """Read and check a rules file; ConfigError names the file and the offending key."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"rules file {p}: cannot read ({exc.strerror})") from exc
    return parse_rules(data, str(p))


def rules_by_version(version: str, directory: Path = RULES_DIR) -> Rules:
    """The rules whose file hashes to `version`, among those kept in `directory`."""
    for candidate in sorted(directory.glob("*.toml")):
        if hashlib.sha256(candidate.read_bytes()).hexdigest() == version:
            return load_rules(candidate)
    raise ConfigError(f"no rules file in {directory} has version {version}")


def parse_rules(data: bytes, source: str = "<rules>") -> Rules:
    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"rules file {source}: {key}: {problem}")

    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"rules file {source}: not valid TOML ({exc})") from exc
    fmt = raw.get("format")
    if isinstance(fmt, bool) or fmt not in _FORMATS:
        raise fail("format", "must be 1, 2 or 3")
    known = {**_SECTIONS, "missing_episodes": _EPISODE_KEYS} if fmt >= 2 else _SECTIONS
    if fmt >= 3:
        known["high_at_once"] = _SECTIONS["high_at_once"] | _FORMAT_3_HIGH_AT_ONCE
    for name in raw:
        if name != "format" and name not in known:
            raise fail(name, "unknown section")
    sections: dict[str, dict[str, Any]] = {}
    for name, allowed in known.items():
        section = raw.get(name)
        if not isinstance(section, dict):
            raise fail(name, "missing section")
        for key in section:
            if key not in allowed:
                raise fail(f"{name}.{key}", "unknown key")
        for key in allowed:
            if key not in section:
                raise fail(f"{name}.{key}", "missing")
        sections[name] = section

    def number(section: str, key: str, minimum: float, integer: bool = False) -> float:
        value = sections[section][key]
        ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok_type:
            raise fail(f"{section}.{key}", "must be an integer" if integer else "must be a number")
        if value < minimum:
            raise fail(f"{section}.{key}", f"must be at least {minimum}")
        return float(value)

    def symbols(section: str, key: str, enum: type[Sign] | type[SignificantIncident]) -> set[Any]:
        value = sections[section][key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(f"{section}.{key}", "must be a list of symbols")
        unknown = [v for v in value if v not in enum.__members__]
        if unknown:
            raise fail(f"{section}.{key}", f"unknown symbol {unknown[0]}")
        return {enum[v] for v in value}

    emerging = number("tiers", "emerging", 0.0)
    escalating = number("tiers", "escalating", 0.0)
    high = number("tiers", "high", 0.0)
    if not 0 < emerging < escalating < high:
        raise fail("tiers", "thresholds must satisfy 0 < emerging < escalating < high")
    sign_weights = {s: number("sign_weights", s.value, 0.0) for s in Sign}
    vulnerability_weights = {
        v: number("vulnerability_weights", v.value, 0.0) for v in Vulnerability
    }
    for v, w in vulnerability_weights.items():
        # Vulnerabilities never alert alone: a set of them scoring "emerging" without any sign
        # is still no alert (core enforces it), but a weight that large is surely a typo.
        if w >= emerging:
            raise fail(f"vulnerability_weights.{v.value}", "must be below tiers.emerging")
    return Rules(
        version=hashlib.sha256(data).hexdigest(),
        sign_window_ms=int(number("windows", "sign_days", 1, integer=True)) * DAY_MS,
        vulnerability_window_ms=int(number("windows", "vulnerability_days", 1, integer=True))
        * DAY_MS,
        lateness_ms=int(number("windows", "lateness_days", 0, integer=True)) * DAY_MS,
        emerging=emerging,
        escalating=escalating,
        high=high,
        multi_agency_min=int(number("multi_agency", "min_agencies", 2, integer=True)),
        multi_agency_factor=number("multi_agency", "factor", 1.0),
        distinct_signs_high=int(number("high_at_once", "distinct_signs", 2, integer=True)),
        sexual_activity_under_age=int(
            number("high_at_once", "sexual_activity_under_age", 0, integer=True)
        ),
        sexual_activity_signs=frozenset(symbols("high_at_once", "sexual_activity_signs", Sign)),
        significant_incidents=frozenset(
            symbols("high_at_once", "significant_incidents", SignificantIncident)
        ),
        significant_incident_weight=number("high_at_once", "significant_incident_weight", 0.0),
        sign_weights=sign_weights,
        vulnerability_weights=vulnerability_weights,
        episodes=(_episodes(sections["missing_episodes"], number, fail, emerging) if fmt >= 2
                  else None),
        distinct_sign_min_weight=(
            number("high_at_once", "distinct_sign_min_weight", 0.0) if fmt >= 3 else 0.0),
    )


def _episodes(section: dict[str, Any], number: Callable[..., float],
              fail: Callable[[str, str], ConfigError], emerging: float) -> EpisodeRules:
    name = "missing_episodes"
    missing = number(name, "missing_weight", 0.0)
    absent = number(name, "absent_weight", 0.0)
    if absent > missing:
        # Absent (not where expected, not thought at risk) never outweighs missing.
        raise fail(f"{name}.absent_weight", "must not exceed missing_weight")
    heaviest = (missing + number(name, "long_weight", 0.0)
                + number(name, "no_interview_weight", 0.0))
    if heaviest >= emerging:
        # One episode, however long and however handled, must not alert on its own.
        raise fail(name, "missing_weight + long_weight + no_interview_weight must be below "
                         "tiers.emerging")
    absent_is_sign = section["absent_is_sign"]
    if not isinstance(absent_is_sign, bool):
        raise fail(f"{name}.absent_is_sign", "must be true or false")
    tier = section["pattern_tier"]
    if not isinstance(tier, str) or tier not in Tier.__members__:
        raise fail(f"{name}.pattern_tier", "must be EMERGING, ESCALATING or HIGH")
    return EpisodeRules(
        missing_weight=missing,
        absent_weight=absent,
        long_ms=int(number(name, "long_hours", 1, integer=True)) * HOUR_MS,
        long_weight=number(name, "long_weight", 0.0),
        interview_ms=int(number(name, "interview_hours", 1, integer=True)) * HOUR_MS,
        no_interview_weight=number(name, "no_interview_weight", 0.0),
        pattern_episodes=int(number(name, "pattern_episodes", 2, integer=True)),
        pattern_ms=int(number(name, "pattern_days", 1, integer=True)) * DAY_MS,
        absent_is_sign=absent_is_sign,
        pattern_tier=Tier[tier],
    )
