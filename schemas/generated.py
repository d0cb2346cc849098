"""What the generated reader (decoder.py) and writer (encoder.py) share: Python source written
line by line from a schema, with the values it uses bound by name, compiled once.

The source is generated from our own schema files only; no input ever reaches it.
"""

from __future__ import annotations

from typing import Any

from safehub.schemas.binding import PRIMITIVES


class SourceGenerator:
    def __init__(self, classes: dict[str, type[Any]], namespace: str,
                 bound: dict[str, Any]) -> None:
        self.classes = classes
        self.namespace = namespace
        self.lines: list[str] = []
        self.globals: dict[str, Any] = dict(bound)
        self.named: dict[str, dict[str, Any]] = {}
        self.count = 0

    def var(self, stem: str = "v") -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, value: Any) -> str:
        name = self.var("k")
        self.globals[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def full_name(self, node: dict[str, Any]) -> str:
        name = str(node["name"])
        return name if "." in name else f"{node.get('namespace', self.namespace)}.{name}"

    def resolve(self, node: Any) -> Any:
        """A type node with a named reference replaced by its definition (seen first)."""
        if isinstance(node, str) and node not in PRIMITIVES:
            return self.named[node]
        if isinstance(node, dict) and node.get("type") in ("record", "enum", "fixed"):
            self.named[self.full_name(node)] = node
        return node

    def function(self, name: str, filename: str) -> Any:
        """The function `name` defined by the lines written, with its source as its doc."""
        source = "\n".join(self.lines)
        namespace = dict(self.globals)
        exec(compile(source, filename, "exec"), namespace)
        made = namespace[name]
        made.__doc__ = source  # the generated code, for anyone debugging a verdict
        return made
