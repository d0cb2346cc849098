"""Attacks on the secure cluster, each tried as a hostile or mistaken client would, with a
positive control beside it (the same client doing what it may), so that a refusal is known to
be the broker's authorizer and not a broken client.

Everything here failed on the old PLAINTEXT broker without an authorizer: anyone could connect,
any agency could publish as another, read every topic, or delete `audit`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
)

from safehub.bus import admin_with, make_admin, make_consumer, make_producer, send_and_confirm
from safehub.connection import KafkaConnection, write_secret
from safehub.errors import BrokerError
from safehub.producers.publisher import Publisher, Undelivered
from safehub.producers.vault import Vault
from safehub.samples.children import KEY, sign_record
from safehub.schemas.vocabulary import Sector
from safehub.topics import service_group
from tests.conftest import Namespace
from tests.fixtures.privacy import broker_logs

pytestmark = pytest.mark.integration

AGENCY_A, AGENCY_B, HUB = "police-a", "school-b", "csc-x"
FAST: dict[str, Any] = {"request_timeout_ms": 8000,
        "reconnect_backoff_max_ms": 500}


@pytest.fixture
def ns(secure_namespace: Callable[..., Namespace]) -> Namespace:
    return secure_namespace(agencies={AGENCY_A: "POLICE", AGENCY_B: "EDUCATION"}, hubs=[HUB])


def _topics(ns: Namespace) -> list[str]:
    return sorted(ns.topic(n) for n in (
        f"ingress.{AGENCY_A}", f"ingress.{AGENCY_B}", f"alerts.{HUB}", f"alert-acks.{HUB}",
        "correlated", "audit", "deadletter", "correlator-blocks-changelog"))


def _end(kafka: KafkaConnection, topic: str) -> int:
    consumer = make_consumer(kafka, None)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def _refused(caplog: pytest.LogCaptureFixture, why: str | None = None,
             **settings: Any) -> str:
    """Connect an admin client with these settings: it must fail to bootstrap. `why`, if
    given, is the refusal as the client logged it. Returns what the client logged."""
    caplog.clear()
    started = time.monotonic()
    with pytest.raises(KafkaError):
        admin = admin_with({**FAST, "bootstrap_timeout_ms": 8000, **settings})
        try:
            admin.list_topics()
        finally:
            admin.close()
    assert time.monotonic() - started < 60
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("kafka"))
    if why is not None:
        assert why in logged, logged[-2000:]
    return logged


SCRAM_REFUSAL = "invalid credentials with SASL mechanism SCRAM-SHA-512"


def _scram_refusals() -> int | None:
    """Failed SCRAM logins the session cluster's brokers logged (None for an outside cluster,
    whose logs are not ours to read)."""
    logs = broker_logs()
    if not logs:
        return None
    return sum(log.read_text(errors="replace").count(SCRAM_REFUSAL) for log in logs)


def _refused_login(caplog: pytest.LogCaptureFixture, conn: KafkaConnection) -> str:
    """A SCRAM login that the broker refuses for its credentials: proven by the broker's own
    log (kafka-python often sees only the closed connection, not the error response)."""
    before = _scram_refusals()
    logged = _refused(caplog, **conn.kafka_python())
    if before is None:
        return logged
    deadline = time.monotonic() + 5
    while (_scram_refusals() or 0) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (_scram_refusals() or 0) > before
    return logged


# -- who may connect at all ---------------------------------------------------------------

def test_an_unauthenticated_client_is_refused(
        kafka: KafkaConnection, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="kafka")
    # Plain TCP gets no Kafka answer at all from a TLS listener.
    _refused(caplog, bootstrap_servers=kafka.bootstrap, security_protocol="PLAINTEXT")
    # TLS alone, with the right CA but no SASL, is not a login either: the broker answers the
    # version probe and drops the connection at the first real request.
    _refused(caplog, "socket disconnected", bootstrap_servers=kafka.bootstrap,
             security_protocol="SSL", ssl_cafile=str(kafka.ca_file))
    # Control: the same call as a principal works.
    admin = make_admin(kafka)
    try:
        assert isinstance(admin.list_topics(), list)
    finally:
        admin.close()


def test_a_wrong_password_or_an_unknown_principal_is_refused(
        ns: Namespace, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="kafka")
    wrong = tmp_path / f"{AGENCY_A}.password"
    write_secret(wrong, "not-the-password-of-police-a")
    real = ns.connection(AGENCY_A)
    impostor = KafkaConnection(real.bootstrap, AGENCY_A, wrong, real.ca_file)
    logged = _refused_login(caplog, impostor)
    assert "not-the-password" not in logged
    nobody = KafkaConnection(real.bootstrap, "police-nobody", wrong, real.ca_file)
    _refused_login(caplog, nobody)
    # Another principal's (real) password is not this principal's either.
    borrowed = KafkaConnection(real.bootstrap, AGENCY_A,
                               real.password_file.with_name(f"{AGENCY_B}.password"),
                               real.ca_file)
    logged = _refused_login(caplog, borrowed)
    assert borrowed.password() not in logged
    # Control: the right password connects.
    producer = make_producer(real, "attack-control")
    try:
        send_and_confirm(producer, ns.ingress(AGENCY_A), b"control", timeout=30)
    finally:
        producer.close()


# -- agencies --------------------------------------------------------------------------------

def test_an_agency_cannot_write_another_agencys_ingress(ns: Namespace) -> None:
    mine, theirs = ns.ingress(AGENCY_A), ns.ingress(AGENCY_B)
    producer = make_producer(ns.connection(AGENCY_A), "attack-a-as-b", max_block_ms=10_000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(theirs, b"forged").get(30)
        send_and_confirm(producer, mine, b"own", timeout=30)  # control
    finally:
        producer.close()
    assert _end(ns.kafka, theirs) == 0
    assert _end(ns.kafka, mine) == 1


def test_the_broker_refuses_what_agency_a_publishes_as_agency_b(
        ns: Namespace, tmp_path: Path) -> None:
    """The publisher builds a well-formed event naming agency B; the payload says B, the topic
    says B, but the authenticated principal is A, and that is what the broker goes by."""
    producer = make_producer(ns.connection(AGENCY_A), "attack-publisher", max_block_ms=10_000)
    vault = Vault.open(f"sqlite:///{tmp_path / 'vault.sqlite'}")
    try:
        forger = Publisher(producer, vault, KEY, AGENCY_B, Sector.EDUCATION, ns.prefix)
        outcomes = forger.publish_many([sign_record("R1"), sign_record("R2")])
        assert all(isinstance(o, Undelivered) for o in outcomes), outcomes
        assert {o.reason for o in outcomes if isinstance(o, Undelivered)} == {
            "TopicAuthorizationFailedError"}
        honest = Publisher(producer, vault, KEY, AGENCY_A, Sector.POLICE, ns.prefix)
        (report,) = honest.publish_many([sign_record("R3")])  # control
        assert not isinstance(report, Undelivered)
    finally:
        producer.close()
        vault.close()
    assert _end(ns.kafka, ns.ingress(AGENCY_B)) == 0


@pytest.mark.parametrize("agency", [AGENCY_A, AGENCY_B])
def test_no_agency_can_read_any_topic(ns: Namespace, agency: str) -> None:
    _seed(ns, _topics(ns))
    me = ns.connection(agency)
    own = ns.ingress(agency)
    # Its own ingress topic it may describe (to write it), so the fetch itself is refused.
    consumer = make_consumer(me, None, client_id=f"attack-{agency}", **FAST)
    try:
        tp = TopicPartition(own, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        with pytest.raises(TopicAuthorizationFailedError):
            _poll_for(consumer, 30)
    finally:
        consumer.close(autocommit=False)
    # Its re-identification service writes the audit log and dead letters: it may see those
    # (to write them) but, as with its ingress topic, never read them.
    for topic in (ns.audit, ns.deadletter):
        consumer = make_consumer(me, None, client_id=f"attack-{agency}-write-only", **FAST)
        try:
            consumer.assign([TopicPartition(topic, 0)])
            consumer.seek(TopicPartition(topic, 0), 0)
            with pytest.raises(TopicAuthorizationFailedError):
                _poll_for(consumer, 30)
        finally:
            consumer.close(autocommit=False)
    # Every other topic it may not even see.
    write_only = {own, ns.audit, ns.deadletter}
    _cannot_see_or_read(me, [t for t in _topics(ns) if t not in write_only])
    # Nor join a consumer group (here the hub's, whose alerts it would take).
    consumer = make_consumer(ns.connection(agency), service_group(ns.prefix, HUB),
                             [ns.topic(f"alerts.{HUB}")], **FAST)
    try:
        with pytest.raises((GroupAuthorizationFailedError, TopicAuthorizationFailedError)):
            _poll_for(consumer, 20)
    finally:
        consumer.close(autocommit=False)


def _seed(ns: Namespace, topics: list[str]) -> None:
    """A record on partition 0 of each topic, so that an empty poll cannot pass for a refusal."""
    producer = make_producer(ns.kafka, "attack-seed")
    try:
        for topic in topics:
            producer.send(topic, key=b"seed", value=b"seed", partition=0).get(30)
    finally:
        producer.close()


def _cannot_see_or_read(kafka: KafkaConnection, topics: list[str]) -> None:
    """The broker answers "not authorized" to `kafka`'s metadata request for each topic, and a
    consumer pointed at partition 0 of each (where _seed put a record) gets nothing at all."""
    producer = make_producer(kafka, f"attack-{kafka.principal}-describe", max_block_ms=10_000)
    try:
        for topic in topics:
            with pytest.raises(TopicAuthorizationFailedError):
                producer.partitions_for(topic)
    finally:
        producer.close(timeout=5)
    consumer = make_consumer(kafka, None, client_id=f"attack-{kafka.principal}", **FAST)
    try:
        parts = [TopicPartition(t, 0) for t in topics]
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, 0)
        assert consumer.partitions_for_topic(topics[0]) == set()
        assert _poll_for(consumer, 8, raise_refusal=False) == []
    finally:
        consumer.close(autocommit=False)


def _poll_for(consumer: KafkaConsumer, seconds: float, raise_refusal: bool = True
              ) -> list[Any]:
    """Whatever arrives within `seconds`; a refusal raises unless `raise_refusal` is off."""
    got: list[Any] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            batches = consumer.poll(timeout_ms=500)
        except TopicAuthorizationFailedError:
            if raise_refusal:
                raise
            continue
        for records in batches.values():
            got.extend(records)
    return got


# -- the audit topic --------------------------------------------------------------------------

def _retention(kafka: KafkaConnection, topic: str) -> str:
    admin = make_admin(kafka)
    try:
        found = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                       ["retention.ms"])])
    finally:
        admin.close()
    return str(_find_value(found, "retention.ms"))


def _find_value(found: Any, key: str) -> Any:
    """describe_configs' answer is nested dicts and lists: the value of `key` anywhere in it."""
    stack = [found]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if key in item:
                value = item[key]
                return value.get("value", value) if isinstance(value, dict) else value
            if item.get("name") == key and "value" in item:
                return item["value"]
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            if len(item) >= 2 and item[0] == key:
                return item[1]
            stack.extend(item)
    raise AssertionError(f"no {key} in {found!r}")


@pytest.mark.parametrize("principal", ["audit-sink", "router", "correlator", "auditor",
                                       AGENCY_A, HUB])
def test_no_one_but_admin_can_delete_audit_or_change_its_retention(
        ns: Namespace, principal: str) -> None:
    audit = ns.audit
    admin = make_admin(ns.connection(principal), f"attack-{principal}")
    try:
        result = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, audit, {"retention.ms": "1000"})],
            raise_on_unknown=False)
        assert "AuthorizationFailed" in str(result), result
        with pytest.raises(KafkaError) as caught:
            admin.delete_topics([audit], timeout_ms=10_000)
        assert "AuthorizationFailed" in type(caught.value).__name__
        with pytest.raises(KafkaError) as caught:
            admin.create_topics([NewTopic(ns.topic("squatted"), 1, 1)], timeout_ms=10_000)
        assert "AuthorizationFailed" in type(caught.value).__name__
    finally:
        admin.close()
    assert _retention(ns.kafka, audit) == "-1"
    assert audit in make_admin_topics(ns.kafka)


def make_admin_topics(kafka: KafkaConnection) -> set[str]:
    admin = make_admin(kafka)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def test_admin_can_change_audits_retention_and_delete_it(ns: Namespace) -> None:
    """The control for the test above: the same calls as admin succeed."""
    audit = ns.audit
    admin = make_admin(ns.kafka)
    try:
        result = admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, audit, {"retention.ms": "86400000"})],
            raise_on_unknown=False)
        assert "Error" not in str(result), result
    finally:
        admin.close()
    assert _retention(ns.kafka, audit) == "86400000"
    admin = make_admin(ns.kafka)
    try:
        admin.delete_topics([audit], timeout_ms=10_000)
    finally:
        admin.close()
    deadline = time.monotonic() + 30
    while audit in make_admin_topics(ns.kafka) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert audit not in make_admin_topics(ns.kafka)


# -- the auditor -------------------------------------------------------------------------------

def test_the_auditor_cannot_write_anything(ns: Namespace) -> None:
    auditor = ns.connection("auditor")
    for idempotent in (True, False):
        producer = make_producer(auditor, "attack-auditor", enable_idempotence=idempotent,
                                 max_block_ms=10_000, delivery_timeout_ms=15_000,
                                 request_timeout_ms=8_000, retries=0 if not idempotent
                                 else 2**31 - 1)
        try:
            for topic in _topics(ns):
                with pytest.raises((KafkaError, BrokerError)):
                    send_and_confirm(producer, topic, b"from the auditor", timeout=30)
        finally:
            producer.close(timeout=5)
    for topic in _topics(ns):
        assert _end(ns.kafka, topic) == 0, topic
    # Nor may it open a transaction under the correlator's ids.
    producer = make_producer(auditor, "attack-auditor-tx", max_block_ms=10_000,
                             transactional_id=f"{ns.prefix}correlator-attack")
    try:
        with pytest.raises((TransactionalIdAuthorizationFailedError, KafkaError)):
            producer.init_transactions()
    finally:
        producer.close(timeout=5)
    # Control: it reads (audit included), without a consumer group.
    consumer = make_consumer(auditor, None, client_id="attack-auditor-read", **FAST)
    try:
        tp = TopicPartition(ns.audit, 0)
        consumer.assign([tp])
        assert consumer.end_offsets([tp]) == {tp: 0}
    finally:
        consumer.close(autocommit=False)


def test_the_auditor_cannot_read_deadletter_or_join_a_group(ns: Namespace) -> None:
    auditor = ns.connection("auditor")
    _seed(ns, [ns.deadletter])
    _cannot_see_or_read(auditor, [ns.deadletter])
    consumer = make_consumer(auditor, service_group(ns.prefix, "router"),
                             [ns.correlated], **FAST)
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            _poll_for(consumer, 20)
    finally:
        consumer.close(autocommit=False)
