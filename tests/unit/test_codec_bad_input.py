"""Every kind of bad input ends as a ValidationError naming a field and a rule: never another
exception, never a hang, never a large allocation, never the offending value in the message."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from safehub.errors import ValidationError
from safehub.samples.records import (
    audit_entry,
    correlated_alert,
    dead_letter,
    every_record,
    sign_event,
)
from safehub.schemas import codec
from safehub.schemas.records import AuditEntry, CorrelatedAlert, DeadLetter, WarningSignEvent
from tests.fixtures.codec import varint

HEADER = codec.HEADER_BYTES


def refused(data, rule_part: str | None = None) -> ValidationError:
    with pytest.raises(ValidationError) as err:
        codec.decode(data)
    if rule_part is not None:
        assert rule_part in err.value.rule
    return err.value


def body_of(record) -> tuple[bytes, bytes]:
    data = codec.encode(record)
    return data[:HEADER], data[HEADER:]


def test_empty_and_null_values():
    assert refused(b"", "empty").field == "value"
    assert refused(None, "null").field == "value"


def test_wrong_marker_and_short_header():
    good = codec.encode(sign_event())
    refused(b"\x00\x01" + good[2:], "marker")
    refused(b"{\"event_id\": 1}", "marker")
    refused(good[:5], "truncated header")


def test_unknown_fingerprint():
    good = codec.encode(sign_event())
    refused(good[:2] + b"\x00" * 8 + good[HEADER:], "unknown schema fingerprint")


@pytest.mark.parametrize("record", every_record(), ids=lambda r: type(r).__name__)
def test_truncation_at_every_byte(record):
    data = codec.encode(record)
    for cut in range(len(data)):
        refused(data[:cut])


@pytest.mark.parametrize("record", every_record(), ids=lambda r: type(r).__name__)
def test_trailing_bytes(record):
    refused(codec.encode(record) + b"\x00", "trailing bytes")


def test_negative_and_huge_string_lengths():
    header, body = body_of(sign_event())
    rest = body[33:]  # after event_id (length byte + 32 chars)
    refused(header + varint(-5) + b"a" * 32 + rest, "negative length")
    refused(header + varint(2**62) + b"a" * 32 + rest, "truncated")
    refused(header + varint(33) + b"a" * 32 + rest)


def test_negative_and_huge_bytes_length():
    header, body = body_of(dead_letter(raw=b""))
    # raw is the last field: an empty bytes value is the single byte 0.
    assert body.endswith(b"\x00")
    refused(header + body[:-1] + varint(-1), "negative length")
    refused(header + body[:-1] + varint(2**40) + b"xx", "truncated")


def test_varint_over_ten_bytes():
    header, body = body_of(audit_entry())
    # entry_id (33) service (11) action (1) subject_id (33) actor ... at is a long.
    prefix_len = 33 + 1 + len("correlator") + 1 + 33 + 1 + len("police-west-yorkshire")
    at_start = prefix_len
    tail = body[at_start:]
    at_len = len(varint(audit_entry().at))
    rest = tail[at_len:]
    refused(header + body[:at_start] + b"\xff" * 11 + b"\x01" + rest, "varint")
    refused(header + body[:at_start] + b"\xff" * 9 + b"\x7f" + rest, "64 bits")


def test_out_of_range_enum_and_union_indices():
    record = audit_entry()
    header, body = body_of(record)
    action_at = 33 + 1 + len("correlator")
    for bad in (varint(-1), varint(len(list(type(record.action)))), varint(2**40)):
        err = refused(header + body[:action_at] + bad + body[action_at + 1:])
        assert err.field == "action"
    header, body = body_of(sign_event())
    # The indicator union is the last two varints: branch, then symbol.
    for bad_branch in (varint(-1), varint(3)):
        err = refused(header + body[:-2] + bad_branch + body[-1:])
        assert err.field == "indicator" and "union" in err.rule
    err = refused(header + body[:-2] + body[-2:-1] + varint(-1))
    assert err.field == "indicator" and "enum" in err.rule


def test_bad_boolean_byte():
    record = correlated_alert()
    header, body = body_of(record)
    # identity_conflict false, authority_conflict null, explanation null
    assert body[-3:] == b"\x00\x00\x00"
    err = refused(header + body[:-3] + b"\x02" + body[-2:], "boolean")
    assert err.field == "identity_conflict"


def test_invalid_utf8_names_the_field():
    header, body = body_of(sign_event())
    broken = body[:1] + b"\xff" + body[2:]
    err = refused(header + broken, "UTF-8")
    assert err.field == "event_id"


def test_pattern_breaking_strings_are_refused_without_quoting_them():
    header, body = body_of(sign_event())
    secret = "JOHN SMITH 01/02/2009 NW1 6XE".ljust(32, "x")
    body2 = varint(32) + secret.encode() + body[33:]
    err = refused(header + body2, "must match")
    assert err.field == "event_id"
    assert "JOHN" not in str(err) and "SMITH" not in str(err)


def test_huge_collections_from_few_bytes_fail_fast_and_small():
    header, body = body_of(correlated_alert(agencies=(), evidence=(), reidentification=()))
    # agencies, evidence, reidentification: three empty arrays (0), then identity_conflict,
    # authority_conflict (null) and explanation (null).
    arrays_at = len(body) - 6
    assert body[arrays_at:] == b"\x00\x00\x00\x00\x00\x00"
    attacks = [
        varint(2**62) + b"\x00" * 3,
        varint(-(2**62)) + varint(10) + b"\x00" * 3,
        varint(10**6) + b"\x00" * 100,
    ]
    tracemalloc.start()
    try:
        for attack in attacks:
            started = time.monotonic()
            err = refused(header + body[:arrays_at] + attack)
            assert err.field == "agencies"
            # Generous (tracemalloc slows everything, CI is shared): a hang would take minutes.
            assert time.monotonic() - started < 5
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024


def test_many_small_items_within_the_size_limit_stay_small():
    header, body = body_of(correlated_alert(agencies=(), evidence=(), reidentification=()))
    arrays_at = len(body) - 4
    count = codec.MAX_RECORD_BYTES - 100
    attack = varint(count) + b"\x00" * count + b"\x00" * 3
    tracemalloc.start()
    try:
        refused(header + body[:arrays_at] + attack)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024


def test_oversize_records_are_refused_both_ways():
    big = dead_letter(raw=b"\x00" * (codec.MAX_RECORD_BYTES + 1))
    with pytest.raises(ValidationError, match="larger than"):
        codec.encode(big)
    header = codec.header_for(DeadLetter)
    refused(header + b"\x00" * (codec.MAX_RECORD_BYTES + 1), "larger than")


def test_wrong_python_values_are_refused_on_encode():
    cases = [
        sign_event(event_id="not-hex"),
        sign_event(agency_id="Police West Yorkshire"),
        sign_event(indicator="SELF_HARM"),
        sign_event(occurred_at=1.5),
        sign_event(occurred_at=True),
        sign_event(subject=None),
        audit_entry(digest=b"\x00" * 31),
        correlated_alert(agencies=("ok-slug", "Free text here")),
        correlated_alert(score="high"),
    ]
    for record in cases:
        with pytest.raises(ValidationError):
            codec.encode(record)
    with pytest.raises(ValidationError):
        codec.encode("not a record")  # type: ignore[arg-type]


def test_decode_accepts_bytearray_and_memoryview():
    data = codec.encode(sign_event())
    assert codec.decode(bytearray(data)) == sign_event()
    assert codec.decode(memoryview(data)) == sign_event()
    refused(12345, "bytes")


def test_a_valid_body_under_a_wrong_but_known_fingerprint_is_refused():
    body = codec.encode(sign_event())[HEADER:]
    for other in (AuditEntry, CorrelatedAlert, DeadLetter):
        with pytest.raises(ValidationError):
            codec.decode(codec.header_for(other) + body)
    assert codec.decode(codec.header_for(WarningSignEvent) + body) == sign_event()
