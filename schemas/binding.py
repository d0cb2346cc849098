"""Converters between the contract's dataclasses and the plain values fastavro reads and writes.

Compiled once per schema into closures: the writer side checks every Python value's type, range,
size and `safehub.pattern` (so an encoded body is exactly what the contract allows); the reader
side builds the dataclasses and enums from an already structurally checked Avro value. Used by
the codec for encoding and for bodies of older schema versions. Pure: no fastavro, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from safehub.errors import ValidationError
from safehub.schemas import records, vocabulary

NAMESPACE = "safehub"
INDICATOR_ENUMS: tuple[type[Enum], ...] = (
    vocabulary.Sign, vocabulary.Vulnerability, vocabulary.SignificantIncident,
)
PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def full_name(node: dict[str, Any]) -> str:
    name = str(node["name"])
    if "." in name:
        return name
    return f"{node.get('namespace', NAMESPACE)}.{name}"


Conv = Callable[[Any], Any]


def contract_classes() -> dict[str, type[Any]]:
    found: dict[str, type[Any]] = {}
    for module in (records, vocabulary):
        for attr in vars(module).values():
            if isinstance(attr, type) and attr.__module__ == module.__name__:
                found[f"{NAMESPACE}.{attr.__name__}"] = attr
    return found


@dataclass(frozen=True, slots=True)
class _StringRule:
    pattern: re.Pattern[str] | None
    max_length: int | None

    def check(self, path: str, value: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError(path, "must be a string")
        if self.max_length is not None and len(value) > self.max_length:
            raise ValidationError(path, f"longer than {self.max_length} characters")
        if self.pattern is not None and self.pattern.fullmatch(value) is None:
            raise ValidationError(path, f"must match {self.pattern.pattern}")
        return value


class Binding:
    """Turns one expanded schema into two functions: dataclass -> Avro dict, and back."""

    def __init__(self) -> None:
        self.classes = contract_classes()
        self.named: dict[str, dict[str, Any]] = {}
        self.indicator = {m.value: m for enum in INDICATOR_ENUMS for m in enum}
        self.indicator_names = {f"{NAMESPACE}.{e.__name__}" for e in INDICATOR_ENUMS}

    def resolve(self, node: Any) -> Any:
        """A type node with named references replaced by their definitions (seen first)."""
        if isinstance(node, str) and node not in PRIMITIVES:
            return self.named[node]
        if isinstance(node, dict) and node.get("type") in ("record", "enum", "fixed"):
            self.named[full_name(node)] = node
        return node

    def rule(self, field: dict[str, Any]) -> _StringRule:
        pattern = field.get("safehub.pattern")
        return _StringRule(re.compile(pattern) if pattern else None,
                           field.get("safehub.maxLength"))

    # decode side: Avro value (already canonical) -> Python value
    def reader(self, node: Any, path: str, field: dict[str, Any]) -> Conv | None:
        node = self.resolve(node)
        if isinstance(node, list):
            branches = [self.resolve(b) for b in node]
            if all(isinstance(b, dict) and full_name(b) in self.indicator_names
                   for b in branches):
                table = self.indicator
                return lambda v: _lookup(table, v, path)
            rest = [b for b in node if b != "null"]
            if len(rest) == 1 and len(node) == 2:
                inner = self.reader(rest[0], path, field)
                if inner is None:
                    return None
                return lambda v: None if v is None else inner(v)
            raise ValueError(f"{path}: unsupported union")
        kind = node if isinstance(node, str) else node["type"]
        if kind == "string":
            rule = self.rule(field)
            if rule.pattern is None and rule.max_length is None:
                return None
            return lambda v: rule.check(path, v)
        if kind == "array":
            item = self.reader(node["items"], path + "[]", field)
            if item is None:
                return tuple
            return lambda v: tuple([item(x) for x in v])
        if kind == "enum":
            members = self.classes[full_name(node)]._value2member_map_
            return lambda v: _lookup(members, v, path)
        if kind == "record":
            return self.record_reader(node, path)
        return None

    def record_reader(self, node: dict[str, Any], path: str) -> Conv:
        cls = self.classes[full_name(node)]
        names = [f.name for f in fields(cls)]
        avro_names = [f["name"] for f in node["fields"]]
        if names != avro_names:
            raise ValueError(f"{full_name(node)}: schema fields {avro_names} != {names}")
        prefix = f"{path}." if path else ""
        convs = [(f["name"], self.reader(f["type"], prefix + f["name"], f))
                 for f in node["fields"]]
        plain = tuple(n for n, c in convs if c is None)
        if len(plain) == len(convs):
            return lambda d: cls(*[d[n] for n in names])
        pairs = tuple(convs)
        return lambda d: cls(*[d[n] if c is None else c(d[n]) for n, c in pairs])

    # encode side: Python value -> Avro value, checking types so the body is what was meant
    def writer(self, node: Any, path: str, field: dict[str, Any]) -> Conv:
        node = self.resolve(node)
        if isinstance(node, list):
            branches = [self.resolve(b) for b in node]
            if all(isinstance(b, dict) and full_name(b) in self.indicator_names
                   for b in branches):
                by_class = {e: f"{NAMESPACE}.{e.__name__}" for e in INDICATOR_ENUMS}

                def indicator(v: Any) -> Any:
                    name = by_class.get(type(v))
                    if name is None:
                        raise ValidationError(path, "must be a Sign, Vulnerability or "
                                                    "SignificantIncident")
                    return (name, v.value)

                return indicator
            rest = [b for b in node if b != "null"]
            inner = self.writer(rest[0], path, field)
            return lambda v: None if v is None else inner(v)
        kind = node if isinstance(node, str) else node["type"]
        if kind == "string":
            rule = self.rule(field)
            return lambda v: rule.check(path, v)
        if kind in _INT_RANGE:
            low, high = _INT_RANGE[kind]

            def integer(v: Any) -> Any:
                if type(v) is not int or not low <= v <= high:
                    raise ValidationError(path, f"must be an integer within Avro {kind}")
                return v

            return integer
        if kind == "double":
            def real(v: Any) -> Any:
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise ValidationError(path, "must be a number")
                return float(v)

            return real
        if kind == "boolean":
            def boolean(v: Any) -> Any:
                if type(v) is not bool:
                    raise ValidationError(path, "must be a boolean")
                return v

            return boolean
        if kind == "bytes":
            def raw(v: Any) -> Any:
                if not isinstance(v, bytes):
                    raise ValidationError(path, "must be bytes")
                return v

            return raw
        if kind == "fixed":
            size = node["size"]

            def fixed(v: Any) -> Any:
                if not isinstance(v, bytes) or len(v) != size:
                    raise ValidationError(path, f"must be exactly {size} bytes")
                return v

            return fixed
        if kind == "enum":
            cls = self.classes[full_name(node)]

            def symbol(v: Any) -> Any:
                if not isinstance(v, cls):
                    raise ValidationError(path, f"must be a {cls.__name__}")
                return v.value

            return symbol
        if kind == "array":
            item = self.writer(node["items"], path + "[]", field)

            def array(v: Any) -> Any:
                if not isinstance(v, (tuple, list)):
                    raise ValidationError(path, "must be a tuple")
                return [item(x) for x in v]

            return array
        if kind == "record":
            return self.record_writer(node, path)
        raise ValueError(f"{path}: unsupported type {kind}")

    def record_writer(self, node: dict[str, Any], path: str) -> Conv:
        cls = self.classes[full_name(node)]
        prefix = f"{path}." if path else ""
        convs = tuple((f["name"], self.writer(f["type"], prefix + f["name"], f))
                      for f in node["fields"])
        where = path or cls.__name__

        def record(obj: Any) -> Any:
            if type(obj) is not cls:
                raise ValidationError(where, f"must be a {cls.__name__}")
            return {n: c(getattr(obj, n)) for n, c in convs}

        return record


def _lookup(table: dict[str, Any], value: Any, path: str) -> Any:
    try:
        return table[value]
    except KeyError:
        raise ValidationError(path, "unknown symbol") from None
