"""The generated writer (schemas/encoder.py) against the reference path (binding.py's checks,
then fastavro): the same bytes for every valid record, the same ValidationError for every
invalid one."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from safehub.errors import ValidationError
from safehub.samples.records import every_record
from safehub.schemas import codec
from safehub.schemas.encoder import varint
from safehub.schemas.vocabulary import AuditAction, Sector, Sign, Tier
from tests.fixtures.codec import ALERTS, AUDIT, EVENTS
from tests.fixtures.codec import varint as reference_varint

# Values of every wrong kind, and some right kinds in the wrong place.
WRONG: tuple[Any, ...] = (
    None, True, False, 0, -1, 2**31, 2**63, -(2**63) - 1, 1.5, float("nan"), "", "x",
    "Not A Slug", "0" * 32, "e" * 65, "E08000035", b"", b"\x00" * 31, b"\x00" * 32, (), [],
    ("x",), ("ok-slug", "Bad Slug"), Sign.SELF_HARM, "SELF_HARM", Sector.POLICE, "POLICE",
    Tier.HIGH, AuditAction.EVENT_ACCEPTED, object(),
)


def verdict(encode: Any, record: Any) -> tuple[Any, ...]:
    try:
        return ("bytes", encode(record))
    except ValidationError as exc:
        return ("refused", exc.field, exc.rule)


def mutants(record: Any) -> Iterator[Any]:
    """`record` with one value anywhere in it (nested records, first items of tuples)
    replaced by each WRONG value."""
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        for wrong in WRONG:
            yield dataclasses.replace(record, **{f.name: wrong})
        inner: list[tuple[Any, Any]] = []
        if dataclasses.is_dataclass(value):
            inner = [(value, lambda v: v)]
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            rest = value[1:]
            inner = [(value[0], lambda v, rest=rest: (v, *rest))]
        for item, wrap in inner:
            for changed in mutants(item):
                yield dataclasses.replace(record, **{f.name: wrap(changed)})


def test_varint_matches_the_avro_encoding() -> None:
    values = [0, 1, -1, 63, -64, 64, -65, 127, 128, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]
    for value in values + list(range(-300, 300)):
        assert varint(value) == reference_varint(value), value


def test_every_sample_record_is_written_as_fastavro_writes_it() -> None:
    for record in every_record():
        assert codec.encode(record) == codec.encode_reference(record), type(record).__name__


def test_every_wrong_value_gets_the_reference_verdict() -> None:
    checked = refused = 0
    for record in every_record():
        for mutant in mutants(record):
            expected = verdict(codec.encode_reference, mutant)
            assert verdict(codec.encode, mutant) == expected, mutant
            checked += 1
            refused += expected[0] == "refused"
    assert refused > 0.8 * checked  # the mutants are mostly invalid, so the errors were compared


def test_a_non_record_is_refused_by_both() -> None:
    for value in ("not a record", None, 3):
        assert verdict(codec.encode, value) == verdict(codec.encode_reference, value)


@pytest.mark.parametrize("strategy", [EVENTS, ALERTS, AUDIT], ids=["event", "alert", "audit"])
def test_random_valid_records_are_written_as_fastavro_writes_them(strategy: Any) -> None:
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(record=strategy)
    def check(record: Any) -> None:
        assert codec.encode(record) == codec.encode_reference(record)

    check()
