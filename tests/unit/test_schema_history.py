"""Schema history: every current schema is released, every version reads every other's data
(both directions, per Avro's resolution rules, checked statically and by the official Avro
library), the rules check itself catches the classic breaking changes, and the codec decodes an
older version's bytes into today's records."""

from __future__ import annotations

import copy
import io
import json
from itertools import permutations

import avro.io
import avro.schema
import pytest

from safehub.errors import ValidationError
from safehub.samples.records import every_record, sign_event, subject
from safehub.schemas import codec
from safehub.schemas.evolution import incompatibilities
from safehub.schemas.records import WarningSignEvent
from tests.fixtures.codec import plain

NAMES = [codec.schema_name(t) for t in codec.TOP_LEVEL]


def versions(name):
    return [schema for _, schema in codec.history_versions(name)] + [codec.expand(name)]


@pytest.mark.parametrize("name", NAMES)
def test_current_schema_is_released(name):
    released = codec.history_versions(name)
    assert released, f"{name} has no released version in schemas/history/"
    assert codec.fingerprint(released[-1][1]) == codec.fingerprint(codec.expand(name)), (
        f"{name} changed since its last release: add it to history with codec.release()")
    numbers = [v for v, _ in released]
    assert numbers == list(range(1, len(numbers) + 1))


# Records that only the hub's own services write and read, all released together: a newer
# writer may use enum symbols an older reader lacks (the older reader refuses such an entry
# with a ValidationError; it never misreads it). Agency-facing records get no such leeway.
HUB_INTERNAL_ENUM_GROWTH = {"safehub.AuditEntry", "safehub.RoutedAlert"}


@pytest.mark.parametrize("name", NAMES)
def test_every_version_reads_every_other_statically(name):
    all_versions = versions(name)
    for (ri, reader), (wi, writer) in permutations(enumerate(all_versions), 2):
        problems = incompatibilities(reader, writer)
        if name in HUB_INTERNAL_ENUM_GROWTH and ri < wi:
            problems = [p for p in problems if "unknown to the reader, no default" not in p]
        assert problems == []


def fit(datum, node, named):
    """`datum` as a writer with schema `node` holds it: fields the writer lacks dropped."""
    if isinstance(node, str):
        node = named.get(node, node)
    if isinstance(node, list):
        if datum is None:
            return None
        branches = [b for b in node if b != "null"]
        return fit(datum, branches[0], named) if len(branches) == 1 else datum
    if isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed"):
            full = node["name"] if "." in node["name"] else f"safehub.{node['name']}"
            named[full] = node
        if node.get("type") == "record":
            return {f["name"]: fit(datum[f["name"]], f["type"], named) for f in node["fields"]}
        if node.get("type") == "array":
            return [fit(d, node["items"], named) for d in datum]
    return datum


def avro_resolve(record, writer, reader):
    out = io.BytesIO()
    avro.io.DatumWriter(avro.schema.parse(json.dumps(writer))).write(
        fit(plain(record), writer, {}), avro.io.BinaryEncoder(out))
    datum_reader = avro.io.DatumReader(avro.schema.parse(json.dumps(writer)),
                                       avro.schema.parse(json.dumps(reader)))
    return datum_reader.read(avro.io.BinaryDecoder(io.BytesIO(out.getvalue())))


@pytest.mark.parametrize("record", every_record(), ids=lambda r: type(r).__name__)
def test_every_version_reads_every_other_with_the_official_library(record):
    all_versions = versions(codec.schema_name(type(record)))
    for reader, writer in permutations(all_versions, 2):
        assert_same_where_both_know(avro_resolve(record, writer, reader),
                                    fit(plain(record), writer, {}))


def assert_same_where_both_know(read, written, path="record"):
    """`read` is `written` seen through another version: a field one version lacks is dropped
    (an older reader) or read as its default None (an older writer); all else is equal."""
    if isinstance(read, dict) and isinstance(written, dict):
        for key in read.keys() | written.keys():
            if key not in read:
                continue
            if key not in written:
                assert read[key] is None, f"{path}.{key}: not written, read as {read[key]!r}"
                continue
            assert_same_where_both_know(read[key], written[key], f"{path}.{key}")
    elif isinstance(read, list) and isinstance(written, list):
        assert len(read) == len(written), path
        for i, (r, w) in enumerate(zip(read, written, strict=True)):
            assert_same_where_both_know(r, w, f"{path}[{i}]")
    else:
        assert read == written, path


def current_event_schema():
    return copy.deepcopy(codec.expand("safehub.WarningSignEvent"))


def field(schema, name):
    return next(f for f in schema["fields"] if f["name"] == name)


def subject_schema(schema):
    return field(schema, "subject")["type"]


def test_adding_an_optional_field_is_compatible_both_ways():
    old = current_event_schema()
    new = current_event_schema()
    new["fields"].append({"name": "confidence", "type": ["null", "int"], "default": None})
    assert incompatibilities(new, old) == []
    assert incompatibilities(old, new) == []
    assert avro_resolve(sign_event(), old, new) == {**plain(sign_event()), "confidence": None}


def test_breaking_changes_are_caught():
    old = current_event_schema()
    cases = {}
    required = current_event_schema()
    required["fields"].append({"name": "confidence", "type": "int"})
    cases["new field without default"] = (required, old)
    more_signs = current_event_schema()
    field(more_signs, "indicator")["type"][0]["symbols"].append("NEW_SIGN")
    cases["old reader, new enum symbol"] = (old, more_signs)
    retyped = current_event_schema()
    field(retyped, "occurred_at")["type"] = "string"
    cases["long read as string"] = (retyped, old)
    resized = current_event_schema()
    subject_schema(resized)["fields"][0]["type"]["fields"][0]["type"][1]["size"] = 16
    cases["fixed size"] = (resized, old)
    renamed = current_event_schema()
    renamed["name"] = "SignEvent"
    cases["renamed record"] = (renamed, old)
    for label, (reader, writer) in cases.items():
        assert incompatibilities(reader, writer), label
    # A new enum symbol is fine the other way: the new reader knows every old symbol.
    assert incompatibilities(more_signs, old) == []


def test_the_codec_decodes_an_older_version_into_todays_record(tmp_path, monkeypatch):
    # An earlier contract without placing_authority (today it is optional, default null).
    older = current_event_schema()
    older_subject = subject_schema(older)
    older_subject["fields"] = [f for f in older_subject["fields"]
                               if f["name"] != "placing_authority"]
    folder = tmp_path / "safehub.WarningSignEvent"
    folder.mkdir()
    (folder / "v1.avsc").write_text(json.dumps(older))
    monkeypatch.setattr(codec, "HISTORY_DIR", tmp_path)
    codec._registry.cache_clear()
    try:
        event = sign_event(subject=subject(placing_authority=None))
        values = plain(event)
        del values["subject"]["placing_authority"]
        out = io.BytesIO()
        avro.io.DatumWriter(avro.schema.parse(json.dumps(older))).write(
            values, avro.io.BinaryEncoder(out))
        data = codec.MARKER + codec.fingerprint(older) + out.getvalue()
        assert codec.decode(data, WarningSignEvent) == event
        assert codec.decode_reference(data) == event
        # The older version's bytes get the same structural checks.
        with pytest.raises(ValidationError):
            codec.decode(data + b"\x00")
        with pytest.raises(ValidationError):
            codec.decode(data[:-3])
    finally:
        codec._registry.cache_clear()
