"""The correlator's reliance on faust's and aiokafka's private names is written down, complete,
and true of the installed versions."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import aiokafka.consumer.consumer
import aiokafka.consumer.group_coordinator
import faust.tables.recovery
import faust.transport.consumer
import faust.transport.drivers.aiokafka
import pytest

from safehub.errors import ConfigError
from safehub.services.correlator import faust_contract

CORRECTIONS = [Path(faust_contract.__file__).with_name(n) for n in ("transport.py", "stalls.py",
                                                                 "membership.py", "log_end.py",
                                                                 "committed.py")]
LIBRARIES = (faust.transport.consumer, faust.transport.drivers.aiokafka, faust.tables.recovery,
             aiokafka.consumer.consumer, aiokafka.consumer.group_coordinator)


def private_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        name = (node.attr if isinstance(node, ast.Attribute)
                else node.name if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                else None)
        if name and name.startswith("_") and not name.startswith("__"):
            names.add(name)
    return names


def libraries_define(name: str) -> bool:
    pattern = re.compile(rf"(def {name}\b|self\.{name}\s*[:=])")
    return any(pattern.search(inspect.getsource(module)) for module in LIBRARIES)


def test_the_installed_versions_have_everything_the_correlator_relies_on() -> None:
    assert faust_contract.problems() == []
    faust_contract.check()


def test_every_private_library_name_the_corrections_use_is_listed() -> None:
    used = set().union(*(private_names(p) for p in CORRECTIONS))
    theirs = {n for n in used if libraries_define(n)}
    listed = {r.name for r in faust_contract.RELIANCES}
    # Both ways: nothing used goes unlisted, and nothing listed is no longer used.
    assert theirs == listed


def test_a_missing_name_or_another_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(faust_contract.VERSIONS, "aiokafka", "0.0.1")
    gone = faust_contract.Reliance("faust.transport.consumer:Consumer", "_gone", "a test")
    monkeypatch.setattr(faust_contract, "RELIANCES", (*faust_contract.RELIANCES, gone))
    found = faust_contract.problems()
    assert any("aiokafka is 0.14.0" in p for p in found)
    assert any("_gone" in p for p in found)
    with pytest.raises(ConfigError, match="_gone"):
        faust_contract.check()
