"""What one installation of safehub is made of: the parameters every renderer shares.

The registry (deploy/agencies.toml) says who the parties are; a `Site` says where they run:
the namespace, the image, how many correlator workers, the names of the Kafka cluster and of
the Secrets the operator provides. Pure values, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from safehub.deploy.registry import Registry
from safehub.deploy.topics import registry_specs
from safehub.topics import changelog_topic

HEALTH_PORT = 9102  # SAFEHUB_HEALTH_PORT in every container: /metrics, /livez, /readyz
WEB_PORT = 8080  # the hub web app, on the pod's loopback only (services/web/command.py HOST)
WEB_TLS_PORT = 8443  # the TLS proxy in front of it, the only port the web Service exposes
KEYSERVICE_PORT = 8443
KAFKA_TLS_PORT = 9093  # the Strimzi listener: TLS + SCRAM-SHA-512
RUN_AS = 10001  # the image's unprivileged user; secret files are copied to be owned by it


@dataclass(frozen=True, slots=True)
class Site:
    registry: Registry
    namespace: str = "safehub"
    image: str = "safehub:0.1.0"  # built from deploy/compose/Dockerfile
    cluster: str = "safehub-kafka"  # the Strimzi Kafka resource's name
    correlators: int = 3
    brokers: int = 3
    storage_size: str = "100Gi"
    postgres_host: str = "safehub-postgres"  # provided by the operator, not rendered here

    @property
    def bootstrap(self) -> str:
        # Strimzi's bootstrap Service for the cluster: <cluster>-kafka-bootstrap.
        return f"{self.cluster}-kafka-bootstrap.{self.namespace}.svc:{KAFKA_TLS_PORT}"

    @property
    def cluster_ca_secret(self) -> str:
        # Strimzi keeps the cluster CA's public certificate in <cluster>-cluster-ca-cert, ca.crt.
        return f"{self.cluster}-cluster-ca-cert"

    @property
    def correlator_partitions(self) -> int:
        """The table changelog's partitions in deploy/topics.toml, which every ingress topic
        shares (the correlator refuses to start otherwise): the most workers that get work."""
        changelog = changelog_topic("")
        return next(s.partitions for s in registry_specs(self.registry, self.brokers)
                    if s.name == changelog)

    def database_url(self, database: str) -> str:
        """A PostgreSQL URL without a password: libpq takes it from PGPASSFILE (a mounted
        file), so no password sits in an environment variable's value."""
        return f"postgresql+psycopg2://safehub@{self.postgres_host}:5432/{database}"


def database_name(kind: str, party_id: str = "") -> str:
    """PostgreSQL database names: letters, digits and underscores."""
    suffix = f"_{party_id.replace('-', '_')}" if party_id else ""
    return f"safehub_{kind}{suffix}"
