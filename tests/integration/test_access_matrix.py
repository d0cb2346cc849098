"""The ACL matrix on the real secure broker, generated from the agency registry.

Rows: every principal of a registry x every topic of it x {produce, consume, describe, alter
config, delete}, plus consumer groups and the correlator's transactional ids. The expected
answer of each row is the issue's statement of who may do what (`expected` below), written
here apart from deploy/acl.py, which derives the ACLs the cluster holds: a mistake in either
shows as a row that disagrees. Allowed operations must work; forbidden ones must be refused with
an authorization error, not a timeout or any other error.

The registry is a cross-section of deploy/agencies.toml (the first party of every agency sector,
two hubs, every service and auditor) so that it runs in CI in seconds;
SAFEHUB_ACL_MATRIX=full runs the whole registry. A party added to the registry adds its rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AIOTopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.errors import TopicAuthorizationFailedError as AIOTopicAuthorizationFailedError
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
)

from safehub.bus import make_admin, make_consumer, make_producer
from safehub.connection import KafkaConnection
from safehub.deploy.acl import all_topics
from safehub.deploy.registry import ADMIN, Kind, Party, Registry, load_registry
from safehub.errors import BrokerError

pytestmark = pytest.mark.integration

OPERATIONS = ("produce", "consume", "describe", "alter_config", "delete")
AIOAUTH_ERRORS = (AIOTopicAuthorizationFailedError,)
AUTH_ERRORS = (TopicAuthorizationFailedError, GroupAuthorizationFailedError,
               TransactionalIdAuthorizationFailedError)


@pytest.fixture(autouse=True)
def quiet_clients():
    """Refusals are what this test expects: the clients' own error logging of each one is
    noise (hundreds of thousands of lines once)."""
    names = ("kafka", "aiokafka")
    before = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.CRITICAL)
    yield
    for n, level in before.items():
        logging.getLogger(n).setLevel(level)


def cross_section(full: Registry) -> Registry:
    if os.environ.get("SAFEHUB_ACL_MATRIX") == "full":
        return full
    chosen: list[Party] = []
    sectors = set()
    for p in full.parties:
        if p.kind is Kind.AGENCY and p.sector not in sectors:
            sectors.add(p.sector)
            chosen.append(p)
    chosen += list(full.of_kind(Kind.HUB)[:2])
    chosen += [p for p in full.parties if p.kind in (Kind.SERVICE, Kind.AUDITOR)]
    return Registry(tuple(chosen))


def expected(registry: Registry, prefix: str, principal: str, topic: str) -> set[str]:
    """What the issue says each principal may do on each topic."""
    if principal == ADMIN:
        return set(OPERATIONS)
    name = topic.removeprefix(prefix)
    party = registry.get(principal)
    kind, me = party.kind, party.id
    may: set[str] = set()
    if kind is Kind.AGENCY:
        if name == f"reid-requests.{me}":
            may = {"consume"}
        elif name == f"ingress.{me}" or name.startswith("reid-responses.") \
                or name in ("audit", "deadletter"):
            may = {"produce"}
    elif kind is Kind.HUB:
        if name in (f"alerts.{me}", f"reid-responses.{me}"):
            may = {"consume"}
        elif name in (f"alert-acks.{me}", "audit", "deadletter") \
                or name.startswith("reid-requests."):
            may = {"produce"}
    elif kind is Kind.AUDITOR:
        may = {"consume"} if name != "deadletter" and not name.endswith("-changelog") else set()
    elif me == "correlator":
        if name.startswith("ingress."):
            may = {"consume"}
        elif name.endswith("-changelog"):
            may = {"consume", "produce"}
        elif name in ("correlated", "audit", "deadletter"):
            may = {"produce"}
    elif me == "router":
        if name == "correlated" or name.startswith("alert-acks."):
            may = {"consume"}
        elif name.startswith("alerts.") or name in ("audit", "deadletter"):
            may = {"produce"}
    elif me == "audit-sink":
        if name == "audit":
            may = {"consume", "produce"}
        elif name == "deadletter":
            may = {"produce"}
    elif me == "keyservice" and name == "audit":
        may = {"produce"}
    elif me == "deadletter-operator":
        # Replays a dead letter to its source topic (ingress or correlated), audited, and
        # marks it replayed on `deadletter`; reads nothing else.
        if name == "deadletter":
            may = {"consume", "produce"}
        elif name.startswith("ingress.") or name in ("correlated", "audit"):
            may = {"produce"}
    return may | ({"describe"} if may else set())


@dataclass
class Outcome:
    allowed: bool
    detail: str


def _try(fn: Callable[[], object], bound_s: float = 30.0) -> Outcome:
    """Run one probe on a thread of its own, so that a client call that never returns (seen
    once in kafka-python's fetcher) is a wrong row, not a test that hangs."""
    result: list[Outcome] = []

    def probe() -> None:
        try:
            fn()
        except AUTH_ERRORS as exc:
            result.append(Outcome(False, type(exc).__name__))
        except KafkaError as exc:
            # Anything but an authorization error is a wrong answer, whatever was expected.
            result.append(Outcome(False, f"NOT AN AUTHORIZATION ERROR: {type(exc).__name__}: "
                                         f"{exc}"))
        else:
            result.append(Outcome(True, "ok"))

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(bound_s)
    return result[0] if result else Outcome(False, f"NOT AN AUTHORIZATION ERROR: no answer "
                                                   f"in {bound_s:.0f} s")


def _produce(conn: KafkaConnection, topics: list[str]) -> dict[str, Outcome]:
    return {t: asyncio.run(_bounded(_write_one(conn, t))) for t in topics}


def _consume(conn: KafkaConnection, topics: list[str]) -> dict[str, Outcome]:
    return {t: asyncio.run(_bounded(_read_one(conn, t))) for t in topics}


async def _bounded(probe: Awaitable[Outcome], bound_s: float = 30.0) -> Outcome:
    try:
        return await asyncio.wait_for(probe, bound_s)
    except TimeoutError:
        return Outcome(False, f"NOT AN AUTHORIZATION ERROR: no answer in {bound_s:.0f} s")


# The probes use aiokafka, one client per probe: kafka-python 3.0's consumer sometimes never
# returned from poll after a refused fetch, and a reused one did not report the next refusal
# (both found by this test).
async def _write_one(conn: KafkaConnection, topic: str) -> Outcome:
    producer = AIOKafkaProducer(**conn.aiokafka(), client_id=f"matrix-{conn.principal}",
                                acks="all", request_timeout_ms=10_000)
    try:
        await producer.start()
        await producer.send_and_wait(topic, b"matrix-probe", key=b"k", partition=0)
    except AIOAUTH_ERRORS as exc:
        return Outcome(False, type(exc).__name__)
    except AIOKafkaError as exc:
        return Outcome(False, f"NOT AN AUTHORIZATION ERROR: {type(exc).__name__}: {exc}")
    finally:
        await asyncio.wait_for(producer.stop(), 10)
    return Outcome(True, "ok")


async def _read_one(conn: KafkaConnection, topic: str) -> Outcome:
    """Allowed means a record was read (admin wrote one to every topic first), not merely that
    no error came back in time."""
    consumer = AIOKafkaConsumer(**conn.aiokafka(), group_id=None, enable_auto_commit=False,
                                client_id=f"matrix-{conn.principal}",
                                request_timeout_ms=10_000)
    try:
        await consumer.start()
        tp = AIOTopicPartition(topic, 0)
        consumer.assign([tp])
        await asyncio.wait_for(_first_record_or_refusal(consumer, tp), 15)
    except AIOAUTH_ERRORS as exc:
        return Outcome(False, type(exc).__name__)
    except (AIOKafkaError, TimeoutError) as exc:
        return Outcome(False, f"NOT AN AUTHORIZATION ERROR: {type(exc).__name__}: {exc}")
    finally:
        # A consumer refused a topic waits for its metadata before stopping; not worth waiting.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(consumer.stop(), 1)
    return Outcome(True, "ok")


async def _first_record_or_refusal(consumer: AIOKafkaConsumer, tp: AIOTopicPartition) -> None:
    """A topic the principal may not even describe is refused in the metadata answer
    (TOPIC_AUTHORIZATION_FAILED), which aiokafka's consumer only logs while it waits: read it
    from the client's metadata instead of waiting out the timeout."""
    async def read() -> None:
        await consumer.seek_to_beginning(tp)
        await consumer.getone()

    reading = asyncio.ensure_future(read())
    try:
        while not reading.done():
            if tp.topic in consumer._client.cluster.unauthorized_topics:
                raise AIOTopicAuthorizationFailedError(tp.topic)
            await asyncio.wait([reading], timeout=0.05)
        reading.result()
    finally:
        reading.cancel()


def _describe(conn: KafkaConnection, topics: list[str]) -> dict[str, Outcome]:
    consumer = make_consumer(conn, None, client_id=f"matrix-{conn.principal}")
    try:
        visible = consumer.topics()
    finally:
        consumer.close()
    return {t: Outcome(t in visible, "listed" if t in visible else "not listed") for t in topics}


def _alter_config(conn: KafkaConnection, topics: list[str]) -> dict[str, Outcome]:
    """Changing retention (validate_only: the broker authorizes first, then changes nothing)."""
    admin = make_admin(conn, f"matrix-{conn.principal}")
    out = {}
    try:
        for t in topics:
            def alter(t: str = t) -> None:
                result = admin.alter_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, t,
                                    configs={"retention.ms": "3600000"})],
                    validate_only=True, raise_on_unknown=False)
                answer = str(result.get("topic", {}).get(t, "no answer"))
                if "TopicAuthorizationFailed" in answer:
                    raise TopicAuthorizationFailedError(t)
                if answer != "OK":
                    raise KafkaError(answer)

            out[t] = _try(alter)
    finally:
        admin.close()
    return out


def _delete(conn: KafkaConnection, topics: list[str]) -> dict[str, Outcome]:
    """Only for principals that must not delete: a wrong answer deletes the topic."""
    admin = make_admin(conn, f"matrix-{conn.principal}")
    out = {}
    try:
        for t in topics:
            def delete(t: str = t) -> None:
                admin.delete_topics([t], timeout_ms=10_000)

            out[t] = _try(delete)
    finally:
        admin.close()
    return out


def test_every_principal_may_do_exactly_what_its_job_needs(secure_namespace):
    registry = cross_section(load_registry())
    ns = secure_namespace(registry=registry)
    topics = all_topics(registry, ns.prefix)
    wrong: list[str] = []
    rows = 0
    for principal in [ADMIN, *sorted(p.id for p in registry.parties)]:
        conn = ns.kafka if principal == ADMIN else ns.connection(principal)
        results = {
            "produce": _produce(conn, topics),
            "consume": _consume(conn, topics),
            "describe": _describe(conn, topics),
            "alter_config": _alter_config(conn, topics),
        }
        if principal != ADMIN:
            results["delete"] = _delete(conn, topics)
        for op, by_topic in results.items():
            for topic, outcome in by_topic.items():
                rows += 1
                want = op in expected(registry, ns.prefix, principal, topic)
                if outcome.allowed != want or "NOT AN AUTHORIZATION" in outcome.detail:
                    wrong.append(f"{principal} {op} {topic}: expected "
                                 f"{'allowed' if want else 'refused'}, got {outcome.detail}")
    # Admin may delete: last, on one topic, so that every other row saw every topic.
    victim = ns.deadletter
    make_admin(ns.kafka).delete_topics([victim], timeout_ms=10_000)
    rows += 1
    assert not wrong, f"{len(wrong)} of {rows} rows wrong:\n" + "\n".join(wrong[:60])
    assert rows >= len(registry.parties) * len(topics) * 4


def test_groups_and_transactional_ids_are_their_owners_only(secure_namespace):
    registry = cross_section(load_registry())
    ns = secure_namespace(registry=registry)
    own_group = {p.id: f"{ns.prefix}{p.id}" for p in registry.parties
                 if p.kind is Kind.HUB or p.id in ("router", "correlator")}
    wrong = []
    for principal in sorted(p.id for p in registry.parties):
        conn = ns.connection(principal)
        readable = [t for t in all_topics(registry, ns.prefix)
                    if "consume" in expected(registry, ns.prefix, principal, t)]
        for owner, group in own_group.items():
            consumer = make_consumer(conn, group, readable[:1] or [ns.audit],
                                     client_id="matrix-group")
            try:
                outcome = _try(lambda c=consumer: c.poll(timeout_ms=3000)
                               or c.poll(timeout_ms=3000))
            finally:
                consumer.close(autocommit=False)
            want = owner == principal and bool(readable)
            if outcome.allowed != want:
                wrong.append(f"{principal} joining group {group}: expected "
                             f"{'allowed' if want else 'refused'}, got {outcome.detail}")
        txn = f"{ns.prefix}correlator-matrix-{uuid.uuid4().hex[:6]}"
        outcome = _try(lambda c=conn, txn=txn: _init_transactions(c, txn))
        if outcome.allowed != (principal == "correlator"):
            wrong.append(f"{principal} transactional id {txn}: got {outcome.detail}")
    assert not wrong, "\n".join(wrong)


def _init_transactions(conn: KafkaConnection, transactional_id: str) -> None:
    producer = make_producer(conn, "matrix-txn", transactional_id=transactional_id,
                             max_block_ms=8000)
    try:
        producer.init_transactions()
    finally:
        producer.close(timeout=5)


def test_apply_is_idempotent_and_revokes_what_the_registry_drops(secure_namespace):
    from safehub.deploy.access import apply, held_grants
    from safehub.schemas.vocabulary import Sector

    ns = secure_namespace(agencies={"police-keep": "POLICE"}, hubs=["csc-keep"])
    leaving = Party("police-leaving", Kind.AGENCY, Sector.POLICE)
    bigger = ns.registry.with_parties([leaving])
    first = apply(ns.kafka, bigger, ns.prefix)
    again = apply(ns.kafka, bigger, ns.prefix)
    # Its ingress write and its 2 readers; its requests topic (its read, the hub's write, the
    # auditor's read); its answers to the hub, its audit and dead-letter writes, its group.
    assert first.created == 10 and again.created == again.deleted == 0

    def mine(principal: str) -> set[str]:
        return {g.name for g in held_grants(ns.kafka)
                if g.principal == principal and g.name.startswith(ns.prefix)}

    assert mine("police-leaving") == {ns.topic(t) for t in (
        "ingress.police-leaving", "reid-requests.police-leaving", "reid-responses.csc-keep",
        "audit", "deadletter", "police-leaving")}
    dropped = apply(ns.kafka, ns.registry, ns.prefix)
    assert dropped.deleted == 10 and dropped.created == 0
    assert dropped.revoked == ("police-leaving",)
    assert mine("police-leaving") == set()
    assert ns.ingress("police-leaving") not in mine("correlator")
    assert mine("police-keep") == {ns.topic(t) for t in (
        "ingress.police-keep", "reid-requests.police-keep", "reid-responses.csc-keep", "audit",
        "deadletter", "police-keep")}
    # It cannot sign in any more (the broker answers the kept agency, same settings but its own
    # password): refused at authentication, before any ACL is asked.
    make_admin(ns.connection("police-keep"), "matrix-kept", bootstrap_timeout_ms=10_000).close()
    with pytest.raises(BrokerError, match="Unable to bootstrap"):
        make_admin(ns.connection("police-leaving"), "matrix-gone", bootstrap_timeout_ms=5000)
