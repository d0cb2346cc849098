"""Pure modules stay pure (issue 23): the correlation core, the router core and the audit replay
import (transitively, within safehub) no Kafka client, no faust, no SQLAlchemy, no fastavro and
no HTTP client, so that they can be read, tested and replayed without any of them.

Two checks: the import graph read from the source (every import in a module, in functions too,
but not those under `if TYPE_CHECKING:`; a module's parent packages count, since importing it
runs them), which names the chain of each offence; and a fresh interpreter that imports the
module and looks at sys.modules, which catches what the source does not say (a plugin, an
import by string).

KNOWN_IMPURE is where a known offence would be listed, so that nothing new creeps in while it
is being cut; it is empty: all three cores are pure.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

import safehub

FORBIDDEN = ("kafka", "faust", "aiokafka", "sqlalchemy", "fastavro", "httpx")
PURE = ("safehub.services.correlation.core", "safehub.services.router.core",
        "safehub.services.audit.replay")
PACKAGE_DIR = Path(safehub.__file__).parent

# module -> {(forbidden package, the safehub module that imports it)}: none left. The replay's
# chains (the codec's fastavro, the correlator's processing for block_key, the journal's kafka)
# were cut on 2026-12-05: the shell hands the replay its decoders (sharding.contract_decoders),
# and block_key lives in the correlation core's linking.py.
KNOWN_IMPURE: dict[str, set[tuple[str, str]]] = {}


def source_of(module: str) -> Path | None:
    """The file of a safehub module or package, None for anything else (a name imported
    from a module, say)."""
    base = PACKAGE_DIR.joinpath(*module.split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of the import nodes under `if TYPE_CHECKING:` (never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def imports(module: str) -> set[str]:
    """The dotted names `module` imports when it runs, its parent packages included."""
    path = source_of(module)
    assert path is not None, module
    is_package = path.name == "__init__.py"
    parts = module.split(".")
    found = {".".join(parts[:i]) for i in range(1, len(parts))}
    tree = ast.parse(path.read_text(), str(path))
    skipped = type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = parts if is_package else parts[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names
                      if source_of(f"{base}.{alias.name}") is not None}
    return {name for name in found if name}


def offences(root: str) -> dict[tuple[str, str], list[str]]:
    """(forbidden package, importing safehub module) -> the shortest import chain from root."""
    parent: dict[str, str | None] = {root: None}
    queue = deque([root])
    found: dict[tuple[str, str], list[str]] = {}
    while queue:
        module = queue.popleft()
        for name in sorted(imports(module)):
            top = name.split(".")[0]
            if top in FORBIDDEN and (top, module) not in found:
                chain = [name, module]
                while (up := parent[chain[-1]]) is not None:
                    chain.append(up)
                found[(top, module)] = chain[::-1]
            elif top == "safehub" and name not in parent and source_of(name) is not None:
                parent[name] = module
                queue.append(name)
    return found


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_no_client_library(module: str) -> None:
    found = offences(module)
    chains = "\n".join(" -> ".join(chain) for chain in found.values())
    known = KNOWN_IMPURE.get(module, set())
    assert set(found) <= known, f"new impure imports:\n{chains}"
    assert set(found) == known, f"cut since: {known - set(found)}: remove from KNOWN_IMPURE"


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_loads_no_client_library(module: str) -> None:
    probe = ("import json, sys\n"
             f"import {module}\n"
             "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=120, check=True)
    loaded = set(json.loads(done.stdout)) & set(FORBIDDEN)
    assert loaded == {top for top, _ in KNOWN_IMPURE.get(module, set())}


def test_the_graph_sees_a_forbidden_import_through_a_package() -> None:
    # A positive control: the consumer shells import kafka through safehub.bus.
    chains = offences("safehub.consumers.inbox.consumer")
    assert any(top == "kafka" for top, _ in chains)
    assert all(chain[0] == "safehub.consumers.inbox.consumer" for chain in chains.values())
