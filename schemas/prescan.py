"""A strict structural check of an Avro binary body against its writer schema, before decoding.

fastavro trusts its input in ways a hub that reads other organisations' bytes cannot: a negative
enum or union index silently selects from the end of the list, a varint longer than 10 bytes
wraps around, any non-zero byte reads as `true`, trailing bytes are ignored, and a forged block
count makes it loop until the bytes run out. This walk rejects all of those in one pass over the
bytes, with bounded work: every length is checked against what is left, and a collection's count
against the least its items can occupy, so a few bytes can never announce a billion items.

It allocates nothing proportional to the input and leaves UTF-8 checking to the decoder.
Pure: no fastavro, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from safehub.errors import ValidationError

Scan = Callable[[bytes, int], int]
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_MAX_VARINT_BYTES = 10


class Truncated(Exception):
    """The body ended inside a value (turned into a ValidationError at the top)."""


def read_varint(data: bytes, pos: int, field: str) -> tuple[int, int]:
    """Zig-zag varint at `pos`: (value, next position). At most 10 bytes, within 64 bits."""
    try:
        byte = data[pos]
    except IndexError:
        raise Truncated from None
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    result = byte & 0x7F
    shift = 7
    end = pos + _MAX_VARINT_BYTES
    pos += 1
    while True:
        if pos >= end:
            raise ValidationError(field, "varint longer than 10 bytes")
        try:
            byte = data[pos]
        except IndexError:
            raise Truncated from None
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    if result >= 1 << 64:
        raise ValidationError(field, "varint exceeds 64 bits")
    return (result >> 1) ^ -(result & 1), pos


class _Compiler:
    def __init__(self) -> None:
        self.named: dict[str, dict[str, Any]] = {}
        self.scans: dict[str, Scan] = {}
        self.min_sizes: dict[str, int] = {}

    def full_name(self, node: dict[str, Any]) -> str:
        name = str(node["name"])
        return name if "." in name else f"{node.get('namespace', '')}.{name}".lstrip(".")

    def compile(self, node: Any, field: str) -> tuple[Scan, int]:
        """(scanner, least number of bytes a value of this type occupies)."""
        if isinstance(node, str):
            if node in self.scans:
                return self.scans[node], self.min_sizes[node]
            return self.primitive(node, field)
        if isinstance(node, list):
            return self.union(node, field)
        kind = node["type"]
        if kind == "record":
            return self.record(node, field)
        if kind == "enum":
            return self.enum(node, field)
        if kind == "fixed":
            return self.fixed(node, field)
        if kind == "array":
            return self.array(node, field)
        if kind == "map":
            return self.map(node, field)
        return self.compile(kind, field)

    def remember(self, node: dict[str, Any], scan: Scan, least: int) -> tuple[Scan, int]:
        name = self.full_name(node)
        self.scans[name] = scan
        self.min_sizes[name] = least
        return scan, least

    def primitive(self, kind: str, field: str) -> tuple[Scan, int]:
        if kind == "null":
            return (lambda data, pos: pos), 0
        if kind == "boolean":
            def boolean(data: bytes, pos: int) -> int:
                try:
                    byte = data[pos]
                except IndexError:
                    raise Truncated from None
                if byte > 1:
                    raise ValidationError(field, "boolean byte is not 0 or 1")
                return pos + 1

            return boolean, 1
        if kind == "int":
            def int32(data: bytes, pos: int) -> int:
                value, pos = read_varint(data, pos, field)
                if not _INT_MIN <= value <= _INT_MAX:
                    raise ValidationError(field, "int outside 32 bits")
                return pos

            return int32, 1
        if kind == "long":
            return (lambda data, pos: read_varint(data, pos, field)[1]), 1
        if kind in ("float", "double"):
            width = 4 if kind == "float" else 8

            def real(data: bytes, pos: int) -> int:
                if pos + width > len(data):
                    raise Truncated
                return pos + width

            return real, width
        if kind in ("bytes", "string"):
            def sized(data: bytes, pos: int) -> int:
                length, pos = read_varint(data, pos, field)
                if length < 0:
                    raise ValidationError(field, "negative length")
                if pos + length > len(data):
                    raise Truncated
                return pos + length

            return sized, 1
        raise ValueError(f"{field}: unknown Avro type {kind}")

    def union(self, branches: list[Any], field: str) -> tuple[Scan, int]:
        compiled = [self.compile(b, field) for b in branches]
        scans = tuple(scan for scan, _ in compiled)
        count = len(scans)

        def union(data: bytes, pos: int) -> int:
            index, pos = read_varint(data, pos, field)
            if not 0 <= index < count:
                raise ValidationError(field, "union branch index out of range")
            return scans[index](data, pos)

        return union, 1 + min(least for _, least in compiled)

    def enum(self, node: dict[str, Any], field: str) -> tuple[Scan, int]:
        count = len(node["symbols"])

        def enum(data: bytes, pos: int) -> int:
            index, pos = read_varint(data, pos, field)
            if not 0 <= index < count:
                raise ValidationError(field, "enum symbol index out of range")
            return pos

        return self.remember(node, enum, 1)

    def fixed(self, node: dict[str, Any], field: str) -> tuple[Scan, int]:
        size = int(node["size"])

        def fixed(data: bytes, pos: int) -> int:
            if pos + size > len(data):
                raise Truncated
            return pos + size

        return self.remember(node, fixed, size)

    def blocks(self, item: Scan, least: int, field: str) -> Scan:
        # A zero-size item (null) could be repeated without bytes; count it against a fixed cap.
        per_item = max(least, 1)

        def blocks(data: bytes, pos: int) -> int:
            while True:
                count, pos = read_varint(data, pos, field)
                if count == 0:
                    return pos
                if count < 0:
                    count = -count
                    size, pos = read_varint(data, pos, field)
                    if size < 0:
                        raise ValidationError(field, "negative block size")
                if count * per_item > len(data) - pos:
                    raise ValidationError(field, "collection count larger than its bytes allow")
                for _ in range(count):
                    pos = item(data, pos)

        return blocks

    def array(self, node: dict[str, Any], field: str) -> tuple[Scan, int]:
        item, least = self.compile(node["items"], field + "[]")
        return self.blocks(item, least, field), 1

    def map(self, node: dict[str, Any], field: str) -> tuple[Scan, int]:
        key, _ = self.primitive("string", field + "{}")
        value, least = self.compile(node["values"], field + "{}")

        def entry(data: bytes, pos: int) -> int:
            return value(data, key(data, pos))

        return self.blocks(entry, 1 + least, field), 1

    def record(self, node: dict[str, Any], field: str) -> tuple[Scan, int]:
        prefix = f"{field}." if field else ""
        # Register before the fields so that a recursive reference finds it.
        name = self.full_name(node)
        self.min_sizes[name] = 0
        holder: list[tuple[Scan, ...]] = []

        def record(data: bytes, pos: int) -> int:
            for scan in holder[0]:
                pos = scan(data, pos)
            return pos

        self.scans[name] = record
        compiled = [self.compile(f["type"], prefix + f["name"]) for f in node["fields"]]
        holder.append(tuple(scan for scan, _ in compiled))
        return self.remember(node, record, sum(least for _, least in compiled))


def compile_scanner(schema: dict[str, Any], name: str) -> Callable[[bytes], None]:
    """A check for whole bodies of this (self-contained) schema; raises ValidationError."""
    scan, _ = _Compiler().compile(schema, "")

    def check(body: bytes) -> None:
        try:
            end = scan(body, 0)
        except Truncated:
            raise ValidationError(name, "truncated body") from None
        if end != len(body):
            raise ValidationError(name, "trailing bytes after the record")

    return check
