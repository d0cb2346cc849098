"""Ingress rules beyond Avro types: each failure names the field and the rule, never a value."""

from __future__ import annotations

from typing import Any

import pytest

from safehub.errors import ValidationError
from safehub.samples import records as samples
from safehub.samples.records import T0
from safehub.schemas.records import MatchKeys, MissingEpisodeEvent, Subject, WarningSignEvent
from safehub.schemas.validation import (
    CLOCK_SKEW_MS,
    EVENT_TIME_FLOOR_MS,
    agency_from_topic,
    validate_ingress,
)

# The codec samples use a block beyond the producers' range (a large long, for the codec);
# validation refuses it, so these samples sit in a block producers make.
BLOCK = 4095


def subject(**changes: Any) -> Subject:
    return samples.subject(**{"linkage_block": BLOCK, **changes})


def sign_event(**changes: Any) -> WarningSignEvent:
    return samples.sign_event(**{"subject": subject(), **changes})


def missing_episode(**changes: Any) -> MissingEpisodeEvent:
    return samples.missing_episode(
        **{"subject": subject(placing_authority="E09000033", match_keys=MatchKeys()), **changes})

AGENCY = "police-west-yorkshire"
NOW = T0 + 86_400_000


def refused(event, field: str, agency: str = AGENCY, now: int = NOW) -> ValidationError:
    with pytest.raises(ValidationError) as err:
        validate_ingress(event, agency, now)
    assert err.value.field == field
    return err.value


def test_good_events_pass():
    validate_ingress(sign_event(), AGENCY, NOW)
    validate_ingress(missing_episode(agency_id=AGENCY, subject=subject()), AGENCY, NOW)
    validate_ingress(missing_episode(agency_id=AGENCY, subject=subject(), ended_at=None),
                     AGENCY, NOW)


def test_agency_must_be_the_topics():
    err = refused(sign_event(), "agency_id", agency="school-x")
    assert "topic" in err.rule


@pytest.mark.parametrize("age", [-1, 26, 200])
def test_age_outside_0_to_25(age):
    assert "0-25" in refused(sign_event(subject=subject(age_years=age)),
                             "subject.age_years").rule


@pytest.mark.parametrize("age", [0, 25])
def test_age_bounds_inclusive(age):
    validate_ingress(sign_event(subject=subject(age_years=age)), AGENCY, NOW)


def test_event_time_not_in_the_future_and_not_before_the_floor():
    refused(sign_event(occurred_at=NOW + CLOCK_SKEW_MS + 1,
                       reported_at=NOW + CLOCK_SKEW_MS + 1), "occurred_at")
    validate_ingress(sign_event(occurred_at=NOW + CLOCK_SKEW_MS,
                                reported_at=NOW + CLOCK_SKEW_MS), AGENCY, NOW)
    # Seconds sent where milliseconds belong land before the floor.
    refused(sign_event(occurred_at=T0 // 1000, reported_at=T0), "occurred_at")
    refused(sign_event(occurred_at=EVENT_TIME_FLOOR_MS - 1, reported_at=T0), "occurred_at")
    refused(sign_event(reported_at=T0 - 1), "reported_at")


def test_gss_codes():
    for bad in ("E08", "X08000035", "E05000001", "e08000035", "E0800003Z"):
        refused(sign_event(subject=subject(local_authority=bad)), "subject.local_authority")
    refused(sign_event(subject=subject(placing_authority="SW1A1AA")),
            "subject.placing_authority")
    for good in ("E06000001", "E10000002", "W06000015"):
        validate_ingress(sign_event(subject=subject(local_authority=good)), AGENCY, NOW)


def test_match_keys():
    refused(sign_event(subject=subject(match_keys=MatchKeys())), "subject.match_keys")
    refused(sign_event(subject=subject(match_keys=MatchKeys(mk1=b"\x01" * 31))),
            "subject.match_keys.mk1")
    refused(sign_event(subject=subject(match_keys=MatchKeys(mk1=b"\x01" * 32,
                                                            mk2=b"\x01" * 32))),
            "subject.match_keys")


def test_ids_and_blocks():
    refused(sign_event(event_id="A" * 32), "event_id")
    refused(sign_event(subject=subject(reid_handle="x")), "subject.reid_handle")
    refused(sign_event(subject=subject(linkage_block=2**32)), "subject.linkage_block")
    refused(sign_event(subject=subject(linkage_block=BLOCK + 1)), "subject.linkage_block")
    refused(sign_event(subject=subject(linkage_block=-1)), "subject.linkage_block")
    refused(sign_event(subject=subject(key_epoch=-1)), "subject.key_epoch")


def test_missing_episode_rules():
    event = missing_episode(agency_id=AGENCY, subject=subject())
    refused(missing_episode(agency_id=AGENCY, subject=subject(), ended_at=T0 - 1), "ended_at")
    refused(missing_episode(agency_id=AGENCY, subject=subject(), ended_at=NOW + 10**9),
            "ended_at")
    refused(missing_episode(agency_id=AGENCY, subject=subject(),
                            return_interview_offered=False, return_interview_done=True),
            "return_interview_done")
    validate_ingress(event, AGENCY, NOW)


def test_messages_never_quote_the_value():
    err = refused(sign_event(subject=subject(local_authority="SMITH")), "subject.local_authority")
    assert "SMITH" not in str(err)


def test_not_an_ingress_event():
    with pytest.raises(ValidationError):
        validate_ingress("event", AGENCY, NOW)  # type: ignore[arg-type]


def test_agency_from_topic():
    assert agency_from_topic("ingress.police-x") == "police-x"
    assert agency_from_topic("t1a.ingress.school-y", "t1a.") == "school-y"
    for topic, prefix in [("alerts.police-x", ""), ("ingress.", ""), ("ingress.Police X", ""),
                          ("other.ingress.police-x", "t1."), ("ingress.a--b", "")]:
        with pytest.raises(ValidationError) as err:
            agency_from_topic(topic, prefix)
        assert err.value.field == "topic"
