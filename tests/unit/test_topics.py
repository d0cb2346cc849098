"""safehub.topics: every name built and parsed back, with and without a prefix; bad names
refused with the part that is wrong; the same names as deploy/topics.toml and the registry."""

from __future__ import annotations

import tomllib

import pytest

from safehub import topics
from safehub.deploy.acl import all_topics as registry_topics
from safehub.deploy.registry import Service, load_registry
from safehub.deploy.topics import TOPICS_FILE
from safehub.topics import Family, Owner, TopicName, TopicNameError

PREFIXES = ("", "t0123456789.", "prod-")


@pytest.mark.parametrize("prefix", PREFIXES)
def test_per_agency_names_round_trip(prefix: str) -> None:
    assert topics.ingress(prefix, "police-wy") == f"{prefix}ingress.police-wy"
    assert topics.reid_requests(prefix, "police-wy") == f"{prefix}reid-requests.police-wy"
    for family, build in ((Family.INGRESS, topics.ingress),
                          (Family.REID_REQUESTS, topics.reid_requests)):
        name = build(prefix, "police-wy")
        assert topics.parse(name, prefix) == TopicName(family, "police-wy", prefix)
        assert str(topics.parse(name, prefix)) == name
        assert topics.party_of(name, family, prefix) == "police-wy"


@pytest.mark.parametrize("prefix", PREFIXES)
def test_per_hub_names_round_trip(prefix: str) -> None:
    assert topics.alerts(prefix, "csc-leeds") == f"{prefix}alerts.csc-leeds"
    assert topics.acks(prefix, "csc-leeds") == f"{prefix}alert-acks.csc-leeds"
    assert topics.reid_responses(prefix, "csc-leeds") == f"{prefix}reid-responses.csc-leeds"
    for family, build in ((Family.ALERTS, topics.alerts), (Family.ACKS, topics.acks),
                          (Family.REID_RESPONSES, topics.reid_responses)):
        name = build(prefix, "csc-leeds")
        assert topics.parse(name, prefix) == TopicName(family, "csc-leeds", prefix)
        assert topics.party_of(name, family, prefix) == "csc-leeds"


@pytest.mark.parametrize("prefix", PREFIXES)
def test_internal_names_round_trip(prefix: str) -> None:
    expected = {Family.CORRELATED: f"{prefix}correlated", Family.AUDIT: f"{prefix}audit",
                Family.DEADLETTER: f"{prefix}deadletter",
                Family.CHANGELOG: f"{prefix}correlator-blocks-changelog"}
    built = {Family.CORRELATED: topics.correlated(prefix), Family.AUDIT: topics.audit(prefix),
             Family.DEADLETTER: topics.deadletter(prefix),
             Family.CHANGELOG: topics.changelog_topic(prefix)}
    assert built == expected
    for family, name in expected.items():
        assert topics.parse(name, prefix) == TopicName(family, None, prefix)
        assert str(topics.parse(name, prefix)) == name


def test_groups_and_the_correlator_table() -> None:
    assert Service.CORRELATOR.value == topics.CORRELATOR
    assert topics.correlator_group("t1.") == "t1.correlator"
    assert topics.service_group("t1.", "csc-leeds") == "t1.csc-leeds"
    assert topics.table_changelog("my-app") == "my-app-blocks-changelog"
    assert topics.changelog_topic("t1.") == topics.table_changelog(topics.correlator_group("t1."))


@pytest.mark.parametrize(("name", "prefix", "family", "rule"), [
    ("alerts.csc-x", "t1.", None, "does not carry the configured topic prefix"),
    ("t1.bogus.csc-x", "t1.", None, "is not a safehub topic"),
    ("t1.correlated.x", "t1.", None, "is not a safehub topic"),
    ("t1.alerts.", "t1.", None, "hub part is not a lower-case slug"),
    ("t1.alerts.Csc X", "t1.", None, "hub part is not a lower-case slug"),
    ("t1.ingress.a--b", "t1.", None, "agency part is not a lower-case slug"),
    ("t1.ingress." + "a" * 65, "t1.", None, "agency part is not a lower-case slug"),
    ("t1.alerts.csc-x", "t1.", Family.INGRESS, "is not an ingress.<agency> topic"),
    ("t1.ingress.police-x", "t1.", Family.REID_REQUESTS,
     "is not a reid-requests.<agency> topic"),
    ("t1.audit", "t1.", Family.DEADLETTER, "is not a deadletter topic"),
])
def test_a_bad_name_is_refused_saying_what_is_wrong(
        name: str, prefix: str, family: Family | None, rule: str) -> None:
    with pytest.raises(TopicNameError) as err:
        topics.parse(name, prefix, family)
    assert err.value.field == "topic"
    assert err.value.rule == rule


def test_party_of_a_shared_topic_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        topics.party_of("audit", Family.AUDIT)
    with pytest.raises(ValueError):
        Family.AUDIT.build("", "police-x")
    with pytest.raises(ValueError):
        Family.INGRESS.build("")


def test_family_filters_for_broker_listings() -> None:
    listed = ["t1.ingress.police-x", "t1.alerts.csc-x", "t2.ingress.police-x", "t1.audit",
              "t1.correlated", "t1.alert-acks.csc-x"]
    assert [t for t in listed if topics.in_family(t, Family.INGRESS, "t1.")] == \
        ["t1.ingress.police-x"]
    assert [t for t in listed if topics.in_family(t, Family.ALERTS, "t1.")] == ["t1.alerts.csc-x"]
    assert [t for t in listed if topics.in_family(t, Family.CORRELATED, "t1.")] == \
        ["t1.correlated"]
    assert topics.mentions_ingress("ingress.police-x")
    assert topics.mentions_ingress("t9.ingress.police-x")
    assert not topics.mentions_ingress("t9.alerts.police-x")


def test_all_topics_and_replay_targets() -> None:
    names = topics.all_topics(["police-x", "health-y"], ["csc-z"], "p.")
    assert names == sorted([
        "p.correlated", "p.audit", "p.deadletter", "p.correlator-blocks-changelog",
        "p.ingress.police-x", "p.ingress.health-y",
        "p.reid-requests.police-x", "p.reid-requests.health-y",
        "p.alerts.csc-z", "p.alert-acks.csc-z", "p.reid-responses.csc-z"])
    assert "p.correlator-blocks-changelog" not in topics.all_topics(
        ["police-x"], ["csc-z"], "p.", internal=False)
    for name in names:
        topics.parse(name, "p.")  # every name it makes parses back
    assert topics.replay_targets(["police-x", "health-y"], "p.") == \
        ["p.correlated", "p.ingress.health-y", "p.ingress.police-x"]


def test_the_registry_topics_are_the_modules() -> None:
    registry = load_registry()
    assert registry_topics(registry, "p.") == topics.all_topics(
        registry.agencies, registry.hubs, "p.")


def test_topics_toml_defines_exactly_the_families() -> None:
    """deploy/topics.toml holds each family's partitions and retention, named by template."""
    raw = tomllib.loads(TOPICS_FILE.read_text())
    assert sorted(t["name"] for t in raw["topic"]) == sorted(f.template for f in Family)
    assert {f.owner for f in Family} == set(Owner)
