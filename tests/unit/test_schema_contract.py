"""Introspection of every schema: no field can carry free text or an identifier, and the
schemas agree with the Python vocabulary and records they are decoded into."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from safehub.schemas import codec, vocabulary

HEX32 = "^[0-9a-f]{32}$"
HEX64 = "^[0-9a-f]{64}$"
GSS = "^(E0[6-9]|E10|W06)[0-9]{6}$"
# Patterns whose every match is an opaque code of fixed shape: nothing can be spelled in them.
FIXED_PATTERNS = {HEX32, HEX64, GSS}

# String fields allowed a looser pattern, each with the reason it cannot carry a child's identity.
JUSTIFIED = {
    # Agency and hub-user slugs come from the agency registry and the hub's own accounts; an
    # ingress event's agency_id must equal the agency of the topic it arrived on (validation).
    "agency_id": "registry slug of an agency (checked against the topic)",
    "agencies": "registry slugs of the contributing agencies",
    "receiver_agency": "registry slug of the receiving agency",
    "actor": "slug of an agency or hub staff member, set by hub services",
    "user_ref": "opaque hub staff reference; about staff, never about a child",
    "service": "slug of the hub service writing the audit entry",
    "rule": "id of a rule in the versioned rules file",
    # Dead-letter metadata is written by the hub from its own state: topic names, Python
    # class names, and ValidationError texts, which name a field and a rule, never a value.
    "source_topic": "Kafka topic name the record came from",
    "error_class": "Python exception class name",
    "error_message": "our own error text: field and rule, never a value",
    "hub_id": "registry slug of a hub (checked against the topic)",
    # Written by the correlator only, from the rules and the coded evidence
    # (services/correlation/reasons.py): counts, sign names and the rules' numbers.
    "explanation": "the correlator's plain-words reason, made from coded evidence and rules",
}
FORBIDDEN_TOKENS = {
    "name", "forename", "surname", "dob", "birth", "nhs", "address", "postcode", "text",
    "note", "notes", "comment", "comments", "description", "narrative", "free", "phone",
    "email",
}
# The one bytes field: the refused record itself, only ever written to the deadletter topic.
# The sealed identity is HPKE ciphertext that only the asking hub's private key opens; the
# privacy canary searches every topic for the identities it carries, in every form.
JUSTIFIED_BYTES = {("safehub.DeadLetter", "raw"), ("safehub.ReidResponse", "sealed_identity")}


def walk_fields(schema, record_name=None, seen=None):
    """(record fullname, field dict, resolved type node) for every field, recursively."""
    seen = set() if seen is None else seen
    name = schema["name"] if "." in schema["name"] else f"safehub.{schema['name']}"
    seen.add(name)
    for field in schema["fields"]:
        yield name, field
        for node in nested(field["type"]):
            if isinstance(node, dict) and node.get("type") == "record" and node["name"] not in seen:
                yield from walk_fields(node, name, seen)


def nested(node):
    if isinstance(node, list):
        for branch in node:
            yield from nested(branch)
    elif isinstance(node, dict) and node.get("type") == "array":
        yield from nested(node["items"])
    elif isinstance(node, dict) and node.get("type") == "map":
        yield from nested(node["values"])
    else:
        yield node


def leaf_kinds(node):
    for leaf in nested(node):
        yield leaf if isinstance(leaf, str) else leaf["type"]


ALL_FIELDS = [
    (top, record, field)
    for top in codec.TOP_LEVEL
    for record, field in walk_fields(codec.expand(codec.schema_name(top)))
]


def string_violations(all_fields):
    """Why each string field could carry free text or an identifier; empty when none can."""
    problems = []
    used = set()
    for record, field in all_fields:
        if "string" not in set(leaf_kinds(field["type"])):
            continue
        pattern = field.get("safehub.pattern")
        if pattern is None:
            problems.append(f"{record}.{field['name']}: no pattern")
        elif not (pattern.startswith("^") and pattern.endswith("$")):
            problems.append(f"{record}.{field['name']}: pattern not anchored")
        elif pattern not in FIXED_PATTERNS:
            if field["name"] not in JUSTIFIED:
                problems.append(f"{record}.{field['name']}: free-form pattern, not justified")
            elif field.get("safehub.maxLength") is None:
                problems.append(f"{record}.{field['name']}: no maxLength")
            used.add(field["name"])
    return problems, used


def test_every_string_field_is_a_fixed_code_or_listed_and_justified():
    problems, used = string_violations([(r, f) for _, r, f in ALL_FIELDS])
    assert problems == []
    assert used == set(JUSTIFIED), "stale justifications"


def test_the_check_refuses_free_text_fields():
    bad = [
        ("safehub.Bad", {"name": "reason", "type": "string"}),
        ("safehub.Bad", {"name": "reason", "type": ["null", "string"],
                         "safehub.pattern": "^.*$"}),
        ("safehub.Bad", {"name": "codes", "type": {"type": "array", "items": "string"},
                         "safehub.pattern": "[0-9]+"}),
        ("safehub.Bad", {"name": "agency_id", "type": "string",
                         "safehub.pattern": "^[a-z]+$"}),
    ]
    problems, _ = string_violations(bad)
    assert len(problems) == 4


def test_no_field_is_named_like_an_identifier_or_free_text():
    for _, record, field in ALL_FIELDS:
        tokens = set(field["name"].lower().split("_"))
        assert not tokens & FORBIDDEN_TOKENS, f"{record}.{field['name']}"


def test_no_maps_and_bytes_only_where_justified():
    for _, record, field in ALL_FIELDS:
        kinds = set(leaf_kinds(field["type"]))
        assert "map" not in kinds
        if "bytes" in kinds:
            assert (record, field["name"]) in JUSTIFIED_BYTES


def test_fixed_types_are_32_byte_hashes():
    for _, _, field in ALL_FIELDS:
        for leaf in nested(field["type"]):
            if isinstance(leaf, dict) and leaf.get("type") == "fixed":
                name = leaf["name"] if "." in leaf["name"] else f"safehub.{leaf['name']}"
                assert name in {"safehub.MatchKey", "safehub.Sha256", "safehub.PublicKey"}
                assert leaf["size"] == 32


def test_indicator_is_a_union_of_the_three_enums():
    for _, _, field in ALL_FIELDS:
        if field["name"] == "indicator":
            names = [b if isinstance(b, str) else f"{b['namespace']}.{b['name']}"
                     for b in field["type"]]
            assert names == ["safehub.Sign", "safehub.Vulnerability",
                             "safehub.SignificantIncident"]


ENUMS = [vocabulary.Sector, vocabulary.Sign, vocabulary.Vulnerability,
         vocabulary.SignificantIncident, vocabulary.MissingType, vocabulary.Tier,
         vocabulary.Decision, vocabulary.AckAction, vocabulary.RouteReason,
         vocabulary.AuditAction, vocabulary.LawfulBasis, vocabulary.ReidPurpose,
         vocabulary.ReidOutcome, vocabulary.DeclineReason, vocabulary.Rationale]


@pytest.mark.parametrize("enum", ENUMS, ids=lambda e: e.__name__)
def test_enum_schemas_list_the_vocabulary_in_order(enum):
    schema = codec.expand(f"safehub.{enum.__name__}")
    assert schema["symbols"] == [m.value for m in enum]


def test_indicator_symbols_are_unique_across_the_three_enums():
    symbols = [m.value for e in codec.INDICATOR_ENUMS for m in e]
    assert len(symbols) == len(set(symbols))


@pytest.mark.parametrize("record_type", codec.TOP_LEVEL, ids=lambda t: t.__name__)
def test_schema_fields_follow_the_dataclass_fields(record_type):
    schema = codec.expand(codec.schema_name(record_type))
    assert [f["name"] for f in schema["fields"]] == [f.name for f in fields(record_type)]


def test_every_top_level_schema_is_documented():
    for top in codec.TOP_LEVEL:
        assert codec.expand(codec.schema_name(top)).get("doc")


def test_only_the_codec_imports_fastavro():
    root = Path(codec.__file__).resolve().parents[1]
    importing = re.compile(r"^\s*(import|from)\s+fastavro\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(root))
        for folder in ("schemas", "services", "consumers", "producers", "deploy")
        for path in (root / folder).rglob("*.py")
        if importing.search(path.read_text()) and path.name != "codec.py"
    ]
    assert offenders == []
