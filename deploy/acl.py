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


CORRELATOR_TABLE = "blocks"  # the correlator's faust table of linkage-block states


def table_changelog(app_id: str) -> str:
    """faust's name for the correlator table's changelog: `<app id>-<table>-changelog`."""
    return f"{app_id}-{CORRELATOR_TABLE}-changelog"


def changelog_topic(prefix: str) -> str:
    """The changelog of the correlator with its default app id, the one its ACLs allow."""
    return table_changelog(correlator_group(prefix))


def correlator_group(prefix: str) -> str:
    """The correlator's faust app id, which is also its consumer group."""
    return f"{prefix}{Service.CORRELATOR}"


def service_group(prefix: str, principal: str) -> str:
    """The one consumer group a principal may use (hubs' inboxes, the router, the correlator)."""
    return f"{prefix}{principal}"


def ingress(prefix: str, agency: str) -> str:
    return f"{prefix}ingress.{agency}"


def alerts(prefix: str, hub: str) -> str:
    return f"{prefix}alerts.{hub}"


def acks(prefix: str, hub: str) -> str:
    return f"{prefix}alert-acks.{hub}"


def reid_requests(prefix: str, agency: str) -> str:
    return f"{prefix}reid-requests.{agency}"


def reid_responses(prefix: str, hub: str) -> str:
    return f"{prefix}reid-responses.{hub}"


def _topic(principal: str, name: str, *ops: Operation) -> list[Grant]:
    return [Grant(principal, Resource.TOPIC, name, op) for op in ops]


def _group(principal: str, name: str) -> Grant:
    return Grant(principal, Resource.GROUP, name, Operation.READ)


def grants(registry: Registry, prefix: str = "") -> list[Grant]:
    """Every ACL the cluster should hold for this registry, sorted."""
    r, w = Operation.READ, Operation.WRITE
    audit, deadletter, correlated = f"{prefix}audit", f"{prefix}deadletter", f"{prefix}correlated"
    out: list[Grant] = []
    for party in registry.parties:
        me = party.principal
        if party.kind is Kind.AGENCY:
            out += _topic(me, ingress(prefix, party.id), w)
            # Its re-identification service: reads only the requests made to it, answers any
            # hub (sealed to that hub's key), and records its officer's decisions.
            out += _topic(me, reid_requests(prefix, party.id), r)
            for hub in registry.hubs:
                out += _topic(me, reid_responses(prefix, hub), w)
            out += _topic(me, audit, w) + _topic(me, deadletter, w)
            out.append(_group(me, service_group(prefix, me)))
        elif party.kind is Kind.HUB:
            out += _topic(me, alerts(prefix, party.id), r)
            out += _topic(me, acks(prefix, party.id), w)
            out += _topic(me, reid_responses(prefix, party.id), r)
            for agency in registry.agencies:
                out += _topic(me, reid_requests(prefix, agency), w)
            out += _topic(me, audit, w) + _topic(me, deadletter, w)
            out.append(_group(me, service_group(prefix, me)))
        elif party.kind is Kind.AUDITOR:
            for name in all_topics(registry, prefix, internal=False):
                if name != deadletter:
                    out += _topic(me, name, r)
        elif party.id == Service.CORRELATOR:
            for agency in registry.agencies:
                out += _topic(me, ingress(prefix, agency), r)
            out += _topic(me, changelog_topic(prefix), r, w)
            out += _topic(me, correlated, w) + _topic(me, audit, w) + _topic(me, deadletter, w)
            out.append(_group(me, correlator_group(prefix)))
            out += [Grant(me, Resource.TRANSACTIONAL_ID, f"{correlator_group(prefix)}-", op,
                          Pattern.PREFIXED) for op in (w, Operation.DESCRIBE)]
        elif party.id == Service.ROUTER:
            out += _topic(me, correlated, r)
            for hub in registry.hubs:
                out += _topic(me, alerts(prefix, hub), w) + _topic(me, acks(prefix, hub), r)
            out += _topic(me, audit, w) + _topic(me, deadletter, w)
            out.append(_group(me, service_group(prefix, me)))
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
    return sorted([f"{prefix}correlated", *(ingress(prefix, a) for a in registry.agencies)])


def all_topics(registry: Registry, prefix: str = "", internal: bool = True) -> list[str]:
    """Every topic of this registry (with the correlator's changelog when `internal`)."""
    names = [f"{prefix}correlated", f"{prefix}audit", f"{prefix}deadletter"]
    names += [ingress(prefix, a) for a in registry.agencies]
    names += [reid_requests(prefix, a) for a in registry.agencies]
    for hub in registry.hubs:
        names += [alerts(prefix, hub), acks(prefix, hub), reid_responses(prefix, hub)]
    if internal:
        names.append(changelog_topic(prefix))
    return sorted(names)


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
