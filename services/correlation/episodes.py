"""Missing episodes as practitioners read them: what one version of an episode record says.

An agency records a missing episode when the child goes missing, and updates the same record as
it goes on: the child found (the end), the return home interview offered and done. The producer
gives every version the record's event id, so the core holds one observation per episode and an
update replaces it (core.py). Which version is the latest is decided by `version_key` from the
versions themselves, never by arrival order, so any arrival order keeps the same one.

What the rules weigh (rules file, `[missing_episodes]`), all read from the version held:
- missing above absent;
- a long episode: it lasted `long_hours`, or was still open that long after it began as the
  agency recorded it (its `reported_at`);
- no return home interview within 72 hours of the return from a MISSING episode: the version
  was recorded at least `interview_hours` after the return and says the interview was not
  done. Only the record can say so: the core reads no clock, so an episode whose latest version
  was recorded before the deadline is not yet overdue, however much later its block's other
  events are.
"""

from __future__ import annotations

from dataclasses import dataclass

from safehub.schemas.frozen import quick_init
from safehub.schemas.records import MissingEpisodeEvent
from safehub.schemas.vocabulary import MissingType
from safehub.services.correlation.rules import EpisodeRules


@quick_init
@dataclass(frozen=True, slots=True)
class Episode:
    """What the rules need of one version of a missing episode (its start is the event time)."""

    missing_type: MissingType
    ended_at: int | None  # ms; None while the child is missing
    interview_offered: bool
    interview_done: bool
    reported_at: int  # ms: when the agency recorded this version


VersionKey = tuple[int, bool, int, bool, bool, bool]


def episode_of(event: MissingEpisodeEvent) -> Episode:
    return Episode(event.missing_type, event.ended_at, event.return_interview_offered,
                   event.return_interview_done, event.reported_at)


def version_key(episode: Episode | None) -> VersionKey:
    """Orders the versions of one record: the greatest is the latest.

    The latest recorded first; between versions recorded at the same time (an export that does
    not say when), the one that knows more: an end, a later end, the interview done, offered;
    then MISSING before ABSENT (the graver reading). None (an episode held before its details
    were kept, see snapshot.py) is older than any version.
    """
    if episode is None:
        return (-1, False, 0, False, False, False)
    return (episode.reported_at, episode.ended_at is not None, episode.ended_at or 0,
            episode.interview_done, episode.interview_offered,
            episode.missing_type is MissingType.MISSING)


def is_missing(episode: Episode) -> bool:
    return episode.missing_type is MissingType.MISSING


def is_long(rules: EpisodeRules, start: int, episode: Episode) -> bool:
    known_until = episode.ended_at if episode.ended_at is not None else episode.reported_at
    return known_until - start >= rules.long_ms


def without_interview(rules: EpisodeRules, episode: Episode) -> bool:
    """Whether the record says no return interview was done within the deadline.

    Only after a MISSING episode: the guidance asks for an interview when a child has been
    missing; an absent child (whereabouts known) is not offered one.
    """
    return (is_missing(episode) and episode.ended_at is not None and not episode.interview_done
            and episode.reported_at >= episode.ended_at + rules.interview_ms)


def weight(rules: EpisodeRules, start: int, episode: Episode) -> float:
    w = rules.missing_weight if is_missing(episode) else rules.absent_weight
    if is_long(rules, start, episode):
        w += rules.long_weight
    if without_interview(rules, episode):
        w += rules.no_interview_weight
    return w


def is_sign(rules: EpisodeRules, episode: Episode) -> bool:
    """Whether the episode is the MISSING_FROM_HOME_OR_CARE sign: a distinct sign, and one
    towards the pattern (else it only adds its weight)."""
    return rules.absent_is_sign or is_missing(episode)
