"""The correlator's settings from the environment, and the ids a worker id gives it."""

from __future__ import annotations

import pytest

from safehub.errors import ConfigError
from safehub.services.correlator.command import settings_from_env
from safehub.services.correlator.transport import static_member_id


def test_a_worker_id_gives_a_stable_transactional_id_that_fences(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAFEHUB_TOPIC_PREFIX", "demo.")
    monkeypatch.setenv("SAFEHUB_CORRELATOR_WORKER_ID", "hub-a.1")
    first, again = settings_from_env(), settings_from_env()
    assert first.transactional_id == again.transactional_id == \
        "demo.safehub-correlator-worker-hub-a.1"
    assert first.worker_id == "hub-a.1"


def test_without_a_worker_id_each_process_is_anonymous(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEHUB_CORRELATOR_WORKER_ID", raising=False)
    first, again = settings_from_env(), settings_from_env()
    assert first.transactional_id != again.transactional_id
    assert first.worker_id is None


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
