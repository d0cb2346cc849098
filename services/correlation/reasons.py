"""Why an alert fired, in plain words, from the same evidence and rules that raised it.

A pure function of the rules and the peak window's assessment (core.Assessment): the rule that
fired, then what the practitioner reading the alert most needs to know about its missing
episodes. For example: "3 different warning signs (missing from home or care, drug or alcohol
misuse, unexplained gifts or money) from 2 agencies within 34 days; 2 missing episodes without
a return interview within 72 hours". Counts, coded signs and the rules' own numbers only: never
an identifier, and no agency names (the alert lists its agencies).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from safehub.schemas.vocabulary import Indicator
from safehub.services.correlation import episodes
from safehub.services.correlation.rules import (
    DAY_MS,
    HOUR_MS,
    RULE_DISTINCT,
    RULE_INCIDENT,
    RULE_REPEATED_MISSING,
    RULE_UNDER_13,
    Rules,
)

if TYPE_CHECKING:
    from safehub.services.correlation.core import Assessment, Observation

# Where lower-casing the symbol does not read as words.
_WORDS = {
    "REPEAT_STI": "repeat sexually transmitted infections",
    "IN_HOSTEL_BB_OR_FOYER": "in a hostel, B and B or foyer",
    "SEXUAL_ORIENTATION_UNSURE_OR_UNDISCLOSED": "unsure about or not disclosing sexual "
                                                 "orientation",
    "UNDER_13_PENETRATIVE_SEX": "under 13 subjected to penetrative sex",
    "FOUND_IN_UNEXPLAINED_TOWN_HOTEL_OR_CLUB": "found in an unexplained town, hotel or club",
    "FOUND_IN_CAR_WITH_UNKNOWN_ADULTS": "found in a car with unknown adults",
    "SEEN_IN_AREA_KNOWN_FOR_SEX_WORK": "seen in an area known for sex work",
    "FOUND_IN_EXPLOITATION_PREMISES": "found in premises used for exploitation",
}


def words(indicator: Indicator) -> str:
    return _WORDS.get(indicator.value, indicator.value.lower().replace("_", " "))


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _within(observations: Sequence[Observation]) -> str:
    if not observations:
        return ""
    span = observations[-1].occurred_at - observations[0].occurred_at
    if span < DAY_MS:
        return " on one day" if len(observations) > 1 else ""
    return f" within {_count(-(-span // DAY_MS), 'day')}"


def explain(rules: Rules, peak: Assessment) -> str:
    """The alert's reason: its rule in words, then its missing episodes (see module doc)."""
    table = rules.by_indicator
    signs = [o for o in peak.evidence if not table[o.indicator].vulnerability]
    agencies = _count(len({o.agency_id for o in signs}), "agency", "agencies")
    within = _within(signs)
    kinds = sorted({o.indicator for o in signs if _distinct(rules, o)}, key=lambda i: i.value)
    names = ", ".join(words(i) for i in kinds)
    if peak.rule == RULE_INCIDENT:
        incidents = sorted({o.indicator for o in signs if table[o.indicator].incident},
                           key=lambda i: i.value)
        lead = (f"significant incident ({', '.join(words(i) for i in incidents)}) from "
                f"{agencies}: high at once")
    elif peak.rule == RULE_UNDER_13:
        under = [o for o in signs if table[o.indicator].sexual_activity
                 and o.age_years < rules.sexual_activity_under_age]
        lead = (f"{', '.join(sorted({words(o.indicator) for o in under}))} for a child under "
                f"{rules.sexual_activity_under_age}: high at once")
    elif peak.rule == RULE_DISTINCT:
        lead = f"{_count(len(kinds), 'different warning sign')} ({names}) from {agencies}{within}"
    elif peak.rule == RULE_REPEATED_MISSING and rules.episodes is not None:
        ep = rules.episodes
        repeated = [o for o in signs if o.episode is not None
                    and episodes.is_sign(ep, o.episode)
                    and o.occurred_at > peak.anchor - ep.pattern_ms]
        lead = (f"{_count(len(repeated), 'missing episode')}{_within(repeated)}: a pattern "
                f"({ep.pattern_episodes} within {_count(ep.pattern_ms // DAY_MS, 'day')} is "
                f"{ep.pattern_tier.value.lower()})")
    else:
        factor = (f", x{rules.multi_agency_factor:g} as more than one agency saw them"
                  if len({o.agency_id for o in signs}) >= rules.multi_agency_min
                  and rules.multi_agency_factor != 1.0 else "")
        threshold = {"HIGH": rules.high, "ESCALATING": rules.escalating}.get(
            peak.tier.value, rules.emerging)
        lead = (f"{_what(signs)} from {agencies}{within} scoring {peak.score:g} "
                f"({peak.tier.value.lower()} from {threshold:g}){factor}")
    text = "; ".join([lead, *_episode_notes(rules, signs)])
    return text[:1].upper() + text[1:]


def _distinct(rules: Rules, o: Observation) -> bool:
    """Whether the core counts `o` among the different warning signs (core._best): an episode by
    the episode rules, any other sign by the rules' table (format 3: heavy enough)."""
    if o.episode is not None and rules.episodes is not None:
        return episodes.is_sign(rules.episodes, o.episode)
    return rules.by_indicator[o.indicator].sign


def _what(signs: Sequence[Observation]) -> str:
    """The signs counted: "2 missing episodes", or "3 warning signs (2 missing episodes, ...)"."""
    held = [o.episode for o in signs if o.episode is not None]
    missing = sum(episodes.is_missing(e) for e in held)
    parts = [_count(n, f"{kind} episode") for n, kind in
             ((missing, "missing"), (len(held) - missing, "absent")) if n]
    if len(held) == len(signs):
        return ", ".join(parts)
    by_kind: dict[Indicator, int] = {}
    for o in signs:
        if o.episode is None:
            by_kind[o.indicator] = by_kind.get(o.indicator, 0) + 1
    for kind in sorted(by_kind, key=lambda i: i.value):
        n = by_kind[kind]
        parts.append(words(kind) + (f" {n} times" if n > 1 else ""))
    return f"{_count(len(signs), 'warning sign')} ({', '.join(parts)})"


def _episode_notes(rules: Rules, signs: Sequence[Observation]) -> list[str]:
    ep = rules.episodes
    held = [o for o in signs if o.episode is not None]
    if ep is None or not held:
        return []
    notes = []
    no_interview = sum(episodes.without_interview(ep, o.episode) for o in held
                       if o.episode is not None)
    if no_interview:
        notes.append(f"{_count(no_interview, 'missing episode')} without a return interview "
                     f"within {ep.interview_ms // HOUR_MS} hours")
    long = sum(episodes.is_long(ep, o.occurred_at, o.episode) for o in held
               if o.episode is not None)
    if long:
        notes.append(f"{_count(long, 'episode')} of {ep.long_ms // HOUR_MS} hours or more")
    return notes
