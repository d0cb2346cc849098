"""Avro's schema resolution rules as a static check: can data written with one schema version be
read with another? The history tests run it in both directions for every pair of released
versions, so a schema change that would strand old data or old readers fails before release.

Follows the specification's "Schema Resolution" section: names must match; int promotes to
long, float and double, long to float and double, float to double, string and bytes to each
other; a reader's record field missing from the writer needs a default; an enum symbol the
writer may send must be known to the reader unless the reader declares a default; a writer's
union branch must be readable by some reader branch. Pure: no fastavro, no I/O.
"""

from __future__ import annotations

from typing import Any

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}


def _full(node: dict[str, Any]) -> str:
    name = str(node["name"])
    return name if "." in name else f"{node.get('namespace', '')}.{name}".lstrip(".")


class _Names:
    """Every named type a schema defines, wherever it is defined, so references resolve."""

    def __init__(self, schema: Any) -> None:
        self.named: dict[str, dict[str, Any]] = {}
        self.collect(schema)

    def collect(self, node: Any) -> None:
        if isinstance(node, list):
            for branch in node:
                self.collect(branch)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "enum", "fixed"):
                self.named.setdefault(_full(node), node)
            if kind == "record":
                for field in node["fields"]:
                    self.collect(field["type"])
            elif kind == "array":
                self.collect(node["items"])
            elif kind == "map":
                self.collect(node["values"])
            elif isinstance(kind, (dict, list)):
                self.collect(kind)

    def resolve(self, node: Any) -> Any:
        if isinstance(node, str) and node in self.named:
            return self.named[node]
        return node


def incompatibilities(reader: Any, writer: Any) -> list[str]:
    """Why `reader` cannot read everything `writer` may write; empty when it can."""
    problems: list[str] = []
    _check(reader, writer, "", _Names(reader), _Names(writer), problems, set())
    return problems


def _kind(node: Any) -> str:
    if isinstance(node, list):
        return "union"
    if isinstance(node, str):
        return node
    return str(node["type"])


def _check(reader: Any, writer: Any, path: str, rn: _Names, wn: _Names,
           problems: list[str], seen: set[tuple[str, str]]) -> None:
    reader, writer = rn.resolve(reader), wn.resolve(writer)
    if isinstance(reader, dict) and reader.get("type") not in (
            "record", "enum", "fixed", "array", "map"):
        reader = rn.resolve(reader["type"])
    if isinstance(writer, dict) and writer.get("type") not in (
            "record", "enum", "fixed", "array", "map"):
        writer = wn.resolve(writer["type"])
    rk, wk = _kind(reader), _kind(writer)
    where = path or "<root>"
    if wk == "union":
        for index, branch in enumerate(writer):
            _check(reader, branch, f"{path}<{index}>", rn, wn, problems, seen)
        return
    if rk == "union":
        for branch in reader:
            trial: list[str] = []
            _check(branch, writer, path, rn, wn, trial, set(seen))
            if not trial:
                return
        problems.append(f"{where}: no reader union branch accepts writer type {wk}")
        return
    if rk != wk:
        if rk not in _PROMOTIONS.get(wk, set()):
            problems.append(f"{where}: writer {wk} cannot be read as {rk}")
        return
    if rk in ("record", "enum", "fixed") and _full(reader) != _full(writer):
        problems.append(f"{where}: named type {_full(writer)} read as {_full(reader)}")
        return
    if rk == "fixed" and reader["size"] != writer["size"]:
        problems.append(f"{where}: fixed size {writer['size']} read as {reader['size']}")
    elif rk == "enum":
        unknown = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if unknown and "default" not in reader:
            problems.append(f"{where}: symbols {unknown} unknown to the reader, no default")
    elif rk == "array":
        _check(reader["items"], writer["items"], path + "[]", rn, wn, problems, seen)
    elif rk == "map":
        _check(reader["values"], writer["values"], path + "{}", rn, wn, problems, seen)
    elif rk == "record":
        key = (_full(reader), path)
        if key in seen:
            return
        seen.add(key)
        written = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            name = field["name"]
            sub = f"{path}.{name}" if path else name
            if name in written:
                _check(field["type"], written[name]["type"], sub, rn, wn, problems, seen)
            elif "default" not in field:
                problems.append(f"{sub}: new reader field without a default")
