"""The Kafka cluster as Strimzi resources (kafka.strimzi.io/v1beta2): the cluster, its node
pool, one KafkaTopic per topic of deploy/topics.toml and one KafkaUser per principal of the
registry, whose ACLs are deploy/acl.py's grants and nothing else. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from safehub.deploy.acl import Grant, Operation, Pattern, Resource, grants
from safehub.deploy.registry import ADMIN
from safehub.deploy.render.site import KAFKA_TLS_PORT, Site
from safehub.deploy.topics import TopicSpec, registry_specs

API = "kafka.strimzi.io/v1beta2"
Manifest = dict[str, Any]
CLIENT_LABEL = "safehub.io/kafka-client"  # pods that may reach the brokers' listener

_RESOURCE = {Resource.TOPIC: "topic", Resource.GROUP: "group",
             Resource.TRANSACTIONAL_ID: "transactionalId"}
_PATTERN = {Pattern.LITERAL: "literal", Pattern.PREFIXED: "prefix"}
_OPERATION = {Operation.READ: "Read", Operation.WRITE: "Write", Operation.DESCRIBE: "Describe"}


def _meta(site: Site, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": site.namespace,
            "labels": {"strimzi.io/cluster": site.cluster,
                       "app.kubernetes.io/part-of": "safehub"}, **extra}


def kafka(site: Site) -> Manifest:
    return {
        "apiVersion": API,
        "kind": "Kafka",
        "metadata": {
            "name": site.cluster, "namespace": site.namespace,
            "labels": {"app.kubernetes.io/part-of": "safehub"},
            # KRaft with node pools; newer operators take both for granted, older need them.
            "annotations": {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"},
        },
        "spec": {
            "kafka": {
                "listeners": [{
                    "name": "tls", "port": KAFKA_TLS_PORT, "type": "internal", "tls": True,
                    "authentication": {"type": "scram-sha-512"},
                    # Strimzi writes the brokers' own NetworkPolicy from these peers: only
                    # pods labelled as safehub's Kafka clients reach the listener.
                    "networkPolicyPeers": [
                        {"podSelector": {"matchLabels": {CLIENT_LABEL: "true"}}}],
                }],
                # Only the admin principal may create topics or set ACLs (deploy/acl.py);
                # everyone else may do exactly what its KafkaUser's ACLs grant.
                "authorization": {"type": "simple", "superUsers": [ADMIN]},
                "config": {
                    "auto.create.topics.enable": False,
                    "allow.everyone.if.no.acl.found": False,
                    "default.replication.factor": 3,
                    "min.insync.replicas": 2,
                    "offsets.topic.replication.factor": 3,
                    "transaction.state.log.replication.factor": 3,
                    "transaction.state.log.min.isr": 2,
                },
            },
            "entityOperator": {"topicOperator": {}, "userOperator": {}},
        },
    }


def node_pool(site: Site) -> Manifest:
    return {
        "apiVersion": API,
        "kind": "KafkaNodePool",
        "metadata": _meta(site, f"{site.cluster}-nodes"),
        "spec": {
            # Three nodes, each broker and controller: a quorum of three survives one loss,
            # and replication 3 with min.insync.replicas 2 keeps acks=all writes going.
            "replicas": site.brokers,
            "roles": ["controller", "broker"],
            "storage": {"type": "jbod", "volumes": [{
                "id": 0, "type": "persistent-claim", "size": site.storage_size,
                "deleteClaim": False, "kraftMetadata": "shared"}]},
            "resources": {"requests": {"cpu": "1", "memory": "4Gi"},
                          "limits": {"memory": "4Gi"}},
        },
    }


def topic(site: Site, spec: TopicSpec) -> Manifest:
    config: dict[str, Any] = {}
    for key, value in spec.config.items():
        config[key] = int(value) if value.lstrip("-").isdigit() else value
    return {
        "apiVersion": API,
        "kind": "KafkaTopic",
        # Topic names are valid resource names (lower-case, '.', '-'); topicName says it.
        "metadata": _meta(site, spec.name),
        "spec": {"topicName": spec.name, "partitions": spec.partitions,
                 "replicas": spec.replication_factor, "config": config},
    }


def topics(site: Site) -> list[Manifest]:
    return [topic(site, s) for s in registry_specs(site.registry, site.brokers)]


def acl_rules(given: Iterable[Grant]) -> list[dict[str, Any]]:
    """Strimzi AclRules for grants: one rule per resource, its operations sorted."""
    by: dict[tuple[Resource, str, Pattern], set[Operation]] = {}
    for g in given:
        by.setdefault((g.resource, g.name, g.pattern), set()).add(g.operation)
    return [
        {"resource": {"type": _RESOURCE[res], "name": name, "patternType": _PATTERN[pattern]},
         "operations": sorted(_OPERATION[o] for o in ops)}
        for (res, name, pattern), ops in sorted(by.items())
    ]


def grants_of_user(principal: str, manifest: Manifest) -> set[Grant]:
    """The grants a KafkaUser's ACLs express: acl_rules read back (for checking)."""
    resource = {v: k for k, v in _RESOURCE.items()}
    pattern = {v: k for k, v in _PATTERN.items()}
    operation = {v: k for k, v in _OPERATION.items()}
    out = set()
    for rule in manifest["spec"].get("authorization", {}).get("acls", []):
        r = rule["resource"]
        for op in rule["operations"]:
            out.add(Grant(principal, resource[r["type"]], r["name"], operation[op],
                          pattern[r["patternType"]]))
    return out


def user(site: Site, principal: str, given: Iterable[Grant]) -> Manifest:
    spec: dict[str, Any] = {"authentication": {"type": "scram-sha-512"}}
    rules = acl_rules(given)
    if principal != ADMIN:
        spec["authorization"] = {"type": "simple", "acls": rules}
    # The User Operator makes the password and keeps it in the Secret named like the user
    # (key `password`), which the workloads mount as <principal>.password.
    return {"apiVersion": API, "kind": "KafkaUser", "metadata": _meta(site, principal),
            "spec": spec}


def users(site: Site) -> list[Manifest]:
    all_grants = grants(site.registry)
    out = [user(site, ADMIN, ())]  # the super user: no ACLs, Kafka's superUsers
    for party in sorted(site.registry.parties, key=lambda p: p.id):
        mine = [g for g in all_grants if g.principal == party.principal]
        out.append(user(site, party.principal, mine))
    return out


def cluster(site: Site) -> list[Manifest]:
    return [kafka(site), node_pool(site)]
