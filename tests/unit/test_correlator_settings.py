"""The correlator's settings from the environment: the worker id decides the transactional id."""

from __future__ import annotations

import pytest

from safehub.errors import ConfigError
from safehub.services.correlator.command import settings_from_env


def test_a_worker_id_gives_a_stable_transactional_id_that_fences(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SAFEHUB_TOPIC_PREFIX", "demo.")
    monkeypatch.setenv("SAFEHUB_CORRELATOR_WORKER_ID", "hub-a.1")
    first, again = settings_from_env(), settings_from_env()
    assert first.transactional_id == again.transactional_id == \
        "demo.safehub-correlator-worker-hub-a.1"
    assert first.fences


def test_without_a_worker_id_each_process_is_anonymous(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEHUB_CORRELATOR_WORKER_ID", raising=False)
    first, again = settings_from_env(), settings_from_env()
    assert first.transactional_id != again.transactional_id
    assert not first.fences


@pytest.mark.parametrize("bad", ["two words", "x" * 65, "ünïcode", "a/b"])
def test_a_bad_worker_id_is_refused_with_its_variable_named(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("SAFEHUB_CORRELATOR_WORKER_ID", bad)
    with pytest.raises(ConfigError, match="SAFEHUB_CORRELATOR_WORKER_ID"):
        settings_from_env()
