"""docs/operations.md and the deployment files name only what exists: every `safehub ...`
command the runbook gives parses, every test it cites is there, and every SAFEHUB_* setting the
manifests and the compose file set is one the code reads."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from safehub.cli import COMMANDS, main
from safehub.deploy.registry import load_registry
from safehub.deploy.render.compose import compose
from safehub.deploy.render.manifests import k8s_files
from safehub.deploy.render.site import Site

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "operations.md"
# `safehub <command> [<action>]` inside backticks
_COMMAND = re.compile(r"`(safehub [a-z][^`]*)`")
_TEST = re.compile(r"(tests/[a-z_/]+\.py)(?:::(test_[a-z0-9_]+))?")
_ACTIONS = {"deploy", "audit", "keyservice", "deadletter", "kafka", "access", "topics"}


def _runbook_commands() -> list[list[str]]:
    text = RUNBOOK.read_text().replace("\n   ", " ")
    out = []
    for raw in _COMMAND.findall(text):
        words = shlex.split(raw.split(" | ")[0])
        out.append(words[1:])
    return out


def test_the_runbook_gives_commands() -> None:
    assert len(_runbook_commands()) >= 15


@pytest.mark.parametrize("words", _runbook_commands(), ids=" ".join)
def test_every_runbook_command_exists(words: list[str],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert words[0] in COMMANDS, f"safehub {words[0]}: no such command"
    # the command and its action (when it has actions) accept -h
    head = words[:2] if words[0] in _ACTIONS and len(words) > 1 and not words[1].startswith("-") \
        else words[:1]
    if words[0] in ("access", "topics", "kafka"):  # a positional action, then its options
        head = words[:1]
    with pytest.raises(SystemExit) as done:
        main([*head, "-h"])
    assert done.value.code == 0
    # and every option the runbook uses is one the command takes
    usage = capsys.readouterr().out
    for flag in (w.strip("[]").split("=")[0] for w in words if w.strip("[").startswith("--")):
        assert flag in usage, f"safehub {' '.join(head)}: no option {flag}"


def test_every_cited_test_exists() -> None:
    cited = _TEST.findall(RUNBOOK.read_text().replace("\n", ""))
    assert cited
    for path, name in cited:
        source = ROOT / path
        assert source.is_file(), path
        if name:
            assert f"def {name}(" in source.read_text(), f"{path}::{name}"
    # bare test names in backticks belong to a cited file
    named = set(re.findall(r"`(test_[a-z0-9_]+)`", RUNBOOK.read_text()))
    sources = "".join((ROOT / p).read_text() for p, _ in set(cited))
    assert all(f"def {n}(" in sources for n in named), named


def _settings_in(value: object) -> set[str]:
    return set(re.findall(r"\bSAFEHUB_[A-Z0-9_]+", str(value)))


def test_every_setting_the_files_give_is_read_by_the_code() -> None:
    site = Site(load_registry())
    given = _settings_in(k8s_files(site)) | _settings_in(compose(site))
    assert "SAFEHUB_CORRELATOR_WORKER_ID" in given
    code = "".join(p.read_text() for folder in ("services", "consumers", "src/safehub")
                   for p in (ROOT / folder).rglob("*.py"))
    unread = sorted(s for s in given if f'"{s}"' not in code and f"'{s}'" not in code)
    assert unread == [], f"settings no code reads: {unread}"


def _secret_names(value: object) -> set[str]:
    """Every Secret a manifest mounts or reads."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "secret" and isinstance(inner, dict):
                found.add(inner.get("secretName") or inner["name"])
            elif key == "secretKeyRef":
                found.add(inner["name"])
            else:
                found |= _secret_names(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= _secret_names(inner)
    return found


def test_every_secret_the_workloads_need_is_in_the_runbook_or_made_by_strimzi() -> None:
    site = Site(load_registry())
    files = k8s_files(site)
    made_by_strimzi = {m["metadata"]["name"] for m in files["kafka-users.yaml"]}
    made_by_strimzi.add(site.cluster_ca_secret)
    # the runbook's table: `safehub-...` names, `<hub>` standing for any hub id
    documented = [re.compile("^" + re.escape(name).replace(re.escape("<hub>"), "[a-z0-9-]+")
                             + "$")
                  for name in re.findall(r"^\s*\| `(safehub-[a-z<>-]+)` \|", RUNBOOK.read_text(),
                                         re.MULTILINE)]
    assert len(documented) >= 8
    needed = _secret_names(files["workloads.yaml"])
    undocumented = sorted(n for n in needed - made_by_strimzi
                          if not any(p.match(n) for p in documented))
    assert undocumented == [], f"Secrets the runbook does not say how to make: {undocumented}"
