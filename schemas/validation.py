"""The contract's rules beyond Avro types, for events arriving on an `ingress.<agency>` topic.

The codec already guarantees the shapes it can (enum symbols, 32-byte match keys, and the
`safehub.pattern` of every string field: 32-hex ids, slugs, GSS codes). This module adds what
depends on meaning or on the context of arrival: ranges, event-time bounds, at least one match
key, and provenance (the agency named in the payload must be the one whose topic carried it).

Pure: `now_ms` is passed in by the shell, so the same event always gets the same verdict.
Every failure is a ValidationError naming the field and the rule, never the value.
"""

from __future__ import annotations

import re

from safehub import topics
from safehub.errors import ValidationError
from safehub.schemas.records import IngressEvent, MissingEpisodeEvent, Subject, WarningSignEvent

MIN_AGE_YEARS = 0
MAX_AGE_YEARS = 25
# Nothing the hub correlates predates the OCC Inquiry's period (August 2010); an older time is a
# unit mistake (seconds for milliseconds) or a default date, not a real observation.
EVENT_TIME_FLOOR_MS = 1_262_304_000_000  # 2010-01-01T00:00:00Z
# Agencies' clocks drift; a few minutes ahead is tolerated, more is a wrong clock or unit.
CLOCK_SKEW_MS = 5 * 60 * 1000
# The producers' block count (producers/matchkeys.py BLOCK_COUNT; a test keeps them equal).
# The schema allows any long and the Kafka key any 4 bytes, but a block no producer makes is a
# broken or hostile producer: each block seen holds state, so a flood of random blocks would
# exhaust the correlator's memory.
LINKAGE_BLOCKS = 4096
MAX_KEY_EPOCH = 2**31 - 1
GSS_CODE = re.compile(r"(E0[6-9]|E10|W06)[0-9]{6}")
HEX32 = re.compile(r"[0-9a-f]{32}")
MATCH_KEY_BYTES = 32


def agency_from_topic(topic: str, prefix: str = "") -> str:
    """The agency whose `ingress.<agency>` topic this is (after the deployment's prefix)."""
    return topics.party_of(topic, topics.Family.INGRESS, prefix)


def validate_ingress(event: IngressEvent, topic_agency: str, now_ms: int) -> None:
    """Raise ValidationError unless `event` may enter the hub from `topic_agency`'s topic."""
    if not isinstance(event, (WarningSignEvent, MissingEpisodeEvent)):
        raise ValidationError("value", "is not an ingress event")
    if HEX32.fullmatch(event.event_id) is None:
        raise ValidationError("event_id", "must be 32 lower-case hex characters")
    if event.agency_id != topic_agency:
        raise ValidationError("agency_id", "differs from the agency of the topic it arrived on")
    _check_time("occurred_at", event.occurred_at, now_ms)
    _check_time("reported_at", event.reported_at, now_ms)
    if event.reported_at < event.occurred_at:
        raise ValidationError("reported_at", "before occurred_at")
    _check_subject(event.subject)
    if isinstance(event, MissingEpisodeEvent) and event.ended_at is not None:
        _check_time("ended_at", event.ended_at, now_ms)
        if event.ended_at < event.occurred_at:
            raise ValidationError("ended_at", "before the episode started (occurred_at)")
    if (isinstance(event, MissingEpisodeEvent) and event.return_interview_done
            and not event.return_interview_offered):
        raise ValidationError("return_interview_done", "true although the interview was not "
                                                       "offered")


def _check_time(field: str, value: int, now_ms: int) -> None:
    if value < EVENT_TIME_FLOOR_MS:
        raise ValidationError(field, "before the event-time floor (2010-01-01)")
    if value > now_ms + CLOCK_SKEW_MS:
        raise ValidationError(field, "in the future")


def _check_subject(subject: Subject) -> None:
    if not MIN_AGE_YEARS <= subject.age_years <= MAX_AGE_YEARS:
        raise ValidationError("subject.age_years", f"must be {MIN_AGE_YEARS}-{MAX_AGE_YEARS}")
    if GSS_CODE.fullmatch(subject.local_authority) is None:
        raise ValidationError("subject.local_authority", "must be a 9-character GSS local "
                                                         "authority code")
    if (subject.placing_authority is not None
            and GSS_CODE.fullmatch(subject.placing_authority) is None):
        raise ValidationError("subject.placing_authority", "must be a 9-character GSS local "
                                                           "authority code")
    if not 0 <= subject.linkage_block < LINKAGE_BLOCKS:
        raise ValidationError("subject.linkage_block", f"must be 0-{LINKAGE_BLOCKS - 1}")
    if not 0 <= subject.key_epoch <= MAX_KEY_EPOCH:
        raise ValidationError("subject.key_epoch", "must not be negative")
    if HEX32.fullmatch(subject.reid_handle) is None:
        raise ValidationError("subject.reid_handle", "must be 32 lower-case hex characters")
    present = subject.match_keys.present()
    if not present:
        raise ValidationError("subject.match_keys", "at least one match key is required")
    for name, value in present:
        if len(value) != MATCH_KEY_BYTES:
            raise ValidationError(f"subject.match_keys.{name}", "must be 32 bytes")
    values = [value for _, value in present]
    if len(set(values)) != len(values):
        # Keys carry different domain tags, so equal keys mean a broken producer.
        raise ValidationError("subject.match_keys", "two match keys are identical")
