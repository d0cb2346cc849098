"""No topic name is spelled outside safehub.topics (issue 23).

Reads every module of the package, the benchmarks and tests/conftest.py, and looks, outside
docstrings and comments, for a topic name being built or taken apart by hand: a family's stem
as a string (`"ingress."`, `"alert-acks."`), a whole topic name (`"ingress.police-x"`,
`"correlated"`), an f-string that puts a family after a prefix (`f"{prefix}audit"`,
`f"{p}alerts.{hub}"`), or a shared topic's name added to something (`prefix + "deadletter"`).
Words like "audit" used as a command or database name are not topic names and are left alone.

deploy/topics.toml (partitions and retention per family), docs and the generated deployment
files are not Python and are not read here.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import safehub
from safehub.topics import Family

PACKAGE = Path(safehub.__file__).parent
ROOT = PACKAGE.parent.parent
HOME = PACKAGE / "topics.py"

# path (relative to the package, or to the repository for tests) -> why it may still spell one.
ALLOWED: dict[str, str] = {}

SHARED = {f.stem for f in Family if not f.per_party}
STEMS = {f.stem for f in Family if f.per_party}
_STEM_ALT = "|".join(re.escape(s) for s in sorted(STEMS))
_SHARED_ALT = "|".join(re.escape(s) for s in sorted(SHARED))
WHOLE_NAME = re.compile(rf"(?:{_STEM_ALT})[a-z0-9-]+|correlated|correlator-blocks-changelog")
# "{}" stands for a formatted value: a prefix or a party id.
FSTRING = re.compile(rf"\{{\}}(?:{_STEM_ALT})|\{{\}}(?:{_SHARED_ALT})$|-changelog$")


def _sources() -> Iterator[tuple[str, Path]]:
    # The package's service folders are symlinks; rglob does not follow them, so walk each.
    seen: set[Path] = set()
    roots = [PACKAGE, *(p for p in PACKAGE.iterdir() if p.is_symlink() and p.is_dir())]
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            real = path.resolve()
            if real in seen or real == HOME.resolve() or ".venv" in path.parts:
                continue
            seen.add(real)
            yield path.relative_to(PACKAGE).as_posix(), path
    for path in sorted((ROOT / "bench").glob("*.py")):
        yield path.relative_to(ROOT).as_posix(), path
    yield "tests/conftest.py", ROOT / "tests" / "conftest.py"


def _docstrings(tree: ast.AST) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _fstring_shape(node: ast.JoinedStr) -> str:
    return "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                   for v in node.values)


def spelled(source: str) -> list[tuple[int, str]]:
    """(line, what) for each topic name spelled by hand in this module's code."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    in_fstring = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            shape = _fstring_shape(node)
            if FSTRING.search(shape):
                found.append((node.lineno, f"f-string {shape!r}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in skip or id(node) in in_fstring:
                continue
            if node.value.lstrip(".") in STEMS or WHOLE_NAME.fullmatch(node.value):
                found.append((node.lineno, repr(node.value)))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and side.value in SHARED:
                    found.append((node.lineno, f"+ {side.value!r}"))
    return sorted(set(found))


def test_the_detector_sees_each_way_of_spelling_a_name() -> None:
    code = '''
"""A docstring may say ingress.<agency> and "correlated"."""
a = f"{prefix}ingress.{agency}"
b = prefix + "audit"
c = name.startswith("alert-acks.") or ".ingress." in name
d = f"{p}deadletter"
e = "correlated"
f = "ingress.police-x"
g = f"{app}-blocks-changelog"
ok = ["audit", "sink"], f"safehub-inbox-{hub}", "deadletter replay"
'''
    assert sorted({line for line, _ in spelled(code)}) == [3, 4, 5, 6, 7, 8, 9]
    assert len(spelled(code)) == 8  # both names on line 5


def test_no_topic_name_is_spelled_outside_safehub_topics() -> None:
    offences = []
    seen = set()
    for rel, path in _sources():
        seen.add(rel)
        if rel in ALLOWED:
            continue
        offences += [f"{rel}:{line}: {what}" for line, what in spelled(path.read_text())]
    assert not offences, ("build or parse these with safehub.topics:\n" + "\n".join(offences))
    assert set(ALLOWED) <= seen, "an allowlisted file is gone: drop it from ALLOWED"


def test_every_allowed_file_still_needs_it() -> None:
    """An entry is removed once its file no longer spells a name (so the list only shrinks)."""
    sources = dict(_sources())
    stale = [rel for rel in ALLOWED if not spelled(sources[rel].read_text())]
    assert not stale, f"remove from ALLOWED: {stale}"
