"""Shared fixtures: one real, secure Kafka cluster per test session, unique topics per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import pytest

from safehub import topics
from safehub.connection import KafkaConnection
from safehub.deploy.access import apply
from safehub.deploy.registry import ADMIN, Kind, Party, Registry, load_registry, validate
from safehub.deploy.topics import TopicSpec, create_topics, registry_specs
from safehub.schemas.vocabulary import Sector
from safehub.topics import Family

# Helpers shared by several test modules live in tests/fixtures/<area>.py, never in a test
# module, and so do the fixtures shared by several modules (one way for all of them, instead
# of conftest.py files per folder): served from here, so no test imports a fixture. Registered
# for assert rewriting before anything imports them, so their asserts report like the tests'.
pytest.register_assert_rewrite("tests.fixtures")
pytest_plugins = ("tests.fixtures.browser", "tests.fixtures.correlator",
                  "tests.fixtures.databases")


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaConnection]:
    """The admin principal of a real, secure cluster (SASL_SSL, SCRAM, ACLs): the one named by
    SAFEHUB_KAFKA_BOOTSTRAP and its SAFEHUB_KAFKA_SECRETS and SAFEHUB_KAFKA_CA_FILE if set,
    else a local cluster from the launcher. There is no insecure mode to fall back to."""
    if os.environ.get("SAFEHUB_KAFKA_BOOTSTRAP"):
        yield KafkaConnection.from_env(ADMIN)
        return
    from safehub.deploy.kafka.launcher import Cluster

    cluster = Cluster(f"pytest-{os.getpid()}")
    state = cluster.up(nodes=1)
    try:
        yield state.connection(ADMIN)
    finally:
        cluster.down(purge=True)


@dataclass(frozen=True)
class Namespace:
    """A test's own registry, topics and ACLs, under a prefix no other test uses."""

    kafka: KafkaConnection  # admin
    prefix: str
    registry: Registry

    def connection(self, principal: str) -> KafkaConnection:
        """The principal as the registry made it (only the ACLs of its kind)."""
        return self.kafka.as_principal(principal)

    def topic(self, name: str) -> str:
        """Any name under this namespace's prefix (prefer the named topics below)."""
        return self.prefix + name

    @property
    def audit(self) -> str:
        return topics.audit(self.prefix)

    @property
    def deadletter(self) -> str:
        return topics.deadletter(self.prefix)

    @property
    def correlated(self) -> str:
        return topics.correlated(self.prefix)

    def ingress(self, agency: str) -> str:
        return topics.ingress(self.prefix, agency)

    def env(self, principal: str) -> dict[str, str]:
        """What a service started as a child process needs to run as this principal here."""
        return {**self.connection(principal).env(), "SAFEHUB_TOPIC_PREFIX": self.prefix}


SERVICES = (Party("correlator", Kind.SERVICE), Party("router", Kind.SERVICE),
            Party("audit-sink", Kind.SERVICE), Party("auditor", Kind.AUDITOR))


@pytest.fixture
def secure_namespace(kafka: KafkaConnection) -> Callable[..., Namespace]:
    """secure_namespace(agencies={"police-x": "POLICE"}, hubs=["csc-x"]) -> Namespace: the
    registry's topics (one broker) and principals with exactly their ACLs, under a new prefix.
    With no arguments, the project's own registry (deploy/agencies.toml)."""

    def make(agencies: dict[str, str] | None = None, hubs: Iterable[str] = (),
             partitions: int | None = None, registry: Registry | None = None) -> Namespace:
        if registry is not None:
            pass
        elif agencies is None and not hubs:
            registry = load_registry()
        else:
            parties = [Party(a, Kind.AGENCY, Sector(s)) for a, s in (agencies or {}).items()]
            parties += [Party(h, Kind.HUB) for h in hubs]
            registry = Registry(validate((*parties, *SERVICES), "test registry"))
        prefix = "t" + uuid.uuid4().hex[:10] + "."
        specs = registry_specs(registry, 1, prefix)
        if partitions is not None:
            # The correlator's table is co-partitioned with the ingress topics.
            table = topics.changelog_topic(prefix)
            specs = [TopicSpec(s.name, partitions if s.name == table
                               or topics.in_family(s.name, Family.INGRESS, prefix)
                               else s.partitions, 1, s.config) for s in specs]
        create_topics(kafka, specs)
        apply(kafka, registry, prefix)
        return Namespace(kafka, prefix, registry)

    return make


@pytest.fixture
def topic_names(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Unique topic names for a test: topic_names("ingress.x") -> "t3f9a0b1c2d.ingress.x"."""
    prefix = "t" + uuid.uuid4().hex[:10] + "."
    del request
    return lambda name: prefix + name


@pytest.fixture
def create_topics_fn(kafka: KafkaConnection) -> Callable[..., list[str]]:
    """create_topics_fn(name, ..., partitions=N): create single-broker topics for a test."""

    def make(*names: str, partitions: int = 1, config: dict[str, str] | None = None) -> list[str]:
        specs = [TopicSpec(n, partitions, 1, dict(config or {})) for n in names]
        create_topics(kafka, specs)
        return list(names)

    return make


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A real PostgreSQL (installed and started by .ci/run). Skips locally if absent."""
    url = os.environ.get("SAFEHUB_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("SAFEHUB_TEST_POSTGRES_URL is not set in CI: .ci/run must start PostgreSQL")
        pytest.skip("SAFEHUB_TEST_POSTGRES_URL not set")
    return url
