"""Everything `safehub deploy render` writes to deploy/k8s/, file by file. Pure."""

from __future__ import annotations

from safehub.deploy.render import network, strimzi, workloads
from safehub.deploy.render.pods import Manifest
from safehub.deploy.render.site import Site


def k8s_files(site: Site) -> dict[str, list[Manifest]]:
    return {
        "kafka-cluster.yaml": strimzi.cluster(site),
        "kafka-topics.yaml": strimzi.topics(site),
        "kafka-users.yaml": strimzi.users(site),
        "workloads.yaml": workloads.workloads(site),
        "network-policies.yaml": network.policies(site),
    }
