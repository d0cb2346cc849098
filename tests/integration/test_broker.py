"""kafka-python against the real broker, with the project's delivery settings."""

from __future__ import annotations

import time

import pytest

from safehub.bus import make_consumer, make_producer, send_all, send_and_confirm
from safehub.deploy.registry import load_registry
from safehub.deploy.topics import (
    broker_count,
    create_topics,
    load_specs,
    onboarding_notice,
    registry_specs,
)
from safehub.errors import BrokerError

pytestmark = pytest.mark.integration


def test_produce_and_consume_round_trip(kafka, topic_names, create_topics_fn):
    (topic,) = create_topics_fn(topic_names("roundtrip"), partitions=3)
    producer = make_producer(kafka, "test-producer")
    sent = {f"k{i}".encode(): f"v{i}".encode() for i in range(200)}
    reports = send_all(producer, [(topic, k, v, [("h", b"1")]) for k, v in sent.items()])
    producer.close()
    assert len(reports) == 200 and {r.topic for r in reports} == {topic}

    consumer = make_consumer(kafka, topic_names("group"), [topic])
    got: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 30
    while len(got) < len(sent) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for r in records:
                got[r.key] = r.value
                assert r.headers == [("h", b"1")]
    consumer.commit()
    consumer.close()
    assert got == sent


def test_same_key_same_partition(kafka, topic_names, create_topics_fn):
    (topic,) = create_topics_fn(topic_names("keyed"), partitions=6)
    producer = make_producer(kafka, "test-keyed")
    reports = [send_and_confirm(producer, topic, b"x", key=b"\x00\x00\x01\x02") for _ in range(10)]
    producer.close()
    assert len({r.partition for r in reports}) == 1
    assert [r.offset for r in reports] == sorted(r.offset for r in reports)


def test_topics_created_from_definitions(kafka, topic_names):
    prefix = topic_names("")
    specs = load_specs(["police-x", "school-y"], broker_count(kafka), prefix=prefix,
                       hubs=["csc-z"])
    names = {s.name for s in specs}
    assert names == {prefix + n for n in (
        "ingress.police-x", "ingress.school-y", "alerts.csc-z", "alert-acks.csc-z",
        "reid-requests.police-x", "reid-requests.school-y", "reid-responses.csc-z",
        "correlated", "audit", "deadletter", "correlator-blocks-changelog")}
    created = create_topics(kafka, specs)
    assert set(created) == names
    # The operator is told to restart the correlator for the new agencies' ingress topics,
    # and only when one was created.
    notice = onboarding_notice(created)
    assert notice is not None and "restart the correlator" in notice
    assert prefix + "ingress.police-x" in notice and prefix + "ingress.school-y" in notice
    assert "alerts." not in notice and "audit" not in notice
    assert create_topics(kafka, specs) == []  # idempotent
    assert onboarding_notice([]) is None

    consumer = make_consumer(kafka, None)
    parts = consumer.partitions_for_topic(prefix + "ingress.police-x")
    changelog = consumer.partitions_for_topic(prefix + "correlator-blocks-changelog")
    consumer.close()
    assert parts is not None and len(parts) == 6
    assert changelog == parts  # the correlator's table has one partition per ingress partition


def test_registry_specs_name_every_party_topic_once():
    registry = load_registry()
    specs = registry_specs(registry, 1, "p.")
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert {f"p.ingress.{a}" for a in registry.agencies} <= set(names)
    assert {f"p.alert-acks.{h}" for h in registry.hubs} <= set(names)
    assert not any(n.startswith("p.ingress.csc-") for n in names)  # a hub publishes nothing
    assert not any(n.startswith("p.alerts.police-") for n in names)  # an agency gets no alerts


def test_broker_does_not_auto_create_topics(kafka, topic_names):
    producer = make_producer(kafka, "test-nocreate", max_block_ms=3000)
    with pytest.raises(BrokerError):
        send_and_confirm(producer, topic_names("never-created"), b"x", timeout=5)
    producer.close(timeout=1)
    consumer = make_consumer(kafka, None)
    assert topic_names("never-created") not in consumer.topics()
    consumer.close()
