"""The correlator's settings from the environment, and the ids a worker id gives it."""

from __future__ import annotations

from pathlib import Path

import pytest

from safehub.errors import ConfigError
from safehub.services.correlator.command import changelog_topic, settings_from_env
from safehub.services.correlator.transport import static_member_id
from safehub.topics import changelog_topic as acl_changelog
from safehub.topics import correlator_group


def test_a_worker_id_gives_a_stable_transactional_id_that_fences(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAFEHUB_TOPIC_PREFIX", "demo.")
    monkeypatch.setenv("SAFEHUB_CORRELATOR_WORKER_ID", "hub-a.1")
    first, again = settings_from_env(), settings_from_env()
    # Under the prefix the correlator principal's ACLs allow (deploy/acl.py).
    assert first.transactional_id == again.transactional_id == "demo.correlator-worker-hub-a.1"
    assert first.worker_id == "hub-a.1"


def test_without_a_worker_id_each_process_is_anonymous(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEHUB_CORRELATOR_WORKER_ID", raising=False)
    monkeypatch.setenv("SAFEHUB_TOPIC_PREFIX", "demo.")
    first, again = settings_from_env(), settings_from_env()
    assert first.transactional_id != again.transactional_id
    assert first.transactional_id.startswith(correlator_group("demo.") + "-")
    assert first.worker_id is None


def test_the_correlator_connects_as_its_own_principal_with_the_acls_app_id(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    for name in ("SAFEHUB_KAFKA_PRINCIPAL", "SAFEHUB_KAFKA_PASSWORD_FILE",
                 "SAFEHUB_CORRELATOR_APP_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SAFEHUB_TOPIC_PREFIX", "demo.")
    monkeypatch.setenv("SAFEHUB_KAFKA_SECRETS", str(tmp_path))
    monkeypatch.setenv("SAFEHUB_KAFKA_BOOTSTRAP", "broker-1:9093")
    settings = settings_from_env()
    assert settings.kafka.principal == "correlator"
    assert settings.kafka.bootstrap == "broker-1:9093"
    assert settings.kafka.password_file == tmp_path / "correlator.password"
    assert settings.app_id == correlator_group("demo.") == "demo.correlator"
    assert changelog_topic(settings.app_id) == acl_changelog("demo.")


@pytest.mark.parametrize("bad", ["two words", "x" * 65, "ünïcode", "a/b"])
def test_a_bad_worker_id_is_refused_with_its_variable_named(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("SAFEHUB_CORRELATOR_WORKER_ID", bad)
    with pytest.raises(ConfigError, match="SAFEHUB_CORRELATOR_WORKER_ID"):
        settings_from_env()


def test_the_static_member_id_names_the_topic_set_whatever_its_order() -> None:
    a = static_member_id("w1", ["p.ingress.police-x", "p.ingress.school-z"])
    assert a == static_member_id("w1", ["p.ingress.school-z", "p.ingress.police-x"])
    assert a.startswith("w1-")
    assert a != static_member_id("w1", ["p.ingress.police-x"])  # a new topic: a new member
    assert a != static_member_id("w2", ["p.ingress.police-x", "p.ingress.school-z"])
