"""NetworkPolicies: every safehub pod denied all traffic, then allowed only what it needs:
DNS, the brokers' TLS listener, PostgreSQL for the database writers, the hub web pages' and the
key service's HTTPS from outside, and the metrics scrape. Pure.

The brokers are not selected here: the Strimzi operator writes their policies itself (from the
listener's networkPolicyPeers, strimzi.py), and a namespace-wide deny would also cut them off
from each other and from the operator.
"""

from __future__ import annotations

from typing import Any

from safehub.deploy.render.pods import COMPONENT, Manifest
from safehub.deploy.render.site import (
    HEALTH_PORT,
    KAFKA_TLS_PORT,
    KEYSERVICE_PORT,
    WEB_TLS_PORT,
    Site,
)
from safehub.deploy.render.strimzi import CLIENT_LABEL

SAFEHUB_PODS: dict[str, Any] = {"matchExpressions": [{"key": COMPONENT, "operator": "Exists"}]}
POSTGRES_PODS = {"matchLabels": {"app.kubernetes.io/name": "safehub-postgres"}}
DATABASE_WRITERS = ["audit-sink", "inbox", "router", "web"]
MONITORING_NAMESPACE = "monitoring"  # where Prometheus runs; change to the cluster's


def _policy(site: Site, name: str, selector: dict[str, Any], types: list[str],
            ingress: list[dict[str, Any]] | None = None,
            egress: list[dict[str, Any]] | None = None) -> Manifest:
    spec: dict[str, Any] = {"podSelector": selector, "policyTypes": types}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": site.namespace,
                         "labels": {"app.kubernetes.io/part-of": "safehub"}},
            "spec": spec}


def _tcp(port: int | str) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def policies(site: Site) -> list[Manifest]:
    brokers = {"podSelector": {"matchLabels": {"strimzi.io/cluster": site.cluster,
                                               "strimzi.io/kind": "Kafka"}}}
    return [
        _policy(site, "safehub-default-deny", SAFEHUB_PODS, ["Ingress", "Egress"]),
        _policy(site, "safehub-dns", SAFEHUB_PODS, ["Egress"], egress=[{
            "to": [{"namespaceSelector": {"matchLabels": {
                        "kubernetes.io/metadata.name": "kube-system"}},
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, _tcp(53)]}]),
        _policy(site, "safehub-kafka-clients",
                {"matchLabels": {CLIENT_LABEL: "true"}}, ["Egress"],
                egress=[{"to": [brokers], "ports": [_tcp(KAFKA_TLS_PORT)]}]),
        _policy(site, "safehub-database-writers",
                {"matchExpressions": [{"key": COMPONENT, "operator": "In",
                                       "values": DATABASE_WRITERS}]}, ["Egress"],
                egress=[{"to": [{"podSelector": POSTGRES_PODS}], "ports": [_tcp(5432)]}]),
        # Hub users reach their web page through the cluster's ingress; the page's TLS proxy
        # is the only way in.
        _policy(site, "safehub-web-ingress",
                {"matchLabels": {"safehub.io/ingress": "web"}}, ["Ingress"],
                ingress=[{"ports": [_tcp(WEB_TLS_PORT)]}]),
        # Agencies' producers call the key service from their own networks.
        _policy(site, "safehub-keyservice-ingress",
                {"matchLabels": {"safehub.io/ingress": "keyservice"}}, ["Ingress"],
                ingress=[{"ports": [_tcp(KEYSERVICE_PORT)]}]),
        _policy(site, "safehub-metrics", SAFEHUB_PODS, ["Ingress"], ingress=[{
            "from": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": MONITORING_NAMESPACE}}}],
            "ports": [_tcp(HEALTH_PORT)]}]),
    ]
