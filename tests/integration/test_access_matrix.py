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

import logging
import os
import uuid

import pytest

from safehub.bus import make_admin, make_consumer, make_producer
from safehub.connection import KafkaConnection
from safehub.deploy.acl import all_topics
from safehub.deploy.registry import ADMIN, Kind, Party, Registry, load_registry
from safehub.errors import BrokerError
from tests.fixtures.access import (
    probe_alter_config,
    probe_consume,
    probe_delete,
    probe_describe,
    probe_produce,
    try_probe,
)

pytestmark = pytest.mark.integration

OPERATIONS = ("produce", "consume", "describe", "alter_config", "delete")


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


def test_every_principal_may_do_exactly_what_its_job_needs(secure_namespace):
    registry = cross_section(load_registry())
    ns = secure_namespace(registry=registry)
    topics = all_topics(registry, ns.prefix)
    wrong: list[str] = []
    rows = 0
    for principal in [ADMIN, *sorted(p.id for p in registry.parties)]:
        conn = ns.kafka if principal == ADMIN else ns.connection(principal)
        results = {
            "produce": probe_produce(conn, topics),
            "consume": probe_consume(conn, topics),
            "describe": probe_describe(conn, topics),
            "alter_config": probe_alter_config(conn, topics),
        }
        if principal != ADMIN:
            results["delete"] = probe_delete(conn, topics)
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
                outcome = try_probe(lambda c=consumer: c.poll(timeout_ms=3000)
                               or c.poll(timeout_ms=3000))
            finally:
                consumer.close(autocommit=False)
            want = owner == principal and bool(readable)
            if outcome.allowed != want:
                wrong.append(f"{principal} joining group {group}: expected "
                             f"{'allowed' if want else 'refused'}, got {outcome.detail}")
        txn = f"{ns.prefix}correlator-matrix-{uuid.uuid4().hex[:6]}"
        outcome = try_probe(lambda c=conn, txn=txn: _init_transactions(c, txn))
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
