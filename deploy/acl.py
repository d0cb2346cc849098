"""Who may do what on the cluster: ACLs derived from the agency registry. Pure.

Every grant is an ALLOW with a LITERAL resource name (a PREFIXED `ingress.agency-a` would also
match `ingress.agency-ab`), except the correlator's transactional ids: a worker without a worker
id makes a new random one per process, so they are PREFIXED `<prefix>correlator-`, a prefix no
other party id may take (registry.validate). The broker refuses everything not granted
(`allow.everyone.if.no.acl.found=false`); only the admin principal, a super user, may create,
delete or reconfigure topics.

`prefix` namespaces topic and group names, as everywhere else (SAFEHUB_TOPIC_PREFIX); the
principals are the party ids themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from safehub import topics
from safehub.deploy.registry import Kind, Registry, Service


class Resource(StrEnum):
    TOPIC = "topic"
    GROUP = "group"
    TRANSACTIONAL_ID = "transactional_id"


class Pattern(StrEnum):
    LITERAL = "literal"
    PREFIXED = "prefixed"


class Operation(StrEnum):
    READ = "read"
    WRITE = "write"
    DESCRIBE = "describe"


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    principal: str
    resource: Resource
    name: str
    operation: Operation
    pattern: Pattern = Pattern.LITERAL


def _topic(principal: str, name: str, *ops: Operation) -> list[Grant]:
    return [Grant(principal, Resource.TOPIC, name, op) for op in ops]


def _group(principal: str, name: str) -> Grant:
    return Grant(principal, Resource.GROUP, name, Operation.READ)


def grants(registry: Registry, prefix: str = "") -> list[Grant]:
    """Every ACL the cluster should hold for this registry, sorted."""
    r, w = Operation.READ, Operation.WRITE
    audit, deadletter = topics.audit(prefix), topics.deadletter(prefix)
    correlated = topics.correlated(prefix)
    out: list[Grant] = []

    def consuming_service(me: str) -> list[Grant]:
        # What every party that consumes as a service needs: it journals to audit,
        # dead-letters what it cannot use, and commits in its own consumer group.
        return (_topic(me, audit, w) + _topic(me, deadletter, w)
                + [_group(me, topics.service_group(prefix, me))])

    def reidentification(me: str, addressed_to_me: str, to_the_others: Iterable[str]
                         ) -> list[Grant]:
        # Either side of the exchange (agencies answer, hubs ask) reads only what is
        # addressed to it and writes to each party on the other side.
        return _topic(me, addressed_to_me, r) + [g for t in to_the_others for g in _topic(me, t, w)]

    for party in registry.parties:
        me = party.principal
        if party.kind is Kind.AGENCY:
            out += _topic(me, topics.ingress(prefix, party.id), w)
            # Its re-identification service answers any hub (sealed to that hub's key), and
            # records its officer's decisions.
            out += reidentification(me, topics.reid_requests(prefix, party.id),
                                    (topics.reid_responses(prefix, h) for h in registry.hubs))
            out += consuming_service(me)
        elif party.kind is Kind.HUB:
            out += _topic(me, topics.alerts(prefix, party.id), r)
            out += _topic(me, topics.acks(prefix, party.id), w)
            out += reidentification(me, topics.reid_responses(prefix, party.id),
                                    (topics.reid_requests(prefix, a) for a in registry.agencies))
            out += consuming_service(me)
        elif party.kind is Kind.AUDITOR:
            for name in all_topics(registry, prefix, internal=False):
                if name != deadletter:
                    out += _topic(me, name, r)
        elif party.id == Service.CORRELATOR:
            for agency in registry.agencies:
                out += _topic(me, topics.ingress(prefix, agency), r)
            out += _topic(me, topics.changelog_topic(prefix), r, w)
            out += _topic(me, correlated, w) + _topic(me, audit, w) + _topic(me, deadletter, w)
            out.append(_group(me, topics.correlator_group(prefix)))
            out += [Grant(me, Resource.TRANSACTIONAL_ID, f"{topics.correlator_group(prefix)}-", op,
                          Pattern.PREFIXED) for op in (w, Operation.DESCRIBE)]
        elif party.id == Service.ROUTER:
            out += _topic(me, correlated, r)
            for hub in registry.hubs:
                out += _topic(me, topics.alerts(prefix, hub), w)
                out += _topic(me, topics.acks(prefix, hub), r)
            out += consuming_service(me)
        elif party.id == Service.AUDIT_SINK:
            out += _topic(me, audit, r, w) + _topic(me, deadletter, w)
        elif party.id == Service.KEYSERVICE:
            out += _topic(me, audit, w)
        elif party.id == Service.DEADLETTER_OPERATOR:
            # Reads dead letters and writes its replay markers beside them; audits each replay;
            # writes only the topics a replay may go back to. No group: it reads by assignment.
            out += _topic(me, deadletter, r, w) + _topic(me, audit, w)
            for name in replay_targets(registry, prefix):
                out += _topic(me, name, w)
    return sorted(set(out))


def replay_targets(registry: Registry, prefix: str = "") -> list[str]:
    """The topics `safehub deadletter replay` may send a dead letter back to: the correlator's
    inputs (every `ingress.<agency>`: the agency of a replayed event is still the topic's, and
    the correlator checks the payload against it) and the router's (`correlated`). Not
    `alert-acks.<hub>` (the router refuses only forged acks there: never to be replayed), nor
    `alerts.<hub>` or a hub's re-identification topics, which would let an operator speak to a
    hub or an agency as the router or another party."""
    return topics.replay_targets(registry.agencies, prefix)


def all_topics(registry: Registry, prefix: str = "", internal: bool = True) -> list[str]:
    """Every topic of this registry (with the correlator's changelog when `internal`)."""
    return topics.all_topics(registry.agencies, registry.hubs, prefix, internal)


def principals(registry: Registry) -> list[str]:
    return sorted(p.principal for p in registry.parties)


def matrix(registry: Registry, prefix: str, given: Iterable[Grant]) -> list[tuple[str, str, str]]:
    """(principal, topic, rights) rows for display: rights like "read write" or "-"."""
    by: dict[tuple[str, str], set[str]] = {}
    for g in given:
        if g.resource is Resource.TOPIC:
            by.setdefault((g.principal, g.name), set()).add(g.operation.value)
    rows = []
    for p in principals(registry):
        for t in all_topics(registry, prefix):
            rights = by.get((p, t))
            if rights:
                rows.append((p, t, " ".join(sorted(rights))))
    return rows
