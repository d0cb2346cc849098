"""Shared fixtures: one real Kafka cluster per test session, unique topics per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from safehub.deploy.topics import TopicSpec, create_topics


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real broker: SAFEHUB_KAFKA_BOOTSTRAP, else testcontainers, else the local launcher."""
    env = os.environ.get("SAFEHUB_KAFKA_BOOTSTRAP")
    if env:
        yield env
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from safehub.deploy.kafka.launcher import Cluster

    cluster = Cluster(f"pytest-{os.getpid()}")
    state = cluster.up(nodes=1)
    try:
        yield state.bootstrap
    finally:
        cluster.down()


@pytest.fixture
def topic_names(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Unique topic names for a test: topic_names("ingress.x") -> "t3f9a0b1c2d.ingress.x"."""
    prefix = "t" + uuid.uuid4().hex[:10] + "."
    del request
    return lambda name: prefix + name


@pytest.fixture
def create_topics_fn(kafka_bootstrap: str) -> Callable[..., list[str]]:
    """create_topics_fn(name, ..., partitions=N): create single-broker topics for a test."""

    def make(*names: str, partitions: int = 1, config: dict[str, str] | None = None) -> list[str]:
        specs = [TopicSpec(n, partitions, 1, dict(config or {})) for n in names]
        create_topics(kafka_bootstrap, specs)
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
