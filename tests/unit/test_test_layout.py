"""The tests' own layout (issue 23): helpers shared by several test modules live in
tests/fixtures/<area>.py (pytest fixtures among them served by tests/conftest.py's
pytest_plugins), never in a test module; so no module under tests/ or bench/ imports a `test_*`
module, and the benchmarks import nothing from tests/ at all (what they share with the tests,
sample records and fictional children, is in safehub.samples).

Read from the source with the ast module, not with a regex: an import split over lines, a
relative import or `from tests.unit import test_x` counts as much as a one-line absolute one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent)
    return imports_of(path.read_text(), package, str(path))


def imports_of(source: str, package: str, filename: str = "<source>"
               ) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every module the source imports, anywhere in it (in a function
    too), relative imports resolved against `package`: for `from a.b import c`, both a.b and
    a.b.c (c may be a module)."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def is_test_module(name: str) -> bool:
    return name.split(".")[0] == "tests" and name.split(".")[-1].startswith("test_")


def offences(folder: str) -> list[str]:
    return sorted({f"{path.relative_to(ROOT)}:{line} imports {name}"
                   for path in python_files(folder)
                   for line, name in imported_modules(path)
                   if is_test_module(name)})


def test_no_module_under_tests_or_bench_imports_a_test_module() -> None:
    found = offences("tests") + offences("bench")
    assert not found, ("move what is shared into tests/fixtures/<area>.py (or, if a benchmark "
                       "needs it too, safehub.samples):\n" + "\n".join(found))


def test_the_benchmarks_import_nothing_from_tests() -> None:
    found = sorted({f"{path.relative_to(ROOT)}:{line} imports {name}"
                    for path in python_files("bench")
                    for line, name in imported_modules(path)
                    if name.split(".")[0] == "tests"})
    assert not found, "\n".join(found)


def test_the_check_sees_every_form_of_import() -> None:
    # A positive control: the tests above would pass vacuously if imports_of read nothing.
    forms = {
        "import tests.unit.test_codec": "tests.unit.test_codec",
        "from tests.unit import test_codec": "tests.unit.test_codec",
        "from tests.unit.test_codec import x": "tests.unit.test_codec",
        "from . import test_codec": "tests.unit.test_codec",
        "from .test_codec import (\n    x,\n)": "tests.unit.test_codec",
        "from ..e2e.test_demo import y": "tests.e2e.test_demo",
        "def f():\n    from tests.e2e.test_demo import y": "tests.e2e.test_demo",
    }
    for source, want in forms.items():
        names = {name for _, name in imports_of(source, "tests.unit")}
        assert want in names and is_test_module(want), source
    for fine in ("from tests.fixtures.topics import TopicReader", "from tests.conftest import x",
                 "from safehub.services.router import core"):
        assert not any(is_test_module(n) for _, n in imports_of(fine, "tests.unit")), fine


def test_shared_fixtures_are_served_one_way() -> None:
    # Shared fixtures live in tests/fixtures/<area>.py and tests/conftest.py's pytest_plugins
    # serves them; a conftest.py per folder would be a second way to find them.
    conftests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("conftest.py"))
    assert conftests == ["tests/conftest.py"], (
        "put the fixtures in tests/fixtures/<area>.py and add it to pytest_plugins in "
        f"tests/conftest.py instead of: {conftests}")
