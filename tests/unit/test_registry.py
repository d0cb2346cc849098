"""The agency registry and what is derived from it: consistent with routing, the simulator and
the topic definitions; ACLs literal and least-privilege by construction."""

from __future__ import annotations

import random
from datetime import date

import pytest

from safehub.deploy.acl import Pattern, Resource, all_topics, grants
from safehub.deploy.registry import (
    Kind,
    Party,
    Registry,
    load_registry,
    parse_registry,
    validate,
)
from safehub.deploy.topics import registry_specs
from safehub.errors import ConfigError
from safehub.producers.simulation.world import AUTHORITY_CATALOGUE, make_world
from safehub.schemas.vocabulary import Sector
from safehub.services.router.table import load_routing_table


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry()


def test_every_routing_receiver_is_a_hub_and_routes_agree_with_leads_for(registry):
    table = load_routing_table()
    assert table.receivers() <= set(registry.hubs)
    for gss, route in table.routes.items():
        assert gss in registry.get(route.agency).leads_for, (gss, route.agency)
    for hub in registry.of_kind(Kind.HUB):
        for gss in hub.leads_for:
            assert table.routes[gss].agency == hub.id


def test_every_simulated_agency_is_in_the_registry(registry):
    world = make_world(random.Random(1), children=10, authorities=len(AUTHORITY_CATALOGUE),
                       start=date(2025, 1, 1))
    missing = set(world.agency_ids) - set(registry.agencies)
    assert not missing
    for agency in world.agencies:
        assert registry.get(agency.agency_id).sector is agency.sector


def test_topic_definitions_and_acl_topics_name_the_same_topics(registry):
    specs = {s.name for s in registry_specs(registry, 1, "p.")}
    assert specs == set(all_topics(registry, "p."))


def test_grants_are_literal_but_the_correlators_transactional_ids(registry):
    for g in grants(registry, "p."):
        if g.pattern is Pattern.PREFIXED:
            assert (g.principal, g.resource, g.name) == (
                "correlator", Resource.TRANSACTIONAL_ID, "p.correlator-")
        assert g.name.startswith("p.")


def test_an_agency_writes_its_ingress_and_answers_only_requests_made_to_it(registry):
    for agency in registry.agencies:
        mine = {(g.resource, g.name, g.operation.value) for g in grants(registry)
                if g.principal == agency}
        assert mine == {
            (Resource.TOPIC, f"ingress.{agency}", "write"),
            (Resource.TOPIC, f"reid-requests.{agency}", "read"),
            (Resource.TOPIC, "audit", "write"), (Resource.TOPIC, "deadletter", "write"),
            (Resource.GROUP, agency, "read"),
        } | {(Resource.TOPIC, f"reid-responses.{hub}", "write") for hub in registry.hubs}


def test_a_hub_reads_only_its_own_alerts_and_writes_only_its_own_acks(registry):
    for hub in registry.hubs:
        mine = {(g.name, g.operation.value) for g in grants(registry)
                if g.principal == hub and g.resource is Resource.TOPIC}
        assert mine == {(f"alerts.{hub}", "read"), (f"alert-acks.{hub}", "write"),
                        ("audit", "write"), ("deadletter", "write"),
                        (f"reid-responses.{hub}", "read")} | {
            (f"reid-requests.{agency}", "write") for agency in registry.agencies}


def test_adding_an_agency_adds_its_rows(registry):
    bigger = registry.with_parties([Party("police-new-force", Kind.AGENCY, Sector.POLICE)])
    added = set(grants(bigger)) - set(grants(registry))
    assert {(g.principal, g.name, g.operation.value) for g in added} == {
        ("police-new-force", "ingress.police-new-force", "write"),
        ("correlator", "ingress.police-new-force", "read"),
        ("deadletter-operator", "ingress.police-new-force", "write"),  # a replay target
        ("auditor", "ingress.police-new-force", "read"),
        ("police-new-force", "reid-requests.police-new-force", "read"),
        ("auditor", "reid-requests.police-new-force", "read"),
        ("police-new-force", "audit", "write"), ("police-new-force", "deadletter", "write"),
        ("police-new-force", "police-new-force", "read"),
    } | {("police-new-force", f"reid-responses.{hub}", "write") for hub in registry.hubs} | {
        (hub, "reid-requests.police-new-force", "write") for hub in registry.hubs}


@pytest.mark.parametrize("entry, message", [
    ({"id": "Police_X", "kind": "agency", "sector": "POLICE"}, "lower-case"),
    ({"id": "police.x", "kind": "agency", "sector": "POLICE"}, "lower-case"),
    ({"id": "admin", "kind": "auditor"}, "super user"),
    ({"id": "correlator-2", "kind": "agency", "sector": "POLICE"}, "may not start"),
    ({"id": "x", "kind": "agency"}, "needs a sector"),
    ({"id": "x", "kind": "hub", "leads_for": ["Z123"]}, "GSS"),
    ({"id": "x", "kind": "service"}, "is not one of"),
    ({"id": "x", "kind": "robot"}, "robot"),
])
def test_bad_entries_are_refused_with_the_reason(entry, message):
    with pytest.raises(ConfigError, match=message):
        parse_registry({"party": [entry]}, "agencies.toml")


def test_a_party_listed_twice_is_refused():
    p = Party("police-x", Kind.AGENCY, Sector.POLICE)
    with pytest.raises(ConfigError, match="twice"):
        validate([p, p], "agencies.toml")
